//! The live state and its fan-out: one poller asks the backend (on the poll lane)
//! for the bottles, the pending requests and each bottle's new audit lines, keeps
//! what changed in the [`Hub`], and broadcasts it to every page as a server-sent
//! event (`bottles`, `requests`, `history`, `traffic`, `problem`). A page that
//! connects first gets a `snapshot` of everything.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backend_api::{AuditCursor, AuditLog, Backend, PendingRequest};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::routes::App;
use crate::views::{self, BottleView, HistoryEntry, Outcome, TrafficLine};

/// How many traffic lines the dashboard keeps (the page shows them all).
pub const TRAFFIC_KEPT: usize = 1000;
/// How many decided requests it keeps.
pub const HISTORY_KEPT: usize = 200;
/// At most this many chunks of one log are read per poll (each at most what the
/// backend returns per call).
const CHUNKS_PER_POLL: usize = 64;

/// One server-sent event: its name and its JSON data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `snapshot`, `bottles`, `requests`, `history`, `traffic`, `problem`.
    pub name: &'static str,
    /// JSON.
    pub data: String,
}

impl Event {
    /// The event in the `text/event-stream` framing (JSON has no raw newlines).
    pub fn framed(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.name, self.data)
    }
}

/// Everything the page shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Every bottle.
    pub bottles: Vec<BottleView>,
    /// Pending requests, oldest first.
    pub requests: Vec<PendingRequest>,
    /// Decided requests, newest last.
    pub history: VecDeque<HistoryEntry>,
    /// The latest audit lines, oldest first.
    pub traffic: VecDeque<TrafficLine>,
    /// What the backend could not do on the last poll, in words.
    pub problem: Option<String>,
}

#[derive(Default)]
struct State {
    snapshot: Snapshot,
    next_seq: u64,
    /// Requests decided here: not reported as `gone` when they leave the queue.
    decided: BTreeSet<String>,
}

/// The live state and the channel every page listens on.
pub struct Hub {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            events: broadcast::channel(256).0,
        }
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, name: &'static str, data: String) {
        // No subscriber is fine: the snapshot carries it to the next page.
        let _ = self.events.send(Event { name, data });
    }

    /// A page connects: everything so far, and the events from now on.
    pub fn subscribe(&self) -> (Event, broadcast::Receiver<Event>) {
        let state = self.lock();
        let receiver = self.events.subscribe();
        (
            Event {
                name: "snapshot",
                data: json(&state.snapshot),
            },
            receiver,
        )
    }

    /// Everything, as JSON (`GET /api/state`).
    pub fn snapshot_json(&self) -> String {
        json(&self.lock().snapshot)
    }

    /// The pending request `id` (exactly), if the last poll saw it.
    pub fn pending(&self, id: &str) -> Option<PendingRequest> {
        self.lock()
            .snapshot
            .requests
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    /// The bottles the last poll saw.
    pub fn bottles(&self) -> Vec<BottleView> {
        self.lock().snapshot.bottles.clone()
    }

    /// The bottles changed (or not).
    pub fn set_bottles(&self, bottles: Vec<BottleView>) {
        let mut state = self.lock();
        if state.snapshot.bottles != bottles {
            state.snapshot.bottles = bottles;
            let data = json(&state.snapshot.bottles);
            drop(state);
            self.send("bottles", data);
        }
    }

    /// The pending requests now: those gone without a decision here go to history.
    pub fn set_requests(&self, requests: Vec<PendingRequest>) {
        let mut state = self.lock();
        if state.snapshot.requests == requests {
            return;
        }
        let now: BTreeSet<&str> = requests.iter().map(|r| r.id.as_str()).collect();
        let gone: Vec<PendingRequest> = state
            .snapshot
            .requests
            .iter()
            .filter(|r| !now.contains(r.id.as_str()))
            .cloned()
            .collect();
        let mut history_changed = false;
        for request in gone {
            if !state.decided.remove(&request.id) {
                push_history(&mut state.snapshot.history, request, Outcome::Gone, None);
                history_changed = true;
            }
        }
        state.snapshot.requests = requests;
        let requests = json(&state.snapshot.requests);
        let history = history_changed.then(|| json(&state.snapshot.history));
        drop(state);
        self.send("requests", requests);
        if let Some(history) = history {
            self.send("history", history);
        }
    }

    /// A request was decided here: it leaves the inbox for the history at once.
    pub fn decided(&self, request: PendingRequest, outcome: Outcome, note: Option<String>) {
        let mut state = self.lock();
        state.decided.insert(request.id.clone());
        state.snapshot.requests.retain(|r| r.id != request.id);
        push_history(&mut state.snapshot.history, request, outcome, note);
        let requests = json(&state.snapshot.requests);
        let history = json(&state.snapshot.history);
        drop(state);
        self.send("requests", requests);
        self.send("history", history);
    }

    /// New audit lines.
    pub fn traffic(&self, lines: Vec<(String, AuditLog, String)>) {
        if lines.is_empty() {
            return;
        }
        let mut state = self.lock();
        let skip = lines.len().saturating_sub(TRAFFIC_KEPT);
        let mut batch = Vec::with_capacity(lines.len() - skip);
        for (slug, log, line) in lines.into_iter().skip(skip) {
            let seq = state.next_seq;
            state.next_seq += 1;
            batch.push(views::traffic_line(seq, &slug, log, &line));
        }
        let traffic = &mut state.snapshot.traffic;
        traffic.extend(batch.iter().cloned());
        while traffic.len() > TRAFFIC_KEPT {
            traffic.pop_front();
        }
        drop(state);
        self.send("traffic", json(&batch));
    }

    /// What went wrong on the last poll (None: nothing).
    pub fn set_problem(&self, problem: Option<String>) {
        let mut state = self.lock();
        if state.snapshot.problem != problem {
            state.snapshot.problem = problem;
            let data = json(&state.snapshot.problem);
            drop(state);
            self.send("problem", data);
        }
    }
}

