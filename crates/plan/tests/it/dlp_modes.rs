//! Per-host DLP modes: planned as written, the most common mistakes reported.

use plan::DlpMode;

const BASE: &str = "bottles:
  b:
    image:
      ref: bot-bottle/agent:latest
    egress:
      allow:
        - host: api.anthropic.com
        - host: \"*.example.com\"
      dlp:
";

fn source(dlp: &str) -> String {
    format!("{BASE}{dlp}agents:\n  a:\n    bottle: b\n")
}

fn planned(dlp: &str) -> plan::ManifestPlan {
    let manifest = plan::parse_manifest(&source(dlp)).expect("parses");
    plan::plan_manifest(&manifest, &super::facts())
}

#[test]
fn modes_are_planned_as_written() {
    let planned = planned(
        "        mode: audit
        hosts:
          - host: api.anthropic.com
            mode: off
          - host: \"*.example.com\"
            mode: block
",
    );
    assert!(!planned.problems.has_errors(), "{:?}", planned.problems);
    let plan = planned.bottle_plan("a", 7).unwrap();
    assert_eq!(plan.egress.dlp.mode, DlpMode::Audit);
    let hosts: Vec<(String, DlpMode)> = plan
        .egress
        .dlp
        .hosts
        .iter()
        .map(|h| (h.host.to_string(), h.mode))
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("api.anthropic.com".to_owned(), DlpMode::Off),
            ("*.example.com".to_owned(), DlpMode::Block),
        ]
    );
}

#[test]
fn the_default_mode_is_block() {
    let planned = planned("        enabled: true\n");
    let plan = planned.bottle_plan("a", 7).unwrap();
    assert_eq!(plan.egress.dlp.mode, DlpMode::Block);
    assert!(plan.egress.dlp.hosts.is_empty());
}

#[test]
fn duplicate_hosts_and_modes_without_dlp_are_errors() {
    let duplicate = planned(
        "        hosts:
          - host: api.anthropic.com
            mode: audit
          - host: API.anthropic.com
            mode: off
",
    );
    assert!(duplicate.problems.has_errors());
    assert!(format!("{:?}", duplicate.problems).contains("DLP host"));

    let disabled = planned("        enabled: false\n        mode: audit\n");
    assert!(disabled.problems.has_errors());

    let unknown = plan::parse_manifest(&source("        mode: warn\n"));
    assert!(unknown.is_err(), "an unknown mode is a shape error");
}
