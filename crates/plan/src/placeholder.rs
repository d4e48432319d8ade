//! Placeholders: what the agent holds instead of a real credential.

/// Marker every generated placeholder contains, so humans and tests can spot one.
pub const PLACEHOLDER_MARKER: &str = "bottle-placeholder";

/// Public vendor prefixes of well-known token formats. A placeholder keeps one of these
/// (clients that check a key's shape then start) and nothing else of the real value.
const VENDOR_PREFIXES: &[&str] = &[
    "sk-ant-api03-",
    "sk-ant-oat01-",
    "sk-ant-",
    "sk-proj-",
    "sk-",
    "github_pat_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "npm_",
    "pypi-",
    "sk_live_",
    "rk_live_",
    "sk_test_",
    "AKIA",
    "AIza",
];

/// A placeholder shaped like `token`: its well-known vendor prefix, if it has one,
/// then a marker padded with `x` to the token's length. Only that public prefix and
/// the length of the real value carry over.
pub fn placeholder_for(token: &str) -> String {
    let prefix = VENDOR_PREFIXES
        .iter()
        .filter(|p| token.starts_with(**p))
        .max_by_key(|p| p.len())
        .copied()
        .unwrap_or("");
    let mut placeholder = format!("{prefix}{PLACEHOLDER_MARKER}");
    while placeholder.len() < token.len() {
        placeholder.push('x');
    }
    placeholder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_a_known_vendor_prefix_and_the_length() {
        let token = "sk-ant-api03-SECRETSECRETSECRETSECRET";
        let p = placeholder_for(token);
        assert!(p.starts_with("sk-ant-api03-bottle-placeholder"));
        assert_eq!(p.len(), token.len());
        assert_eq!(placeholder_for("abc"), PLACEHOLDER_MARKER);
        assert!(placeholder_for("ghp_AAAABBBBCCCCDDDD").starts_with("ghp_bottle"));
    }

    #[test]
    fn random_tokens_give_nothing_away() {
        // Tokens with separators early on must not lend their first characters.
        for token in [
            "Xy7_Qa9-Lm3nB4vC5xZ6",
            "a1b2c3d4e5f6g7-h8i9j0k",
            "xoxc-1234567890-abcdefgh",
        ] {
            let placeholder = placeholder_for(token);
            let body = &token[..6];
            assert!(
                !placeholder.contains(body),
                "{placeholder} carries {body} of {token}"
            );
            assert!(placeholder.starts_with(PLACEHOLDER_MARKER), "{placeholder}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_four_characters_of_a_secret_body_leak(body in "[A-Za-z0-9_-]{20,60}") {
            for prefix in ["", "sk-ant-api03-", "ghp_", "xyz-"] {
                let token = format!("{prefix}{body}");
                let placeholder = placeholder_for(&token);
                let kept = VENDOR_PREFIXES.iter().filter(|p| token.starts_with(**p)).map(|p| p.len()).max().unwrap_or(0);
                let secret = &token[kept..];
                // What every placeholder is made of anyway: prefix, marker, padding.
                let filler = format!("{}{PLACEHOLDER_MARKER}{}", &token[..kept], "x".repeat(64));
                for window in secret.as_bytes().windows(4) {
                    let window = std::str::from_utf8(window).unwrap();
                    if filler.contains(window) {
                        continue;
                    }
                    proptest::prop_assert!(!placeholder.contains(window), "{} leaks {} of {}", placeholder, window, token);
                }
            }
        }
    }
}
