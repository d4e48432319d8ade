//! [`BASE`]: the Debian image every bot-bottle image starts from, by the cheapest
//! route this machine has: present and current; else imported from the cached
//! debootstrap tarball; else `debian:bookworm-slim` from a registry plus the
//! packages; else (no registry, the usual case here and in CI) `debootstrap`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::engine::{BuildSpec, Engine, Pulled};
use crate::error::{BackendError, Result};
use crate::images::{IMAGE_LABEL, Sources, rootfs};
use crate::progress::Progress;

/// The base every bot-bottle image builds on.
pub const BASE: &str = "bot-bottle/base:bookworm";
/// The label on [`BASE`] naming its package list ([`packages_id`]).
pub const PACKAGES_LABEL: &str = "dev.bot-bottle.base-packages";
/// What the base holds beyond Debian's minimal set, and why: git and ssh for the git
/// gate, ca-certificates for everyone, curl and python3 for the demo's scripted agent
/// and stand-in upstream (and e2e's test agent), openssh-server for e2e's fake
/// upstream (`docker build` may have no network, so it cannot be added later; no
/// sshd runs in a bottle, and the host keys its install generates are removed).
///
/// Changing this list changes [`packages_id`]: the cached tarball's name and the base
/// image's label, so neither an old cache nor an old image is reused.
pub const PACKAGES: &[&str] = &[
    "ca-certificates",
    "git",
    "openssh-client",
    "openssh-server",
    "curl",
    "python3",
];
/// The registry image the base comes from when a registry is reachable.
pub const PULL_SOURCE: &str = "debian:bookworm-slim";
/// How long a pull may take before we decide there is no registry. A reachable
/// registry answers well within this; an unreachable one can hang on connect.
const PULL_TIMEOUT: Duration = Duration::from_secs(20);
/// `docker import` starts from an empty config, so the PATH must be set explicitly.
const IMPORT_PATH: &str = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A short, stable id of [`PACKAGES`]: part of the cached tarball's name and the base
/// image's [`PACKAGES_LABEL`].
pub fn packages_id() -> String {
    crate::sidecar_config::sha256_hex(PACKAGES.join(",").as_bytes())[..8].to_owned()
}

/// The cached debootstrap rootfs, relative to the cache directory.
pub fn tarball_name() -> String {
    format!("base-bookworm-{}.tar", packages_id())
}

/// How [`ensure_base`] got the base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseRoute {
    /// It was there, built for the current package list.
    Present,
    /// Imported from the cached debootstrap tarball.
    Cached,
    /// Built from the registry's slim image.
    Registry,
    /// Bootstrapped from Debian's mirrors, then imported.
    Debootstrap,
}

/// Makes sure [`BASE`] exists and is current.
pub fn ensure_base(
    backend: &dyn Engine,
    sources: &Sources,
    progress: &mut dyn Progress,
) -> Result<BaseRoute> {
    let id = packages_id();
    match backend.image_label(BASE, PACKAGES_LABEL)? {
        Some(label) if label == id => return Ok(BaseRoute::Present),
        Some(_) => progress.step(&format!(
            "{BASE} was built for another package list: replacing it"
        )),
        None => {}
    }
    let tarball = sources.cache_dir.join(tarball_name());
    let route = if tarball.is_file() {
        BaseRoute::Cached
    } else if sources.try_registry && from_registry(backend, sources, progress)? {
        return Ok(BaseRoute::Registry);
    } else {
        rootfs::debootstrap_tarball(sources, &tarball, progress)?;
        BaseRoute::Debootstrap
    };
    let started = Instant::now();
    progress.step(&format!("importing {} as {BASE}", tarball.display()));
    backend.import_image(&tarball, BASE, &import_changes())?;
    progress.done(&format!("{BASE} imported"), started.elapsed());
    Ok(route)
}

/// The `docker import --change` lines: PATH, a shell, and the labels.
fn import_changes() -> Vec<String> {
    vec![
        IMPORT_PATH.to_owned(),
        r#"CMD ["/bin/bash"]"#.to_owned(),
        format!(
            "LABEL {IMAGE_LABEL}=base {PACKAGES_LABEL}={}",
            packages_id()
        ),
    ]
}

