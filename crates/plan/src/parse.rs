//! YAML text -> raw [`Manifest`], with a located problem when it does not parse.

use crate::manifest::Manifest;
use crate::problem::{Problem, ProblemKind};
use crate::spanned::SourceSpan;

/// Parses manifest text. Duplicate keys are errors, never "last one wins".
///
/// serde stops at the first shape error, so this reports one problem; semantic checks
/// in [`crate::planner`] report all of theirs.
pub fn parse_manifest(source: &str) -> Result<Manifest, Box<Problem>> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    serde_saphyr::from_str_with_options::<Manifest>(source, options).map_err(|error| {
        let span = error
            .location()
            .map(|location| SourceSpan::from_error_location(location, source))
            .unwrap_or_default();
        let rendered = error.to_string();
        let message = strip_location_suffix(&rendered).to_owned();
        let help = hint_for(&message);
        let problem = Problem::error(ProblemKind::Syntax { message }, span);
        Box::new(match help {
            Some(help) => problem.help(help),
            None => problem,
        })
    })
}

/// The parser appends " at line L, column C"; diagnostics show the location themselves.
fn strip_location_suffix(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(index) if message[index..].contains(", column ") => &message[..index],
        _ => message,
    }
}

fn hint_for(message: &str) -> Option<&'static str> {
    Some(if message.starts_with("unknown field") {
        "check the spelling; `bottle schema` prints every accepted key"
    } else if message.starts_with("duplicate mapping key") {
        "each name may appear once; rename or merge the two entries"
    } else if message.starts_with("missing field") {
        "add the required key; `bottle schema` lists them"
    } else if message.starts_with("expected") || message.starts_with("invalid") {
        "this value has the wrong type; `bottle schema` gives the expected shape of every key"
    } else {
        "check the YAML syntax here: quotes, brackets and indentation"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_points_at_it() {
        let src = "agents: {}\nbottlez: {}\n";
        let problem = parse_manifest(src).unwrap_err();
        assert_eq!(
            &src[problem.span.offset..problem.span.offset + 7],
            "bottlez"
        );
        assert!(
            problem
                .kind
                .to_string()
                .starts_with("unknown field `bottlez`")
        );
        assert!(!problem.kind.to_string().contains("line"));
        assert!(problem.help.is_some());
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let src = "agents:\n  a: {bottle: x}\n  a: {bottle: y}\n";
        assert!(parse_manifest(src).is_err());
    }

    #[test]
    fn empty_document_is_an_empty_manifest() {
        // An empty manifest parses; the planner then says it defines no agents.
        let parsed = parse_manifest("{}\n").unwrap();
        assert!(parsed.agents.is_empty());
    }
}
