//! The sidecar's core: queue a request, then wait for the human's decision
//! in `decisions_dir` — and only there.
//!
//! Limits keep the queue readable for the human: at most `max_pending`
//! requests pending and `max_requests_per_minute` new ones in any 60 s (a new
//! ask beyond either is refused; asking again for something pending always
//! joins it), and a pending request that no call waits on or asks about again
//! for `abandon_after_secs` expires: its file leaves the queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::Error;
use crate::audit::{AuditEntry, AuditLog, Event};
use crate::config::SuperviseConfig;
use crate::host;
use crate::request::{Decision, Request, new_id, unix_now};
use crate::store;

/// How often `decisions_dir` is looked at while a call waits.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The window of `max_requests_per_minute`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Refused asks are audited at most this often, with their count.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How a wait ended.
#[derive(Debug)]
pub(crate) enum Waited {
    /// The human decided (the decision has been validated).
    Decided(Decision),
    /// No decision in time; the request stays pending.
    Pending,
    /// The sidecar is stopping; the request stays pending.
    ShuttingDown,
}

/// The running sidecar's state.
#[derive(Debug)]
pub(crate) struct Supervisor {
    pub(crate) config: SuperviseConfig,
    audit: AuditLog,
    /// Request ids whose decision has been audited (several calls may wait
    /// on one request).
    audited: Mutex<HashSet<String>>,
    /// Held while an ask is checked against the limits and queued, and while
    /// abandoned requests expire, so neither races the other.
    admission: Mutex<Admission>,
    /// Per pending request: calls waiting on it, and when one last did.
    activity: Mutex<HashMap<String, Activity>>,
    refusals: Mutex<Refusals>,
    shutdown: watch::Receiver<bool>,
}

#[derive(Debug, Default)]
struct Admission {
    /// When each new request of the last minute was queued, oldest first.
    recent: VecDeque<Instant>,
}

#[derive(Debug)]
struct Activity {
    waiters: usize,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct Refusals {
    /// Refused asks not yet counted in an audit line.
    unlogged: u64,
    last_logged: Option<Instant>,
    /// The newest refusal not yet audited.
    latest: Option<AuditEntry>,
}

impl Supervisor {
    /// Opens the audit log, creates the queue dir if needed and checks that
    /// the decisions dir exists.
    pub(crate) fn new(
        config: SuperviseConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.queue_dir)
            .map_err(Error::io("creating", &config.queue_dir))?;
        std::fs::read_dir(&config.decisions_dir)
            .map_err(Error::io("listing", &config.decisions_dir))?;
        let audit = AuditLog::open(config.audit_log.as_deref())?;
        Ok(Self {
            config,
            audit,
            audited: Mutex::new(HashSet::new()),
            admission: Mutex::new(Admission::default()),
            activity: Mutex::new(HashMap::new()),
            refusals: Mutex::new(Refusals::default()),
            shutdown,
        })
    }

    /// Queues `ask` (id and time are filled in here) — or joins an identical
    /// request that is still pending — and waits up to `timeout` for its
    /// decision. Returns the request as queued and how the wait ended; a new
    /// ask over the limits is [`Error::TooManyPending`] or
    /// [`Error::TooManyRequests`].
    pub(crate) async fn ask(
        &self,
        mut ask: Request,
        timeout: Duration,
    ) -> Result<(Request, Waited), Error> {
        ask.bottle_slug = self.config.bottle_slug.clone();
        let request = self.admit(ask)?;
        let waited = self.wait(&request, timeout).await;
        Ok((request, waited))
    }

    /// The abandon window.
    pub(crate) fn abandon_after(&self) -> Duration {
        Duration::from_secs(self.config.abandon_after_secs)
    }

