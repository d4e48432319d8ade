//! Every spelling of a known secret that DLP matches without decoding
//! (raw, base64 at every alignment, hex, percent, base32, reversed, rot13),
//! shared with the response scrubber, which pairs a secret's forms with its
//! placeholder's.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::MIN_ENCODED_SECRET_LEN;

/// Characters `encodeURIComponent` leaves alone, so the other percent form.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Every spelling of `secret` that should be caught, sorted and without
/// duplicates: see [`encoded_form_list`].
pub fn encoded_forms(secret: &str) -> Vec<Vec<u8>> {
    let mut forms = encoded_form_list(secret);
    forms.sort();
    forms.dedup();
    forms
}

/// Every spelling of `secret` that should be caught, in a fixed order (raw
/// first) so the forms of two strings of the same shape line up one to one
/// (the response scrubber replaces a secret's form by its placeholder's form
/// of the same kind): raw; base64, standard and URL-safe, at the three byte
/// alignments (so padding and a secret inside a longer blob are both covered);
/// hex, lower and upper case; percent-encoded (two ways); base32 (RFC 4648, at
/// the five byte alignments, so with or without padding and inside a longer
/// blob), upper and lower case; reversed; rot13. Secrets shorter than
/// [`MIN_ENCODED_SECRET_LEN`] only get their raw form.
///
/// An agent can always pick an encoding not on this list (xor with a key,
/// every other byte, one character per request): DLP is a tripwire for
/// mistakes and lazy exfiltration, not containment.
pub fn encoded_form_list(secret: &str) -> Vec<Vec<u8>> {
    let raw = secret.as_bytes();
    let mut forms = vec![raw.to_vec()];
    if raw.len() < MIN_ENCODED_SECRET_LEN {
        return forms;
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(raw);
            let encoded = engine.encode(&shifted);
            // Characters touched by the prefix bytes, and the last
            // partial character, depend on neighbouring data: drop them.
            let skip = (offset * 8).div_ceil(6);
            let end = (shifted.len() * 8) / 6;
            forms.push(encoded.as_bytes()[skip..end].to_vec());
        }
    }
    forms.push(hex::encode(raw).into_bytes());
    forms.push(hex::encode_upper(raw).into_bytes());
    forms.extend(percent_encoded_forms(secret));
    for offset in 0..5usize {
        let mut shifted = vec![0u8; offset];
        shifted.extend_from_slice(raw);
        let encoded = base32_no_pad(&shifted);
        // As for base64: keep only the characters made of the secret's bits
        // alone (the padding, if any, comes after the last partial one).
        let skip = (offset * 8).div_ceil(5);
        let end = (shifted.len() * 8) / 5;
        let fragment = encoded.as_bytes()[skip..end].to_vec();
        forms.push(fragment.to_ascii_lowercase());
        forms.push(fragment);
    }
    forms.push(raw.iter().rev().copied().collect());
    forms.push(raw.iter().map(|&b| rot13(b)).collect());
    forms
}

/// RFC 4648 base32 (upper case), without padding.
pub fn base32_no_pad(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity((data.len() * 8).div_ceil(5));
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// ROT13 of one byte: ASCII letters rotated by 13, everything else as is.
pub(crate) fn rot13(byte: u8) -> u8 {
    match byte {
        b'a'..=b'z' => (byte - b'a' + 13) % 26 + b'a',
        b'A'..=b'Z' => (byte - b'A' + 13) % 26 + b'A',
        _ => byte,
    }
}

/// `text` percent-encoded as every byte but alphanumerics, and as
/// `encodeURIComponent` does (upper-case hex).
pub fn percent_encoded_forms(text: &str) -> [Vec<u8>; 2] {
    [
        utf8_percent_encode(text, NON_ALPHANUMERIC)
            .to_string()
            .into_bytes(),
        utf8_percent_encode(text, URI_COMPONENT)
            .to_string()
            .into_bytes(),
    ]
}
