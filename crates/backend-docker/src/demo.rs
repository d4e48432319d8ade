//! `bottle demo`'s stand-in internet: an `--internal` network of its own with one
//! HTTPS server on it that plays every outside host the demo agent calls, with a
//! certificate from a CA minted for the run. The bottle's egress proxy is attached to
//! this network instead of one with a route off the machine, so nothing the demo does
//! leaves the machine, whatever the proxy decides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::engine::{Engine, NetworkSpec, RunSpec};
use crate::error::{BackendError, Result};
use crate::launch::{create_in_free_subnet, fixed_address};
use crate::state::write_atomic;

/// The label on the demo's network and container: the launcher's pid, so a later
/// demo removes what a killed one left.
pub const DEMO_LABEL: &str = "dev.bot-bottle.demo";
/// The stand-in server (python3 from the base image; no packages beyond it).
pub const SERVER_PY: &str = include_str!("demo/upstream.py");
/// The state root's directory of running demos (one per launcher pid): not a bottle's
/// state dir, so `ls`, `gc` and `down` leave it alone.
pub const DEMOS_DIR: &str = "demos";

/// What the demo's engine names start with (its network, its stand-in's container).
const NETWORK_PREFIX: &str = "bot-bottle-demo-";

/// The network of the demo whose launcher is `pid`.
fn network_name(pid: &str) -> String {
    format!("{NETWORK_PREFIX}{pid}")
}

/// The launcher pid in a name [`network_name`] made.
fn pid_of_network(name: &str) -> Option<u32> {
    name.strip_prefix(NETWORK_PREFIX)?.parse().ok()
}

/// Where the stand-in's files are mounted in its container.
const MOUNT: &str = "/demo";

/// The stand-in internet, running.
#[derive(Debug)]
pub struct StandIn {
    /// The network the bottle's egress proxy joins (`--egress-network`).
    pub network: String,
    /// The server's address on it.
    pub ip: String,
    /// The server's container.
    pub container: String,
    /// The CA the egress proxy must trust for it (`--egress-extra-ca`).
    pub ca_pem: PathBuf,
}

/// Starts the stand-in: mints a CA and a certificate for `names`, writes the server
/// and the credential it expects into `dir`, creates the network and runs the server
/// from `image` (which must have python3: the sidecar image does).
pub fn start(
    backend: &dyn Engine,
    image: &str,
    dir: &Path,
    names: &[&str],
    expected_credential: &str,
) -> Result<StandIn> {
    let pid = std::process::id().to_string();
    let labels = BTreeMap::from([(DEMO_LABEL.to_owned(), pid.clone())]);
    let network = network_name(&pid);
    let info = create_in_free_subnet(backend, &|subnet| NetworkSpec {
        name: network.clone(),
        internal: true,
        ip_range: Some(subnet.replace(".0/24", ".0/25")),
        subnet: Some(subnet),
        no_host_address: true,
        labels: labels.clone(),
    })?;
    let ip = fixed_address(&info.cidr)?;
    let files = dir.join("upstream");
    std::fs::create_dir_all(&files).map_err(BackendError::io("creating", &files))?;
    let ca_pem = dir.join("stand-in-ca.pem");
    mint(&files, &ca_pem, names)?;
    write_atomic(&files.join("server.py"), SERVER_PY.as_bytes(), 0o644)?;
    // Root in the stand-in's container reads 0600 files of the launcher's user.
    write_atomic(
        &files.join("credential"),
        expected_credential.as_bytes(),
        0o600,
    )?;
    let container = format!("{NETWORK_PREFIX}upstream-{pid}");
    let stand_in = StandIn {
        network,
        ip,
        container,
        ca_pem,
    };
    let started = backend.run_container(&RunSpec {
        image: image.to_owned(),
        name: Some(stand_in.container.clone()),
        network: Some(stand_in.network.clone()),
        ip: Some(stand_in.ip.clone()),
        detach: true,
        entrypoint: None,
        mounts: vec![(files, MOUNT.to_owned())],
        labels,
        command: vec!["python3".into(), format!("{MOUNT}/server.py"), MOUNT.into()],
    });
    if let Err(error) = started {
        stop(backend, &stand_in);
        return Err(error);
    }
    Ok(stand_in)
}

/// Removes the stand-in's container and network; what fails is returned, not raised
/// (the rest still goes).
pub fn stop(backend: &dyn Engine, stand_in: &StandIn) -> Vec<BackendError> {
    let mut problems = Vec::new();
    match backend.containers_with_label(&format!("{DEMO_LABEL}={}", std::process::id())) {
        Ok(containers) => {
            let ids: Vec<String> = containers.into_iter().map(|c| c.id).collect();
            if let Err(e) = backend.remove_containers(&ids) {
                problems.push(e);
            }
        }
        Err(e) => problems.push(e),
    }
    if let Err(e) = backend.remove_network(&stand_in.network) {
        problems.push(e);
    }
    problems
}

