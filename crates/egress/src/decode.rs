//! Content codings the proxy can see through, pure: `gzip` (also `x-gzip`,
//! several members) and `deflate` (zlib-wrapped as RFC 9110 says, or raw
//! deflate as some servers send it), decoded as a stream within a
//! [`DecodeBound`], so a compressed body is scanned without ever holding it
//! whole. Anything else (`br`, `zstd`, `compress`, stacked codings) is
//! [`Coding::Unsupported`]: the callers refuse what they cannot scan
//! (request bodies when DLP is on, responses from a credential route's host).
//!
//! Each [`StreamDecoder::step`] consumes some input and returns at most a few
//! times [`STEP_OUTPUT`] decoded bytes, so memory stays bounded even for a
//! decompression bomb; the bound ends the stream with an error once the
//! decoded size or the expansion ratio is exceeded.

use std::io::Write;

use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use hyper::header::{self, HeaderMap};

/// flate2's output buffer: one [`StreamDecoder::step`] returns about this
/// much, at most twice it (the buffer and the decoder's pending window).
pub const STEP_OUTPUT: usize = 32 * 1024;

/// The content coding of a body, from its `Content-Encoding` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coding {
    /// No coding (absent, empty or `identity`).
    Identity,
    /// `gzip` or `x-gzip`.
    Gzip,
    /// `deflate`.
    Deflate,
    /// Anything else, or more than one coding: the value as sent.
    Unsupported(String),
}

impl Coding {
    /// Reads every `Content-Encoding` header of `headers`.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut codings = Vec::new();
        for value in headers.get_all(header::CONTENT_ENCODING) {
            let Ok(text) = value.to_str() else {
                return Self::Unsupported(String::from_utf8_lossy(value.as_bytes()).into_owned());
            };
            codings.extend(
                text.split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty() && c != "identity"),
            );
        }
        match codings.as_slice() {
            [] => Self::Identity,
            [one] if one == "gzip" || one == "x-gzip" => Self::Gzip,
            [one] if one == "deflate" => Self::Deflate,
            _ => Self::Unsupported(codings.join(", ")),
        }
    }

    /// Whether a body in this coding is passed as is (nothing to decode).
    pub fn is_identity(&self) -> bool {
        *self == Self::Identity
    }
}

/// How far a compressed body is decoded before the proxy gives up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeBound {
    /// Decoded bytes, in all.
    pub max_decoded: u64,
    /// Decoded bytes per compressed byte, checked once `ratio_after`
    /// decoded bytes have come out.
    pub max_ratio: u64,
    /// Decoded bytes before the ratio is checked.
    pub ratio_after: u64,
}

impl DecodeBound {
    /// Compressed responses from a credential route's host: 256 MiB decoded,
    /// and no more than 200 times the compressed size past 8 MiB.
    pub const RESPONSE: Self = Self {
        max_decoded: 256 << 20,
        max_ratio: 200,
        ratio_after: 8 << 20,
    };

    /// Compressed request bodies under DLP: 64 MiB decoded, and no more than
    /// 200 times the compressed size past 8 MiB.
    pub const REQUEST: Self = Self {
        max_decoded: 64 << 20,
        max_ratio: 200,
        ratio_after: 8 << 20,
    };

