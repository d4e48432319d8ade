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
//! it) does without: [`join`] runs both closures itself, and a caller that
//! asks first ([`claim`]) can pick a way that suits one thread better (the
//! body scanner then scans the chunk whole). Under load nothing waits for
//! the helper and the shards keep the work they had. Waking a parked thread costs tens of
//! microseconds on a virtual machine, as much as half a scan, so the helper
//! spins (yielding the CPU to anything else runnable) for a short while
//! after each job before it parks: the chunks of one body come faster than
//! that. A job the helper has not started when the caller is done with its
//! own half is taken back and run by the caller; one it started but has not
//! finished after half as long again (the OS gave its CPU to another
//! thread) is run by the caller too, and the helper's result is dropped: a
//! caller never waits much longer than the whole job would take it.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long the helper spins for the next job before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// How long a caller done with its own part waits for the helper's at
/// least, past which it does that part itself (see [`Helper::finish`]).
const MIN_PATIENCE: Duration = Duration::from_micros(20);

/// Job states: none posted, posted, started by the helper, finished, and
/// given up on by the caller (who did the work itself) while the helper
/// still runs it.
const IDLE: u8 = 0;
const POSTED: u8 = 1;
const TAKEN: u8 = 2;
const DONE: u8 = 3;
const ABANDONED: u8 = 4;

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
                if self
                    .state
                    .compare_exchange(TAKEN, DONE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // The caller gave up on this job and went on: nobody
                    // waits for it, so the helper frees itself.
                    self.state.store(IDLE, Ordering::Release);
                    self.claimed.store(false, Ordering::Release);
                }
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

    /// After the caller's own part, which took `own`: whether the helper
    /// did the job (its result is there). Not if it had not started it (the
    /// job is taken back), nor if it is still at it after half of `own`
    /// more (at least [`MIN_PATIENCE`]): a helper that long is off its CPU
    /// (the OS gave it to another thread), and waiting for it could cost
    /// more than the whole job. The caller then does the job itself.
    fn finish(&self, own: Duration) -> bool {
        if self
            .state
            .compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            drop(self.job.lock().ok().and_then(|mut slot| slot.take()));
            self.claimed.store(false, Ordering::Release);
            return false;
        }
        let patience = (own / 2).max(MIN_PATIENCE);
        let started = Instant::now();
        let mut turns = 0u32;
        while self.state.load(Ordering::Acquire) != DONE {
            std::hint::spin_loop();
            turns += 1;
            if turns.is_multiple_of(64) {
                if started.elapsed() > patience
                    && self
                        .state
                        .compare_exchange(TAKEN, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    return false;
                }
                std::thread::yield_now();
            }
        }
        self.state.store(IDLE, Ordering::Release);
        self.claimed.store(false, Ordering::Release);
        true
    }
}

/// The helper, held for one [`Claim::join`]: what a caller gets when the
/// helper is free. A caller that gets none can do its work another way
/// (a chunk is scanned whole rather than in halves that each read an
/// overlap). Dropped unused, it frees the helper.
pub struct Claim(&'static Helper);

/// The helper if it is free (no other caller holds it and the machine has
/// more than one CPU).
pub fn claim() -> Option<Claim> {
    helper()
        .filter(|h| {
            h.claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
        .map(Claim)
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.claimed.store(false, Ordering::Release);
    }
}

impl Claim {
    /// [`join`] with the helper already held.
    pub fn join<A, B>(
        self,
        help: impl Fn() -> A + Send + Sync + 'static,
        here: impl FnOnce() -> B,
    ) -> (A, B)
    where
        A: Send + 'static,
    {
        let helper = self.0;
        // From here the job's states free the helper, not the claim.
        std::mem::forget(self);
        let help = Arc::new(help);
        let result: Arc<Mutex<Option<std::thread::Result<A>>>> = Arc::default();
        let (out, job) = (result.clone(), help.clone());
        helper.post(Box::new(move || {
            let done = catch_unwind(AssertUnwindSafe(|| job()));
            if let Ok(mut out) = out.lock() {
                *out = Some(done);
            }
        }));
        let started = Instant::now();
        let here = catch_unwind(AssertUnwindSafe(here));
        let help = if helper.finish(started.elapsed()) {
            result
                .lock()
                .ok()
                .and_then(|mut r| r.take())
                .expect("the helper leaves its result before it says it is done")
        } else {
            catch_unwind(AssertUnwindSafe(|| help()))
        };
        match (help, here) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(panic), _) | (_, Err(panic)) => resume_unwind(panic),
        }
    }
}

/// Runs `help` and `here` and returns both results: `help` on the helper
/// thread if it is free (while this thread runs `here`), else both on this
/// thread. `help` may also run on both (if the helper falls behind, this
/// thread runs it too and keeps its own result), so it must give the same
/// result each time. A panic in either is resumed here, after both are done.
pub fn join<A, B>(help: impl Fn() -> A + Send + Sync + 'static, here: impl FnOnce() -> B) -> (A, B)
where
    A: Send + 'static,
{
    match claim() {
        Some(claim) => claim.join(help, here),
        None => (help(), here()),
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
        // Other tests share the helper (one holds it for 200 ms): within a
        // second, one of this test's joins gets it.
        let started = Instant::now();
        let ran_elsewhere = std::iter::repeat_with(|| {
            let (id, ()) = join(
                || std::thread::current().id(),
                || std::thread::sleep(Duration::from_millis(2)),
            );
            id != here
        })
        .take_while(|_| started.elapsed() < Duration::from_secs(1))
        .any(|elsewhere| elsewhere);
        assert!(ran_elsewhere, "the helper never ran a job");
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
    fn a_helper_that_falls_behind_is_not_waited_for() {
        // The helper's run of `help` takes 200 ms, this thread's part
        // nothing: the caller runs `help` itself instead of waiting.
        let helper_thread = Arc::new(Mutex::new(None));
        let seen = helper_thread.clone();
        let here_id = std::thread::current().id();
        let started = Instant::now();
        let (a, ()) = join(
            move || {
                if std::thread::current().id() != here_id {
                    *seen.lock().unwrap() = Some(());
                    std::thread::sleep(Duration::from_millis(200));
                }
                7
            },
            || std::thread::sleep(Duration::from_millis(1)),
        );
        assert_eq!(a, 7);
        if helper_thread.lock().unwrap().is_some() {
            assert!(
                started.elapsed() < Duration::from_millis(150),
                "waited for the helper"
            );
        }
        // The helper frees itself once done and takes jobs again.
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(join(|| 2, || 3), (2, 3));
    }

    #[test]
    fn a_claim_holds_the_helper_until_it_is_used_or_dropped() {
        // Other tests share the helper: wait (a while) to get it.
        let started = Instant::now();
        let held = loop {
            if let Some(held) = claim() {
                break held;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "never free");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(claim().is_none(), "claimed twice");
        drop(held);
        let started = Instant::now();
        let held = loop {
            if let Some(held) = claim() {
                break held;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not freed by drop"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(held.join(|| 4, || 5), (4, 5));
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
