//! `bottle render`: deterministic, touches nothing, prints no secret.

use crate::fixtures::{SENTINELS, bottle, relative, valid_fixtures};

#[test]
fn render_is_deterministic_and_touches_nothing() {
    let home = tempfile::tempdir().unwrap();
    let render = || {
        bottle()
            .env("HOME", home.path())
            .env("XDG_STATE_HOME", home.path().join("state"))
            .args(["render", "implementer", "-f", "examples/claude/bottle.yaml"])
            .output()
            .unwrap()
    };
    let (first, second) = (render(), render());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(first.stdout, second.stdout);
    let yaml = String::from_utf8(first.stdout).unwrap();
    assert!(yaml.starts_with("services:\n"), "{yaml}");
    // The example works as shipped: no SSH key needed (its git block is commented
    // out) and its routes are optional.
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(!stderr.contains("does not exist"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(home.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "render wrote into the home or state dir: {left:?}"
    );
}

#[test]
fn render_prints_no_secret_for_any_fixture() {
    for path in valid_fixtures() {
        let source = std::fs::read_to_string(&path).unwrap();
        let manifest = plan::parse_manifest(&source).unwrap();
        for (agent, backend) in manifest
            .agents
            .keys()
            .flat_map(|agent| [(agent, "docker"), (agent, "k8s")])
        {
            let output = bottle()
                .args(["render", &agent.value, "-f", &relative(&path)])
                .args(["--backend", backend])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let yaml = String::from_utf8(output.stdout).unwrap();
            for (name, secret) in SENTINELS {
                assert!(
                    !yaml.contains(secret),
                    "{name} leaked by render --backend {backend} {}",
                    agent.value
                );
            }
            assert!(!yaml.contains("fixture-db-password"));
        }
    }
}

#[test]
fn render_for_kubernetes_prints_the_objects_of_one_namespace() {
    let output = bottle()
        .args(["render", "implementer", "-f", "examples/claude/bottle.yaml"])
        .args(["--backend", "k8s"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = String::from_utf8(output.stdout).unwrap();
    assert!(
        yaml.starts_with("---\napiVersion: v1\nkind: Namespace\n"),
        "{yaml}"
    );
    for kind in ["NetworkPolicy", "Secret", "ConfigMap", "Service", "Pod"] {
        assert!(yaml.contains(&format!("\nkind: {kind}\n")), "no {kind}");
    }
    assert!(!yaml.contains("services:\n  agent:"), "a compose file");
}

#[test]
fn render_of_an_invalid_manifest_fails() {
    let output = bottle()
        .args(["render", "dev", "-f", "fixtures/invalid/bad-values.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
}

#[test]
fn probe_reports_unreachable_health_endpoints() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for reply in [
            "HTTP/1.1 200 OK\r\n\r\nok",
            "HTTP/1.1 503 Service Unavailable\r\n\r\n",
        ] {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "the probe closed before finishing its request");
                request.extend_from_slice(&buf[..n]);
            }
            assert!(request.starts_with(b"GET /healthz HTTP/1.1\r\n"));
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    let url = format!("http://127.0.0.1:{port}/healthz");
    bottle().args(["sidecar", "probe", &url]).assert().success();
    bottle().args(["sidecar", "probe", &url]).assert().code(1);
    server.join().unwrap();
    drop(std::net::TcpListener::bind(("127.0.0.1", port)));
    bottle().args(["sidecar", "probe", &url]).assert().code(1);
}
