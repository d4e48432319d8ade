//! `bottle schema`: the manifest's JSON Schema.

use crate::{CliError, output};

pub fn run() -> Result<(), CliError> {
    output::print(&plan::schema::manifest_schema_json());
    Ok(())
}
