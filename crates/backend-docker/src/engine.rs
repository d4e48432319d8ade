//! The `Engine` trait: the engine operations a bottle needs, taking plain data.
//!
//! Everything the launch sequence does to the outside world goes through this trait,
//! so the CLI and the launch logic are tested against `fake::FakeEngine`
//! and run for real against [`crate::docker::DockerEngine`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plan::Secret;

use crate::error::Result;

/// The engine as `bottle doctor` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineFacts {
    /// The compose tool and its version (`docker compose 2.26.1`); none installed
    /// (or not the one `BOT_BOTTLE_COMPOSE` asks for) when `None`.
    pub compose: Option<String>,
    /// The container runtimes it offers (`runc`, `runsc`, ...).
    pub runtimes: Vec<String>,
    /// `1` or `2`.
    pub cgroup_version: String,
    /// The storage driver (`overlay2`, `fuse-overlayfs`, ...).
    pub storage_driver: String,
}

/// A network to create: always labelled with its bottle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Engine name.
    pub name: String,
    /// `--internal`: no route off the machine.
    pub internal: bool,
    /// `--subnet`: needed where compose pins a container's address.
    pub subnet: Option<String>,
    /// `--ip-range`: where the engine hands out dynamic addresses, so a pinned address
    /// outside it can never be taken by a container that starts first.
    pub ip_range: Option<String>,
    /// Give the host no address on this network: an `--internal` bridge still puts
    /// the gateway address on the host, where anything listening on 0.0.0.0 would be
    /// reachable from the agent without the proxy.
    pub no_host_address: bool,
    /// Labels (slug, role).
    pub labels: BTreeMap<String, String>,
}

/// What the engine reports about a network it created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Engine name.
    pub name: String,
    /// Subnet in CIDR form.
    pub cidr: String,
    /// Gateway address, if any.
    pub gateway: Option<String>,
}

/// An image build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSpec {
    /// Build context directory.
    pub context: PathBuf,
    /// Dockerfile (absolute, or relative to the context).
    pub dockerfile: PathBuf,
    /// Tag of the result.
    pub tag: String,
    /// Labels on the image.
    pub labels: BTreeMap<String, String>,
}

/// A local image, as `bottle images` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// `repository:tag` (`<none>:<none>` for a dangling image).
    pub reference: String,
    /// The image id (`sha256:...`).
    pub id: String,
    /// Size as the engine prints it (`123MB`).
    pub size: String,
    /// When it was built, as the engine prints it (`2 days ago`).
    pub created: String,
}

/// How a pull from a registry ended: on machines without a registry the pull never
/// succeeds, and the caller takes another route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pulled {
    /// The image is now local.
    Pulled,
    /// No registry answered (or it refused): the engine's last words.
    Unavailable(String),
}

/// A container run outside any compose project: the demo's stand-in upstream and
/// image smoke tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSpec {
    /// The image.
    pub image: String,
    /// `--name`.
    pub name: Option<String>,
    /// `--network` (`none` for no network at all).
    pub network: Option<String>,
    /// `--ip` on that network.
    pub ip: Option<String>,
    /// `-d`: start it and return (otherwise wait for it and `--rm` it).
    pub detach: bool,
    /// `--entrypoint`, if not the image's.
    pub entrypoint: Option<String>,
    /// Read-only bind mounts: host path, container path.
    pub mounts: Vec<(PathBuf, String)>,
    /// Labels (what lets `gc` and the demo find it again).
    pub labels: BTreeMap<String, String>,
    /// The command (arguments after the image).
    pub command: Vec<String>,
}

/// One compose invocation: always `-p PROJECT -f FILE`.
#[derive(Clone, Debug)]
pub struct ComposeCall {
    /// Compose project name.
    pub project: String,
    /// The compose file.
    pub file: PathBuf,
    /// Arguments after `-p -f`, e.g. `["up", "-d"]`.
    pub args: Vec<String>,
    /// Extra environment of the compose process: the secrets behind bare names.
    pub env: Vec<(String, Secret)>,
}

/// A command in a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    /// Container name or id.
    pub container: String,
    /// `-u USER`, if not the image's default.
    pub user: Option<String>,
    /// `-w DIR`, if not the container's working dir.
    pub workdir: Option<String>,
    /// The command.
    pub command: Vec<String>,
    /// Bytes fed to the command's stdin.
    pub stdin: Option<Vec<u8>>,
}

/// Output of a finished command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl Captured {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The label compose gives a container: its service's name.
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";

/// A container as `ls`/`gc` see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// Health if it has a healthcheck: `healthy`, `starting`, `unhealthy`.
    pub health: Option<String>,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// The container's environment. Values are secrets: some are.
    pub env: Vec<(String, Secret)>,
    /// The networks it is attached to, by name.
    pub networks: Vec<String>,
}

/// One more network for a created container, as compose attaches it: with the
/// service's name (and aliases) for Docker's DNS and its fixed address, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConnect {
    /// Container id or name.
    pub container: String,
    /// Network name.
    pub network: String,
    /// Names it answers to on that network.
    pub aliases: Vec<String>,
    /// Its fixed IPv4 address there.
    pub ipv4_address: Option<String>,
}

