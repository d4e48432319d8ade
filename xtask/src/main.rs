//! Developer tasks. `cargo xtask help` lists them.

use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        None | Some("help") | Some("--help") => {
            println!(
                "cargo xtask <task>\n\ntasks:\n  help    this text\n  e2e     real bottles on real Docker (not yet available: see issue 7)"
            );
            ExitCode::SUCCESS
        }
        Some("e2e") => {
            eprintln!(
                "cargo xtask e2e: the end-to-end suite lands with the backend, egress and git-gate sidecars (issue 7)"
            );
            ExitCode::from(2)
        }
        Some(other) => {
            eprintln!("unknown task `{other}`; try `cargo xtask help`");
            ExitCode::from(2)
        }
    }
}
