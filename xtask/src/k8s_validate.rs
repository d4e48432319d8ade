//! `cargo xtask k8s-validate`: every valid fixture's bottle, as `bottle render
//! --backend k8s` prints it, checked against the Kubernetes OpenAPI schemas (strict:
//! unknown fields are errors) by PyPI's `kubernetes-validate`, installed into a venv
//! under `target/` on first use. No cluster is involved: this proves the objects are
//! well-formed for the API version we target, not that a cluster runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::proc::{Failure, checked, run};

/// The validator, pinned.
const VALIDATOR: &str = "kubernetes-validate==1.37.0";
/// The Kubernetes version the objects target (k8s-openapi's `v1_33` feature).
const KUBERNETES_VERSION: &str = "1.33";

const HELP: &str = "cargo xtask k8s-validate

Renders every agent of every manifest in fixtures/valid with the real
`bottle render --backend k8s` and validates the objects with
kubernetes-validate --strict against Kubernetes 1.33's schemas. Installs the
validator into target/bot-bottle/k8s-validate-venv on first use (PyPI).";

pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    match validate() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("k8s-validate: {failure}");
            ExitCode::FAILURE
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn validate() -> Result<(), Failure> {
    let root = workspace();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let validator = install(&target.join("bot-bottle/k8s-validate-venv"))?;

    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "--quiet", "--package", "cli"])
        .current_dir(&root);
    checked(build)?;
    let bottle = target.join("debug/bottle");

    let out_dir = target.join("bot-bottle/k8s-rendered");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| Failure(format!("creating {}: {e}", out_dir.display())))?;
    let mut files = Vec::new();
    let mut documents = 0;
    for (stem, plans) in fixtures::valid_plans() {
        for plan in plans {
            let manifest = root.join("fixtures/valid").join(format!("{stem}.yaml"));
            let mut render = Command::new(&bottle);
            render
                .args(["render", "--backend", "k8s", &plan.agent.name, "--file"])
                .arg(&manifest)
                .current_dir(&root);
            let rendered = checked(render)?;
            // Warnings (missing host variables) go to stderr, which `checked` merges:
            // keep only the YAML stream, which starts at the first document marker.
            let yaml = rendered
                .output
                .find("---\n")
                .map(|at| &rendered.output[at..])
                .ok_or_else(|| Failure(format!("{stem}/{}: no YAML printed", plan.agent.name)))?;
            documents += yaml.matches("\n---\n").count() + 1;
            let file = out_dir.join(format!("{stem}-{}.yaml", plan.agent.name));
            std::fs::write(&file, yaml)
                .map_err(|e| Failure(format!("writing {}: {e}", file.display())))?;
            files.push(file);
        }
    }

    let mut check = Command::new(&validator);
    check
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(&files);
    let ran = checked(check)?;
    let passed = ran
        .output
        .lines()
        .filter(|l| l.starts_with("INFO ") && l.contains(" passed for resource "))
        .count();
    if ran
        .output
        .lines()
        .any(|l| l.starts_with("WARN ") || l.starts_with("ERROR "))
        || passed != documents
    {
        return Err(Failure(format!(
            "{passed} of {documents} objects passed:\n{}",
            ran.tail(40)
        )));
    }

    // The validator must be able to say no: a misspelt field fails it.
    let broken = out_dir.join("broken.yaml");
    let first = std::fs::read_to_string(&files[0]).map_err(|e| Failure(e.to_string()))?;
    std::fs::write(
        &broken,
        first.replacen(
            "automountServiceAccountToken",
            "automountServiceAcountToken",
            1,
        ),
    )
    .map_err(|e| Failure(e.to_string()))?;
    let mut negative = Command::new(&validator);
    negative
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .arg(&broken);
    if run(negative)?.status.success() {
        return Err(Failure(
            "the validator accepted a misspelt field: it checks nothing".into(),
        ));
    }

    println!(
        "k8s-validate: {documents} objects of {} bottles passed kubernetes-validate --strict -k {KUBERNETES_VERSION}; a misspelt field is refused",
        files.len()
    );
    Ok(())
}

/// The validator's executable in `venv`, installing it there when missing.
fn install(venv: &Path) -> Result<PathBuf, Failure> {
    let exe = venv.join("bin/kubernetes-validate");
    let stamp = venv.join("installed");
    if exe.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == VALIDATOR) {
        return Ok(exe);
    }
    println!(
        "k8s-validate: installing {VALIDATOR} into {}",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(venv);
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(venv);
    checked(create)?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        VALIDATOR,
    ]);
    checked(pip)?;
    std::fs::write(&stamp, VALIDATOR).map_err(|e| Failure(e.to_string()))?;
    Ok(exe)
}
