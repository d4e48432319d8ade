//! Progress lines on stderr: one per step with elapsed time, and while a step runs
//! a line every [`TICK`] saying it still does, so a long step (an image build, a slow
//! engine) is never silent.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backend_api::Progress;

use crate::output;

/// How often a running step says it still runs.
pub const TICK: Duration = Duration::from_secs(5);

/// Prints progress for humans.
pub struct TerminalProgress {
    tick: Duration,
    sink: fn(&str),
    ticker: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminalProgress {
    /// A progress printer.
    pub fn new() -> Self {
        Self::with(TICK, output::diagnostic)
    }

    /// A printer that ticks every `tick` and writes through `sink` (tests).
    fn with(tick: Duration, sink: fn(&str)) -> Self {
        Self {
            tick,
            sink,
            ticker: None,
        }
    }

    /// A line that is not a step (it also ends the running step's ticking: after a
    /// note, an attached agent may own the terminal).
    pub fn note(&mut self, what: &str) {
        self.stop();
        (self.sink)(&format!("bottle: {what}\n"));
    }

    fn stop(&mut self) {
        if let Some((stop, thread)) = self.ticker.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }

    fn start(&mut self, what: &str) {
        let (stop, stopped) = mpsc::channel::<()>();
        let (tick, sink, what) = (self.tick, self.sink, what.to_owned());
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                sink(&format!(
                    "bottle:   still {what} ({}s)\n",
                    started.elapsed().as_secs()
                ));
            }
        });
        self.ticker = Some((stop, thread));
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Progress for TerminalProgress {
    fn step(&mut self, what: &str) {
        self.stop();
        (self.sink)(&format!("bottle: {what} ...\n"));
        self.start(what);
    }
    fn done(&mut self, what: &str, elapsed: Duration) {
        self.stop();
        (self.sink)(&format!("bottle: {what} ({:.1}s)\n", elapsed.as_secs_f64()));
    }
    fn warn(&mut self, what: &str) {
        self.stop();
        (self.sink)(&format!("bottle: warning: {what}\n"));
    }
    fn still(&mut self, what: &str) {
        // The step's own ticker keeps running: this only adds the detail.
        (self.sink)(&format!("bottle:   still {what}\n"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record(text: &str) {
        LINES.lock().unwrap().push(text.to_owned());
    }

    static HEARTBEATS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record_heartbeats(text: &str) {
        HEARTBEATS.lock().unwrap().push(text.to_owned());
    }

    #[test]
    fn a_heartbeat_adds_detail_without_saying_still_twice_or_stopping_the_ticker() {
        let mut progress = TerminalProgress::with(Duration::from_millis(20), record_heartbeats);
        progress.step("bootstrapping Debian");
        progress.still("bootstrapping (15s; I: Retrieving libssh2)");
        std::thread::sleep(Duration::from_millis(100));
        progress.done("bootstrapped", Duration::from_millis(100));
        let lines = HEARTBEATS.lock().unwrap();
        assert_eq!(
            lines[1],
            "bottle:   still bootstrapping (15s; I: Retrieving libssh2)\n"
        );
        assert!(
            lines.iter().all(|l| !l.contains("still still")),
            "{lines:?}"
        );
        assert!(
            lines[2..]
                .iter()
                .any(|l| l.starts_with("bottle:   still bootstrapping Debian (")),
            "the ticker stopped: {lines:?}"
        );
    }

    #[test]
    fn a_running_step_ticks_until_it_is_done_and_a_note_silences_it() {
        let mut progress = TerminalProgress::with(Duration::from_millis(20), record);
        progress.step("building an image");
        std::thread::sleep(Duration::from_millis(150));
        progress.done("image built", Duration::from_millis(150));
        let ticks = |lines: &[String]| lines.iter().filter(|l| l.contains("still")).count();
        let after_done = ticks(&LINES.lock().unwrap());
        assert!(after_done >= 2, "{:?}", LINES.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            ticks(&LINES.lock().unwrap()),
            after_done,
            "ticked after done"
        );

        progress.step("starting");
        progress.note("attached; the agent owns the terminal");
        let after_note = ticks(&LINES.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            ticks(&LINES.lock().unwrap()),
            after_note,
            "ticked after a note"
        );
        drop(progress);
        let lines = LINES.lock().unwrap();
        assert_eq!(lines[0], "bottle: building an image ...\n");
        assert!(lines[1].starts_with("bottle:   still building an image ("));
    }
}
