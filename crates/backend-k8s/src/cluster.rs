//! A bottle's life on a cluster, through the API server with kube-rs: create its
//! objects in order (tearing them down again if any step fails), wait for its pods,
//! change its egress policy and confirm the version the proxy runs, list, collect
//! and remove bottles. Every effect of the Kubernetes backend lives here; what the
//! objects are is `render`'s business.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use backend_api::needs;
use backend_api::{
    BottleStatus, Error, Garbage, GarbageReason, GcReport, PolicyChange, Progress, Result,
    ServiceStatus,
};
use k8s_openapi::api::core::v1::Secret as SecretObject;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use plan::BottlePlan;
use sidecar_contract::egress::{EgressConfig, POLICY_FILE_NAME};
use sidecar_contract::layout::{
    AGENT_SERVICE, EGRESS_PROXY_PORT, EGRESS_SERVICE, GIT_GATE_SERVICE, LABEL_AGENT, LABEL_ROLE,
    SUPERVISE_SERVICE,
};
use sidecar_contract::supervise::config::DEFAULT_POLICY_VIEW;

use crate::names::{
    ANNOTATION_READY, EGRESS_POLICY_CONFIG, LABEL_MANAGED_BY, MANAGED_BY, SUPERVISE_CONFIG,
    namespace, slug_of_namespace,
};
use crate::render::{ClusterFacts, Materials, Reveal, render};

/// How long a bottle may stay not ready before `gc` takes its launcher for dead.
pub const LAUNCH_GRACE: Duration = Duration::from_secs(600);

/// One bottle to start.
pub struct Launch<'a> {
    /// The bottle.
    pub plan: &'a BottlePlan,
    /// Images and the sidecars' uid; the Services' addresses are filled in here.
    pub facts: ClusterFacts,
    /// The CA and the git gate's files.
    pub materials: &'a Materials,
    /// How long each pod may take to be ready.
    pub ready_timeout: Duration,
    /// How often to look.
    pub poll: Duration,
}

/// A cluster that runs bottles.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
}

/// A kube error as the seam's typed error: the API's own refusals keep their code and
/// reason; everything else is unreachable.
fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |error| match error {
        kube::Error::Api(status) => Error::ClusterApi {
            action,
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        other => Error::ClusterUnreachable {
            action,
            detail: other.to_string(),
        },
    }
}

fn is_status(error: &Error, code: u16) -> bool {
    matches!(error, Error::ClusterApi { code: c, .. } if *c == code)
}

/// The selector of everything `bottle` made.
fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

