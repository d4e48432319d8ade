//! The state directory: `$BOT_BOTTLE_STATE_DIR`, else `$XDG_STATE_HOME/bot-bottle`, else
//! `~/.local/state/bot-bottle`; one `<slug>/` per bottle, everything 0700.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BackendError, Result};

/// Environment variable that overrides the state root.
pub const STATE_DIR_ENV: &str = "BOT_BOTTLE_STATE_DIR";

/// Where bottles keep their state. The environment is passed in, not read here.
pub fn state_root(env: &BTreeMap<String, String>) -> Result<PathBuf> {
    let non_empty = |name: &str| env.get(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty(STATE_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty("XDG_STATE_HOME") {
        return Ok(Path::new(dir).join("bot-bottle"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(Path::new(home).join(".local/state/bot-bottle"));
    }
    Err(BackendError::Corrupt {
        path: PathBuf::from("$HOME"),
        detail: format!(
            "set HOME, XDG_STATE_HOME or {STATE_DIR_ENV} so bottles have a state directory"
        ),
    })
}

/// Creates `path` and its missing parents with mode 0700 (and tightens it if it exists).
pub fn create_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(BackendError::io("creating directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(BackendError::io("setting mode 0700 on", path))
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory with `mode`,
/// fsync, rename over `path`, fsync the directory. A reader (a sidecar watching a
/// bind-mounted directory) sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().ok_or_else(|| BackendError::Corrupt {
        path: path.to_path_buf(),
        detail: "a file to write atomically needs a parent directory".into(),
    })?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .map_err(BackendError::io("creating", &temp))?;
        // The mode given to open() is filtered by the umask: set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(BackendError::io("setting the mode of", &temp))?;
        file.write_all(bytes)
            .map_err(BackendError::io("writing", &temp))?;
        file.sync_all()
            .map_err(BackendError::io("syncing", &temp))?;
        fs::rename(&temp, path).map_err(BackendError::io("renaming into place", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(BackendError::io("syncing directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// `metadata.json`: what `ls`, `down` and `gc` need to find a bottle's pieces again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The bottle's slug.
    pub slug: String,
    /// Agent name.
    pub agent: String,
    /// Compose project name (`-p`).
    pub compose_project: String,
    /// The compose file.
    pub compose_file: PathBuf,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The manifest the bottle was started from.
    pub manifest: PathBuf,
    /// SHA-256 of the manifest when the bottle started.
    pub manifest_sha256: String,
    /// Networks this bottle created (and must remove).
    pub networks: Vec<String>,
    /// The agent container's name.
    pub agent_container: String,
    /// PID of the launcher that owns the bottle (`gc` checks it is alive).
    pub launcher_pid: u32,
    /// Whether the launch finished: a bottle that is not ready and whose launcher is
    /// dead was interrupted mid-start, and `gc` removes it.
    pub ready: bool,
    /// Files the launch wrote, relative to the bottle's state dir.
    pub files: Vec<PathBuf>,
    /// Names (never values) of the variables whose values are secrets, in the
    /// services' environments: `logs` and `down` redact their values. Absent in the
    /// metadata of older launches.
    #[serde(default)]
    pub secret_env: Vec<String>,
}

impl Metadata {
    /// Reads `dir/metadata.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(METADATA_FILE);
        let text = fs::read_to_string(&path).map_err(BackendError::io("reading", &path))?;
        serde_json::from_str(&text).map_err(|e| BackendError::Corrupt {
            path,
            detail: e.to_string(),
        })
    }

    /// Writes `dir/metadata.json` atomically (0600: it names paths on the host).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("metadata serializes");
        write_atomic(&dir.join(METADATA_FILE), text.as_bytes(), 0o600)
    }
}

/// File name of a bottle's metadata.
pub const METADATA_FILE: &str = "metadata.json";
/// File name of the compose file in a bottle's state dir.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
/// File name of the dumped compose logs.
pub const COMPOSE_LOG: &str = "compose.log";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_root_precedence() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            state_root(&env(&[("HOME", "/h")])).unwrap(),
            Path::new("/h/.local/state/bot-bottle")
        );
        assert_eq!(
            state_root(&env(&[("HOME", "/h"), ("XDG_STATE_HOME", "/x")])).unwrap(),
            Path::new("/x/bot-bottle")
        );
        assert_eq!(
            state_root(&env(&[
                ("HOME", "/h"),
                ("XDG_STATE_HOME", "/x"),
                (STATE_DIR_ENV, "/s")
            ]))
            .unwrap(),
            Path::new("/s")
        );
        assert!(state_root(&env(&[])).is_err());
    }

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn private_dirs_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_private_dir(&nested).unwrap();
        assert_eq!(
            fs::metadata(&nested).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
