//! A bottle's life against the stand-in API server: what the backend creates, in
//! which order, what it does when a step fails half way, how a policy change is
//! confirmed or rolled back, and how bottles are listed, collected and removed.
//! No cluster is involved: this pins the backend's sequence, not a cluster's
//! behaviour.

use std::cell::Cell;
use std::time::Duration;

use backend_api::{Error, GarbageReason, PolicyChange, RecordedProgress};
use backend_k8s::cluster::{Cluster, Launch};
use backend_k8s::{ClusterFacts, Materials};
use http::Method;
use plan::BottlePlan;
use serde_json::Value;

use crate::fake_api::{self, Pods, Proxy};
use crate::valid_plans;

/// A bottle with every sidecar and a credential route.
fn full_plan() -> BottlePlan {
    valid_plans()
        .into_iter()
        .flat_map(|(_, plans)| plans)
        .find(|plan| {
            plan.git_gate.enabled() && plan.supervise.enabled && !plan.egress.routes.is_empty()
        })
        .expect("a fixture with a git gate, supervise and a route")
}

fn launch<'a>(plan: &'a BottlePlan, materials: &'a Materials) -> Launch<'a> {
    Launch {
        plan,
        facts: ClusterFacts::preview(plan),
        materials,
        ready_timeout: Duration::from_millis(300),
        poll: Duration::from_millis(10),
    }
}

fn never() -> bool {
    false
}

/// A bottle with every sidecar, up on a fresh stand-in server whose proxy does
/// `proxy`: the cluster, the server's state, the plan and the namespace.
async fn running(
    proxy: Proxy,
) -> (
    Cluster,
    std::sync::Arc<std::sync::Mutex<fake_api::State>>,
    BottlePlan,
    String,
) {
    let (client, state) = fake_api::start(Pods::Ready, proxy);
    let plan = full_plan();
    let materials = Materials::preview(&plan);
    let cluster = Cluster::new(client);
    let ns = cluster
        .up(
            launch(&plan, &materials),
            &mut RecordedProgress::default(),
            &never,
        )
        .await
        .unwrap();
    (cluster, state, plan, ns)
}

/// Brings the full bottle up on `client`, expecting the launch to fail: the plan and
/// the error.
async fn failed_up(client: kube::Client) -> (BottlePlan, Error) {
    let plan = full_plan();
    let materials = Materials::preview(&plan);
    let error = Cluster::new(client)
        .up(
            launch(&plan, &materials),
            &mut RecordedProgress::default(),
            &never,
        )
        .await
        .unwrap_err();
    (plan, error)
}

fn ns_of(plan: &BottlePlan) -> String {
    backend_k8s::names::namespace(plan.slug.as_str())
}

