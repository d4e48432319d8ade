//! The launcher writes the sidecars' configs through `sidecar-contract`; it must not
//! link the sidecars themselves (their tokio, hyper and rustls) to do it.

use std::process::Command;

#[test]
fn the_launcher_links_no_sidecar_and_no_async_runtime() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--package",
            "backend-docker",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"sidecar-contract"), "{tree}");
    for forbidden in [
        "egress",
        "git-gate",
        "supervise",
        "tokio",
        "hyper",
        "rustls",
    ] {
        assert!(
            !crates.contains(&forbidden),
            "backend-docker links `{forbidden}`; write sidecar configs through sidecar-contract:\n{tree}"
        );
    }
}
