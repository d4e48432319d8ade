//! Diagnostics on hostile manifests: a 20 MB line is cut, not echoed.

use crate::fixtures::bottle;

fn validate(text: &str) -> (String, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bottle.yaml");
    std::fs::write(&path, text).unwrap();
    let output = bottle()
        .arg("validate")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code(),
    )
}

#[test]
fn a_twenty_megabyte_line_is_cut_around_the_problem() {
    let huge = "x".repeat(20 << 20);
    // The problem on the long line itself...
    let (on_line, code) = validate(&format!(
        "bottles:\n  b:\n    image: {{ref: \"{huge}\"}}\n    limits: {{cpus: 2, {huge}: 1}}\nagents:\n  a:\n    bottle: b\n"
    ));
    assert_eq!(code, Some(1));
    assert!(on_line.len() < 4_096, "{} bytes", on_line.len());
    assert!(on_line.contains('…'), "{on_line}");
    // ...and next to it.
    let (beside, code) = validate(&format!(
        "bottles:\n  b:\n    image: {{ref: \"{huge}\"}}\n    bogus_key: 1\nagents:\n  a:\n    bottle: b\n"
    ));
    assert_eq!(code, Some(1));
    assert!(beside.len() < 4_096, "{} bytes", beside.len());
    assert!(beside.contains("bogus_key"), "{beside}");
}
