//! A second core for one big job: [`join`] runs two closures, one of them
//! on a helper thread if the helper is free, and returns both results.
//!
//! Why: the DLP scan of a large request body is the proxy's longest piece
//! of work, and with one agent sending one large request (the usual load of
//! a bottle) the shard that serves it works while the other cores idle. The
//! body scanner cuts such a chunk in two halves ([`crate::dlp::BodyScanner::push_split`])
//! and scans them side by side: the request waits for about half the scan.
//!
//! There is one helper thread per process, started on first use (none on a
//! machine with one CPU). A caller that finds it busy (another shard has
//! it) runs both closures itself, so under load nothing waits for it and
//! the shards keep the work they had. Waking a parked thread costs tens of
//! microseconds on a virtual machine, as much as half a scan, so the helper
//! spins (yielding the CPU to anything else runnable) for a short while
//! after each job before it parks: the chunks of one body come faster than
//! that. A job the helper has not started when the caller is done with its
//! own half is taken back and run by the caller.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long the helper spins for the next job before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// Job states: none posted, posted, started by the helper, finished.
const IDLE: u8 = 0;
const POSTED: u8 = 1;
const TAKEN: u8 = 2;
const DONE: u8 = 3;

type Job = Box<dyn FnOnce() + Send>;

/// The helper thread and its one job slot.
struct Helper {
    /// Held by the one caller whose job is in the slot.
    claimed: AtomicBool,
    state: AtomicU8,
    job: Mutex<Option<Job>>,
    /// Set while the helper is parked (or about to park).
    sleeping: AtomicBool,
    thread: OnceLock<Thread>,
}

/// The process's helper; `None` with a single CPU.
fn helper() -> Option<&'static Helper> {
    static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();
    *HELPER.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            return None;
        }
        let helper: &'static Helper = Box::leak(Box::new(Helper {
            claimed: AtomicBool::new(false),
            state: AtomicU8::new(IDLE),
            job: Mutex::new(None),
            sleeping: AtomicBool::new(false),
            thread: OnceLock::new(),
        }));
        let handle = std::thread::Builder::new()
            .name("egress-assist".to_owned())
            .spawn(move || helper.serve())
            .ok()?;
        let _ = helper.thread.set(handle.thread().clone());
        Some(helper)
    })
}

impl Helper {
    /// The helper thread: runs posted jobs, forever.
    fn serve(&self) {
        loop {
            self.wait_for_job();
            if self
                .state
                .compare_exchange(POSTED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let job = self.job.lock().ok().and_then(|mut slot| slot.take());
                if let Some(job) = job {
                    job();
                }
                self.state.store(DONE, Ordering::Release);
            }
        }
    }

    /// Spins for up to [`SPIN`], then parks, until a job is posted.
    fn wait_for_job(&self) {
        loop {
            let started = Instant::now();
            let mut turns = 0u32;
            while started.elapsed() < SPIN {
                for _ in 0..16 {
                    if self.state.load(Ordering::Acquire) == POSTED {
                        return;
                    }
                    std::hint::spin_loop();
                }
                turns += 1;
                if turns.is_multiple_of(4) {
                    std::thread::yield_now();
                }
            }
            // Park unless a job came in meanwhile: the poster reads
            // `sleeping` after posting, this reads the state after setting
            // it, so one of the two sees the other (both sequentially
            // consistent) and no job waits for a wake-up that never comes.
            self.sleeping.store(true, Ordering::SeqCst);
            if self.state.load(Ordering::SeqCst) != POSTED {
                std::thread::park();
            }
            self.sleeping.store(false, Ordering::SeqCst);
        }
    }

    fn post(&self, job: Job) {
        if let Ok(mut slot) = self.job.lock() {
            *slot = Some(job);
        }
        self.state.store(POSTED, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }

    /// After the caller's own half: takes the job back if the helper has
    /// not started it (and runs it here), else waits for it to finish.
    fn finish(&self) {
        if self
            .state
            .compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let job = self.job.lock().ok().and_then(|mut slot| slot.take());
            self.claimed.store(false, Ordering::Release);
            if let Some(job) = job {
                job();
            }
            return;
        }
        let mut turns = 0u32;
        while self.state.load(Ordering::Acquire) != DONE {
            std::hint::spin_loop();
            turns += 1;
            if turns.is_multiple_of(64) {
                std::thread::yield_now();
            }
        }
        self.state.store(IDLE, Ordering::Release);
        self.claimed.store(false, Ordering::Release);
    }
}

/// Runs `help` and `here` and returns both results: `help` on the helper
/// thread if it is free (while this thread runs `here`), else both on this
/// thread. A panic in either is resumed here, after both are done.
pub fn join<A, B>(help: impl FnOnce() -> A + Send + 'static, here: impl FnOnce() -> B) -> (A, B)
where
    A: Send + 'static,
{
    let Some(helper) = helper().filter(|h| {
        h.claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }) else {
        return (help(), here());
    };
    let result: Arc<Mutex<Option<std::thread::Result<A>>>> = Arc::default();
    let out = result.clone();
    helper.post(Box::new(move || {
        let done = catch_unwind(AssertUnwindSafe(help));
        if let Ok(mut out) = out.lock() {
            *out = Some(done);
        }
    }));
    let here = catch_unwind(AssertUnwindSafe(here));
    helper.finish();
    let help = result
        .lock()
        .ok()
        .and_then(|mut r| r.take())
        .expect("a claimed job runs before `finish` returns");
    match (help, here) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(panic), _) | (_, Err(panic)) => resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn both_results_come_back() {
        for i in 0..200u64 {
            let data: Vec<u64> = (0..1000).map(|k| k * i).collect();
            let (a, b) = join(move || data.iter().sum::<u64>(), || i * 2);
            assert_eq!(a, 499_500 * i);
            assert_eq!(b, i * 2);
        }
    }

    #[test]
    fn the_helper_runs_jobs_on_another_thread_when_free() {
        let here = std::thread::current().id();
        let elsewhere = (0..50)
            .filter(|_| {
                let (id, ()) = join(
                    || std::thread::current().id(),
                    || std::thread::sleep(Duration::from_millis(2)),
                );
                id != here
            })
            .count();
        // The test threads share the helper; most joins of this one get it.
        assert!(elsewhere > 0, "the helper never ran a job");
    }

    #[test]
    fn callers_on_many_threads_all_get_their_own_results() {
        let runs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let runs = runs.clone();
                std::thread::spawn(move || {
                    for i in 0..500u64 {
                        let r = runs.clone();
                        let (a, b) = join(
                            move || {
                                r.fetch_add(1, Ordering::Relaxed);
                                t * 1000 + i
                            },
                            || i,
                        );
                        assert_eq!((a, b), (t * 1000 + i, i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(runs.load(Ordering::Relaxed), 2000);
    }

    #[test]
    fn a_panic_in_either_half_reaches_the_caller_and_the_helper_lives_on() {
        let helped = std::panic::catch_unwind(|| join(|| panic!("help"), || 1));
        assert!(helped.is_err());
        let here = std::panic::catch_unwind(|| join(|| 1, || panic!("here")));
        assert!(here.is_err());
        assert_eq!(join(|| 2, || 3), (2, 3));
    }
}
