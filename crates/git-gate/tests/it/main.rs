//! Integration tests of the git gate against a real sshd upstream on
//! loopback, with the real git client playing the agent.

mod support;

use std::io::Write;
use std::path::Path;

use support::{
    RunningGate, SshUpstream, clone_through, commit_file, git, git_ok, ref_in, sshd_available,
    transcript,
};

/// Starts sshd with one repository `project` and a gate in front of it.
fn project_setup(
    configure: impl FnOnce(&mut git_gate::UpstreamConfig),
) -> (SshUpstream, std::path::PathBuf, RunningGate) {
    let upstream = SshUpstream::start();
    let repo = upstream.create_repo("project");
    let mut config = upstream.upstream_config("project", &repo);
    configure(&mut config);
    let gate = RunningGate::start(vec![config]);
    (upstream, repo, gate)
}

#[test]
fn clone_fetch_and_allowed_push_reach_the_upstream() {
    if !sshd_available() {
        return;
    }
    let (upstream, repo, gate) = project_setup(|_| {});
    let scratch = tempfile::tempdir().unwrap();

    let work = clone_through(&gate, "project", scratch.path());
    assert_eq!(
        std::fs::read_to_string(work.join("README")).unwrap(),
        "hello from upstream\n"
    );
    assert_eq!(git_ok(&work, &["branch", "--show-current"]).trim(), "main");
    let partial = scratch.path().join("partial");
    git_ok(
        scratch.path(),
        &[
            "clone",
            "--quiet",
            "--filter=blob:none",
            &gate.url("project"),
            partial.to_str().unwrap(),
        ],
    );
    assert_eq!(
        git_ok(&partial, &["config", "remote.origin.promisor"]).trim(),
        "true"
    );

    let pushed = commit_file(&work, "agent.txt", "work\n", "agent work");
    let output = git(&work, &["push", "origin", "HEAD:refs/heads/agent/feature"]);
    assert!(output.status.success(), "{}", transcript(&output));
    assert!(
        transcript(&output).contains("git-gate: refs/heads/agent/feature: pushed"),
        "{}",
        transcript(&output)
    );
    assert_eq!(
        ref_in(&repo, "refs/heads/agent/feature"),
        Some(pushed.clone())
    );
    assert_eq!(
        ref_in(&gate.mirror("project"), "refs/heads/agent/feature"),
        Some(pushed.clone())
    );

    // The upstream moves on its own; a fetch through the gate sees it.
    let other = upstream.dir.path().join("other");
    git_ok(
        upstream.dir.path(),
        &[
            "clone",
            "--quiet",
            repo.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    let upstream_commit = commit_file(&other, "upstream.txt", "news\n", "upstream work");
    git_ok(&other, &["push", "--quiet", "origin", "main"]);
    git_ok(&work, &["fetch", "--quiet", "origin"]);
    assert_eq!(
        git_ok(&work, &["rev-parse", "origin/main"]).trim(),
        upstream_commit
    );

    let entries = gate.audit_entries();
    let push = entries
        .iter()
        .find(|e| e["operation"] == "push")
        .expect("push audited");
    assert_eq!(push["result"], "ok");
    assert_eq!(push["upstream"], "project");
    assert_eq!(push["refs"][0]["ref"], "refs/heads/agent/feature");
    assert_eq!(push["refs"][0]["new"], pushed.as_str());
    assert_eq!(push["refs"][0]["old"], serde_json::Value::Null);
    let fetches: Vec<_> = entries
        .iter()
        .filter(|e| e["operation"] == "fetch")
        .collect();
    assert!(fetches.len() >= 2, "{entries:?}");
    assert!(
        fetches.iter().any(|e| e["refs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ref"] == "refs/heads/main" && r["new"] == upstream_commit.as_str())),
        "the refresh that brought the upstream commit is audited: {entries:?}"
    );
}

#[test]
fn forbidden_ref_force_push_and_delete_are_refused_naming_the_rule() {
    if !sshd_available() {
        return;
    }
    let (_upstream, repo, gate) = project_setup(|_| {});
    let scratch = tempfile::tempdir().unwrap();
    let work = clone_through(&gate, "project", scratch.path());
    let main_before = ref_in(&repo, "refs/heads/main").unwrap();

    // A ref outside push_refs.
    commit_file(&work, "a.txt", "a\n", "to main");
    let output = git(&work, &["push", "origin", "HEAD:refs/heads/main"]);
    let text = transcript(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(
            "remote: git-gate: refs/heads/main: push refused: not in push_refs [refs/heads/agent/*]"
        ),
        "{text}"
    );
    assert_eq!(ref_in(&repo, "refs/heads/main"), Some(main_before.clone()));
    assert_eq!(
        ref_in(&gate.mirror("project"), "refs/heads/main"),
        Some(main_before.clone())
    );

    // One refused ref refuses the whole push: the allowed ref does not land either.
    let output = git(
        &work,
        &[
            "push",
            "origin",
            "HEAD:refs/heads/agent/y",
            "HEAD:refs/heads/main",
        ],
    );
    let text = transcript(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("refs/heads/agent/y: allowed, but not pushed"),
        "{text}"
    );
    assert_eq!(ref_in(&repo, "refs/heads/agent/y"), None);

    // Create an allowed branch, then try to rewrite it.
    let first = git_ok(&work, &["rev-parse", "HEAD"]).trim().to_owned();
    git_ok(
        &work,
        &["push", "--quiet", "origin", "HEAD:refs/heads/agent/x"],
    );
    assert_eq!(ref_in(&repo, "refs/heads/agent/x"), Some(first.clone()));
    git_ok(&work, &["commit", "--quiet", "--amend", "-m", "rewritten"]);
    let output = git(
        &work,
        &["push", "--force", "origin", "HEAD:refs/heads/agent/x"],
    );
    let text = transcript(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("remote: git-gate: refs/heads/agent/x: force push refused")
            && text.contains("allow_force_push is false"),
        "{text}"
    );
    assert_eq!(ref_in(&repo, "refs/heads/agent/x"), Some(first.clone()));

    // Delete it.
    let output = git(&work, &["push", "origin", ":refs/heads/agent/x"]);
    let text = transcript(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(
            "remote: git-gate: refs/heads/agent/x: delete refused: allow_delete is false"
        ),
        "{text}"
    );
    assert_eq!(ref_in(&repo, "refs/heads/agent/x"), Some(first.clone()));
    assert_eq!(
        ref_in(&gate.mirror("project"), "refs/heads/agent/x"),
        Some(first)
    );

    let refused: Vec<_> = gate
        .audit_entries()
        .into_iter()
        .filter(|e| e["operation"] == "push" && e["result"] == "refused")
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(
        refused[0]["refs"][0]["result"]
            .as_str()
            .unwrap()
            .contains("not in push_refs")
    );
}

#[test]
fn force_push_and_delete_pass_when_the_policy_allows_them() {
    if !sshd_available() {
        return;
    }
    let (_upstream, repo, gate) = project_setup(|config| {
        config.allow_force_push = true;
        config.allow_delete = true;
    });
    let scratch = tempfile::tempdir().unwrap();
    let work = clone_through(&gate, "project", scratch.path());
    commit_file(&work, "a.txt", "a\n", "first");
    git_ok(
        &work,
        &["push", "--quiet", "origin", "HEAD:refs/heads/agent/x"],
    );
    git_ok(&work, &["commit", "--quiet", "--amend", "-m", "rewritten"]);
    let rewritten = git_ok(&work, &["rev-parse", "HEAD"]).trim().to_owned();
    git_ok(
        &work,
        &[
            "push",
            "--quiet",
            "--force",
            "origin",
            "HEAD:refs/heads/agent/x",
        ],
    );
    assert_eq!(ref_in(&repo, "refs/heads/agent/x"), Some(rewritten));
    git_ok(&work, &["push", "--quiet", "origin", ":refs/heads/agent/x"]);
    assert_eq!(ref_in(&repo, "refs/heads/agent/x"), None);
    assert_eq!(ref_in(&gate.mirror("project"), "refs/heads/agent/x"), None);
}

#[test]
fn read_only_upstream_refuses_pushes_before_any_data_is_sent() {
    if !sshd_available() {
        return;
    }
    let (_upstream, repo, gate) = project_setup(|config| config.read_only = true);
    let scratch = tempfile::tempdir().unwrap();
    let work = clone_through(&gate, "project", scratch.path());
    commit_file(&work, "a.txt", "a\n", "work");
    let output = git(&work, &["push", "origin", "HEAD:refs/heads/agent/x"]);
    let text = transcript(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("upstream project is read_only"), "{text}");
    assert_eq!(ref_in(&repo, "refs/heads/agent/x"), None);
}

#[test]
fn upstream_with_an_unknown_host_key_is_refused() {
    if !sshd_available() {
        return;
    }
    let upstream = SshUpstream::start();
    let repo = upstream.create_repo("project");
    let mut config = upstream.upstream_config("project", &repo);
    // known_hosts that lists a different key for the same address.
    let impostor = upstream.dir.path().join("impostor_key");
    support::run_ok(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&impostor),
    );
    let impostor_public = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let impostor_public: Vec<&str> = impostor_public.split_whitespace().take(2).collect();
    let wrong_known_hosts = upstream.dir.path().join("wrong_known_hosts");
    std::fs::write(
        &wrong_known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            upstream.port,
            impostor_public.join(" ")
        ),
    )
    .unwrap();
    config.known_hosts_path = wrong_known_hosts.clone();
    let mut empty_config = upstream.upstream_config("empty", &repo);
    let empty_known_hosts = upstream.dir.path().join("empty_known_hosts");
    std::fs::write(&empty_known_hosts, "").unwrap();
    empty_config.known_hosts_path = empty_known_hosts.clone();
    let gate = RunningGate::start(vec![config, empty_config]);
    let scratch = tempfile::tempdir().unwrap();

    for name in ["project", "empty"] {
        let target = scratch.path().join(name);
        let output = git(
            scratch.path(),
            &["clone", &gate.url(name), target.to_str().unwrap()],
        );
        let text = transcript(&output);
        assert!(!output.status.success(), "{text}");
        assert!(
            text.contains("remote error: git-gate: fetching from upstream")
                && text.contains("Host key verification failed"),
            "{name}: {text}"
        );
        assert_eq!(ref_in(&gate.mirror(name), "refs/heads/main"), None);
    }
    // The gate never learned the key: known_hosts files are untouched.
    assert_eq!(
        std::fs::read_to_string(&empty_known_hosts).unwrap(),
        "",
        "a new host key was accepted"
    );
    let errors = gate
        .audit_entries()
        .into_iter()
        .filter(|e| e["operation"] == "fetch" && e["result"] == "error")
        .count();
    assert_eq!(errors, 2, "{}", gate.audit());
}

