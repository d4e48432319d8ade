//! `cargo xtask images`: the Docker images bottles and the e2e suite run on.
//!
//! Built idempotently and quickly on reruns:
//!
//! - [`BASE`] and the sidecar image, by the `bottle` binary itself (`bottle images
//!   build`, what a user's `bottle` does on first use; see backend-docker's `images`),
//!   with the rootfs cache under `target/bot-bottle/`; `bottle images prune` then drops
//!   other builds' sidecar images, and the sidecar is tagged [`SIDECAR_DEV`] too.
//! - [`TEST_AGENT`]: the base plus a non-root `agent` user, standing in for Claude
//!   Code in e2e.
//! - [`CLAUDE_AGENT`]: the base plus the real Claude Code CLI ([`CLAUDE_CLI_VERSION`]),
//!   taken from the pinned `claude-agent-sdk` wheel on PyPI (downloaded with
//!   `python3 -m pip download`, its SHA-256 checked, the CLI extracted and cached
//!   under `target/bot-bottle/` by the wheel's hash), and the same `agent` user.
//!
//! Only the docker CLI is used, with the classic builder (`DOCKER_BUILDKIT=0`): it
//! works on old engines and without the buildx plugin, and it always resolves
//! `FROM bot-bottle/base:bookworm` from the local engine instead of a registry.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use std::{env, fs};

use compose_render::SIDECAR_REPO;

use crate::proc::{self, Failure};

/// The base every bot-bottle image builds on (owned by backend-docker's `images`).
pub use backend_docker::images::BASE;
/// The sidecar image's moving tag, for development and e2e.
pub const SIDECAR_DEV: &str = "bot-bottle/sidecar:dev";
/// The e2e stand-in for an agent.
pub const TEST_AGENT: &str = "bot-bottle/test-agent:dev";
/// The real Claude Code CLI at `/usr/local/bin/claude`, run as `agent` (uid/gid 1000,
/// home `/home/agent`), for the e2e scenarios that drive Claude Code itself.
pub const CLAUDE_AGENT: &str = "bot-bottle/claude-agent:dev";
/// The version `claude --version` prints in [`CLAUDE_AGENT`] (followed by
/// ` (Claude Code)`): the CLI bundled in the pinned `claude-agent-sdk` wheel.
pub const CLAUDE_CLI_VERSION: &str = "2.1.332";
/// What `/home/agent/.claude.json` holds in [`CLAUDE_AGENT`] before any provisioning,
/// exactly (no newline): provisioning must merge into it, not replace it.
pub const CLAUDE_JSON_MARKER: &str = r#"{"e2eImageMarker": "kept-by-provisioning"}"#;
/// The workspace package version: xtask inherits `version.workspace = true`, so this
/// is `[workspace.package] version`, the same value `compose-render` puts in
/// `bot-bottle/sidecar:<version>`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

use backend_docker::images::IMAGE_LABEL;

/// The PyPI distribution whose wheel bundles the Claude Code CLI, and its pinned version.
const CLAUDE_SDK: &str = "claude-agent-sdk";
const CLAUDE_SDK_VERSION: &str = "0.2.189";
/// The platform pip is asked for (the host's may differ; the CLI is Linux x86-64).
const CLAUDE_WHEEL_PLATFORM: &str = "manylinux_2_17_x86_64";
/// The wheel that version and platform resolve to, its SHA-256 (the pin: anything else
/// is refused) and its size (for download progress only).
const CLAUDE_WHEEL: &str = "claude_agent_sdk-0.2.189-py3-none-manylinux_2_17_x86_64.whl";
const CLAUDE_WHEEL_SHA256: &str =
    "b26a6a30a4e2cb025a6f5c95e1ce4469b38fcc51015c392f627bea7c948d67ad";
const CLAUDE_WHEEL_BYTES: u64 = 177_849_519;
/// The self-contained CLI inside the wheel.
const CLAUDE_IN_WHEEL: &str = "claude_agent_sdk/_bundled/claude";
/// The label on [`CLAUDE_AGENT`] naming what it was built from: the wheel's SHA-256 and
/// [`fnv32`] of the recipe and the base image's ID ([`claude_agent_key`]).
const CLAUDE_KEY_LABEL: &str = "dev.bot-bottle.claude-agent-key";
/// Cache entries: the extracted CLI (`claude-cli-<wheel hash prefix>/claude`) and a
/// run's download and extraction area (`claude-work-<pid>`).
const CLAUDE_CLI_PREFIX: &str = "claude-cli-";
const CLAUDE_WORK_PREFIX: &str = "claude-work-";
/// A megabyte, as pip counts them in its progress.
const MB: u64 = 1_000_000;
/// How often a long step prints a progress line.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A short, stable hash of `text` (FNV-1a 64 folded to 32 bits, in hex): names cache
/// entries and labels images with what they were built from.
fn fnv32(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", hash as u32 ^ (hash >> 32) as u32)
}