fn push_history(
    history: &mut VecDeque<HistoryEntry>,
    request: PendingRequest,
    outcome: Outcome,
    note: Option<String>,
) {
    history.push_back(HistoryEntry {
        request,
        outcome,
        note,
    });
    while history.len() > HISTORY_KEPT {
        history.pop_front();
    }
}

type Cursors = BTreeMap<(String, AuditLog), AuditCursor>;

/// What one poll found.
struct Round {
    bottles: Option<Result<Vec<BottleView>, String>>,
    slugs: Vec<String>,
    requests: Option<Result<Vec<PendingRequest>, String>>,
    lines: Vec<(String, AuditLog, String)>,
    cursors: Cursors,
    audit_problem: Option<String>,
}

/// What a poll asks the backend beyond the audit logs.
#[derive(Clone, Copy)]
struct Asks {
    list: bool,
    requests: bool,
}

/// One poll, on the poll lane: the bottles and the requests (when asked: each lists
/// the engine's containers), and the new lines of each bottle's audit logs (a file
/// check when nothing is new).
fn poll_once(backend: &dyn Backend, asks: Asks, known: Vec<String>, old: Cursors) -> Round {
    let bottles = asks.list.then(|| {
        backend
            .list()
            .map(|all| {
                all.iter()
                    .map(|b| BottleView::new(b, views::manifest_changed(b)))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string())
    });
    let slugs = match &bottles {
        Some(Ok(views)) => views.iter().map(|b| b.slug.clone()).collect(),
        _ => known,
    };
    let requests = asks
        .requests
        .then(|| backend.requests(None).map_err(|e| e.to_string()));
    let mut lines = Vec::new();
    let mut cursors = Cursors::new();
    let mut audit_problem = None;
    for slug in &slugs {
        for log in AuditLog::ALL {
            let key = (slug.clone(), log);
            let mut cursor = old.get(&key).copied().unwrap_or_default();
            for _ in 0..CHUNKS_PER_POLL {
                match backend.audit(slug, log, cursor) {
                    Ok(chunk) => {
                        lines.extend(chunk.lines.into_iter().map(|l| (slug.clone(), log, l)));
                        cursor = chunk.next;
                        if !chunk.more {
                            break;
                        }
                    }
                    // Gone since the list, or never had a state dir: nothing to follow.
                    Err(backend_api::Error::UnknownBottle { .. }) => break,
                    Err(e) => {
                        audit_problem = Some(e.to_string());
                        break;
                    }
                }
            }
            cursors.insert(key, cursor);
        }
    }
    Round {
        bottles,
        slugs,
        requests,
        lines,
        cursors,
        audit_problem,
    }
}

/// Polls the backend every `interval` for audit lines, every other time for requests
/// and every fourth time for the bottle list, and feeds the hub, until the task is
/// aborted.
pub async fn poll(app: Arc<App>, interval: Duration) {
    let mut cursors = Cursors::new();
    let mut slugs = Vec::new();
    let mut list_problem = None;
    let mut requests_problem = None;
    for tick in 0u64.. {
        let asks = Asks {
            list: tick % 4 == 0,
            requests: tick % 2 == 0,
        };
        let (known, old) = (slugs.clone(), std::mem::take(&mut cursors));
        let round = match app
            .lanes
            .poll(move |backend| poll_once(backend, asks, known, old))
            .await
        {
            Ok(round) => round,
            Err(e) => {
                app.hub.set_problem(Some(e.to_string()));
                return;
            }
        };
        match round.bottles {
            Some(Ok(bottles)) => {
                list_problem = None;
                app.hub.set_bottles(bottles);
            }
            Some(Err(e)) => list_problem = Some(format!("listing bottles: {e}")),
            None => {}
        }
        let mut problems: Vec<String> = list_problem.iter().cloned().collect();
        match round.requests {
            Some(Ok(requests)) => {
                requests_problem = None;
                app.hub.set_requests(requests);
            }
            Some(Err(e)) => requests_problem = Some(format!("reading requests: {e}")),
            None => {}
        }
        problems.extend(requests_problem.iter().cloned());
        if let Some(e) = round.audit_problem {
            problems.push(format!("reading audit logs: {e}"));
        }
        app.hub.traffic(round.lines);
        app.hub
            .set_problem((!problems.is_empty()).then(|| problems.join("; ")));
        slugs = round.slugs;
        cursors = round.cursors;
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str) -> PendingRequest {
        PendingRequest {
            slug: "dev-1".into(),
            id: id.into(),
            created: 1,
            kind: backend_api::RequestKind::Question,
            host: None,
            port: None,
            methods: None,
            reason: None,
            question: Some("?".into()),
        }
    }

    #[test]
    fn traffic_is_capped_and_numbered() {
        let hub = Hub::default();
        let (_, mut events) = hub.subscribe();
        let lines = |n: usize| -> Vec<(String, AuditLog, String)> {
            (0..n)
                .map(|i| ("dev-1".into(), AuditLog::Egress, format!("{{\"n\":{i}}}")))
                .collect()
        };
        hub.traffic(lines(TRAFFIC_KEPT + 5));
        hub.traffic(lines(3));
        let state = hub.lock();
        let traffic = &state.snapshot.traffic;
        assert_eq!(traffic.len(), TRAFFIC_KEPT);
        assert_eq!(traffic.back().unwrap().seq, TRAFFIC_KEPT as u64 + 2);
        assert!(
            traffic
                .iter()
                .zip(traffic.iter().skip(1))
                .all(|(a, b)| a.seq + 1 == b.seq)
        );
        drop(state);
        assert_eq!(events.try_recv().unwrap().name, "traffic");
        hub.traffic(Vec::new());
        assert_eq!(events.try_recv().unwrap().name, "traffic");
        assert!(events.try_recv().is_err(), "no event for no lines");
    }

    #[test]
    fn decided_requests_are_history_once_and_others_are_gone() {
        let hub = Hub::default();
        hub.set_requests(vec![request("a"), request("b")]);
        hub.decided(request("a"), Outcome::Denied, Some("no".into()));
        // The next poll no longer sees either: only b is reported gone.
        hub.set_requests(Vec::new());
        let state = hub.lock();
        let outcomes: Vec<(&str, &Outcome)> = state
            .snapshot
            .history
            .iter()
            .map(|h| (h.request.id.as_str(), &h.outcome))
            .collect();
        assert_eq!(outcomes, [("a", &Outcome::Denied), ("b", &Outcome::Gone)]);
    }
}
