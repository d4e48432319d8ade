//! One record, one bounded line: long strings are cut with a marker, long arrays lose
//! their tail, and what still does not fit is kept as a truncated excerpt.

use serde::Serialize;
use serde_json::Value;

use crate::Limits;

/// Strings are never cut shorter than this while a record is shrunk.
const MIN_FIELD_BYTES: usize = 64;

/// `entry` as one JSON line (without the newline) of at most
/// `limits.max_record_bytes - 1` bytes, and whether anything was cut.
///
/// Every string longer than `limits.max_field_bytes` is cut to that length (on a
/// character boundary) and ends in `…[N bytes truncated]`. If the line is still too
/// long, strings are cut shorter and arrays keep only their first items followed by
/// `…[N more items truncated]`, halving both until it fits; a record that cannot be
/// made to fit that way (thousands of keys) becomes `{"truncated_record": "<the
/// first bytes of the line>…"}`. `None` if `entry` does not serialize.
pub fn bounded_line<T: Serialize + ?Sized>(entry: &T, limits: &Limits) -> Option<(String, bool)> {
    let limits = limits.normalized();
    let max_line = limits.max_record_bytes - 1;
    let line = serde_json::to_string(entry).ok()?;
    // No string in the record can be longer than its serialized line.
    if line.len() <= limits.max_field_bytes.min(max_line) {
        return Some((line, false));
    }
    let original = serde_json::to_value(entry).ok()?;
    let mut field_cap = limits.max_field_bytes;
    let mut items_cap = usize::MAX;
    loop {
        let mut value = original.clone();
        let cut = shrink(&mut value, field_cap, items_cap);
        let candidate = serde_json::to_string(&value).ok()?;
        if candidate.len() <= max_line {
            return Some((candidate, cut));
        }
        if field_cap <= MIN_FIELD_BYTES && items_cap <= 1 {
            break;
        }
        field_cap = (field_cap / 2).max(MIN_FIELD_BYTES);
        items_cap = if items_cap == usize::MAX {
            64
        } else {
            (items_cap / 2).max(1)
        };
    }
    // JSON escaping at most doubles printable text (`"` and `\`); a quarter of the
    // budget leaves room for the key and the marker.
    let head = cut_string(&line, (max_line / 4).max(1));
    let fallback = serde_json::json!({ "truncated_record": head }).to_string();
    Some((fallback, true))
}

/// Cuts every string longer than `field_cap` and every array longer than
/// `items_cap`; true if anything was cut.
fn shrink(value: &mut Value, field_cap: usize, items_cap: usize) -> bool {
    match value {
        Value::String(text) if text.len() > field_cap => {
            *text = cut_string(text, field_cap);
            true
        }
        Value::Array(items) => {
            let mut cut = false;
            if items.len() > items_cap {
                let omitted = items.len() - items_cap;
                items.truncate(items_cap);
                items.push(Value::String(format!("…[{omitted} more items truncated]")));
                cut = true;
            }
            for item in items.iter_mut() {
                cut |= shrink(item, field_cap, items_cap);
            }
            cut
        }
        Value::Object(fields) => {
            let mut cut = false;
            for field in fields.values_mut() {
                cut |= shrink(field, field_cap, items_cap);
            }
            cut
        }
        _ => false,
    }
}

/// The first `max` bytes of `text` (fewer, to end on a character boundary) and the
/// truncation marker.
fn cut_string(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes truncated]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(record: usize, field: usize) -> Limits {
        Limits {
            max_record_bytes: record,
            max_field_bytes: field,
            ..Limits::default()
        }
    }

    #[test]
    fn short_records_pass_unchanged() {
        let entry = json!({"host": "a.test", "path": "/x"});
        let (line, cut) = bounded_line(&entry, &Limits::default()).unwrap();
        assert_eq!(line, entry.to_string());
        assert!(!cut);
    }

    #[test]
    fn a_long_field_is_cut_with_a_marker() {
        let path = format!("/{}", "a".repeat(60_000));
        let entry = json!({"host": "a.test", "path": path, "rule": "default-deny"});
        let (line, cut) = bounded_line(&entry, &limits(16 << 10, 1024)).unwrap();
        assert!(cut);
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["host"], "a.test");
        assert_eq!(value["rule"], "default-deny");
        let kept = value["path"].as_str().unwrap();
        assert!(kept.starts_with("/aaaa"), "{kept}");
        assert!(kept.ends_with("…[58977 bytes truncated]"), "{kept}");
        assert!(kept.len() < 1100);
    }

    #[test]
    fn cuts_respect_character_boundaries() {
        let entry = json!({"text": "é".repeat(5000)});
        let (line, cut) = bounded_line(&entry, &limits(16 << 10, 1001)).unwrap();
        assert!(cut);
        let value: Value = serde_json::from_str(&line).unwrap();
        let kept = value["text"].as_str().unwrap();
        assert!(kept.starts_with(&"é".repeat(500)), "{kept}");
        assert!(kept.ends_with("…[9000 bytes truncated]"), "{kept}");
    }

    #[test]
    fn many_fields_and_long_arrays_shrink_until_the_record_fits() {
        let refs: Vec<Value> = (0..5000)
            .map(|i| json!({"ref": format!("refs/heads/agent/{i}"), "result": "pushed"}))
            .collect();
        let entry = json!({
            "time": "t",
            "a": "x".repeat(3000), "b": "y".repeat(3000), "c": "z".repeat(3000),
            "refs": refs,
        });
        let limits = limits(4096, 2048);
        let (line, cut) = bounded_line(&entry, &limits).unwrap();
        assert!(cut);
        assert!(line.len() < 4096, "{}", line.len());
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "t");
        let refs = value["refs"].as_array().unwrap();
        assert_eq!(refs[0]["ref"], "refs/heads/agent/0");
        let marker = refs.last().unwrap().as_str().unwrap();
        assert!(
            marker.starts_with('…') && marker.ends_with("more items truncated]"),
            "{marker}"
        );
    }

    #[test]
    fn a_record_that_cannot_shrink_is_kept_as_an_excerpt() {
        let entry: serde_json::Map<String, Value> = (0..2000)
            .map(|i| (format!("key-{i}"), Value::from(i)))
            .collect();
        let limits = limits(1024, 128);
        let (line, cut) = bounded_line(&entry, &limits).unwrap();
        assert!(cut);
        assert!(line.len() < 1024, "{}", line.len());
        let value: Value = serde_json::from_str(&line).unwrap();
        assert!(
            value["truncated_record"]
                .as_str()
                .unwrap()
                .starts_with("{\"key-0\":0")
        );
    }

    #[test]
    fn escaping_counts_against_the_budget() {
        // Quotes double when escaped: the line, not the raw string, is what is bounded.
        let entry = json!({"q": "\"".repeat(10_000), "r": "\\".repeat(10_000)});
        let limits = limits(2048, 4096);
        let (line, _) = bounded_line(&entry, &limits).unwrap();
        assert!(line.len() < 2048, "{}", line.len());
        serde_json::from_str::<Value>(&line).unwrap();
    }
}
