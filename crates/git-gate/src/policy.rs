//! The push policy: which ref updates the agent may send upstream.
//!
//! Pure code: the caller supplies what the mirror knows (the ref's current
//! id, whether the update is a fast-forward) so every rule is unit-tested
//! without git.

use std::fmt;

use crate::config::UpstreamConfig;

/// One `old new ref` line as git's pre-receive hook reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// Object id the agent believes the ref has now (all zeros: create).
    pub old: String,
    /// Object id the agent wants the ref to have (all zeros: delete).
    pub new: String,
    /// Full ref name, e.g. `refs/heads/agent/fix`.
    pub refname: String,
}

impl RefUpdate {
    /// Parses one hook input line `OLD NEW REF`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split(' ');
        let old = parts.next()?;
        let new = parts.next()?;
        let refname = parts.next()?;
        if parts.next().is_some() || !is_object_id(old) || !is_object_id(new) {
            return None;
        }
        if !refname.starts_with("refs/") {
            return None;
        }
        Some(Self {
            old: old.to_owned(),
            new: new.to_owned(),
            refname: refname.to_owned(),
        })
    }

    /// The update creates the ref.
    pub fn is_create(&self) -> bool {
        is_zero_id(&self.old)
    }

    /// The update deletes the ref.
    pub fn is_delete(&self) -> bool {
        is_zero_id(&self.new)
    }
}

/// What the mirror knows about an update, gathered by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorFacts {
    /// The ref's id in the mirror right now (None: the ref does not exist).
    pub current: Option<String>,
    /// Whether `new` descends from `old`; only consulted when both are non-zero.
    pub fast_forward: bool,
}

/// Why an update was refused; its `Display` names the rule for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The upstream is configured `read_only`.
    ReadOnly,
    /// The ref matches none of `push_refs`.
    NotInPushRefs {
        /// The configured patterns, shown so the agent knows where it may push.
        patterns: Vec<String>,
    },
    /// The agent's `old` id is not what the mirror (= upstream) has.
    Stale {
        /// What the mirror has (None: the ref does not exist).
        current: Option<String>,
    },
    /// A delete while `allow_delete` is false.
    Delete,
    /// A non-fast-forward update while `allow_force_push` is false.
    ForcePush,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ReadOnly => write!(f, "push refused: upstream is read_only"),
            Refusal::NotInPushRefs { patterns } => {
                write!(
                    f,
                    "push refused: not in push_refs [{}]",
                    patterns.join(", ")
                )
            }
            Refusal::Stale { current: Some(id) } => write!(
                f,
                "push refused: stale, the upstream has {id}; fetch and retry"
            ),
            Refusal::Stale { current: None } => write!(
                f,
                "push refused: stale, the ref no longer exists upstream; fetch and retry"
            ),
            Refusal::Delete => write!(f, "delete refused: allow_delete is false"),
            Refusal::ForcePush => write!(
                f,
                "force push refused: not a fast-forward and allow_force_push is false"
            ),
        }
    }
}

/// Decides one update. Rules in order: read_only, push_refs, stale old id,
/// delete, force push.
pub fn check(
    upstream: &UpstreamConfig,
    update: &RefUpdate,
    facts: &MirrorFacts,
) -> Result<(), Refusal> {
    if upstream.read_only {
        return Err(Refusal::ReadOnly);
    }
    if !upstream
        .push_refs
        .iter()
        .any(|pattern| glob_matches(pattern, &update.refname))
    {
        return Err(Refusal::NotInPushRefs {
            patterns: upstream.push_refs.clone(),
        });
    }
    let expected = (!update.is_create()).then(|| update.old.clone());
    if facts.current != expected {
        return Err(Refusal::Stale {
            current: facts.current.clone(),
        });
    }
    if update.is_delete() {
        if !upstream.allow_delete {
            return Err(Refusal::Delete);
        }
        return Ok(());
    }
    if !update.is_create() && !facts.fast_forward && !upstream.allow_force_push {
        return Err(Refusal::ForcePush);
    }
    Ok(())
}

