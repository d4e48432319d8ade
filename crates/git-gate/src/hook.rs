//! The pre-receive hook and its conversation with the gate process.
//!
//! Why a relay: the policy, the upstream push and the audit log live in the
//! gate process (Rust, tested, one config), but git only asks a hook. So
//! each mirror gets a tiny `sh` hook that forwards its input to the gate
//! through a named pipe and relays the gate's verdict through another. The
//! gate creates both pipes per push in a private temporary directory and
//! tells receive-pack where they are (`GIT_GATE_HOOK_DIR`); a receive-pack
//! not started by the gate finds no pipes and the hook refuses the push.
//! This needs only `sh` and `cat` in the image and does not depend on how
//! the gate binary is named or dispatched.
//!
//! Wire format, request (hook -> gate): `quarantine PATH`, then git's
//! `OLD NEW REF` lines, then `end`. Reply (gate -> hook): message lines the
//! hook prints on stderr (the agent sees them as `remote:` lines), each
//! starting `git-gate:`, and finally `verdict accept` or `verdict refuse`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;

use crate::Error;
use crate::policy::RefUpdate;

/// Environment variable naming the per-push pipe directory.
pub const HOOK_DIR_ENV: &str = "GIT_GATE_HOOK_DIR";

/// The hook script installed into every mirror.
pub const PRE_RECEIVE_SCRIPT: &str = r#"#!/bin/sh
# Installed by git-gate; rewritten on every start. Hands the pushed ref
# updates to the gate process and relays its verdict (see git-gate's hook.rs).
if [ -z "$GIT_GATE_HOOK_DIR" ] || [ ! -p "$GIT_GATE_HOOK_DIR/request" ]; then
  echo "git-gate: this mirror accepts pushes only through the gate" >&2
  exit 1
fi
{
  printf 'quarantine %s\n' "$GIT_QUARANTINE_PATH"
  cat
  printf 'end\n'
} > "$GIT_GATE_HOOK_DIR/request" || exit 1
verdict=refuse
while IFS= read -r line; do
  case "$line" in
    'verdict accept') verdict=accept ;;
    'verdict refuse') verdict=refuse ;;
    *) printf '%s\n' "$line" >&2 ;;
  esac
done < "$GIT_GATE_HOOK_DIR/reply"
[ "$verdict" = accept ]
"#;

/// How long the gate waits for the hook to open the reply pipe after it
/// has sent its request (it does so immediately; this only bounds a crash).
const REPLY_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes the pre-receive hook into a mirror (mode 0755).
pub fn install(mirror: &Path) -> Result<(), Error> {
    let hooks = mirror.join("hooks");
    let path = hooks.join("pre-receive");
    let error = |source| Error::PrepareMirror {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&hooks).map_err(error)?;
    std::fs::write(&path, PRE_RECEIVE_SCRIPT).map_err(error)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(error)?;
    Ok(())
}

/// What the hook reported for one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRequest {
    /// Where receive-pack keeps the pushed objects until it accepts them.
    pub quarantine: Option<PathBuf>,
    /// The ref updates, in git's order.
    pub updates: Vec<RefUpdate>,
    /// Lines that did not parse (the push is refused if any).
    pub malformed: Vec<String>,
}

/// The gate's side of the two pipes for one receive-pack run.
#[derive(Debug)]
pub struct HookChannel {
    dir: tempfile::TempDir,
    request: BufReader<pipe::Receiver>,
}

impl HookChannel {
    /// Creates the private pipe directory and opens the request pipe, so the
    /// hook's write never blocks on a missing reader.
    pub async fn create() -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("git-gate-hook-")
            .tempdir()
            .map_err(|source| Error::HookExchange {
                path: std::env::temp_dir(),
                source,
            })?;
        let request_path = dir.path().join("request");
        let mut mkfifo = tokio::process::Command::new("mkfifo");
        mkfifo
            .args(["-m", "600"])
            .arg(&request_path)
            .arg(dir.path().join("reply"));
        let status = mkfifo.status().await.map_err(|source| Error::Spawn {
            command: crate::git::describe(&mkfifo),
            source,
        })?;
        if !status.success() {
            return Err(Error::HookExchange {
                path: dir.path().to_path_buf(),
                source: std::io::Error::other(format!("mkfifo exited with {status}")),
            });
        }
        // Read-write: the pipe never reports end-of-file between writers;
        // the request ends at its `end` line instead.
        let request = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&request_path)
            .map_err(|source| Error::HookExchange {
                path: request_path,
                source,
            })?;
        Ok(Self {
            dir,
            request: BufReader::new(request),
        })
    }

    /// The directory to pass to receive-pack as `GIT_GATE_HOOK_DIR`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits for the hook's request (receive-pack runs the hook only when
    /// the push carries ref updates).
    pub async fn receive(&mut self) -> Result<HookRequest, Error> {
        let mut request = HookRequest {
            quarantine: None,
            updates: Vec::new(),
            malformed: Vec::new(),
        };
        let mut line = String::new();
        loop {
            line.clear();
            let read = self
                .request
                .read_line(&mut line)
                .await
                .map_err(|source| self.exchange_error(source))?;
            let text = line.trim_end_matches('\n');
            if read == 0 || text == "end" {
                return Ok(request);
            }
            if let Some(path) = text.strip_prefix("quarantine ") {
                request.quarantine = (!path.is_empty()).then(|| PathBuf::from(path));
            } else if text == "quarantine" {
                request.quarantine = None;
            } else if let Some(update) = RefUpdate::parse(text) {
                request.updates.push(update);
            } else {
                request.malformed.push(text.to_owned());
            }
        }
    }

    /// Sends the messages and the verdict to the waiting hook.
    pub async fn reply(&self, messages: &[String], accept: bool) -> Result<(), Error> {
        let reply_path = self.dir.path().join("reply");
        let mut sender = self.open_reply(&reply_path).await?;
        let mut text = String::new();
        for message in messages {
            for line in message.lines() {
                // Every relayed line carries the prefix, so none can pose as a verdict.
                if !line.starts_with("git-gate:") {
                    text.push_str("git-gate: ");
                }
                text.push_str(line);
                text.push('\n');
            }
        }
        text.push_str(if accept {
            "verdict accept\n"
        } else {
            "verdict refuse\n"
        });
        sender
            .write_all(text.as_bytes())
            .await
            .map_err(|source| self.exchange_error(source))?;
        sender
            .flush()
            .await
            .map_err(|source| self.exchange_error(source))
    }

    async fn open_reply(&self, reply_path: &Path) -> Result<pipe::Sender, Error> {
        let deadline = tokio::time::Instant::now() + REPLY_OPEN_TIMEOUT;
        loop {
            match pipe::OpenOptions::new().open_sender(reply_path) {
                Ok(sender) => return Ok(sender),
                // ENXIO: the hook has not opened its end yet.
                Err(error)
                    if error.raw_os_error() == Some(6)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(source) => return Err(self.exchange_error(source)),
            }
        }
    }

    fn exchange_error(&self, source: std::io::Error) -> Error {
        Error::HookExchange {
            path: self.dir.path().to_path_buf(),
            source,
        }
    }
}