/// The sidecar tag of the `bottle` at `binary`: its version and hash, the tag that
/// very binary looks for when it launches a bottle.
pub fn sidecar_image_for(binary: &Path) -> Result<String, Failure> {
    Ok(compose_render::sidecar_image_tag(
        VERSION,
        &sha256_file(binary)?,
    ))
}

/// What `cargo xtask images` was asked to do.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    /// Only report which images exist.
    pub check: bool,
    /// Use this `bottle` binary instead of building one.
    pub bottle_bin: Option<PathBuf>,
}

/// The usage text for `cargo xtask images`.
pub const USAGE: &str = "cargo xtask images [--check] [--bottle-bin PATH]\n\n\
  Builds bot-bottle/base:bookworm and bot-bottle/sidecar:<version>-<hash> (+ :dev)\n\
  with `bottle images build` of the release bottle, then\n\
  bot-bottle/test-agent:dev and bot-bottle/claude-agent:dev (the real Claude Code\n\
  CLI from the pinned claude-agent-sdk wheel: `python3 -m pip download` once, then\n\
  cached under target/bot-bottle/). Reruns reuse what exists.\n\n\
  --check            list which images exist; exit 0 if all do, 1 otherwise\n\
  --bottle-bin PATH  use this bottle binary (its `images build`) instead of\n\
                     running `cargo build --release -p cli --bin bottle`\n\n\
  BOT_BOTTLE_DEBIAN_MIRROR  the Debian mirror debootstrap uses (default: its own)";

/// Parses the arguments after `images`.
pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => options.check = true,
            "--bottle-bin" => {
                let path = args.next().ok_or("--bottle-bin needs a PATH")?;
                options.bottle_bin = Some(PathBuf::from(path));
            }
            other => match other.strip_prefix("--bottle-bin=") {
                Some(path) if !path.is_empty() => options.bottle_bin = Some(PathBuf::from(path)),
                _ => return Err(format!("unexpected argument `{other}`")),
            },
        }
    }
    Ok(options)
}

/// The `images` task: parses its arguments, runs, and maps the outcome to an exit code.
pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse_args(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("cargo xtask images: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = if options.check {
        check()
    } else {
        build(&options).map(|()| true)
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(failure) => {
            eprintln!("error: cargo xtask images: {failure}");
            ExitCode::from(1)
        }
    }
}

/// `--check`: which images exist. `Ok(true)` when all do.
pub fn check() -> Result<bool, Failure> {
    docker_engine()?;
    let mut all = true;
    let release = release_bottle()?;
    let sidecar = if release.is_file() {
        sidecar_image_for(&release)?
    } else {
        format!("{SIDECAR_REPO}:{VERSION}-<no release bottle built>")
    };
    for image in [
        BASE.to_string(),
        sidecar,
        SIDECAR_DEV.to_string(),
        TEST_AGENT.to_string(),
        CLAUDE_AGENT.to_string(),
    ] {
        let present = image_exists(&image)?;
        all &= present;
        println!("{:<8} {image}", if present { "present" } else { "missing" });
    }
    Ok(all)
}

/// Builds every image that is missing or stale; see the module docs.
pub fn build(options: &Options) -> Result<(), Failure> {
    let started = Instant::now();
    let (server, api) = docker_engine()?;
    println!("images: docker engine {server} (API {api}); classic builder (DOCKER_BUILDKIT=0)");
    let workspace = Workspace::locate()?;
    let rebuilt = [
        SIDECAR_DEV.to_string(),
        TEST_AGENT.to_string(),
        CLAUDE_AGENT.to_string(),
    ];
    let before = rebuilt
        .iter()
        .map(|tag| image_id(tag))
        .collect::<Result<Vec<_>, _>>()?;
    build_sidecar(&workspace, options.bottle_bin.as_deref())?;
    build_test_agent(&workspace)?;
    build_claude_agent(&workspace)?;
    remove_replaced(&rebuilt, before)?;
    println!("images: all built in {}", seconds(started.elapsed()));
    Ok(())
}

/// Removes the images our tags pointed at before this run and no longer do, so that
/// rebuilding after every change to `bottle` does not pile up untagged images.
/// Best effort: an image still used by a container (or tagged elsewhere) stays.
fn remove_replaced(tags: &[String], before: Vec<Option<String>>) -> Result<(), Failure> {
    let after = tags
        .iter()
        .map(|tag| image_id(tag))
        .collect::<Result<Vec<_>, _>>()?;
    let mut stale: Vec<String> = before
        .into_iter()
        .flatten()
        .filter(|id| !after.contains(&Some(id.clone())))
        .collect();
    stale.sort();
    stale.dedup();
    // Untagging another build's sidecar may already have removed one.
    stale.retain(|id| image_exists(id).unwrap_or(true));
    if stale.is_empty() {
        return Ok(());
    }
    let step = Step::start(&format!("removing {} replaced image(s)", stale.len()));
    let mut cmd = Command::new("docker");
    cmd.arg("rmi").args(&stale);
    let ran = proc::run(cmd)?;
    step.finish(if ran.status.success() {
        ""
    } else {
        "some are still in use, kept, "
    });
    Ok(())
}