/// How often [`Engine::compose_follow`] ticks at least.
pub const FOLLOW_TICK: std::time::Duration = std::time::Duration::from_millis(500);

/// What [`Engine::compose_follow`] hands its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Followed<'a> {
    /// A line of output, without its newline.
    Line(&'a str),
    /// Time to look at the other sources.
    Tick,
}

/// The engine operations a bottle needs.
pub trait Engine {
    /// Checks the engine answers; returns its server version.
    fn engine_version(&self) -> Result<String>;
    /// What `bottle doctor` reports of the engine.
    fn describe(&self) -> Result<EngineFacts>;
    /// Whether the engine can cap a container's writable layer (`--storage-opt size`).
    fn writable_layer_quota(&self) -> Result<bool>;
    /// Whether an image exists locally.
    fn image_exists(&self, reference: &str) -> Result<bool>;
    /// The image's id (`sha256:...`).
    fn image_id(&self, reference: &str) -> Result<String>;
    /// The user an image runs as (`Config.User`; empty means root).
    fn image_user(&self, reference: &str) -> Result<String>;
    /// Builds an image; the error carries the tail of the build log.
    fn build_image(&self, spec: &BuildSpec) -> Result<()>;
    /// Creates a network and reports its subnet.
    fn create_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo>;
    /// Reports an existing network's subnet (one this launch did not create).
    fn inspect_network(&self, name: &str) -> Result<NetworkInfo>;
    /// Removes a network (missing is not an error).
    fn remove_network(&self, name: &str) -> Result<()>;
    /// Runs a compose command and captures its output.
    fn compose(&self, call: &ComposeCall) -> Result<Captured>;
    /// Runs a compose command, handing each output line to `on_event` as it comes
    /// (`logs -f`), and `Tick` at the start, whenever [`FOLLOW_TICK`] passed without
    /// one, and at the end, so the caller can follow other sources on the same
    /// thread; returns the exit code.
    fn compose_follow(
        &self,
        call: &ComposeCall,
        on_event: &mut dyn FnMut(Followed<'_>),
    ) -> Result<i32>;
    /// Runs a command in a container and captures its output.
    fn exec(&self, spec: &ExecSpec) -> Result<Captured>;
    /// Runs a command in a container attached to this terminal (`docker exec -it`);
    /// returns its exit code.
    fn exec_interactive(&self, spec: &ExecSpec) -> Result<i32>;
    /// Sends a signal to a container's main process.
    fn signal(&self, container: &str, signal: &str) -> Result<()>;
    /// Containers carrying `label` (key or key=value), running or not.
    fn containers_with_label(&self, label: &str) -> Result<Vec<ContainerInfo>>;
    /// Networks carrying `label`, by name.
    fn networks_with_label(&self, label: &str) -> Result<Vec<String>>;
    /// Force-removes containers.
    fn remove_containers(&self, ids: &[String]) -> Result<()>;
    /// Each container's output with timestamps (`docker logs --timestamps`), stdout
    /// then stderr, in the order of `ids`; all asked at once.
    fn container_logs(&self, ids: &[String]) -> Result<Vec<Captured>>;
    /// Starts created containers (ids or names), all in one call.
    fn start_containers(&self, ids: &[String]) -> Result<()>;
    /// Attaches created containers to more networks (all at once where the engine
    /// can): what the legacy compose v1 leaves for its own start, since its
    /// `up --no-start` attaches each container to its first network only.
    fn connect_networks(&self, connects: &[NetworkConnect]) -> Result<()>;
    /// Stops containers gracefully (SIGTERM, then SIGKILL after `timeout_secs`), all in
    /// one call.
    fn stop_containers(&self, ids: &[String], timeout_secs: u32) -> Result<()>;
    /// Removes networks (missing ones are not an error).
    fn remove_networks(&self, names: &[String]) -> Result<()> {
        names.iter().try_for_each(|name| self.remove_network(name))
    }
    /// Removes an image tag (missing is not an error).
    fn remove_image(&self, tag: &str) -> Result<()>;
    /// Local images whose repository matches `repository` (`bot-bottle/*`).
    fn list_images(&self, repository: &str) -> Result<Vec<ImageInfo>>;
    /// Pulls `reference`, giving up after `timeout` (an unreachable registry can
    /// hang on connect).
    fn pull_image(&self, reference: &str, timeout: Duration) -> Result<Pulled>;
    /// Imports a root file system tarball as `tag`, with Dockerfile `changes`
    /// (`ENV ...`, `LABEL ...`, `CMD ...`).
    fn import_image(&self, tarball: &Path, tag: &str, changes: &[String]) -> Result<()>;
    /// The value of the label `key` on a local image (None: no such image or label).
    fn image_label(&self, reference: &str, key: &str) -> Result<Option<String>>;
    /// The images any container (running or stopped) was created from, as they
    /// were named at `docker run` time, and their ids.
    fn images_in_use(&self) -> Result<Vec<String>>;
    /// Adds the tag `target` to the image `source`.
    fn tag_image(&self, source: &str, target: &str) -> Result<()>;
    /// Runs a container outside compose; with `detach` returns once it started.
    fn run_container(&self, spec: &RunSpec) -> Result<Captured>;
}
