//! Worker passwords: plain ones compared in constant time, hashed ones
//! verified with argon2 (through the gate that bounds how many run at
//! once), PB's MD5 challenge answered from the password.

use std::collections::BTreeMap;

use base64::Engine;
use cascade_config::{Config, ResolvedSecrets, SecretString, WorkerPassword};
use subtle::ConstantTimeEq;

use crate::password::{Busy, Gate};

/// `Authorization: Basic base64(name:password)` → (name, password).
pub fn parse_basic(header: Option<&str>) -> Result<(String, String), &'static str> {
    let encoded = header.and_then(|h| h.strip_prefix("Basic ")).ok_or("missing Basic credentials")?;
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| "malformed Basic credentials")?;
    let text = String::from_utf8(decoded).map_err(|_| "malformed Basic credentials")?;
    // The name cannot contain ':'; the password can.
    let (name, password) = text.split_once(':').ok_or("malformed Basic credentials")?;
    Ok((name.to_string(), password.to_string()))
}

#[derive(Clone)]
enum Credential {
    Plain(SecretString),
    Hash(String),
}

/// Login name → how to check its password: workers', and on the PB port
/// also the `sendchange` and `try` users' (never accepted as workers).
#[derive(Clone, Default)]
pub struct Credentials {
    workers: BTreeMap<String, Credential>,
    tools: BTreeMap<String, SecretString>,
}

impl Credentials {
    pub fn new(config: &Config, secrets: &ResolvedSecrets) -> Credentials {
        let plain = &secrets.worker_passwords;
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
        Credentials { workers: map, tools: secrets.tool_passwords.clone() }
    }

    /// The argon2 hash or plain secret configured for worker `name`.
    fn credential(&self, name: &str) -> Option<&Credential> {
        self.workers.get(name)
    }

    /// Checks a name and password: a plain secret in constant time, a hash
    /// through `gate` (unknown names through it too, at the same cost).
    pub async fn check(&self, gate: &Gate, name: &str, password: &str) -> Result<bool, Busy> {
        match self.credential(name) {
            Some(Credential::Plain(secret)) => Ok(bool::from(secret.expose().as_bytes().ct_eq(password.as_bytes()))),
            Some(Credential::Hash(phc)) => gate.verify(password, Some(phc)).await,
            None => gate.verify(password, None).await,
        }
    }

    /// Checks a Perspective Broker login: `response` must be
    /// `MD5(MD5(password) ‖ challenge)`. PB's challenge needs the password
    /// itself, so a worker configured with only an argon2 hash cannot log in
    /// over PB (the reason says so).
    pub fn check_pb(&self, name: &str, challenge: &[u8], response: &[u8]) -> Result<(), &'static str> {
        let tool = self.tools.get(name).map(|secret| Credential::Plain(secret.clone()));
        let credential = self.workers.get(name).cloned().or(tool);
        let expected = match &credential {
            None => None,
            Some(Credential::Hash(_)) => {
                return Err(
                    "this worker has only `password_hash`; PB's MD5 challenge needs `password` (a file or env secret)",
                );
            }
            Some(Credential::Plain(secret)) => {
                let digest = cascade_protocol::pb::message::password_md5(secret.expose().as_bytes());
                Some(cascade_protocol::pb::message::challenge_response(&digest, challenge))
            }
        };
        // Compare even for an unknown name, so timing does not tell names apart.
        let expected = expected.unwrap_or([0; 16]);
        let same = bool::from(expected.as_slice().ct_eq(response)) && credential.is_some();
        if same { Ok(()) } else { Err("wrong login name or password") }
    }
}
