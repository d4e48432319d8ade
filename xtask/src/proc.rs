//! Running child processes for xtasks.
//!
//! Every external step (docker, cargo, debootstrap, tar) goes through here so that
//! output is captured instead of flooding the one-line-per-step progress, a wait can
//! be bounded (the `docker pull` that is expected to fail without a registry), and a
//! failure becomes a message that names the command and quotes the end of its output.

use std::fmt;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How many lines of a failed command's output an error message quotes.
const TAIL_LINES: usize = 20;

/// A task failure: a human-readable message, printed once by `main`.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a finished command left behind: its exit status and its stdout and stderr,
/// interleaved as the command wrote them (they share one pipe).
pub struct Ran {
    pub status: ExitStatus,
    pub output: String,
}

impl Ran {
    /// The last `n` non-empty lines of the output, for error messages.
    pub fn tail(&self, n: usize) -> String {
        tail(&self.output, n)
    }
}

/// How a bounded command ended.
pub enum Bounded {
    /// It exited on its own.
    Finished(Ran),
    /// It ran past the deadline and was killed; the output it wrote so far.
    #[allow(
        dead_code,
        reason = "only the timeout's own test reads what came before it"
    )]
    TimedOut(String),
}

/// The command line as a person would type it, for progress lines and errors.
pub fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` non-empty lines of `text`, indented for an error message.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `cmd` to completion (or until `timeout`), capturing stdout and stderr
/// together. Stdin is closed. Fails only when the command cannot be started.
pub fn run_bounded(cmd: Command, timeout: Option<Duration>) -> Result<Bounded, Failure> {
    run_into(cmd, timeout, Arc::new(Mutex::new(Vec::new())))
}

/// [`run_bounded`], collecting the output into `collected` as it comes, so a
/// heartbeat can say what the command is doing ([`last_line`]).
pub fn run_into(
    mut cmd: Command,
    timeout: Option<Duration>,
    collected: Arc<Mutex<Vec<u8>>>,
) -> Result<Bounded, Failure> {
    let line = describe(&cmd);
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| Failure(format!("cannot create a pipe for `{line}`: {e}")))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| Failure(format!("cannot create a pipe for `{line}`: {e}")))?;
    cmd.stdin(Stdio::null()).stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Failure(format!(
                "`{}` was not found on PATH (needed for `{line}`)",
                cmd.get_program().to_string_lossy()
            ))
        } else {
            Failure(format!("cannot start `{line}`: {e}"))
        }
    })?;
    // The Command holds our copies of the pipe's write end: drop them so the reader
    // sees end-of-file when the child exits.
    drop(cmd);

    let sink = Arc::clone(&collected);
    let reader_thread = thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
    });
    let text = |bytes: &Mutex<Vec<u8>>| {
        String::from_utf8_lossy(&bytes.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    };

    let status = match timeout {
        None => child
            .wait()
            .map_err(|e| Failure(format!("waiting for `{line}`: {e}")))?,
        Some(limit) => {
            let deadline = Instant::now() + limit;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status,
                    Ok(None) if Instant::now() >= deadline => {
                        // Only the child we started; its output so far explains the wait.
                        let _ = child.kill();
                        let _ = child.wait();
                        return Ok(Bounded::TimedOut(text(&collected)));
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(50)),
                    Err(e) => return Err(Failure(format!("waiting for `{line}`: {e}"))),
                }
            }
        }
    };
    let _ = reader_thread.join();
    Ok(Bounded::Finished(Ran {
        status,
        output: text(&collected),
    }))
}

/// Runs `cmd` to completion; whatever its exit status.
pub fn run(cmd: Command) -> Result<Ran, Failure> {
    match run_bounded(cmd, None)? {
        Bounded::Finished(ran) => Ok(ran),
        Bounded::TimedOut(_) => unreachable!("no timeout was set"),
    }
}

/// Runs `cmd` and requires success; the error names the command, its exit status
/// and the tail of its output.
pub fn checked(cmd: Command) -> Result<Ran, Failure> {
    checked_into(cmd, Arc::new(Mutex::new(Vec::new())))
}

/// [`checked`], collecting the output into `collected` as it comes.
pub fn checked_into(cmd: Command, collected: Arc<Mutex<Vec<u8>>>) -> Result<Ran, Failure> {
    let line = describe(&cmd);
    let ran = match run_into(cmd, None, collected)? {
        Bounded::Finished(ran) => ran,
        Bounded::TimedOut(_) => unreachable!("no timeout was set"),
    };
    if ran.status.success() {
        Ok(ran)
    } else {
        Err(Failure(format!(
            "`{line}` failed ({}); the end of its output:\n{}",
            ran.status,
            ran.tail(TAIL_LINES)
        )))
    }
}

/// The last non-empty line of what a command wrote so far (cargo's `Compiling x`,
/// docker's `Step 3/7`), cut to 100 characters.
pub fn last_line(collected: &Mutex<Vec<u8>>) -> String {
    let bytes = collected.lock().unwrap_or_else(|p| p.into_inner());
    let text = String::from_utf8_lossy(&bytes);
    let line = text
        .split(['\n', '\r'])
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_is_what_a_heartbeat_shows() {
        let collected = Mutex::new(b"   Compiling a v1\n   Compiling b v2\n\n".to_vec());
        assert_eq!(last_line(&collected), "Compiling b v2");
        assert_eq!(last_line(&Mutex::new(Vec::new())), "");
        let long = Mutex::new("x".repeat(500).into_bytes());
        assert_eq!(last_line(&long).len(), 100);
    }

    #[test]
    fn describe_quotes_only_what_needs_it() {
        let mut cmd = Command::new("docker");
        cmd.args(["import", "--change", "ENV PATH=/bin", "it's"]);
        assert_eq!(
            describe(&cmd),
            r"docker import --change 'ENV PATH=/bin' 'it'\''s'"
        );
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        assert_eq!(tail("a\n\nb\nc\n\n", 2), "    b\n    c");
    }

    #[test]
    fn checked_reports_the_command_and_its_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let err = checked(cmd).err().expect("exit 3 is a failure");
        assert!(
            err.0
                .contains("`sh -c 'echo out; echo err >&2; exit 3'` failed")
        );
        assert!(err.0.contains("    out\n    err"), "{}", err.0);
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = run(Command::new("bot-bottle-no-such-program"))
            .err()
            .expect("cannot start");
        assert!(
            err.0
                .contains("`bot-bottle-no-such-program` was not found on PATH")
        );
    }

    #[test]
    fn a_slow_command_times_out() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 5"]);
        let started = Instant::now();
        match run_bounded(cmd, Some(Duration::from_millis(300))).expect("runs") {
            Bounded::TimedOut(out) => assert_eq!(out.trim(), "started"),
            Bounded::Finished(_) => panic!("should have timed out"),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
