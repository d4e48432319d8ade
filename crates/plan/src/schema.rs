//! The manifest's JSON Schema, for editors and for `bottle schema`.

use crate::manifest::Manifest;

/// The JSON Schema of `bottle.yaml` (draft 2020-12), pretty-printed with a newline.
pub fn manifest_schema_json() -> String {
    let schema = schemars::schema_for!(Manifest);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}