#[tokio::test]
async fn up_creates_the_walls_first_the_agent_last_and_marks_the_bottle_ready() {
    let (client, state) = fake_api::start(Pods::Ready, Proxy::Follows);
    let plan = full_plan();
    let materials = Materials::preview(&plan);
    let mut progress = RecordedProgress::default();
    let ns = Cluster::new(client)
        .up(launch(&plan, &materials), &mut progress, &never)
        .await
        .unwrap();
    assert_eq!(ns, ns_of(&plan));

    let state = state.lock().unwrap();
    let writes = state.writes();
    assert_eq!(writes[0], "POST /api/v1/namespaces");
    assert_eq!(
        writes[1],
        format!("POST /apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies")
    );
    let first_policy = &state.objects
        [&format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/default-deny")];
    assert_eq!(
        first_policy["metadata"]["resourceVersion"], "2",
        "default deny comes first"
    );
    let position = |needle: &str| {
        writes
            .iter()
            .position(|w| w == needle)
            .unwrap_or_else(|| panic!("no {needle} in {writes:#?}"))
    };
    let last_policy = writes
        .iter()
        .rposition(|w| w.contains("networkpolicies"))
        .unwrap();
    let first_pod = position(&format!("POST /api/v1/namespaces/{ns}/pods"));
    assert!(
        last_policy < first_pod,
        "a pod ran before every policy stood"
    );
    assert!(
        writes
            .iter()
            .rposition(|w| w.contains("/services"))
            .unwrap()
            < first_pod
    );
    // The agent is created last, after every sidecar reported ready.
    let pod_posts: Vec<usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| *w == &format!("POST /api/v1/namespaces/{ns}/pods"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(pod_posts.len(), 4, "egress, git-gate, supervise, agent");
    for role in ["egress", "git-gate", "supervise"] {
        let ready = state
            .log
            .iter()
            .position(|w| w == &format!("GET /api/v1/namespaces/{ns}/pods/{role}"))
            .unwrap();
        let agent_post = state
            .log
            .iter()
            .rposition(|w| w == &format!("POST /api/v1/namespaces/{ns}/pods"))
            .unwrap();
        assert!(
            ready < agent_post,
            "the agent started before {role} was ready"
        );
    }
    assert_eq!(
        writes.last().unwrap(),
        &format!("PATCH /api/v1/namespaces/{ns}")
    );
    let namespace = &state.objects[&format!("/api/v1/namespaces/{ns}")];
    assert_eq!(
        namespace["metadata"]["annotations"]["dev.bot-bottle.ready"],
        "true"
    );

    // The agent pins the addresses the cluster gave its sidecars' Services.
    let service_ip = |role: &str| {
        state.objects[&format!("/api/v1/namespaces/{ns}/services/{role}")]["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let agent = &state.objects[&format!("/api/v1/namespaces/{ns}/pods/agent")]["spec"];
    assert_eq!(agent["dnsConfig"]["nameservers"][0], service_ip("egress"));
    let aliases: Vec<(String, String)> = agent["hostAliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["hostnames"][0].as_str().unwrap().to_owned(),
                a["ip"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for role in ["egress", "git-gate", "supervise"] {
        assert!(
            aliases.contains(&(role.to_owned(), service_ip(role))),
            "{aliases:?}"
        );
    }
    // The real credential went into the egress Secret, and only there.
    let token = plan.egress.routes[0].token.expose();
    for (path, object) in &state.objects {
        let text = fake_api::readable(object);
        if path.ends_with("/secrets/egress-credentials") {
            assert!(text.contains(token));
        } else {
            assert!(!text.contains(token), "the credential is in {path}");
        }
    }
    assert!(progress.lines.iter().any(|l| l == "done: agent ready"));
}

#[tokio::test]
async fn a_failure_half_way_removes_everything_and_reports_the_first_error() {
    let (client, state) = fake_api::start(Pods::Ready, Proxy::Follows);
    state.lock().unwrap().fail = Some((Method::POST, "/services", 500));
    let plan = full_plan();
    let materials = Materials::preview(&plan);
    let mut progress = RecordedProgress::default();
    let error = Cluster::new(client)
        .up(launch(&plan, &materials), &mut progress, &never)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::ClusterApi { code: 500, action, .. } if action.contains("service")),
        "{error:?}"
    );
    let state = state.lock().unwrap();
    assert_eq!(
        state.writes().last().unwrap(),
        &format!("DELETE /api/v1/namespaces/{}", ns_of(&plan))
    );
    assert!(
        state.objects.is_empty(),
        "left behind: {:?}",
        state.objects.keys()
    );
    assert!(
        !state.writes().iter().any(|w| w.ends_with("/pods")),
        "a pod ran"
    );
}

#[tokio::test]
async fn a_sidecar_that_dies_stops_the_launch_before_the_agent_runs() {
    let (client, state) = fake_api::start(Pods::Fails("git-gate"), Proxy::Follows);
    let (_, error) = failed_up(client).await;
    assert!(
        matches!(&error, Error::ServiceNotRunning { role, .. } if role == "git-gate"),
        "{error:?}"
    );
    let state = state.lock().unwrap();
    assert!(state.objects.is_empty());
    let agent_posts = state.log.iter().filter(|w| w.ends_with("/pods")).count();
    assert_eq!(agent_posts, 3, "only the sidecars were created");
}

#[tokio::test]
async fn pods_that_never_get_ready_time_out_and_are_removed() {
    let (client, state) = fake_api::start(Pods::NeverReady, Proxy::Follows);
    let (_, error) = failed_up(client).await;
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert!(state.lock().unwrap().objects.is_empty());
}

#[tokio::test]
async fn an_interrupted_launch_removes_what_it_made() {
    let (client, state) = fake_api::start(Pods::Ready, Proxy::Follows);
    let plan = full_plan();
    let materials = Materials::preview(&plan);
    let calls = Cell::new(0);
    let interrupted = || {
        calls.set(calls.get() + 1);
        calls.get() > 5
    };
    let error = Cluster::new(client)
        .up(
            launch(&plan, &materials),
            &mut RecordedProgress::default(),
            &interrupted,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Interrupted), "{error:?}");
    assert!(state.lock().unwrap().objects.is_empty());
}

#[tokio::test]
async fn a_taken_namespace_is_a_conflict_and_is_left_alone() {
    let (client, state) = fake_api::start(Pods::Ready, Proxy::Follows);
    let plan = full_plan();
    let materials = Materials::preview(&plan);
    let cluster = Cluster::new(client);
    cluster
        .up(
            launch(&plan, &materials),
            &mut RecordedProgress::default(),
            &never,
        )
        .await
        .unwrap();
    let before = state.lock().unwrap().objects.len();
    let error = cluster
        .up(
            launch(&plan, &materials),
            &mut RecordedProgress::default(),
            &never,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::NameConflict { name } if *name == ns_of(&plan)),
        "{error:?}"
    );
    let state = state.lock().unwrap();
    assert_eq!(state.objects.len(), before, "the other bottle was touched");
    assert!(!state.log.iter().any(|w| w.starts_with("DELETE")));
}

fn policy_text(state: &fake_api::State, ns: &str) -> String {
    state.objects[&format!("/api/v1/namespaces/{ns}/configmaps/egress-policy")]["data"]
        ["policy.json"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_policy_change_is_confirmed_by_the_proxy_and_shown_to_the_agent() {
    let (cluster, state, plan, ns) = running(Proxy::Follows).await;
    let change = PolicyChange::Allow {
        host: "docs.rs".into(),
        port: Some(443),
        methods: None,
    };
    let version = cluster
        .apply_egress(
            plan.slug.as_str(),
            &change,
            Duration::from_millis(300),
            Duration::from_millis(10),
        )
        .await
        .unwrap();
    {
        let state_now = state.lock().unwrap();
        let text = policy_text(&state_now, &ns);
        assert_eq!(version, fake_api::version_of(&text));
        assert!(text.contains("\"docs.rs\""));
        let view = state_now.objects[&format!("/api/v1/namespaces/{ns}/configmaps/supervise")]["data"]
            ["policy-view.json"]
            .as_str()
            .unwrap();
        let view: Value = serde_json::from_str(view).unwrap();
        assert_eq!(view["version"], version);
        assert!(
            view["allow"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["host"] == "docs.rs")
        );
    }

    // The same change again is refused before anything is written.
    let writes = state.lock().unwrap().writes().len();
    let again = cluster
        .apply_egress(
            plan.slug.as_str(),
            &change,
            Duration::from_millis(300),
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
    assert!(matches!(again, Error::AlreadyAllowed { .. }), "{again:?}");
    assert_eq!(state.lock().unwrap().writes().len(), writes);
}

#[tokio::test]
async fn a_policy_the_proxy_never_runs_is_rolled_back() {
    let (cluster, state, plan, ns) = running(Proxy::Stuck).await;
    let before = policy_text(&state.lock().unwrap(), &ns);
    let error = cluster
        .apply_egress(
            plan.slug.as_str(),
            &PolicyChange::Allow {
                host: "docs.rs".into(),
                port: None,
                methods: None,
            },
            Duration::from_millis(100),
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    let state = state.lock().unwrap();
    assert_eq!(
        policy_text(&state, &ns),
        before,
        "the unconfirmed policy stayed"
    );
    let puts = state
        .writes()
        .iter()
        .filter(|w| w.starts_with("PUT "))
        .count();
    assert_eq!(puts, 2, "the change, then the rollback");
}

#[tokio::test]
async fn bottles_are_listed_collected_and_removed_by_label() {
    let (cluster, state, plan, ns) = running(Proxy::Follows).await;
    // Someone else's namespace is never listed.
    state.lock().unwrap().objects.insert(
        "/api/v1/namespaces/bot-bottle-not-ours".into(),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "bot-bottle-not-ours", "labels": {}}}),
    );
    let bottles = cluster.list().await.unwrap();
    assert_eq!(bottles.len(), 1);
    let bottle = &bottles[0];
    assert_eq!(bottle.slug, plan.slug.as_str());
    assert_eq!(bottle.agent.as_deref(), Some(plan.agent.name.as_str()));
    assert!(bottle.ready && bottle.running(), "{bottle:?}");
    assert_eq!(bottle.services.len(), 4);

    // A running bottle is not garbage, however old.
    let far_future = 4_000_000_000;
    assert!(
        cluster
            .gc(far_future, false)
            .await
            .unwrap()
            .garbage
            .is_empty()
    );

    // A launch that never finished is garbage only after the grace period.
    state
        .lock()
        .unwrap()
        .objects
        .get_mut(&format!("/api/v1/namespaces/{ns}"))
        .unwrap()["metadata"]["annotations"]["dev.bot-bottle.ready"] = "false".into();
    let created = 1_796_119_200; // 2026-12-01T10:00:00Z
    assert!(
        cluster
            .gc(created + 60, false)
            .await
            .unwrap()
            .garbage
            .is_empty()
    );
    let report = cluster.gc(created + 601, true).await.unwrap();
    assert_eq!(report.garbage.len(), 1);
    assert_eq!(report.garbage[0].reason, GarbageReason::Orphaned);
    assert!(
        state
            .lock()
            .unwrap()
            .objects
            .contains_key(&format!("/api/v1/namespaces/{ns}")),
        "a dry run removed"
    );
    cluster.gc(created + 601, false).await.unwrap();
    assert!(cluster.list().await.unwrap().is_empty());

    let error = cluster.down(plan.slug.as_str()).await.unwrap_err();
    assert!(matches!(error, Error::UnknownBottle { .. }), "{error:?}");
}

#[tokio::test]
async fn logs_come_from_every_pod_and_a_missing_pod_is_skipped() {
    let (cluster, state, plan, ns) = running(Proxy::Follows).await;
    state
        .lock()
        .unwrap()
        .objects
        .remove(&format!("/api/v1/namespaces/{ns}/pods/supervise"));
    let mut lines = Vec::new();
    cluster
        .logs(plan.slug.as_str(), &mut |role, line| {
            lines.push(format!("{role}: {line}"))
        })
        .await
        .unwrap();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert!(lines[0].starts_with("egress: "));
    assert!(!lines.iter().any(|l| l.starts_with("supervise: ")));

    // A pod that prints a credential shows it redacted.
    let token = plan.egress.routes[0].token.expose().to_owned();
    state.lock().unwrap().log_text = Some(format!("env: TOKEN={token}\n"));
    let mut lines = Vec::new();
    cluster
        .logs(plan.slug.as_str(), &mut |_, line| {
            lines.push(line.to_owned())
        })
        .await
        .unwrap();
    assert!(!lines.is_empty());
    for line in &lines {
        assert_eq!(line, "env: TOKEN=<redacted>");
    }
}
