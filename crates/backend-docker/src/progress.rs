//! Progress of long steps: the seam's [`backend_api::Progress`].

pub use backend_api::{Progress, RecordedProgress};