/// Matches a ref against a `push_refs` pattern: `*` is any run of
/// characters (including `/`, as in git refspecs), `?` is one character.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// A hex object id (SHA-1 or SHA-256 length).
pub fn is_object_id(id: &str) -> bool {
    (id.len() == 40 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The all-zero id git uses for "no object".
pub fn is_zero_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: &str = "0000000000000000000000000000000000000000";
    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn upstream() -> UpstreamConfig {
        UpstreamConfig {
            name: "p".into(),
            url: "git@h:p.git".into(),
            key_path: "/k".into(),
            known_hosts_path: "/kh".into(),
            push_refs: vec!["refs/heads/agent/*".into()],
            allow_force_push: false,
            allow_delete: false,
            read_only: false,
        }
    }

    fn update(old: &str, new: &str, refname: &str) -> RefUpdate {
        RefUpdate {
            old: old.into(),
            new: new.into(),
            refname: refname.into(),
        }
    }

    fn facts(current: Option<&str>, fast_forward: bool) -> MirrorFacts {
        MirrorFacts {
            current: current.map(str::to_owned),
            fast_forward,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("refs/heads/agent/*", "refs/heads/agent/x"));
        assert!(glob_matches("refs/heads/agent/*", "refs/heads/agent/a/b"));
        assert!(!glob_matches("refs/heads/agent/*", "refs/heads/main"));
        assert!(!glob_matches("refs/heads/agent/*", "refs/heads/agent"));
        assert!(glob_matches("refs/heads/v?", "refs/heads/v1"));
        assert!(!glob_matches("refs/heads/v?", "refs/heads/v10"));
        assert!(glob_matches("refs/*/agent-*-x", "refs/heads/agent-1-2-x"));
        assert!(glob_matches("refs/heads/main", "refs/heads/main"));
        assert!(!glob_matches("refs/heads/main", "refs/heads/main2"));
    }

    #[test]
    fn parses_hook_lines() {
        let line = format!("{A} {B} refs/heads/agent/x");
        assert_eq!(
            RefUpdate::parse(&line),
            Some(update(A, B, "refs/heads/agent/x"))
        );
        assert_eq!(RefUpdate::parse("x y refs/heads/a"), None);
        assert_eq!(RefUpdate::parse(&format!("{A} {B} HEAD")), None);
        assert_eq!(RefUpdate::parse(&format!("{A} {B} refs/a extra")), None);
    }

    #[test]
    fn allowed_fast_forward_and_create() {
        let u = upstream();
        assert_eq!(
            check(
                &u,
                &update(A, B, "refs/heads/agent/x"),
                &facts(Some(A), true)
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &u,
                &update(ZERO, B, "refs/heads/agent/new"),
                &facts(None, false)
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_refs_outside_push_refs_naming_patterns() {
        let refusal = check(
            &upstream(),
            &update(A, B, "refs/heads/main"),
            &facts(Some(A), true),
        )
        .unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "push refused: not in push_refs [refs/heads/agent/*]"
        );
        let mut none = upstream();
        none.push_refs.clear();
        assert!(matches!(
            check(
                &none,
                &update(A, B, "refs/heads/agent/x"),
                &facts(Some(A), true)
            ),
            Err(Refusal::NotInPushRefs { .. })
        ));
    }

    #[test]
    fn refuses_force_push_and_delete_unless_allowed() {
        let mut u = upstream();
        let force = update(A, B, "refs/heads/agent/x");
        let delete = update(A, ZERO, "refs/heads/agent/x");
        assert_eq!(
            check(&u, &force, &facts(Some(A), false)),
            Err(Refusal::ForcePush)
        );
        assert_eq!(
            check(&u, &delete, &facts(Some(A), false)),
            Err(Refusal::Delete)
        );
        assert!(Refusal::ForcePush.to_string().contains("allow_force_push"));
        assert!(Refusal::Delete.to_string().contains("allow_delete"));
        u.allow_force_push = true;
        u.allow_delete = true;
        assert_eq!(check(&u, &force, &facts(Some(A), false)), Ok(()));
        assert_eq!(check(&u, &delete, &facts(Some(A), false)), Ok(()));
    }

    #[test]
    fn refuses_stale_old_ids_and_read_only() {
        let u = upstream();
        assert!(matches!(
            check(
                &u,
                &update(A, B, "refs/heads/agent/x"),
                &facts(Some(B), true)
            ),
            Err(Refusal::Stale { .. })
        ));
        assert!(matches!(
            check(
                &u,
                &update(ZERO, B, "refs/heads/agent/x"),
                &facts(Some(A), true)
            ),
            Err(Refusal::Stale { .. })
        ));
        let mut read_only = upstream();
        read_only.read_only = true;
        assert_eq!(
            check(
                &read_only,
                &update(A, B, "refs/heads/agent/x"),
                &facts(Some(A), true)
            ),
            Err(Refusal::ReadOnly)
        );
    }
}
