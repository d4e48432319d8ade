//! Loading a manifest: read, parse, plan, check referenced files, report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plan::{Manifest, ManifestPlan, MissingEnv, Problem, Problems, Severity};

use crate::diagnostics::render_problems;
use crate::{CliError, host, output};

/// A manifest that was read and planned, with its source kept for diagnostics.
pub struct LoadedManifest {
    /// The path as the user gave it.
    pub path: PathBuf,
    /// The raw manifest.
    pub manifest: Manifest,
    /// Plans and problems.
    pub plan: ManifestPlan,
}

/// Reads and plans `path`; prints every problem; fails if any is an error.
///
/// `missing_is_warning` turns absent host variables and files into warnings: dry runs
/// on machines that do not hold the user's secrets and keys.
pub fn load(path: &Path, missing_is_warning: bool) -> Result<LoadedManifest, CliError> {
    load_with(path, missing_is_warning, &Overrides::default())
}

/// What a command sets on top of the host's facts: `bottle demo` hands its stand-in
/// credential over this way (never through the process environment) and keeps the
/// user's current directory out of its bottle.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Variables on top of the host environment.
    pub env: BTreeMap<String, String>,
    /// The project directory, instead of the current one.
    pub project_dir: Option<PathBuf>,
}

/// [`load`], with `overrides` on top of the host's facts.
pub fn load_with(
    path: &Path,
    missing_is_warning: bool,
    overrides: &Overrides,
) -> Result<LoadedManifest, CliError> {
    let source = std::fs::read_to_string(path).map_err(|error| {
        CliError::User(format!(
            "cannot read manifest `{}`: {error}{}",
            path.display(),
            if error.kind() == std::io::ErrorKind::NotFound {
                " (run in a directory with a bottle.yaml, or pass `-f FILE`)"
            } else {
                ""
            }
        ))
    })?;
    let manifest = match plan::parse_manifest(&source) {
        Ok(manifest) => manifest,
        Err(problem) => {
            report(path, &source, &Problems(vec![*problem]));
            return Err(CliError::Reported);
        }
    };
    let missing_env = if missing_is_warning {
        MissingEnv::Warn
    } else {
        MissingEnv::Error
    };
    let mut facts = host::facts(&manifest, path, missing_env);
    facts
        .env
        .extend(overrides.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(dir) = &overrides.project_dir {
        facts.project_dir.clone_from(dir);
    }
    let mut plan = plan::plan_manifest(&manifest, &facts);
    let missing_files: Vec<Problem> = plan
        .file_refs
        .iter()
        .filter(|file| !host::file_ref_ok(file))
        .map(|file| {
            let problem = file.missing();
            if missing_is_warning {
                problem.warning()
            } else {
                problem
            }
        })
        .collect();
    plan.problems.0.extend(missing_files);
    plan.problems.0.sort_by_key(|p| (p.span.offset, p.span.len));
    if !plan.problems.0.is_empty() {
        report(path, &source, &plan.problems);
    }
    if plan.problems.has_errors() {
        return Err(CliError::Reported);
    }
    Ok(LoadedManifest {
        path: path.to_path_buf(),
        manifest,
        plan,
    })
}

fn report(path: &Path, source: &str, problems: &Problems) {
    let errors = problems
        .0
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let rendered = render_problems(
        &path.display().to_string(),
        source,
        problems,
        output::stderr_color(),
    );
    output::diagnostic(&rendered);
    if errors > 0 {
        output::diagnostic(&format!(
            "{}: {errors} error(s); nothing was started\n",
            path.display()
        ));
    }
}
