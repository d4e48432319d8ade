//! Policy reload: the hook, invalid policies, a real SIGHUP, and the policy
//! file watch (a Kubernetes ConfigMap update, no signal).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::*;

fn policy_allowing_denied_test(ports: &[u16]) -> serde_json::Value {
    let mut policy = standard_policy(ports, true);
    policy["allow"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"host": "late.test", "ports": ports}));
    policy["static_hosts"]["late.test"] = "127.0.0.1".into();
    policy
}

async fn get_late(proxy: std::net::SocketAddr, port: u16) -> RawResponse {
    plain_request(
        proxy,
        &format!("GET http://late.test:{port}/ HTTP/1.1\r\nHost: late.test:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn reload_swaps_a_valid_policy_and_keeps_the_old_on_an_invalid_one() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let port = upstream.port();
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[port], true));
    let proxy = dir.start().await;
    let first_version = proxy.policy_version();
    assert_eq!(get_late(proxy.local_addr(), port).await.status, 403);

    dir.write_policy(&policy_allowing_denied_test(&[port]));
    let new_version = proxy.reload().unwrap();
    let file_hash = hex::encode(Sha256::digest(std::fs::read(dir.policy_path()).unwrap()));
    assert_eq!(new_version, file_hash);
    assert_ne!(new_version, first_version);
    assert_eq!(get_late(proxy.local_addr(), port).await.status, 200);

    std::fs::write(
        dir.policy_path(),
        b"{\"bottle_slug\": \"x\", \"allow\": [{\"host\": \"*\"}]}",
    )
    .unwrap();
    let err = proxy.reload().unwrap_err().to_string();
    assert!(err.contains("allow[0]"), "{err}");
    assert_eq!(proxy.policy_version(), new_version);
    assert_eq!(get_late(proxy.local_addr(), port).await.status, 200);

    let status = plain_request(
        proxy.local_addr(),
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status.json()["policy_version"], new_version);
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("reload-failed"), "{audit}");
    assert!(
        audit.contains(&format!("policy version {new_version}")),
        "{audit}"
    );
}

/// A signal reaches the whole test process: the tests that send one take
/// turns, so a SIGHUP meant for one proxy cannot reload run()'s policy and
/// pass for its file watch.
static SIGNALS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn sighup_reloads_the_policy() {
    let _signals = SIGNALS.lock().await;
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let port = upstream.port();
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[port], true));
    let proxy = dir.start().await;
    proxy.reload_on_sighup().unwrap();
    let old_version = proxy.policy_version();
    dir.write_policy(&policy_allowing_denied_test(&[port]));
    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.policy_version() == old_version {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload the policy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get_late(proxy.local_addr(), port).await.status, 200);
}

async fn status_version(proxy: std::net::SocketAddr) -> String {
    let status = plain_request(
        proxy,
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    status.json()["policy_version"].as_str().unwrap().to_owned()
}

/// Waits (at most 10 s) until `/status` reports `version`.
async fn await_status_version(proxy: std::net::SocketAddr, version: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status_version(proxy).await != version {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy never reported policy version {version}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn audit_count(dir: &ProxyDir, needle: &str) -> usize {
    std::fs::read_to_string(dir.path().join("audit.jsonl"))
        .unwrap()
        .matches(needle)
        .count()
}

const TICK: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_configmap_update_is_picked_up_without_sighup() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let port = upstream.port();
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[port], true));
    dir.mount_as_configmap();
    let proxy = dir.start().await;
    proxy.watch_policy_file(TICK);
    assert_eq!(get_late(proxy.local_addr(), port).await.status, 403);

    let new = serde_json::to_vec(&policy_allowing_denied_test(&[port])).unwrap();
    let version = dir.configmap_update("..2026_12_01_x", &new);
    await_status_version(proxy.local_addr(), &version).await;
    assert_eq!(get_late(proxy.local_addr(), port).await.status, 200);
    assert_eq!(audit_count(&dir, &format!("policy version {version}")), 1);
}

#[tokio::test]
async fn a_bad_configmap_update_keeps_the_old_policy_until_a_good_one() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let port = upstream.port();
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[port], true));
    dir.mount_as_configmap();
    let proxy = dir.start().await;
    proxy.watch_policy_file(TICK);
    let old = proxy.policy_version();

    dir.configmap_update(
        "..2026_12_01_bad",
        b"{\"bottle_slug\": \"x\", \"allow\": [{\"host\": \"*\"}]}",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while audit_count(&dir, "reload-failed") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad file was never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(TICK * 5).await;
    assert_eq!(audit_count(&dir, "reload-failed"), 1, "reported once");
    assert_eq!(status_version(proxy.local_addr()).await, old);
    assert_eq!(get_late(proxy.local_addr(), port).await.status, 403);

    // Mid-swap the file can be missing: quietly retried, nothing changes.
    std::fs::remove_file(dir.path().join("..data")).unwrap();
    tokio::time::sleep(TICK * 3).await;
    std::os::unix::fs::symlink("..2026_12_01_bad", dir.path().join("..data")).unwrap();
    tokio::time::sleep(TICK * 3).await;
    assert_eq!(
        audit_count(&dir, "reload-failed"),
        1,
        "no report while missing"
    );
    assert_eq!(proxy.policy_version(), old);

    let good = serde_json::to_vec(&policy_allowing_denied_test(&[port])).unwrap();
    let version = dir.configmap_update("..2026_12_01_good", &good);
    await_status_version(proxy.local_addr(), &version).await;
    assert_eq!(get_late(proxy.local_addr(), port).await.status, 200);
    assert_eq!(audit_count(&dir, "reload-failed"), 1);
}

fn get_blocking(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

#[test]
fn run_serves_until_sigterm_and_reports_bad_config() {
    let _signals = SIGNALS.blocking_lock();
    let missing = egress::run(std::path::Path::new("/nonexistent/egress-config"));
    assert!(
        matches!(missing, Err(egress::Error::ReadPolicy { .. })),
        "{missing:?}"
    );

    let upstream_ca = TestCa::new("it upstream CA");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut policy = standard_policy(&[443], true);
    policy["listen"] = format!("127.0.0.1:{port}").into();
    // The process environment has no route secret; run() reads secrets from it.
    policy["routes"] = serde_json::json!([]);
    let dir = ProxyDir::new(&upstream_ca, policy.clone());
    dir.mount_as_configmap();
    let config_dir = dir.path().to_path_buf();
    let sidecar = std::thread::spawn(move || egress::run(&config_dir));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(text) = get_blocking(addr, "/healthz")
            && text.ends_with("ok\n")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run() did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let version = hex::encode(Sha256::digest(std::fs::read(dir.policy_path()).unwrap()));
    assert!(get_blocking(addr, "/status").unwrap().contains(&version));

    // run() watches the file: a ConfigMap update lands with no SIGHUP.
    policy["allow"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"host": "late.test"}));
    let new = serde_json::to_vec(&policy).unwrap();
    let new_version = dir.configmap_update("..2026_12_01_x", &new);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !get_blocking(addr, "/status").is_some_and(|s| s.contains(&new_version)) {
        assert!(
            std::time::Instant::now() < deadline,
            "run() did not pick up the changed policy file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let result = sidecar.join().unwrap();
    assert!(result.is_ok(), "{result:?}");
}
