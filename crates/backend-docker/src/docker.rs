//! [`Engine`] through the docker CLI (duct): it negotiates the Engine API version,
//! which matters with old engines, and compose has no engine API at all.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::engine::*;
use crate::error::{BackendError, Result};

/// How compose is invoked on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComposeFlavor {
    /// `docker compose` (the v2 plugin).
    V2,
    /// `docker-compose` (legacy v1).
    V1,
}

impl ComposeFlavor {
    /// `v1` or `v2`, as `BOT_BOTTLE_COMPOSE` spells it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "v2" => Some(Self::V2),
            "v1" => Some(Self::V1),
            _ => None,
        }
    }

    /// The command a user types.
    pub fn command(&self) -> &'static str {
        match self {
            Self::V2 => "docker compose",
            Self::V1 => "docker-compose",
        }
    }
}

/// The real backend.
#[derive(Debug)]
pub struct DockerEngine {
    /// The compose flavour asked for (`BOT_BOTTLE_COMPOSE`), if any.
    preferred: Option<ComposeFlavor>,
    /// The compose flavour found, looked for at the first compose call: asking the
    /// compose plugin costs ~0.2 s, which `down`, `ls`, `exec` and `egress` (plain
    /// docker calls) need not pay.
    compose: std::sync::OnceLock<ComposeFlavor>,
}

/// Oldest Engine API bot-bottle drives (Docker 20.10).
const MIN_API: &str = "1.41";

/// Whether `api` (`MAJOR.MINOR`) is at least `min`.
fn api_at_least(api: &str, min: &str) -> bool {
    let parse = |v: &str| -> Option<(u32, u32)> {
        let (major, minor) = v.split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    };
    matches!((parse(api), parse(min)), (Some(a), Some(m)) if a >= m)
}

/// Lines of output kept in error messages (build logs can be long).
const TAIL_LINES: usize = 25;

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn run(
    program: &str,
    args: &[OsString],
    stdin: Option<&[u8]>,
    env: &[(String, plan::Secret)],
) -> Result<Captured> {
    let mut expression = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    if let Some(stdin) = stdin {
        expression = expression.stdin_bytes(stdin.to_vec());
    } else {
        expression = expression.stdin_null();
    }
    for (name, value) in env {
        // The only place a secret value leaves this process: the child's environment.
        expression = expression.env(name, value.expose());
    }
    let output = expression.run().map_err(|e| BackendError::Command {
        command: display(program, args),
        detail: e.to_string(),
    })?;
    Ok(Captured {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: output.stderr,
    })
}

