//! The sidecar's core: queue a request, then wait for the human's decision
//! in `decisions_dir` — and only there.

use std::collections::HashSet;
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
    shutdown: watch::Receiver<bool>,
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
            shutdown,
        })
    }

    /// Queues `ask` (id and time are filled in here) — or joins an identical
    /// request that is still pending — and waits up to `timeout` for its
    /// decision. Returns the request as queued and how the wait ended.
    pub(crate) async fn ask(
        &self,
        mut ask: Request,
        timeout: Duration,
    ) -> Result<(Request, Waited), Error> {
        ask.bottle_slug = self.config.bottle_slug.clone();
        let request = match self.pending_like(&ask) {
            Some(existing) => {
                self.audit.record(
                    &AuditEntry::for_request(&existing, Event::RequestRepeated, "pending")
                        .with_detail(format!("asked again: {}", ask.summary())),
                );
                existing
            }
            None => {
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
                self.audit
                    .record(&AuditEntry::for_request(&ask, Event::Request, "pending"));
                ask
            }
        };
        let waited = self.wait(&request, timeout).await;
        Ok((request, waited))
    }

    /// The oldest undecided request in the queue asking for the same thing.
    fn pending_like(&self, ask: &Request) -> Option<Request> {
        let pending = host::pending_in(&self.config.queue_dir, &self.config.decisions_dir).ok()?;
        pending
            .into_iter()
            .filter_map(Result::ok)
            .filter(|request| request.same_ask(ask))
            .min_by_key(|request| request.created)
    }

    async fn wait(&self, request: &Request, timeout: Duration) -> Waited {
        let deadline = Instant::now() + timeout;
        let mut shutdown = self.shutdown.clone();
        let mut last_refusal: Option<String> = None;
        loop {
            match self.check_decision(request) {
                Ok(Some(decision)) => {
                    let first = self
                        .audited
                        .lock()
                        .unwrap_or_else(|poison| poison.into_inner())
                        .insert(request.id.clone());
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
