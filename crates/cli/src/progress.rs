//! Progress on stderr: one line per step with its elapsed time. On a terminal a
//! running step is a spinner line with the time so far, redrawn in place; elsewhere
//! (logs, CI) every line carries the UTC time, and a running step says every [`TICK`]
//! that it still runs. Either way a long step (an image build, a slow engine) is never
//! silent.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backend_api::Progress;

use crate::output;

/// How often a running step says it still runs (plain lines).
pub const TICK: Duration = Duration::from_secs(5);

/// How often the spinner is redrawn.
const FRAME: Duration = Duration::from_millis(100);

/// The spinner's frames.
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Erases the terminal line the cursor is on and goes to its start.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// How progress is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// Lines with the UTC time, and a "still" line every tick.
    Plain,
    /// A spinner redrawn in place while a step runs (a terminal).
    Spinner,
}

/// Prints progress for humans.
pub struct TerminalProgress {
    tick: Duration,
    sink: fn(&str),
    style: Style,
    clock: fn() -> SystemTime,
    ticker: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminalProgress {
    /// A progress printer: a spinner when stderr is a terminal (and `TERM` is not
    /// `dumb`), timestamped lines otherwise.
    pub fn new() -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var("TERM").map_or(true, |term| term != "dumb");
        let style = if terminal {
            Style::Spinner
        } else {
            Style::Plain
        };
        Self::with(style, TICK, output::diagnostic, SystemTime::now)
    }

    /// A printer in `style` that ticks every `tick`, reads `clock` and writes through
    /// `sink` (tests).
    fn with(style: Style, tick: Duration, sink: fn(&str), clock: fn() -> SystemTime) -> Self {
        Self {
            tick,
            sink,
            style,
            clock,
            ticker: None,
        }
    }

    /// A line that is not a step (it also ends the running step's ticking: after a
    /// note, an attached agent may own the terminal).
    pub fn note(&mut self, what: &str) {
        self.stop();
        self.line(what);
    }

    /// Prints one finished line: `bottle: [HH:MM:SS] what` (plain) or `bottle: what`
    /// (terminal, where the spinner's line is erased first).
    fn line(&self, what: &str) {
        match self.style {
            Style::Plain => {
                (self.sink)(&format!("bottle: [{}] {what}\n", utc_clock((self.clock)())))
            }
            Style::Spinner => (self.sink)(&format!("{CLEAR_LINE}bottle: {what}\n")),
        }
    }

    fn stop(&mut self) {
        if let Some((stop, thread)) = self.ticker.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }

    fn start(&mut self, what: &str) {
        let (stop, stopped) = mpsc::channel::<()>();
        let (sink, clock, what) = (self.sink, self.clock, what.to_owned());
        let started = Instant::now();
        let thread = match self.style {
            Style::Plain => {
                let tick = self.tick;
                std::thread::spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                        sink(&format!(
                            "bottle: [{}]   still {what} ({}s)\n",
                            utc_clock(clock()),
                            started.elapsed().as_secs()
                        ));
                    }
                })
            }
            Style::Spinner => std::thread::spawn(move || {
                let mut frame = 0;
                loop {
                    sink(&format!(
                        "{CLEAR_LINE}bottle: {} {what} ({:.1}s)",
                        FRAMES[frame % FRAMES.len()],
                        started.elapsed().as_secs_f64()
                    ));
                    frame += 1;
                    if !matches!(stopped.recv_timeout(FRAME), Err(RecvTimeoutError::Timeout)) {
                        // The spinner's line goes: what comes next takes its place.
                        sink(CLEAR_LINE);
                        return;
                    }
                }
            }),
        };
        self.ticker = Some((stop, thread));
    }
}

