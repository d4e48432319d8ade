//! `bottle doctor [--json]`: whether this machine can run bottles. Exits 1 when a
//! check is an error.

use std::path::Path;

use backend_docker::doctor::{self, HostFindings, Status};
use backend_docker::state;

use crate::commands::lifecycle::state_root;
use crate::{CliError, engine, output};

/// Runs `bottle doctor`.
pub fn run(json: bool) -> Result<(), CliError> {
    let root = state_root()?;
    let host = HostFindings {
        state_root_writable: writable(&root),
        state_root_free: free_bytes(&root),
    };
    let engine = engine::engine();
    let engine_ref = match &engine {
        Ok(engine) => Ok(engine.as_ref()),
        Err(error) => Err(error.to_string()),
    };
    let checks = doctor::check(engine_ref, &engine::sidecar_image()?, &root, &host);
    if json {
        let mut text =
            serde_json::to_string_pretty(&checks).map_err(|e| CliError::Internal(e.to_string()))?;
        text.push('\n');
        output::print(&text);
    } else {
        let mut text = String::new();
        for check in &checks {
            let status = match check.status {
                Status::Ok => "ok",
                Status::Warning => "warning",
                Status::Error => "error",
            };
            text.push_str(&format!(
                "{status:<8} {:<14} {}\n",
                check.name, check.detail
            ));
            if let Some(fix) = &check.fix {
                text.push_str(&format!("{:<8} {:<14} fix: {fix}\n", "", ""));
            }
        }
        output::print(&text);
    }
    if doctor::can_run(&checks) {
        Ok(())
    } else {
        Err(CliError::Exit(1))
    }
}

/// Whether the state root can be made and written (a file made and removed).
fn writable(root: &Path) -> Result<(), String> {
    state::create_private_dir(root).map_err(|e| e.to_string())?;
    let probe = root.join(format!(".doctor-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| e.to_string())?;
    std::fs::remove_file(&probe).map_err(|e| e.to_string())
}

/// Free bytes on the file system of `path` (`df -Pk`), if `df` answers.
fn free_bytes(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}
