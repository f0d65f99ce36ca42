//! Outgoing HTTP (GitHub, the command-line client): rustls on ring with
//! the platform's roots, bounded in time.

use std::time::Duration;

/// Makes rustls-on-ring the process's TLS provider (once; later calls do
/// nothing). Call before building a client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// TLS over `io` to `server` (`host:port`), verified against the web's roots
/// (IRC, SMTP's STARTTLS).
pub async fn tls_connect<IO>(server: &str, io: IO) -> Result<tokio_rustls::client::TlsStream<IO>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h).to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    connector.connect(name, io).await.map_err(|e| e.to_string())
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
