//! `bottle sidecar ...`: the sidecar entry points.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::CliError;
use crate::args::SidecarCommand;

pub fn run(command: SidecarCommand) -> Result<(), CliError> {
    match command {
        SidecarCommand::GitGate { config } => {
            git_gate::run(&config).map_err(|error| CliError::User(format!("git-gate: {error}")))
        }
        SidecarCommand::Egress { config } => {
            egress::run(&config).map_err(|error| CliError::User(format!("egress: {error}")))
        }
        SidecarCommand::Supervise { config } => {
            supervise::run(&config).map_err(|error| CliError::User(format!("supervise: {error}")))
        }
        SidecarCommand::Probe { url, print } => probe(&url, print),
    }
}

/// A tiny HTTP/1.1 GET for compose healthchecks: sidecar images carry no curl.
fn probe(url: &str, print: bool) -> Result<(), CliError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| CliError::User(format!("probe needs an http:// URL, got `{url}`")))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let timeout = Duration::from_secs(2);
    let address = authority
        .to_socket_addrs()
        .map_err(|e| CliError::User(format!("probe: cannot resolve `{authority}`: {e}")))?
        .next()
        .ok_or_else(|| CliError::User(format!("probe: no address for `{authority}`")))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| CliError::User(format!("probe: cannot connect to {address}: {e}")))?;
    let io = |e: std::io::Error| CliError::User(format!("probe {url}: {e}"));
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    // Bounded: a health or status answer is small.
    let _ = stream.take(1 << 20).read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default().to_owned();
    if status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200") {
        if print {
            let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            crate::output::print(body);
        }
        Ok(())
    } else {
        Err(CliError::User(format!(
            "probe {url}: unhealthy: {}",
            status_line.lines().next().unwrap_or("no answer")
        )))
    }
}