fn display(program: &str, args: &[OsString]) -> String {
    let mut text = program.to_owned();
    for arg in args {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn checked(program: &str, args: &[OsString], captured: Captured) -> Result<Captured> {
    if captured.success() {
        Ok(captured)
    } else {
        Err(BackendError::Command {
            command: display(program, args),
            detail: tail(&captured.stderr),
        })
    }
}

fn docker(args: &[&str]) -> Result<Captured> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let captured = run("docker", &args, None, &[])?;
    checked("docker", &args, captured)
}

impl DockerEngine {
    /// Finds the docker CLI and a compose flavour; fails with a clear message when
    /// either is missing or the engine does not answer.
    pub fn detect() -> Result<Self> {
        Self::detect_with(None)
    }

    /// [`Self::detect`], with `preferred` as the only flavour accepted when given
    /// (`BOT_BOTTLE_COMPOSE=v1|v2`, e.g. to run the legacy tool where both exist).
    /// The engine is asked now; the compose tool at the first compose call, which
    /// fails with [`BackendError::NoCompose`] or [`BackendError::ComposeMissing`].
    pub fn detect_with(preferred: Option<ComposeFlavor>) -> Result<Self> {
        Self::check_engine()?;
        Ok(Self {
            preferred,
            compose: std::sync::OnceLock::new(),
        })
    }

    /// The compose flavour: found at the first call (v2, else v1, or the one asked
    /// for), remembered after.
    pub fn compose_flavor(&self) -> Result<ComposeFlavor> {
        if let Some(flavor) = self.compose.get() {
            return Ok(*flavor);
        }
        let works = |program: &str, args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            run(program, &args, None, &[]).is_ok_and(|c| c.success())
        };
        let v2 = || works("docker", &["compose", "version"]);
        let v1 = || works("docker-compose", &["version"]);
        let flavor = match self.preferred {
            Some(ComposeFlavor::V2) if v2() => ComposeFlavor::V2,
            Some(ComposeFlavor::V1) if v1() => ComposeFlavor::V1,
            Some(flavor) => {
                return Err(BackendError::ComposeMissing {
                    command: flavor.command(),
                });
            }
            None if v2() => ComposeFlavor::V2,
            None if v1() => ComposeFlavor::V1,
            None => return Err(BackendError::NoCompose),
        };
        Ok(*self.compose.get_or_init(|| flavor))
    }

    /// The engine answers, and speaks an API version bot-bottle supports.
    fn check_engine() -> Result<()> {
        let format = "{{.Server.Version}} {{.Server.APIVersion}}";
        let version = run(
            "docker",
            &["version".into(), "--format".into(), format.into()],
            None,
            &[],
        )
        .map_err(|_| BackendError::NoEngine {
            detail: "the `docker` command is not installed".into(),
        })?;
        if !version.success() {
            return Err(BackendError::NoEngine {
                detail: tail(&version.stderr),
            });
        }
        let text = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        let api = text.split_whitespace().nth(1).unwrap_or_default();
        if !api_at_least(api, MIN_API) {
            return Err(BackendError::EngineTooOld {
                found: text.clone(),
                api: api.to_owned(),
                needed: MIN_API,
            });
        }
        Ok(())
    }

    /// Program and arguments of a compose call: always `-p PROJECT -f FILE`.
    fn compose_command(&self, call: &ComposeCall) -> Result<(&'static str, Vec<OsString>)> {
        let (program, mut args): (&str, Vec<OsString>) = match self.compose_flavor()? {
            ComposeFlavor::V2 => ("docker", vec!["compose".into()]),
            ComposeFlavor::V1 => ("docker-compose", Vec::new()),
        };
        args.extend([
            "-p".into(),
            call.project.clone().into(),
            "-f".into(),
            call.file.clone().into(),
        ]);
        args.extend(call.args.iter().map(OsString::from));
        Ok((program, args))
    }
}

/// `docker exec [-i] [-t] [-u USER] [-w DIR] CONTAINER COMMAND...`
fn exec_args(spec: &ExecSpec, stdin: bool, tty: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["exec".into()];
    if stdin {
        args.push("-i".into());
    }
    if tty {
        args.push("-t".into());
    }
    if let Some(user) = &spec.user {
        args.extend(["-u".into(), user.into()]);
    }
    if let Some(dir) = &spec.workdir {
        args.extend(["-w".into(), dir.into()]);
    }
    args.push(spec.container.clone().into());
    args.extend(spec.command.iter().map(OsString::from));
    args
}

/// `docker run` arguments for a [`RunSpec`].
fn run_args(spec: &RunSpec) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["run".into()];
    args.push(if spec.detach { "-d" } else { "--rm" }.into());
    if let Some(name) = &spec.name {
        args.extend(["--name".into(), name.into()]);
    }
    if let Some(network) = &spec.network {
        args.extend(["--network".into(), network.into()]);
    }
    if let Some(ip) = &spec.ip {
        args.extend(["--ip".into(), ip.into()]);
    }
    if let Some(entrypoint) = &spec.entrypoint {
        args.extend(["--entrypoint".into(), entrypoint.into()]);
    }
    for (host, container) in &spec.mounts {
        let mut mount = OsString::from("type=bind,readonly,source=");
        mount.push(host);
        mount.push(format!(",target={container}"));
        args.extend(["--mount".into(), mount]);
    }
    for (key, value) in &spec.labels {
        args.extend(["--label".into(), format!("{key}={value}").into()]);
    }
    args.push(spec.image.clone().into());
    args.extend(spec.command.iter().map(OsString::from));
    args
}

