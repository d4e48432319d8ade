//! Values that remember where they were written, so every diagnostic can point at the line.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A byte range in the manifest source: what a diagnostic underlines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceSpan {
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes (may be 0 for a position, e.g. the start of a mapping).
    pub len: usize,
}

impl SourceSpan {
    /// A span from a byte offset and length.
    pub const fn new(offset: usize, len: usize) -> Self {
        Self { offset, len }
    }

    /// Moves the span onto character boundaries inside `source`, so renderers that
    /// slice the source with it cannot panic.
    pub fn fit(self, source: &str) -> Self {
        let floor = |mut i: usize| {
            i = i.min(source.len());
            while !source.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let start = floor(self.offset);
        let mut end = floor(self.offset.saturating_add(self.len)).max(start);
        if end == start && self.len > 0 {
            end = source[start..]
                .chars()
                .next()
                .map_or(start, |c| start + c.len_utf8());
        }
        Self::new(start, end - start)
    }

    /// The span of a parser location in `source`: byte offsets when the parser has
    /// them, else converted from its character offsets.
    pub(crate) fn from_error_location(location: serde_saphyr::Location, source: &str) -> Self {
        let span = location.span();
        if let (Some(offset), Some(len)) = (span.byte_offset(), span.byte_len()) {
            return Self::new(offset as usize, len as usize).fit(source);
        }
        let char_to_byte = |chars: u64| {
            source
                .char_indices()
                .nth(chars as usize)
                .map_or(source.len(), |(i, _)| i)
        };
        let start = char_to_byte(span.offset());
        let end = char_to_byte(span.offset().saturating_add(span.len()));
        Self::new(start, end.saturating_sub(start)).fit(source)
    }

    pub(crate) fn from_location(location: serde_saphyr::Location) -> Self {
        let span = location.span();
        match (span.byte_offset(), span.byte_len()) {
            (Some(offset), Some(len)) => Self::new(offset as usize, len as usize),
            // Only readers lack byte info; we always parse from a string.
            _ => Self::new(span.offset() as usize, span.len() as usize),
        }
    }
}

/// A manifest value with its source span.
///
/// Equality, ordering and hashing look at the value only, so spanned strings work as
/// map keys. The JSON Schema is the inner value's: spans are invisible to users.
#[derive(Clone, Debug)]
pub struct Spanned<T> {
    /// The value as written.
    pub value: T,
    /// Where it was written.
    pub span: SourceSpan,
}

impl<T> Spanned<T> {
    /// Wraps a value with a span (tests and defaults).
    pub const fn new(value: T, span: SourceSpan) -> Self {
        Self { value, span }
    }

    /// The same span around a derived value.
    pub fn map<U>(&self, f: impl FnOnce(&T) -> U) -> Spanned<U> {
        Spanned::new(f(&self.value), self.span)
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Self {
            value: spanned.value,
            span: SourceSpan::from_location(spanned.referenced),
        })
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for Spanned<T> {}
impl<T: PartialOrd> PartialOrd for Spanned<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.value.partial_cmp(&other.value)
    }
}
impl<T: Ord> Ord for Spanned<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}
impl<T: Hash> Hash for Spanned<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}
impl<T> std::borrow::Borrow<T> for Spanned<T> {
    fn borrow(&self) -> &T {
        &self.value
    }
}
