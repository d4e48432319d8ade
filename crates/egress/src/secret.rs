//! A wrapper for credential values so they cannot leak through `Debug`,
//! `Display` or a stray log line.

use std::fmt;

/// A real credential value (from the sidecar's environment). Formatting it
/// prints `[redacted]`; the only way to the bytes is [`SecretValue::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call sites are the places a secret can leave.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([redacted])")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = SecretValue::new("hunter2-very-secret");
        assert!(!format!("{secret}").contains("hunter2"));
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{:?}", vec![secret.clone()]).contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }
}
