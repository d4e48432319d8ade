//! Placeholder until its own issue lands; see ARCHITECTURE.md.