#[test]
fn concurrent_pushes_end_consistent() {
    if !sshd_available() {
        return;
    }
    let (_upstream, repo, gate) = project_setup(|_| {});
    let scratch = tempfile::tempdir().unwrap();
    let first = clone_through(&gate, "project", scratch.path());
    let second = clone_through(&gate, "project", scratch.path());

    // Different branches: both land.
    let a = commit_file(&first, "a.txt", "a\n", "a");
    let b = commit_file(&second, "b.txt", "b\n", "b");
    let results = push_concurrently([
        (first.as_path(), "HEAD:refs/heads/agent/a"),
        (second.as_path(), "HEAD:refs/heads/agent/b"),
    ]);
    for output in &results {
        assert!(output.status.success(), "{}", transcript(output));
    }
    assert_eq!(ref_in(&repo, "refs/heads/agent/a"), Some(a));
    assert_eq!(ref_in(&repo, "refs/heads/agent/b"), Some(b));

    // The same branch from diverging histories: one lands, the other is
    // cleanly rejected, and upstream and mirror agree on the winner.
    let first_shared = commit_file(&first, "shared.txt", "first\n", "first wins?");
    let second_shared = commit_file(&second, "shared.txt", "second\n", "second wins?");
    let results = push_concurrently([
        (first.as_path(), "HEAD:refs/heads/agent/shared"),
        (second.as_path(), "HEAD:refs/heads/agent/shared"),
    ]);
    let succeeded: Vec<bool> = results.iter().map(|o| o.status.success()).collect();
    let transcripts: Vec<String> = results.iter().map(transcript).collect();
    assert_eq!(
        succeeded.iter().filter(|ok| **ok).count(),
        1,
        "exactly one push lands: {transcripts:#?}"
    );
    let winner = if succeeded[0] {
        &first_shared
    } else {
        &second_shared
    };
    let loser_text = &transcripts[if succeeded[0] { 1 } else { 0 }];
    assert!(
        loser_text.contains("rejected") || loser_text.contains("stale"),
        "{loser_text}"
    );
    assert_eq!(
        ref_in(&repo, "refs/heads/agent/shared").as_ref(),
        Some(winner)
    );
    assert_eq!(
        ref_in(&gate.mirror("project"), "refs/heads/agent/shared").as_ref(),
        Some(winner)
    );
}

