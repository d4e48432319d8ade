//! Parsing of env files (`NAME=value` lines), from contents the caller read.

/// Parses dotenv text. Blank lines and `#` comments are skipped, an `export ` prefix is
/// accepted, and values may be wrapped in single or double quotes. On error, returns
/// the 1-based line number only: the line may hold a secret.
pub fn parse_env_file(contents: &str) -> Result<Vec<(String, String)>, usize> {
    let mut vars = Vec::new();
    for (index, line) in contents.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (name, value) = line.split_once('=').ok_or(index + 1)?;
        let name = name.trim();
        crate::rules::check_env_name(name).map_err(|_| index + 1)?;
        let value = value.trim();
        let value = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| {
                value
                    .strip_prefix(*open)
                    .and_then(|v| v.strip_suffix(*close))
            })
            .unwrap_or(value);
        vars.push((name.to_owned(), value.to_owned()));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let text = "# c\n\nA=1\nexport B = \"two words\"\nC='x=y'\nD=\n";
        assert_eq!(
            parse_env_file(text).unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into()),
                ("D".into(), String::new()),
            ]
        );
    }

    #[test]
    fn reports_line_number_only() {
        assert_eq!(parse_env_file("A=1\nsecret-without-equals\n"), Err(2));
        assert_eq!(parse_env_file("1X=2"), Err(1));
    }
}