/// `HH:MM:SS` of `time` in UTC.
fn utc_clock(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Progress for TerminalProgress {
    fn step(&mut self, what: &str) {
        self.stop();
        if self.style == Style::Plain {
            self.line(&format!("{what} ..."));
        }
        self.start(what);
    }
    fn done(&mut self, what: &str, elapsed: Duration) {
        self.stop();
        self.line(&format!("{what} ({:.1}s)", elapsed.as_secs_f64()));
    }
    fn warn(&mut self, what: &str) {
        self.stop();
        self.line(&format!("warning: {what}"));
    }
    fn still(&mut self, what: &str) {
        // The step's own ticker or spinner keeps running: this only adds the detail.
        self.line(&format!("  still {what}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// 2026-12-01T08:09:10Z.
    fn fixed_clock() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_112_550)
    }

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record(text: &str) {
        LINES.lock().unwrap().push(text.to_owned());
    }

    static HEARTBEATS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record_heartbeats(text: &str) {
        HEARTBEATS.lock().unwrap().push(text.to_owned());
    }

    static FRAMES_SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record_frames(text: &str) {
        FRAMES_SEEN.lock().unwrap().push(text.to_owned());
    }

    fn plain(tick_ms: u64, sink: fn(&str)) -> TerminalProgress {
        TerminalProgress::with(
            Style::Plain,
            Duration::from_millis(tick_ms),
            sink,
            fixed_clock,
        )
    }

    #[test]
    fn plain_lines_carry_the_utc_time() {
        assert_eq!(utc_clock(fixed_clock()), "08:09:10");
        assert_eq!(utc_clock(UNIX_EPOCH), "00:00:00");
    }

    #[test]
    fn a_heartbeat_adds_detail_without_saying_still_twice_or_stopping_the_ticker() {
        let mut progress = plain(20, record_heartbeats);
        progress.step("bootstrapping Debian");
        progress.still("bootstrapping (15s; I: Retrieving libssh2)");
        std::thread::sleep(Duration::from_millis(100));
        progress.done("bootstrapped", Duration::from_millis(100));
        let lines = HEARTBEATS.lock().unwrap();
        assert_eq!(
            lines[1],
            "bottle: [08:09:10]   still bootstrapping (15s; I: Retrieving libssh2)\n"
        );
        assert!(
            lines.iter().all(|l| !l.contains("still still")),
            "{lines:?}"
        );
        assert!(
            lines[2..]
                .iter()
                .any(|l| l.starts_with("bottle: [08:09:10]   still bootstrapping Debian (")),
            "the ticker stopped: {lines:?}"
        );
    }

    #[test]
    fn a_running_step_ticks_until_it_is_done_and_a_note_silences_it() {
        let mut progress = plain(20, record);
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
        assert_eq!(lines[0], "bottle: [08:09:10] building an image ...\n");
        assert!(lines[1].starts_with("bottle: [08:09:10]   still building an image ("));
        assert!(
            lines.contains(&"bottle: [08:09:10] image built (0.1s)\n".to_owned()),
            "{lines:?}"
        );
    }

    #[test]
    fn on_a_terminal_a_step_is_a_spinner_that_its_done_line_replaces() {
        let mut progress = TerminalProgress::with(Style::Spinner, TICK, record_frames, fixed_clock);
        progress.step("compose create");
        std::thread::sleep(Duration::from_millis(350));
        progress.done("compose create", Duration::from_millis(350));
        progress.note("attached");
        std::thread::sleep(Duration::from_millis(250));
        let seen = FRAMES_SEEN.lock().unwrap();
        let frames: Vec<&String> = seen.iter().filter(|l| !l.ends_with('\n')).collect();
        assert!(frames.len() >= 2, "{seen:?}");
        // Each frame redraws the line in place: no newline, a moving spinner, the time.
        assert!(frames[0].starts_with(CLEAR_LINE), "{seen:?}");
        assert!(
            frames[0].contains("bottle: ⠋ compose create (0."),
            "{seen:?}"
        );
        assert!(frames[1].contains("bottle: ⠙ compose create ("), "{seen:?}");
        // Then the done line takes the spinner's place, and nothing redraws after the
        // note (an agent owns the terminal).
        let done = seen
            .iter()
            .position(|l| l == &format!("{CLEAR_LINE}bottle: compose create (0.3s)\n"))
            .expect("the done line");
        assert_eq!(
            seen[done + 1..],
            [format!("{CLEAR_LINE}bottle: attached\n")],
            "{seen:?}"
        );
        assert!(
            seen.iter().all(|l| !l.contains("bottle: [")),
            "no timestamps on a terminal"
        );
    }
}
