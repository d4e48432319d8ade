//! The C runtime the running `bottle` was loaded with, so the sidecar image can carry
//! it: a `bottle` built or installed on any glibc host then runs on the image's
//! bookworm base, older or newer.
//!
//! Why bundle rather than the alternatives: a static build needs a target (musl) or
//! flags `cargo install` users do not have; picking a base by the binary's glibc
//! needs a base image per Debian release, and a host newer than the newest base
//! would still fail. The dynamic loader and libraries the kernel mapped into this
//! very process are, by definition, ones `bottle` runs with. In the image `bottle`
//! is started through that loader (`ld.so --library-path DIR`), which confines them
//! to the `bottle` process: git and ssh, which the git gate runs, keep the base's.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{BackendError, Result};

/// Where the bundled runtime sits in the sidecar image.
pub const LIB_DIR: &str = "/opt/bot-bottle/lib";
/// Where the real executable sits in the sidecar image.
pub const BIN_PATH: &str = "/opt/bot-bottle/bin/bottle";

/// Libraries glibc loads on demand rather than at start (name service modules before
/// glibc 2.34 folded them into libc): bundled when the host has them next to libc.
const ON_DEMAND: &[&str] = &["libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"];

/// The shared objects mapped into this process: the dynamic loader and every library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// The dynamic loader (`ld-linux-x86-64.so.2` on x86-64).
    pub loader: PathBuf,
    /// Every other mapped library, as the paths the kernel reports.
    pub libraries: Vec<PathBuf>,
}

impl Runtime {
    /// This process's runtime, from `/proc/self/maps`.
    pub fn of_this_process() -> Result<Runtime> {
        let maps = fs::read_to_string("/proc/self/maps")
            .map_err(BackendError::io("reading", "/proc/self/maps"))?;
        Runtime::from_maps(&maps).ok_or_else(|| {
            BackendError::Unsupported(
                "this `bottle` has no dynamic loader mapped (a static build?): it needs no \
                 runtime bundled, but this build does not expect that"
                    .into(),
            )
        })
    }

    /// The runtime in a `/proc/PID/maps` text; None when no loader is mapped.
    pub fn from_maps(maps: &str) -> Option<Runtime> {
        let mut libraries: Vec<PathBuf> = maps
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5))
            .filter(|path| path.starts_with('/') && is_shared_object(path))
            .map(PathBuf::from)
            .collect();
        libraries.sort();
        libraries.dedup();
        let at = libraries.iter().position(|p| is_loader(p))?;
        let loader = libraries.remove(at);
        Some(Runtime { loader, libraries })
    }

    /// The loader's file name: the wrapper runs `LIB_DIR/<this>`.
    pub fn loader_name(&self) -> String {
        file_name(&self.loader)
    }

    /// Copies the loader and libraries into `dir`, under their own names and every
    /// name a symlink beside them gives them (`libfoo.so.1` -> `libfoo.so.1.2.3`: the
    /// maps show the target, the program asks for the link), plus [`ON_DEMAND`]
    /// libraries found next to libc. Returns the names written.
    pub fn copy_into(&self, dir: &Path) -> Result<Vec<String>> {
        fs::create_dir_all(dir).map_err(BackendError::io("creating", dir))?;
        let mut written = Vec::new();
        let mut sources: Vec<PathBuf> = vec![self.loader.clone()];
        sources.extend(self.libraries.iter().cloned());
        if let Some(libc_dir) = self
            .libraries
            .iter()
            .find(|p| file_name(p).starts_with("libc.so"))
            .and_then(|p| p.parent())
        {
            sources.extend(
                ON_DEMAND
                    .iter()
                    .map(|name| libc_dir.join(name))
                    .filter(|p| p.is_file() && !self.libraries.contains(p)),
            );
        }
        for source in &sources {
            let mut names = vec![file_name(source)];
            names.extend(aliases(source));
            for name in names {
                if written.contains(&name) {
                    continue;
                }
                let target = dir.join(&name);
                fs::copy(source, &target).map_err(BackendError::io("copying", source))?;
                written.push(name);
            }
        }
        written.sort();
        Ok(written)
    }
}

/// `/path/libfoo.so.1.2` and `/path/ld-2.31.so` are shared objects; `/usr/bin/x` not.
fn is_shared_object(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

/// The dynamic loader: `ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, `ld-2.31.so`.
fn is_loader(path: &Path) -> bool {
    file_name(path).starts_with("ld-")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Names of shared-object symlinks in `path`'s directory that resolve to `path`:
/// `libfoo.so.1` for `libfoo.so.1.2.3`, and `libc.so.6` for glibc < 2.34's
/// `libc-2.31.so` (whose name shares no stem with its soname).
fn aliases(path: &Path) -> Vec<String> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let name = file_name(path);
    let Ok(real) = fs::canonicalize(path) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != &name && is_shared_object(n))
        .filter(|n| fs::canonicalize(dir.join(n)).is_ok_and(|r| r == real))
        .collect();
    names.sort();
    names
}

