//! "Approve always": the manifest change that makes an approved host part of the
//! agent's bottle for good, proposed as a unified diff the user confirms, then
//! written atomically (only if the file is still what the diff was made from).
//!
//! The change is one new item at the end of `bottles.<bottle>.egress.allow`, written
//! in the indentation of the items before it, so comments and layout stay. The host
//! and methods come from the agent: they are checked as `bottle egress allow` checks
//! them and written as quoted scalars, and the result is parsed again and must hold
//! exactly the new rule, or nothing is proposed.

use std::io::Write;
use std::path::{Path, PathBuf};

use plan::manifest::AllowRule;

/// Why no change can be proposed or written.
#[derive(Debug, thiserror::Error)]
pub enum AlwaysError {
    /// The bottle has no launch record naming its manifest.
    #[error("{slug} has no record of the manifest it was started from")]
    NoManifest { slug: String },
    /// The request is not an egress request.
    #[error("only egress requests can be approved always")]
    NotEgress,
    /// The host or a method is not something a manifest can hold.
    #[error("the request cannot go into a manifest: {0}")]
    BadRequest(String),
    /// The manifest cannot be read or written.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The manifest does not parse (any more).
    #[error("`{}` does not parse: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    /// The agent is not in the manifest (any more).
    #[error("agent `{agent}` is not in `{}`", path.display())]
    UnknownAgent { agent: String, path: PathBuf },
    /// The bottle has no `egress.allow` list to add to.
    #[error(
        "bottle `{bottle}` has no `egress.allow` list to add to: add the host to the manifest by hand"
    )]
    NoAllowList { bottle: String },
    /// The manifest already has a rule for the host.
    #[error(
        "the manifest already has a rule for {host}: change it by hand if it should allow more"
    )]
    AlreadyInManifest { host: String },
    /// The list's layout is not one this edit understands.
    #[error(
        "the `egress.allow` list of bottle `{bottle}` is laid out in a way this edit cannot extend safely: add the host by hand"
    )]
    Layout { bottle: String },
    /// The manifest changed since the diff was proposed.
    #[error("`{}` changed since the diff was shown: look at the new diff", path.display())]
    Changed { path: PathBuf },
}

/// A proposed change of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Proposal {
    /// The manifest file.
    pub manifest: PathBuf,
    /// The bottle whose allowlist grows.
    pub bottle: String,
    /// SHA-256 of the manifest as it is now.
    pub before_sha256: String,
    /// SHA-256 of the manifest after the change: what the confirmation names.
    pub after_sha256: String,
    /// The unified diff.
    pub diff: String,
    /// The manifest after the change.
    #[serde(skip)]
    pub after: String,
}

fn sha256(text: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))
}