/// The last non-empty line of a command's output: what an error message quotes.
fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn labels_of(json: &serde_json::Value) -> BTreeMap<String, String> {
    json.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

impl Engine for DockerEngine {
    fn engine_version(&self) -> Result<String> {
        let out = docker(&["version", "--format", "{{.Server.Version}}"]).map_err(|e| {
            BackendError::NoEngine {
                detail: e.to_string(),
            }
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn describe(&self) -> Result<EngineFacts> {
        let out = docker(&[
            "info",
            "--format",
            "{{json .Runtimes}}|{{.CgroupVersion}}|{{.Driver}}",
        ])?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut fields = text.splitn(3, '|');
        let runtimes: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(fields.next().unwrap_or("{}")).unwrap_or_default();
        let compose = self.compose_flavor().ok().map(|flavor| {
            let version = match flavor {
                ComposeFlavor::V2 => docker(&["compose", "version", "--short"]),
                ComposeFlavor::V1 => {
                    let args = [OsString::from("version"), OsString::from("--short")];
                    run("docker-compose", &args, None, &[])
                        .and_then(|c| checked("docker-compose", &args, c))
                }
            }
            .map(|c| String::from_utf8_lossy(&c.stdout).trim().to_owned())
            .unwrap_or_else(|_| "?".into());
            format!("{} {version}", flavor.command())
        });
        Ok(EngineFacts {
            compose,
            runtimes: runtimes.into_keys().collect(),
            cgroup_version: fields.next().unwrap_or("").to_owned(),
            storage_driver: fields.next().unwrap_or("").to_owned(),
        })
    }

    fn writable_layer_quota(&self) -> Result<bool> {
        // Only overlay2 on xfs (mounted with project quotas, which `docker info` does
        // not show) takes `--storage-opt size`; every other driver refuses it.
        let out = docker(&[
            "info",
            "--format",
            "{{.Driver}}|{{range .DriverStatus}}{{index . 0}}={{index . 1}};{{end}}",
        ])?;
        Ok(quota_capable(&String::from_utf8_lossy(&out.stdout)))
    }

    fn image_exists(&self, reference: &str) -> Result<bool> {
        let args: Vec<OsString> = ["image", "inspect", "--format", "{{.Id}}", reference]
            .iter()
            .map(OsString::from)
            .collect();
        let captured = run("docker", &args, None, &[])?;
        if captured.success() {
            return Ok(true);
        }
        // "No such image" is an answer; anything else (no engine, no permission) is not.
        if String::from_utf8_lossy(&captured.stderr).contains("No such image") {
            return Ok(false);
        }
        checked("docker", &args, captured).map(|_| true)
    }

    fn image_id(&self, reference: &str) -> Result<String> {
        let out = docker(&["image", "inspect", "--format", "{{.Id}}", reference])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn image_user(&self, reference: &str) -> Result<String> {
        let out = docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            reference,
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn build_image(&self, spec: &BuildSpec) -> Result<()> {
        let mut args: Vec<OsString> = vec![
            "build".into(),
            "-q".into(),
            "-t".into(),
            spec.tag.clone().into(),
            "-f".into(),
        ];
        args.push(spec.dockerfile.clone().into());
        for (key, value) in &spec.labels {
            args.push("--label".into());
            args.push(format!("{key}={value}").into());
        }
        args.push(spec.context.clone().into());
        let captured = run("docker", &args, None, &[])?;
        checked("docker", &args, captured).map(drop)
    }

    fn create_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo> {
        let mut args = vec![
            "network".to_owned(),
            "create".to_owned(),
            "--driver".to_owned(),
            "bridge".to_owned(),
        ];
        if spec.internal {
            args.push("--internal".to_owned());
        }
        if let Some(subnet) = &spec.subnet {
            args.push("--subnet".to_owned());
            args.push(subnet.clone());
        }
        if let Some(range) = &spec.ip_range {
            args.push("--ip-range".to_owned());
            args.push(range.clone());
        }
        if spec.no_host_address {
            args.push("--opt".to_owned());
            args.push("com.docker.network.bridge.inhibit_ipv4=true".to_owned());
        }
        for (key, value) in &spec.labels {
            args.push("--label".to_owned());
            args.push(format!("{key}={value}"));
        }
        args.push(spec.name.clone());
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let captured = run("docker", &args, None, &[])?;
        if !captured.success() && String::from_utf8_lossy(&captured.stderr).contains("overlap") {
            // The one place the engine's words are read: callers get a variant.
            return Err(BackendError::SubnetOverlap {
                subnet: spec.subnet.clone().unwrap_or_default(),
            });
        }
        checked("docker", &args, captured)?;
        self.inspect_network(&spec.name)
    }

    fn inspect_network(&self, name: &str) -> Result<NetworkInfo> {
        let inspected = docker(&[
            "network",
            "inspect",
            "--format",
            "{{json .IPAM.Config}}",
            name,
        ])?;
        let config: serde_json::Value =
            serde_json::from_slice(&inspected.stdout).unwrap_or_default();
        let first = config
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        let cidr = first["Subnet"].as_str().unwrap_or_default().to_owned();
        if cidr.is_empty() {
            return Err(BackendError::Command {
                command: format!("docker network inspect {name}"),
                detail: "the engine assigned no subnet".into(),
            });
        }
        Ok(NetworkInfo {
            name: name.to_owned(),
            cidr,
            gateway: first["Gateway"].as_str().map(str::to_owned),
        })
    }

    fn remove_network(&self, name: &str) -> Result<()> {
        let args: Vec<OsString> = ["network", "rm", name].iter().map(OsString::from).collect();
        let captured = run("docker", &args, None, &[])?;
        let stderr = String::from_utf8_lossy(&captured.stderr);
        if captured.success() || stderr.contains("not found") || stderr.contains("No such network")
        {
            Ok(())
        } else {
            Err(BackendError::Command {
                command: display("docker", &args),
                detail: tail(&captured.stderr),
            })
        }
    }

    fn compose(&self, call: &ComposeCall) -> Result<Captured> {
        let (program, args) = self.compose_command(call)?;
        run(program, &args, None, &call.env)
    }

    fn compose_follow(
        &self,
        call: &ComposeCall,
        on_event: &mut dyn FnMut(Followed<'_>),
    ) -> Result<i32> {
        let (program, args) = self.compose_command(call)?;
        follow_lines(program, &args, on_event)
    }

    fn exec(&self, spec: &ExecSpec) -> Result<Captured> {
        let args = exec_args(spec, spec.stdin.is_some(), false);
        run("docker", &args, spec.stdin.as_deref(), &[])
    }

    fn exec_interactive(&self, spec: &ExecSpec) -> Result<i32> {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
        let args = exec_args(spec, true, tty);
        // Inherited stdio: the docker CLI owns the TTY.
        let status =
            duct::cmd("docker", &args)
                .unchecked()
                .run()
                .map_err(|e| BackendError::Command {
                    command: display("docker", &args),
                    detail: e.to_string(),
                })?;
        Ok(status.status.code().unwrap_or(128))
    }

    fn signal(&self, container: &str, signal: &str) -> Result<()> {
        docker(&["kill", "--signal", signal, container]).map(drop)
    }

    fn containers_with_label(&self, label: &str) -> Result<Vec<ContainerInfo>> {
        let filter = format!("label={label}");
        let ids = docker(&["ps", "-a", "-q", "--no-trunc", "--filter", &filter])?;
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["inspect", "--format", "{{json .}}"];
        args.extend(ids.iter().map(String::as_str));
        // A container can vanish between `ps` and `inspect` (compose removing it):
        // keep what could still be inspected.
        let os_args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let inspected = run("docker", &os_args, None, &[])?;
        let mut containers = Vec::new();
        for line in String::from_utf8_lossy(&inspected.stdout).lines() {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            containers.push(ContainerInfo {
                id: json["Id"].as_str().unwrap_or_default().to_owned(),
                name: json["Name"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                state: json["State"]["Status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                health: json["State"]["Health"]["Status"]
                    .as_str()
                    .map(str::to_owned),
                labels: labels_of(&json["Config"]["Labels"]),
                env: json["Config"]["Env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|entry| {
                        let (name, value) = entry.as_str()?.split_once('=')?;
                        Some((name.to_owned(), plan::Secret::new(value)))
                    })
                    .collect(),
                networks: json["NetworkSettings"]["Networks"]
                    .as_object()
                    .map(|networks| networks.keys().cloned().collect())
                    .unwrap_or_default(),
            });
        }
        Ok(containers)
    }

    fn networks_with_label(&self, label: &str) -> Result<Vec<String>> {
        let filter = format!("label={label}");
        let out = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    fn remove_image(&self, tag: &str) -> Result<()> {
        let args: Vec<OsString> = ["image", "rm", "-f", tag]
            .iter()
            .map(OsString::from)
            .collect();
        let captured = run("docker", &args, None, &[])?;
        let stderr = String::from_utf8_lossy(&captured.stderr);
        if captured.success() || stderr.contains("No such image") || stderr.contains("not found") {
            Ok(())
        } else {
            Err(BackendError::Command {
                command: display("docker", &args),
                detail: tail(&captured.stderr),
            })
        }
    }

    fn list_images(&self, repository: &str) -> Result<Vec<ImageInfo>> {
        let out = docker(&[
            "images",
            repository,
            "--format",
            "{{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}\t{{.CreatedSince}}",
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('\t');
                Some(ImageInfo {
                    reference: fields.next()?.to_owned(),
                    id: fields.next()?.to_owned(),
                    size: fields.next()?.to_owned(),
                    created: fields.next()?.to_owned(),
                })
            })
            .collect())
    }

    fn pull_image(&self, reference: &str, timeout: Duration) -> Result<Pulled> {
        let command = format!("docker pull {reference}");
        let handle = duct::cmd("docker", ["pull", reference])
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .start()
            .map_err(|e| BackendError::Command {
                command: command.clone(),
                detail: e.to_string(),
            })?;
        let deadline = Instant::now() + timeout;
        loop {
            let waited = handle.try_wait().map_err(|e| BackendError::Command {
                command: command.clone(),
                detail: e.to_string(),
            })?;
            if let Some(output) = waited {
                return Ok(if output.status.success() {
                    Pulled::Pulled
                } else {
                    Pulled::Unavailable(last_line(&output.stderr))
                });
            }
            if Instant::now() >= deadline {
                let _ = handle.kill();
                return Ok(Pulled::Unavailable(format!(
                    "no answer within {}s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn import_image(&self, tarball: &Path, tag: &str, changes: &[String]) -> Result<()> {
        let mut args: Vec<OsString> = vec!["import".into()];
        for change in changes {
            args.push("--change".into());
            args.push(change.into());
        }
        args.push(tarball.into());
        args.push(tag.into());
        let captured = run("docker", &args, None, &[])?;
        checked("docker", &args, captured).map(drop)
    }

    fn image_label(&self, reference: &str, key: &str) -> Result<Option<String>> {
        let args: Vec<OsString> = [
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            reference,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let mut captured = run("docker", &args, None, &[])?;
        if !captured.success() {
            // No such image is an answer (image_exists says which); an engine that does
            // not answer is an error.
            if !self.image_exists(reference)? {
                return Ok(None);
            }
            captured = checked("docker", &args, captured)?;
        }
        let labels: Option<BTreeMap<String, String>> =
            serde_json::from_slice(&captured.stdout).unwrap_or_default();
        Ok(labels.and_then(|mut l| l.remove(key)))
    }

    fn images_in_use(&self) -> Result<Vec<String>> {
        let out = docker(&["ps", "-a", "--no-trunc", "--format", "{{.Image}}"])?;
        let mut images: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        images.sort();
        images.dedup();
        Ok(images)
    }

    fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        docker(&["tag", source, target]).map(drop)
    }

    fn run_container(&self, spec: &RunSpec) -> Result<Captured> {
        let args = run_args(spec);
        let captured = run("docker", &args, None, &[])?;
        checked("docker", &args, captured)
    }

    fn container_logs(&self, ids: &[String]) -> Result<Vec<Captured>> {
        // Every `docker logs` at once: each is a round trip to the engine.
        let started: Vec<_> = ids
            .iter()
            .map(|id| {
                duct::cmd("docker", ["logs", "--timestamps", id.as_str()])
                    .stdin_null()
                    .stdout_capture()
                    .stderr_capture()
                    .unchecked()
                    .start()
            })
            .collect();
        started
            .into_iter()
            .zip(ids)
            .map(|(handle, id)| {
                let fail = |e: std::io::Error| BackendError::Command {
                    command: format!("docker logs --timestamps {id}"),
                    detail: e.to_string(),
                };
                let output = handle.map_err(fail)?.into_output().map_err(fail)?;
                Ok(Captured {
                    code: output.status.code(),
                    stdout: output.stdout,
                    stderr: output.stderr,
                })
            })
            .collect()
    }

    fn remove_containers(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        docker(&args).map(drop)
    }

    fn stop_containers(&self, ids: &[String], timeout_secs: u32) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let timeout = timeout_secs.to_string();
        let mut args = vec!["stop", "--time", &timeout];
        args.extend(ids.iter().map(String::as_str));
        docker(&args).map(drop)
    }

    fn remove_networks(&self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let mut args = vec!["network", "rm"];
        args.extend(names.iter().map(String::as_str));
        // One call for all; if it fails (one already gone, say), one by one, where a
        // missing network is fine.
        match docker(&args) {
            Ok(_) => Ok(()),
            Err(_) => names.iter().try_for_each(|name| self.remove_network(name)),
        }
    }

    fn connect_networks(&self, connects: &[NetworkConnect]) -> Result<()> {
        // One `docker network connect` each (the CLI takes one pair), all at once.
        std::thread::scope(|scope| {
            let calls: Vec<_> = connects
                .iter()
                .map(|connect| {
                    scope.spawn(move || {
                        let mut args = vec!["network", "connect"];
                        for alias in &connect.aliases {
                            args.extend(["--alias", alias]);
                        }
                        if let Some(ip) = &connect.ipv4_address {
                            args.extend(["--ip", ip]);
                        }
                        args.extend([connect.network.as_str(), connect.container.as_str()]);
                        docker(&args).map(drop)
                    })
                })
                .collect();
            calls
                .into_iter()
                .map(|call| {
                    call.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect::<Result<Vec<()>>>()
                .map(drop)
        })
    }

    fn start_containers(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["start"];
        args.extend(ids.iter().map(String::as_str));
        docker(&args).map(drop)
    }
}

/// Whether `docker info`'s `DRIVER|key=value;...` line names a driver that takes a
/// size quota.
fn quota_capable(info: &str) -> bool {
    let (driver, status) = info.trim().split_once('|').unwrap_or((info.trim(), ""));
    driver == "overlay2" && status.split(';').any(|kv| kv == "Backing Filesystem=xfs")
}

/// Runs `program`, handing each line of its output (stderr too) to `on_event` as it
/// comes, with the ticks [`Engine::compose_follow`] promises; returns the exit code.
fn follow_lines(
    program: &str,
    args: &[OsString],
    on_event: &mut dyn FnMut(Followed<'_>),
) -> Result<i32> {
    use std::io::BufRead;
    use std::sync::mpsc::RecvTimeoutError;
    let reader = std::sync::Arc::new(
        duct::cmd(program, args)
            .stderr_to_stdout()
            .stdin_null()
            .unchecked()
            .reader()
            .map_err(|e| BackendError::Command {
                command: display(program, args),
                detail: e.to_string(),
            })?,
    );
    // The lines are read on their own thread, so this one can tick while compose
    // is quiet.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<std::io::Result<String>>();
    let reading = reader.clone();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(&*reading);
        loop {
            let mut line = String::new();
            let read = lines.read_line(&mut line).map(|n| (n, line));
            let end = !matches!(read, Ok((n, _)) if n > 0);
            if lines_tx.send(read.map(|(_, line)| line)).is_err() || end {
                return;
            }
        }
    });
    on_event(Followed::Tick);
    let mut last_tick = std::time::Instant::now();
    loop {
        match lines_rx.recv_timeout(FOLLOW_TICK) {
            Ok(Ok(line)) if line.is_empty() => break,
            Ok(Ok(line)) => on_event(Followed::Line(line.trim_end_matches('\n'))),
            Ok(Err(e)) => {
                return Err(BackendError::Command {
                    command: display(program, args),
                    detail: e.to_string(),
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= FOLLOW_TICK {
            on_event(Followed::Tick);
            last_tick = std::time::Instant::now();
        }
    }
    on_event(Followed::Tick);
    let status = reader
        .try_wait()
        .ok()
        .flatten()
        .and_then(|o| o.status.code())
        .unwrap_or(0);
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_ticks_while_the_command_is_quiet() {
        let args: Vec<OsString> = ["-c", "echo one; sleep 1.3; echo two >&2; exit 3"]
            .iter()
            .map(OsString::from)
            .collect();
        let mut events = Vec::new();
        let code = follow_lines("sh", &args, &mut |event| {
            events.push(match event {
                Followed::Line(line) => line.to_owned(),
                Followed::Tick => "tick".to_owned(),
            });
        })
        .unwrap();
        assert_eq!(code, 3);
        let one = events.iter().position(|e| e == "one").unwrap();
        let two = events.iter().position(|e| e == "two").unwrap();
        assert_eq!(events.first().map(String::as_str), Some("tick"));
        assert_eq!(events.last().map(String::as_str), Some("tick"));
        assert!(
            events[one..two].iter().filter(|e| *e == "tick").count() >= 2,
            "no ticks while the command slept: {events:?}"
        );
    }

    #[test]
    fn api_versions_compare_numerically() {
        assert!(api_at_least("1.41", "1.41"));
        assert!(api_at_least("1.47", "1.41"));
        assert!(api_at_least("2.0", "1.41"));
        assert!(!api_at_least("1.40", "1.41"));
        assert!(!api_at_least("1.9", "1.41"));
        assert!(!api_at_least("", "1.41"));
    }

    #[test]
    fn only_overlay2_on_xfs_takes_a_size_quota() {
        assert!(quota_capable(
            "overlay2|Backing Filesystem=xfs;Supports d_type=true;\n"
        ));
        assert!(!quota_capable("overlay2|Backing Filesystem=extfs;"));
        assert!(!quota_capable("fuse-overlayfs|"));
        assert!(!quota_capable("btrfs|Backing Filesystem=xfs;"));
        assert!(!quota_capable(""));
    }

    #[test]
    fn run_arguments_mount_read_only_and_remove_unless_detached() {
        let spec = RunSpec {
            image: "img".into(),
            name: Some("up".into()),
            network: Some("net".into()),
            ip: Some("10.0.0.5".into()),
            mounts: vec![("/h/certs".into(), "/certs".into())],
            command: vec!["python3".into(), "/x.py".into()],
            ..RunSpec::default()
        };
        let args: Vec<String> = run_args(&spec)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "run --rm --name up --network net --ip 10.0.0.5 \
             --mount type=bind,readonly,source=/h/certs,target=/certs img python3 /x.py"
        );
        let detached = run_args(&RunSpec {
            detach: true,
            ..spec
        });
        assert_eq!(detached[1], "-d");
    }

    #[test]
    fn the_last_line_is_what_errors_quote() {
        assert_eq!(last_line(b"a\nb failed\n\n"), "b failed");
        assert_eq!(last_line(b""), "");
    }
}