    /// Joins a pending request like `ask`, or checks the limits and queues it.
    fn admit(&self, mut ask: Request) -> Result<Request, Error> {
        let mut admission = lock(&self.admission);
        let now = Instant::now();
        self.expire_abandoned_locked(now);
        let pending: Vec<Request> =
            host::pending_in(&self.config.queue_dir, &self.config.decisions_dir)
                .map(|all| all.into_iter().filter_map(Result::ok).collect())
                .unwrap_or_default();
        if let Some(existing) = pending
            .iter()
            .filter(|request| request.same_ask(&ask))
            .min_by_key(|request| request.created)
        {
            self.touch(&existing.id, now);
            self.audit.record(
                &AuditEntry::for_request(existing, Event::RequestRepeated, "pending")
                    .with_detail(format!("asked again: {}", ask.summary())),
            );
            return Ok(existing.clone());
        }
        if pending.len() >= self.config.max_pending {
            return Err(self.refuse(
                &ask,
                Error::TooManyPending {
                    pending: pending.len(),
                    max: self.config.max_pending,
                },
                now,
            ));
        }
        while admission
            .recent
            .front()
            .is_some_and(|queued| now.saturating_duration_since(*queued) >= RATE_WINDOW)
        {
            admission.recent.pop_front();
        }
        if admission.recent.len() >= self.config.max_requests_per_minute {
            let oldest = admission.recent.front().copied().unwrap_or(now);
            let left = RATE_WINDOW.saturating_sub(now.saturating_duration_since(oldest));
            return Err(self.refuse(
                &ask,
                Error::TooManyRequests {
                    count: admission.recent.len(),
                    max: self.config.max_requests_per_minute,
                    retry_after_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
                },
                now,
            ));
        }
        ask.id = new_id().map_err(Error::Random)?;
        ask.created = unix_now();
        ask.validate().map_err(|reason| Error::InvalidFile {
            path: store::id_path(&self.config.queue_dir, &ask.id),
            reason,
        })?;
        store::write_json_atomic(
            &self.config.queue_dir,
            &format!("{}.json", ask.id),
            &ask,
            false,
        )?;
        admission.recent.push_back(now);
        self.touch(&ask.id, now);
        self.audit
            .record(&AuditEntry::for_request(&ask, Event::Request, "pending"));
        Ok(ask)
    }

    /// Marks `id` as asked about at `now`.
    fn touch(&self, id: &str, now: Instant) {
        lock(&self.activity)
            .entry(id.to_owned())
            .and_modify(|activity| activity.last_seen = now)
            .or_insert(Activity {
                waiters: 0,
                last_seen: now,
            });
    }

    /// Audits a refused ask (at most one line per [`REFUSAL_LOG_EVERY`],
    /// counting the others) and returns the error for the agent.
    fn refuse(&self, ask: &Request, error: Error, now: Instant) -> Error {
        let mut refusals = lock(&self.refusals);
        refusals.unlogged += 1;
        refusals.latest = Some(
            AuditEntry::for_request(ask, Event::Refused, "refused").with_detail(error.to_string()),
        );
        let due = refusals
            .last_logged
            .is_none_or(|logged| now.saturating_duration_since(logged) >= REFUSAL_LOG_EVERY);
        if due {
            self.log_refusals(&mut refusals, now);
        }
        error
    }

    fn log_refusals(&self, refusals: &mut Refusals, now: Instant) {
        let Some(mut entry) = refusals.latest.take() else {
            return;
        };
        let count = std::mem::take(&mut refusals.unlogged);
        if count > 1 {
            let detail = entry.detail.take().unwrap_or_default();
            entry.detail = Some(format!(
                "{detail} ({count} asks refused since the last such line)"
            ));
        }
        refusals.last_logged = Some(now);
        self.audit.record(&entry);
    }

    /// Periodic upkeep: expires abandoned requests and audits refusals not
    /// yet counted.
    pub(crate) fn housekeeping(&self) {
        let now = Instant::now();
        {
            let _admission = lock(&self.admission);
            self.expire_abandoned_locked(now);
        }
        let mut refusals = lock(&self.refusals);
        let due = refusals
            .last_logged
            .is_none_or(|logged| now.saturating_duration_since(logged) >= REFUSAL_LOG_EVERY);
        if due {
            self.log_refusals(&mut refusals, now);
        }
    }

