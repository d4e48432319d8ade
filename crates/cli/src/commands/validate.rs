//! `bottle validate`: every problem of the manifest, with lines and hints.

use std::path::Path;

use crate::{CliError, loaded, output};

pub fn run(path: &Path) -> Result<(), CliError> {
    let loaded = loaded::load(path, false)?;
    output::print(&format!(
        "{}: valid ({} bottle(s), {} agent(s))\n",
        path.display(),
        loaded.manifest.bottles.len(),
        loaded.manifest.agents.len()
    ));
    Ok(())
}
