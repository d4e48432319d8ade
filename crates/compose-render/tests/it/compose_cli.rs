//! Real compose accepts every rendered file: v1 (`docker-compose`) always, v2
//! (`docker compose`) where the plugin is installed.

use std::process::Command;

use crate::rendered;

fn compose_commands() -> Vec<Vec<&'static str>> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut commands = Vec::new();
    if works("docker-compose", &["version"]) {
        commands.push(vec!["docker-compose"]);
    }
    if works("docker", &["compose", "version"]) {
        commands.push(vec!["docker", "compose"]);
    }
    commands
}

#[test]
fn compose_accepts_every_rendered_file() {
    let commands = compose_commands();
    assert!(
        !commands.is_empty(),
        "neither docker-compose (v1) nor docker compose (v2) is installed; .ci/run installs docker-compose"
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, _, file) in rendered() {
        let path = dir.path().join(format!("{name}.yml"));
        std::fs::write(&path, compose_render::to_yaml(&file)).unwrap();
        for command in &commands {
            let output = Command::new(command[0])
                .args(&command[1..])
                .args(["-p", "render-check", "-f"])
                .arg(&path)
                .args(["config", "-q"])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{} rejects {name}:\n{}",
                command.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
