//! Cascade's configuration: one TOML file, read into typed values.
//!
//! Every mistake is reported, not just the first: each [`ConfigError`] names
//! the file, line, column and key path (`builder[2].workers[0]`), so a
//! config with ten typos takes one round trip to fix, not ten.

mod error;
mod model;
mod reader;
mod reporters;
mod secret;
mod validate;

pub use error::{ConfigError, ConfigErrors, Location};
pub use model::*;
pub use secret::{Secret, SecretSource, SecretString};

use std::path::{Path, PathBuf};

/// Reads and checks the config at `path`. Secrets are not resolved here:
/// see [`Config::resolve_secrets`].
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            location: Location { file: path.to_path_buf(), line: 0, column: 0 },
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    parse(&text, path)
}

/// Parses config text as if it were read from `path` (used for messages and
/// to resolve relative `{ file = ... }` secrets).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let base_dir: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    reader::read_config(text, path, &base_dir)
}
