//! The fake internet: an `--internal` network of our own with an HTTPS echo server
//! (its own CA) and an sshd holding a bare git repository, at fixed addresses.
//! Nothing on it can send a packet off the machine, whatever the proxy does.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

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
/// The subnets tried for the fake internet, in order (a /24 each; the next on overlap).
const SUBNET_THIRD_OCTETS: std::ops::Range<u8> = 77..97;
/// Host part of each fixed address.
const ECHO_HOST: u8 = 10;
const SSH_HOST: u8 = 11;

/// What the scenarios need to know about the fake internet.
pub struct FakeInternet {
    pub network: String,
    pub gateway: String,
    pub echo_ip: String,
    pub ssh_ip: String,
    pub ssh_container: String,
    /// The fake CA the egress proxy is told to trust.
    pub ca_pem: PathBuf,
    /// Every request the echo server received, one JSON object a line.
    pub echo_log: PathBuf,
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
        self.echo_log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
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

/// Creates the network, mints the TLS and SSH material, starts both servers and
/// waits until they answer.
pub fn start(run: &Run) -> Result<FakeInternet, String> {
    let network = format!("bot-bottle-{}-internet", run.id);
    let third = create_network(run, &network)?;
    let prefix = format!("10.214.{third}");
    let echo_ip = format!("{prefix}.{ECHO_HOST}");
    let ssh_ip = format!("{prefix}.{SSH_HOST}");
    let gateway = inspect_gateway(run, &network)?;

    let tls = private_dir(&run.dir.join("echo-tls"))?;
    let log_dir = run.dir.join("echo-log");
    fs::create_dir_all(&log_dir).map_err(|e| format!("creating {}: {e}", log_dir.display()))?;
    let ca_pem = run.dir.join("fake-internet-ca.pem");
    mint_tls(&tls, &ca_pem, &echo_ip)?;

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

    let fixtures = &run.fixtures;
    let echo = format!("bot-bottle-{}-echo", run.id);
    let mut docker = run_container(run, &echo, &network, &echo_ip);
    docker
        .arg("-v")
        .arg(mount(
            &fixtures.join("echo_server.py"),
            "/e2e/echo_server.py",
            true,
        ))
        .arg("-v")
        .arg(mount(&tls, "/e2e/tls", true))
        .arg("-v")
        .arg(mount(&log_dir, "/e2e/log", false))
        .args([BASE, "python3", "-u", "/e2e/echo_server.py"])
        .args([
            "--cert",
            "/e2e/tls/server.crt",
            "--key",
            "/e2e/tls/server.key",
        ])
        .args(["--log", "/e2e/log/requests.jsonl"]);
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
        .arg(mount(&fixtures.join("sshd.sh"), "/e2e/sshd.sh", true))
        .arg("-v")
        .arg(mount(&public_only, "/e2e/ssh", true))
        .args([BASE, "sh", "/e2e/sshd.sh"]);
    sh::ok(docker, &run.interrupted)?;

    for (container, port) in [(&echo, 443), (&ssh_container, 22)] {
        wait_listening(run, container, port)?;
    }
    Ok(FakeInternet {
        network,
        gateway,
        echo_ip,
        ssh_ip,
        ssh_container,
        ca_pem,
        echo_log: log_dir.join("requests.jsonl"),
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
fn run_container(run: &Run, name: &str, network: &str, ip: &str) -> std::process::Command {
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

fn mount(source: &Path, target: &str, read_only: bool) -> String {
    format!(
        "{}:{target}{}",
        source.display(),
        if read_only { ":ro" } else { "" }
    )
}

/// Waits until something in `container` accepts TCP on `port`.
fn wait_listening(run: &Run, container: &str, port: u16) -> Result<(), String> {
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

/// The fake CA (into `ca_pem`) and the echo server's certificate and key (into `dir`).
fn mint_tls(dir: &Path, ca_pem: &Path, echo_ip: &str) -> Result<(), String> {
    let fail = |e: rcgen::Error| format!("minting the fake internet's certificates: {e}");
    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "bot-bottle e2e fake internet CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut names: Vec<String> = ECHO_NAMES.iter().map(|n| n.to_string()).collect();
    names.push(echo_ip.to_string());
    let mut leaf = CertificateParams::new(names).map_err(fail)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "api.fake.test");
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().map_err(fail)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(fail)?;

    write(ca_pem, &ca_cert.pem())?;
    write(&dir.join("server.crt"), &leaf_cert.pem())?;
    write(&dir.join("server.key"), &leaf_key.serialize_pem())
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