/// Where the workspace is, where its build output goes, and which cargo runs it.
struct Workspace {
    root: PathBuf,
    target: PathBuf,
    cargo: String,
}

impl Workspace {
    /// Finds the workspace from xtask's own manifest and asks cargo for the target
    /// directory (it may be moved by `CARGO_TARGET_DIR` or config).
    fn locate() -> Result<Workspace, Failure> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives inside the workspace")
            .to_path_buf();
        // `cargo xtask` sets CARGO to the cargo that runs us; keep using that one.
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = Command::new(&cargo);
        cmd.args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(&root);
        let line = proc::describe(&cmd);
        let metadata = proc::checked(cmd)?;
        // The JSON is on stdout; warnings, if any, precede it on stderr.
        let target = metadata
            .output
            .lines()
            .find_map(|l| json_string_field(l, "target_directory"))
            .ok_or_else(|| Failure(format!("`{line}` printed no target_directory")))?;
        Ok(Workspace {
            root,
            target: PathBuf::from(target),
            cargo,
        })
    }

    /// Our corner of the target directory: the cached rootfs tarball and build contexts.
    fn cache_dir(&self) -> Result<PathBuf, Failure> {
        let dir = self.target.join("bot-bottle");
        fs::create_dir_all(&dir)
            .map_err(|e| Failure(format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir)
    }
}

/// One progress line: `images: <what> ... <note><seconds>s`, printed in two halves
/// so a slow step shows what it is doing while it runs.
struct Step {
    started: Instant,
}

impl Step {
    fn start(what: &str) -> Step {
        use std::io::Write;
        print!("images: {what} ... ");
        let _ = std::io::stdout().flush();
        Step {
            started: Instant::now(),
        }
    }

    /// Ends the line with `note` (may be empty) and the elapsed seconds.
    fn finish(self, note: &str) {
        println!("{note}{}", seconds(self.started.elapsed()));
    }

    /// Runs `work` as this step, ending the line either way.
    fn run<T>(self, work: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
        let result = work();
        match &result {
            Ok(_) => self.finish(""),
            Err(_) => self.finish("failed after "),
        }
        result
    }
}

/// Elapsed time for progress lines: tenths under ten seconds, whole seconds above.
fn seconds(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}s", elapsed.as_secs())
    }
}

/// The engine's version and API version; a clear error when docker is absent or the
/// daemon is not running.
fn docker_engine() -> Result<(String, String), Failure> {
    let mut cmd = Command::new("docker");
    cmd.args([
        "version",
        "--format",
        "{{.Server.Version}} {{.Server.APIVersion}}",
    ]);
    let ran = proc::run(cmd)?;
    let out = ran.output.trim();
    match out.split_once(' ') {
        Some((server, api)) if ran.status.success() && !server.is_empty() => {
            Ok((server.to_string(), api.to_string()))
        }
        _ => Err(Failure(format!(
            "the Docker engine is not reachable (`docker version` failed); is dockerd running?\n{}",
            proc::tail(out, 5)
        ))),
    }
}

/// Whether the engine has `image` (a name:tag).
fn image_exists(image: &str) -> Result<bool, Failure> {
    let mut cmd = Command::new("docker");
    cmd.args(["image", "inspect", "--format", "{{.Id}}", image]);
    Ok(proc::run(cmd)?.status.success())
}

/// The ID of the image `tag` names, if the engine has it.
fn image_id(tag: &str) -> Result<Option<String>, Failure> {
    let mut cmd = Command::new("docker");
    cmd.args(["image", "inspect", "--format", "{{.Id}}", tag]);
    let ran = proc::run(cmd)?;
    let id = ran.output.trim();
    Ok((ran.status.success() && !id.is_empty()).then(|| id.to_string()))
}

/// The value of `label` on `image`: `None` when the image is missing, `Some("")`
/// when it lacks the label.
fn image_label(image: &str, label: &str) -> Result<Option<String>, Failure> {
    let mut cmd = Command::new("docker");
    cmd.args([
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{label}\"}}}}"),
        image,
    ]);
    let ran = proc::run(cmd)?;
    Ok(ran.status.success().then(|| {
        let value = ran.output.trim();
        if value == "<no value>" {
            String::new()
        } else {
            value.to_string()
        }
    }))
}

/// Step 1: makes sure [`BASE`] exists, by the cheapest route available.
/// Where `build` puts the release `bottle` binary it builds.
pub fn release_bottle() -> Result<PathBuf, Failure> {
    Ok(Workspace::locate()?.target.join("release/bottle"))
}