#[test]
fn upstream_refusal_reaches_the_agent_and_the_mirror_keeps_the_upstream_state() {
    if !sshd_available() {
        return;
    }
    let (_upstream, repo, gate) = project_setup(|_| {});
    let hook = repo.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do\n  case \"$ref\" in refs/heads/agent/blocked)\n    \
         echo \"upstream policy says no to $ref\" >&2; exit 1;;\n  esac\ndone\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let work = clone_through(&gate, "project", scratch.path());
    commit_file(&work, "a.txt", "a\n", "work");

    let output = git(&work, &["push", "origin", "HEAD:refs/heads/agent/blocked"]);
    let text = transcript(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(
            "git-gate: upstream: remote: upstream policy says no to refs/heads/agent/blocked"
        ),
        "{text}"
    );
    assert!(
        text.contains("git-gate: refs/heads/agent/blocked: upstream rejected"),
        "{text}"
    );
    assert_eq!(ref_in(&repo, "refs/heads/agent/blocked"), None);
    assert_eq!(
        ref_in(&gate.mirror("project"), "refs/heads/agent/blocked"),
        None
    );
    let entries = gate.audit_entries();
    let push = entries.iter().find(|e| e["operation"] == "push").unwrap();
    assert_eq!(push["result"], "error", "{push}");

    // The same gate still pushes what the upstream accepts.
    git_ok(
        &work,
        &["push", "--quiet", "origin", "HEAD:refs/heads/agent/fine"],
    );
    assert!(ref_in(&repo, "refs/heads/agent/fine").is_some());
}

