//! What the CLI learns about the host for the planner: environment, files, entropy.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use plan::{FileRef, HostFacts, Manifest, MissingEnv};

/// The host environment as UTF-8 pairs (non-UTF-8 entries cannot be referenced).
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Gathers host facts for `manifest`, reading the env files it names.
pub fn facts(manifest: &Manifest, manifest_path: &Path, missing_env: MissingEnv) -> HostFacts {
    let manifest_dir = manifest_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let manifest_dir =
        std::path::absolute(manifest_dir).unwrap_or_else(|_| manifest_dir.to_path_buf());
    let mut facts = HostFacts {
        env: environment(),
        project_dir: std::env::current_dir().unwrap_or_else(|_| manifest_dir.clone()),
        manifest_dir,
        env_files: BTreeMap::new(),
        missing_env,
    };
    for path in plan::env_file_paths(manifest, &facts) {
        if let Ok(contents) = std::fs::read_to_string(&path) {
            facts.env_files.insert(path, contents);
        }
    }
    facts
}

/// Whether a referenced file exists with the right kind.
pub fn file_ref_ok(file: &FileRef) -> bool {
    std::fs::metadata(&file.path).is_ok_and(|m| m.is_dir() == file.is_dir)
}

/// Entropy for a slug: the standard library seeds `RandomState` from the OS.
pub fn slug_entropy() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(elapsed) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(elapsed.as_nanos());
    }
    hasher.finish()
}

/// `uid:gid` owning `path` (the state root): sidecars run as that user so the 0600
/// files the launcher writes stay readable to them and to nobody else.
pub fn owner_of(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map_or_else(|_| "0:0".to_owned(), |m| format!("{}:{}", m.uid(), m.gid()))
}

/// Whether a process with this pid runs (Linux: `/proc/PID` exists).
pub fn pid_alive(pid: u32) -> bool {
    pid != 0 && Path::new("/proc").join(pid.to_string()).exists()
}
