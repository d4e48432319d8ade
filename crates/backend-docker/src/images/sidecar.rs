//! The sidecar image: the running `bottle` executable (which carries every sidecar)
//! on [`BASE`], with its C runtime ([`super::runtime`]), tagged with its version and
//! hash so that every build has its own.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::{BuildSpec, Engine, RunSpec};
use crate::error::{BackendError, Result};
use crate::images::base::{BASE, BaseRoute, ensure_base};
use crate::images::runtime::{BIN_PATH, LIB_DIR, Runtime, wrapper_script};
use crate::images::{IMAGE_LABEL, Sources};
use crate::progress::Progress;

/// The label on a sidecar image naming the SHA-256 of the `bottle` inside.
pub const BINARY_LABEL: &str = "dev.bot-bottle.binary-sha256";
/// The version of this build (the workspace version, the same for every crate).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `bottle` executable that is running, and the sidecar tag that is its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnBinary {
    /// Where it is, for messages.
    pub path: PathBuf,
    /// What to read it from: `/proc/self/exe` for the running one, which stays the
    /// running file even when `cargo install` replaced the path meanwhile.
    pub source: PathBuf,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

impl OwnBinary {
    /// The running executable.
    pub fn current() -> Result<OwnBinary> {
        let source = PathBuf::from("/proc/self/exe");
        let path = std::env::current_exe().unwrap_or_else(|_| source.clone());
        let bytes = std::fs::read(&source).map_err(BackendError::io("reading", &source))?;
        Ok(OwnBinary {
            path,
            source,
            sha256: crate::sidecar_config::sha256_hex(&bytes),
        })
    }

    /// The executable at `path`.
    pub fn at(path: &Path) -> Result<OwnBinary> {
        let bytes = std::fs::read(path).map_err(BackendError::io("reading", path))?;
        Ok(OwnBinary {
            path: path.to_path_buf(),
            source: path.to_path_buf(),
            sha256: crate::sidecar_config::sha256_hex(&bytes),
        })
    }

    /// `bot-bottle/sidecar:<version>-<hash>`: the image this binary's sidecars run.
    pub fn sidecar_tag(&self) -> String {
        compose_render::sidecar_image_tag(VERSION, &self.sha256)
    }
}

/// What [`ensure_sidecar`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarImage {
    /// The tag.
    pub tag: String,
    /// Whether it was built now (false: it was there).
    pub built: bool,
    /// How the base was found or made.
    pub base: BaseRoute,
}

/// Makes sure the running `bottle`'s sidecar image exists: the base first, then the
/// executable and its runtime copied onto it, then a smoke test (`bottle --version`
/// in the image, with no network) before the tag is trusted.
pub fn ensure_sidecar(
    backend: &dyn Engine,
    own: &OwnBinary,
    sources: &Sources,
    progress: &mut dyn Progress,
) -> Result<SidecarImage> {
    let tag = own.sidecar_tag();
    if backend.image_exists(&tag)? {
        return Ok(SidecarImage {
            tag,
            built: false,
            base: BaseRoute::Present,
        });
    }
    let base = ensure_base(backend, sources, progress)?;
    let started = Instant::now();
    progress.step(&format!("building {tag} from {}", own.path.display()));
    let context = sources
        .cache_dir
        .join(format!("sidecar-context-{}", std::process::id()));
    let built = build(backend, own, &tag, &context);
    let _ = std::fs::remove_dir_all(&context);
    built?;
    progress.done(&format!("{tag} built"), started.elapsed());
    smoke_test(backend, &tag)?;
    Ok(SidecarImage {
        tag,
        built: true,
        base,
    })
}

