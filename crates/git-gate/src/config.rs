//! The gate's configuration: the contract's types, and reading them from disk.

use std::path::Path;

pub use sidecar_contract::git_gate::*;

use crate::Error;

/// Reads and validates `config_dir/git-gate.json`.
pub fn load(config_dir: &Path) -> Result<GateConfig, Error> {
    let path = config_dir.join(CONFIG_FILE_NAME);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadConfig {
        path: path.clone(),
        source,
    })?;
    let config: GateConfig = serde_json::from_str(&text).map_err(|source| Error::ParseConfig {
        path: path.clone(),
        source,
    })?;
    config
        .validate()
        .map_err(|reason| Error::InvalidConfig { path, reason })?;
    Ok(config)
}
