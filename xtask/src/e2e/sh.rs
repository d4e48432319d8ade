//! Running commands for e2e: stdout and stderr kept apart (a curl's body is not its
//! progress), every wait bounded, and an interrupt (SIGINT/SIGTERM) ends the wait.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::proc::{describe, tail};

/// Set by SIGINT/SIGTERM; every wait checks it.
pub type Interrupted = Arc<AtomicBool>;

/// How long any one command may take unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// A finished command.
#[derive(Debug)]
pub struct Out {
    /// The command line, for messages.
    pub line: String,
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The command, its exit code and the tail of its output: the body of a failure.
    pub fn explain(&self) -> String {
        let mut text = format!("`{}` exited {}", self.line, self.code);
        for (name, stream) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let t = tail(stream, 8);
            if !t.is_empty() {
                text.push_str(&format!("\n  {name}:\n{t}"));
            }
        }
        text
    }

    /// `Ok(self)` on exit 0, else the explanation.
    pub fn ok(self) -> Result<Out, String> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.explain())
        }
    }
}

/// A `Command` for `program` with `args`.
pub fn cmd<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// Runs `cmd` (stdin closed) until it exits, `timeout` passes or an interrupt.
pub fn run_with(cmd: Command, timeout: Duration, interrupted: &Interrupted) -> Result<Out, String> {
    run_input(cmd, None, timeout, interrupted)
}

/// [`run_with`] with [`DEFAULT_TIMEOUT`].
pub fn run(cmd: Command, interrupted: &Interrupted) -> Result<Out, String> {
    run_with(cmd, DEFAULT_TIMEOUT, interrupted)
}

/// Runs `cmd` and requires exit 0.
pub fn ok(cmd: Command, interrupted: &Interrupted) -> Result<Out, String> {
    run(cmd, interrupted)?.ok()
}

/// Runs `cmd` with `input` on stdin (or stdin closed).
pub fn run_input(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
    interrupted: &Interrupted,
) -> Result<Out, String> {
    let line = describe(&cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{line}`: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let code = wait(&mut child, &line, timeout, interrupted)?;
    Ok(Out {
        line,
        code,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn reader<R: Read + Send + 'static>(stream: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut s) = stream {
            let _ = s.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child`; kills it (only it) on timeout or interrupt.
pub fn wait(
    child: &mut Child,
    line: &str,
    timeout: Duration,
    interrupted: &Interrupted,
) -> Result<i32, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status.code().unwrap_or(-1)),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for `{line}`: {e}")),
        }
        let why = if interrupted.load(Ordering::SeqCst) {
            Some("interrupted".to_string())
        } else if Instant::now() >= deadline {
            Some(format!("timed out after {}s", timeout.as_secs()))
        } else {
            None
        };
        if let Some(why) = why {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`{line}` {why}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `probe` every `every` until it yields `Some`, for at most `limit`.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    interrupted: &Interrupted,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline || interrupted.load(Ordering::SeqCst) {
            return None;
        }
        thread::sleep(every);
    }
}