/// Steps 1 and 2, by the `bottle` binary itself (`bottle images build`, the code a
/// user's `bottle` runs on first use): the base, and the sidecar image of that binary,
/// tagged with its version and hash. Then `bottle images prune` drops other builds'
/// sidecar images, and the result is tagged [`SIDECAR_DEV`] too.
fn build_sidecar(workspace: &Workspace, bottle_bin: Option<&Path>) -> Result<String, Failure> {
    let binary = match bottle_bin {
        Some(path) => {
            if !path.is_file() {
                return Err(Failure(format!(
                    "--bottle-bin {}: no such file",
                    path.display()
                )));
            }
            path.to_path_buf()
        }
        None => {
            let mut cmd = Command::new(&workspace.cargo);
            cmd.args(["build", "--release", "-p", "cli", "--bin", "bottle"])
                .current_dir(&workspace.root);
            // Cargo's own progress (`Compiling ...`) is what the heartbeat shows.
            let what =
                format!("sidecar: {}", proc::describe(&cmd)).replacen(&workspace.cargo, "cargo", 1);
            let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let latest = || proc::last_line(&output);
            with_heartbeat(&what, &latest, || {
                proc::checked_into(cmd, output.clone()).map(drop)
            })?;
            let binary = workspace.target.join("release/bottle");
            if !binary.is_file() {
                return Err(Failure(format!(
                    "cargo built the bottle binary, but not at {} (is CARGO_BUILD_TARGET set? \
                     pass --bottle-bin PATH)",
                    binary.display()
                )));
            }
            binary
        }
    };
    let cache = workspace.cache_dir()?;
    for action in ["build", "prune"] {
        println!("images: {} images {action}", binary.display());
        let status = Command::new(&binary)
            .args(["images", action])
            .env("BOT_BOTTLE_CACHE_DIR", &cache)
            .env_remove("BOT_BOTTLE_SIDECAR_IMAGE")
            .env_remove("BOT_BOTTLE_BACKEND")
            .status()
            .map_err(|e| Failure(format!("running {}: {e}", binary.display())))?;
        if !status.success() {
            return Err(Failure(format!(
                "`{} images {action}` failed ({status})",
                binary.display()
            )));
        }
    }
    let versioned = sidecar_image_for(&binary)?;
    let mut cmd = Command::new("docker");
    cmd.args(["tag", &versioned, SIDECAR_DEV]);
    Step::start(&format!("sidecar: docker tag {versioned} {SIDECAR_DEV}"))
        .run(|| proc::checked(cmd).map(drop))?;
    Ok(versioned)
}

/// What `PROGRAM --version` prints in `image`, run with no network: the smoke test
/// that a binary built or fetched on the host runs on the image's base.
fn version_in(image: &str, program: &str) -> Result<String, Failure> {
    let mut cmd = Command::new("docker");
    cmd.args([
        "run",
        "--rm",
        "--network",
        "none",
        image,
        program,
        "--version",
    ]);
    proc::checked(cmd).map(|ran| ran.output.trim().to_string())
}

/// Step 3: the e2e test agent, the base plus a non-root `agent` (uid 1000).
fn build_test_agent(workspace: &Workspace) -> Result<(), Failure> {
    Step::start(&format!("test-agent: docker build {TEST_AGENT}")).run(|| {
        let dockerfile = format!(
            "FROM {BASE}\n\
             RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash agent\n\
             LABEL {IMAGE_LABEL}=test-agent\n\
             USER 1000:1000\n\
             WORKDIR /home/agent\n"
        );
        docker_build(
            workspace,
            "test-agent",
            &dockerfile,
            &[],
            &[TEST_AGENT],
            false,
        )
    })
}

/// Step 4: the real Claude Code CLI on the base ([`CLAUDE_AGENT`]), kept when its
/// [`CLAUDE_KEY_LABEL`] says it was built from this wheel, recipe and base.
fn build_claude_agent(workspace: &Workspace) -> Result<(), Failure> {
    let base_id =
        image_id(BASE)?.ok_or_else(|| Failure(format!("{BASE} is missing after it was built")))?;
    let recipe = claude_agent_recipe();
    let key = claude_agent_key(&recipe, &base_id);
    if image_label(CLAUDE_AGENT, CLAUDE_KEY_LABEL)?.as_deref() == Some(key.as_str()) {
        Step::start(&format!(
            "claude-agent: {CLAUDE_AGENT} present (Claude Code {CLAUDE_CLI_VERSION}), kept"
        ))
        .finish("");
        return Ok(());
    }
    let cli = claude_cli(workspace)?;
    let megabytes = fs::metadata(&cli).map(|m| m.len()).unwrap_or(0) / MB;
    let what = format!("claude-agent: docker build {CLAUDE_AGENT} ({megabytes} MB context)");
    with_heartbeat(&what, &|| "still building".to_string(), || {
        let dockerfile = format!("{recipe}LABEL {CLAUDE_KEY_LABEL}={key}\n");
        docker_build(
            workspace,
            "claude-agent",
            &dockerfile,
            &[("claude", &cli)],
            &[CLAUDE_AGENT],
            false,
        )
    })?;

    let step = Step::start(&format!(
        "claude-agent: smoke test `claude --version` in {CLAUDE_AGENT}"
    ));
    let outcome = version_in(CLAUDE_AGENT, "claude").and_then(|printed| {
        if printed.starts_with(&format!("{CLAUDE_CLI_VERSION} ")) {
            Ok(printed)
        } else {
            Err(Failure(format!(
                "`claude --version` in {CLAUDE_AGENT} printed `{printed}`, expected \
                 {CLAUDE_CLI_VERSION} (CLAUDE_CLI_VERSION does not match the pinned wheel?)"
            )))
        }
    });
    match outcome {
        Ok(printed) => {
            step.finish(&format!("{printed}, "));
            Ok(())
        }
        Err(failure) => {
            step.finish("failed after ");
            Err(failure)
        }
    }
}