impl Cluster {
    /// A cluster reached through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Creates the bottle's objects in order and waits for its pods. On any failure
    /// or interruption the namespace (and so everything in it) is deleted again and
    /// the original error returned.
    pub async fn up(
        &self,
        launch: Launch<'_>,
        progress: &mut dyn Progress,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<String> {
        let slug = launch.plan.slug.to_string();
        let ns = namespace(&slug);
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let first = render(
            launch.plan,
            &launch.facts,
            launch.materials,
            Reveal::ForApply,
        );
        progress.step(&format!("namespace {ns}"));
        namespaces
            .create(&PostParams::default(), &first.namespace)
            .await
            .map_err(api_error(format!("creating namespace {ns}")))
            .map_err(|error| match error {
                Error::ClusterApi { code: 409, .. } => Error::NameConflict { name: ns.clone() },
                other => other,
            })?;
        match self.fill(&ns, launch, first, progress, interrupted).await {
            Ok(()) => Ok(ns),
            Err(error) => {
                progress.warn(&format!("removing namespace {ns} after: {error}"));
                if let Err(cleanup) = self.delete_namespace(&ns).await {
                    progress.warn(&format!("could not remove namespace {ns}: {cleanup}"));
                }
                Err(error)
            }
        }
    }

    async fn fill(
        &self,
        ns: &str,
        mut launch: Launch<'_>,
        objects: crate::Manifests,
        progress: &mut dyn Progress,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<()> {
        let post = PostParams::default();
        let check = || {
            if interrupted() {
                Err(Error::Interrupted)
            } else {
                Ok(())
            }
        };
        // Default deny first: nothing runs before the walls stand.
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), ns);
        for policy in &objects.network_policies {
            check()?;
            policies
                .create(&post, policy)
                .await
                .map_err(api_error(format!(
                    "creating network policy {}",
                    name(&policy.metadata)
                )))?;
        }
        let secrets: Api<SecretObject> = Api::namespaced(self.client.clone(), ns);
        for secret in &objects.secrets {
            check()?;
            secrets
                .create(&post, secret)
                .await
                .map_err(api_error(format!(
                    "creating secret {}",
                    name(&secret.metadata)
                )))?;
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        for config_map in &objects.config_maps {
            check()?;
            config_maps
                .create(&post, config_map)
                .await
                .map_err(api_error(format!(
                    "creating config map {}",
                    name(&config_map.metadata)
                )))?;
        }
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let mut addresses = BTreeMap::new();
        for service in &objects.services {
            check()?;
            let created = services
                .create(&post, service)
                .await
                .map_err(api_error(format!(
                    "creating service {}",
                    name(&service.metadata)
                )))?;
            let ip = created
                .spec
                .and_then(|spec| spec.cluster_ip)
                .filter(|ip| !ip.is_empty() && ip != "None")
                .ok_or_else(|| Error::Incomplete {
                    slug: launch.plan.slug.to_string(),
                    what: "service address",
                })?;
            addresses.insert(name(&service.metadata).to_owned(), ip);
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        for pod in &objects.sidecar_pods {
            check()?;
            pods.create(&post, pod)
                .await
                .map_err(api_error(format!("creating pod {}", name(&pod.metadata))))?;
        }
        for pod in &objects.sidecar_pods {
            let role = name(&pod.metadata);
            progress.step(&format!("waiting for {role}"));
            let started = Instant::now();
            self.wait_ready(ns, role, &launch, interrupted).await?;
            progress.done(&format!("{role} ready"), started.elapsed());
        }
        // The agent's pod pins its sidecars' addresses: render it again with them.
        let address = |role: &str| addresses.get(role).cloned();
        launch.facts.egress_ip = address(EGRESS_SERVICE).ok_or_else(|| Error::Incomplete {
            slug: launch.plan.slug.to_string(),
            what: "egress service",
        })?;
        launch.facts.git_gate_ip = address(GIT_GATE_SERVICE);
        launch.facts.supervise_ip = address(SUPERVISE_SERVICE);
        let agent = render(
            launch.plan,
            &launch.facts,
            launch.materials,
            Reveal::ForApply,
        )
        .agent;
        check()?;
        pods.create(&post, &agent)
            .await
            .map_err(api_error("creating pod agent"))?;
        progress.step("waiting for agent");
        let started = Instant::now();
        self.wait_ready(ns, AGENT_SERVICE, &launch, interrupted)
            .await?;
        progress.done("agent ready", started.elapsed());
        let ready = serde_json::json!({"metadata": {"annotations": {ANNOTATION_READY: "true"}}});
        Api::<Namespace>::all(self.client.clone())
            .patch(ns, &PatchParams::default(), &Patch::Merge(&ready))
            .await
            .map_err(api_error(format!("marking namespace {ns} ready")))?;
        Ok(())
    }

    /// Waits until pod `role` reports Ready; a pod that ended is an error at once.
    async fn wait_ready(
        &self,
        ns: &str,
        role: &str,
        launch: &Launch<'_>,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + launch.ready_timeout;
        loop {
            if interrupted() {
                return Err(Error::Interrupted);
            }
            let pod = pods
                .get(role)
                .await
                .map_err(api_error(format!("reading pod {role}")))?;
            let (phase, ready) = pod_state(&pod);
            if ready {
                return Ok(());
            }
            if matches!(phase.as_str(), "Failed" | "Succeeded") {
                return Err(Error::ServiceNotRunning {
                    slug: launch.plan.slug.to_string(),
                    role: role.to_owned(),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("pod {role} of {ns} to be ready"),
                    seconds: launch.ready_timeout.as_secs(),
                });
            }
            tokio::time::sleep(launch.poll).await;
        }
    }

    /// Changes the bottle's egress policy: replaces the policy ConfigMap (with the
    /// version read, so a concurrent change fails instead of being lost), then polls
    /// the proxy's `/status` through the API server until it runs the new file. If it
    /// never does within `timeout`, the old policy is put back and the timeout is the
    /// error. Returns the confirmed version.
    pub async fn apply_egress(
        &self,
        slug: &str,
        change: &PolicyChange,
        timeout: Duration,
        poll: Duration,
    ) -> Result<String> {
        let ns = namespace(slug);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        let current = config_maps
            .get(EGRESS_POLICY_CONFIG)
            .await
            .map_err(api_error(format!("reading the egress policy of {slug}")))
            .map_err(|error| unknown_if_missing(error, slug))?;
        let old_text = current
            .data
            .as_ref()
            .and_then(|data| data.get(POLICY_FILE_NAME))
            .cloned()
            .ok_or_else(|| Error::Incomplete {
                slug: slug.to_owned(),
                what: "egress policy",
            })?;
        let old = EgressConfig::from_json(old_text.as_bytes()).map_err(|e| Error::Corrupt {
            path: format!("{ns}/configmap/{EGRESS_POLICY_CONFIG}").into(),
            detail: e.to_string(),
        })?;
        let updated = backend_api::policy_edit::apply_change(old, change)?;
        let bytes = needs::policy_bytes(&updated);
        let version = needs::policy_version(&bytes);
        let mut next = current.clone();
        next.data.get_or_insert_with(BTreeMap::new).insert(
            POLICY_FILE_NAME.to_owned(),
            String::from_utf8_lossy(&bytes).into_owned(),
        );
        let replaced = config_maps
            .replace(EGRESS_POLICY_CONFIG, &PostParams::default(), &next)
            .await
            .map_err(api_error(format!("replacing the egress policy of {slug}")))?;
        match self.confirm(&ns, &version, timeout, poll).await {
            Ok(()) => {
                self.write_policy_view(&ns, &updated, &version).await?;
                Ok(version)
            }
            Err(error) => {
                // Put the old file back, on top of the version we wrote.
                let mut restore = replaced;
                restore
                    .data
                    .get_or_insert_with(BTreeMap::new)
                    .insert(POLICY_FILE_NAME.to_owned(), old_text);
                config_maps
                    .replace(EGRESS_POLICY_CONFIG, &PostParams::default(), &restore)
                    .await
                    .map_err(api_error(format!("restoring the egress policy of {slug}")))?;
                Err(error)
            }
        }
    }

    /// The policy version the proxy of `ns` runs, from its `/status` through the API
    /// server's service proxy.
    pub async fn running_policy_version(&self, ns: &str) -> Result<String> {
        let path = format!(
            "/api/v1/namespaces/{ns}/services/{EGRESS_SERVICE}:{EGRESS_PROXY_PORT}/proxy/status"
        );
        let request = http::Request::get(&path)
            .body(Vec::new())
            .expect("a static request builds");
        let text = self
            .client
            .request_text(request)
            .await
            .map_err(api_error(format!("reading {path}")))?;
        let status: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::ClusterUnreachable {
                action: format!("reading {path}"),
                detail: format!("not JSON: {e}"),
            })?;
        status["policy_version"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::ClusterUnreachable {
                action: format!("reading {path}"),
                detail: "no policy_version in the proxy's status".to_owned(),
            })
    }

    async fn confirm(
        &self,
        ns: &str,
        version: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // The proxy may be restarting: an unreachable status is a retry, not an end.
            if let Ok(running) = self.running_policy_version(ns).await
                && running == version
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("the egress proxy of {ns} to run policy {}", &version[..12]),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Rewrites the supervise policy view (what the agent's `policy()` tool shows),
    /// when the bottle has supervise.
    async fn write_policy_view(
        &self,
        ns: &str,
        policy: &EgressConfig,
        version: &str,
    ) -> Result<()> {
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let view = needs::policy_view(policy, version.to_owned());
        let mut text = serde_json::to_string_pretty(&view).expect("the view serializes");
        text.push('\n');
        let patch = serde_json::json!({"data": {DEFAULT_POLICY_VIEW: text}});
        match config_maps
            .patch(
                SUPERVISE_CONFIG,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(api_error(format!("updating the policy view of {ns}")))
        {
            Err(error) if is_status(&error, 404) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Every bottle on the cluster, sorted by slug, with its pods.
    pub async fn list(&self) -> Result<Vec<BottleStatus>> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let found = namespaces
            .list(&ListParams::default().labels(&managed_selector()))
            .await
            .map_err(api_error("listing bottle namespaces"))?;
        let mut bottles = Vec::new();
        for ns in found.items {
            let Some(slug) = ns.metadata.name.as_deref().and_then(slug_of_namespace) else {
                continue;
            };
            let pods: Api<Pod> = Api::namespaced(
                self.client.clone(),
                ns.metadata.name.as_deref().unwrap_or_default(),
            );
            let listed = pods
                .list(&ListParams::default().labels(&managed_selector()))
                .await
                .map_err(api_error(format!("listing the pods of {slug}")))?;
            let services = listed
                .items
                .iter()
                .map(|pod| {
                    let (phase, ready) = pod_state(pod);
                    ServiceStatus {
                        role: label(&pod.metadata, LABEL_ROLE).unwrap_or_default(),
                        name: name(&pod.metadata).to_owned(),
                        state: phase.to_lowercase(),
                        health: Some(if ready { "healthy" } else { "starting" }.to_owned()),
                    }
                })
                .collect();
            bottles.push(BottleStatus {
                slug: slug.to_owned(),
                agent: label(&ns.metadata, LABEL_AGENT),
                created: ns
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .and_then(|t| u64::try_from(t.0.as_second()).ok()),
                ready: annotation(&ns.metadata, ANNOTATION_READY).as_deref() == Some("true"),
                manifest: None,
                services,
                state_dir: std::path::PathBuf::new(),
            });
        }
        bottles.sort_by(|a, b| a.slug.cmp(&b.slug));
        Ok(bottles)
    }

    /// Removes a bottle: its namespace, and with it everything in it.
    pub async fn down(&self, slug: &str) -> Result<()> {
        self.delete_namespace(&namespace(slug))
            .await
            .map_err(|error| unknown_if_missing(error, slug))
    }

    async fn delete_namespace(&self, ns: &str) -> Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(ns, &DeleteParams::background())
            .await
            .map(|_| ())
            .map_err(api_error(format!("deleting namespace {ns}")))
    }

    /// Bottles nobody runs any more: a launch that never finished within
    /// [`LAUNCH_GRACE`] of `now_unix`, or a ready bottle whose pods all ended. Removed
    /// unless `dry_run`.
    pub async fn gc(&self, now_unix: u64, dry_run: bool) -> Result<GcReport> {
        let mut report = GcReport::default();
        for bottle in self.list().await? {
            let age = bottle
                .created
                .map(|created| now_unix.saturating_sub(created));
            let reason = if !bottle.ready {
                match age {
                    Some(age) if age >= LAUNCH_GRACE.as_secs() => GarbageReason::Orphaned,
                    _ => continue,
                }
            } else if bottle.services.iter().all(|s| s.state != "running") {
                GarbageReason::Stopped
            } else {
                continue;
            };
            if !dry_run && let Err(error) = self.down(&bottle.slug).await {
                report.problems.push(error);
                continue;
            }
            report.garbage.push(Garbage {
                resources: vec![format!("namespace/{}", namespace(&bottle.slug))],
                slug: bottle.slug,
                reason,
            });
        }
        Ok(report)
    }

    /// Each pod's output (the sidecars' audit lines are among it), role by role,
    /// with every value of the bottle's Secrets redacted.
    pub async fn logs(&self, slug: &str, sink: &mut dyn FnMut(&str, &str)) -> Result<()> {
        let ns = namespace(slug);
        let secrets = self
            .secret_values(&ns)
            .await
            .map_err(|error| unknown_if_missing(error, slug))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        for role in [
            EGRESS_SERVICE,
            GIT_GATE_SERVICE,
            SUPERVISE_SERVICE,
            AGENT_SERVICE,
        ] {
            match pods.logs(role, &LogParams::default()).await {
                Ok(text) => text
                    .lines()
                    .for_each(|line| sink(role, &backend_api::redact::redact(line, &secrets))),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(api_error(format!("reading the logs of {role}"))(error)),
            }
        }
        Ok(())
    }
}

impl Cluster {
    /// Every value held in the bottle's Secrets (credentials, the agent's own secret
    /// env, SSH keys, the CA key): what must never print.
    async fn secret_values(&self, ns: &str) -> Result<Vec<String>> {
        let secrets: Api<SecretObject> = Api::namespaced(self.client.clone(), ns);
        let listed = secrets
            .list(&ListParams::default().labels(&managed_selector()))
            .await
            .map_err(api_error(format!("listing the secrets of {ns}")))?;
        Ok(listed
            .items
            .into_iter()
            .flat_map(|secret| secret.data.unwrap_or_default().into_values())
            .map(|value| String::from_utf8_lossy(&value.0).into_owned())
            .flat_map(|value| {
                // Multi-line values (keys) are redacted line by line, as logs are.
                let lines: Vec<String> = value.lines().map(str::to_owned).collect();
                std::iter::once(value).chain(lines)
            })
            .filter(|value| value.trim().len() >= 4)
            .collect())
    }
}

fn unknown_if_missing(error: Error, slug: &str) -> Error {
    if is_status(&error, 404) {
        Error::UnknownBottle {
            slug: slug.to_owned(),
        }
    } else {
        error
    }
}

/// A pod's phase and whether its Ready condition is true.
fn pod_state(pod: &Pod) -> (String, bool) {
    let status = pod.status.as_ref();
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".to_owned());
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    (phase, ready)
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn label(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<String> {
    meta.labels
        .as_ref()
        .and_then(|labels| labels.get(key).cloned())
}

fn annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<String> {
    meta.annotations
        .as_ref()
        .and_then(|annotations| annotations.get(key).cloned())
}
