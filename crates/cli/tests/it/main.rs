//! Integration tests: the real `bottle` binary against the fixtures.

mod diagnostics;
mod docker;
mod fixtures;
mod images;
mod k8s;
mod lifecycle;
mod plan_cmd;
mod render;
mod schema;
mod sidecar_egress;
