//! The one owner of the engine names a bottle's pieces get: compose project and
//! networks. Everything that makes such a name, or reads a slug back out of one,
//! calls here.

/// What every engine name of a bottle starts with.
const PREFIX: &str = "bot-bottle-";

/// The compose project (`-p`) of a bottle.
pub fn compose_project(slug: &str) -> String {
    format!("{PREFIX}{slug}")
}

/// A bottle's network for `role` (`internal`, `egress`).
pub fn network(slug: &str, role: &str) -> String {
    format!("{PREFIX}{slug}-{role}")
}

/// The slug in a name [`network`] made; None for a name it did not make.
pub fn slug_of_network(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let (slug, role) = rest.rsplit_once('-')?;
    (!slug.is_empty() && !role.is_empty()).then_some(slug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_name_gives_its_slug_back() {
        for role in ["internal", "egress"] {
            let name = network("dev-abc123", role);
            assert_eq!(slug_of_network(&name), Some("dev-abc123"));
        }
        assert_eq!(compose_project("dev-abc123"), "bot-bottle-dev-abc123");
        assert_eq!(slug_of_network("bridge"), None);
        assert_eq!(slug_of_network("bot-bottle-"), None);
    }
}
