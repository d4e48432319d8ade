//! [`K8sBottles`]: the seam's [`Backend`] on a Kubernetes cluster. The trait is
//! synchronous, kube-rs is not: each call runs on this backend's own small tokio
//! runtime. What the cluster cannot do yet says so with a typed error and the way
//! around it, never by pretending.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use backend_api::{
    Attached, Backend, BottleStatus, Decided, Error, GcReport, LogSource, PendingRequest,
    PolicyChange, Progress, Result, UpRequest,
};
use plan::{ImagePlan, Secret};
use sidecar_contract::layout::AGENT_SERVICE;

use crate::cluster::{Cluster, Launch};
use crate::names::namespace;
use crate::render::{ClusterFacts, Materials};

/// How often the backend looks at pods and at the proxy's status.
const POLL: Duration = Duration::from_millis(500);

/// Bottles on the cluster a kubeconfig (or the in-cluster service account) names.
pub struct K8sBottles {
    runtime: tokio::runtime::Runtime,
    cluster: Cluster,
    sidecar_image: Option<String>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting", "the Kubernetes client's runtime"))
}

impl K8sBottles {
    /// Connects as `kubectl` would (`KUBECONFIG`, `~/.kube/config`, or in-cluster).
    /// `sidecar_image` is an image of this `bottle` build the cluster can pull.
    pub fn connect(sidecar_image: Option<String>) -> Result<Self> {
        let runtime = runtime()?;
        let client = runtime
            .block_on(async { kube::Client::try_default().await })
            .map_err(|e| Error::ClusterUnreachable {
                action: "finding a cluster (KUBECONFIG, ~/.kube/config or in-cluster)".to_owned(),
                detail: e.to_string(),
            })?;
        Ok(Self::with_client(runtime, client, sidecar_image))
    }

    /// A backend on `client` (tests hand it a stand-in API server).
    pub fn with_client(
        runtime: tokio::runtime::Runtime,
        client: kube::Client,
        sidecar_image: Option<String>,
    ) -> Self {
        Self {
            runtime,
            cluster: Cluster::new(client),
            sidecar_image,
        }
    }

    /// A current-thread runtime for [`K8sBottles::with_client`].
    pub fn new_runtime() -> Result<tokio::runtime::Runtime> {
        runtime()
    }
}

/// The image the agent runs: on a cluster it must already be pullable.
fn agent_image(plan: &plan::BottlePlan) -> Result<String> {
    match &plan.image {
        ImagePlan::Existing { reference } => Ok(reference.clone()),
        ImagePlan::Build { tag, .. } => Err(Error::Unsupported(format!(
            "the manifest builds its agent image ({tag}); a cluster cannot pull an image \
             built here: build it, push it to a registry the cluster pulls from, and name \
             it with `image:`"
        ))),
    }
}

/// `uid:gid` as numbers (the pods' security context).
fn user_ids(user: &str) -> Result<(i64, i64)> {
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    match (uid.parse(), gid.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(Error::Unsupported(format!(
            "`{user}` is not a numeric uid:gid for the sidecars"
        ))),
    }
}

/// What `up` reads from this host and mints for the bottle.
fn materials(request: &UpRequest) -> Result<Materials> {
    let ca = bottle_ca::mint_ca(request.plan.slug.as_str(), request.now_unix)?;
    let mut git_gate_files = std::collections::BTreeMap::new();
    if let Some(gate) = backend_api::needs::git_gate(&request.plan) {
        for file in gate.files {
            let bytes = std::fs::read(&file.from).map_err(Error::io("reading", &file.from))?;
            let text = String::from_utf8(bytes).map_err(|_| Error::Corrupt {
                path: file.from.clone(),
                detail: "not UTF-8 text (an SSH key or known_hosts file is)".to_owned(),
            })?;
            git_gate_files.insert(file.name, Secret::new(text));
        }
    }
    let extra_ca_pem = match &request.testing.extra_ca_bundle {
        Some(path) => Some(std::fs::read_to_string(path).map_err(Error::io("reading", path))?),
        None => None,
    };
    Ok(Materials {
        ca_cert_pem: ca.cert_pem,
        ca_key_pem: Secret::new(ca.key_pem),
        git_gate_files,
        extra_ca_pem,
    })
}

fn not_yet(what: &str, instead: &str) -> Error {
    Error::Unsupported(format!(
        "{what} is not available on Kubernetes yet; {instead}"
    ))
}