/// The Dockerfile of [`CLAUDE_AGENT`] without its [`CLAUDE_KEY_LABEL`]. The marker
/// file comes first and the CLI last, in one layer each: the CLI's mode (0755) comes
/// from the build context, since a `chmod` in a later layer would copy 400 MB again.
fn claude_agent_recipe() -> String {
    format!(
        "FROM {BASE}\n\
         RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash agent \\\n \
         && printf '%s' '{CLAUDE_JSON_MARKER}' > /home/agent/.claude.json \\\n \
         && chown 1000:1000 /home/agent/.claude.json \\\n \
         && chmod 0600 /home/agent/.claude.json\n\
         COPY claude /usr/local/bin/claude\n\
         LABEL {IMAGE_LABEL}=claude-agent dev.bot-bottle.claude-cli-version={CLAUDE_CLI_VERSION} \
         dev.bot-bottle.claude-wheel-sha256={CLAUDE_WHEEL_SHA256}\n\
         USER 1000:1000\n\
         WORKDIR /home/agent\n"
    )
}

/// The value of [`CLAUDE_KEY_LABEL`]: the wheel's SHA-256, then [`fnv32`] of the
/// recipe and the base image's ID, so a new pin, recipe or base rebuilds the image.
fn claude_agent_key(recipe: &str, base_id: &str) -> String {
    format!(
        "{CLAUDE_WHEEL_SHA256}.{}",
        fnv32(&format!("{recipe}\n{base_id}"))
    )
}

/// The cache directory of the CLI extracted from the pinned wheel.
fn claude_cli_dir_name() -> String {
    format!("{CLAUDE_CLI_PREFIX}{}", &CLAUDE_WHEEL_SHA256[..16])
}

/// The Claude Code CLI from the pinned wheel: cached, or downloaded with pip, its
/// SHA-256 checked, extracted and cached (renamed into place whole, so an interrupted
/// run leaves no half a binary). The wheel itself is not kept.
fn claude_cli(workspace: &Workspace) -> Result<PathBuf, Failure> {
    let cache = workspace.cache_dir()?;
    let name = claude_cli_dir_name();
    let pruned = prune_claude_cache(&cache, &name);
    if pruned > 0 {
        Step::start(&format!(
            "claude-agent: removed {pruned} stale Claude Code cache entr{}",
            if pruned == 1 { "y" } else { "ies" }
        ))
        .finish("");
    }
    let dir = cache.join(&name);
    let binary = dir.join("claude");
    if binary.is_file() {
        Step::start(&format!(
            "claude-agent: reusing the Claude Code CLI cached in {}",
            dir.display()
        ))
        .finish("");
        return Ok(binary);
    }

    let work = TempDir::create(&cache.join(format!("{CLAUDE_WORK_PREFIX}{}", std::process::id())))?;
    let wheel = download_wheel(&work.0)?;
    Step::start(&format!(
        "claude-agent: check the SHA-256 of {CLAUDE_WHEEL}"
    ))
    .run(|| verify_sha256(&wheel, CLAUDE_WHEEL_SHA256))?;
    Step::start(&format!(
        "claude-agent: extract {CLAUDE_IN_WHEEL} into {}",
        dir.display()
    ))
    .run(|| {
        let staged = work.0.join("cli");
        create_dir(&staged)?;
        extract_from_zip(&wheel, CLAUDE_IN_WHEEL, &staged.join("claude"))?;
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(|e| Failure(format!("cannot remove {}: {e}", dir.display())))?;
        }
        fs::rename(&staged, &dir).map_err(|e| {
            Failure(format!(
                "cannot move {} to {}: {e}",
                staged.display(),
                dir.display()
            ))
        })
    })?;
    Ok(binary)
}

