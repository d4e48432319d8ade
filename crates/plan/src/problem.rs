//! What the planner says about a manifest: every problem, each with a span and a hint.

use crate::spanned::SourceSpan;

/// Why a manifest cannot be planned. Messages name the offending value but never a
/// secret: host environment values are not quoted anywhere in here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The YAML does not parse, or does not have the manifest's shape.
    #[error("{message}")]
    Syntax { message: String },
    /// The manifest declares no agent, so there is nothing to run.
    #[error("the manifest defines no agents")]
    NoAgents,
    /// An agent names a bottle that is not defined.
    #[error("agent `{agent}` uses bottle `{bottle}`, which is not defined")]
    UnknownBottle { agent: String, bottle: String },
    /// Two things that must be unique share a name.
    #[error("duplicate {what} `{name}`")]
    Duplicate { what: &'static str, name: String },
    /// A name that ends up in container names, URLs or slugs has characters they forbid.
    #[error("invalid {what} `{name}`")]
    InvalidName {
        what: &'static str,
        name: String,
        rule: &'static str,
    },
    /// A host pattern that no request could match, or one that matches too much.
    #[error("invalid host pattern `{host}`: {reason}")]
    BadHostPattern { host: String, reason: String },
    /// A credential route for a host the allowlist does not let through.
    #[error("route for `{host}`, but no `egress.allow` rule allows that host")]
    RouteHostNotAllowed { host: String },
    /// A host environment variable the manifest needs is not set.
    #[error("host environment variable `{var}` is not set")]
    MissingHostEnv { var: String },
    /// Two options that cannot both hold.
    #[error("conflicting options: {message}")]
    Conflict { message: String },
    /// A required option is absent.
    #[error("missing option: {message}")]
    Missing { message: String },
    /// A value of the right type but outside what the option accepts.
    #[error("invalid {what} `{value}`")]
    BadValue {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// A `${...}` reference that cannot be expanded.
    #[error("bad interpolation: {reason}")]
    BadInterpolation { reason: String },
    /// A file the manifest points at does not exist on the host.
    #[error("{what} `{path}` does not exist")]
    MissingFile { what: &'static str, path: String },
    /// Two credential routes for the same host and path: only the first one whose token
    /// is set is used, so the other token would silently go unused.
    #[error("`{unused}` is set but not used: the route for {host} uses `{used}`")]
    UnusedRoute {
        host: String,
        used: String,
        unused: String,
    },
    /// A secret value too short for DLP to guard without refusing ordinary traffic.
    #[error("`{var}` is secret but too short for DLP to guard")]
    UnguardedSecret { var: String },
    /// An env file line that is not `NAME=value`; the content is not shown (it may be secret).
    #[error("env file `{path}` line {line}: expected `NAME=value`")]
    BadEnvFileLine { path: String, line: usize },
}

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The manifest cannot be used.
    Error,
    /// Worth saying; the dry run goes on.
    Warning,
}

/// One problem: what, where, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The offending value in the manifest source.
    pub span: SourceSpan,
    /// How to fix it.
    pub help: Option<String>,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// An error at `span`.
    pub fn error(kind: ProblemKind, span: SourceSpan) -> Self {
        Self {
            kind,
            span,
            help: None,
            severity: Severity::Error,
        }
    }

    /// Adds a hint.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Downgrades to a warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    /// Whether this stops planning.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Every problem found in one manifest, in source order.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("the manifest has {} problem(s)", .0.len())]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Problem::is_error)
    }

    pub(crate) fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    pub(crate) fn sort(&mut self) {
        self.0.sort_by_key(|p| (p.span.offset, p.span.len));
    }
}
