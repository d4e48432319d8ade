//! The fake internet: an `--internal` network of our own with an HTTPS echo server,
//! a stand-in for the Anthropic API (both with certificates from the fake internet's
//! own CA) and an sshd holding a bare git repository, at fixed addresses.
//! Nothing on it can send a packet off the machine, whatever the proxy does.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backend_docker::demo::StandInCa;

use super::Run;
use super::sh::{self, cmd};
use crate::images::BASE;

/// The names the echo server answers for (its certificate's SANs).
pub const ECHO_NAMES: &[&str] = &[
    "api.fake.test",
    "data.fake.test",
    "other.fake.test",
    "later.fake.test",
    "asked.fake.test",
];
/// The names the stand-in Anthropic API (`fixtures/e2e/anthropic_api.py`) answers
/// for (its certificate's SANs): every host Claude Code calls home to.
pub const ANTHROPIC_NAMES: &[&str] = &[
    "api.anthropic.com",
    "platform.claude.com",
    "statsig.anthropic.com",
    "downloads.claude.ai",
];
/// The subnets tried for the fake internet, in order (a /24 each; the next on overlap).
const SUBNET_THIRD_OCTETS: std::ops::Range<u8> = 77..97;
/// Host part of each fixed address.
const ECHO_HOST: u8 = 10;
const SSH_HOST: u8 = 11;
const ANTHROPIC_HOST: u8 = 12;

/// What the scenarios need to know about the fake internet.
pub struct FakeInternet {
    pub network: String,
    pub gateway: String,
    pub echo_ip: String,
    pub ssh_ip: String,
    pub ssh_container: String,
    /// The stand-in Anthropic API: its address (every [`ANTHROPIC_NAMES`] maps here)
    /// and its container (for `docker logs`).
    pub anthropic_ip: String,
    #[allow(dead_code, reason = "for the Claude Code scenarios' diagnostics")]
    pub anthropic_container: String,
    /// The fake CA the egress proxy is told to trust.
    pub ca_pem: PathBuf,
    /// Every request the echo server received, one JSON object a line.
    pub echo_log: PathBuf,
    /// Every request the stand-in Anthropic API received, one JSON object a line
    /// (method, path, host, headers {x-api-key, authorization}, model, stream,
    /// user_text, tools).
    pub anthropic_log: PathBuf,
    /// The git-gate's key for the upstream and the upstream's known_hosts.
    pub ssh_key: PathBuf,
    pub known_hosts: PathBuf,
}

impl FakeInternet {
    /// `--egress-static-host` values: every name the scenarios use, so that the proxy
    /// never asks DNS.
    pub fn static_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = ECHO_NAMES
            .iter()
            .map(|n| format!("{n}={}", self.echo_ip))
            .collect();
        hosts.extend(
            ANTHROPIC_NAMES
                .iter()
                .map(|n| format!("{n}={}", self.anthropic_ip)),
        );
        hosts.push("metadata.fake.test=169.254.169.254".into());
        hosts.push("loopback.fake.test=127.0.0.1".into());
        hosts.push(format!("gateway.fake.test={}", self.gateway));
        hosts
    }

    /// The raw echo log (what the upstream saw).
    pub fn echo_log_text(&self) -> String {
        fs::read_to_string(&self.echo_log).unwrap_or_default()
    }

    /// The echo log's records.
    pub fn echo_requests(&self) -> Vec<serde_json::Value> {
        json_lines(&self.echo_log_text())
    }

    /// The raw log of the stand-in Anthropic API.
    pub fn anthropic_log_text(&self) -> String {
        fs::read_to_string(&self.anthropic_log).unwrap_or_default()
    }

    /// The stand-in Anthropic API's records, in the order it received the requests.
    pub fn anthropic_requests(&self) -> Vec<serde_json::Value> {
        json_lines(&self.anthropic_log_text())
    }
}

/// The JSON objects of a JSON-lines log; a line that does not parse (one being
/// written) is skipped.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The value of header `name` (case-insensitive) in an echo record.
pub fn header<'a>(record: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    record["headers"].as_array()?.iter().find_map(|pair| {
        let key = pair.get(0)?.as_str()?;
        key.eq_ignore_ascii_case(name)
            .then(|| pair.get(1)?.as_str())
            .flatten()
    })
}

