//! `bottle plan AGENT`: the validated plan of one agent's bottle, secrets redacted.

use std::fmt::Write as _;
use std::path::Path;

use plan::{BottlePlan, EnvVar, ImagePlan};

use crate::{CliError, host, loaded, output};

pub fn run(path: &Path, agent: &str, json: bool) -> Result<(), CliError> {
    let loaded = loaded::load(path, false)?;
    let plan = loaded
        .plan
        .bottle_plan(agent, host::slug_entropy())
        .ok_or_else(|| unknown_agent(agent, &loaded))?;
    if json {
        let mut text = serde_json::to_string_pretty(&plan)
            .map_err(|error| CliError::Internal(format!("cannot serialize the plan: {error}")))?;
        text.push('\n');
        output::print(&text);
    } else {
        output::print(&summary(&plan));
    }
    Ok(())
}

pub(crate) fn unknown_agent(agent: &str, loaded: &loaded::LoadedManifest) -> CliError {
    let known: Vec<_> = loaded.plan.agent_names().collect();
    CliError::User(format!(
        "no agent `{agent}` in {}; defined agents: {}",
        loaded.path.display(),
        known.join(", ")
    ))
}

/// A short human summary; `--json` has everything.
fn summary(plan: &BottlePlan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "bottle {} (agent {}, bottle {})",
        plan.slug, plan.agent.name, plan.bottle
    );
    let image = match &plan.image {
        ImagePlan::Build {
            dockerfile, tag, ..
        } => format!("build {} as {tag}", dockerfile.display()),
        ImagePlan::Existing { reference } => reference.clone(),
    };
    let _ = writeln!(s, "  image:     {image} (runtime {:?})", plan.runtime);
    let _ = writeln!(s, "  command:   {}", plan.agent.command.join(" "));
    let _ = writeln!(
        s,
        "  container: {}{}",
        plan.agent.container_name,
        if plan.agent.container_name_pinned {
            " (pinned)"
        } else {
            ""
        }
    );
    for (name, var) in &plan.env.vars {
        let shown = match var {
            EnvVar::Literal(value) => value.clone(),
            EnvVar::Secret(secret) => format!("{secret} (secret, forwarded at launch)"),
        };
        let _ = writeln!(s, "  env:       {name}={shown}");
    }
    for rule in &plan.egress.allow {
        let methods = rule
            .methods
            .as_ref()
            .map_or("any method".to_owned(), |m| m.join(","));
        let paths = rule
            .paths
            .as_ref()
            .map_or("any path".to_owned(), |p| p.join(","));
        let ports: Vec<String> = rule.ports.iter().map(u16::to_string).collect();
        let _ = writeln!(
            s,
            "  allow:     {} ports {} {methods} {paths}",
            rule.host,
            ports.join(",")
        );
    }
    for route in &plan.egress.routes {
        let _ = writeln!(
            s,
            "  route:     {} sets {} from ${} (agent holds {}={})",
            route.host, route.header, route.token_env, route.agent_env, route.placeholder
        );
    }
    let _ = writeln!(
        s,
        "  dlp:       {}",
        if plan.egress.dlp.enabled {
            format!("on, {} extra pattern(s)", plan.egress.dlp.patterns.len())
        } else {
            "off".into()
        }
    );
    let _ = writeln!(
        s,
        "  ssrf:      {}",
        if plan.egress.ssrf.enabled {
            format!("on, exempt [{}]", plan.egress.ssrf.exempt.join(", "))
        } else {
            "off".into()
        }
    );
    for upstream in &plan.git_gate.upstreams {
        let _ = writeln!(
            s,
            "  git:       {} -> {} push [{}]{}",
            upstream.name,
            upstream.url,
            upstream.push_refs.join(", "),
            if upstream.read_only { " read-only" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        "  supervise: {}",
        if plan.supervise.enabled { "on" } else { "off" }
    );
    s
}