/// `python3 -m pip download` of the pinned wheel into `work/download`; its path. pip's
/// temporary files go to `work/tmp`, so their growth is the download's progress.
fn download_wheel(work: &Path) -> Result<PathBuf, Failure> {
    let mut probe = Command::new("python3");
    probe.args(["-m", "pip", "--version"]);
    let ran = proc::run(probe)?;
    if !ran.status.success() {
        return Err(Failure(format!(
            "`python3 -m pip` is not available (needed to download {CLAUDE_SDK}=={CLAUDE_SDK_VERSION} \
             from PyPI): install python3-pip (.ci/setup does)\n{}",
            ran.tail(5)
        )));
    }
    let download = work.join("download");
    let tmp = work.join("tmp");
    create_dir(&download)?;
    create_dir(&tmp)?;
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--platform", CLAUDE_WHEEL_PLATFORM])
        .args(["--no-cache-dir", "--progress-bar", "off", "--no-input"])
        .arg("--disable-pip-version-check")
        .arg(format!("{CLAUDE_SDK}=={CLAUDE_SDK_VERSION}"))
        .arg("-d")
        .arg(&download)
        .env("TMPDIR", &tmp);
    let what = format!(
        "claude-agent: pip download {CLAUDE_SDK}=={CLAUDE_SDK_VERSION} ({} MB)",
        CLAUDE_WHEEL_BYTES / MB
    );
    let progress = || {
        let bytes = tree_size(&tmp) + tree_size(&download);
        format!("{} of {} MB", bytes / MB, CLAUDE_WHEEL_BYTES / MB)
    };
    with_heartbeat(&what, &progress, || proc::checked(cmd).map(drop))?;
    let wheel = download.join(CLAUDE_WHEEL);
    if wheel.is_file() {
        return Ok(wheel);
    }
    let saved: Vec<String> = fs::read_dir(&download)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    Err(Failure(format!(
        "pip downloaded {saved:?}, not {CLAUDE_WHEEL}: refusing it (only that wheel, with \
         SHA-256 {CLAUDE_WHEEL_SHA256}, is trusted)"
    )))
}

/// The SHA-256 of a file, in lowercase hex.
fn sha256_file(path: &Path) -> Result<String, Failure> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let fail = |e: std::io::Error| Failure(format!("cannot read {}: {e}", path.display()));
    let mut file = fs::File::open(path).map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Refuses `path` unless its SHA-256 is `expected` (lowercase hex).
fn verify_sha256(path: &Path, expected: &str) -> Result<(), Failure> {
    let actual = sha256_file(path)?;
    if actual == expected {
        Ok(())
    } else {
        Err(Failure(format!(
            "{} has SHA-256 {actual}, but the pin for {CLAUDE_SDK}=={CLAUDE_SDK_VERSION} is \
             {expected}: refusing it (a different file than the one pinned was served)",
            path.display()
        )))
    }
}

/// Extracts `member` of the zip archive `archive` into `dest` (python3's zipfile: pip
/// needs python3 anyway) and makes it executable (0755).
fn extract_from_zip(archive: &Path, member: &str, dest: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    const SCRIPT: &str = "import shutil, sys, zipfile\n\
        archive, member, dest = sys.argv[1:]\n\
        with zipfile.ZipFile(archive) as z, z.open(member) as src, open(dest, 'wb') as out:\n    \
        shutil.copyfileobj(src, out, 1 << 20)\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SCRIPT]).arg(archive).arg(member).arg(dest);
    proc::checked(cmd)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
        .map_err(|e| Failure(format!("cannot chmod {}: {e}", dest.display())))
}

/// Removes Claude Code cache entries other than `keep`: CLIs of other pins and the work
/// areas of runs that are no longer alive. How many it removed; best effort.
fn prune_claude_cache(cache: &Path, keep: &str) -> usize {
    let mut removed = 0;
    for entry in fs::read_dir(cache).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = match name.strip_prefix(CLAUDE_WORK_PREFIX) {
            Some(pid) => !Path::new("/proc").join(pid).exists(),
            None => name.starts_with(CLAUDE_CLI_PREFIX) && name != keep,
        };
        if stale && fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The total size of the files under `dir` (0 when it is missing).
fn tree_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => tree_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn create_dir(path: &Path) -> Result<(), Failure> {
    fs::create_dir_all(path).map_err(|e| Failure(format!("cannot create {}: {e}", path.display())))
}

/// Runs `work` as the step `what`; while it runs, prints `progress()` every
/// [`HEARTBEAT`], so that a slow download or build is never silent for long.
fn with_heartbeat<T>(
    what: &str,
    progress: &(dyn Fn() -> String + Sync),
    work: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let step = Step::start(what);
    let done = AtomicBool::new(false);
    let spoke = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut next = step.started + HEARTBEAT;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if Instant::now() >= next && !done.load(Ordering::SeqCst) {
                    if !spoke.swap(true, Ordering::SeqCst) {
                        println!();
                    }
                    println!(
                        "images:     {} after {}",
                        progress(),
                        seconds(step.started.elapsed())
                    );
                    next += HEARTBEAT;
                }
            }
        });
        let result = work();
        done.store(true, Ordering::SeqCst);
        result
    });
    if spoke.load(Ordering::SeqCst) {
        print!("images: {what} ... ");
    }
    match &result {
        Ok(_) => step.finish(""),
        Err(_) => step.finish("failed after "),
    }
    result
}

