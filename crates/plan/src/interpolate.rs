//! `${HOST_VAR}` interpolation of manifest values against the host environment that
//! the caller passes in.

use std::collections::BTreeMap;

/// Why an interpolation failed.
#[derive(Debug, PartialEq, Eq)]
pub enum InterpolationError {
    /// `${NAME}` where `NAME` is not set on the host (and there is no default).
    Missing(String),
    /// Malformed syntax.
    Syntax(String),
}

/// Expands `${NAME}` and `${NAME:-default}`; `$$` is a literal `$`. A `$` followed by
/// anything else is kept as is, so shell snippets in values survive.
///
/// Every missing name is reported, in order of appearance.
pub fn interpolate(
    raw: &str,
    host_env: &BTreeMap<String, String>,
) -> Result<String, Vec<InterpolationError>> {
    let mut out = String::with_capacity(raw.len());
    let mut errors = Vec::new();
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                errors.push(InterpolationError::Syntax(
                    "`${` without a closing `}`".into(),
                ));
                return Err(errors);
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if crate::rules::check_env_name(name).is_err() {
                errors.push(InterpolationError::Syntax(format!(
                    "`${{{inner}}}` does not name a variable"
                )));
            } else {
                match (host_env.get(name), default) {
                    (Some(value), _) => out.push_str(value),
                    (None, Some(default)) => out.push_str(default),
                    (None, None) => errors.push(InterpolationError::Missing(name.to_owned())),
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [
            ("HOME".into(), "/home/u".into()),
            ("EMPTY".into(), String::new()),
        ]
        .into()
    }

    #[test]
    fn expands() {
        let e = env();
        assert_eq!(interpolate("${HOME}/x", &e).unwrap(), "/home/u/x");
        assert_eq!(interpolate("a$$b", &e).unwrap(), "a$b");
        assert_eq!(interpolate("$HOME", &e).unwrap(), "$HOME");
        assert_eq!(interpolate("${NOPE:-dflt}", &e).unwrap(), "dflt");
        assert_eq!(interpolate("${EMPTY:-dflt}", &e).unwrap(), "");
        assert_eq!(interpolate("plain", &e).unwrap(), "plain");
    }

    #[test]
    fn reports_every_missing_name() {
        let e = env();
        assert_eq!(
            interpolate("${A}-${B}", &e).unwrap_err(),
            vec![
                InterpolationError::Missing("A".into()),
                InterpolationError::Missing("B".into())
            ]
        );
        assert!(matches!(
            interpolate("${A", &e).unwrap_err()[0],
            InterpolationError::Syntax(_)
        ));
        assert!(matches!(
            interpolate("${1A}", &e).unwrap_err()[0],
            InterpolationError::Syntax(_)
        ));
    }
}