/// The change that adds `host` (on `port`, for `methods`) to the allowlist of the
/// bottle `agent` runs in, in the manifest `text` read from `path`.
pub fn propose(
    path: &Path,
    text: &str,
    agent: &str,
    host: &str,
    port: Option<u16>,
    methods: Option<&[String]>,
) -> Result<Proposal, AlwaysError> {
    let (host, port_in_host) =
        backend_api::parse_host_port(host).map_err(|e| AlwaysError::BadRequest(e.to_string()))?;
    let port = port.or(port_in_host);
    let methods: Option<Vec<String>> = methods.map(|ms| {
        ms.iter()
            .map(|m| m.to_ascii_uppercase())
            .collect::<Vec<_>>()
    });
    if let Some(ms) = &methods
        && (ms.is_empty()
            || ms.iter().any(|m| {
                m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase())
            }))
    {
        return Err(AlwaysError::BadRequest(
            "methods must be HTTP method names".to_owned(),
        ));
    }
    let parse_error = |detail: String| AlwaysError::Parse {
        path: path.to_path_buf(),
        detail,
    };
    let manifest = plan::parse_manifest(text).map_err(|p| parse_error(p.kind.to_string()))?;
    let bottle = manifest
        .agents
        .iter()
        .find(|(name, _)| name.value == agent)
        .map(|(_, a)| a.bottle.value.clone())
        .ok_or_else(|| AlwaysError::UnknownAgent {
            agent: agent.to_owned(),
            path: path.to_path_buf(),
        })?;
    let rules = &manifest
        .bottles
        .iter()
        .find(|(name, _)| name.value == bottle)
        .ok_or_else(|| AlwaysError::Layout {
            bottle: bottle.clone(),
        })?
        .1
        .egress
        .allow;
    if rules
        .iter()
        .any(|r| r.host.value.eq_ignore_ascii_case(&host))
    {
        return Err(AlwaysError::AlreadyInManifest { host });
    }
    let last = rules.last().ok_or_else(|| AlwaysError::NoAllowList {
        bottle: bottle.clone(),
    })?;
    let layout = || AlwaysError::Layout {
        bottle: bottle.clone(),
    };
    let (dash_column, insert_at) = place_after(text, last).ok_or_else(layout)?;
    let indent = " ".repeat(dash_column);
    let mut item = format!(
        "{indent}- host: {}\n",
        serde_json::to_string(&host).map_err(|_| layout())?
    );
    if let Some(port) = port {
        item.push_str(&format!("{indent}  ports: [{port}]\n"));
    }
    if let Some(ms) = &methods {
        item.push_str(&format!("{indent}  methods: [{}]\n", ms.join(", ")));
    }
    let mut after = String::with_capacity(text.len() + item.len() + 1);
    after.push_str(&text[..insert_at]);
    if !after.is_empty() && !after.ends_with('\n') {
        after.push('\n');
    }
    after.push_str(&item);
    after.push_str(&text[insert_at..]);
    // The edit must have added exactly this rule to exactly this bottle.
    let reparsed = plan::parse_manifest(&after).map_err(|_| layout())?;
    let new_rules = &reparsed
        .bottles
        .iter()
        .find(|(name, _)| name.value == bottle)
        .ok_or_else(layout)?
        .1
        .egress
        .allow;
    let added = new_rules.last().ok_or_else(layout)?;
    let same = |r: &AllowRule| {
        r.host.value == host
            && r.ports
                .as_ref()
                .map(|ps| ps.iter().map(|p| p.value).collect::<Vec<_>>())
                == port.map(|p| vec![p])
            && r.methods
                .as_ref()
                .map(|ms| ms.iter().map(|m| m.value.clone()).collect::<Vec<_>>())
                == methods
            && r.paths.is_none()
    };
    if new_rules.len() != rules.len() + 1 || !same(added) {
        return Err(layout());
    }
    let inserted_line = text[..insert_at].lines().count()
        + usize::from(!text[..insert_at].is_empty() && !text[..insert_at].ends_with('\n'));
    let diff = unified_diff(path, text, inserted_line, &item);
    Ok(Proposal {
        manifest: path.to_path_buf(),
        bottle,
        before_sha256: sha256(text),
        after_sha256: sha256(&after),
        diff,
        after,
    })
}