/// `docker build` from a fresh context holding `dockerfile` and `files` (name in the
/// context, source path), tagging every one of `tags`. Builds without network unless
/// `network` (only the registry route's apt layer needs it). The context is removed
/// afterwards, success or not.
fn docker_build(
    workspace: &Workspace,
    name: &str,
    dockerfile: &str,
    files: &[(&str, &Path)],
    tags: &[&str],
    network: bool,
) -> Result<(), Failure> {
    let context = TempDir::create(
        &workspace
            .cache_dir()?
            .join(format!("context-{name}-{}", std::process::id())),
    )?;
    let write = |path: PathBuf, result: std::io::Result<()>| {
        result.map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))
    };
    let path = context.0.join("Dockerfile");
    write(path.clone(), fs::write(&path, dockerfile))?;
    for (file, source) in files {
        // A hard link when it can (the Claude Code CLI is 400 MB), else a copy; either
        // keeps the mode, which the classic builder's COPY preserves.
        let path = context.0.join(file);
        let linked = fs::hard_link(source, &path).or_else(|_| fs::copy(source, &path).map(drop));
        write(path.clone(), linked)?;
    }

    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_BUILDKIT", "0").arg("build");
    if !network {
        cmd.args(["--network", "none"]);
    }
    for tag in tags {
        cmd.args(["--tag", tag]);
    }
    cmd.arg(&context.0);
    proc::checked(cmd).map(drop)
}

/// A directory removed when dropped: build contexts never outlive their build.
struct TempDir(PathBuf);

impl TempDir {
    fn create(path: &Path) -> Result<TempDir, Failure> {
        if path.exists() {
            let _ = fs::remove_dir_all(path);
        }
        fs::create_dir_all(path)
            .map_err(|e| Failure(format!("cannot create {}: {e}", path.display())))?;
        Ok(TempDir(path.to_path_buf()))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The string value of `"key":"..."` in a line of JSON, unescaped; enough JSON for
/// `cargo metadata`'s `target_directory` without a parser dependency.
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":\"");
    let start = json.find(&needle)? + needle.len();
    let mut value = String::new();
    let mut chars = json[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                'b' => value.push('\u{8}'),
                'f' => value.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(parse_args(&[]), Ok(Options::default()));
        assert_eq!(
            parse_args(&args(&["--check", "--bottle-bin", "/x/bottle"])),
            Ok(Options {
                check: true,
                bottle_bin: Some(PathBuf::from("/x/bottle")),
            })
        );
        assert_eq!(
            parse_args(&args(&["--bottle-bin=/y"])).map(|o| o.bottle_bin),
            Ok(Some(PathBuf::from("/y")))
        );
        assert!(parse_args(&args(&["--bottle-bin"])).is_err());
        assert!(parse_args(&args(&["--bottle-bin="])).is_err());
        assert!(parse_args(&args(&["--frobnicate"])).is_err());
    }