/// Creates the network, mints the TLS and SSH material, starts the three servers and
/// waits until they answer.
pub fn start(run: &Run) -> Result<FakeInternet, String> {
    let fixtures = &run.fixtures;
    let echo_script = fixture(fixtures, "echo_server.py")?;
    let anthropic_script = fixture(fixtures, "anthropic_api.py")?;
    let sshd_script = fixture(fixtures, "sshd.sh")?;

    let network = format!("bot-bottle-{}-internet", run.id);
    let third = create_network(run, &network)?;
    let prefix = format!("10.214.{third}");
    let echo_ip = format!("{prefix}.{ECHO_HOST}");
    let ssh_ip = format!("{prefix}.{SSH_HOST}");
    let anthropic_ip = format!("{prefix}.{ANTHROPIC_HOST}");
    let gateway = inspect_gateway(run, &network)?;

    let ca_pem = run.dir.join("fake-internet-ca.pem");
    let ca = StandInCa::mint("bot-bottle e2e fake internet CA")
        .map_err(|e| format!("minting the fake internet's CA: {e}"))?;
    write(&ca_pem, &ca.cert_pem)?;
    let tls = private_dir(&run.dir.join("echo-tls"))?;
    mint_server_cert(&ca, &tls, ECHO_NAMES, &echo_ip)?;
    let anthropic_tls = private_dir(&run.dir.join("anthropic-tls"))?;
    mint_server_cert(&ca, &anthropic_tls, ANTHROPIC_NAMES, &anthropic_ip)?;
    let log_dir = create_log_dir(&run.dir.join("echo-log"))?;
    let anthropic_log_dir = create_log_dir(&run.dir.join("anthropic-log"))?;

    let ssh = private_dir(&run.dir.join("ssh"))?;
    for key in ["host_key", "client_key"] {
        let mut keygen = cmd(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                &format!("bot-bottle-{}", run.id),
            ],
        );
        keygen.arg("-f").arg(ssh.join(key));
        sh::ok(keygen, &run.interrupted)?;
    }
    let host_pub = read(&ssh.join("host_key.pub"))?;
    let fields: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    let known_hosts = run.dir.join("known_hosts");
    write(&known_hosts, &format!("{ssh_ip} {}\n", fields.join(" ")))?;

    let echo = format!("bot-bottle-{}-echo", run.id);
    let docker = https_server(
        run_container(run, &echo, &network, &echo_ip),
        (&echo_script, "/e2e/echo_server.py"),
        &tls,
        &log_dir,
    );
    sh::ok(docker, &run.interrupted)?;

    let anthropic_container = format!("bot-bottle-{}-anthropic", run.id);
    let docker = https_server(
        run_container(run, &anthropic_container, &network, &anthropic_ip),
        (&anthropic_script, "/e2e/anthropic_api.py"),
        &anthropic_tls,
        &anthropic_log_dir,
    );
    sh::ok(docker, &run.interrupted)?;

    let ssh_container = format!("bot-bottle-{}-sshd", run.id);
    let public_only = private_dir(&run.dir.join("sshd-mount"))?;
    fs::copy(ssh.join("host_key"), public_only.join("host_key"))
        .and_then(|_| {
            fs::copy(
                ssh.join("client_key.pub"),
                public_only.join("client_key.pub"),
            )
        })
        .map_err(|e| format!("copying ssh keys: {e}"))?;
    let mut docker = run_container(run, &ssh_container, &network, &ssh_ip);
    docker
        .arg("-v")
        .arg(mount(&sshd_script, "/e2e/sshd.sh", true))
        .arg("-v")
        .arg(mount(&public_only, "/e2e/ssh", true))
        .args([BASE, "sh", "/e2e/sshd.sh"]);
    sh::ok(docker, &run.interrupted)?;

    for (container, port) in [
        (&echo, 443),
        (&anthropic_container, 443),
        (&ssh_container, 22),
    ] {
        wait_listening(run, container, port)?;
    }
    Ok(FakeInternet {
        network,
        gateway,
        echo_ip,
        ssh_ip,
        ssh_container,
        anthropic_ip,
        anthropic_container,
        ca_pem,
        echo_log: log_dir.join(SERVER_LOG),
        anthropic_log: anthropic_log_dir.join(SERVER_LOG),
        ssh_key: ssh.join("client_key"),
        known_hosts,
    })
}

