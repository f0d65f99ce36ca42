//! Outgoing HTTP (GitHub, the command-line client): rustls on ring with
//! the platform's roots, bounded in time.

use std::path::Path;
use std::time::Duration;

/// Makes rustls-on-ring the process's TLS provider (once; later calls do
/// nothing). Call before building a client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// TLS over `io` to `server` (`host:port`), verified against the web's roots,
/// or only against the certificates in `ca_file` when one is given (IRC,
/// SMTP's STARTTLS).
pub async fn tls_connect<IO>(
    server: &str,
    io: IO,
    ca_file: Option<&Path>,
) -> Result<tokio_rustls::client::TlsStream<IO>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    install_crypto_provider();
    let roots = match ca_file {
        Some(path) => roots_from(path)?,
        None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h).trim_matches(['[', ']']).to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    connector.connect(name, io).await.map_err(|e| e.to_string())
}

/// The certificates of a PEM file, as the only roots to trust.
fn roots_from(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(roots)
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

/// How long GitHub asks a caller to wait, and why: `retry-after` (its
/// secondary limits), or `x-ratelimit-remaining: 0` until
/// `x-ratelimit-reset` (its primary one), on a 403 or 429; `None` when the
/// answer is no rate limit.
pub fn github_wait(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    now: i64,
) -> Option<(Duration, String)> {
    use reqwest::StatusCode;
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some((Duration::from_secs(secs.clamp(1, 3600)), format!("{status}: retry after {secs} s")));
    }
    if header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok()).unwrap_or(now + 60);
        let wait = reset.saturating_sub(now).clamp(1, 3600) as u64;
        return Some((Duration::from_secs(wait), format!("{status}: rate limit until {reset}")));
    }
    (status == StatusCode::TOO_MANY_REQUESTS).then(|| (Duration::from_secs(60), format!("{status}")))
}
