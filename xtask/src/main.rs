//! Developer tasks. `cargo xtask help` lists them.

mod bench_lifecycle;
mod e2e;
mod images;
mod k8s_validate;
mod proc;

use std::process::ExitCode;

/// The task list `cargo xtask help` prints.
const HELP: &str = "cargo xtask <task>

tasks:
  help     this text
  images   build bot-bottle/base:bookworm, bot-bottle/sidecar:<version> (+ :dev) and
           bot-bottle/test-agent:dev; `images --check` lists which exist
           (`cargo xtask images --help` for options)
  e2e      real bottles on real Docker against a fake internet: builds the images,
           runs every scenario, cleans up (`cargo xtask e2e --help` for options)
  k8s-validate
           every valid fixture through `bottle render --backend k8s`, checked by
           kubernetes-validate --strict against Kubernetes 1.33's schemas
  bench-lifecycle
           `bottle start -d` and `bottle down` against raw compose on the same
           file, warm, medians (`--runs N`)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help") | Some("--help") | Some("-h") => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("images") => images::main(&args[1..]),
        Some("e2e") => e2e::main(&args[1..]),
        Some("k8s-validate") => k8s_validate::main(&args[1..]),
        Some("bench-lifecycle") => bench_lifecycle::main(&args[1..]),
        Some(other) => {
            eprintln!("unknown task `{other}`; try `cargo xtask help`");
            ExitCode::from(2)
        }
    }
}
