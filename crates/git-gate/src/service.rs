//! Running `git upload-pack` / `git receive-pack --stateless-rpc` for one
//! HTTP request: the request body streams into the child's stdin
//! (gunzipped on the fly when the client compressed it) and the child's
//! stdout streams back as the response body. Nothing buffers a whole pack.

use std::io::Write;
use std::process::{ExitStatus, Stdio};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use http_body_util::channel::{Channel, Sender};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};
use tokio::task::JoinHandle;

use crate::Error;
use crate::git;

/// Most stderr kept from a service child (for the log, not the agent).
const STDERR_LIMIT: usize = 64 * 1024;
/// Read size for the child's stdout.
const CHUNK: usize = 64 * 1024;

/// A git service as the HTTP path names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Fetch and clone.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl Service {
    /// Parses `git-upload-pack` / `git-receive-pack`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "git-upload-pack" => Some(Self::UploadPack),
            "git-receive-pack" => Some(Self::ReceivePack),
            _ => None,
        }
    }

    /// `git-upload-pack` / `git-receive-pack`.
    pub fn name(self) -> &'static str {
        match self {
            Self::UploadPack => "git-upload-pack",
            Self::ReceivePack => "git-receive-pack",
        }
    }

    /// The git subcommand.
    fn subcommand(self) -> &'static str {
        match self {
            Self::UploadPack => "upload-pack",
            Self::ReceivePack => "receive-pack",
        }
    }

    /// The `git upload-pack --stateless-rpc` command for a mirror.
    pub fn command(self, mirror: &std::path::Path, advertise: bool) -> Command {
        let mut command = Command::new("git");
        command
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env_remove("GIT_DIR")
            .env_remove("GIT_SSH_COMMAND")
            .arg(self.subcommand())
            .arg("--stateless-rpc");
        if advertise {
            command.arg("--advertise-refs");
        }
        command.arg(mirror).kill_on_drop(true);
        command
    }
}

/// How a service child ended.
#[derive(Debug)]
pub struct ServiceExit {
    /// Its exit status (None if waiting failed).
    pub status: Option<ExitStatus>,
    /// The start of what it printed on stderr.
    pub stderr: String,
}

impl ServiceExit {
    /// The child exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }
}

/// The request body to feed the child, and whether it is gzip-compressed.
pub struct ServiceInput {
    /// The agent's request body.
    pub body: Incoming,
    /// `Content-Encoding: gzip`.
    pub gzip: bool,
}

/// Starts the child and returns the streaming response body plus a task
/// that resolves when the child has exited and its output is drained.
/// `prefix` is sent before the child's output (the smart-HTTP header).
pub fn spawn(
    mut command: Command,
    prefix: Bytes,
    input: Option<ServiceInput>,
) -> Result<(Channel<Bytes, std::io::Error>, JoinHandle<ServiceExit>), Error> {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        command: git::describe(&command),
        source,
    })?;
    let stdin_pump = match (input, child.stdin.take()) {
        (Some(input), Some(stdin)) => Some(tokio::spawn(pump_request(input, stdin))),
        _ => None,
    };
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_task = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buffer = [0u8; 8192];
        while let Ok(read) = stderr.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            let room = STDERR_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&buffer[..read.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    });

    let (sender, body) = Channel::new(4);
    let done = tokio::spawn(async move {
        let mut sender = Some(sender);
        if !prefix.is_empty() {
            send(&mut sender, prefix).await;
        }
        let mut buffer = BytesMut::with_capacity(CHUNK);
        loop {
            buffer.reserve(CHUNK);
            match stdout.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => break,
                // Keep draining even when the agent is gone, so a push the
                // hook already forwarded still updates the mirror.
                Ok(_) => send(&mut sender, buffer.split().freeze()).await,
            }
        }
        let status = child.wait().await.ok();
        if let Some(pump) = stdin_pump {
            pump.abort();
        }
        let stderr = stderr_task.await.unwrap_or_default();
        ServiceExit { status, stderr }
    });
    Ok((body, done))
}

async fn send(sender: &mut Option<Sender<Bytes, std::io::Error>>, data: Bytes) {
    if let Some(active) = sender
        && active.send_data(data).await.is_err()
    {
        *sender = None;
    }
}

/// Copies the request body into the child's stdin, gunzipping if asked,
/// then closes stdin so the child sees the end of the request.
async fn pump_request(input: ServiceInput, mut stdin: ChildStdin) {
    let mut body = input.body;
    let mut gunzip = input
        .gzip
        .then(|| flate2::write::GzDecoder::new(Vec::with_capacity(CHUNK)));
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let plain = match gunzip.as_mut() {
            None => data,
            Some(decoder) => {
                if decoder.write_all(&data).is_err() {
                    return;
                }
                Bytes::from(std::mem::take(decoder.get_mut()))
            }
        };
        if !plain.is_empty() && stdin.write_all(&plain).await.is_err() {
            return;
        }
    }
    if let Some(mut decoder) = gunzip {
        if decoder.try_finish().is_err() {
            return;
        }
        let rest = std::mem::take(decoder.get_mut());
        if !rest.is_empty() && stdin.write_all(&rest).await.is_err() {
            return;
        }
    }
    let _ = stdin.shutdown().await;
}

/// Encodes one pkt-line.
pub fn pkt_line(payload: &str) -> Vec<u8> {
    let mut line = format!("{:04x}", payload.len() + 4).into_bytes();
    line.extend_from_slice(payload.as_bytes());
    line
}

/// The smart-HTTP advertisement header: `# service=NAME` and a flush.
pub fn advertisement_header(service: Service) -> Bytes {
    let mut header = pkt_line(&format!("# service={}\n", service.name()));
    header.extend_from_slice(b"0000");
    Bytes::from(header)
}

/// An `ERR` pkt-line: git clients print it as `fatal: remote error: MESSAGE`.
pub fn error_line(message: &str) -> Vec<u8> {
    let mut message: String = message.replace('\n', "; ");
    if message.len() > 2000 {
        let mut cut = 2000;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    pkt_line(&format!("ERR {message}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkt_lines_carry_their_length() {
        assert_eq!(pkt_line("a\n"), b"0006a\n");
        assert_eq!(
            &advertisement_header(Service::UploadPack)[..],
            b"001e# service=git-upload-pack\n0000"
        );
        assert_eq!(error_line("x\ny"), b"000dERR x; y\n");
    }
}
