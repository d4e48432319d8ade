//! Test harness: a real sshd on loopback serving bare repositories, the gate
//! running in-process on loopback, and the real git client as the agent.
//! Every address used here is 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use git_gate::{GateConfig, UpstreamConfig};
use tempfile::TempDir;

pub const SSHD: &str = "/usr/sbin/sshd";

/// Returns false (after a loud message) when sshd is missing outside CI;
/// in CI a missing sshd fails the test instead of hiding it.
pub fn sshd_available() -> bool {
    if Path::new(SSHD).exists() {
        return true;
    }
    let message = format!(
        "\n\n!!!!!!!! git-gate integration test SKIPPED: {SSHD} not found. \
         Install it with `apt-get install -y openssh-server`. !!!!!!!!\n\n"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}(CI must install openssh-server)");
    }
    eprintln!("{message}");
    false
}

/// A throwaway sshd on 127.0.0.1 with its own host key, one client key and
/// bare repositories under its temporary directory.
pub struct SshUpstream {
    pub dir: TempDir,
    pub port: u16,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    user: String,
    sshd: Child,
}

impl SshUpstream {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_key");
        let client_key = dir.path().join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized_keys).unwrap();
        if is_root() {
            // sshd running as root insists on its privilege separation directory.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "HostKey {host}\n\
                 AuthorizedKeysFile {auth}\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PidFile none\n\
                 LogLevel VERBOSE\n",
                host = host_key.display(),
                auth = authorized_keys.display(),
            ),
        )
        .unwrap();
        let user = String::from_utf8(run_ok(Command::new("id").arg("-un")).stdout)
            .unwrap()
            .trim()
            .to_owned();

        let port = free_port();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let sshd = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(port.to_string())
            .args(["-o", "ListenAddress=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let known_hosts = dir.path().join("known_hosts");
        let host_public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let host_public: Vec<&str> = host_public.split_whitespace().take(2).collect();
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", host_public.join(" ")),
        )
        .unwrap();
        let upstream = Self {
            dir,
            port,
            client_key,
            known_hosts,
            user,
            sshd,
        };
        upstream.wait_ready();
        upstream
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let mut banner = [0u8; 4];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd did not come up: {}", self.sshd_log());
    }

    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Creates a bare repository `NAME.git` with one commit on `main`.
    pub fn create_repo(&self, name: &str) -> PathBuf {
        let bare = self.dir.path().join(format!("{name}.git"));
        git_ok(
            self.dir.path(),
            &[
                "init",
                "--bare",
                "--quiet",
                "-b",
                "main",
                bare.to_str().unwrap(),
            ],
        );
        let work = self.dir.path().join(format!("{name}-seed"));
        git_ok(
            self.dir.path(),
            &["init", "--quiet", "-b", "main", work.to_str().unwrap()],
        );
        std::fs::write(work.join("README"), "hello from upstream\n").unwrap();
        git_ok(&work, &["add", "README"]);
        git_ok(&work, &["commit", "--quiet", "-m", "initial"]);
        git_ok(
            &work,
            &[
                "push",
                "--quiet",
                bare.to_str().unwrap(),
                "main:refs/heads/main",
            ],
        );
        bare
    }

    /// The ssh URL of a repository created by [`Self::create_repo`].
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// An upstream entry for the gate, agent allowed to push `refs/heads/agent/*`.
    pub fn upstream_config(&self, name: &str, repo: &Path) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            url: self.url(repo),
            key_path: self.client_key.clone(),
            known_hosts_path: self.known_hosts.clone(),
            push_refs: vec!["refs/heads/agent/*".into()],
            allow_force_push: false,
            allow_delete: false,
            read_only: false,
        }
    }

    /// The same connection as the gate would make, straight to sshd.
    #[allow(
        dead_code,
        reason = "used by benches/clone_time.rs, which shares this module"
    )]
    pub fn direct_ssh_command(&self) -> String {
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
             -o UserKnownHostsFile={} -o BatchMode=yes",
            self.client_key.display(),
            self.known_hosts.display()
        )
    }
}

