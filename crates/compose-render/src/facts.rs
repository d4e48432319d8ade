//! What the backend learns while launching, kept apart from the plan.

use std::path::{Path, PathBuf};

use plan::{BottlePlan, ImagePlan};

/// Launch-time facts the renderer needs: names, addresses and host paths that only
/// exist once the backend has created networks and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchFacts {
    /// Engine name of the internal (`--internal`) network.
    pub internal_network: String,
    /// Engine name of the egress network.
    pub egress_network: String,
    /// Subnet of the internal network, e.g. `10.213.7.0/24`.
    pub internal_cidr: String,
    /// Fixed address of the egress sidecar on the internal network (the agent's DNS).
    pub egress_ip: String,
    /// Image the agent container runs (the derived image).
    pub agent_image: String,
    /// Image the sidecars run (the `bottle` binary on a small base).
    pub sidecar_image: String,
    /// `uid:gid` the sidecars run as: the owner of the state dir, so 0600 files
    /// (CA key, SSH key) stay readable to them and to nobody else.
    pub sidecar_user: String,
    /// `state/<slug>/` on the host.
    pub state_dir: PathBuf,
    /// Whether the engine can cap a container's writable layer (`storage_opt: size`:
    /// overlay2 on xfs with project quotas).
    pub writable_layer_quota: bool,
}

pub use sidecar_contract::layout::{SIDECAR_REPO, sidecar_image_tag};

/// What an agent keeps across its bottles (sessions, memory; never credentials):
/// `<state root>/agents/<agent>/`. `bottle down --purge` removes it.
pub fn agent_state_dir(state_root: &Path, agent: &str) -> PathBuf {
    state_root.join(AGENTS_STATE_DIR).join(agent)
}

/// The state root's directory of per-agent state: not a bottle's state dir.
pub const AGENTS_STATE_DIR: &str = "agents";

impl LaunchFacts {
    /// Deterministic stand-ins for dry runs and snapshots.
    pub fn preview(plan: &BottlePlan) -> Self {
        let slug = plan.slug.as_str();
        let agent_image = match &plan.image {
            ImagePlan::Build { tag, .. } => format!("{tag}-workdir"),
            ImagePlan::Existing { reference } => format!("{reference}-workdir"),
        };
        Self {
            internal_network: crate::names::network(slug, crate::INTERNAL_NETWORK),
            egress_network: crate::names::network(slug, crate::EGRESS_NETWORK),
            internal_cidr: "10.213.0.0/24".to_owned(),
            egress_ip: "10.213.0.254".to_owned(),
            agent_image,
            sidecar_image: format!("{SIDECAR_REPO}:{}", env!("CARGO_PKG_VERSION")),
            sidecar_user: "1000:1000".to_owned(),
            state_dir: Path::new("/state/bot-bottle").join(slug),
            // A dry run shows what every engine gets; `start` adds the quota where it can.
            writable_layer_quota: false,
        }
    }

    /// The state root that owns this bottle (the state dir's parent).
    pub fn state_root(&self) -> &Path {
        self.state_dir.parent().unwrap_or(&self.state_dir)
    }

    /// Host directory of one of the agent's persisted directories (see
    /// [`agent_state_dir`]).
    pub fn persist_dir(&self, agent: &str, name: &str) -> PathBuf {
        agent_state_dir(self.state_root(), agent).join(name)
    }

    /// Host directory bind-mounted read-only into the egress sidecar (policy, CA).
    pub fn egress_config_dir(&self) -> PathBuf {
        self.state_dir.join("egress/config")
    }

    /// Host directory holding only the CA certificate, mounted into the agent.
    pub fn ca_public_dir(&self) -> PathBuf {
        self.state_dir.join("egress/ca-public")
    }

    /// Host directory for audit logs written by the sidecars.
    pub fn audit_dir(&self) -> PathBuf {
        self.state_dir.join("audit")
    }

    /// Host directory with the git gate's config and keys (read-only mount).
    pub fn git_gate_config_dir(&self) -> PathBuf {
        self.state_dir.join("git-gate/config")
    }

    /// Host file mounted as the git gate's `/etc/passwd`: ssh refuses to run for a
    /// uid without an entry, and sidecars run as the state dir owner's uid.
    pub fn git_gate_passwd_file(&self) -> PathBuf {
        self.state_dir.join("git-gate/passwd")
    }

    /// Host directory for the git gate's bare mirrors.
    pub fn git_gate_mirrors_dir(&self) -> PathBuf {
        self.state_dir.join("git-gate/mirrors")
    }

    /// Host directory of the supervise sidecar's config (read-only mount).
    pub fn supervise_config_dir(&self) -> PathBuf {
        self.state_dir.join("supervise/config")
    }

    /// Host directory where the agent's requests queue (writable by the sidecar).
    pub fn supervise_queue_dir(&self) -> PathBuf {
        self.state_dir.join("supervise/queue")
    }

    /// Host directory of the human's decisions (read-only to the sidecar).
    pub fn supervise_decisions_dir(&self) -> PathBuf {
        self.state_dir.join("supervise/decisions")
    }
}
