//! Raw manifest + host facts -> one validated [`BottlePlan`] per agent, or every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::bottle_plan::{
    AgentPlan, AllowRulePlan, BottlePlan, DlpHostPlan, DlpPatternPlan, DlpPlan, EgressPlan,
    EnvPlan, EnvVar, GitGatePlan, GuardedEnvPlan, ImagePlan, LimitsPlan, RoutePlan, Slug, SsrfPlan,
    SupervisePlan, UpstreamPlan, UpstreamProxyPlan,
};
use crate::dotenv::parse_env_file;
use crate::interpolate::{InterpolationError, interpolate};
use crate::manifest::{self, Manifest};
use crate::placeholder::placeholder_for;
use crate::problem::{Problem, ProblemKind, Problems};
use crate::profile::{AgentKind, AgentProfile, ProfileInputs};
use crate::rules::{self, HostPattern};
use crate::secret::Secret;
use crate::spanned::{SourceSpan, Spanned};

/// Default agent command.
pub const DEFAULT_COMMAND: &str = "claude";
/// The shortest secret value DLP guards: shorter ones would match ordinary traffic.
pub const MIN_GUARDED_SECRET_CHARS: usize = 8;
/// Default ports of an allow rule.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// What to do when the manifest references a host variable that is not set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingEnv {
    /// An error: the bottle cannot start without it.
    #[default]
    Error,
    /// A warning, and a marked stand-in value: for dry runs on machines without secrets.
    Warn,
}

/// What the planner may know about the host: passed in, never read by this crate.
#[derive(Clone, Debug, Default)]
pub struct HostFacts {
    /// The host environment.
    pub env: BTreeMap<String, String>,
    /// Directory of the manifest: relative paths resolve against it.
    pub manifest_dir: PathBuf,
    /// The user's project directory: the agent's working directory.
    pub project_dir: PathBuf,
    /// Contents of the env files the manifest names (see [`env_file_paths`]).
    pub env_files: BTreeMap<PathBuf, String>,
    /// Policy for missing host variables.
    pub missing_env: MissingEnv,
}

/// Stand-in for a missing host value under [`MissingEnv::Warn`].
pub const MISSING_VALUE: &str = "<unset>";

/// A host path the manifest names, for the caller to check: the planner cannot look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// Resolved host path.
    pub path: PathBuf,
    /// The path as the manifest writes it (what diagnostics show: stable across machines).
    pub written: String,
    /// What it is for, e.g. "prompt file".
    pub what: &'static str,
    /// Whether it must be a directory.
    pub is_dir: bool,
    /// Where the manifest names it.
    pub span: SourceSpan,
}

impl FileRef {
    /// The problem to report when the file is missing.
    pub fn missing(&self) -> Problem {
        Problem::error(
            ProblemKind::MissingFile {
                what: self.what,
                path: self.written.clone(),
            },
            self.span,
        )
        .help("paths are relative to the manifest's directory; `~/` means the home directory")
    }
}

/// The outcome of planning a whole manifest.
#[derive(Debug, Default)]
pub struct ManifestPlan {
    /// A plan per agent (slug not yet chosen: see [`ManifestPlan::bottle_plan`]).
    agents: BTreeMap<String, BottlePlan>,
    /// Every problem found, in source order.
    pub problems: Problems,
    /// Host paths the caller should check for existence.
    pub file_refs: Vec<FileRef>,
}

impl ManifestPlan {
    /// Agent names, sorted.
    pub fn agent_names(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }

    /// The plan for `agent` with a fresh slug from `entropy`, if the manifest is valid
    /// and defines it.
    pub fn bottle_plan(&self, agent: &str, entropy: u64) -> Option<BottlePlan> {
        if self.problems.has_errors() {
            return None;
        }
        let mut plan = self.agents.get(agent)?.clone();
        plan.slug = Slug::new(agent, entropy);
        if !plan.agent.container_name_pinned {
            plan.agent.container_name = format!("{}-agent", plan.slug);
        }
        Some(plan)
    }
}

/// Host paths of the env files a manifest names, so the caller can read them first.
pub fn env_file_paths(manifest: &Manifest, facts: &HostFacts) -> Vec<PathBuf> {
    let mut sink = Problems::default();
    manifest
        .bottles
        .values()
        .filter_map(|bottle| bottle.env_file.as_ref())
        .filter_map(|raw| resolve_path(raw, facts, &mut sink))
        .collect()
}

