//! `BOT_BOTTLE_BACKEND=k8s`: the bottle commands go to a cluster; without one, or for
//! the commands that need a local Docker engine, the user is told so plainly.

use crate::fixtures::bottle;

#[test]
fn without_a_cluster_the_k8s_backend_says_where_it_looked() {
    let home = tempfile::tempdir().unwrap();
    for args in [&["ls"][..], &["down", "x-000000"], &["gc", "--dry-run"]] {
        let output = bottle()
            .env("HOME", home.path())
            .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
            .env("BOT_BOTTLE_BACKEND", "k8s")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("finding a cluster"), "{args:?}: {stderr}");
        assert!(stderr.contains("no-such-kubeconfig"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn docker_only_commands_refuse_the_k8s_backend() {
    let output = bottle()
        .env("BOT_BOTTLE_BACKEND", "k8s")
        .args(["images", "ls"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("local Docker engine"), "{stderr}");
}