/// The registry route: [`PULL_SOURCE`] (local or pulled) plus [`PACKAGES`].
/// `Ok(false)` when no registry answers or the package layer cannot be built, so the
/// caller falls back to debootstrap.
fn from_registry(
    backend: &dyn Engine,
    sources: &Sources,
    progress: &mut dyn Progress,
) -> Result<bool> {
    if !backend.image_exists(PULL_SOURCE)? {
        let started = Instant::now();
        progress.step(&format!(
            "pulling {PULL_SOURCE} ({}s limit)",
            PULL_TIMEOUT.as_secs()
        ));
        match backend.pull_image(PULL_SOURCE, PULL_TIMEOUT)? {
            Pulled::Pulled => progress.done(&format!("{PULL_SOURCE} pulled"), started.elapsed()),
            Pulled::Unavailable(why) => {
                progress.done(
                    &format!(
                        "no registry reachable ({why}): bootstrapping Debian instead \
                         (BOT_BOTTLE_REGISTRY=off skips asking)"
                    ),
                    started.elapsed(),
                );
                return Ok(false);
            }
        }
    }
    let context = sources
        .cache_dir
        .join(format!("base-context-{}", std::process::id()));
    std::fs::create_dir_all(&context).map_err(BackendError::io("creating", &context))?;
    let dockerfile = context.join("Dockerfile");
    std::fs::write(&dockerfile, registry_dockerfile())
        .map_err(BackendError::io("writing", &dockerfile))?;
    let started = Instant::now();
    progress.step(&format!(
        "building {BASE} from {PULL_SOURCE} + {}",
        PACKAGES.join(" ")
    ));
    let built = backend.build_image(&BuildSpec {
        context: context.clone(),
        dockerfile,
        tag: BASE.to_owned(),
        labels: BTreeMap::from([
            (IMAGE_LABEL.to_owned(), "base".to_owned()),
            (PACKAGES_LABEL.to_owned(), packages_id()),
        ]),
    });
    let _ = std::fs::remove_dir_all(&context);
    match built {
        Ok(()) => {
            progress.done(&format!("{BASE} built"), started.elapsed());
            Ok(true)
        }
        Err(error) => {
            progress.warn(&format!(
                "building {BASE} from {PULL_SOURCE} failed ({error}): bootstrapping Debian instead"
            ));
            Ok(false)
        }
    }
}

/// The slim image lacks the packages: one layer adds them.
fn registry_dockerfile() -> String {
    format!(
        "FROM {PULL_SOURCE}\n\
         RUN apt-get update \\\n \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {} \\\n \
         && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*\n",
        PACKAGES.join(" ")
    )
}

/// Whether this process runs as root (debootstrap needs it): `/proc/self` belongs to
/// the process's effective user.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether `name` is an executable on PATH or in the sbin directories (debootstrap
/// lives in /usr/sbin, which a user's PATH may lack).
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeEngine;
    use crate::progress::RecordedProgress;

    fn sources(dir: &Path) -> Sources {
        Sources {
            cache_dir: dir.to_path_buf(),
            debian_mirror: None,
            try_registry: true,
        }
    }

    #[test]
    fn the_package_list_names_the_tarball_and_the_label() {
        let id = packages_id();
        assert_eq!(id.len(), 8);
        assert_eq!(tarball_name(), format!("base-bookworm-{id}.tar"));
        assert!(
            import_changes()
                .iter()
                .any(|c| c == &format!("LABEL {IMAGE_LABEL}=base {PACKAGES_LABEL}={id}"))
        );
    }

    #[test]
    fn a_current_base_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEngine::new(&[]);
        fake.import_image(Path::new("/x.tar"), BASE, &import_changes())
            .unwrap();
        let mut progress = RecordedProgress::default();
        let route = ensure_base(&fake, &sources(dir.path()), &mut progress).unwrap();
        assert_eq!(route, BaseRoute::Present);
        assert_eq!(fake.calls(), vec![format!("import:{BASE}")]);
    }

    #[test]
    fn a_cached_tarball_is_imported_without_asking_a_registry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(tarball_name()), b"rootfs").unwrap();
        let fake = FakeEngine::new(&[]);
        let mut progress = RecordedProgress::default();
        let route = ensure_base(&fake, &sources(dir.path()), &mut progress).unwrap();
        assert_eq!(route, BaseRoute::Cached);
        assert_eq!(fake.calls(), vec![format!("import:{BASE}")]);
        assert_eq!(
            fake.image_label(BASE, PACKAGES_LABEL).unwrap(),
            Some(packages_id())
        );
    }

    #[test]
    fn a_base_for_another_package_list_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(tarball_name()), b"rootfs").unwrap();
        let fake = FakeEngine::new(&[]);
        fake.import_image(
            Path::new("/x.tar"),
            BASE,
            &[format!("LABEL {PACKAGES_LABEL}=00000000")],
        )
        .unwrap();
        let mut progress = RecordedProgress::default();
        let route = ensure_base(&fake, &sources(dir.path()), &mut progress).unwrap();
        assert_eq!(route, BaseRoute::Cached);
        assert!(
            progress
                .lines
                .iter()
                .any(|l| l.contains("another package list"))
        );
    }

    #[test]
    fn the_registry_recipe_installs_every_package_and_drops_host_keys() {
        let dockerfile = registry_dockerfile();
        assert!(dockerfile.starts_with(&format!("FROM {PULL_SOURCE}\n")));
        for package in PACKAGES {
            assert!(dockerfile.contains(package), "{package}");
        }
        assert!(dockerfile.contains("/etc/ssh/ssh_host_*"));
    }
}
