//! A tar archive of regular files, built in memory: what one `docker exec` of
//! provisioning unpacks into the agent's home. Only file entries (ustar), so
//! unpacking never touches the mode or owner of a directory that is already there;
//! `tar` makes the missing parents itself.

use crate::error::{BackendError, Result};

/// Regular files by path (relative, `/`-separated), in the order added.
#[derive(Default)]
pub struct Archive {
    bytes: Vec<u8>,
}

impl Archive {
    /// Adds `contents` as `path` with `mode`. Paths longer than ustar holds (100
    /// bytes, or 155 + 100 split at a `/`), absolute, or with `..` are refused.
    pub fn add(&mut self, path: &str, contents: &[u8], mode: u32) -> Result<()> {
        let refuse = |why: &str| BackendError::AgentFile {
            path: path.to_owned(),
            detail: format!("cannot hand it to the agent: {why}"),
        };
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(refuse("not a relative path inside the home"));
        }
        let (prefix, name) = if path.len() <= 100 {
            ("", path)
        } else {
            let split = path
                .char_indices()
                .filter(|(i, c)| *c == '/' && *i <= 155 && path.len() - i - 1 <= 100)
                .map(|(i, _)| i)
                .next_back()
                .ok_or_else(|| refuse("path too long for a tar header"))?;
            (&path[..split], &path[split + 1..])
        };
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut header[100..108], u64::from(mode & 0o7777));
        octal(&mut header[108..116], 0); // uid: tar as a user gives the file to that user
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], contents.len() as u64);
        octal(&mut header[136..148], 0); // mtime
        header[148..156].copy_from_slice(b"        ");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        octal(&mut header[148..155], u64::from(sum));
        header[155] = b' ';
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(contents);
        let pad = (512 - contents.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        Ok(())
    }

    /// The archive, with its two zero blocks at the end.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self.bytes
    }
}

/// Writes `value` as zero-padded octal, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system's tar reads what we write, paths, modes and contents alike.
    #[test]
    fn gnu_tar_unpacks_it() {
        let mut archive = Archive::default();
        archive.add("a.txt", b"hello\n", 0o644).unwrap();
        let deep = format!("{}/{}/file.json", "d".repeat(90), "e".repeat(60));
        archive.add(&deep, b"{}", 0o600).unwrap();
        archive.add("empty", b"", 0o644).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("x.tar");
        std::fs::write(&tar, archive.finish()).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(&out)
            .arg("-xf")
            .arg(&tar)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"hello\n");
        assert_eq!(std::fs::read(out.join(&deep)).unwrap(), b"{}");
        assert_eq!(std::fs::read(out.join("empty")).unwrap(), b"");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join(&deep))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn paths_outside_the_home_are_refused() {
        let mut archive = Archive::default();
        for bad in ["/etc/passwd", "../x", "a/../../x", ""] {
            assert!(archive.add(bad, b"", 0o644).is_err(), "{bad}");
        }
        assert!(archive.add(&"x".repeat(300), b"", 0o644).is_err());
    }
}
