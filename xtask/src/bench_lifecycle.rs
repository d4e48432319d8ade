//! `cargo xtask bench-lifecycle`: how long `bottle start -d` (to ready) and `bottle
//! down` take, side by side in one run with raw compose on the very file `bottle`
//! rendered (networks created and removed by hand, `compose up -d`, `compose down`),
//! warm images, medians of N. Every network it makes is `--internal`: nothing leaves
//! the machine. `bottle`'s own step timings of the last start are printed below, so
//! the table says where the time goes.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::proc::{Failure, checked, run};

const HELP: &str = "cargo xtask bench-lifecycle [--runs N] [--bottle PATH]

Times `bottle start -d` to ready and `bottle down` against raw compose
(`docker network create` x2 + `compose up -d`; `compose down` + `network rm`)
on the same rendered file, warm, medians of N runs (default 3). Needs Docker,
the images of `cargo xtask images`, and the release build of bottle
(or the `bottle` given with --bottle, e.g. an older build to compare).";

/// The test agent image `cargo xtask images` builds.
const AGENT_IMAGE: &str = "bot-bottle/test-agent:dev";

pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let runs = match args.iter().position(|a| a == "--runs") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("--runs takes a positive number");
                return ExitCode::from(2);
            }
        },
        None => 3,
    };
    let bottle = args
        .iter()
        .position(|a| a == "--bottle")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    match bench(runs, bottle) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("bench-lifecycle: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// One scratch state root and manifest, removed on drop.
struct Scratch {
    dir: PathBuf,
    bottle: PathBuf,
}

impl Scratch {
    fn bottle(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bottle);
        cmd.args(args)
            .current_dir(self.dir.join("project"))
            .env("BOT_BOTTLE_STATE_DIR", self.dir.join("state"))
            .env_remove("BOT_BOTTLE_SIDECAR_IMAGE");
        cmd
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.bottle(&["gc"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed(cmd: Command) -> Result<(Duration, String), Failure> {
    let started = Instant::now();
    let ran = checked(cmd)?;
    Ok((started.elapsed(), ran.output))
}

/// The compose command `bottle` uses here (v2 unless `BOT_BOTTLE_COMPOSE=v1`).
fn compose() -> Command {
    let v1 = std::env::var("BOT_BOTTLE_COMPOSE").is_ok_and(|v| v == "v1")
        || !Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
    if v1 {
        Command::new("docker-compose")
    } else {
        let mut cmd = Command::new("docker");
        cmd.arg("compose");
        cmd
    }
}

/// What `docker network create` needs to make a network again as `bottle` made it.
struct NetworkSpec {
    name: String,
    args: Vec<String>,
}

fn network_spec(name: &str) -> Result<NetworkSpec, Failure> {
    let mut inspect = Command::new("docker");
    inspect.args(["network", "inspect", name]);
    let ran = checked(inspect)?;
    let json: serde_json::Value = serde_json::from_str(&ran.output)
        .map_err(|e| Failure(format!("docker network inspect {name}: {e}")))?;
    let network = &json[0];
    let mut args = vec!["network".to_owned(), "create".to_owned()];
    if network["Internal"].as_bool() == Some(true) {
        args.push("--internal".into());
    }
    for config in network["IPAM"]["Config"].as_array().into_iter().flatten() {
        if let Some(subnet) = config["Subnet"].as_str() {
            args.push(format!("--subnet={subnet}"));
        }
        if let Some(range) = config["IPRange"].as_str() {
            args.push(format!("--ip-range={range}"));
        }
    }
    for (key, value) in network["Labels"].as_object().into_iter().flatten() {
        args.push(format!(
            "--label={key}={}",
            value.as_str().unwrap_or_default()
        ));
    }
    args.push(name.to_owned());
    Ok(NetworkSpec {
        name: name.to_owned(),
        args,
    })
}

fn bench(runs: usize, bottle: Option<PathBuf>) -> Result<(), Failure> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bottle = bottle.unwrap_or_else(|| target.join("release/bottle"));
    if !bottle.is_file() {
        return Err(Failure(format!(
            "{} is missing: run `cargo xtask images` (it builds the release bottle)",
            bottle.display()
        )));
    }
    let mut probe = Command::new("docker");
    probe.args(["image", "inspect", AGENT_IMAGE]);
    if !run(probe)?.status.success() {
        return Err(Failure(format!(
            "{AGENT_IMAGE} is missing: run `cargo xtask images`"
        )));
    }
    let dir = std::env::temp_dir().join(format!("bot-bottle-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("project")).map_err(|e| Failure(e.to_string()))?;
    let scratch = Scratch { dir, bottle };
    let manifest = scratch.dir.join("project/bottle.yaml");
    std::fs::write(
        &manifest,
        format!(
            "bottles:\n  bench:\n    image:\n      ref: {AGENT_IMAGE}\n    egress:\n      allow:\n        - host: example.com\n    supervise: true\nagents:\n  bench:\n    bottle: bench\n    command: [\"sh\"]\n"
        ),
    )
    .map_err(|e| Failure(e.to_string()))?;
    let start_args = [
        "start",
        "bench",
        "-d",
        "-f",
        "bottle.yaml",
        "--egress-network-internal",
    ];

    // Warm: the derived image and the sidecar image exist after one start.
    let (_, out) = timed(scratch.bottle(&start_args))?;
    let slug = last_line(&out);
    checked(scratch.bottle(&["down", &slug]))?;

    let (mut starts, mut downs) = (Vec::new(), Vec::new());
    let mut last_start_output = String::new();
    for _ in 0..runs {
        let (took, out) = timed(scratch.bottle(&start_args))?;
        starts.push(took);
        let slug = last_line(&out);
        last_start_output = out;
        let (took, _) = timed(scratch.bottle(&["down", &slug]))?;
        downs.push(took);
    }

    // Raw compose on the file bottle rendered: start one bottle, keep its state dir
    // (the file's bind mounts), take its containers and networks down by hand.
    let (_, out) = timed(scratch.bottle(&start_args))?;
    let slug = last_line(&out);
    let state_dir = scratch.dir.join("state").join(&slug);
    let metadata: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state_dir.join("metadata.json"))
            .map_err(|e| Failure(format!("reading metadata: {e}")))?,
    )
    .map_err(|e| Failure(e.to_string()))?;
    let project = metadata["compose_project"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let file = state_dir.join("docker-compose.yml");
    let networks: Vec<NetworkSpec> = metadata["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .map(network_spec)
        .collect::<Result<_, _>>()?;
    let compose_down = || {
        let mut cmd = compose();
        cmd.args(["-p", &project, "-f"])
            .arg(&file)
            .args(["down", "--timeout", "10"]);
        cmd
    };
    let networks_rm = || {
        let mut cmd = Command::new("docker");
        cmd.args(["network", "rm"])
            .args(networks.iter().map(|n| n.name.as_str()));
        cmd
    };
    checked(compose_down())?;
    checked(networks_rm())?;
    let (mut raw_ups, mut raw_downs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        for network in &networks {
            let mut create = Command::new("docker");
            create.args(&network.args);
            checked(create)?;
        }
        let mut up = compose();
        up.args(["-p", &project, "-f"])
            .arg(&file)
            .args(["up", "-d", "--no-build"]);
        checked(up)?;
        raw_ups.push(started.elapsed());
        let started = Instant::now();
        checked(compose_down())?;
        checked(networks_rm())?;
        raw_downs.push(started.elapsed());
    }
    // The bottle's own remains: its networks are gone, its state dir is not.
    let _ = scratch.bottle(&["down", &slug]).output();

    let (start, down) = (median(starts), median(downs));
    let (raw_up, raw_down) = (median(raw_ups), median(raw_downs));
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("lifecycle, warm, medians of {runs} ({}):", compose_name());
    println!("| step | bottle | raw compose | bottle / raw |");
    println!("|---|---|---|---|");
    println!(
        "| start -d to ready | {:.2} s | {:.2} s | {:.2}x |",
        start.as_secs_f64(),
        raw_up.as_secs_f64(),
        ratio(start, raw_up)
    );
    println!(
        "| down | {:.2} s | {:.2} s | {:.2}x |",
        down.as_secs_f64(),
        raw_down.as_secs_f64(),
        ratio(down, raw_down)
    );
    println!("\nbottle's steps in the last start:");
    for line in last_start_output
        .lines()
        .filter(|l| l.starts_with("bottle: "))
    {
        println!("  {line}");
    }
    Ok(())
}

fn compose_name() -> String {
    let mut cmd = compose();
    cmd.arg("version");
    cmd.output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

/// `bottle start -d` prints the slug last.
fn last_line(output: &str) -> String {
    output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("bottle:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}
