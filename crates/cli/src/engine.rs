//! Which backend the CLI drives: bottles on Docker, on a Kubernetes cluster
//! (`BOT_BOTTLE_BACKEND=k8s`, the cluster kubectl would use), or on the fake engine for
//! tests (`BOT_BOTTLE_BACKEND=fake:PATH`, `BOT_BOTTLE_FAKE_FAIL=OPERATION`).

use std::path::{Path, PathBuf};

use backend_api::Backend;
use backend_docker::bottles::{Bottles, SidecarSource};
use backend_docker::docker::{ComposeFlavor, DockerEngine};
use backend_docker::images::{OwnBinary, Sources};
use backend_docker::{BackendError, Engine};

use crate::commands::state_root;
use crate::{CliError, host};

/// Environment variable selecting the backend.
pub const BACKEND_ENV: &str = "BOT_BOTTLE_BACKEND";
/// Environment variable naming the operation the fake backend fails.
pub const FAKE_FAIL_ENV: &str = "BOT_BOTTLE_FAKE_FAIL";
/// Environment variable overriding the sidecar image.
pub const SIDECAR_IMAGE_ENV: &str = "BOT_BOTTLE_SIDECAR_IMAGE";

/// Environment variable choosing the compose tool: `v1` (`docker-compose`) or `v2`
/// (`docker compose`); unset, v2 where installed.
pub const COMPOSE_ENV: &str = "BOT_BOTTLE_COMPOSE";
/// Environment variable naming where images are built and their rootfs cached.
pub const CACHE_DIR_ENV: &str = "BOT_BOTTLE_CACHE_DIR";
/// Environment variable that, set to `off`, keeps `bottle` from trying a registry
/// for the base image (debootstrap straight away; nothing asks DNS for a registry).
pub const REGISTRY_ENV: &str = "BOT_BOTTLE_REGISTRY";
/// Environment variable naming the Debian mirror debootstrap uses.
pub const MIRROR_ENV: &str = "BOT_BOTTLE_DEBIAN_MIRROR";

/// The sidecar image of this very binary: `BOT_BOTTLE_SIDECAR_IMAGE` if set, else
/// `bot-bottle/sidecar:<version>-<sha256 of this executable>`, which `bottle` builds
/// on first use ([`backend_docker::images::ensure_sidecar`]).
pub fn sidecar_image() -> Result<String, CliError> {
    match sidecar_override() {
        Some(image) => Ok(image),
        None => Ok(own_binary()?.sidecar_tag()),
    }
}

/// `BOT_BOTTLE_SIDECAR_IMAGE`, when set: then nothing is built for the sidecar.
pub fn sidecar_override() -> Option<String> {
    std::env::var(SIDECAR_IMAGE_ENV)
        .ok()
        .filter(|v| !v.is_empty())
}

/// This running executable and its hash.
pub fn own_binary() -> Result<OwnBinary, CliError> {
    OwnBinary::current().map_err(|e| CliError::Internal(e.to_string()))
}

/// Where images come from: `BOT_BOTTLE_CACHE_DIR`, else `$XDG_CACHE_HOME/bot-bottle`,
/// else `~/.cache/bot-bottle`; the mirror from `BOT_BOTTLE_DEBIAN_MIRROR`.
pub fn image_sources() -> Result<Sources, CliError> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let cache_dir = if let Some(dir) = var(CACHE_DIR_ENV) {
        PathBuf::from(dir)
    } else if let Some(dir) = var("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("bot-bottle")
    } else if let Some(home) = var("HOME") {
        PathBuf::from(home).join(".cache/bot-bottle")
    } else {
        return Err(CliError::User(format!(
            "neither {CACHE_DIR_ENV}, XDG_CACHE_HOME nor HOME is set: set one, so bottle \
             knows where to build its images"
        )));
    };
    Ok(Sources {
        cache_dir,
        try_registry: match std::env::var(REGISTRY_ENV).ok().as_deref() {
            None | Some("" | "on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(CliError::User(format!(
                    "{REGISTRY_ENV}={other}: expected `on` or `off`"
                )));
            }
        },
        debian_mirror: std::env::var(MIRROR_ENV)
            .ok()
            .filter(|m| !m.trim().is_empty()),
    })
}

