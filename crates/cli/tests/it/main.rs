//! Integration tests: the real `bottle` binary against the fixtures.

mod fixtures;
mod plan_cmd;
mod render;
mod schema;
