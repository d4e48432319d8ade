//! Which backend the CLI drives: Docker, or the fake engine for tests
//! (`BOT_BOTTLE_BACKEND=fake:PATH`, `BOT_BOTTLE_FAKE_FAIL=OPERATION`).

use std::path::{Path, PathBuf};

use backend_docker::Backend;
use backend_docker::docker::DockerBackend;
use backend_docker::fake::FakeBackend;

use crate::CliError;

/// Environment variable selecting the backend.
pub const BACKEND_ENV: &str = "BOT_BOTTLE_BACKEND";
/// Environment variable naming the operation the fake backend fails.
pub const FAKE_FAIL_ENV: &str = "BOT_BOTTLE_FAKE_FAIL";
/// Environment variable overriding the sidecar image.
pub const SIDECAR_IMAGE_ENV: &str = "BOT_BOTTLE_SIDECAR_IMAGE";

/// The sidecar image of this very binary (`cargo xtask images` tags what it builds
/// from a binary with that binary's hash): `BOT_BOTTLE_SIDECAR_IMAGE` if set, else
/// `bot-bottle/sidecar:<version>-<sha256 of this executable>`.
pub fn sidecar_image() -> Result<String, CliError> {
    if let Some(image) = std::env::var(SIDECAR_IMAGE_ENV)
        .ok()
        .filter(|v| !v.is_empty())
    {
        return Ok(image);
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Internal(format!("finding this executable: {e}")))?;
    let bytes = std::fs::read(&exe)
        .map_err(|e| CliError::Internal(format!("reading {}: {e}", exe.display())))?;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    Ok(compose_render::sidecar_image_tag(
        env!("CARGO_PKG_VERSION"),
        &digest,
    ))
}

/// The backend for this invocation.
pub fn backend() -> Result<Box<dyn Backend>, CliError> {
    match std::env::var(BACKEND_ENV).ok().as_deref() {
        Some(spec) if spec.starts_with("fake:") => {
            let path = PathBuf::from(&spec["fake:".len()..]);
            let images = [sidecar_image()?, "bot-bottle/agent:latest".to_owned()];
            let images: Vec<&str> = images.iter().map(String::as_str).collect();
            let fake = FakeBackend::open(Path::new(&path), &images)
                .map_err(|e| CliError::Internal(e.to_string()))?
                .fail_at(std::env::var(FAKE_FAIL_ENV).ok().filter(|v| !v.is_empty()));
            Ok(Box::new(fake))
        }
        Some(other) if !other.is_empty() && other != "docker" => Err(CliError::User(format!(
            "{BACKEND_ENV}={other}: expected `docker` or `fake:PATH`"
        ))),
        _ => Ok(Box::new(
            DockerBackend::detect().map_err(|e| CliError::User(e.to_string()))?,
        )),
    }
}
