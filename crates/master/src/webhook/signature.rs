//! GitHub's webhook signatures: an HMAC of the raw body, hex in a header.

use hmac::{Hmac, KeyInit, Mac};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `X-Hub-Signature-256: sha256=<hex>`
    Sha256,
    /// `X-Hub-Signature: sha1=<hex>` (legacy; only when the config allows it)
    Sha1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not of the form {0}=<hex digest>")]
    Malformed(&'static str),
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks `header` against the HMAC of `body` under `secret`. The comparison
/// runs in constant time (`verify_slice`), so timing tells an attacker nothing.
pub fn verify(algorithm: Algorithm, secret: &[u8], body: &[u8], header: &str) -> Result<(), SignatureError> {
    let prefix = match algorithm {
        Algorithm::Sha256 => "sha256",
        Algorithm::Sha1 => "sha1",
    };
    let hex_digest = header
        .trim()
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or(SignatureError::Malformed(prefix))?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed(prefix))?;
    let ok = match algorithm {
        Algorithm::Sha256 => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
            mac.update(body);
            mac.verify_slice(&expected).is_ok()
        }
        Algorithm::Sha1 => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
            mac.update(body);
            mac.verify_slice(&expected).is_ok()
        }
    };
    if ok { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// The header value GitHub would send for `body` (for tests and load tools).
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; the else cannot happen.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_published_test_vector() {
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verify(Algorithm::Sha256, b"It's a Secret to Everybody", b"Hello, World!", header), Ok(()));
        assert_eq!(sign_sha256(b"It's a Secret to Everybody", b"Hello, World!"), header);
    }

    #[test]
    fn rejects_wrong_and_malformed_signatures() {
        let secret = b"s";
        let good = sign_sha256(secret, b"body");
        assert_eq!(verify(Algorithm::Sha256, secret, b"body!", &good), Err(SignatureError::Mismatch));
        assert_eq!(verify(Algorithm::Sha256, b"other", b"body", &good), Err(SignatureError::Mismatch));
        assert!(matches!(verify(Algorithm::Sha256, secret, b"body", "sha256=zz"), Err(SignatureError::Malformed(_))));
        assert!(matches!(verify(Algorithm::Sha256, secret, b"body", "md5=00"), Err(SignatureError::Malformed(_))));
        let truncated = &good[..good.len() - 2];
        assert_eq!(verify(Algorithm::Sha256, secret, b"body", truncated), Err(SignatureError::Mismatch));
    }

    #[test]
    fn sha1_signatures() {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"k").expect("key");
        mac.update(b"payload");
        let header = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(verify(Algorithm::Sha1, b"k", b"payload", &header), Ok(()));
        assert_eq!(verify(Algorithm::Sha1, b"k", b"other", &header), Err(SignatureError::Mismatch));
    }
}
