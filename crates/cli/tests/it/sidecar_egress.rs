//! `bottle sidecar egress` as the engine runs it: what reaches stdout (the engine's
//! log of the sidecar) and what reaches the audit file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;

/// The sidecar, killed when the test ends however it ends.
struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback HTTP server answering every request with 200 until dropped.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

/// One request through the proxy; the status code.
fn request(proxy: &str, target: &str) -> u16 {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

fn audit_actions(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["event"] == "http")
        .map(|line| {
            (
                line["action"].as_str().unwrap_or("").to_owned(),
                line["host"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// With `audit_stdout: notable` (as Docker bottles run it), a request that went
/// through is in the audit file only, a denial in both: the engine does not log
/// every request a second time, and denials do not roll out of its capped log.
#[test]
fn notable_stdout_leaves_routine_requests_to_the_audit_file() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ca = bottle_ca::mint_ca("t-000000", now).unwrap();
    std::fs::write(dir.path().join("ca-cert.pem"), ca.cert_pem).unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), ca.key_pem).unwrap();
    let port = upstream();
    let policy = serde_json::json!({
        "bottle_slug": "t-000000",
        "listen": "127.0.0.1:0",
        "audit_log": "audit.jsonl",
        "audit_stdout": "notable",
        "allow": [{"host": "127.0.0.1", "ports": [port]}],
        "ssrf": {"enabled": true, "exempt_cidrs": ["127.0.0.1/32"]},
    });
    std::fs::write(dir.path().join("policy.json"), policy.to_string()).unwrap();
    let mut child = Command::cargo_bin("bottle")
        .unwrap()
        .args(["sidecar", "egress", "--config"])
        .arg(dir.path())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut sidecar = Sidecar(child);
    let mut proxy = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("egress: listening on ") {
            proxy = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let proxy = proxy.expect("the sidecar reported no address");

    assert_eq!(request(&proxy, &format!("http://127.0.0.1:{port}/ok")), 200);
    assert_eq!(request(&proxy, "http://denied.test/"), 403);
    // It serves on one shard thread per CPU (`egress::shard`), named for `top -H`.
    let shards = std::fs::read_dir(format!("/proc/{}/task", sidecar.0.id()))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("egress-shard-"))
        .count();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(shards, cpus.min(16), "one shard thread per CPU");

    // SIGTERM: the sidecar ends and its stdout closes.
    Command::new("kill")
        .arg(sidecar.0.id().to_string())
        .status()
        .unwrap();
    let mut printed = String::new();
    BufReader::new(stdout).read_to_string(&mut printed).unwrap();
    sidecar.0.wait().unwrap();

    let file = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let allowed = ("allow".to_owned(), "127.0.0.1".to_owned());
    let denied = ("deny".to_owned(), "denied.test".to_owned());
    assert_eq!(
        audit_actions(&file),
        [allowed, denied.clone()],
        "the file has every request:\n{file}"
    );
    assert_eq!(
        audit_actions(&printed),
        [denied],
        "stdout has the denial only:\n{printed}"
    );
}