/// The backend for this invocation: bottles on the engine [`engine`] picks, with
/// their state in the state root and this executable's sidecar image.
pub fn backend() -> Result<Box<dyn Backend>, CliError> {
    if std::env::var(BACKEND_ENV).is_ok_and(|spec| spec == "k8s") {
        // A cluster pulls its images: only an image named for it will do.
        let bottles = backend_k8s::K8sBottles::connect(sidecar_override())
            .map_err(|e| CliError::User(e.to_string()))?;
        return Ok(Box::new(bottles));
    }
    let sidecar = match sidecar_override() {
        Some(image) => SidecarSource::Fixed(image),
        None => SidecarSource::Own {
            sources: image_sources().map_err(|e| e.to_string()),
        },
    };
    let engine = engine()?;
    let name = if fake_spec().is_some() {
        "fake"
    } else {
        "docker"
    };
    Ok(Box::new(Bottles::new(
        engine,
        name,
        state_root()?,
        sidecar,
        host::pid_alive,
    )))
}

/// `BOT_BOTTLE_BACKEND=fake:PATH`'s path.
fn fake_spec() -> Option<PathBuf> {
    std::env::var(BACKEND_ENV)
        .ok()
        .and_then(|spec| spec.strip_prefix("fake:").map(PathBuf::from))
}

/// The engine for this invocation: Docker, or the fake one
/// (`BOT_BOTTLE_BACKEND=fake:PATH`). Only the Docker-specific commands (`images`,
/// the demo's stand-in internet) use it directly; bottles go through [`backend`].
pub fn engine() -> Result<Box<dyn Engine>, CliError> {
    match std::env::var(BACKEND_ENV).ok().as_deref() {
        Some(spec) if spec.starts_with("fake:") => {
            let path = PathBuf::from(&spec["fake:".len()..]);
            let images = [sidecar_image()?, "bot-bottle/agent:latest".to_owned()];
            let images: Vec<&str> = images.iter().map(String::as_str).collect();
            let fail_at = std::env::var(FAKE_FAIL_ENV).ok().filter(|v| !v.is_empty());
            let compose_v1 = std::env::var(COMPOSE_ENV).is_ok_and(|v| v == "v1");
            backend_docker::fake_engine(Path::new(&path), &images, fail_at, compose_v1)
                .ok_or_else(|| {
                    CliError::User(format!(
                        "{BACKEND_ENV}=fake:...: this build of bottle has no fake engine (it is \
                         for its tests)"
                    ))
                })?
                .map_err(|e| CliError::Internal(e.to_string()))
        }
        Some("k8s") => Err(CliError::User(format!(
            "this command builds or runs containers on a local Docker engine; \
             {BACKEND_ENV}=k8s is for bottles on a cluster: unset it here"
        ))),
        Some(other) if !other.is_empty() && other != "docker" => Err(CliError::User(format!(
            "{BACKEND_ENV}={other}: expected `docker`, `k8s` or `fake:PATH`"
        ))),
        _ => {
            let preferred = match std::env::var(COMPOSE_ENV).ok().filter(|v| !v.is_empty()) {
                None => None,
                Some(text) => Some(ComposeFlavor::parse(&text).ok_or_else(|| {
                    CliError::User(format!("{COMPOSE_ENV}={text}: expected `v1` or `v2`"))
                })?),
            };
            Ok(Box::new(DockerEngine::detect_with(preferred).map_err(
                |e| match e {
                    BackendError::NoEngine { .. } => CliError::NoEngine(e.to_string()),
                    other => CliError::User(other.to_string()),
                },
            )?))
        }
    }
}
