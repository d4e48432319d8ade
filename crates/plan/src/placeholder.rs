//! Placeholders: what the agent holds instead of a real credential.

/// Marker every generated placeholder contains, so humans and tests can spot one.
pub const PLACEHOLDER_MARKER: &str = "bottle-placeholder";

/// A placeholder shaped like `token`: the same non-secret vendor prefix (such as
/// `sk-ant-api03-`) so clients that check the shape start, then a marker padded to the
/// token's length. Only the prefix and the length of the real value carry over.
pub fn placeholder_for(token: &str) -> String {
    let head: String = token.chars().take(16).collect();
    let prefix_len = head
        .rfind(['-', '_'])
        .filter(|_| {
            head.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map_or(0, |i| i + 1);
    // Never carry over more than a short vendor prefix.
    let prefix = &token[..prefix_len.min(14)];
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
    fn keeps_vendor_prefix_and_length_only() {
        let token = "sk-ant-api03-SECRETSECRETSECRETSECRET";
        let p = placeholder_for(token);
        assert!(p.starts_with("sk-ant-api03-bottle-placeholder"));
        assert_eq!(p.len(), token.len());
        assert!(!p.contains("SECRET"));
        assert_eq!(placeholder_for("abc"), PLACEHOLDER_MARKER);
        assert!(!placeholder_for("ghp_AAAABBBBCCCCDDDD").contains("AAAA"));
    }
}
