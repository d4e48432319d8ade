//! Debian bookworm from Debian's mirrors with `debootstrap`, where no registry
//! answers: bootstrapped into a directory, trimmed, and tarred into the cache
//! (written atomically, so an interrupted run never leaves a truncated tarball).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{BackendError, Result};
use crate::images::Sources;
use crate::images::base::{PACKAGES, find_program, is_root};
use crate::progress::Progress;

/// How often a long step says it is still working.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Keeps later `apt-get install`s in derived images as slim as the base: the same
/// exclusions Docker's official `-slim` Debian images use.
const DPKG_SLIM: &str = "\
# bot-bottle base: no docs, manuals or translations (licences stay)
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
";

/// What the base's apt sources say, whatever mirror built it.
const DEFAULT_SOURCES: &str = "deb http://deb.debian.org/debian bookworm main\n";

/// `mirror` for messages: without the `user:password@` of its URL.
fn shown_mirror(mirror: &str) -> String {
    match mirror.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) => {
                let host = authority.rsplit('@').next().unwrap_or(authority);
                format!("{scheme}://{host}/{path}")
            }
            None => format!("{scheme}://{}", rest.rsplit('@').next().unwrap_or(rest)),
        },
        None => mirror.to_owned(),
    }
}

/// Bootstraps bookworm with [`PACKAGES`] and tars it into `tarball`.
pub fn debootstrap_tarball(
    sources: &Sources,
    tarball: &Path,
    progress: &mut dyn Progress,
) -> Result<()> {
    // sudo's secure_path rarely holds ~/.cargo/bin: name this very executable.
    let exe =
        std::env::current_exe().map_or_else(|_| "bottle".to_owned(), |p| p.display().to_string());
    let debootstrap = find_program("debootstrap").ok_or_else(|| BackendError::NoBaseSource {
        needs_root: false,
        fix: format!(
            "install it (`apt-get install debootstrap`) and run `sudo {exe} images build` once"
        ),
    })?;
    if !is_root() {
        return Err(BackendError::NoBaseSource {
            needs_root: true,
            fix: format!(
                "run `sudo {exe} images build` once (the image is then shared by every user \
                 of this Docker engine)"
            ),
        });
    }
    fs::create_dir_all(&sources.cache_dir)
        .map_err(BackendError::io("creating", &sources.cache_dir))?;
    let rootfs = sources.cache_dir.join("base-bookworm.rootfs");
    remove_stale_rootfs(&rootfs)?;
    let log = sources.cache_dir.join("debootstrap.log");
    let from = sources
        .debian_mirror
        .as_deref()
        .map_or_else(String::new, |m| format!(" from {}", shown_mirror(m)));
    let started = Instant::now();
    progress.step(&format!(
        "bootstrapping Debian bookworm{from} (no registry; a few minutes, once)"
    ));
    let mut args: Vec<std::ffi::OsString> = vec![
        "--variant=minbase".into(),
        format!("--include={}", PACKAGES.join(",")).into(),
        "bookworm".into(),
        rootfs.clone().into(),
    ];
    if let Some(mirror) = &sources.debian_mirror {
        args.push(mirror.into());
    }
    let handle = duct::cmd(&debootstrap, &args)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_path(&log)
        .unchecked()
        .start()
        .map_err(BackendError::io("running", &debootstrap))?;
    let mut beat = Instant::now();
    let output = loop {
        if let Some(output) = handle
            .try_wait()
            .map_err(BackendError::io("running", &debootstrap))?
        {
            break output.clone();
        }
        if beat.elapsed() >= HEARTBEAT {
            beat = Instant::now();
            progress.still(&format!(
                "bootstrapping ({}s; {})",
                started.elapsed().as_secs(),
                last_log_line(&log)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !output.status.success() {
        return Err(BackendError::Command {
            command: format!("debootstrap --variant=minbase bookworm{from}"),
            detail: format!(
                "{} (the whole log: {}; debootstrap's own: {})",
                last_log_line(&log),
                log.display(),
                rootfs.join("debootstrap/debootstrap.log").display()
            ),
        });
    }
    progress.done("Debian bootstrapped", started.elapsed());

    let started = Instant::now();
    progress.step(&format!(
        "packing the root file system into {}",
        tarball.display()
    ));
    trim(&rootfs)?;
    let partial = tarball.with_extension("tar.partial");
    let tar = duct::cmd!(
        "tar",
        "--numeric-owner",
        "-C",
        &rootfs,
        "-cf",
        &partial,
        "."
    )
    .stdin_null()
    .stderr_capture()
    .unchecked()
    .run()
    .map_err(BackendError::io("running tar for", &partial))?;
    if !tar.status.success() {
        return Err(BackendError::Command {
            command: format!("tar -cf {}", partial.display()),
            detail: String::from_utf8_lossy(&tar.stderr).trim().to_owned(),
        });
    }
    fs::rename(&partial, tarball).map_err(BackendError::io("renaming", &partial))?;
    fs::remove_dir_all(&rootfs).map_err(BackendError::io("removing", &rootfs))?;
    progress.done("root file system packed", started.elapsed());
    Ok(())
}

/// The last non-empty line of the log, for heartbeats and errors.
fn last_log_line(log: &Path) -> String {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("starting")
        .trim()
        .to_owned()
}

/// Removes a rootfs left by an interrupted run, unless something is still mounted
/// inside it (an interrupted debootstrap can leave /proc mounted there, and deleting
/// through a mount would be wrong).
fn remove_stale_rootfs(rootfs: &Path) -> Result<()> {
    if !rootfs.exists() {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = rootfs.to_string_lossy();
    if let Some(mount) = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|m| m.starts_with(prefix.as_ref()))
    {
        return Err(BackendError::StaleMount {
            mount: mount.to_owned(),
        });
    }
    fs::remove_dir_all(rootfs).map_err(BackendError::io("removing", rootfs))
}

/// Drops what must not or need not be in the image: the host's resolv.conf and
/// hostname (debootstrap copies them; docker provides its own at run time), the ssh
/// host keys openssh-server's install generated, apt's downloaded packages and lists,
/// and documentation, manuals and translations (a quarter of the rootfs; licences are
/// kept). Installs [`DPKG_SLIM`] so derived images stay that way.
fn trim(rootfs: &Path) -> Result<()> {
    let host_keys = fs::read_dir(rootfs.join("etc/ssh"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
        .map(|e| e.path());
    let files = ["etc/resolv.conf", "etc/hostname"].map(|f| rootfs.join(f));
    for path in files.into_iter().chain(host_keys) {
        if path.symlink_metadata().is_ok() {
            fs::remove_file(&path).map_err(BackendError::io("removing", &path))?;
        }
    }
    for (dir, keep) in [
        ("var/cache/apt/archives", &["partial", "lock"][..]),
        ("var/lib/apt/lists", &["partial", "lock"][..]),
        ("var/cache/apt", &["archives"][..]),
        ("usr/share/man", &[][..]),
        ("usr/share/info", &[][..]),
        ("usr/share/lintian", &[][..]),
        ("usr/share/locale", &["locale.alias"][..]),
    ] {
        remove_children(&rootfs.join(dir), &keep_named(keep))?;
    }
    // Each package's doc directory keeps its copyright file; symlinked ones are tiny.
    if let Ok(entries) = fs::read_dir(rootfs.join("usr/share/doc")) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                remove_children(&path, &keep_named(&["copyright"]))?;
            }
        }
    }
    // debootstrap wrote the mirror it used, credentials and all, into sources.list:
    // every image on this base (the sidecar's, the demo agent's) would carry it.
    let sources = rootfs.join("etc/apt/sources.list");
    if sources.exists() {
        fs::write(&sources, DEFAULT_SOURCES).map_err(BackendError::io("writing", &sources))?;
    }
    let dpkg_cfg = rootfs.join("etc/dpkg/dpkg.cfg.d/bot-bottle-slim");
    fs::write(&dpkg_cfg, DPKG_SLIM).map_err(BackendError::io("writing", &dpkg_cfg))
}

/// Keeps the entries with one of these names.
fn keep_named<'a>(names: &'a [&'a str]) -> impl Fn(&Path) -> bool + 'a {
    move |p: &Path| p.file_name().is_some_and(|n| names.iter().any(|k| n == *k))
}

/// Removes everything in `dir` that `keep` does not want; a missing `dir` is fine.
fn remove_children(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if keep(&path) {
            continue;
        }
        let removed = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(BackendError::io("removing", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_drops_host_state_and_docs_but_keeps_licences() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "etc/resolv.conf",
            "etc/hostname",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_config",
            "etc/apt/sources.list",
            "var/lib/apt/lists/deb.debian.org_dists",
            "var/lib/apt/lists/lock",
            "usr/share/man/man1/git.1.gz",
            "usr/share/locale/de/LC_MESSAGES/git.mo",
            "usr/share/locale/locale.alias",
            "usr/share/doc/git/copyright",
            "usr/share/doc/git/changelog.gz",
        ] {
            let path = root.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, b"x").unwrap();
        }
        fs::create_dir_all(root.join("etc/dpkg/dpkg.cfg.d")).unwrap();
        trim(root).unwrap();
        for gone in [
            "etc/resolv.conf",
            "etc/hostname",
            "etc/ssh/ssh_host_ed25519_key",
            "var/lib/apt/lists/deb.debian.org_dists",
            "usr/share/man/man1",
            "usr/share/locale/de",
            "usr/share/doc/git/changelog.gz",
        ] {
            assert!(!root.join(gone).exists(), "{gone} should be gone");
        }
        for kept in [
            "etc/ssh/ssh_config",
            "var/lib/apt/lists/lock",
            "usr/share/locale/locale.alias",
            "usr/share/doc/git/copyright",
            "etc/dpkg/dpkg.cfg.d/bot-bottle-slim",
        ] {
            assert!(root.join(kept).exists(), "{kept} should stay");
        }
        assert_eq!(
            fs::read_to_string(root.join("etc/apt/sources.list")).unwrap(),
            DEFAULT_SOURCES
        );
    }

    #[test]
    fn a_mirror_is_shown_without_its_credentials() {
        assert_eq!(
            shown_mirror("https://user:token@mirror.corp/debian"),
            "https://mirror.corp/debian"
        );
        assert_eq!(
            shown_mirror("http://deb.debian.org/debian"),
            "http://deb.debian.org/debian"
        );
        assert_eq!(shown_mirror("https://u:p@m.corp"), "https://m.corp");
    }
}
