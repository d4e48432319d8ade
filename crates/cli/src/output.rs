//! The one place that writes for humans: stdout for results, stderr for diagnostics.
//! A closed stdout (`bottle schema | head`) ends the process quietly, like ripgrep.

use std::io::{self, IsTerminal, Write};

/// Writes a result to stdout. A broken pipe exits 0 without a panic message.
pub fn print(text: &str) {
    let mut stdout = io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if error.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("bottle: cannot write to stdout: {error}");
        std::process::exit(255);
    }
}

/// Writes a diagnostic block to stderr.
pub fn diagnostic(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Writes a one-line error to stderr.
pub fn error(message: &str) {
    diagnostic(&format!("error: {message}\n"));
}

/// Whether stderr gets colours: a terminal, and no `NO_COLOR`.
pub fn stderr_color() -> bool {
    io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` with control characters (other than newline and tab) shown escaped: output
/// that carries agent-controlled bytes (logs, requests) must not drive the terminal.
pub fn escape_controls(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            super::escape_controls("a\u{1b}[2Jb\n\tc\u{9b}"),
            "a\\u{1b}[2Jb\n\tc\\u{9b}"
        );
    }
}
