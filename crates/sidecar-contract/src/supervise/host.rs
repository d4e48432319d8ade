//! The host CLI's side: list pending requests and record decisions.
//!
//! `dir` is the bottle's supervise state dir on the host,
//! `STATE/<slug>/supervise/`, holding `queue/` (bind-mounted writable into
//! the sidecar) and `decisions/` (bind-mounted read-only). These functions
//! only touch files; applying an approved egress change to the running
//! policy is the CLI's job and comes *before* [`write_decision`], so the
//! agent retries against the new policy.

use std::path::{Path, PathBuf};

use crate::supervise::Error;
use crate::supervise::request::{Decision, Request, is_valid_id};
use crate::supervise::store;

/// Name of the queue subdirectory.
pub const QUEUE_SUBDIR: &str = "queue";
/// Name of the decisions subdirectory.
pub const DECISIONS_SUBDIR: &str = "decisions";

/// `dir/queue`.
pub fn queue_dir(dir: &Path) -> PathBuf {
    dir.join(QUEUE_SUBDIR)
}

/// `dir/decisions`.
pub fn decisions_dir(dir: &Path) -> PathBuf {
    dir.join(DECISIONS_SUBDIR)
}

/// Requests in `dir/queue` that have no decision in `dir/decisions`,
/// oldest first. A malformed request file is an error naming the file.
pub fn pending_requests(dir: &Path) -> Result<Vec<Request>, Error> {
    let mut pending = pending_in(&queue_dir(dir), &decisions_dir(dir))?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    pending.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Ok(pending)
}

/// Reads and checks every undecided request in `queue`; per-file results so
/// the sidecar can skip a bad file where the CLI reports it.
pub fn pending_in(queue: &Path, decisions: &Path) -> Result<Vec<Result<Request, Error>>, Error> {
    let decided = match store::list_ids(decisions) {
        Ok(ids) => ids,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(error) => return Err(error),
    };
    let mut out = Vec::new();
    for id in store::list_ids(queue)? {
        if decided.binary_search(&id).is_ok() {
            continue;
        }
        match read_request(queue, &id) {
            Ok(Some(request)) => out.push(Ok(request)),
            // Removed between listing and reading.
            Ok(None) => {}
            Err(error) => out.push(Err(error)),
        }
    }
    Ok(out)
}

/// Reads `queue/<id>.json` and checks it (its id must match its name).
pub fn read_request(queue: &Path, id: &str) -> Result<Option<Request>, Error> {
    let path = store::id_path(queue, id);
    let Some(request) = store::read_json::<Request>(&path)? else {
        return Ok(None);
    };
    let checked = if request.id != id {
        Err(format!("its id {} does not match its name", request.id))
    } else {
        request.validate()
    };
    checked
        .map(|()| Some(request))
        .map_err(|reason| Error::InvalidFile { path, reason })
}

/// The request `id` (decided or not), if it is queued.
pub fn find_request(dir: &Path, id: &str) -> Result<Option<Request>, Error> {
    if !is_valid_id(id) {
        return Err(Error::BadId(id.to_owned()));
    }
    read_request(&queue_dir(dir), id)
}

/// The one queued request whose id starts with `prefix` (at least 4 hex
/// digits), so the human can type a short id.
pub fn resolve_request(dir: &Path, prefix: &str) -> Result<Request, Error> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() < 4 || prefix.len() > 32 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadId(prefix));
    }
    let matching: Vec<String> = store::list_ids(&queue_dir(dir))?
        .into_iter()
        .filter(|id| id.starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [] => Err(Error::NoSuchRequest(prefix)),
        [id] => find_request(dir, id)?.ok_or(Error::NoSuchRequest(prefix)),
        more => Err(Error::AmbiguousId {
            prefix,
            count: more.len(),
        }),
    }
}

/// The decision recorded for request `id`, if any.
pub fn find_decision(dir: &Path, id: &str) -> Result<Option<Decision>, Error> {
    if !is_valid_id(id) {
        return Err(Error::BadId(id.to_owned()));
    }
    store::read_json(&store::id_path(&decisions_dir(dir), id))
}

