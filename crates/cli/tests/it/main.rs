//! Integration tests: the real `bottle` binary against the fixtures.

mod diagnostics;
mod docker;
mod fixtures;
mod images;
mod lifecycle;
mod plan_cmd;
mod render;
mod schema;