fn push_concurrently(pushes: [(&Path, &str); 2]) -> Vec<std::process::Output> {
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let handles: Vec<_> = pushes
            .iter()
            .map(|(work, refspec)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    git(work, &["push", "origin", refspec])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn key_contents_never_appear_in_audit_logs_or_responses() {
    if !sshd_available() {
        return;
    }
    let upstream = SshUpstream::start();
    let repo = upstream.create_repo("project");
    let good = upstream.upstream_config("project", &repo);
    // An upstream whose "key" is a sentinel: ssh must refuse it without
    // the gate ever echoing the file.
    const SENTINEL: &str = "GIT-GATE-SENTINEL-KEY-CONTENTS-5f1c2e";
    let sentinel_key = upstream.dir.path().join("sentinel_key");
    std::fs::write(
        &sentinel_key,
        format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{SENTINEL}\n-----END OPENSSH PRIVATE KEY-----\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &sentinel_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut bad = upstream.upstream_config("sentinel", &repo);
    bad.key_path = sentinel_key.clone();
    let gate = RunningGate::start(vec![good, bad]);
    let scratch = tempfile::tempdir().unwrap();

    let mut responses = String::new();
    let work = clone_through(&gate, "project", scratch.path());
    commit_file(&work, "a.txt", "a\n", "work");
    for refspec in ["HEAD:refs/heads/agent/ok", "HEAD:refs/heads/main"] {
        responses.push_str(&transcript(&git(&work, &["push", "origin", refspec])));
    }
    let failed = git(
        scratch.path(),
        &["clone", &gate.url("sentinel"), "sentinel-clone"],
    );
    assert!(!failed.status.success());
    responses.push_str(&transcript(&failed));
    responses.push_str(&gate.http_get("/sentinel.git/info/refs?service=git-upload-pack"));
    responses.push_str(&gate.http_get("/project.git/info/refs?service=git-receive-pack"));

    let audit = gate.audit();
    assert!(
        audit.contains("\"push\"") && audit.contains("\"error\""),
        "{audit}"
    );
    // The key path may be named; the key itself never.
    let real_key = std::fs::read_to_string(&upstream.client_key).unwrap();
    let secret_lines: Vec<&str> = real_key
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .collect();
    assert!(!secret_lines.is_empty());
    for haystack in [&audit, &responses] {
        assert!(!haystack.contains(SENTINEL), "sentinel leaked:\n{haystack}");
        for line in &secret_lines {
            assert!(!haystack.contains(line), "key material leaked:\n{haystack}");
        }
    }
    // The check above can fail: the sentinel really is in the key file.
    assert!(
        std::fs::read_to_string(&sentinel_key)
            .unwrap()
            .contains(SENTINEL)
    );
}

#[test]
fn unknown_upstream_is_404_listing_names_and_health_is_200() {
    if !sshd_available() {
        return;
    }
    let (_upstream, _repo, gate) = project_setup(|_| {});
    let response = gate.http_get("/nope.git/info/refs?service=git-upload-pack");
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        response.contains("unknown upstream \"nope\"; configured upstreams: project"),
        "{response}"
    );
    let response = gate.http_get("/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let scratch = tempfile::tempdir().unwrap();
    let output = git(scratch.path(), &["clone", &gate.url("nope"), "x"]);
    assert!(!output.status.success());
    assert!(
        transcript(&output).contains("not found"),
        "{}",
        transcript(&output)
    );
}

#[test]
fn gzip_request_bodies_are_accepted() {
    if !sshd_available() {
        return;
    }
    let (_upstream, repo, gate) = project_setup(|_| {});
    // Refresh the mirror as a client would before its POST.
    let advert = gate.http_get("/project.git/info/refs?service=git-upload-pack");
    assert!(advert.contains("# service=git-upload-pack"), "{advert}");
    let main = ref_in(&repo, "refs/heads/main").unwrap();

    let mut request = Vec::new();
    let want = format!("want {main}\n");
    request.extend_from_slice(format!("{:04x}{want}", want.len() + 4).as_bytes());
    request.extend_from_slice(b"00000009done\n");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&request).unwrap();
    let body = gzip.finish().unwrap();
    let head = format!(
        "POST /project.git/git-upload-pack HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/x-git-upload-pack-request\r\n\
         Content-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let response = gate.http_request(&head, &body);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("application/x-git-upload-pack-result"),
        "{text}"
    );
    assert!(
        text.contains("0008NAK\n") && text.contains("PACK"),
        "{text}"
    );
}

#[test]
fn large_push_streams_through_the_gate() {
    if !sshd_available() {
        return;
    }
    let (_upstream, repo, gate) = project_setup(|_| {});
    let scratch = tempfile::tempdir().unwrap();
    let work = clone_through(&gate, "project", scratch.path());
    // 4 MiB of incompressible data: larger than git's 1 MiB post buffer, so
    // the client probes first and then sends a chunked body.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(work.join("noise.bin"), &noise).unwrap();
    git_ok(&work, &["add", "noise.bin"]);
    git_ok(&work, &["commit", "--quiet", "-m", "big"]);
    let head = git_ok(&work, &["rev-parse", "HEAD"]).trim().to_owned();
    git_ok(
        &work,
        &["push", "--quiet", "origin", "HEAD:refs/heads/agent/big"],
    );
    assert_eq!(ref_in(&repo, "refs/heads/agent/big"), Some(head));
}

#[test]
fn run_serves_from_a_config_dir_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let error = git_gate::run(dir.path()).unwrap_err();
    assert!(
        matches!(error, git_gate::Error::ReadConfig { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("git-gate.json"), "{error}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("git-gate.json"),
        format!(
            r#"{{"listen": "127.0.0.1:{port}", "mirrors_dir": "{}", "upstreams": []}}"#,
            dir.path().join("mirrors").display()
        ),
    )
    .unwrap();
    let config_dir = dir.path().to_path_buf();
    let server = std::thread::spawn(move || git_gate::run(&config_dir));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "gate never answered");
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The handler is installed before the listener binds, so SIGTERM now
    // reaches run() and not the default action.
    support::run_ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", std::process::id())),
    );
    server
        .join()
        .unwrap()
        .expect("run returns Ok after SIGTERM");
}
