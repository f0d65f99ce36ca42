use std::fmt;
use std::path::PathBuf;

use crate::error::{ConfigError, Location};

/// Where a secret comes from. The config never needs to hold the secret
/// itself: `{ env = "NAME" }` and `{ file = "path" }` keep it out.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Literal(SecretString),
    Env(String),
    /// Relative paths are resolved against the config file's folder.
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal(<redacted>)"),
            SecretSource::Env(name) => write!(f, "Env({name:?})"),
            SecretSource::File(p) => write!(f, "File({p:?})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub source: SecretSource,
    pub location: Location,
    pub key: String,
}

impl Secret {
    /// Reads the secret's value. A file's trailing newline is dropped, as
    /// `echo secret > file` leaves one.
    pub fn resolve(&self) -> Result<SecretString, ConfigError> {
        let fail = |message: String| ConfigError { location: self.location.clone(), key: self.key.clone(), message };
        let value = match &self.source {
            SecretSource::Literal(s) => return Ok(s.clone()),
            SecretSource::Env(name) => {
                std::env::var(name).map_err(|_| fail(format!("environment variable {name} is not set")))?
            }
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| fail(format!("cannot read secret file {}: {e}", path.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(fail("the secret is empty".to_string()));
        }
        Ok(SecretString::new(value))
    }
}

/// A secret's value. Its `Debug` and `Display` never show it, so it cannot
/// leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> SecretString {
        SecretString(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