/// `docker network create --internal` on the first free subnet; its third octet.
fn create_network(run: &Run, name: &str) -> Result<u8, String> {
    let mut last = String::new();
    for third in SUBNET_THIRD_OCTETS {
        let out = sh::run(
            cmd(
                "docker",
                &[
                    "network",
                    "create",
                    "--internal",
                    "--subnet",
                    &format!("10.214.{third}.0/24"),
                    "--gateway",
                    &format!("10.214.{third}.1"),
                    "--label",
                    &run.label(),
                    name,
                ],
            ),
            &run.interrupted,
        )?;
        if out.success() {
            return Ok(third);
        }
        if !out.stderr.contains("overlap") {
            return Err(out.explain());
        }
        last = out.explain();
    }
    Err(format!("no free /24 in 10.214.77-96.0/24: {last}"))
}

fn inspect_gateway(run: &Run, network: &str) -> Result<String, String> {
    let out = sh::ok(
        cmd(
            "docker",
            &[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
                network,
            ],
        ),
        &run.interrupted,
    )?;
    let gateway = out.stdout.trim().to_string();
    if gateway.is_empty() {
        return Err(format!("network {network} has no gateway address"));
    }
    Ok(gateway)
}

/// `docker run -d` of a fake internet host: labelled with the run, on our network
/// only, at a fixed address.
pub(super) fn run_container(
    run: &Run,
    name: &str,
    network: &str,
    ip: &str,
) -> std::process::Command {
    let mut docker = cmd("docker", &["run", "-d", "--name", name]);
    docker.args([
        "--label",
        &run.label(),
        "--network",
        network,
        "--ip",
        ip,
        "--hostname",
        name,
    ]);
    docker
}

/// The log file name of both HTTPS servers, in their log directories.
const SERVER_LOG: &str = "requests.jsonl";

/// Completes `docker` (a [`run_container`]) into one of the HTTPS servers: the
/// `script` (host path, path inside) run by the base image's python3 with its
/// certificate and key from `tls` and its request log in `log_dir`.
fn https_server(
    mut docker: std::process::Command,
    script: (&Path, &str),
    tls: &Path,
    log_dir: &Path,
) -> std::process::Command {
    let (source, target) = script;
    docker
        .arg("-v")
        .arg(mount(source, target, true))
        .arg("-v")
        .arg(mount(tls, "/e2e/tls", true))
        .arg("-v")
        .arg(mount(log_dir, "/e2e/log", false))
        .args([BASE, "python3", "-u", target])
        .args([
            "--cert",
            "/e2e/tls/server.crt",
            "--key",
            "/e2e/tls/server.key",
        ])
        .arg("--log")
        .arg(format!("/e2e/log/{SERVER_LOG}"));
    docker
}

/// `fixtures/e2e/<name>`, which must exist: bind-mounting a missing file would make
/// docker create an empty directory in its place.
fn fixture(fixtures: &Path, name: &str) -> Result<PathBuf, String> {
    let path = fixtures.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is missing", path.display()))
    }
}

pub(super) fn mount(source: &Path, target: &str, read_only: bool) -> String {
    format!(
        "{}:{target}{}",
        source.display(),
        if read_only { ":ro" } else { "" }
    )
}

/// Waits until something in `container` accepts TCP on `port`.
pub(super) fn wait_listening(run: &Run, container: &str, port: u16) -> Result<(), String> {
    let probe = format!(
        "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    );
    let ready = sh::poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        &run.interrupted,
        || {
            sh::run(
                cmd("docker", &["exec", container, "python3", "-c", &probe]),
                &run.interrupted,
            )
            .ok()
            .filter(|o| o.success())
        },
    );
    if ready.is_some() {
        return Ok(());
    }
    let logs = sh::run(
        cmd("docker", &["logs", "--tail", "20", container]),
        &run.interrupted,
    )
    .map(|o| format!("{}{}", o.stdout, o.stderr))
    .unwrap_or_default();
    Err(format!(
        "{container} does not listen on port {port} after 30s; its log:\n{}",
        crate::proc::tail(&logs, 20)
    ))
}

/// A server certificate from `ca` for `names` and `ip` (its SANs; the first name is
/// also its common name), written with its key to `dir/server.crt` and
/// `dir/server.key`.
fn mint_server_cert(ca: &StandInCa, dir: &Path, names: &[&str], ip: &str) -> Result<(), String> {
    let mut sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sans.push(ip.to_string());
    let (cert, key) = ca
        .server(&sans)
        .map_err(|e| format!("minting the fake internet's certificates: {e}"))?;
    write(&dir.join("server.crt"), &cert)?;
    write(&dir.join("server.key"), &key)
}

/// A server's log directory (the server runs as root and writes into it).
pub(super) fn create_log_dir(path: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok(path.to_path_buf())
}

fn private_dir(path: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok(path.to_path_buf())
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}