/// Plans every agent of `manifest` and collects every problem.
pub fn plan_manifest(manifest: &Manifest, facts: &HostFacts) -> ManifestPlan {
    let mut ctx = Ctx {
        facts,
        problems: Problems::default(),
        file_refs: Vec::new(),
    };
    let mut bottles = BTreeMap::new();
    for (name, bottle) in &manifest.bottles {
        ctx.name("bottle name", name, rules::check_resource_name);
        bottles.insert(name.value.clone(), ctx.bottle(name, bottle));
    }
    if manifest.agents.is_empty() {
        ctx.problems.push(
            Problem::error(ProblemKind::NoAgents, SourceSpan::default()).help(
                "add an `agents:` entry naming a bottle, e.g. `agents: {dev: {bottle: dev}}`",
            ),
        );
    }
    let mut container_names: BTreeMap<String, SourceSpan> = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for (name, agent) in &manifest.agents {
        ctx.name("agent name", name, rules::check_resource_name);
        if let Some(pinned) = &agent.container_name {
            ctx.name("container name", pinned, rules::check_container_name);
            if container_names
                .insert(pinned.value.clone(), pinned.span)
                .is_some()
            {
                ctx.problems.push(
                    Problem::error(
                        ProblemKind::Duplicate { what: "container name", name: pinned.value.clone() },
                        pinned.span,
                    )
                    .help("two agents cannot pin the same container name; drop `container_name` from one"),
                );
            }
        }
        let Some(bottle) = bottles.get(&agent.bottle.value) else {
            let known: Vec<_> = manifest.bottles.keys().map(|k| k.value.as_str()).collect();
            ctx.problems.push(
                Problem::error(
                    ProblemKind::UnknownBottle {
                        agent: name.value.clone(),
                        bottle: agent.bottle.value.clone(),
                    },
                    agent.bottle.span,
                )
                .help(if known.is_empty() {
                    "define it under `bottles:`".to_owned()
                } else {
                    format!("defined bottles: {}", known.join(", "))
                }),
            );
            continue;
        };
        if let Some(plan) = ctx.agent(name, agent, bottle) {
            agents.insert(name.value.clone(), plan);
        }
    }
    ctx.problems.sort();
    ManifestPlan {
        agents,
        problems: ctx.problems,
        file_refs: ctx.file_refs,
    }
}

/// A bottle's validated parts, shared by the agents that use it.
struct BottleDraft {
    name: String,
    image: Option<ImagePlan>,
    runtime: manifest::Runtime,
    env: EnvPlan,
    egress: EgressPlan,
    git_gate: GitGatePlan,
    supervise: SupervisePlan,
    limits: LimitsPlan,
}

struct Ctx<'a> {
    facts: &'a HostFacts,
    problems: Problems,
    file_refs: Vec<FileRef>,
}

