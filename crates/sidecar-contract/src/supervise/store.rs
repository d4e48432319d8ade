//! File mechanics shared by the sidecar and the host API: atomic writes,
//! bounded reads, and listing `<id>.json` files.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::supervise::Error;
use crate::supervise::request::{is_valid_id, random_hex};

/// Largest request, decision or policy-view file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Mode of request and decision files. They hold no secrets; the
/// directories they sit in are the launcher's to protect (0700).
const FILE_MODE: u32 = 0o644;

/// The path of `<id>.json` in `dir`.
pub fn id_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes `value` as JSON to `dir/<name>` atomically: a temp file in the
/// same directory, fsync, then rename (`replace`) or hard link
/// (`!replace`, which fails with `AlreadyExists` rather than overwrite),
/// then fsync of the directory.
pub fn write_json_atomic(
    dir: &Path,
    name: &str,
    value: &impl Serialize,
    replace: bool,
) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("our types always serialize");
    bytes.push(b'\n');
    write_atomic(dir, name, &bytes, replace)
}

pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], replace: bool) -> Result<(), Error> {
    let target = dir.join(name);
    let suffix = random_hex::<8>().map_err(Error::Random)?;
    let temp = dir.join(format!(".{name}.tmp-{suffix}"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp)
            .map_err(Error::io("writing", &temp))?;
        file.write_all(bytes).map_err(Error::io("writing", &temp))?;
        file.sync_all().map_err(Error::io("syncing", &temp))?;
        drop(file);
        if replace {
            fs::rename(&temp, &target).map_err(Error::io("renaming into", &target))
        } else {
            fs::hard_link(&temp, &target).map_err(Error::io("creating", &target))
        }
    })();
    let _ = fs::remove_file(&temp);
    result?;
    if let Ok(dir_handle) = File::open(dir) {
        let _ = dir_handle.sync_all();
    }
    Ok(())
}

/// Reads and parses a JSON file of at most [`MAX_FILE_BYTES`]; `None` if it
/// does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("reading", path)(error)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io("reading", path))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::InvalidFile {
            path: path.to_owned(),
            reason: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::ParseFile {
            path: path.to_owned(),
            source,
        })
}

/// The ids of the `<id>.json` files in `dir` (anything else is ignored:
/// temp files, `<id>.decision.json`, stray names), sorted.
pub fn list_ids(dir: &Path) -> Result<Vec<String>, Error> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        let entry = entry.map_err(Error::io("listing", dir))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if is_valid_id(id) && entry.file_type().is_ok_and(|t| t.is_file()) {
            ids.push(id.to_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_or_refuse() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "a.json", b"1", false).unwrap();
        let error = write_atomic(dir.path(), "a.json", b"2", false).unwrap_err();
        assert!(
            matches!(&error, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{error}"
        );
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"1");
        write_atomic(dir.path(), "a.json", b"3", true).unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"3");
        // No temp files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn listing_ignores_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        for name in [
            format!("{id}.json"),
            format!("{id}.decision.json"),
            format!(".{id}.json.tmp-1"),
            "notes.json".to_owned(),
            "0123456789ABCDEF0123456789ABCDEF.json".to_owned(),
        ] {
            fs::write(dir.path().join(name), "{}").unwrap();
        }
        fs::create_dir(dir.path().join("ffffffffffffffffffffffffffffffff.json")).unwrap();
        assert_eq!(list_ids(dir.path()).unwrap(), [id]);
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        fs::write(&path, vec![b' '; MAX_FILE_BYTES as usize + 2]).unwrap();
        assert!(matches!(
            read_json::<serde_json::Value>(&path),
            Err(Error::InvalidFile { .. })
        ));
        assert!(
            read_json::<serde_json::Value>(&dir.path().join("missing.json"))
                .unwrap()
                .is_none()
        );
    }
}