/// Writes the build context (the executable, its runtime, the wrapper) and builds.
fn build(backend: &dyn Engine, own: &OwnBinary, tag: &str, context: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(context);
    std::fs::create_dir_all(context).map_err(BackendError::io("creating", context))?;
    let runtime = Runtime::of_this_process()?;
    runtime.copy_into(&context.join("lib"))?;
    let binary = context.join("bottle");
    std::fs::copy(&own.source, &binary).map_err(BackendError::io("copying", &own.source))?;
    // What was copied must be what was hashed: the tag promises it.
    if OwnBinary::at(&binary)?.sha256 != own.sha256 {
        return Err(BackendError::BinaryChanged {
            path: own.path.display().to_string(),
        });
    }
    let wrapper = context.join("bottle.sh");
    std::fs::write(&wrapper, wrapper_script(&runtime.loader_name()))
        .map_err(BackendError::io("writing", &wrapper))?;
    for (path, mode) in [(&binary, 0o755), (&wrapper, 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(BackendError::io("setting the mode of", path))?;
    }
    let dockerfile = context.join("Dockerfile");
    std::fs::write(&dockerfile, dockerfile_text())
        .map_err(BackendError::io("writing", &dockerfile))?;
    backend.build_image(&BuildSpec {
        context: context.to_path_buf(),
        dockerfile,
        tag: tag.to_owned(),
        labels: BTreeMap::from([
            (IMAGE_LABEL.to_owned(), "sidecar".to_owned()),
            ("dev.bot-bottle.version".to_owned(), VERSION.to_owned()),
            (BINARY_LABEL.to_owned(), own.sha256.clone()),
        ]),
    })
}

/// The sidecar image's recipe: the runtime and the executable under `/opt/bot-bottle`,
/// the wrapper as `/usr/local/bin/bottle` (what compose files and healthchecks run).
fn dockerfile_text() -> String {
    format!(
        "FROM {BASE}\n\
         COPY lib/ {LIB_DIR}/\n\
         COPY bottle {BIN_PATH}\n\
         COPY bottle.sh /usr/local/bin/bottle\n"
    )
}

/// `bottle --version` in the image, with no network: the tag is removed again if the
/// binary does not run there, so a broken image is never used.
fn smoke_test(backend: &dyn Engine, tag: &str) -> Result<()> {
    let ran = backend.run_container(&RunSpec {
        image: tag.to_owned(),
        network: Some("none".to_owned()),
        command: vec!["bottle".to_owned(), "--version".to_owned()],
        ..RunSpec::default()
    });
    let printed = ran
        .as_ref()
        .map(|c| String::from_utf8_lossy(&c.stdout).trim().to_owned());
    match printed {
        Ok(text) if text == format!("bottle {VERSION}") => Ok(()),
        other => {
            let _ = backend.remove_image(tag);
            Err(BackendError::Command {
                command: format!("docker run --rm --network none {tag} bottle --version"),
                detail: match other {
                    Ok(text) => format!("printed `{text}`, not `bottle {VERSION}`"),
                    Err(error) => error.to_string(),
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeEngine;
    use crate::images::base::tarball_name;
    use crate::progress::RecordedProgress;

    fn own() -> OwnBinary {
        OwnBinary::current().unwrap()
    }

    #[test]
    fn the_tag_carries_the_version_and_the_hash() {
        let own = own();
        assert_eq!(own.sha256.len(), 64);
        assert_eq!(
            own.sidecar_tag(),
            format!("bot-bottle/sidecar:{VERSION}-{}", &own.sha256[..12])
        );
    }

    #[test]
    fn a_present_image_is_not_rebuilt() {
        let own = own();
        let fake = FakeEngine::new(&[&own.sidecar_tag()]);
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            cache_dir: dir.path().into(),
            debian_mirror: None,
            try_registry: true,
        };
        let mut progress = RecordedProgress::default();
        let image = ensure_sidecar(&fake, &own, &sources, &mut progress).unwrap();
        assert!(!image.built);
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn a_missing_image_is_built_on_the_base_and_smoke_tested() {
        let own = own();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(tarball_name()), b"rootfs").unwrap();
        let fake = FakeEngine::new(&[]);
        let sources = Sources {
            cache_dir: dir.path().into(),
            debian_mirror: None,
            try_registry: true,
        };
        let mut progress = RecordedProgress::default();
        let image = ensure_sidecar(&fake, &own, &sources, &mut progress).unwrap();
        assert!(image.built);
        assert_eq!(image.base, BaseRoute::Cached);
        let tag = own.sidecar_tag();
        assert_eq!(
            fake.calls(),
            vec![
                format!("import:{BASE}"),
                format!("build:{tag}"),
                format!("run:{tag}:bottle --version"),
            ]
        );
        assert_eq!(
            fake.image_label(&tag, BINARY_LABEL).unwrap(),
            Some(own.sha256.clone())
        );
        // The build context is gone again.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn the_recipe_puts_the_wrapper_on_the_path() {
        let text = dockerfile_text();
        assert!(text.starts_with(&format!("FROM {BASE}\n")));
        assert!(text.contains("COPY bottle.sh /usr/local/bin/bottle\n"));
        assert!(text.contains(&format!("COPY bottle {BIN_PATH}\n")));
    }
}