impl Ctx<'_> {
    fn error(&mut self, kind: ProblemKind, span: SourceSpan, help: impl Into<String>) {
        self.problems.push(Problem::error(kind, span).help(help));
    }

    /// A value outside what its option accepts; the reason is the hint.
    fn bad_value(
        &mut self,
        what: &'static str,
        value: &Spanned<impl ToString>,
        reason: impl Into<String>,
    ) {
        let reason = reason.into();
        self.problems.push(
            Problem::error(
                ProblemKind::BadValue {
                    what,
                    value: value.value.to_string(),
                    reason: reason.clone(),
                },
                value.span,
            )
            .help(reason),
        );
    }

    fn name(
        &mut self,
        what: &'static str,
        name: &Spanned<String>,
        check: fn(&str) -> Result<(), &'static str>,
    ) {
        if let Err(rule) = check(&name.value) {
            self.problems.push(
                Problem::error(
                    ProblemKind::InvalidName {
                        what,
                        name: name.value.clone(),
                        rule,
                    },
                    name.span,
                )
                .help(rule),
            );
        }
    }

    /// A host value, or a reported problem and a stand-in under `MissingEnv::Warn`.
    fn host_var(&mut self, var: &Spanned<String>, why: &str) -> Option<String> {
        if let Some(value) = self.facts.env.get(&var.value) {
            return Some(value.clone());
        }
        let problem = Problem::error(
            ProblemKind::MissingHostEnv {
                var: var.value.clone(),
            },
            var.span,
        )
        .help(format!(
            "export {} before running bottle ({why})",
            var.value
        ));
        match self.facts.missing_env {
            MissingEnv::Error => {
                self.problems.push(problem);
                None
            }
            MissingEnv::Warn => {
                self.problems.push(problem.warning());
                Some(MISSING_VALUE.to_owned())
            }
        }
    }

    fn interpolated(&mut self, raw: &Spanned<String>) -> Option<String> {
        match interpolate(&raw.value, &self.facts.env) {
            Ok(value) => Some(value),
            Err(errors) => {
                let mut stand_in = Some(MISSING_VALUE.to_owned());
                for error in errors {
                    match error {
                        InterpolationError::Missing(var) => {
                            let problem = Problem::error(
                                ProblemKind::MissingHostEnv { var: var.clone() },
                                raw.span,
                            )
                            .help(format!(
                                "export {var} before running bottle, or write `${{{var}:-default}}`"
                            ));
                            if self.facts.missing_env == MissingEnv::Warn {
                                self.problems.push(problem.warning());
                            } else {
                                self.problems.push(problem);
                                stand_in = None;
                            }
                        }
                        InterpolationError::Syntax(reason) => {
                            stand_in = None;
                            self.error(
                                ProblemKind::BadInterpolation { reason },
                                raw.span,
                                "write `${NAME}`, `${NAME:-default}`, or `$$` for a literal `$`",
                            );
                        }
                    }
                }
                stand_in
            }
        }
    }

    fn path(&mut self, raw: &Spanned<String>, what: &'static str, is_dir: bool) -> Option<PathBuf> {
        let path = resolve_path(raw, self.facts, &mut self.problems)?;
        self.file_refs.push(FileRef {
            path: path.clone(),
            written: raw.value.clone(),
            what,
            is_dir,
            span: raw.span,
        });
        Some(path)
    }

    fn bottle(&mut self, name: &Spanned<String>, bottle: &manifest::Bottle) -> BottleDraft {
        let image = self.image(&name.value, &bottle.image);
        let mut env = self.env(bottle);
        let mut egress = self.egress(&bottle.egress);
        egress.guarded_env = self.guarded_env(bottle, &env);
        for route in &egress.routes {
            if let Some((key, _)) = bottle.env.get_key_value(&route.agent_env) {
                self.error(
                    ProblemKind::Conflict {
                        message: format!(
                            "`{}` is both set in `env` and given a route placeholder",
                            route.agent_env
                        ),
                    },
                    key.span,
                    format!(
                        "remove `{}` from `env`: the route for {} sets it to a placeholder",
                        route.agent_env, route.host
                    ),
                );
            }
            env.vars.insert(
                route.agent_env.clone(),
                EnvVar::Literal(route.placeholder.clone()),
            );
        }
        BottleDraft {
            name: name.value.clone(),
            image,
            runtime: bottle.runtime.as_ref().map(|r| r.value).unwrap_or_default(),
            env,
            egress,
            git_gate: self.git(&bottle.git),
            supervise: SupervisePlan {
                enabled: bottle.supervise.as_ref().is_some_and(|s| s.value),
            },
            limits: self.limits(&bottle.limits),
        }
    }

    fn image(&mut self, bottle: &str, image: &Spanned<manifest::Image>) -> Option<ImagePlan> {
        let manifest::Image {
            dockerfile,
            context,
            reference,
        } = &image.value;
        match (dockerfile, reference) {
            (Some(_), Some(reference)) => {
                self.error(
                    ProblemKind::Conflict {
                        message: "`image` has both `dockerfile` and `ref`".into(),
                    },
                    reference.span,
                    "keep `dockerfile` (+ `context`) to build, or `ref` to use an existing image",
                );
                None
            }
            (None, None) => {
                self.error(
                    ProblemKind::Missing {
                        message: "`image` needs `dockerfile` or `ref`".into(),
                    },
                    image.span,
                    "e.g. `image: {dockerfile: Dockerfile}` or `image: {ref: my/agent:latest}`",
                );
                None
            }
            (None, Some(reference)) => {
                if let Some(context) = context {
                    self.error(
                        ProblemKind::Conflict {
                            message: "`context` only applies with `dockerfile`".into(),
                        },
                        context.span,
                        "remove `context`, or build from a `dockerfile`",
                    );
                }
                if reference.value.trim().is_empty()
                    || reference.value.chars().any(char::is_whitespace)
                {
                    self.bad_value(
                        "image reference",
                        reference,
                        "an image reference has no whitespace",
                    );
                    return None;
                }
                Some(ImagePlan::Existing {
                    reference: reference.value.clone(),
                })
            }
            (Some(dockerfile), None) => {
                let dockerfile_path = self.path(dockerfile, "Dockerfile", false)?;
                let context = match context {
                    Some(context) => self.path(context, "build context", true)?,
                    None => dockerfile_path
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                };
                Some(ImagePlan::Build {
                    dockerfile: dockerfile_path,
                    context,
                    tag: format!("bot-bottle/{bottle}:latest"),
                })
            }
        }
    }

    fn env(&mut self, bottle: &manifest::Bottle) -> EnvPlan {
        let mut vars = BTreeMap::new();
        if let Some(env_file) = &bottle.env_file {
            let path = resolve_path(env_file, self.facts, &mut self.problems);
            match path
                .as_ref()
                .and_then(|p| self.facts.env_files.get(p).map(|c| (p, c)))
            {
                Some((_, contents)) => match parse_env_file(contents) {
                    // Env files usually hold credentials: every entry is forwarded as a
                    // secret, never written to the compose file.
                    Ok(entries) => {
                        for (name, value) in entries {
                            vars.insert(name, EnvVar::Secret(Secret::new(value)));
                        }
                    }
                    Err(line) => self.error(
                        ProblemKind::BadEnvFileLine {
                            path: env_file.value.clone(),
                            line,
                        },
                        env_file.span,
                        "each line is `NAME=value`, `export NAME=value`, blank, or a `#` comment",
                    ),
                },
                None => {
                    if let Some(path) = path {
                        self.problems.push(
                            FileRef {
                                path,
                                written: env_file.value.clone(),
                                what: "env file",
                                is_dir: false,
                                span: env_file.span,
                            }
                            .missing(),
                        );
                    }
                }
            }
        }
        for (name, value) in &bottle.env {
            self.name("environment variable name", name, rules::check_env_name);
            let raw = value.map(|v| v.raw().to_owned());
            let Some(expanded) = self.interpolated(&raw) else {
                continue;
            };
            let var = if value.value.is_secret() {
                EnvVar::Secret(Secret::new(expanded))
            } else {
                EnvVar::Literal(expanded)
            };
            vars.insert(name.value.clone(), var);
        }
        EnvPlan { vars }
    }

    fn egress(&mut self, egress: &manifest::Egress) -> EgressPlan {
        let allow: Vec<AllowRulePlan> = egress
            .allow
            .iter()
            .filter_map(|rule| self.allow_rule(rule))
            .collect();
        let mut routes: Vec<RoutePlan> = Vec::new();
        let mut seen_routes = BTreeSet::new();
        for route in &egress.routes {
            if let Some(plan) = self.route(route, &allow) {
                let key = (
                    plan.host.clone(),
                    plan.path_prefix.clone(),
                    plan.header.clone(),
                );
                if !seen_routes.insert(key) {
                    self.error(
                        ProblemKind::Duplicate {
                            what: "route",
                            name: format!("{} {}", plan.host, plan.header),
                        },
                        route.span,
                        "one route per host, path prefix and header; remove the repeat",
                    );
                    continue;
                }
                // One credential per host and path: the proxy applies the first route
                // that matches a request, so a later one whose token is also set would
                // go unused. Say so, and keep its placeholder out of the agent's env.
                if let Some(used) = routes
                    .iter()
                    .find(|r| r.host == plan.host && r.path_prefix == plan.path_prefix)
                {
                    self.problems.push(
                        Problem::error(
                            ProblemKind::UnusedRoute {
                                host: plan.host.clone(),
                                used: used.token_env.clone(),
                                unused: plan.token_env.clone(),
                            },
                            route.span,
                        )
                        .warning()
                        .help(format!(
                            "the first route in the manifest whose token is set wins; unset {} to use {}",
                            used.token_env, plan.token_env
                        )),
                    );
                    continue;
                }
                routes.push(plan);
            }
        }
        let dlp_enabled = egress.dlp.enabled.as_ref().is_none_or(|e| e.value);
        if !dlp_enabled && let Some(first) = egress.dlp.patterns.first() {
            self.error(
                ProblemKind::Conflict {
                    message: "DLP patterns given while DLP is disabled".into(),
                },
                first.span,
                "remove `dlp.patterns`, or set `dlp.enabled: true`",
            );
        }
        if !dlp_enabled
            && let Some(span) = egress
                .dlp
                .mode
                .as_ref()
                .map(|m| m.span)
                .or_else(|| egress.dlp.hosts.first().map(|h| h.span))
        {
            self.error(
                ProblemKind::Conflict {
                    message: "DLP modes given while DLP is disabled".into(),
                },
                span,
                "remove `dlp.mode` and `dlp.hosts`, or set `dlp.enabled: true`",
            );
        }
        let mut mode_hosts = BTreeSet::new();
        let mut hosts = Vec::new();
        for entry in &egress.dlp.hosts {
            let Some(host) = self.host_pattern(&entry.value.host) else {
                continue;
            };
            if !mode_hosts.insert(host.to_string()) {
                self.error(
                    ProblemKind::Duplicate {
                        what: "DLP host",
                        name: host.to_string(),
                    },
                    entry.value.host.span,
                    "give each host one DLP mode",
                );
                continue;
            }
            hosts.push(DlpHostPlan {
                host,
                mode: entry.value.mode.value,
            });
        }
        let mut pattern_names = BTreeSet::new();
        let mut patterns = Vec::new();
        for pattern in &egress.dlp.patterns {
            let p = &pattern.value;
            if !pattern_names.insert(p.name.value.clone()) {
                self.error(
                    ProblemKind::Duplicate {
                        what: "DLP pattern",
                        name: p.name.value.clone(),
                    },
                    p.name.span,
                    "DLP pattern names must be unique: the audit log reports findings by name",
                );
            }
            if let Err(error) = regex_syntax_check(&p.regex.value) {
                self.bad_value("regex", &p.regex, error);
                continue;
            }
            let allowed_hosts = p
                .allowed_hosts
                .iter()
                .filter_map(|h| self.host_pattern(h))
                .collect();
            patterns.push(DlpPatternPlan {
                name: p.name.value.clone(),
                regex: p.regex.value.clone(),
                allowed_hosts,
            });
        }
        let ssrf_enabled = egress.ssrf.enabled.as_ref().is_none_or(|e| e.value);
        if !ssrf_enabled && let Some(first) = egress.ssrf.exempt.first() {
            self.error(
                ProblemKind::Conflict {
                    message: "SSRF exemptions given while SSRF blocking is disabled".into(),
                },
                first.span,
                "remove `ssrf.exempt`, or set `ssrf.enabled: true`",
            );
        }
        let mut exempt = Vec::new();
        for cidr in &egress.ssrf.exempt {
            match rules::parse_cidr(&cidr.value) {
                Ok(normalized) if rules::is_unspecified_cidr(&normalized) => self.bad_value(
                    "SSRF exemption",
                    cidr,
                    "this exempts every address; set `ssrf.enabled: false` if that is really meant",
                ),
                Ok(normalized) => exempt.push(normalized),
                Err(reason) => self.bad_value("SSRF exemption", cidr, reason),
            }
        }
        EgressPlan {
            allow,
            routes,
            dlp: DlpPlan {
                enabled: dlp_enabled,
                patterns,
                mode: egress
                    .dlp
                    .mode
                    .as_ref()
                    .map(|m| m.value)
                    .unwrap_or_default(),
                hosts,
            },
            ssrf: SsrfPlan {
                enabled: ssrf_enabled,
                exempt,
            },
            guarded_env: Vec::new(),
            upstream_proxy: egress
                .upstream_proxy
                .as_ref()
                .and_then(|proxy| self.upstream_proxy(proxy)),
        }
    }

    /// The corporate proxy: a plain `http://host:port`, its credential from a host
    /// variable (never the URL), NO_PROXY-style exceptions.
    fn upstream_proxy(
        &mut self,
        proxy: &Spanned<manifest::UpstreamProxy>,
    ) -> Option<UpstreamProxyPlan> {
        let p = &proxy.value;
        let address = match rules::parse_proxy_url(&p.url.value) {
            Ok(address) => Some(address),
            Err(reason) => {
                // A password written into the URL is not repeated in the message.
                let shown = match p.url.value.split_once("://") {
                    Some((scheme, rest))
                        if rest.split('/').next().is_some_and(|a| a.contains('@')) =>
                    {
                        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                        format!("{scheme}://[redacted]@{host}")
                    }
                    _ => p.url.value.clone(),
                };
                self.bad_value("upstream proxy URL", &p.url.map(|_| shown), reason);
                None
            }
        };
        let mut no_proxy = Vec::new();
        for entry in &p.no_proxy {
            match rules::parse_no_proxy(&entry.value) {
                Ok(normal) => no_proxy.push(normal),
                Err(reason) => self.bad_value("no_proxy entry", entry, reason),
            }
        }
        let credentials = match &p.credentials_env {
            None => None,
            Some(var) => {
                self.name("environment variable name", var, rules::check_env_name);
                let value = self.host_var(var, "the upstream proxy's `user:password`")?;
                if value != MISSING_VALUE && (!value.contains(':') || value.contains(['\r', '\n']))
                {
                    self.bad_value(
                        "upstream proxy credentials",
                        &var.map(|_| "(hidden)"),
                        format!("{} must hold `user:password` on one line", var.value),
                    );
                }
                Some((var.value.clone(), Secret::new(value)))
            }
        };
        let (host, port) = address?;
        let (credentials_env, credentials) = credentials.unzip();
        Some(UpstreamProxyPlan {
            host,
            port,
            credentials_env,
            credentials,
            no_proxy,
        })
    }

    /// The bottle's `secret: true` values DLP must guard, with the hosts each may go
    /// to. Env-file entries are secret too but not guarded: a file has no place to
    /// say where a value may go, and guarding a database URL everywhere would refuse
    /// the agent's ordinary work.
    fn guarded_env(&mut self, bottle: &manifest::Bottle, env: &EnvPlan) -> Vec<GuardedEnvPlan> {
        let mut guarded = Vec::new();
        for (name, value) in &bottle.env {
            let hosts = value.value.may_send_to();
            if !value.value.is_secret() {
                if !hosts.is_empty() {
                    self.error(
                        ProblemKind::Conflict {
                            message: format!(
                                "`{}` has `may_send_to` but is not secret",
                                name.value
                            ),
                        },
                        value.span,
                        "add `secret: true`, or remove `may_send_to`",
                    );
                }
                continue;
            }
            let mut may_send_to = Vec::new();
            for host in hosts {
                match HostPattern::parse(host) {
                    Ok(HostPattern::Exact(exact)) => may_send_to.push(exact),
                    Ok(HostPattern::Suffix(_)) => self.bad_value(
                        "may_send_to host",
                        &value.map(|_| host.clone()),
                        "write exact host names: a secret goes to the hosts you name",
                    ),
                    Err(reason) => {
                        self.bad_value("may_send_to host", &value.map(|_| host.clone()), reason)
                    }
                }
            }
            let Some(EnvVar::Secret(secret)) = env.vars.get(&name.value) else {
                continue;
            };
            if secret.expose().chars().count() < MIN_GUARDED_SECRET_CHARS {
                self.problems.push(
                    Problem::error(
                        ProblemKind::UnguardedSecret {
                            var: name.value.clone(),
                        },
                        value.span,
                    )
                    .warning()
                    .help(format!(
                        "DLP guards secret values of {MIN_GUARDED_SECRET_CHARS} characters or more: a shorter one would match ordinary traffic"
                    )),
                );
                continue;
            }
            guarded.push(GuardedEnvPlan {
                var: name.value.clone(),
                value: secret.clone(),
                may_send_to,
            });
        }
        guarded
    }

    fn host_pattern(&mut self, host: &Spanned<String>) -> Option<HostPattern> {
        match HostPattern::parse(&host.value) {
            Ok(pattern) => Some(pattern),
            Err(reason) => {
                self.error(
                    ProblemKind::BadHostPattern {
                        host: host.value.clone(),
                        reason,
                    },
                    host.span,
                    "write `api.example.com` for one host or `*.example.com` for its subdomains",
                );
                None
            }
        }
    }

    fn allow_rule(&mut self, rule: &Spanned<manifest::AllowRule>) -> Option<AllowRulePlan> {
        let r = &rule.value;
        let host = self.host_pattern(&r.host);
        let ports = match &r.ports {
            None => DEFAULT_PORTS.to_vec(),
            Some(ports) => {
                for port in ports.iter().filter(|p| p.value == 0) {
                    self.bad_value("port", port, "ports are 1 to 65535");
                }
                ports.iter().map(|p| p.value).filter(|p| *p != 0).collect()
            }
        };
        let methods = r.methods.as_ref().map(|methods| {
            methods
                .iter()
                .filter_map(|m| match rules::parse_method(&m.value) {
                    Ok(method) => Some(method),
                    Err(reason) => {
                        self.bad_value("HTTP method", m, reason);
                        None
                    }
                })
                .collect()
        });
        let paths = r.paths.as_ref().map(|paths| {
            paths
                .iter()
                .filter(|p| match rules::check_path_prefix(&p.value) {
                    Ok(()) => true,
                    Err(reason) => {
                        self.bad_value("path prefix", p, reason);
                        false
                    }
                })
                .map(|p| p.value.clone())
                .collect()
        });
        Some(AllowRulePlan {
            host: host?,
            ports,
            methods,
            paths,
        })
    }

    fn route(
        &mut self,
        route: &Spanned<manifest::Route>,
        allow: &[AllowRulePlan],
    ) -> Option<RoutePlan> {
        let r = &route.value;
        let host = match self.host_pattern(&r.host)? {
            HostPattern::Exact(host) => host,
            HostPattern::Suffix(_) => {
                self.error(
                    ProblemKind::BadHostPattern {
                        host: r.host.value.clone(),
                        reason: "a credential goes to one exact host".into(),
                    },
                    r.host.span,
                    "name the exact host, e.g. `api.example.com`",
                );
                return None;
            }
        };
        if !allow.iter().any(|rule| rule.host.matches(&host)) {
            self.error(
                ProblemKind::RouteHostNotAllowed { host: host.clone() },
                r.host.span,
                format!("add `- host: {host}` under `egress.allow`"),
            );
        }
        if let Some(prefix) = &r.path_prefix
            && let Err(reason) = rules::check_path_prefix(&prefix.value)
        {
            self.bad_value("path prefix", prefix, reason);
        }
        let header = match rules::parse_header_name(&r.header.value) {
            Ok(header) => Some(header),
            Err(reason) => {
                self.bad_value("header name", &r.header, reason);
                None
            }
        };
        let format = r
            .format
            .as_ref()
            .map_or_else(|| "{token}".to_owned(), |f| f.value.clone());
        if let Some(raw_format) = &r.format
            && (!raw_format.value.contains("{token}") || raw_format.value.contains(['\r', '\n']))
        {
            self.bad_value(
                "header format",
                raw_format,
                "the format must contain `{token}` and no line breaks",
            );
        }
        self.name(
            "environment variable name",
            &r.token_env,
            rules::check_env_name,
        );
        let agent_env = r.agent_env.as_ref().unwrap_or(&r.token_env);
        self.name(
            "environment variable name",
            agent_env,
            rules::check_env_name,
        );
        let token = if r.optional && !self.facts.env.contains_key(&r.token_env.value) {
            return None;
        } else {
            self.host_var(&r.token_env, "a credential route needs it")?
        };
        let placeholder = match &r.placeholder {
            Some(placeholder) => {
                if placeholder.value == token {
                    self.bad_value(
                        "placeholder",
                        &placeholder.map(|_| "(hidden)"),
                        "the placeholder equals the real credential; choose a fake value",
                    );
                }
                placeholder.value.clone()
            }
            None => placeholder_for(&token),
        };
        Some(RoutePlan {
            host,
            path_prefix: r.path_prefix.as_ref().map(|p| p.value.clone()),
            header: header?,
            format,
            token_env: r.token_env.value.clone(),
            token: Secret::new(token),
            agent_env: agent_env.value.clone(),
            placeholder,
        })
    }

    fn git(&mut self, git: &manifest::Git) -> GitGatePlan {
        let mut names = BTreeSet::new();
        let mut upstreams = Vec::new();
        for upstream in &git.upstreams {
            let u = &upstream.value;
            self.name("upstream name", &u.name, rules::check_upstream_name);
            if !names.insert(u.name.value.clone()) {
                self.error(
                    ProblemKind::Duplicate {
                        what: "upstream",
                        name: u.name.value.clone(),
                    },
                    u.name.span,
                    "upstream names must be unique: the agent picks one by name in the gate URL",
                );
            }
            if let Err(reason) = rules::check_ssh_url(&u.url.value) {
                self.bad_value("upstream URL", &u.url, reason);
            }
            for pattern in &u.push {
                if let Err(reason) = rules::check_ref_pattern(&pattern.value) {
                    self.bad_value("ref pattern", pattern, reason);
                }
            }
            let flag = |f: &Option<Spanned<bool>>| f.as_ref().is_some_and(|f| f.value);
            let (force_push, allow_delete, read_only) = (
                flag(&u.force_push),
                flag(&u.allow_delete),
                flag(&u.read_only),
            );
            if read_only && let Some(first) = u.push.first() {
                self.error(
                    ProblemKind::Conflict {
                        message: "push refs given for a read-only upstream".into(),
                    },
                    first.span,
                    "remove `push`, or set `read_only: false`",
                );
            }
            for (set, field, what) in [
                (force_push, &u.force_push, "force_push"),
                (allow_delete, &u.allow_delete, "allow_delete"),
            ] {
                if set
                    && u.push.is_empty()
                    && let Some(field) = field
                {
                    self.error(
                        ProblemKind::Conflict { message: format!("`{what}: true` but no ref may be pushed") },
                        field.span,
                        "list the refs the agent may push under `push`, e.g. `push: [refs/heads/agent/*]`",
                    );
                }
            }
            let key_path = self.path(&u.key, "SSH key", false);
            let known_hosts_path = self.path(&u.known_hosts, "known_hosts file", false);
            if let (Some(key_path), Some(known_hosts_path)) = (key_path, known_hosts_path) {
                upstreams.push(UpstreamPlan {
                    name: u.name.value.clone(),
                    url: u.url.value.clone(),
                    key_path,
                    known_hosts_path,
                    push_refs: u.push.iter().map(|p| p.value.clone()).collect(),
                    force_push,
                    allow_delete,
                    read_only,
                });
            }
        }
        GitGatePlan { upstreams }
    }

    fn limits(&mut self, limits: &manifest::Limits) -> LimitsPlan {
        let cpus = limits.cpus.as_ref().and_then(|cpus| {
            if cpus.value.is_finite() && cpus.value > 0.0 && cpus.value <= 1024.0 {
                Some(cpus.value)
            } else {
                self.bad_value(
                    "CPU limit",
                    cpus,
                    "use a positive number such as `2` or `0.5`",
                );
                None
            }
        });
        let memory_bytes =
            limits
                .memory
                .as_ref()
                .and_then(|memory| match rules::parse_memory(&memory.value.0) {
                    Ok(bytes) => Some(bytes),
                    Err(reason) => {
                        self.bad_value("memory limit", &memory.map(|m| m.0.clone()), reason);
                        None
                    }
                });
        let disk_bytes =
            limits
                .disk
                .as_ref()
                .and_then(|disk| match rules::parse_memory(&disk.value.0) {
                    Ok(bytes) => Some(bytes),
                    Err(reason) => {
                        self.bad_value("disk limit", &disk.map(|d| d.0.clone()), reason);
                        None
                    }
                });
        let pids = limits.pids.as_ref().and_then(|pids| {
            if pids.value >= 16 {
                Some(pids.value)
            } else {
                self.bad_value(
                    "pids limit",
                    pids,
                    "at least 16: the agent and its tools need processes",
                );
                None
            }
        });
        LimitsPlan {
            cpus,
            memory_bytes,
            pids,
            disk_bytes,
        }
    }

    fn agent(
        &mut self,
        name: &Spanned<String>,
        agent: &manifest::Agent,
        bottle: &BottleDraft,
    ) -> Option<BottlePlan> {
        let command = match &agent.command {
            None => vec![DEFAULT_COMMAND.to_owned()],
            Some(command) if command.value.first().is_none_or(|c| c.trim().is_empty()) => {
                self.error(
                    ProblemKind::BadValue { what: "command", value: format!("{:?}", command.value), reason: "the command is empty".into() },
                    command.span,
                    "give the program and its arguments, e.g. `command: [claude, --dangerously-skip-permissions]`",
                );
                return None;
            }
            Some(command) => command.value.clone(),
        };
        let prompt_file = agent
            .prompt
            .as_ref()
            .and_then(|p| self.path(p, "prompt file", false));
        let skills_dirs = agent
            .skills
            .iter()
            .filter_map(|s| self.path(s, "skills directory", true))
            .collect();
        let kind = agent
            .kind
            .as_ref()
            .map_or_else(|| AgentKind::from_command(&command), |k| k.value);
        let workdir = self.facts.project_dir.clone();
        let api_key = match bottle.env.vars.get("ANTHROPIC_API_KEY") {
            Some(EnvVar::Literal(value)) => Some(value.as_str()),
            _ => None,
        };
        let profile = AgentProfile::new(
            kind,
            ProfileInputs {
                workdir: &workdir,
                api_key,
                supervise: bottle.supervise.enabled,
            },
        );
        // The program's environment, under what the manifest sets.
        let mut env = bottle.env.clone();
        for (var, value) in &profile.env {
            env.vars
                .entry(var.clone())
                .or_insert_with(|| EnvVar::Literal(value.clone()));
        }
        Some(BottlePlan {
            slug: Slug::new(&name.value, 0),
            bottle: bottle.name.clone(),
            agent: AgentPlan {
                name: name.value.clone(),
                command,
                prompt_file,
                skills_dirs,
                container_name: agent
                    .container_name
                    .as_ref()
                    .map(|c| c.value.clone())
                    .unwrap_or_default(),
                container_name_pinned: agent.container_name.is_some(),
                workdir,
                profile,
            },
            image: bottle.image.clone()?,
            runtime: bottle.runtime,
            env,
            egress: bottle.egress.clone(),
            git_gate: bottle.git_gate.clone(),
            supervise: bottle.supervise,
            limits: bottle.limits,
        })
    }
}

