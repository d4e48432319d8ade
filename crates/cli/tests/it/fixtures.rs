//! Every valid fixture validates; every invalid one fails with its snapshotted diagnostic.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The workspace root: fixtures paths in diagnostics are relative to it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Secret values the tests plant in the host environment: none may ever be printed.
pub use fixtures::SENTINELS;

/// `bottle` with a clean, known environment, run from the workspace root.
pub fn bottle() -> Command {
    let mut cmd = Command::cargo_bin("bottle").unwrap();
    let root = workspace_root();
    cmd.current_dir(&root)
        .env_clear()
        .env("NO_COLOR", "1")
        .env("HOME", root.join("fixtures/files/home"))
        .envs(SENTINELS.iter().copied());
    cmd
}

fn fixture_files(kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(workspace_root().join("fixtures").join(kind))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Path relative to the workspace root, as the tests pass it to `-f`.
pub fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap()
        .display()
        .to_string()
}

/// Every file below `dir`, concatenated: for "no secret anywhere on disk" checks.
pub fn all_file_contents(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&all_file_contents(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

pub fn valid_fixtures() -> Vec<PathBuf> {
    fixture_files("valid")
}

#[test]
fn enough_fixtures() {
    assert!(valid_fixtures().len() >= 8);
    assert!(fixture_files("invalid").len() >= 12);
}

#[test]
fn every_valid_fixture_validates() {
    for path in valid_fixtures() {
        let output = bottle()
            .args(["validate", "-f", &relative(&path)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{} failed:\n{stderr}",
            path.display()
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("valid"));
    }
}

#[test]
fn every_invalid_fixture_fails_with_its_diagnostic() {
    for path in fixture_files("invalid") {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let output = bottle()
            .args(["validate", "-f", &relative(&path)])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{name} did not exit 1");
        let stderr = String::from_utf8(output.stderr).unwrap();
        // Every diagnostic names the file with line and column, and says how to fix it.
        assert!(
            stderr.contains(&format!("{}:", relative(&path))),
            "{name}: no file:line:column in\n{stderr}"
        );
        assert!(stderr.contains("help:"), "{name}: no hint in\n{stderr}");
        for (_, secret) in SENTINELS {
            assert!(
                !stderr.contains(secret),
                "{name}: a secret leaked into the diagnostic"
            );
        }
        insta::assert_snapshot!(name, stderr);
    }
}

#[test]
fn missing_manifest_is_a_clear_user_error() {
    let output = bottle()
        .args(["validate", "-f", "no/such/bottle.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read manifest `no/such/bottle.yaml`"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let output = bottle()
        .args(["validate", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn bundled_example_validates_when_its_files_exist() {
    let root = workspace_root();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/id_ed25519"), "fixture").unwrap();
    std::fs::write(home.path().join(".ssh/known_hosts"), "fixture").unwrap();
    let output = bottle()
        .env("HOME", home.path())
        .args(["validate", "-f", "examples/claude/bottle.yaml"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(root);
}