    /// Removes from the queue every pending request that no call waits on and
    /// none asked about for `abandon_after_secs` (for requests this process
    /// has not seen, since they were created). Call with `admission` held.
    fn expire_abandoned_locked(&self, now: Instant) {
        let Ok(pending) = host::pending_in(&self.config.queue_dir, &self.config.decisions_dir)
        else {
            return;
        };
        let grace = self.abandon_after();
        let now_unix = unix_now();
        let mut activity = lock(&self.activity);
        let mut still_pending = HashSet::new();
        for request in pending.into_iter().filter_map(Result::ok) {
            let abandoned = match activity.get(&request.id) {
                Some(seen) => {
                    seen.waiters == 0 && now.saturating_duration_since(seen.last_seen) >= grace
                }
                None => now_unix.saturating_sub(request.created) >= grace.as_secs(),
            };
            // A decision may have landed since the listing: it wins.
            let decided = store::id_path(&self.config.decisions_dir, &request.id).exists();
            if !abandoned || decided {
                still_pending.insert(request.id);
                continue;
            }
            let path = store::id_path(&self.config.queue_dir, &request.id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    eprintln!(
                        "supervise: removing the abandoned request {}: {error}",
                        path.display()
                    );
                    still_pending.insert(request.id);
                    continue;
                }
            }
            self.audit.record(
                &AuditEntry::for_request(&request, Event::Expired, "expired").with_detail(format!(
                    "no call waited on it or asked about it for {} s",
                    grace.as_secs()
                )),
            );
        }
        // Forget what is not pending any more (decided, expired) unless a call waits.
        activity.retain(|id, seen| seen.waiters > 0 || still_pending.contains(id));
    }

    /// Counts a call waiting on `id` until the guard drops (the call returns
    /// or its connection goes away).
    fn waiting(&self, id: &str) -> WaitGuard<'_> {
        lock(&self.activity)
            .entry(id.to_owned())
            .and_modify(|activity| activity.waiters += 1)
            .or_insert(Activity {
                waiters: 1,
                last_seen: Instant::now(),
            });
        WaitGuard {
            supervisor: self,
            id: id.to_owned(),
        }
    }

    async fn wait(&self, request: &Request, timeout: Duration) -> Waited {
        let _waiting = self.waiting(&request.id);
        let deadline = Instant::now() + timeout;
        let mut shutdown = self.shutdown.clone();
        let mut last_refusal: Option<String> = None;
        loop {
            match self.check_decision(request) {
                Ok(Some(decision)) => {
                    let first = lock(&self.audited).insert(request.id.clone());
                    if first {
                        self.audit
                            .record(&AuditEntry::for_decision(request, &decision));
                    }
                    return Waited::Decided(decision);
                }
                Ok(None) => {}
                Err(reason) => {
                    if last_refusal.as_deref() != Some(reason.as_str()) {
                        eprintln!(
                            "supervise: ignoring the decision file for request {}: {reason}",
                            request.id
                        );
                        self.audit.record(
                            &AuditEntry::for_request(request, Event::InvalidDecision, "refused")
                                .with_detail(reason.clone()),
                        );
                        last_refusal = Some(reason);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.audit.record(
                    &AuditEntry::for_request(request, Event::Timeout, "timeout")
                        .with_detail(format!("no decision within {} s", timeout.as_secs())),
                );
                return Waited::Pending;
            }
            if *shutdown.borrow_and_update() {
                return Waited::ShuttingDown;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL_INTERVAL.min(deadline - now)) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return Waited::ShuttingDown;
                    }
                }
            }
        }
    }

    /// Reads `decisions_dir/<id>.json` — the only place a decision is taken
    /// from — and checks it against the pending request and the request
    /// file as queued. `Err` carries why a present file was refused.
    fn check_decision(&self, request: &Request) -> Result<Option<Decision>, String> {
        let path = store::id_path(&self.config.decisions_dir, &request.id);
        let Some(decision) = store::read_json::<Decision>(&path).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        decision.validate_for(request, &request.id)?;
        match host::read_request(&self.config.queue_dir, &request.id) {
            Ok(Some(queued)) if &queued == request => Ok(Some(decision)),
            Ok(Some(_)) => Err("the request file was changed after it was queued".into()),
            Ok(None) => Err("the request file is gone from the queue".into()),
            Err(error) => Err(format!("the request file is unreadable: {error}")),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Refusals not yet audited are counted in one last line.
        let mut refusals = lock(&self.refusals);
        self.log_refusals(&mut refusals, Instant::now());
    }
}

/// A waiting call; see [`Supervisor::waiting`].
struct WaitGuard<'a> {
    supervisor: &'a Supervisor,
    id: String,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Some(activity) = lock(&self.supervisor.activity).get_mut(&self.id) {
            activity.waiters = activity.waiters.saturating_sub(1);
            activity.last_seen = Instant::now();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
