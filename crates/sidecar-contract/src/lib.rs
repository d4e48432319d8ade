//! The contract between the launcher and the sidecars: what a backend writes for a
//! bottle (each sidecar's config, the supervise policy view) and what it reads back
//! (the supervise queue). Plain serde types and the file protocol, no runtime: a
//! backend depends on this crate, never on the sidecars' tokio, hyper and rustls.
//! The sidecars read the same types they are written with.

pub mod egress;
pub mod git_gate;
pub mod layout;
pub mod supervise;