impl Backend for K8sBottles {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn prepare(&self, _progress: &mut dyn Progress) -> Result<String> {
        self.sidecar_image.clone().ok_or_else(|| {
            Error::Unsupported(
                "a cluster cannot pull the sidecar image `bottle` builds here: push it \
                 (`bottle images ls` names it) to a registry the cluster pulls from and set \
                 BOT_BOTTLE_SIDECAR_IMAGE to that reference"
                    .to_owned(),
            )
        })
    }

    fn up(
        &self,
        request: &UpRequest,
        progress: &mut dyn Progress,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Attached> {
        let plan = &request.plan;
        let (sidecar_uid, sidecar_gid) = user_ids(&request.sidecar_user)?;
        let facts = ClusterFacts {
            agent_image: agent_image(plan)?,
            sidecar_image: request.sidecar_image.clone(),
            sidecar_uid,
            sidecar_gid,
            // Stand-ins until the cluster gives the Services their addresses.
            ..ClusterFacts::preview(plan)
        };
        let materials = materials(request)?;
        let launch = Launch {
            plan,
            facts,
            materials: &materials,
            ready_timeout: request.ready_timeout,
            poll: POLL,
        };
        let ns = self
            .runtime
            .block_on(self.cluster.up(launch, progress, interrupted))?;
        Ok(Attached {
            slug: plan.slug.to_string(),
            state_dir: PathBuf::from(ns),
        })
    }

    fn attach(&self, slug: &str, command: &[String], workdir: Option<&str>) -> Result<i32> {
        // kubectl speaks the exec subresource's terminal protocol (raw mode, resize);
        // it is the same API call a client library would make.
        let mut kubectl = Command::new("kubectl");
        kubectl
            .args(["exec", "--stdin", "--tty", "--namespace"])
            .arg(namespace(slug))
            .arg(AGENT_SERVICE)
            .arg("--");
        match workdir {
            Some(dir) => kubectl
                .args(["sh", "-c", "cd \"$0\" && exec \"$@\"", dir])
                .args(command),
            None => kubectl.args(command),
        };
        let status = kubectl.status().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                not_yet(
                    "attaching without kubectl",
                    "install kubectl: `bottle` runs `kubectl exec` to attach",
                )
            } else {
                Error::io("running", "kubectl")(e)
            }
        })?;
        Ok(status.code().unwrap_or(1))
    }

    fn list(&self) -> Result<Vec<BottleStatus>> {
        self.runtime.block_on(self.cluster.list())
    }

    fn logs(&self, slug: &str, follow: bool, sink: &mut dyn FnMut(LogSource, &str)) -> Result<()> {
        if follow {
            return Err(not_yet(
                "following logs",
                "run `kubectl logs --follow` in the bottle's namespace",
            ));
        }
        self.runtime.block_on(
            self.cluster
                .logs(slug, &mut |_role, line| sink(LogSource::Services, line)),
        )
    }

    fn down(&self, slug: &str) -> Result<Vec<Error>> {
        self.runtime.block_on(self.cluster.down(slug))?;
        Ok(Vec::new())
    }

    fn purge_agent(&self, _agent: &str) -> Result<bool> {
        // On a cluster nothing outlives a bottle yet (persisted dirs are emptyDirs).
        Ok(false)
    }

    fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.runtime.block_on(self.cluster.gc(now, dry_run))
    }

    fn apply_egress(&self, slug: &str, change: &PolicyChange, timeout: Duration) -> Result<String> {
        self.runtime
            .block_on(self.cluster.apply_egress(slug, change, timeout, POLL))
    }

    fn requests(&self, _slug: Option<&str>) -> Result<Vec<PendingRequest>> {
        Err(not_yet(
            "reading the agents' requests",
            "`kubectl exec -n bot-bottle-SLUG supervise -- ls /var/lib/supervise/queue` shows them",
        ))
    }

    fn audit(
        &self,
        _slug: &str,
        _log: backend_api::AuditLog,
        _from: backend_api::AuditCursor,
    ) -> Result<backend_api::AuditChunk> {
        Err(not_yet(
            "following the audit logs",
            "`bottle logs SLUG` shows what the sidecars printed",
        ))
    }

    fn decide(&self, _id: &str, _approve: bool, _note: Option<String>) -> Result<Decided> {
        Err(not_yet(
            "deciding requests",
            "change the policy with `bottle egress allow` instead",
        ))
    }
}
