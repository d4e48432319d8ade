//! A string that never prints itself.

use std::fmt;

use serde::{Serialize, Serializer};

/// What `Debug`, `Display` and `Serialize` show instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// A secret value (token, password, env-file entry).
///
/// It exists so that no code path (a `{:?}`, a `--json` dump, an error message) can put
/// a real credential on screen or on disk by accident: every formatting and
/// serialization route prints [`REDACTED`]. Reading the value takes an explicit
/// [`Secret::expose`], which the backend calls only where it hands the value to a child
/// process environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value. Call sites are the audit surface: keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_formatting_route_redacts() {
        let secret = Secret::new("sentinel-value-123");
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secret:#?}"),
            serde_json::to_string(&secret).unwrap(),
            serde_json::to_string(&vec![secret.clone()]).unwrap(),
        ] {
            assert!(!shown.contains("sentinel"), "leaked in {shown}");
            assert!(shown.contains(REDACTED));
        }
        assert_eq!(secret.expose(), "sentinel-value-123");
    }
}