/// Where a new item goes after `last`: the column of its `- ` and the byte offset just
/// past the last line it spans.
fn place_after(text: &str, last: &plan::Spanned<AllowRule>) -> Option<(usize, usize)> {
    let rule = &last.value;
    let host_start = rule.host.span.offset;
    let mut ends = vec![rule.host.span.offset + rule.host.span.len];
    let every = |spans: &mut Vec<usize>, offsets: Vec<(usize, usize)>| {
        spans.extend(offsets.into_iter().map(|(o, l)| o + l));
    };
    if let Some(ports) = &rule.ports {
        every(
            &mut ends,
            ports.iter().map(|p| (p.span.offset, p.span.len)).collect(),
        );
    }
    for list in [&rule.methods, &rule.paths].into_iter().flatten() {
        every(
            &mut ends,
            list.iter().map(|p| (p.span.offset, p.span.len)).collect(),
        );
    }
    let end = ends.into_iter().max()?;
    if host_start > text.len() || end > text.len() {
        return None;
    }
    // The `- ` of the item: on the host's line, or above it at two columns less.
    let line_start = |at: usize| text[..at].rfind('\n').map_or(0, |i| i + 1);
    let host_line = line_start(host_start);
    let host_column = host_start - host_line;
    let line = &text[host_line..];
    let trimmed = line.trim_start_matches(' ');
    let dash_column = if trimmed.starts_with("- ") {
        line.len() - trimmed.len()
    } else {
        let key_column = text[host_line..host_start]
            .bytes()
            .take_while(|b| *b == b' ')
            .count();
        let wanted = key_column.checked_sub(2)?;
        let mut cursor = host_line;
        loop {
            if cursor == 0 {
                return None;
            }
            let start = line_start(cursor - 1);
            let above = &text[start..cursor - 1];
            let body = above.trim_start_matches(' ');
            if above.len() - body.len() == wanted && body.starts_with("- ") {
                break wanted;
            }
            cursor = start;
        }
    };
    let _ = host_column;
    let insert_at = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
    Some((dash_column, insert_at))
}

/// A unified diff of `item` inserted before line `at` (0-based) of `text`.
fn unified_diff(path: &Path, text: &str, at: usize, item: &str) -> String {
    let old: Vec<&str> = text.lines().collect();
    let from = at.saturating_sub(3);
    let to = (at + 3).min(old.len());
    let added: Vec<&str> = item.lines().collect();
    // `a/` and `b/` as git writes them, also before an absolute path.
    let shown = path.display().to_string();
    let shown = shown.strip_prefix('/').unwrap_or(&shown);
    let mut diff = format!(
        "--- a/{0}\n+++ b/{0}\n@@ -{1},{2} +{1},{3} @@\n",
        shown,
        from + 1,
        to - from,
        to - from + added.len()
    );
    for line in &old[from..at] {
        diff.push_str(&format!(" {line}\n"));
    }
    for line in &added {
        diff.push_str(&format!("+{line}\n"));
    }
    for line in &old[at..to] {
        diff.push_str(&format!(" {line}\n"));
    }
    diff
}

