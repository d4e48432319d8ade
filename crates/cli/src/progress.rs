//! Progress lines on stderr: one per step with elapsed time.

use std::time::Duration;

use backend_docker::progress::Progress;

use crate::output;

/// Prints progress for humans.
#[derive(Default)]
pub struct TerminalProgress;

impl TerminalProgress {
    /// A progress printer.
    pub fn new() -> Self {
        Self
    }

    /// A line that is not a step.
    pub fn note(&mut self, what: &str) {
        output::diagnostic(&format!("bottle: {what}\n"));
    }
}

impl Progress for TerminalProgress {
    fn step(&mut self, what: &str) {
        output::diagnostic(&format!("bottle: {what} ...\n"));
    }
    fn done(&mut self, what: &str, elapsed: Duration) {
        output::diagnostic(&format!("bottle: {what} ({:.1}s)\n", elapsed.as_secs_f64()));
    }
    fn warn(&mut self, what: &str) {
        output::diagnostic(&format!("bottle: warning: {what}\n"));
    }
}