impl Drop for SshUpstream {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

/// The gate serving on 127.0.0.1 from a background thread.
pub struct RunningGate {
    pub port: u16,
    /// Holds the config, mirrors and audit log until the gate is dropped.
    _dir: TempDir,
    pub audit_path: PathBuf,
    pub mirrors_dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), git_gate::Error>>>,
}

impl RunningGate {
    pub fn start(upstreams: Vec<UpstreamConfig>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let audit_path = dir.path().join("audit/audit.jsonl");
        let mirrors_dir = dir.path().join("mirrors");
        let config = GateConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            mirrors_dir: mirrors_dir.clone(),
            audit_log: Some(audit_path.clone()),
            upstreams,
        };
        // Round-trip through the file format the launcher writes.
        std::fs::write(
            dir.path().join("git-gate.json"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
        let config = git_gate::config::load(dir.path()).expect("config loads");

        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                git_gate::serve(config, listener, async move {
                    let _ = shutdown_rx.await;
                })
                .await
            })
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("gate reports its port");
        let gate = Self {
            port,
            _dir: dir,
            audit_path,
            mirrors_dir,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        };
        gate.wait_healthy();
        gate
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        while Instant::now() < deadline {
            if let Ok(response) = self.try_http_request(head, b"")
                && response.starts_with(b"HTTP/1.1 200")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gate did not become healthy");
    }

    /// The agent's remote URL for an upstream.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.port)
    }

    pub fn mirror(&self, name: &str) -> PathBuf {
        self.mirrors_dir.join(format!("{name}.git"))
    }

    pub fn audit(&self) -> String {
        std::fs::read_to_string(&self.audit_path).unwrap_or_default()
    }

    pub fn audit_entries(&self) -> Vec<serde_json::Value> {
        self.audit()
            .lines()
            .map(|line| serde_json::from_str(line).expect("audit lines are JSON"))
            .collect()
    }

    /// A raw HTTP/1.1 request to the gate; returns the whole response.
    pub fn try_http_request(&self, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(response)
    }

    pub fn http_request(&self, head: &str, body: &[u8]) -> Vec<u8> {
        self.try_http_request(head, body).expect("gate answers")
    }

    pub fn http_get(&self, path: &str) -> String {
        let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        String::from_utf8_lossy(&self.http_request(&head, b"")).into_owned()
    }
}

impl Drop for RunningGate {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.expect("gate thread").expect("gate serves cleanly");
            }
        }
    }
}

fn keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "git-gate-test", "-f"])
            .arg(path),
    );
}

fn is_root() -> bool {
    String::from_utf8(run_ok(Command::new("id").arg("-u")).stdout)
        .unwrap()
        .trim()
        == "0"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("command starts");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The git client as the agent runs it: no user config, no prompts.
pub fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.invalid")
        .env("GIT_COMMITTER_NAME", "Agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.invalid")
        .env_remove("GIT_DIR")
        .env_remove("GIT_SSH_COMMAND")
        .stdin(Stdio::null())
        .output()
        .expect("git starts")
}

pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let output = git(dir, args);
    assert!(
        output.status.success(),
        "git {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// git's stdout and stderr as one text, for asserting on messages.
pub fn transcript(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The id a ref has in a bare repository, None when it does not exist.
pub fn ref_in(repo: &Path, refname: &str) -> Option<String> {
    let output = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["rev-parse", "--verify", "--quiet", refname])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Clones the gate's view of an upstream into a fresh directory.
pub fn clone_through(gate: &RunningGate, name: &str, into: &Path) -> PathBuf {
    let work = into.join(format!("{name}-clone-{}", unique()));
    git_ok(
        into,
        &["clone", "--quiet", &gate.url(name), work.to_str().unwrap()],
    );
    work
}

pub fn commit_file(work: &Path, file: &str, content: &str, message: &str) -> String {
    std::fs::write(work.join(file), content).unwrap();
    git_ok(work, &["add", file]);
    git_ok(work, &["commit", "--quiet", "-m", message]);
    git_ok(work, &["rev-parse", "HEAD"]).trim().to_owned()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
