//! Integration tests of the egress proxy, on loopback only: a local HTTPS
//! echo upstream with its own CA, the proxy with a test bottle CA, and real
//! clients (curl and a raw Rust client).

mod support;

mod audit_bounds;
mod dlp_corpus;
mod dlp_modes;
mod dns;
mod forwarding;
mod guarded_env;
mod paths;
mod placeholders;
mod protections;
mod reload;
mod scrubbing;
mod upstream_proxy;
