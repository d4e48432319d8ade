//! The page, embedded in the binary: one HTML shell with no data in it, a script and
//! a style sheet. No build step, no third-party code.

/// The page's script: builds the DOM from the JSON and the event stream, text only.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// The page's style.
pub const STYLE_CSS: &str = include_str!("../assets/style.css");
/// The HTML shell; `{{CSRF}}` is replaced by the CSRF token.
const INDEX_HTML: &str = include_str!("../assets/index.html");

/// The HTML shell with the CSRF token in its `<meta name="csrf-token">`.
pub fn index(csrf: &str) -> String {
    INDEX_HTML.replace("{{CSRF}}", &escape_html(csrf))
}

/// `text` safe inside HTML text and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            escape_html(r#""><img src=x onerror='alert(1)'>&"#),
            "&quot;&gt;&lt;img src=x onerror=&#39;alert(1)&#39;&gt;&amp;"
        );
        assert_eq!(escape_html("plain-hex-0123"), "plain-hex-0123");
    }

    #[test]
    fn the_shell_carries_the_token_once_and_no_inline_script() {
        let page = index("abc123");
        assert_eq!(page.matches("abc123").count(), 1);
        assert!(page.contains(r#"<meta name="csrf-token" content="abc123">"#));
        assert!(!page.contains("{{CSRF}}"));
        assert!(page.contains(r#"<script src="/app.js" defer></script>"#));
        // Only the external script tag: no inline code, no inline handlers.
        assert_eq!(page.matches("<script").count(), 1);
        let lower = page.to_ascii_lowercase();
        for (at, _) in lower.match_indices(" on") {
            let name: String = lower[at + 3..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            let next = lower[at + 3 + name.len()..].trim_start().chars().next();
            assert_ne!(next, Some('='), "inline handler on{name} in the shell");
        }
    }

    #[test]
    fn the_script_never_writes_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
        assert!(APP_JS.contains("textContent"));
    }
}
