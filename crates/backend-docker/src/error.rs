//! Engine failures: the seam's typed [`backend_api::Error`], under the name this
//! crate has always used for it.

pub use backend_api::Error as BackendError;
pub use backend_api::Result;
