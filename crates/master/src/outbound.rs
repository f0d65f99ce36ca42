//! Outgoing HTTP (GitHub, the command-line client): rustls on ring with
//! the platform's roots, bounded in time.

use std::time::Duration;

/// Makes rustls-on-ring the process's TLS provider (once; later calls do
/// nothing). Call before building a client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for outgoing calls.
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("cascade/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}
