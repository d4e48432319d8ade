//! Progress of long steps: one line per step with its elapsed time.

use std::time::Duration;

/// Where a backend reports progress; the CLI prints it, tests record it.
pub trait Progress {
    /// A step begins.
    fn step(&mut self, what: &str);
    /// A step finished after `elapsed`.
    fn done(&mut self, what: &str, elapsed: Duration);
    /// Something worth a warning (teardown problems, retries).
    fn warn(&mut self, what: &str);
    /// The running step is still at it: `what` says how far (a heartbeat with detail,
    /// e.g. the last line of a build log). Not a new step.
    fn still(&mut self, what: &str) {
        self.step(&format!("still {what}"));
    }
}

/// Progress that remembers lines (tests and quiet runs).
#[derive(Debug, Default)]
pub struct RecordedProgress {
    /// Every line, in order.
    pub lines: Vec<String>,
}

impl Progress for RecordedProgress {
    fn step(&mut self, what: &str) {
        self.lines.push(format!("step: {what}"));
    }
    fn done(&mut self, what: &str, _elapsed: Duration) {
        self.lines.push(format!("done: {what}"));
    }
    fn warn(&mut self, what: &str) {
        self.lines.push(format!("warn: {what}"));
    }
}