/// Resolves a manifest path: `${VAR}` interpolation, `~/`, then relative to the
/// manifest directory. Pure path arithmetic: nothing is looked up on disk.
fn resolve_path(
    raw: &Spanned<String>,
    facts: &HostFacts,
    problems: &mut Problems,
) -> Option<PathBuf> {
    let expanded = match interpolate(&raw.value, &facts.env) {
        Ok(expanded) => expanded,
        Err(errors) => {
            for error in errors {
                let kind = match error {
                    InterpolationError::Missing(var) => ProblemKind::MissingHostEnv { var },
                    InterpolationError::Syntax(reason) => ProblemKind::BadInterpolation { reason },
                };
                problems.push(
                    Problem::error(kind, raw.span).help("set the variable, or write the path out"),
                );
            }
            return None;
        }
    };
    if expanded.is_empty() {
        problems.push(
            Problem::error(
                ProblemKind::BadValue {
                    what: "path",
                    value: raw.value.clone(),
                    reason: "the path is empty".into(),
                },
                raw.span,
            )
            .help("give a file path, relative to the manifest or absolute"),
        );
        return None;
    }
    if let Some(rest) = expanded.strip_prefix("~/") {
        let Some(home) = facts.env.get("HOME") else {
            problems.push(
                Problem::error(ProblemKind::MissingHostEnv { var: "HOME".into() }, raw.span)
                    .help("`~/` needs HOME; write an absolute path instead"),
            );
            return None;
        };
        return Some(Path::new(home).join(rest));
    }
    Some(facts.manifest_dir.join(expanded))
}

/// Checks a DLP regex compiles with the same engine (and size limit) the proxy uses.
fn regex_syntax_check(source: &str) -> Result<(), String> {
    regex::RegexBuilder::new(source)
        .size_limit(1 << 20)
        .build()
        .map(drop)
        .map_err(|error| match error {
            regex::Error::Syntax(text) => text
                .lines()
                .last()
                .unwrap_or("syntax error")
                .trim()
                .to_owned(),
            regex::Error::CompiledTooBig(_) => "the pattern is too large".to_owned(),
            _ => "the pattern does not compile".to_owned(),
        })
}
