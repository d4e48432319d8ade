//! `bottle dashboard [--port N] [--open]`: the local web page over the same backend
//! the other commands use (see the `dashboard` crate).

use std::sync::Arc;

use crate::{CliError, engine, output};

/// Serves the dashboard until Ctrl-C.
pub fn run(port: Option<u16>, open: bool) -> Result<(), CliError> {
    // Fail here, with the CLI's words, if the backend cannot be opened at all.
    drop(engine::backend()?);
    let factory: dashboard::BackendFactory =
        Arc::new(|| engine::backend().map_err(|e| e.to_string()));
    let options = dashboard::Options {
        port: port.unwrap_or(dashboard::DEFAULT_PORT),
        ..dashboard::Options::default()
    };
    let result = dashboard::run(options, factory, |url| {
        output::print(&format!(
            "bottle dashboard: {url}\n(open it in a browser on this machine; Ctrl-C stops it)\n"
        ));
        if open {
            open_browser(url);
        }
    });
    match result {
        Ok(()) => Ok(()),
        Err(e @ dashboard::Error::Bind { .. }) => Err(CliError::User(format!(
            "{e}; choose another port with --port N (0 picks a free one)"
        ))),
        Err(dashboard::Error::Backend(why)) => Err(CliError::User(why)),
        Err(e) => Err(CliError::Internal(e.to_string())),
    }
}

/// Opens `url` with `xdg-open` when there is one; says so when there is not.
fn open_browser(url: &str) {
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if opened.is_err() {
        output::error("--open: no xdg-open here: open the URL above yourself");
    }
}
