//! The seam's `Backend` on the stand-in API server: the same calls the CLI makes for
//! Docker start, change, list and remove a bottle on a cluster, and what a cluster
//! cannot do yet is a typed refusal that says what to do instead.

use std::time::Duration;

use backend_api::{Backend, Error, PolicyChange, RecordedProgress, UpRequest};
use backend_k8s::K8sBottles;
use plan::BottlePlan;

use crate::fake_api::{self, Pods, Proxy};
use crate::valid_plans;

fn plan_named(fixture: &str) -> BottlePlan {
    valid_plans()
        .into_iter()
        .find(|(name, _)| name == fixture)
        .map(|(_, mut plans)| plans.remove(0))
        .unwrap()
}

fn request(plan: BottlePlan) -> UpRequest {
    UpRequest {
        plan,
        manifest: "/fixtures/valid/x.yaml".into(),
        manifest_sha256: "0".repeat(64),
        sidecar_image: "registry.example/bot-bottle/sidecar:1".into(),
        sidecar_user: "1000:1000".into(),
        ready_timeout: Duration::from_secs(5),
        now_unix: 1_796_119_200,
        launcher_pid: 1,
        testing: Default::default(),
    }
}

/// A backend on a fresh stand-in server (served from its own runtime's thread, as
/// the real API server is from elsewhere).
fn backend(
    server: &tokio::runtime::Runtime,
) -> (
    K8sBottles,
    std::sync::Arc<std::sync::Mutex<fake_api::State>>,
) {
    let (client, state) = server.block_on(async { fake_api::start(Pods::Ready, Proxy::Follows) });
    let backend = K8sBottles::with_client(
        K8sBottles::new_runtime().unwrap(),
        client,
        Some("registry.example/bot-bottle/sidecar:1".into()),
    );
    (backend, state)
}

fn server() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_bottle_runs_changes_and_goes_through_the_seam() {
    let server = server();
    let (backend, state) = backend(&server);
    let backend: &dyn Backend = &backend;
    assert_eq!(backend.name(), "kubernetes");
    let sidecar = backend.prepare(&mut RecordedProgress::default()).unwrap();

    // The git gate's key is read from the host into its Secret, nowhere else.
    let mut plan = plan_named("git-upstreams");
    let dir = tempfile::tempdir().unwrap();
    let (key, hosts) = (dir.path().join("id"), dir.path().join("known_hosts"));
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nKEYSENTINEL\n").unwrap();
    std::fs::write(&hosts, "github.com ssh-ed25519 AAAA\n").unwrap();
    for upstream in &mut plan.git_gate.upstreams {
        upstream.key_path = key.clone();
        upstream.known_hosts_path = hosts.clone();
    }
    let mut up = request(plan.clone());
    up.sidecar_image = sidecar;
    let attached = backend
        .up(&up, &mut RecordedProgress::default(), &|| false)
        .unwrap();
    assert_eq!(attached.slug, plan.slug.as_str());
    {
        let state = state.lock().unwrap();
        for (path, object) in &state.objects {
            let holds_key = fake_api::readable(object).contains("KEYSENTINEL");
            assert_eq!(
                holds_key,
                path.ends_with("/secrets/git-gate-keys"),
                "{path}"
            );
        }
        let ca = &state.objects[&format!(
            "/api/v1/namespaces/{}/secrets/egress-ca",
            backend_k8s::names::namespace(plan.slug.as_str())
        )];
        assert!(fake_api::readable(ca).contains("PRIVATE KEY"));
    }

    let listed = backend.find(plan.slug.as_str()).unwrap();
    assert!(listed.ready && listed.running());
    let version = backend
        .apply_egress(
            plan.slug.as_str(),
            &PolicyChange::Allow {
                host: "docs.rs".into(),
                port: None,
                methods: None,
            },
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(version.len(), 64);
    let mut lines = 0;
    backend
        .logs(plan.slug.as_str(), false, &mut |_, _| lines += 1)
        .unwrap();
    assert!(lines > 0);
    assert!(backend.down(plan.slug.as_str()).unwrap().is_empty());
    assert!(backend.list().unwrap().is_empty());
    assert!(matches!(
        backend.find(plan.slug.as_str()),
        Err(Error::UnknownBottle { .. })
    ));
}

#[test]
fn what_a_cluster_cannot_do_yet_is_refused_with_what_to_do_instead() {
    let server = server();
    let (backend, state) = backend(&server);
    // An image built on this host cannot be pulled by a cluster.
    let built = valid_plans()
        .into_iter()
        .flat_map(|(_, plans)| plans)
        .find(|plan| matches!(plan.image, plan::ImagePlan::Build { .. }))
        .expect("a fixture that builds its image");
    let error = backend
        .up(&request(built), &mut RecordedProgress::default(), &|| false)
        .unwrap_err();
    assert!(
        matches!(&error, Error::Unsupported(why) if why.contains("push it")),
        "{error}"
    );
    assert!(
        state.lock().unwrap().log.is_empty(),
        "the cluster was called"
    );

    for error in [
        backend.requests(None).unwrap_err(),
        backend.decide("abc", true, None).unwrap_err(),
        backend.logs("x-000000", true, &mut |_, _| {}).unwrap_err(),
    ] {
        assert!(matches!(error, Error::Unsupported(_)), "{error}");
    }
    let without_image = K8sBottles::with_client(
        K8sBottles::new_runtime().unwrap(),
        server.block_on(async { fake_api::start(Pods::Ready, Proxy::Follows).0 }),
        None,
    );
    let error = without_image
        .prepare(&mut RecordedProgress::default())
        .unwrap_err();
    assert!(matches!(&error, Error::Unsupported(why) if why.contains("BOT_BOTTLE_SIDECAR_IMAGE")));
}
