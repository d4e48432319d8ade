//! Sidecar configs written at launch: what `backend_api::needs` computes from the
//! plan, written as files into the bottle's state dir, which compose mounts into each
//! sidecar. The sidecars read the same `sidecar-contract` types.

use std::path::Path;

use backend_api::needs::{self, EgressExtras};
use compose_render::LaunchFacts;
use plan::BottlePlan;
use sidecar_contract::egress::{AuditStdout, EgressConfig, POLICY_FILE_NAME};
use sidecar_contract::layout::EXTRA_CA_FILE;

use crate::error::{BackendError, Result};
use crate::state::write_atomic;

/// Hex SHA-256 of `bytes`: content-addressed names (base tarballs, the sidecar
/// image's tag).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The egress policy of `plan` on Docker: the bottle's internal network is where its
/// sidecars live, so SSRF blocking exempts it; the audit file in the state dir is the
/// audit log (`logs` and the dashboard read it), so the container's own log (Docker
/// writes every stdout line again, capped at 10 MiB) carries notable lines only.
pub fn egress_config(
    plan: &BottlePlan,
    facts: &LaunchFacts,
    extras: &EgressExtras,
) -> EgressConfig {
    let mut config = needs::egress_config(plan, std::slice::from_ref(&facts.internal_cidr), extras);
    config.audit_stdout = AuditStdout::Notable;
    config
}

/// Writes the egress policy (0600) and the optional extra CA into `config_dir`.
pub fn write_egress_config(
    config: &EgressConfig,
    extras: &EgressExtras,
    config_dir: &Path,
) -> Result<()> {
    if let Some(bundle) = &extras.extra_ca_bundle {
        let pem =
            std::fs::read(bundle).map_err(BackendError::io("reading extra CA bundle", bundle))?;
        write_atomic(&config_dir.join(EXTRA_CA_FILE), &pem, 0o644)?;
    }
    write_policy(config, config_dir)
}

/// Writes `policy.json` atomically.
pub fn write_policy(config: &EgressConfig, config_dir: &Path) -> Result<()> {
    write_atomic(
        &config_dir.join(POLICY_FILE_NAME),
        &needs::policy_bytes(config),
        0o600,
    )
}

/// Writes the git gate's config, a copy of each upstream's key (0600) and known_hosts,
/// and a passwd file so ssh finds an entry for the sidecar's uid.
pub fn write_git_gate_config(plan: &BottlePlan, facts: &LaunchFacts) -> Result<()> {
    let Some(gate) = needs::git_gate(plan) else {
        return Ok(());
    };
    let config_dir = facts.git_gate_config_dir();
    for file in &gate.files {
        let bytes = std::fs::read(&file.from).map_err(BackendError::io("reading", &file.from))?;
        write_atomic(&config_dir.join(&file.name), &bytes, file.mode)?;
    }
    let mut text = serde_json::to_string_pretty(&gate.config).expect("git-gate config serializes");
    text.push('\n');
    write_atomic(
        &config_dir.join(sidecar_contract::git_gate::CONFIG_FILE_NAME),
        text.as_bytes(),
        0o600,
    )?;
    write_atomic(
        &facts.git_gate_passwd_file(),
        needs::sidecar_passwd(&facts.sidecar_user).as_bytes(),
        0o644,
    )
}

/// Writes the supervise sidecar's config and its policy view, and creates the request
/// queue (writable by the sidecar) and the decisions dir (written only by the host CLI;
/// mounted read-only).
pub fn write_supervise_config(plan: &BottlePlan, facts: &LaunchFacts) -> Result<()> {
    let Some(config) = needs::supervise_config(plan) else {
        return Ok(());
    };
    for dir in [
        facts.supervise_config_dir(),
        facts.supervise_queue_dir(),
        facts.supervise_decisions_dir(),
    ] {
        crate::state::create_private_dir(&dir)?;
    }
    config
        .write(&facts.supervise_config_dir())
        .map_err(|e| BackendError::Corrupt {
            path: facts.supervise_config_dir(),
            detail: e.to_string(),
        })?;
    write_policy_view(&facts.state_dir)
}

/// Rewrites the supervise sidecar's view of the egress policy (what the agent's
/// `policy()` tool shows) from the bottle's current `policy.json`. A bottle without
/// supervise has no view to write.
pub fn write_policy_view(state_dir: &Path) -> Result<()> {
    let config_dir = state_dir.join("supervise/config");
    if !config_dir.is_dir() {
        return Ok(());
    }
    let policy_path = state_dir.join("egress/config").join(POLICY_FILE_NAME);
    let bytes = std::fs::read(&policy_path).map_err(BackendError::io("reading", &policy_path))?;
    let policy = EgressConfig::from_json(&bytes).map_err(|e| BackendError::Corrupt {
        path: policy_path.clone(),
        detail: e.to_string(),
    })?;
    let view = needs::policy_view(&policy, needs::policy_version(&bytes));
    let path = config_dir.join(sidecar_contract::supervise::config::DEFAULT_POLICY_VIEW);
    view.write(&path).map_err(|e| BackendError::Corrupt {
        path,
        detail: e.to_string(),
    })
}