    /// The bound in words, for refusals.
    pub fn describe(&self) -> String {
        format!(
            "{} MiB decoded, or {}x the compressed size past {} MiB",
            self.max_decoded >> 20,
            self.max_ratio,
            self.ratio_after >> 20
        )
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data is not valid in its declared coding (or ends early).
    #[error("the {coding} data is corrupt or truncated ({detail})")]
    Corrupt {
        /// `gzip` or `deflate`.
        coding: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// The decoded body outgrew the bound.
    #[error("the decoded body exceeds the scan bound ({bound})")]
    Bound {
        /// The bound in words.
        bound: String,
    },
}

enum Inner {
    Gzip(MultiGzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
    Raw(DeflateDecoder<Vec<u8>>),
    /// `deflate` before its first two bytes told zlib from raw.
    Sniffing(Vec<u8>),
}

/// A push decoder: compressed bytes in, decoded bytes out, step by step.
pub struct StreamDecoder {
    inner: Inner,
    coding: &'static str,
    bound: DecodeBound,
    decoded: u64,
    consumed: u64,
    finished: bool,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("coding", &self.coding)
            .field("decoded", &self.decoded)
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

/// Whether two bytes start a zlib stream (RFC 1950: method 8, window at most
/// 32 KiB, header checksum).
fn is_zlib_header(first: u8, second: u8) -> bool {
    first & 0x0f == 8 && first >> 4 <= 7 && (u16::from(first) << 8 | u16::from(second)) % 31 == 0
}

impl StreamDecoder {
    /// A decoder for `coding`; `None` for identity and unsupported codings.
    pub fn new(coding: &Coding, bound: DecodeBound) -> Option<Self> {
        let (inner, name) = match coding {
            Coding::Gzip => (Inner::Gzip(MultiGzDecoder::new(Vec::new())), "gzip"),
            Coding::Deflate => (Inner::Sniffing(Vec::new()), "deflate"),
            Coding::Identity | Coding::Unsupported(_) => return None,
        };
        Some(Self {
            inner,
            coding: name,
            bound,
            decoded: 0,
            consumed: 0,
            finished: false,
        })
    }

    /// Decoded bytes so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    fn corrupt(&self, error: &std::io::Error) -> DecodeError {
        DecodeError::Corrupt {
            coding: self.coding,
            detail: error.to_string(),
        }
    }

    fn writer(&mut self) -> Option<&mut dyn Write> {
        match &mut self.inner {
            Inner::Gzip(d) => Some(d),
            Inner::Zlib(d) => Some(d),
            Inner::Raw(d) => Some(d),
            Inner::Sniffing(_) => None,
        }
    }

    fn take_output(&mut self) -> Result<Vec<u8>, DecodeError> {
        let output = match &mut self.inner {
            Inner::Gzip(d) => std::mem::take(d.get_mut()),
            Inner::Zlib(d) => std::mem::take(d.get_mut()),
            Inner::Raw(d) => std::mem::take(d.get_mut()),
            Inner::Sniffing(_) => Vec::new(),
        };
        self.decoded += output.len() as u64;
        let bound = self.bound;
        if self.decoded > bound.max_decoded
            || (self.decoded > bound.ratio_after
                && self.decoded > bound.max_ratio.saturating_mul(self.consumed.max(1)))
        {
            return Err(DecodeError::Bound {
                bound: bound.describe(),
            });
        }
        Ok(output)
    }

    /// Picks zlib or raw deflate once two bytes are known (or the body ends).
    fn settle(&mut self, end: bool) -> Result<(), DecodeError> {
        let Inner::Sniffing(prefix) = &mut self.inner else {
            return Ok(());
        };
        if prefix.len() < 2 && !end {
            return Ok(());
        }
        let prefix = std::mem::take(prefix);
        let zlib = prefix.len() >= 2 && is_zlib_header(prefix[0], prefix[1]);
        self.inner = if zlib {
            Inner::Zlib(ZlibDecoder::new(Vec::new()))
        } else {
            Inner::Raw(DeflateDecoder::new(Vec::new()))
        };
        if !prefix.is_empty() {
            let result = self.writer().map(|w| w.write_all(&prefix));
            if let Some(Err(e)) = result {
                return Err(self.corrupt(&e));
            }
        }
        Ok(())
    }

    /// Feeds some of `input`: returns how many bytes were consumed and the
    /// bytes decoded so far (about [`STEP_OUTPUT`] at most). Call again with
    /// the rest until all is consumed.
    pub fn step(&mut self, input: &[u8]) -> Result<(usize, Vec<u8>), DecodeError> {
        if input.is_empty() {
            return Ok((0, Vec::new()));
        }
        if let Inner::Sniffing(prefix) = &mut self.inner {
            let take = input.len().min(2 - prefix.len().min(2));
            prefix.extend_from_slice(&input[..take]);
            self.consumed += take as u64;
            self.settle(false)?;
            let output = self.take_output()?;
            return Ok((take, output));
        }
        let Some(writer) = self.writer() else {
            return Ok((0, Vec::new()));
        };
        let result = writer.write(input).and_then(|n| writer.flush().map(|()| n));
        let consumed = match result {
            Ok(n) => n,
            Err(e) => return Err(self.corrupt(&e)),
        };
        self.consumed += consumed as u64;
        let output = self.take_output()?;
        if consumed == 0 && output.is_empty() {
            // The compressed stream ended and more data follows it.
            return Err(DecodeError::Corrupt {
                coding: self.coding,
                detail: "data after the end of the compressed stream".to_owned(),
            });
        }
        Ok((consumed, output))
    }

    /// Feeds all of `input`, handing each decoded piece to `sink` (which may
    /// stop the decoding with its own error).
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        mut sink: impl FnMut(Vec<u8>) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        while !input.is_empty() {
            let (consumed, output) = self.step(input).map_err(FeedError::Decode)?;
            input = &input[consumed..];
            if !output.is_empty() {
                sink(output).map_err(FeedError::Sink)?;
            }
        }
        Ok(())
    }

    /// The body ended: checks the stream is complete and returns what was
    /// still pending. A body with no bytes at all is complete (and empty).
    pub fn finish(&mut self) -> Result<Vec<u8>, DecodeError> {
        if self.finished {
            return Ok(Vec::new());
        }
        self.finished = true;
        if self.consumed == 0 {
            return Ok(Vec::new());
        }
        self.settle(true)?;
        let result = match &mut self.inner {
            Inner::Gzip(d) => d.try_finish(),
            Inner::Zlib(d) => d.try_finish(),
            Inner::Raw(d) => d.try_finish(),
            Inner::Sniffing(_) => Ok(()),
        };
        if let Err(e) = result {
            return Err(self.corrupt(&e));
        }
        self.take_output()
    }
}

/// A [`StreamDecoder::feed`] failure: the decoder's, or the sink's.
#[derive(Debug)]
pub enum FeedError<E> {
    /// The data could not be decoded within the bound.
    Decode(DecodeError),
    /// The sink stopped it.
    Sink(E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use hyper::header::HeaderValue;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode_in_chunks(
        coding: &Coding,
        data: &[u8],
        chunk: usize,
        bound: DecodeBound,
    ) -> Result<Vec<u8>, DecodeError> {
        let mut decoder = StreamDecoder::new(coding, bound).unwrap();
        let mut out = Vec::new();
        for piece in data.chunks(chunk) {
            decoder
                .feed(piece, |o| {
                    assert!(o.len() <= 3 * STEP_OUTPUT, "{}", o.len());
                    out.extend(o);
                    Ok::<_, ()>(())
                })
                .map_err(|e| match e {
                    FeedError::Decode(e) => e,
                    FeedError::Sink(()) => unreachable!(),
                })?;
        }
        out.extend(decoder.finish()?);
        Ok(out)
    }

    fn text() -> Vec<u8> {
        (0..20_000)
            .flat_map(|i| format!("line {i} of a json-ish body, {{\"k\": {i}}}\n").into_bytes())
            .collect()
    }

    #[test]
    fn content_encoding_headers_are_read() {
        let of = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            Coding::of(&headers)
        };
        assert_eq!(of(&[]), Coding::Identity);
        assert_eq!(of(&["identity"]), Coding::Identity);
        assert_eq!(of(&["GZIP"]), Coding::Gzip);
        assert_eq!(of(&["x-gzip"]), Coding::Gzip);
        assert_eq!(of(&[" deflate "]), Coding::Deflate);
        assert_eq!(of(&["br"]), Coding::Unsupported("br".to_owned()));
        assert_eq!(
            of(&["gzip, br"]),
            Coding::Unsupported("gzip, br".to_owned())
        );
        assert_eq!(
            of(&["gzip", "gzip"]),
            Coding::Unsupported("gzip, gzip".to_owned())
        );
        assert_eq!(of(&["zstd"]), Coding::Unsupported("zstd".to_owned()));
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_decode_in_any_chunking() {
        let data = text();
        let cases = [
            (Coding::Gzip, gzip(&data)),
            (Coding::Deflate, zlib(&data)),
            (Coding::Deflate, raw_deflate(&data)),
        ];
        for (coding, encoded) in cases {
            for chunk in [1, 2, 3, 100, 4096, encoded.len()] {
                assert_eq!(
                    decode_in_chunks(&coding, &encoded, chunk, DecodeBound::REQUEST).unwrap(),
                    data,
                    "{coding:?} in chunks of {chunk}"
                );
            }
        }
    }

    #[test]
    fn several_gzip_members_are_one_body() {
        let mut encoded = gzip(b"first member, ");
        encoded.extend(gzip(b"second member"));
        assert_eq!(
            decode_in_chunks(&Coding::Gzip, &encoded, 7, DecodeBound::REQUEST).unwrap(),
            b"first member, second member"
        );
    }

    #[test]
    fn truncated_and_corrupt_data_are_errors() {
        let encoded = gzip(&text());
        let truncated = &encoded[..encoded.len() / 2];
        assert!(matches!(
            decode_in_chunks(&Coding::Gzip, truncated, 512, DecodeBound::REQUEST),
            Err(DecodeError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_in_chunks(
                &Coding::Gzip,
                b"this is not gzip at all",
                5,
                DecodeBound::REQUEST
            ),
            Err(DecodeError::Corrupt { .. })
        ));
        let mut trailing = zlib(b"hello");
        trailing.extend_from_slice(b"smuggled after the end");
        assert!(matches!(
            decode_in_chunks(&Coding::Deflate, &trailing, 4, DecodeBound::REQUEST),
            Err(DecodeError::Corrupt { .. })
        ));
    }

    #[test]
    fn empty_bodies_decode_to_nothing() {
        for coding in [Coding::Gzip, Coding::Deflate] {
            assert_eq!(
                decode_in_chunks(&coding, b"", 1, DecodeBound::REQUEST).unwrap(),
                b""
            );
        }
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_bound_in_small_steps() {
        let zeros = vec![0u8; 64 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 200 << 10, "{}", bomb.len());
        let bound = DecodeBound {
            max_decoded: 1 << 30,
            max_ratio: 200,
            ratio_after: 1 << 20,
        };
        let mut decoder = StreamDecoder::new(&Coding::Gzip, bound).unwrap();
        let mut largest = 0;
        let result = decoder.feed(&bomb, |o| {
            largest = largest.max(o.len());
            Ok::<_, ()>(())
        });
        assert!(
            matches!(result, Err(FeedError::Decode(DecodeError::Bound { .. }))),
            "{result:?}"
        );
        assert!(largest <= 3 * STEP_OUTPUT, "{largest}");
        assert!(decoder.decoded() < 4 << 20, "{}", decoder.decoded());
        // The absolute bound, with a ratio that never trips.
        let bound = DecodeBound {
            max_decoded: 256 << 10,
            max_ratio: u64::MAX,
            ratio_after: 0,
        };
        assert!(matches!(
            decode_in_chunks(&Coding::Gzip, &gzip(&text()), 4096, bound),
            Err(DecodeError::Bound { .. })
        ));
    }

    #[test]
    fn identity_and_unsupported_codings_have_no_decoder() {
        assert!(StreamDecoder::new(&Coding::Identity, DecodeBound::REQUEST).is_none());
        assert!(
            StreamDecoder::new(&Coding::Unsupported("br".into()), DecodeBound::REQUEST).is_none()
        );
    }
}
