//! Bottles on Kubernetes. `render` turns a plan into the bottle's objects (pure,
//! typed with k8s-openapi); `cluster` creates, checks, changes and removes them
//! through the API server with kube-rs; `bottles` is the seam's `Backend` on top.
//! The layout and its threat model are in `docs/kubernetes.md`.

pub mod bottles;
pub mod cluster;
pub mod names;
pub mod render;

pub use bottles::K8sBottles;
pub use render::{ClusterFacts, Manifests, Materials, Reveal, render};
