//! `bottle doctor`: why this machine can or cannot run bottles, one check a line,
//! each with what to do about it.

use std::path::Path;

use serde::Serialize;

use crate::engine::Engine;
use crate::images::BASE;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Bottles run, with something missing (gVisor, a disk quota, an image built on
    /// first use).
    Warning,
    /// Bottles cannot run until this is fixed.
    Error,
}

/// One check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`engine`, `compose`, ...).
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn not_ok(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What the host side of the checks found (the CLI reads these: they are files and
/// processes, not the engine's business).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFindings {
    /// The state root, and whether it can be written.
    pub state_root_writable: Result<(), String>,
    /// Free bytes where the state root lives, if known.
    pub state_root_free: Option<u64>,
}

/// Below this much free space in the state root, `doctor` warns (audit logs, the
/// debootstrap cache and build contexts live there or beside it).
pub const LOW_DISK: u64 = 1 << 30;

/// Runs every check: the engine (when `engine` is an error, the reason it could not
/// be reached), compose, runtimes, cgroups, storage, images, the state root.
pub fn check(
    engine: std::result::Result<&dyn Engine, String>,
    own_sidecar: &str,
    state_root: &Path,
    host: &HostFindings,
) -> Vec<Check> {
    let mut checks = Vec::new();
    match engine {
        Err(why) => checks.push(Check::not_ok(
            "engine",
            Status::Error,
            why,
            "install Docker Engine 20.10 or newer and start it (`systemctl start docker`), \
             and make sure this user may use it (the `docker` group)",
        )),
        Ok(engine) => engine_checks(engine, own_sidecar, &mut checks),
    }
    let root = state_root.display();
    checks.push(match &host.state_root_writable {
        Ok(()) => Check::ok("state", format!("{root} is writable")),
        Err(why) => Check::not_ok(
            "state",
            Status::Error,
            format!("{root}: {why}"),
            "point BOT_BOTTLE_STATE_DIR at a directory this user can write",
        ),
    });
    if let Some(free) = host.state_root_free {
        let gib = free as f64 / f64::from(1u32 << 30);
        checks.push(if free < LOW_DISK {
            Check::not_ok(
                "disk",
                Status::Warning,
                format!("{gib:.1} GiB free for {root}"),
                "free some space: audit logs and image builds need room",
            )
        } else {
            Check::ok("disk", format!("{gib:.1} GiB free for {root}"))
        });
    }
    checks
}

fn engine_checks(engine: &dyn Engine, own_sidecar: &str, checks: &mut Vec<Check>) {
    let version = match engine.engine_version() {
        Ok(version) => version,
        Err(error) => {
            checks.push(Check::not_ok(
                "engine",
                Status::Error,
                error.to_string(),
                "start the Docker engine and make sure this user may use it",
            ));
            return;
        }
    };
    checks.push(Check::ok("engine", format!("Docker {version}")));
    let facts = match engine.describe() {
        Ok(facts) => facts,
        Err(error) => {
            checks.push(Check::not_ok(
                "engine",
                Status::Error,
                format!("`docker info` failed: {error}"),
                "check the engine's own log",
            ));
            return;
        }
    };
    checks.push(match &facts.compose {
        Some(compose) => Check::ok("compose", compose.clone()),
        None => Check::not_ok(
            "compose",
            Status::Error,
            "neither `docker compose` nor `docker-compose` works (or not the one \
             BOT_BOTTLE_COMPOSE asks for)"
                .to_owned(),
            "install the compose plugin (Debian: docker-compose) or docker-compose",
        ),
    });
    checks.push(if facts.runtimes.iter().any(|r| r == "runsc") {
        Check::ok(
            "gvisor",
            "runsc is a runtime: `runtime: runsc` bottles can run",
        )
    } else {
        Check::not_ok(
            "gvisor",
            Status::Warning,
            format!("runtimes: {}", facts.runtimes.join(", ")),
            "install gVisor and register `runsc` with Docker to run `runtime: runsc` bottles \
             (others run with runc)",
        )
    });
    checks.push(match facts.cgroup_version.as_str() {
        "2" => Check::ok("cgroups", "cgroup v2: memory, cpu and pids limits apply"),
        other => Check::not_ok(
            "cgroups",
            Status::Warning,
            format!("cgroup version {other}"),
            "cgroup v2 (systemd.unified_cgroup_hierarchy=1) enforces limits most reliably",
        ),
    });
    checks.push(match engine.writable_layer_quota() {
        Ok(true) => Check::ok(
            "disk-quota",
            format!(
                "{}: limits.disk caps the writable layer",
                facts.storage_driver
            ),
        ),
        _ => Check::not_ok(
            "disk-quota",
            Status::Warning,
            format!(
                "{}: the writable layer cannot be capped",
                facts.storage_driver
            ),
            "limits.disk then caps /tmp only; overlay2 on xfs with project quotas caps all",
        ),
    });
    for (name, image, when_missing) in [
        (
            "base-image",
            BASE,
            "built on the first `bottle start` (or now: `bottle images build`)",
        ),
        (
            "sidecar-image",
            own_sidecar,
            "built from this bottle on its first `bottle start` (or now: `bottle images build`)",
        ),
    ] {
        checks.push(match engine.image_exists(image) {
            Ok(true) => Check::ok(name, format!("{image} present")),
            Ok(false) => Check::not_ok(
                name,
                Status::Warning,
                format!("{image} missing"),
                when_missing,
            ),
            Err(error) => Check::not_ok(
                name,
                Status::Error,
                error.to_string(),
                "check that the engine answers",
            ),
        });
    }
}

/// Whether bottles can run: no check is an error.
pub fn can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeEngine;

    fn host() -> HostFindings {
        HostFindings {
            state_root_writable: Ok(()),
            state_root_free: Some(10 << 30),
        }
    }

    fn status_of(checks: &[Check], name: &str) -> Status {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
            .status
    }

    #[test]
    fn a_machine_with_everything_but_gvisor_can_run_bottles() {
        let fake = FakeEngine::new(&[BASE, "sidecar:own"]);
        let checks = check(Ok(&fake), "sidecar:own", Path::new("/s"), &host());
        assert!(can_run(&checks), "{checks:?}");
        assert_eq!(status_of(&checks, "engine"), Status::Ok);
        assert_eq!(status_of(&checks, "sidecar-image"), Status::Ok);
        assert_eq!(status_of(&checks, "gvisor"), Status::Warning);
        assert_eq!(status_of(&checks, "disk-quota"), Status::Warning);
    }

    #[test]
    fn no_engine_is_an_error_with_a_fix() {
        let checks = check(
            Err("no Docker engine: docker not found".into()),
            "sidecar:own",
            Path::new("/s"),
            &host(),
        );
        assert!(!can_run(&checks));
        assert!(
            checks[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("Docker Engine 20.10")
        );
    }

    #[test]
    fn an_engine_that_stops_answering_is_an_error() {
        let fake = FakeEngine::new(&[]).fail_at(Some("engine".into()));
        let checks = check(Ok(&fake), "sidecar:own", Path::new("/s"), &host());
        assert_eq!(status_of(&checks, "engine"), Status::Error);
        assert!(!can_run(&checks));
    }

    #[test]
    fn missing_images_are_warnings_built_on_first_use() {
        let fake = FakeEngine::new(&[]);
        let checks = check(Ok(&fake), "sidecar:own", Path::new("/s"), &host());
        assert!(can_run(&checks));
        assert_eq!(status_of(&checks, "base-image"), Status::Warning);
        assert_eq!(status_of(&checks, "sidecar-image"), Status::Warning);
    }

    #[test]
    fn an_unwritable_state_root_is_an_error_and_low_disk_a_warning() {
        let fake = FakeEngine::new(&[BASE, "sidecar:own"]);
        let checks = check(
            Ok(&fake),
            "sidecar:own",
            Path::new("/s"),
            &HostFindings {
                state_root_writable: Err("permission denied".into()),
                state_root_free: Some(100 << 20),
            },
        );
        assert_eq!(status_of(&checks, "state"), Status::Error);
        assert_eq!(status_of(&checks, "disk"), Status::Warning);
        assert!(!can_run(&checks));
    }
}
