//! What every backend does to text that leaves a bottle for the user (log dumps,
//! `bottle logs`, a failed command's output): each secret value becomes a marker.

/// Replaces every occurrence of each secret in `text` with [`plan::REDACTED`],
/// longest first, so a secret that contains another is hidden whole. Empty values
/// are ignored.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut ordered: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in ordered {
        out = out.replace(secret.as_str(), plan::REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_is_replaced() {
        let secrets = vec!["s3cret".to_owned(), "tok".to_owned()];
        assert_eq!(
            redact("a=s3cret b=s3cret tok", &secrets),
            "a=<redacted> b=<redacted> <redacted>"
        );
    }

    #[test]
    fn a_secret_containing_another_is_hidden_whole_and_empty_ones_are_ignored() {
        let secrets = vec![String::new(), "abc".to_owned(), "xxabcxx".to_owned()];
        assert_eq!(redact("k=xxabcxx", &secrets), "k=<redacted>");
    }
}