/// Reads the manifest at `path` and proposes the change.
pub fn propose_for_file(
    path: &Path,
    agent: &str,
    host: &str,
    port: Option<u16>,
    methods: Option<&[String]>,
) -> Result<Proposal, AlwaysError> {
    let text = std::fs::read_to_string(path).map_err(|source| AlwaysError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    propose(path, &text, agent, host, port, methods)
}

/// Writes `proposal` if the manifest is still what it was made from: a temporary file
/// beside it with its permissions, fsync, rename, fsync of the directory.
pub fn commit(proposal: &Proposal) -> Result<(), AlwaysError> {
    let path = &proposal.manifest;
    let io = |action: &'static str| {
        move |source| AlwaysError::Io {
            action,
            path: path.clone(),
            source,
        }
    };
    let now = std::fs::read_to_string(path).map_err(io("reading"))?;
    if sha256(&now) != proposal.before_sha256 {
        return Err(AlwaysError::Changed { path: path.clone() });
    }
    let permissions = std::fs::metadata(path)
        .map_err(io("inspecting"))?
        .permissions();
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "manifest".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.bottle-dashboard.tmp"));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(proposal.after.as_bytes())?;
        file.set_permissions(permissions)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(io("writing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "\
# top comment
bottles:
  dev:
    image:
      ref: agent:latest
    egress:
      allow:
        - host: api.anthropic.com
          ports: [443]
        # registries
        - host: pypi.org
          methods:
            - GET
            - HEAD
      # after the list
    supervise: true
agents:
  coder:
    bottle: dev
";

    fn methods(ms: &[&str]) -> Vec<String> {
        ms.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn the_host_is_added_after_the_last_item_keeping_comments() {
        let p = propose(
            Path::new("bottle.yaml"),
            MANIFEST,
            "coder",
            "example.org",
            Some(8443),
            Some(&methods(&["get", "POST"])),
        )
        .unwrap();
        assert_eq!(p.bottle, "dev");
        let expected_item = "        - host: \"example.org\"\n          ports: [8443]\n          methods: [GET, POST]\n";
        assert!(
            p.after.contains(&format!(
                "            - HEAD\n{expected_item}      # after the list\n"
            )),
            "{}",
            p.after
        );
        assert!(p.after.starts_with("# top comment\n"));
        assert_eq!(p.before_sha256, sha256(MANIFEST));
        assert_eq!(p.after_sha256, sha256(&p.after));
        assert_eq!(
            p.diff,
            "--- a/bottle.yaml\n+++ b/bottle.yaml\n@@ -12,6 +12,9 @@\n           methods:\n             - GET\n             - HEAD\n+        - host: \"example.org\"\n+          ports: [8443]\n+          methods: [GET, POST]\n       # after the list\n     supervise: true\n agents:\n"
        );
    }

    #[test]
    fn an_absolute_path_is_named_as_git_names_it() {
        let p = propose(
            Path::new("/work/bottle.yaml"),
            MANIFEST,
            "coder",
            "x.org",
            None,
            None,
        )
        .unwrap();
        assert!(
            p.diff
                .starts_with("--- a/work/bottle.yaml\n+++ b/work/bottle.yaml\n")
        );
    }

    #[test]
    fn a_wildcard_host_is_quoted_and_a_flow_item_is_followed() {
        let text = "bottles:\n  b:\n    image: {ref: x}\n    egress:\n      allow:\n      - {host: a.example}\nagents:\n  a: {bottle: b}";
        let p = propose(Path::new("m.yaml"), text, "a", "*.Example.com", None, None).unwrap();
        assert!(p.after.ends_with("      - {host: a.example}\n      - host: \"*.example.com\"\nagents:\n  a: {bottle: b}"), "{}", p.after);
    }

    #[test]
    fn hostile_requests_are_refused_before_any_yaml_is_written() {
        for (host, ms) in [
            ("evil.com\n    - host: \"*\"", None),
            ("a b", None),
            ("ok.example", Some(methods(&["GET]\n  x: [1"]))),
            ("ok.example", Some(methods(&[]))),
        ] {
            let result = propose(Path::new("m"), MANIFEST, "coder", host, None, ms.as_deref());
            assert!(
                matches!(result, Err(AlwaysError::BadRequest(_))),
                "{host:?}"
            );
        }
    }

    #[test]
    fn what_cannot_be_proposed_says_why() {
        let m = Path::new("m");
        assert!(matches!(
            propose(m, MANIFEST, "coder", "pypi.org", None, None),
            Err(AlwaysError::AlreadyInManifest { .. })
        ));
        assert!(matches!(
            propose(m, MANIFEST, "nobody", "x.org", None, None),
            Err(AlwaysError::UnknownAgent { .. })
        ));
        let no_list = "bottles:\n  b:\n    image: {ref: x}\nagents:\n  a: {bottle: b}\n";
        assert!(matches!(
            propose(m, no_list, "a", "x.org", None, None),
            Err(AlwaysError::NoAllowList { .. })
        ));
        assert!(matches!(
            propose(m, "bottles: [", "a", "x.org", None, None),
            Err(AlwaysError::Parse { .. })
        ));
    }

    #[test]
    fn commit_writes_only_what_was_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bottle.yaml");
        std::fs::write(&path, MANIFEST).unwrap();
        let p = propose_for_file(&path, "coder", "example.org", None, None).unwrap();
        std::fs::write(&path, format!("{MANIFEST}# edited\n")).unwrap();
        assert!(matches!(commit(&p), Err(AlwaysError::Changed { .. })));
        std::fs::write(&path, MANIFEST).unwrap();
        commit(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), p.after);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }
}