/// The `/usr/local/bin/bottle` of the sidecar image: starts the real executable
/// through the bundled loader, with the bundled libraries for it alone.
pub fn wrapper_script(loader_name: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # bot-bottle: the host's bottle, with the C runtime it was built for (see\n\
         # backend-docker's images::runtime); git and ssh keep the image's own.\n\
         exec {LIB_DIR}/{loader_name} --library-path {LIB_DIR} {BIN_PATH} \"$@\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a10000 r--p 00000000 fe:01 123 /usr/local/bin/bottle
7f1e2c000000-7f1e2c022000 r--p 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2c022000-7f1e2c197000 r-xp 00022000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2c200000-7f1e2c210000 r--p 00000000 fe:01 457 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1
7f1e2c300000-7f1e2c310000 r--p 00000000 fe:01 458 /usr/lib/x86_64-linux-gnu/libm.so.6
7f1e2c400000-7f1e2c410000 r--p 00000000 fe:01 459 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7f1e2c500000-7f1e2c510000 rw-p 00000000 00:00 0 
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]
7ffd1c1f0000-7ffd1c1f2000 r-xp 00000000 00:00 0 [vdso]
";

    #[test]
    fn the_loader_and_libraries_come_from_the_maps() {
        let runtime = Runtime::from_maps(MAPS).unwrap();
        assert_eq!(
            runtime.loader,
            Path::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        assert_eq!(runtime.loader_name(), "ld-linux-x86-64.so.2");
        let names: Vec<String> = runtime.libraries.iter().map(|p| file_name(p)).collect();
        assert_eq!(names, ["libc.so.6", "libgcc_s.so.1", "libm.so.6"]);
    }

    #[test]
    fn a_static_binary_maps_no_loader() {
        assert_eq!(
            Runtime::from_maps("55d0-55d1 r-xp 0 fe:01 1 /usr/local/bin/bottle\n"),
            None
        );
    }

    #[test]
    fn this_test_process_has_a_runtime_that_copies_with_link_names() {
        // The test binary is linked like `bottle`: its runtime is real files.
        let runtime = Runtime::of_this_process().unwrap();
        assert!(runtime.loader.is_file());
        assert!(
            runtime
                .libraries
                .iter()
                .any(|p| file_name(p).starts_with("libc.so"))
        );
        let dir = tempfile::tempdir().unwrap();
        let written = runtime.copy_into(dir.path()).unwrap();
        assert!(written.contains(&runtime.loader_name()));
        assert!(written.iter().any(|n| n.starts_with("libc.so")));
        for name in &written {
            assert!(dir.path().join(name).is_file(), "{name}");
        }
    }

    #[test]
    fn symlinked_names_are_copied_too() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("libfoo.so.1.2.3");
        fs::write(&real, b"elf").unwrap();
        std::os::unix::fs::symlink("libfoo.so.1.2.3", dir.path().join("libfoo.so.1")).unwrap();
        std::os::unix::fs::symlink("libbar.so.1", dir.path().join("libfoo-other.so")).unwrap();
        assert_eq!(aliases(&real), ["libfoo.so.1"]);
    }

    #[test]
    fn an_old_glibc_file_gets_its_soname() {
        // glibc before 2.34: the maps show `libc-2.31.so`, the program asks for
        // `libc.so.6`, and the two names share no stem.
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("libc-2.31.so");
        fs::write(&real, b"elf").unwrap();
        std::os::unix::fs::symlink("libc-2.31.so", dir.path().join("libc.so.6")).unwrap();
        std::os::unix::fs::symlink("libc-2.31.so", dir.path().join("notalib")).unwrap();
        assert_eq!(aliases(&real), ["libc.so.6"]);
        let runtime = Runtime {
            loader: real.clone(),
            libraries: Vec::new(),
        };
        let out = tempfile::tempdir().unwrap();
        let written = runtime.copy_into(out.path()).unwrap();
        assert_eq!(written, ["libc-2.31.so", "libc.so.6"]);
    }

    #[test]
    fn the_wrapper_runs_the_binary_through_the_bundled_loader() {
        let script = wrapper_script("ld-linux-x86-64.so.2");
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains(
            "exec /opt/bot-bottle/lib/ld-linux-x86-64.so.2 --library-path /opt/bot-bottle/lib \
             /opt/bot-bottle/bin/bottle \"$@\""
        ));
        // Never LD_LIBRARY_PATH: it would leak into git and ssh.
        assert!(!script.contains("LD_LIBRARY_PATH"));
    }
}
