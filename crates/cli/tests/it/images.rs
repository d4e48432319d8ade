//! `bottle images` and `bottle demo --dry-run` through the real binary, against the
//! fake engine: the sidecar image is built from the running executable on first use.

use std::path::Path;

use assert_cmd::Command;
use backend_docker::images::{BASE, base::tarball_name};

use crate::fixtures::bottle;

/// A fake engine with no images at all, and a cache holding a debootstrap tarball
/// (so no registry or debootstrap is needed).
fn empty_engine(dir: &Path) -> Command {
    let engine = dir.join("engine.json");
    std::fs::write(
        &engine,
        r#"{"images":[],"networks":{},"containers":[],"calls":[],"next_id":0}"#,
    )
    .unwrap();
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join(tarball_name()), b"rootfs").unwrap();
    let mut cmd = bottle();
    cmd.env("BOT_BOTTLE_BACKEND", format!("fake:{}", engine.display()))
        .env("BOT_BOTTLE_STATE_DIR", dir.join("state"))
        .env("BOT_BOTTLE_CACHE_DIR", &cache);
    cmd
}

fn calls(dir: &Path) -> Vec<String> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("engine.json")).unwrap()).unwrap();
    state["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// The tag this very `bottle` binary looks for.
fn own_tag() -> String {
    let binary = assert_cmd::cargo::cargo_bin("bottle");
    backend_docker::images::OwnBinary::at(&binary)
        .unwrap()
        .sidecar_tag()
}

#[test]
fn images_build_makes_the_base_and_this_binarys_sidecar_then_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let before = empty_engine(dir.path()).arg("images").output().unwrap();
    let listing = String::from_utf8_lossy(&before.stdout);
    assert!(
        listing.contains("is not built yet: `bottle images build` builds it"),
        "{listing}"
    );

    let built = empty_engine(dir.path())
        .args(["images", "build"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "{stderr}");
    let tag = own_tag();
    // The engine file is rewritten per command: `images` left no calls of its own.
    assert_eq!(
        calls(dir.path()),
        [
            format!("import:{BASE}"),
            format!("build:{tag}"),
            format!("run:{tag}:bottle --version"),
        ]
    );
    assert!(!stderr.to_lowercase().contains("xtask"), "{stderr}");

    let after = empty_engine_keep(dir.path())
        .arg("images")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&after.stdout);
    assert!(listing.contains(&tag), "{listing}");
    assert!(listing.contains("sidecar (this bottle)"), "{listing}");
    assert!(listing.contains("base"), "{listing}");
}

/// Like [`empty_engine`], but keeps the engine's state.
fn empty_engine_keep(dir: &Path) -> Command {
    let mut cmd = bottle();
    cmd.env(
        "BOT_BOTTLE_BACKEND",
        format!("fake:{}", dir.join("engine.json").display()),
    )
    .env("BOT_BOTTLE_STATE_DIR", dir.join("state"))
    .env("BOT_BOTTLE_CACHE_DIR", dir.join("cache"));
    cmd
}

#[test]
fn start_builds_the_missing_sidecar_image_first() {
    let dir = tempfile::tempdir().unwrap();
    let output = empty_engine(dir.path())
        .args(["start", "dev", "-d", "-f", "fixtures/valid/minimal.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The minimal fixture's agent image is not in this empty engine: the launch stops
    // there, after the sidecar image was built.
    let tag = own_tag();
    assert!(
        stderr.contains(&format!("building its sidecar image {tag}")),
        "{stderr}"
    );
    assert!(calls(dir.path()).contains(&format!("build:{tag}")));
    assert!(!stderr.to_lowercase().contains("xtask"), "{stderr}");
}

#[test]
fn the_demo_dry_run_needs_no_engine() {
    let output = bottle()
        .env("BOT_BOTTLE_STATE_DIR", "/nonexistent/state")
        .args(["demo", "--dry-run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in ["services:", "  agent:", "  egress:", "DEMO_API_TOKEN="] {
        assert!(stdout.contains(expected), "{expected} in:\n{stdout}");
    }
    // The dry run shows a placeholder, never a credential.
    assert!(!stdout.contains("dry-run-credential"), "{stdout}");
    assert!(stdout.contains("working_dir: /demo\n"), "{stdout}");
}

#[test]
fn without_an_engine_the_demo_shows_its_dry_run_and_says_why() {
    // A PATH with nothing on it: there is no `docker` to find.
    let empty = tempfile::tempdir().unwrap();
    let output = bottle()
        .env("BOT_BOTTLE_STATE_DIR", "/nonexistent/state")
        .env("PATH", empty.path())
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The compose file is shown, but the demo did not run: not a success.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no Docker engine"), "{stderr}");
    assert!(
        stderr.contains("bottle demo needs a Docker engine"),
        "{stderr}"
    );
    assert!(stdout.contains("  egress:"), "{stdout}");
}

#[test]
fn doctor_says_what_runs_and_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("engine.json");
    let doctor = |fail: Option<&str>| {
        let mut cmd = bottle();
        cmd.env("BOT_BOTTLE_BACKEND", format!("fake:{}", engine.display()))
            .env("BOT_BOTTLE_STATE_DIR", dir.path().join("state"));
        if let Some(fail) = fail {
            cmd.env("BOT_BOTTLE_FAKE_FAIL", fail);
        }
        cmd.args(["doctor", "--json"]).output().unwrap()
    };
    let fine = doctor(None);
    assert_eq!(fine.status.code(), Some(0));
    let checks: serde_json::Value = serde_json::from_slice(&fine.stdout).unwrap();
    let status = |name: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status("engine").as_deref(), Some("ok"));
    assert_eq!(status("sidecar-image").as_deref(), Some("ok"));
    assert_eq!(status("base-image").as_deref(), Some("warning"));
    assert_eq!(status("state").as_deref(), Some("ok"));

    let broken = doctor(Some("engine"));
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stdout).contains("\"status\": \"error\""));

    // No docker at all: the engine check says how to get one.
    let empty = tempfile::tempdir().unwrap();
    let none = bottle()
        .env("PATH", empty.path())
        .env("BOT_BOTTLE_STATE_DIR", dir.path().join("state"))
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    let text = String::from_utf8_lossy(&none.stdout);
    assert!(text.starts_with("error    engine"), "{text}");
    assert!(text.contains("fix: install Docker Engine 20.10"), "{text}");
}
