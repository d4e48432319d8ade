//! Clone time of a 10k-commit repository through the gate versus straight
//! from the same sshd, both on loopback. `cargo bench -p git-gate`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

#[path = "../tests/it/support.rs"]
#[allow(dead_code)]
mod support;

use support::{RunningGate, SshUpstream, git_ok, sshd_available};

const COMMITS: usize = 10_000;

fn main() {
    if !sshd_available() {
        eprintln!("clone_time: /usr/sbin/sshd is missing (apt-get install openssh-server)");
        std::process::exit(1);
    }
    let upstream = SshUpstream::start();
    let repo = upstream.dir.path().join("big.git");
    git_ok(
        upstream.dir.path(),
        &[
            "init",
            "--bare",
            "--quiet",
            "-b",
            "main",
            repo.to_str().unwrap(),
        ],
    );
    fast_import(&repo, COMMITS);
    let gate = RunningGate::start(vec![upstream.upstream_config("big", &repo)]);
    let scratch = tempfile::tempdir().unwrap();

    let started = Instant::now();
    let direct = scratch.path().join("direct");
    let output = Command::new("git")
        .args(["clone", "--quiet", "--bare", &upstream.url(&repo)])
        .arg(&direct)
        .env("GIT_SSH_COMMAND", upstream.direct_ssh_command())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let direct_time = started.elapsed();

    let mut gate_times = Vec::new();
    for attempt in ["cold mirror", "warm mirror"] {
        let started = Instant::now();
        let target = scratch.path().join(attempt.replace(' ', "-"));
        git_ok(
            scratch.path(),
            &[
                "clone",
                "--quiet",
                "--bare",
                &gate.url("big"),
                target.to_str().unwrap(),
            ],
        );
        gate_times.push((attempt, started.elapsed()));
        assert_eq!(
            git_ok(&target, &["rev-list", "--count", "main"]).trim(),
            COMMITS.to_string()
        );
    }
    println!("clone of {COMMITS} commits, direct over ssh: {direct_time:.2?}");
    for (attempt, time) in gate_times {
        println!("clone of {COMMITS} commits, through the gate ({attempt}): {time:.2?}");
    }
}

/// Writes `commits` linear commits onto `main` with `git fast-import`.
fn fast_import(repo: &std::path::Path, commits: usize) {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = std::io::BufWriter::new(child.stdin.take().unwrap());
    for n in 1..=commits {
        let message = format!("commit {n}\n");
        let content = format!("line {n}\n");
        write!(
            stream,
            "commit refs/heads/main\nmark :{n}\ncommitter Bench <bench@example.invalid> {} +0000\n\
             data {}\n{message}",
            1_700_000_000 + n,
            message.len()
        )
        .unwrap();
        if n > 1 {
            writeln!(stream, "from :{}", n - 1).unwrap();
        }
        write!(
            stream,
            "M 644 inline file-{}.txt\ndata {}\n{content}\n",
            n % 100,
            content.len()
        )
        .unwrap();
    }
    drop(stream);
    assert!(child.wait().unwrap().success());
}