    #[test]
    fn the_sidecar_tag_is_the_version_and_the_binarys_hash() {
        let dir = std::env::temp_dir().join(format!("xtask-tag-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("bottle");
        fs::write(&binary, b"abc").unwrap();
        // SHA-256("abc") starts with ba7816bf8f01.
        assert_eq!(
            sidecar_image_for(&binary).unwrap(),
            format!("bot-bottle/sidecar:{VERSION}-ba7816bf8f01")
        );
        fs::remove_dir_all(&dir).unwrap();
        assert!(VERSION.split('.').count() == 3, "{VERSION}");
    }

    #[test]
    fn json_strings() {
        let json = r#"{"packages":[],"target_directory":"/w/my \"t\"\\dir\u00e9","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some("/w/my \"t\"\\dir\u{e9}")
        );
        assert_eq!(json_string_field(json, "workspace_root"), None);
        assert_eq!(json_string_field(r#"{"a":"unterminated"#, "a"), None);
    }

    /// A scratch directory under the system's temp dir, removed when dropped.
    fn scratch(name: &str) -> TempDir {
        TempDir::create(
            &env::temp_dir().join(format!("xtask-images-{name}-{}", std::process::id())),
        )
        .expect("scratch dir")
    }

    #[test]
    fn sha256_of_a_file() {
        let dir = scratch("sha");
        let file = dir.0.join("abc");
        fs::write(&file, "abc").unwrap();
        assert_eq!(
            sha256_file(&file).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_wheel_with_another_hash_is_refused() {
        let dir = scratch("verify");
        let file = dir.0.join(CLAUDE_WHEEL);
        fs::write(&file, "not the wheel").unwrap();
        let actual = sha256_file(&file).unwrap();
        assert!(verify_sha256(&file, &actual).is_ok());
        let err = verify_sha256(&file, CLAUDE_WHEEL_SHA256)
            .expect_err("a mismatch is refused")
            .0;
        assert!(err.contains(&actual), "{err}");
        assert!(err.contains(CLAUDE_WHEEL_SHA256), "{err}");
        assert!(err.contains("refusing"), "{err}");
        assert!(verify_sha256(&dir.0.join("missing"), CLAUDE_WHEEL_SHA256).is_err());
    }

    #[test]
    fn the_pin_is_consistent() {
        assert_eq!(CLAUDE_WHEEL_SHA256.len(), 64);
        assert!(
            CLAUDE_WHEEL_SHA256
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(CLAUDE_WHEEL.starts_with(&format!("claude_agent_sdk-{CLAUDE_SDK_VERSION}-")));
        assert!(CLAUDE_WHEEL.ends_with(&format!("-{CLAUDE_WHEEL_PLATFORM}.whl")));
        assert_eq!(
            claude_cli_dir_name(),
            format!("claude-cli-{}", &CLAUDE_WHEEL_SHA256[..16])
        );
    }

    #[test]
    fn the_claude_agent_recipe() {
        let recipe = claude_agent_recipe();
        assert!(recipe.starts_with(&format!("FROM {BASE}\n")), "{recipe}");
        assert!(
            recipe.contains("COPY claude /usr/local/bin/claude\n"),
            "{recipe}"
        );
        assert!(recipe.contains("--uid 1000 --user-group --shell /bin/bash agent"));
        assert!(recipe.contains(&format!("claude-cli-version={CLAUDE_CLI_VERSION}")));
        assert!(
            recipe.ends_with("USER 1000:1000\nWORKDIR /home/agent\n"),
            "{recipe}"
        );
        // The marker goes through the shell in single quotes, and is JSON.
        assert!(!CLAUDE_JSON_MARKER.contains('\''));
        assert!(recipe.contains(&format!(
            "printf '%s' '{CLAUDE_JSON_MARKER}' > /home/agent/.claude.json"
        )));
        let marker: serde_json::Value = serde_json::from_str(CLAUDE_JSON_MARKER).unwrap();
        assert_eq!(marker["e2eImageMarker"], "kept-by-provisioning");
        // A chmod after the COPY would store the 400 MB CLI twice.
        assert!(!recipe.contains("chmod 0755"), "{recipe}");
    }

    #[test]
    fn the_claude_agent_key_follows_the_wheel_recipe_and_base() {
        let recipe = claude_agent_recipe();
        let key = claude_agent_key(&recipe, "sha256:aaa");
        assert!(key.starts_with(&format!("{CLAUDE_WHEEL_SHA256}.")), "{key}");
        assert_eq!(key, claude_agent_key(&recipe, "sha256:aaa"));
        assert_ne!(key, claude_agent_key(&recipe, "sha256:bbb"));
        assert_ne!(
            key,
            claude_agent_key(&format!("{recipe}ENV X=1\n"), "sha256:aaa")
        );
    }

    #[test]
    fn pruning_keeps_the_current_cli_and_live_work_areas() {
        let dir = scratch("prune");
        let keep = claude_cli_dir_name();
        let names = [
            keep.clone(),
            "claude-cli-0000000000000000".to_string(),
            format!("claude-work-{}", std::process::id()),
            "claude-work-4294967295".to_string(),
            "base-bookworm-f26dce65.tar".to_string(),
        ];
        for name in &names {
            fs::create_dir_all(dir.0.join(name)).unwrap();
        }
        assert_eq!(prune_claude_cache(&dir.0, &keep), 2);
        let mut left: Vec<String> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected = vec![names[0].clone(), names[2].clone(), names[4].clone()];
        expected.sort();
        assert_eq!(left, expected);
    }

    #[test]
    fn extracting_one_member_of_a_zip() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("zip");
        let archive = dir.0.join("w.whl");
        let mut make = Command::new("python3");
        make.args([
            "-c",
            "import sys, zipfile\n\
             with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    \
             z.writestr('pkg/_bundled/claude', '#!/bin/sh\\necho hi\\n')\n    \
             z.writestr('pkg/other', 'x')\n",
        ])
        .arg(&archive);
        proc::checked(make).expect("python3 writes a zip");
        let out = dir.0.join("claude");
        extract_from_zip(&archive, "pkg/_bundled/claude", &out).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "#!/bin/sh\necho hi\n");
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(extract_from_zip(&archive, "pkg/missing", &dir.0.join("x")).is_err());
    }

    #[test]
    fn tree_sizes() {
        let dir = scratch("size");
        fs::create_dir_all(dir.0.join("a/b")).unwrap();
        fs::write(dir.0.join("one"), [0u8; 10]).unwrap();
        fs::write(dir.0.join("a/b/two"), [0u8; 32]).unwrap();
        assert_eq!(tree_size(&dir.0), 42);
        assert_eq!(tree_size(&dir.0.join("missing")), 0);
    }
}