/// Records `decision` as `dir/decisions/<id>.json`, atomically and at most
/// once: refuses when the request is not queued, when a decision exists
/// already (even one written concurrently), and when the decision does not
/// fit the request (egress: approved|denied; question: answered|denied).
pub fn write_decision(dir: &Path, decision: &Decision) -> Result<(), Error> {
    let request = find_request(dir, &decision.id)?
        .ok_or_else(|| Error::NoSuchRequest(decision.id.clone()))?;
    decision
        .validate_for(&request, &request.id)
        .map_err(|reason| Error::InvalidDecision {
            id: decision.id.clone(),
            reason,
        })?;
    let decisions = decisions_dir(dir);
    if store::id_path(&decisions, &decision.id).exists() {
        return Err(Error::DecisionExists(decision.id.clone()));
    }
    match store::write_json_atomic(
        &decisions,
        &format!("{}.json", decision.id),
        decision,
        false,
    ) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Error::DecisionExists(decision.id.clone()))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::request::{Outcome, RequestKind};

    fn state() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(queue_dir(dir.path())).unwrap();
        std::fs::create_dir(decisions_dir(dir.path())).unwrap();
        dir
    }

    fn queue(dir: &Path, id: &str, created: u64, kind: RequestKind) -> Request {
        let request = Request {
            id: id.into(),
            bottle_slug: "b".into(),
            created,
            kind,
            host: (kind == RequestKind::Egress).then(|| "docs.rs".into()),
            port: None,
            methods: None,
            reason: (kind == RequestKind::Egress).then(|| "docs".into()),
            question: (kind == RequestKind::Question).then(|| "why?".into()),
        };
        store::write_json_atomic(&queue_dir(dir), &format!("{id}.json"), &request, false).unwrap();
        request
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccc";

    #[test]
    fn pending_is_undecided_and_sorted_by_created() {
        let dir = state();
        let a = queue(dir.path(), A, 30, RequestKind::Egress);
        let b = queue(dir.path(), B, 10, RequestKind::Question);
        queue(dir.path(), C, 20, RequestKind::Egress);
        std::fs::write(queue_dir(dir.path()).join("junk.txt"), "x").unwrap();
        write_decision(dir.path(), &Decision::now(C, Outcome::Denied, None)).unwrap();
        assert_eq!(pending_requests(dir.path()).unwrap(), [b, a]);
    }

    #[test]
    fn pending_reports_a_malformed_request() {
        let dir = state();
        std::fs::write(store::id_path(&queue_dir(dir.path()), A), "{").unwrap();
        let error = pending_requests(dir.path()).unwrap_err();
        assert!(matches!(error, Error::ParseFile { .. }), "{error}");
        // A request whose id is not its name.
        let dir = state();
        let request = queue(dir.path(), A, 1, RequestKind::Egress);
        store::write_json_atomic(
            &queue_dir(dir.path()),
            &format!("{B}.json"),
            &request,
            false,
        )
        .unwrap();
        assert!(matches!(
            pending_requests(dir.path()),
            Err(Error::InvalidFile { .. })
        ));
    }

    #[test]
    fn find_and_resolve() {
        let dir = state();
        let a = queue(dir.path(), A, 1, RequestKind::Egress);
        queue(
            dir.path(),
            "aaaabbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            1,
            RequestKind::Egress,
        );
        assert_eq!(find_request(dir.path(), A).unwrap(), Some(a.clone()));
        assert_eq!(find_request(dir.path(), B).unwrap(), None);
        assert!(matches!(
            find_request(dir.path(), "../x"),
            Err(Error::BadId(_))
        ));
        assert_eq!(resolve_request(dir.path(), "AAAAAAAA").unwrap(), a);
        assert!(matches!(
            resolve_request(dir.path(), "aaaa"),
            Err(Error::AmbiguousId { count: 2, .. })
        ));
        assert!(matches!(
            resolve_request(dir.path(), "dddd"),
            Err(Error::NoSuchRequest(_))
        ));
        assert!(matches!(
            resolve_request(dir.path(), "aa"),
            Err(Error::BadId(_))
        ));
    }

    #[test]
    fn decisions_are_written_once_and_must_fit() {
        let dir = state();
        queue(dir.path(), A, 1, RequestKind::Egress);
        queue(dir.path(), B, 1, RequestKind::Question);
        // No such request.
        let error =
            write_decision(dir.path(), &Decision::now(C, Outcome::Denied, None)).unwrap_err();
        assert!(matches!(error, Error::NoSuchRequest(_)), "{error}");
        // Outcome does not fit the kind.
        let error = write_decision(
            dir.path(),
            &Decision::now(A, Outcome::Answered, Some("x".into())),
        )
        .unwrap_err();
        assert!(matches!(error, Error::InvalidDecision { .. }), "{error}");
        let error =
            write_decision(dir.path(), &Decision::now(B, Outcome::Approved, None)).unwrap_err();
        assert!(matches!(error, Error::InvalidDecision { .. }), "{error}");
        // Bad id.
        let error = write_decision(dir.path(), &Decision::now("../../x", Outcome::Denied, None))
            .unwrap_err();
        assert!(matches!(error, Error::BadId(_)), "{error}");
        // Once.
        let approved = Decision::now(A, Outcome::Approved, Some("ok".into()));
        write_decision(dir.path(), &approved).unwrap();
        let error =
            write_decision(dir.path(), &Decision::now(A, Outcome::Denied, None)).unwrap_err();
        assert!(matches!(error, Error::DecisionExists(_)), "{error}");
        assert_eq!(find_decision(dir.path(), A).unwrap(), Some(approved));
        assert_eq!(find_decision(dir.path(), B).unwrap(), None);
        // Only the decision file and nothing else landed in decisions/.
        let names: Vec<_> = std::fs::read_dir(decisions_dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [format!("{A}.json")]);
    }
}
