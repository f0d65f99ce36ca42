//! Worker passwords: plain ones compared in constant time, hashed ones
//! verified with argon2.

use std::collections::BTreeMap;

use base64::Engine;
use cascade_config::{Config, SecretString, WorkerPassword};
use subtle::ConstantTimeEq;

#[derive(Clone)]
enum Credential {
    Plain(SecretString),
    Hash(String),
}

/// Worker name → how to check its password.
#[derive(Clone, Default)]
pub struct Credentials(BTreeMap<String, Credential>);

impl Credentials {
    pub fn new(config: &Config, plain: &BTreeMap<String, SecretString>) -> Credentials {
        let mut map = BTreeMap::new();
        for w in &config.workers {
            let cred = match &w.password {
                WorkerPassword::Hash(h) => Some(Credential::Hash(h.clone())),
                WorkerPassword::Plain(_) => plain.get(&w.name).cloned().map(Credential::Plain),
            };
            if let Some(c) = cred {
                map.insert(w.name.clone(), c);
            }
        }
        Credentials(map)
    }

    /// Checks `Authorization: Basic base64(name:password)`; returns the name.
    pub async fn check_basic(&self, header: Option<&str>) -> Result<String, &'static str> {
        let encoded = header.and_then(|h| h.strip_prefix("Basic ")).ok_or("missing Basic credentials")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "malformed Basic credentials")?;
        let text = String::from_utf8(decoded).map_err(|_| "malformed Basic credentials")?;
        // The name cannot contain ':'; the password can.
        let (name, password) = text.split_once(':').ok_or("malformed Basic credentials")?;
        let ok = match self.0.get(name) {
            None => false,
            Some(Credential::Plain(secret)) => bool::from(secret.expose().as_bytes().ct_eq(password.as_bytes())),
            Some(Credential::Hash(phc)) => {
                let (phc, password) = (phc.clone(), password.to_string());
                // argon2 is deliberately slow: keep it off the async threads.
                tokio::task::spawn_blocking(move || crate::password::verify(&password, &phc).unwrap_or(false))
                    .await
                    .unwrap_or(false)
            }
        };
        if ok { Ok(name.to_string()) } else { Err("wrong worker name or password") }
    }
}
