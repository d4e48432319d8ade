//! The host side of the supervise channel: list the agents' pending requests and
//! decide them. An approved egress request is applied (atomically, confirmed) before
//! the decision is written, so the host is reachable when the agent's call returns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sidecar_contract::supervise::{Decision, Outcome, Request, RequestKind};

use crate::engine::Engine;
use crate::error::{BackendError, Result};
use crate::ops::{self, PolicyChange};

/// A pending request and the bottle it came from.
#[derive(Clone, Debug)]
pub struct PendingRequest {
    /// The bottle's slug.
    pub slug: String,
    /// The request as the agent filed it.
    pub request: Request,
}

fn supervise_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("supervise")
}

fn supervise_error(
    dir: &Path,
) -> impl FnOnce(sidecar_contract::supervise::Error) -> BackendError + '_ {
    move |e| BackendError::Corrupt {
        path: dir.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Pending requests of every bottle in the state root (or of `slug` only), oldest first.
pub fn pending(
    backend: &dyn Engine,
    state_root: &Path,
    slug: Option<&str>,
) -> Result<Vec<PendingRequest>> {
    let mut all = Vec::new();
    for bottle in ops::list(backend, state_root)? {
        if slug.is_some_and(|s| s != bottle.slug) {
            continue;
        }
        let dir = supervise_dir(&bottle.state_dir);
        if !dir.join("queue").is_dir() {
            continue;
        }
        for request in sidecar_contract::supervise::host::pending_requests(&dir)
            .map_err(supervise_error(&dir))?
        {
            all.push(PendingRequest {
                slug: bottle.slug.clone(),
                request,
            });
        }
    }
    all.sort_by_key(|p| p.request.created);
    Ok(all)
}

/// Finds a pending request by id or unambiguous id prefix, across bottles.
fn resolve(
    backend: &dyn Engine,
    state_root: &Path,
    id: &str,
) -> Result<(ops::BottleStatus, Request)> {
    let mut found = Vec::new();
    for bottle in ops::list(backend, state_root)? {
        let dir = supervise_dir(&bottle.state_dir);
        if !dir.join("queue").is_dir() {
            continue;
        }
        if let Ok(request) = sidecar_contract::supervise::host::resolve_request(&dir, id) {
            found.push((bottle, request));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(BackendError::BadPolicyChange(format!(
            "no pending request `{id}`; `bottle requests` lists them"
        ))),
        _ => Err(BackendError::BadPolicyChange(format!(
            "`{id}` matches requests of several bottles; give more of the id"
        ))),
    }
}

/// Approves request `id`: an egress request is applied to the bottle's policy and
/// confirmed first; a question is answered with `note`.
pub fn approve(
    backend: &dyn Engine,
    state_root: &Path,
    id: &str,
    note: Option<String>,
) -> Result<(String, Request)> {
    let (bottle, request) = resolve(backend, state_root, id)?;
    let dir = supervise_dir(&bottle.state_dir);
    let decision = match request.kind {
        RequestKind::Egress => {
            let host = request.host.clone().unwrap_or_default();
            let change = PolicyChange::Allow {
                methods: request.methods.clone(),
                host: host.clone(),
                port: request.port,
            };
            let version = match ops::change_egress(
                backend,
                state_root,
                &bottle.slug,
                &change,
                Duration::from_secs(15),
            ) {
                Ok(version) => version,
                // Allowed meanwhile (by hand or another request): confirm what runs.
                Err(BackendError::AlreadyAllowed { .. }) => {
                    let container = bottle
                        .containers
                        .iter()
                        .find(|c| {
                            c.labels
                                .get(compose_render::LABEL_ROLE)
                                .is_some_and(|r| r == compose_render::EGRESS_SERVICE)
                        })
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    ops::running_policy_version(backend, &container)?
                }
                Err(error) => return Err(error),
            };
            Decision::now(request.id.clone(), Outcome::Approved, note).with_policy_version(version)
        }
        RequestKind::Question => {
            let note = note.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
                BackendError::BadPolicyChange(
                    "a question needs an answer: pass it with --note".into(),
                )
            })?;
            Decision::now(request.id.clone(), Outcome::Answered, Some(note))
        }
    };
    sidecar_contract::supervise::host::write_decision(&dir, &decision)
        .map_err(supervise_error(&dir))?;
    Ok((bottle.slug, request))
}

/// Denies request `id` with an optional note for the agent.
pub fn deny(
    backend: &dyn Engine,
    state_root: &Path,
    id: &str,
    note: Option<String>,
) -> Result<(String, Request)> {
    let (bottle, request) = resolve(backend, state_root, id)?;
    let dir = supervise_dir(&bottle.state_dir);
    sidecar_contract::supervise::host::write_decision(
        &dir,
        &Decision::now(request.id.clone(), Outcome::Denied, note),
    )
    .map_err(supervise_error(&dir))?;
    Ok((bottle.slug, request))
}