/// Removes what demos whose launcher is gone left behind (`pid_alive` tells).
pub fn remove_leftovers(backend: &dyn Engine, pid_alive: &dyn Fn(u32) -> bool) -> Result<()> {
    let dead = |labels: &BTreeMap<String, String>| {
        labels
            .get(DEMO_LABEL)
            .and_then(|pid| pid.parse().ok())
            .is_some_and(|pid| !pid_alive(pid))
    };
    let ids: Vec<String> = backend
        .containers_with_label(DEMO_LABEL)?
        .into_iter()
        .filter(|c| dead(&c.labels))
        .map(|c| c.id)
        .collect();
    backend.remove_containers(&ids)?;
    for network in backend.networks_with_label(DEMO_LABEL)? {
        let pid = pid_of_network(&network);
        if pid.is_some_and(|pid| !pid_alive(pid)) {
            backend.remove_network(&network)?;
        }
    }
    Ok(())
}

/// A CA for a stand-in internet (`bottle demo`'s, e2e's): it signs the stand-in
/// servers' certificates, and the egress proxy is told to trust it.
pub struct StandInCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub cert_pem: String,
}

impl StandInCa {
    /// A fresh CA named `common_name`.
    pub fn mint(common_name: &str) -> Result<StandInCa> {
        let ca_key = KeyPair::generate().map_err(ca_error)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(ca_error)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name.push(DnType::CommonName, common_name);
        let cert_pem = ca.self_signed(&ca_key).map_err(ca_error)?.pem();
        Ok(StandInCa {
            issuer: Issuer::new(ca, ca_key),
            cert_pem,
        })
    }

    /// A server certificate and its key (PEM) for `sans`, names or IP addresses; the
    /// first is also the common name.
    pub fn server(&self, sans: &[String]) -> Result<(String, String)> {
        let mut leaf = CertificateParams::new(sans.to_vec()).map_err(ca_error)?;
        if let Some(first) = sans.first() {
            leaf.distinguished_name.push(DnType::CommonName, first);
        }
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(ca_error)?;
        let leaf_cert = leaf.signed_by(&leaf_key, &self.issuer).map_err(ca_error)?;
        Ok((leaf_cert.pem(), leaf_key.serialize_pem()))
    }
}

fn ca_error(e: rcgen::Error) -> BackendError {
    BackendError::Ca(e.to_string())
}

/// The stand-in's CA (certificate to `ca_pem`) and its server certificate for `names`
/// (`server.crt`, `server.key` in `dir`).
fn mint(dir: &Path, ca_pem: &Path, names: &[&str]) -> Result<()> {
    let ca = StandInCa::mint("bot-bottle demo stand-in CA")?;
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let (cert, key) = ca.server(&sans)?;
    write_atomic(ca_pem, ca.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&dir.join("server.crt"), cert.as_bytes(), 0o644)?;
    write_atomic(&dir.join("server.key"), key.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeEngine;

    #[test]
    fn the_stand_in_runs_on_an_internal_network_of_its_own_and_goes_again() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEngine::new(&["img"]);
        let stand_in = start(&fake, "img", dir.path(), &["api.demo.test"], "secret").unwrap();
        assert!(stand_in.ip.ends_with(".254"), "{}", stand_in.ip);
        assert_eq!(fake.network_names(), vec![stand_in.network.clone()]);
        let calls = fake.calls();
        assert!(
            calls
                .iter()
                .any(|c| c == "run:img:python3 /demo/server.py /demo"),
            "{calls:?}"
        );
        use std::os::unix::fs::PermissionsExt;
        for (file, mode) in [
            ("server.py", 0o644),
            ("server.crt", 0o644),
            ("server.key", 0o600),
            ("credential", 0o600),
        ] {
            let meta = std::fs::metadata(dir.path().join("upstream").join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        // The stand-in never echoes a character of the credential.
        assert!(!SERVER_PY.contains("REAL[") && !SERVER_PY.contains("token[-"));
        assert!(
            std::fs::read_to_string(&stand_in.ca_pem)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        assert!(stop(&fake, &stand_in).is_empty());
        assert_eq!(pid_of_network(&stand_in.network), Some(std::process::id()));
        assert_eq!(pid_of_network("bot-bottle-demo-upstream-12"), None);
        assert!(fake.network_names().is_empty());
    }
}
