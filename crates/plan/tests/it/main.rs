//! Property tests: no input makes the parser or the planner panic, and every problem
//! points inside the source (diagnostic renderers index the source with it).

// Tests play the caller: they read the fixtures the pure crate may not.
#![allow(clippy::disallowed_methods)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plan::{HostFacts, MissingEnv, Problem};
use proptest::prelude::*;

fn fixtures() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut sources = Vec::new();
    for kind in ["valid", "invalid"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(kind))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        sources.extend(paths.iter().map(|p| std::fs::read_to_string(p).unwrap()));
    }
    sources
}

fn facts() -> HostFacts {
    HostFacts {
        env: BTreeMap::from([
            ("HOME".into(), "/home/t".into()),
            ("TEST_ANTHROPIC_KEY".into(), "k".into()),
        ]),
        manifest_dir: "/m".into(),
        project_dir: "/p".into(),
        env_files: BTreeMap::new(),
        missing_env: MissingEnv::Error,
    }
}

fn assert_span_inside(source: &str, problem: &Problem) {
    let end = problem.span.offset + problem.span.len;
    assert!(
        end <= source.len(),
        "span {:?} past the end ({})",
        problem.span,
        source.len()
    );
    assert!(
        source.is_char_boundary(problem.span.offset) && source.is_char_boundary(end),
        "span {:?} splits a character in {source:?} ({problem:?})",
        problem.span
    );
}

fn check(source: &str) {
    match plan::parse_manifest(source) {
        Err(problem) => assert_span_inside(source, &problem),
        Ok(manifest) => {
            let planned = plan::plan_manifest(&manifest, &facts());
            for problem in &planned.problems.0 {
                assert_span_inside(source, problem);
            }
            for agent in planned.agent_names() {
                let plan = planned.bottle_plan(agent, 7);
                assert_eq!(plan.is_some(), !planned.problems.has_errors());
            }
        }
    }
}

/// An edit applied to a fixture.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    DuplicateLine(usize),
    DropLine(usize),
}

fn apply(source: &str, edit: &Edit) -> String {
    let clamp = |i: usize| {
        let mut i = i % (source.len() + 1);
        while !source.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let lines: Vec<&str> = source.lines().collect();
    match edit {
        Edit::Insert(at, text) => {
            let at = clamp(*at);
            format!("{}{text}{}", &source[..at], &source[at..])
        }
        Edit::Delete(at, len) => {
            let start = clamp(*at);
            let end = clamp(start + len).max(start);
            format!("{}{}", &source[..start], &source[end..])
        }
        Edit::DuplicateLine(i) if !lines.is_empty() => {
            let i = i % lines.len();
            let mut out = lines.clone();
            out.insert(i, lines[i]);
            out.join("\n")
        }
        Edit::DropLine(i) if !lines.is_empty() => {
            let mut out = lines.clone();
            out.remove(i % lines.len());
            out.join("\n")
        }
        _ => source.to_owned(),
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let fragment = prop_oneof![
        Just(": ".to_owned()),
        Just("\n  - ".to_owned()),
        Just("${".to_owned()),
        Just("*".to_owned()),
        Just("{".to_owned()),
        Just("é€😀".to_owned()),
        Just("&a *a".to_owned()),
        Just("<<: *a".to_owned()),
        "[a-z:_ \\-\\[\\]{}'\"\\n]{0,12}",
        any::<String>(),
    ];
    prop_oneof![
        (any::<usize>(), fragment).prop_map(|(at, text)| Edit::Insert(at, text)),
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Edit::Delete(at, len)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        any::<usize>().prop_map(Edit::DropLine),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_never_panics(source in any::<String>()) {
        check(&source);
    }

    #[test]
    fn edited_fixtures_never_panic(index in any::<usize>(), edits in prop::collection::vec(edit(), 1..4)) {
        let sources = fixtures();
        let mut source = sources[index % sources.len()].clone();
        for edit in &edits {
            source = apply(&source, edit);
        }
        check(&source);
    }
}

#[test]
fn every_fixture_checks_clean_of_panics() {
    for source in fixtures() {
        check(&source);
    }
}

mod dlp_modes;
