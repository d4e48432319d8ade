//! Renders every agent of a 500-agent manifest and prints the time per stage.
//! `cargo bench -p compose-render`.

// A benchmark is the caller: it may read the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use compose_render::{LaunchFacts, render, to_yaml};
use plan::{HostFacts, MissingEnv};

const AGENTS: usize = 500;
const BOTTLES: usize = 50;

fn manifest() -> String {
    let mut text = String::from("bottles:\n");
    for b in 0..BOTTLES {
        let _ = write!(
            text,
            "  bottle-{b}:\n    image: {{ref: bot-bottle/agent:latest}}\n    env: {{LEVEL: debug, TOKEN: {{value: \"${{BENCH_TOKEN}}\", secret: true}}}}\n    egress:\n      allow:\n        - host: api.anthropic.com\n        - host: \"*.github.com\"\n          methods: [GET]\n      routes:\n        - host: api.anthropic.com\n          header: x-api-key\n          token_env: BENCH_TOKEN\n    supervise: true\n    limits: {{cpus: 2, memory: 4g, pids: 1024}}\n"
        );
    }
    text.push_str("agents:\n");
    for a in 0..AGENTS {
        let _ = writeln!(text, "  agent-{a}:\n    bottle: bottle-{}", a % BOTTLES);
    }
    text
}

fn main() {
    let source = manifest();
    let facts = HostFacts {
        env: BTreeMap::from([(
            "BENCH_TOKEN".to_owned(),
            "sk-ant-bench-token-value".to_owned(),
        )]),
        manifest_dir: "/bench".into(),
        project_dir: "/bench/project".into(),
        env_files: BTreeMap::new(),
        missing_env: MissingEnv::Error,
    };
    let rounds = 5;
    let mut best = [f64::MAX; 3];
    let mut bytes = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let manifest = plan::parse_manifest(&source).expect("bench manifest parses");
        let parsed = start.elapsed().as_secs_f64();
        let planned = plan::plan_manifest(&manifest, &facts);
        assert!(!planned.problems.has_errors());
        let plans: Vec<_> = planned
            .agent_names()
            .map(|agent| planned.bottle_plan(agent, 1).expect("valid"))
            .collect();
        let planned_at = start.elapsed().as_secs_f64();
        bytes = 0;
        for plan in &plans {
            bytes += to_yaml(&render(plan, &LaunchFacts::preview(plan))).len();
        }
        let rendered = start.elapsed().as_secs_f64();
        for (slot, value) in
            best.iter_mut()
                .zip([parsed, planned_at - parsed, rendered - planned_at])
        {
            *slot = slot.min(value);
        }
    }
    println!(
        "{AGENTS} agents in {BOTTLES} bottles ({} bytes of manifest), best of {rounds}:",
        source.len()
    );
    println!("  parse:         {:8.2} ms", best[0] * 1e3);
    println!("  plan:          {:8.2} ms", best[1] * 1e3);
    println!(
        "  render + YAML: {:8.2} ms ({:.1} us per bottle, {bytes} bytes of YAML)",
        best[2] * 1e3,
        best[2] * 1e6 / AGENTS as f64
    );
    println!("  total:         {:8.2} ms", best.iter().sum::<f64>() * 1e3);
}
