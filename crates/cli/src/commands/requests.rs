//! `bottle requests`, `bottle approve`, `bottle deny`: the human's side of supervise.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use backend_api::{PendingRequest, RequestKind};

use crate::commands::lifecycle::user_error;
use crate::{CliError, engine, output};

/// Agent-supplied text, with control characters escaped.
fn shown(text: &str) -> String {
    output::escape_controls(text)
}

fn line(pending: &PendingRequest) -> String {
    let r = pending;
    let what = match r.kind {
        RequestKind::Egress => format!(
            "egress {}{}{} because: {}",
            shown(r.host.as_deref().unwrap_or("?")),
            r.port.map(|p| format!(":{p}")).unwrap_or_default(),
            r.methods
                .as_ref()
                .map(|m| format!(" ({})", m.join(",")))
                .unwrap_or_default(),
            shown(r.reason.as_deref().unwrap_or("")),
        ),
        RequestKind::Question => {
            format!("question: {}", shown(r.question.as_deref().unwrap_or("")))
        }
    };
    format!(
        "{}  {:<20} {what}\n",
        &r.id[..12.min(r.id.len())],
        pending.slug
    )
}

/// `bottle requests [SLUG] [--json] [--watch]`.
pub fn list(slug: Option<&str>, json: bool, watch: bool) -> Result<(), CliError> {
    let backend = engine::backend()?;
    if json {
        let pending = backend.requests(slug).map_err(user_error)?;
        let items: Vec<serde_json::Value> = pending
            .iter()
            .map(|p| serde_json::json!({"slug": p.slug, "request": p}))
            .collect();
        let mut text =
            serde_json::to_string_pretty(&items).map_err(|e| CliError::Internal(e.to_string()))?;
        text.push('\n');
        output::print(&text);
        return Ok(());
    }
    let bell = watch && std::io::stdout().is_terminal();
    let mut seen = BTreeSet::new();
    loop {
        let pending = backend.requests(slug).map_err(user_error)?;
        let mut text = String::new();
        for p in pending.iter().filter(|p| !seen.contains(&p.id)) {
            text.push_str(&line(p));
        }
        if !text.is_empty() && bell {
            text.push('\u{7}');
        }
        if !watch {
            if pending.is_empty() {
                text.push_str("no pending requests\n");
            } else {
                let _ = writeln!(
                    text,
                    "approve with `bottle approve ID [--note ...]`, refuse with `bottle deny ID [--note ...]`"
                );
            }
            output::print(&text);
            return Ok(());
        }
        output::print(&text);
        seen.extend(pending.into_iter().map(|p| p.id));
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `bottle approve|deny ID [--note ...]`.
pub fn decide(id: &str, note: Option<String>, approve: bool) -> Result<(), CliError> {
    let decided = engine::backend()?
        .decide(id, approve, note)
        .map_err(user_error)?;
    let verb = match (approve, &decided.kind) {
        (true, RequestKind::Egress) => "approved and applied",
        (true, RequestKind::Question) => "answered",
        (false, _) => "denied",
    };
    output::print(&format!(
        "{}: request {} {verb}\n",
        decided.slug,
        &decided.id[..12.min(decided.id.len())]
    ));
    Ok(())
}
