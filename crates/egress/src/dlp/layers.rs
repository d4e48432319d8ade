//! Decoding before matching: a secret wrapped once or several times in
//! base64 (standard or URL-safe), hex (plain, `0x`, or with delimiters such
//! as `de:ad:be:ef`), base32, percent-encoding (double and triple too),
//! quoted-printable, string escapes (`\x67`, `\u0067`, `\u{67}`,
//! `\U00000067`, `%u0067`, `\147`, `\/`, also with their backslash doubled
//! by an enclosing string), HTML character
//! references (`&#103;`), full-width look-alikes and invisible characters
//! (zero-width, soft hyphen, direction marks and overrides),
//! a token spelled out (`g h p _ …`) or cut into string literals joined with
//! `+` (`"ghp_ab" + "cd…"`), base64 of UTF-16 text or of gzip/zlib
//! streams is unwrapped, layer by layer, and the decoded text is matched
//! like the original. A candidate that starts with a rule keyword rot13'd
//! or ends with one backwards (`tuc_…`, `…_phg` for `ghp_…`) is turned back.
//!
//! Candidates are runs of encoding characters of at least
//! [`MIN_CANDIDATE`] bytes; a run that decodes to mostly non-text (an image,
//! a content hash) is dropped after its first 48 bytes, so ordinary binary
//! payloads cost one look. Each decoded layer is smaller than what it came
//! from, so the work is linear in the input; on top of that a [`Budget`]
//! caps the decoded bytes per request (past it, decoding stops and only the
//! raw bytes are matched) and [`MAX_DEPTH`] caps the nesting.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::shapes::{SHORTEST_BASE58, ShapeScanner};

/// How many layers deep decoding goes.
pub const MAX_DEPTH: usize = 4;

/// Shortest run worth decoding: base64 of 12 bytes, hex of 8.
pub const MIN_CANDIDATE: usize = 16;

/// Decoded bytes allowed per request by default.
pub const REQUEST_BUDGET: usize = 8 << 20;

/// How many decoded bytes a request may still produce.
#[derive(Debug, Clone)]
pub struct Budget {
    remaining: usize,
    exhausted: bool,
}

impl Budget {
    /// A budget of `bytes` decoded bytes.
    pub fn new(bytes: usize) -> Self {
        Self {
            remaining: bytes,
            exhausted: false,
        }
    }

    /// The default per-request budget ([`REQUEST_BUDGET`]).
    pub fn per_request() -> Self {
        Self::new(REQUEST_BUDGET)
    }

    /// Whether decoding stopped because the budget ran out.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Splits what is left between two scans run side by side, in
    /// proportion to their lengths `a` and `b`: together they may decode no
    /// more than this budget could; [`Budget::merge`] puts it back together.
    pub fn split(&self, a: usize, b: usize) -> (Self, Self) {
        let share_a = if a + b == 0 {
            self.remaining / 2
        } else {
            // In u128: `remaining * a` overflows u64 for large budgets.
            (self.remaining as u128 * a as u128 / (a + b) as u128) as usize
        };
        let part = |remaining| Self {
            remaining,
            exhausted: self.exhausted,
        };
        (part(share_a), part(self.remaining - share_a))
    }

    /// The budget left after two scans run on [`Budget::split`] halves.
    pub fn merge(a: Self, b: Self) -> Self {
        Self {
            remaining: a.remaining + b.remaining,
            exhausted: a.exhausted || b.exhausted,
        }
    }

    fn take(&mut self, bytes: usize) -> bool {
        if self.exhausted || bytes > self.remaining {
            self.exhausted = true;
            return false;
        }
        self.remaining -= bytes;
        true
    }
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Every layer decoded out of `data` (not `data` itself), outermost first
/// within each candidate, up to [`MAX_DEPTH`] deep.
pub fn decode_layers(data: &[u8], budget: &mut Budget) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    decode_into(data, 1, budget, &mut out, None, true);
    out
}

/// [`decode_layers`], also feeding `data`'s letter-and-digit runs to
/// `shapes` on the same pass. `escapes`: whether `data` may have one of
/// [`ESCAPES`] (the caller's index says so); if not, it is not unescaped.
pub fn decode_layers_with_shapes(
    data: &[u8],
    budget: &mut Budget,
    shapes: &mut ShapeScanner,
    escapes: bool,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    decode_into(data, 1, budget, &mut out, Some(shapes), escapes);
    out
}

/// What every escape [`unescape`] undoes starts with, in either case: a
/// caller whose index saw none of them can skip that pass.
pub const ESCAPES: [&[u8]; 30] = [
    b"\\/",
    b"\\x",
    b"\\u",
    b"%u",
    b"\\0",
    b"\\1",
    b"\\2",
    b"\\3",
    b"\\4",
    b"\\5",
    b"\\6",
    b"\\7",
    b"&#",
    // Full-width ASCII forms, zero-width characters.
    b"\xEF\xBC",
    b"\xEF\xBD",
    b"\xE2\x80\x8B",
    b"\xE2\x80\x8C",
    b"\xE2\x80\x8D",
    b"\xEF\xBB\xBF",
    // Other invisible characters: soft hyphen, combining grapheme joiner,
    // Mongolian vowel separator, direction marks, embeddings and
    // overrides, word joiner, invisible operators and isolates (U+2060 to
    // U+206F, by their common prefix).
    b"\xC2\xAD",
    b"\xCD\x8F",
    b"\xE1\xA0\x8E",
    b"\xE2\x80\x8E",
    b"\xE2\x80\x8F",
    b"\xE2\x80\xAA",
    b"\xE2\x80\xAB",
    b"\xE2\x80\xAC",
    b"\xE2\x80\xAD",
    b"\xE2\x80\xAE",
    b"\xE2\x81",
];

fn decode_into(
    data: &[u8],
    depth: usize,
    budget: &mut Budget,
    out: &mut Vec<Vec<u8>>,
    shapes: Option<&mut ShapeScanner>,
    escapes: bool,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut produced = Vec::new();
    let mut hex_starts = Vec::new();
    let mut spaced_starts = Vec::new();
    let mut wrapped_starts = Vec::new();
    let mut code_starts = Vec::new();
    let mut join_starts = Vec::new();
    let mut group_starts = Vec::new();
    let mut reshaped_starts = Vec::new();
    let exhausted = budget.exhausted();
    let starts = Starts {
        hex: &mut hex_starts,
        spaced: &mut spaced_starts,
        wrapped: &mut wrapped_starts,
        codes: &mut code_starts,
        joins: &mut join_starts,
        groups: &mut group_starts,
        reshaped: &mut reshaped_starts,
    };
    for_each_candidate(data, starts, shapes, |candidate, facts| {
        if !exhausted {
            decode_candidate(candidate, facts, budget, &mut produced);
        }
    });
    if budget.exhausted() {
        return;
    }
    if escapes
        && let Some(unescaped) = unescape(data)
        && budget.take(unescaped.len())
    {
        produced.push(unescaped);
    }
    // Each walker reads from a start to where its spelling ends; a start
    // inside what one walk read is not walked again.
    let walkers: [(Vec<usize>, Walker); 7] = [
        (hex_starts, delimited_hex_at),
        (spaced_starts, spaced_at),
        (wrapped_starts, wrapped_at),
        (code_starts, char_codes_at),
        (join_starts, joined_at),
        (group_starts, grouped_at),
        (reshaped_starts, reshaped_at),
    ];
    for (starts, walk) in walkers {
        let mut resume = 0;
        for start in starts {
            if start >= resume {
                resume = walk(data, start, budget, &mut produced);
            }
        }
    }
    for layer in produced {
        decode_into_owned(layer, depth, budget, out);
    }
}

/// Reads a spelling from a start found by [`for_each_candidate`], adds what
/// it decodes to to the layers, and returns where the spelling ends.
type Walker = fn(&[u8], usize, &mut Budget, &mut Vec<Vec<u8>>) -> usize;

fn decode_into_owned(layer: Vec<u8>, depth: usize, budget: &mut Budget, out: &mut Vec<Vec<u8>>) {
    let index = out.len();
    out.push(layer);
    let layer = std::mem::take(&mut out[index]);
    decode_into(&layer, depth + 1, budget, out, None, true);
    out[index] = layer;
}

/// Byte classes, looked up once per byte.
const HEX: u8 = 1;
const B32_UPPER: u8 = 2;
const B32_LOWER: u8 = 4;

const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let mut class = 0;
        if c.is_ascii_hexdigit() {
            class |= HEX;
        }
        if c.is_ascii_uppercase() || (c >= b'2' && c <= b'7') {
            class |= B32_UPPER;
        }
        if c.is_ascii_lowercase() || (c >= b'2' && c <= b'7') {
            class |= B32_LOWER;
        }
        table[b] = class;
        b += 1;
    }
    table
};

/// Per-byte facts as bit masks, 64 bytes to a word (bit `i % 64` of word
/// `i / 64` is byte `i`): computed without a branch per byte, then walked
/// run by run (`trailing_zeros`), so word boundaries cost no mispredicted
/// branch each. Each fact is about one byte only (no look-ahead): what
/// depends on neighbours is combined from the words with shifts, 64 bytes
/// at a time.
struct Masks {
    len: usize,
    /// `words` words each of: encoding bytes (letters, digits and `+/=_-%`),
    /// letters and digits, digits and capitals, hex digits; one allocation.
    words: usize,
    all: Vec<u64>,
}

impl Masks {
    /// Encoding bytes: letters, digits and `+/=_-%`.
    fn run(&self) -> &[u64] {
        &self.all[..self.words]
    }

    fn alnum(&self) -> &[u64] {
        &self.all[self.words..2 * self.words]
    }

    /// Digits and capitals.
    fn upper_or_digit(&self) -> &[u64] {
        &self.all[2 * self.words..3 * self.words]
    }

    /// Hex digits.
    fn hex(&self) -> &[u64] {
        &self.all[3 * self.words..]
    }

    fn new(data: &[u8]) -> Self {
        let words = data.len().div_ceil(64);
        let mut all = vec![0u64; 4 * words];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (detected just above), all that
            // `avx2::fill_masks` needs.
            #[allow(unsafe_code)]
            unsafe {
                avx2::fill_masks(data, &mut all);
            }
            return Self {
                len: data.len(),
                words,
                all,
            };
        }
        let mut padded = [0u8; 64];
        for (w, block) in data.chunks(64).enumerate() {
            // The last block is padded with zeros (no class has them).
            let block: &[u8; 64] = match block.try_into() {
                Ok(block) => block,
                Err(_) => {
                    padded[..block.len()].copy_from_slice(block);
                    padded[block.len()..].fill(0);
                    &padded
                }
            };
            let [run, alnum, upper_or_digit, hex] = block_masks(block);
            all[w] = run;
            all[words + w] = alnum;
            all[2 * words + w] = upper_or_digit;
            all[3 * words + w] = hex;
        }
        Self {
            len: data.len(),
            words,
            all,
        }
    }
}

/// The masks of one 64-byte block: encoding bytes, letters and digits,
/// digits and capitals, hex digits.
fn block_masks(block: &[u8; 64]) -> [u64; 4] {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: `sse2::block_masks` needs only the `sse2` target feature, which
        // this build has (the cfg above; it is part of the x86-64 baseline).
        #[allow(unsafe_code)]
        unsafe {
            sse2::block_masks(block)
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    portable_block_masks(block)
}

/// [`block_masks`] a byte at a time: each byte's facts as bits of a flag
/// byte (vectorized by the compiler), gathered 8 bytes at a time.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn portable_block_masks(block: &[u8; 64]) -> [u64; 4] {
    let mut flags = [0u8; 64];
    for (flag, &b) in flags.iter_mut().zip(block) {
        let digit = b.wrapping_sub(b'0') < 10;
        let upper = b.wrapping_sub(b'A') < 26;
        let lower = b.wrapping_sub(b'a') < 26;
        let alnum = digit | upper | lower;
        let run = alnum
            | (b == b'+')
            | (b == b'/')
            | (b == b'=')
            | (b == b'_')
            | (b == b'-')
            | (b == b'%');
        let hex = digit | ((b | 0x20).wrapping_sub(b'a') < 6);
        *flag = u8::from(run)
            | u8::from(alnum) << 1
            | u8::from(upper | digit) << 2
            | u8::from(hex) << 3;
    }
    let mut masks = [0u64; 4];
    for (group, bytes) in flags.chunks_exact(8).enumerate() {
        let x = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        for (k, mask) in masks.iter_mut().enumerate() {
            *mask |= pack(x >> k) << (group * 8);
        }
    }
    masks
}

/// [`block_masks`] 16 bytes at a time: compares on SSE2 registers, each
/// fact's 16 bits taken at once with `movemask` (the compiler does not find
/// that on its own).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8, _mm_sub_epi8,
    };

    #[target_feature(enable = "sse2")]
    pub(super) fn block_masks(block: &[u8; 64]) -> [u64; 4] {
        let mut masks = [0u64; 4];
        for (q, bytes) in block.chunks_exact(16).enumerate() {
            let half = |at: usize| {
                let word: [u8; 8] = bytes[at..at + 8].try_into().unwrap_or_default();
                i64::from_le_bytes(word)
            };
            let v = _mm_set_epi64x(half(8), half(0));
            // Unsigned `from <= b < from + n`: (b - from) is its own minimum with n - 1.
            let within = |v: __m128i, from: u8, n: u8| {
                let offset = _mm_sub_epi8(v, _mm_set1_epi8(from as i8));
                _mm_cmpeq_epi8(_mm_min_epu8(offset, _mm_set1_epi8((n - 1) as i8)), offset)
            };
            let is = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
            let digit = within(v, b'0', 10);
            let upper = within(v, b'A', 26);
            let lower = within(v, b'a', 26);
            let alnum = _mm_or_si128(digit, _mm_or_si128(upper, lower));
            let symbols = _mm_or_si128(
                _mm_or_si128(is(b'+'), is(b'/')),
                _mm_or_si128(
                    _mm_or_si128(is(b'='), is(b'_')),
                    _mm_or_si128(is(b'-'), is(b'%')),
                ),
            );
            let run = _mm_or_si128(alnum, symbols);
            let hex_letter = within(_mm_or_si128(v, _mm_set1_epi8(0x20)), b'a', 6);
            let hex = _mm_or_si128(digit, hex_letter);
            let upper_or_digit = _mm_or_si128(upper, digit);
            for (mask, bits) in masks.iter_mut().zip([run, alnum, upper_or_digit, hex]) {
                *mask |= u64::from(_mm_movemask_epi8(bits) as u16) << (q * 16);
            }
        }
        masks
    }
}

/// [`Masks`] 32 bytes at a time on AVX2 (chosen at run time): each byte's
/// class bits looked up by its two nibbles (`vpshufb`, two table lookups
/// and an `and` for what takes the SSE2 code a dozen comparisons), each
/// fact's 32 bits taken at once with `movemask`.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
        _mm256_set1_epi8, _mm256_setr_epi8, _mm256_setzero_si256, _mm256_shuffle_epi8,
        _mm256_srli_epi16,
    };

    /// Class bits, each the bytes with its high nibble in one set and its low
    /// nibble in another: `0-9`, `A-O`, `P-Z`, `a-o`, `p-z`, `+-/%`, `=`, `_`.
    const DIGIT: i8 = 1;
    const UPPER_AO: i8 = 2;
    const UPPER_PZ: i8 = 4;
    const LOWER_AO: i8 = 8;
    const LOWER_PZ: i8 = 16;
    const SIGN: i8 = 32;
    const EQUALS: i8 = 64;
    const UNDERSCORE: i8 = -128;

    /// By low nibble: the classes a byte with that low nibble can be in.
    const fn by_low(lo: i8) -> i8 {
        let mut class = 0;
        if lo <= 9 {
            class |= DIGIT;
        }
        if lo >= 1 {
            class |= UPPER_AO | LOWER_AO;
        }
        if lo <= 0xA {
            class |= UPPER_PZ | LOWER_PZ;
        }
        if lo == 5 || lo == 0xB || lo == 0xD || lo == 0xF {
            class |= SIGN;
        }
        if lo == 0xD {
            class |= EQUALS;
        }
        if lo == 0xF {
            class |= UNDERSCORE;
        }
        class
    }

    /// By high nibble: the classes a byte with that high nibble can be in.
    const fn by_high(hi: i8) -> i8 {
        match hi {
            2 => SIGN,
            3 => DIGIT | EQUALS,
            4 => UPPER_AO,
            5 => UPPER_PZ | UNDERSCORE,
            6 => LOWER_AO,
            7 => LOWER_PZ,
            _ => 0,
        }
    }

    /// Hex classes: digits (high nibble 3, low 0-9) and the letters `a-f`
    /// in either case (high nibble 4 or 6, low 1-6).
    const fn hex_by_low(lo: i8) -> i8 {
        (if lo <= 9 { 1 } else { 0 }) | (if lo >= 1 && lo <= 6 { 2 } else { 0 })
    }

    const fn hex_by_high(hi: i8) -> i8 {
        match hi {
            3 => 1,
            4 | 6 => 2,
            _ => 0,
        }
    }

    /// The four nibble tables, each by nibble 0 to 15.
    const TABLES: [[i8; 16]; 4] = {
        let mut tables = [[0i8; 16]; 4];
        let mut i = 0;
        while i < 16 {
            let n = i as i8;
            tables[0][i] = by_low(n);
            tables[1][i] = by_high(n);
            tables[2][i] = hex_by_low(n);
            tables[3][i] = hex_by_high(n);
            i += 1;
        }
        tables
    };

    /// A nibble table, the same in both 128-bit lanes (`vpshufb` looks up
    /// within each lane).
    #[target_feature(enable = "avx2")]
    fn table(t: [i8; 16]) -> __m256i {
        _mm256_setr_epi8(
            t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
            t[14], t[15], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11],
            t[12], t[13], t[14], t[15],
        )
    }

    /// Fills `all` (4 masks of `data.len().div_ceil(64)` words each, laid out
    /// as [`super::Masks`] has them) with `data`'s masks.
    #[target_feature(enable = "avx2")]
    pub(super) fn fill_masks(data: &[u8], all: &mut [u64]) {
        let words = data.len().div_ceil(64);
        let [low, high, hex_low, hex_high] = TABLES.map(|t| table(t));
        let nibble = _mm256_set1_epi8(0x0F);
        let alnum_bits = _mm256_set1_epi8(DIGIT | UPPER_AO | UPPER_PZ | LOWER_AO | LOWER_PZ);
        let upper_or_digit_bits = _mm256_set1_epi8(DIGIT | UPPER_AO | UPPER_PZ);
        let zero = _mm256_setzero_si256();
        let mut padded = [0u8; 64];
        for w in 0..words {
            let block: &[u8] = match data.get(w * 64..w * 64 + 64) {
                Some(block) => block,
                None => {
                    // The last block, padded with zeros (no class has them).
                    let rest = &data[w * 64..];
                    padded[..rest.len()].copy_from_slice(rest);
                    &padded
                }
            };
            let mut masks = [0u64; 4];
            for half in 0..2 {
                // SAFETY: `block` has 64 bytes; this reads 32 of them from
                // `half * 32` (an unaligned load).
                #[allow(unsafe_code)]
                let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(half * 32).cast()) };
                let lo = _mm256_and_si256(v, nibble);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                let class =
                    _mm256_and_si256(_mm256_shuffle_epi8(low, lo), _mm256_shuffle_epi8(high, hi));
                let hex = _mm256_and_si256(
                    _mm256_shuffle_epi8(hex_low, lo),
                    _mm256_shuffle_epi8(hex_high, hi),
                );
                // Bit i set where byte i has none of `bits`.
                let none = |x: __m256i| _mm256_movemask_epi8(_mm256_cmpeq_epi8(x, zero)) as u32;
                let facts = [
                    none(class),
                    none(_mm256_and_si256(class, alnum_bits)),
                    none(_mm256_and_si256(class, upper_or_digit_bits)),
                    none(hex),
                ];
                for (mask, without) in masks.iter_mut().zip(facts) {
                    *mask |= u64::from(!without) << (half * 32);
                }
            }
            for (k, mask) in masks.into_iter().enumerate() {
                all[k * words + w] = mask;
            }
        }
    }
}

/// Bit 0 of each of the 8 bytes of `x`, gathered into the low 8 bits.
fn pack(x: u64) -> u64 {
    (x & 0x0101_0101_0101_0101).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// The first set bit at or after `from` (`len` if none).
fn next_one(words: &[u64], from: usize, len: usize, invert: bool) -> usize {
    let flip = if invert { u64::MAX } else { 0 };
    let mut w = from / 64;
    let Some(&first) = words.get(w) else {
        return len;
    };
    let mut word = (first ^ flip) & (u64::MAX << (from % 64));
    loop {
        if word != 0 {
            return (w * 64 + word.trailing_zeros() as usize).min(len);
        }
        w += 1;
        match words.get(w) {
            Some(&next) => word = next ^ flip,
            None => return len,
        }
    }
}

/// Where the run of set bits holding bit `at` starts.
fn run_start(words: &[u64], at: usize) -> usize {
    let mut w = at / 64;
    let mut word = !words[w] & ((1u64 << (at % 64)) - 1);
    loop {
        if word != 0 {
            return w * 64 + 64 - word.leading_zeros() as usize;
        }
        if w == 0 {
            return 0;
        }
        w -= 1;
        word = !words[w];
    }
}

/// Calls `f` on each run worth decoding: maximal runs of encoding bytes,
/// split after `key=` (a form or cookie assignment), and, for short runs
/// with slashes (URL paths), each segment as well. Where a hex pair is
/// followed by a delimiter (`67:68`, `0x67, 0x68`, `67-68`), its start goes
/// to `hex_starts`. `shapes`, if given, is fed what of the runs of letters
/// and digits can matter to it (see [`feed_shapes`]).
fn for_each_candidate(
    data: &[u8],
    starts: Starts<'_>,
    shapes: Option<&mut ShapeScanner>,
    mut f: impl FnMut(&[u8], Option<Facts>),
) {
    let Starts {
        hex: hex_starts,
        spaced: spaced_starts,
        wrapped: wrapped_starts,
        codes: code_starts,
        joins: join_starts,
        groups: group_starts,
        reshaped: reshaped_starts,
    } = starts;
    let masks = Masks::new(data);
    let len = masks.len;
    let mut shapes = shapes;
    if let Some(shapes) = shapes.as_deref_mut() {
        feed_shapes(data, &masks, shapes);
    }
    find_spaced(data, &masks, spaced_starts, code_starts, join_starts);
    // Only two kinds of runs of encoding bytes matter: long ones, and runs
    // of exactly two hex digits (or `0x` and two) that may be a pair before
    // a delimiter. Both are found 64 bytes at a time from the masks; the
    // short words in between cost nothing each.
    let mut resume = 0;
    for w in 0..masks.run().len() {
        if resume >= (w + 1) * 64 {
            continue;
        }
        let run = pair_of_words(masks.run(), w);
        let hex = pair_of_words(masks.hex(), w);
        // Bit p: encoding bytes p..p + 16.
        let mut long = run & (run >> 1);
        long &= long >> 2;
        long &= long >> 4;
        long &= long >> 8;
        let before = w.checked_sub(1).map_or(0, |v| masks.run()[v] >> 63);
        let run_starts = run & !(run << 1 | u128::from(before));
        let starts = run_starts as u64;
        // Bit p: three runs of 4 encoding bytes with one byte between each
        // (or three or four: `","`, `", "`), or of 8 with one byte between:
        // maybe base64, hex or bits printed in groups (`Z2hw X1Nw RkFL`,
        // `xxd -g4`, `01100111 01101000`), a token with a space every 4
        // characters or in a list of 4-character pieces, which
        // [`grouped_at`] checks and joins.
        let s = run_starts;
        // (Four runs in a row for the longer separators: JSON's own
        // `"key":"value","key"` has three.)
        let fours = (s >> 5) & (s >> 10)
            | (s >> 7) & (s >> 14) & (s >> 21)
            | (s >> 8) & (s >> 16) & (s >> 24);
        let mut groups = ((s & fours & (run >> 3) & !(run >> 4))
            | (s & (s >> 9) & (s >> 18) & (run >> 7) & !(run >> 8)))
            as u64;
        while groups != 0 {
            group_starts.push(w * 64 + groups.trailing_zeros() as usize);
            groups &= groups - 1;
        }
        // Bit p: a run of exactly 2 from p, both hex digits; or of exactly
        // 4, hex, any, then two hex digits (`0x41`, or `6768` from `xxd`).
        let two = (run >> 1) & !(run >> 2) & hex & (hex >> 1);
        let four =
            (run >> 1) & (run >> 2) & (run >> 3) & !(run >> 4) & hex & (hex >> 2) & (hex >> 3);
        // Bit p: an `=` (or another encoding byte that is not a letter or
        // digit) ending a run with two hex digits (`key=67:68:…`).
        let glued = run & !pair_of_words(masks.alnum(), w) & (hex >> 1) & (hex >> 2) & !(run >> 3);
        let mut bits = (long as u64) | (starts & (two | four) as u64) | glued as u64;
        while bits != 0 {
            let at = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if at < resume {
                continue;
            }
            let start = run_start(masks.run(), at);
            let i = next_one(masks.run(), at, len, true);
            resume = i;
            // The rest of this run's bits.
            bits = match resume - w * 64 {
                skip @ 0..64 => bits & (u64::MAX << skip),
                _ => 0,
            };
            let run = &data[start..i];
            if ends_in_assigned_pair(data, start, i) {
                hex_starts.push(i - 2);
            }
            if run.len() < MIN_CANDIDATE {
                let pair = match run.len() {
                    2 => Some(run),
                    4 if run[..2].eq_ignore_ascii_case(b"0x") => Some(&run[2..]),
                    // Two pairs in a group (`xxd`).
                    4 => Some(run),
                    _ => None,
                };
                if let Some(pair) = pair
                    && pair.iter().all(|&b| CLASSES[b as usize] & HEX != 0)
                    && data.get(i).is_some_and(|&b| is_pair_delimiter(b))
                {
                    hex_starts.push(i - pair.len());
                }
                continue;
            }
            // A line break right after: maybe the first line of wrapped
            // base64 or hex (`base64`, `openssl`, `xxd -p`, PEM, MIME).
            if matches!(data.get(i), Some(b'\n' | b'\r' | b'\\')) {
                wrapped_starts.push(start);
            }
            // Padding first: maybe base64 turned backwards. A dash in the
            // first 10 bytes: maybe one every few characters.
            if run[0] == b'=' || (run.len() >= 19 && run[..10].contains(&b'-')) {
                reshaped_starts.push(start);
            }
            long_run(data, &masks, start, i, hex_starts, &mut f);
            if let Some(shapes) = shapes.as_deref_mut()
                && run.len() >= SHORTEST_BASE58
            {
                feed_mixed_base58(data, &masks, start, i, shapes);
            }
        }
    }
}

/// Where [`for_each_candidate`] leaves the starts of what is decoded
/// after it: separated hex pairs, spaced-out characters, wrapped lines,
/// character codes.
struct Starts<'a> {
    hex: &'a mut Vec<usize>,
    spaced: &'a mut Vec<usize>,
    wrapped: &'a mut Vec<usize>,
    codes: &'a mut Vec<usize>,
    /// A `+` with no encoding byte on either side: maybe joining literals.
    joins: &'a mut Vec<usize>,
    /// Three or more groups of 4 or 8 encoding bytes in a row, one byte
    /// between each (`Z2hw X1Nw RkFL…`, `6768705f 53704641…`).
    groups: &'a mut Vec<usize>,
    /// Long runs to read another way round: reversed (a leading `=`), or
    /// with a dash every few characters taken out.
    reshaped: &'a mut Vec<usize>,
}

/// Fewest characters of a token spelled out with a separator between each
/// (`g h p _ 1 …`) that are put back together.
const MIN_SPACED: usize = 16;

/// Pushes to `starts` the lone letters and digits (no letter or digit on
/// either side) of each 64 bytes that hold at least [`MIN_LONE_PER_WORD`] of
/// them: where a token may be spelled out with separators (`g h p _ 1`,
/// `g, h, p`, `["g","h","p"]`), checked, and its ends found, by
/// [`spaced_at`]. From the masks, a few operations per 64 bytes.
///
/// Likewise pushes to `code_starts` the runs of two or three hex-class
/// characters of each 64 bytes that hold at least [`MIN_LONE_PER_WORD`] of
/// them: where characters may be given by their codes (`[103,104,112]`,
/// `String.fromCharCode(103, 104)`), checked by [`char_codes_at`]; and to
/// `join_starts` each lone `+` (see [`joined_at`]).
fn find_spaced(
    data: &[u8],
    masks: &Masks,
    starts: &mut Vec<usize>,
    code_starts: &mut Vec<usize>,
    join_starts: &mut Vec<usize>,
) {
    let alnum = masks.alnum();
    let hex = masks.hex();
    let run = masks.run();
    for w in 0..alnum.len() {
        // A `+` with no encoding byte on either side (`"a" + "b"`,
        // `'a'+'b'`): string literals may be joined there ([`joined_at`]);
        // a byte's look per lone symbol (` = ` in code, ` - ` in prose).
        let run_before = w.checked_sub(1).map_or(0, |v| run[v] >> 63);
        let run_after = run.get(w + 1).map_or(0, |&n| n << 63);
        let mut symbols =
            run[w] & !alnum[w] & !(run[w] >> 1 | run_after) & !(run[w] << 1 | run_before);
        while symbols != 0 {
            let at = w * 64 + symbols.trailing_zeros() as usize;
            symbols &= symbols - 1;
            if data[at] == b'+' {
                join_starts.push(at);
            }
        }
        let before = w.checked_sub(1).map_or(0, |v| alnum[v] >> 63);
        let next = alnum.get(w + 1).copied().unwrap_or(0);
        let after = next << 63;
        let mut lone = alnum[w] & !(alnum[w] >> 1 | after) & !(alnum[w] << 1 | before);
        // Characters one per line inside a string (`g\nh\np`): the letter
        // of each escape glues a pair. Where 64 bytes hold many pairs, the
        // letters right after a backslash are taken for separators.
        let a = u128::from(alnum[w]) | u128::from(next) << 64;
        let pairs = a & (a >> 1) & !(a >> 2) & !(a << 1 | u128::from(before));
        if (pairs as u64).count_ones() >= MIN_LONE_PER_WORD {
            let block = &data[w * 64..data.len().min(w * 64 + 64)];
            let backslash = block
                .iter()
                .enumerate()
                .fold(0u64, |m, (i, &b)| m | u64::from(b == b'\\') << i);
            let escaped = backslash << 1 | u64::from(w > 0 && data[w * 64 - 1] == b'\\');
            let letters = alnum[w] & !escaped;
            let after = (next & !(backslash >> 63)) << 63;
            lone = letters & !(letters >> 1 | after) & !(letters << 1 | before);
        }
        for_each_bit_if_many(lone, w, starts);
        // Codes need many hex-class characters (digits), which prose and
        // code seldom have in 64 bytes: most words stop here.
        if (alnum[w] & hex[w]).count_ones() < 3 * MIN_LONE_PER_WORD {
            continue;
        }
        // Bit p: a run of 2 or 3 hex digits starts at p.
        let a = u128::from(alnum[w]) | u128::from(next) << 64;
        let h = pair_of_words(hex, w);
        let run_starts = a & !(a << 1 | u128::from(before));
        let two = (a >> 1) & !(a >> 2) & h & (h >> 1);
        let three = (a >> 1) & (a >> 2) & !(a >> 3) & h & (h >> 1) & (h >> 2);
        for_each_bit_if_many((run_starts & (two | three)) as u64, w, code_starts);
    }
}

/// Fewest groups [`grouped_at`] joins.
const MIN_GROUPS: usize = 4;

/// The groups of encoding bytes from `start` (found by [`for_each_candidate`]):
/// 4 or 8 bytes each (the last maybe shorter), the same one to four bytes
/// between each; at least [`MIN_GROUPS`] of them are joined into one layer.
/// Returns where the last group ends.
fn grouped_at(
    data: &[u8],
    start: usize,
    budget: &mut Budget,
    produced: &mut Vec<Vec<u8>>,
) -> usize {
    let group_len = encoding_len(data, start);
    let first_end = start + group_len;
    if group_len != 4 && group_len != 8 {
        return first_end;
    }
    let separator_len = data[first_end..]
        .iter()
        .take(5)
        .take_while(|&&b| !ENCODING[b as usize])
        .count();
    if !(1..=4).contains(&separator_len) {
        return first_end;
    }
    let separator = &data[first_end..first_end + separator_len];
    // Where the groups end, before anything is copied: most starts are
    // ordinary words and stop at the second or third.
    let (mut groups, mut total, mut end) = (1, group_len, first_end);
    while data.get(end..end + separator_len) == Some(separator) {
        let at = end + separator_len;
        let len = encoding_len(data, at);
        if len == 0 || len > group_len {
            break;
        }
        groups += 1;
        total += len;
        end = at + len;
        if len < group_len {
            break;
        }
    }
    if groups < MIN_GROUPS || total < MIN_CANDIDATE || !budget.take(total) {
        return end;
    }
    let mut joined = Vec::with_capacity(total);
    let mut at = start;
    for _ in 0..groups {
        let len = encoding_len(data, at);
        joined.extend_from_slice(&data[at..at + len]);
        at += len + separator_len;
    }
    produced.push(joined);
    end
}

/// Encoding bytes: letters, digits and `+/=_-%` (as in the run masks).
const ENCODING: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'_' | b'-' | b'%');
        b += 1;
    }
    table
};

/// How many encoding bytes follow from `at`.
fn encoding_len(data: &[u8], at: usize) -> usize {
    data.get(at..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&b| ENCODING[b as usize])
        .count()
}

/// A long run read another way: reversed if it starts with base64's
/// padding (`==wbxR2c…`: a string turned backwards), and without its
/// dashes if they come at a regular step (`ghp_-zxFA-KExi-…`).
fn reshaped_at(
    data: &[u8],
    start: usize,
    budget: &mut Budget,
    produced: &mut Vec<Vec<u8>>,
) -> usize {
    let end = start + encoding_len(data, start);
    let run = &data[start..end];
    if run.first() == Some(&b'=') {
        let reversed: Vec<u8> = run.iter().rev().copied().collect();
        if reversed.len() >= MIN_CANDIDATE && budget.take(reversed.len()) {
            produced.push(reversed);
        }
        return end;
    }
    // A dash after every group of 3 to 8 characters from the run's start
    // (`ghp_-zxFA-KExi-…`), whatever dashes the token has of its own.
    let step = (4..=9).find(|&step| {
        let mut at = step - 1;
        let mut dashes = 0;
        while at < run.len() && run[at] == b'-' {
            dashes += 1;
            at += step;
        }
        dashes >= 3 && at >= run.len()
    });
    if let Some(step) = step {
        let undashed: Vec<u8> = run
            .iter()
            .enumerate()
            .filter(|&(i, _)| i % step != step - 1)
            .map(|(_, &b)| b)
            .collect();
        if undashed.len() >= MIN_CANDIDATE && budget.take(undashed.len()) {
            produced.push(undashed);
        }
    }
    end
}

/// Longest literal [`joined_at`] reads on either side of a `+`.
const MAX_JOINED: usize = 512;

/// String literals joined with `+` around the one at `plus` (`"ghp_ab" +
/// "cd…"`, also with the quotes escaped inside a JSON string), taken out
/// as one layer if they make at least [`MIN_CANDIDATE`] bytes. Returns where
/// the last literal ends.
fn joined_at(data: &[u8], plus: usize, budget: &mut Budget, produced: &mut Vec<Vec<u8>>) -> usize {
    let is_quote = |b: u8| b == b'"' || b == b'\'';
    // An escaped quote's backslashes are not part of the literal.
    fn contents(text: &[u8]) -> &[u8] {
        let end = text.iter().rposition(|&b| b != b'\\').map_or(0, |p| p + 1);
        &text[..end]
    }
    let Some(close) = data[..plus].iter().rposition(|&b| b != b' ') else {
        return plus + 1;
    };
    if !is_quote(data[close]) {
        return plus + 1;
    }
    let floor = close.saturating_sub(MAX_JOINED);
    let Some(open) = data[floor..close].iter().rposition(|&b| b == data[close]) else {
        return plus + 1;
    };
    let mut joined = contents(&data[floor + open + 1..close]).to_vec();
    let mut literals = 1;
    let mut end = plus + 1;
    let mut at = plus;
    loop {
        let mut k = at + 1;
        while data.get(k).is_some_and(|&b| b == b' ' || b == b'\\') {
            k += 1;
        }
        let Some(&quote) = data.get(k).filter(|&&b| is_quote(b)) else {
            break;
        };
        let from = k + 1;
        let window = &data[from.min(data.len())..(from + MAX_JOINED).min(data.len())];
        let Some(length) = window.iter().position(|&b| b == quote) else {
            break;
        };
        joined.extend_from_slice(contents(&window[..length]));
        literals += 1;
        end = from + length + 1;
        let mut k = end;
        while data.get(k) == Some(&b' ') {
            k += 1;
        }
        if data.get(k) != Some(&b'+') {
            break;
        }
        at = k;
    }
    if literals >= 2 && joined.len() >= MIN_CANDIDATE && budget.take(joined.len()) {
        produced.push(joined);
    }
    end
}

/// Pushes each set bit of `bits` (word `w`) to `starts` if there are at
/// least [`MIN_LONE_PER_WORD`] of them.
fn for_each_bit_if_many(mut bits: u64, w: usize, starts: &mut Vec<usize>) {
    if bits.count_ones() >= MIN_LONE_PER_WORD {
        while bits != 0 {
            starts.push(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
}

/// Longest separator between character codes (`, `, `);chr(`).
const MAX_CODE_SEPARATOR: usize = 8;

/// The characters given by their decimal codes from `start` (the first
/// digit of one), each code followed by the same separator of 1 to
/// [`MAX_CODE_SEPARATOR`] bytes, taken out as a layer if there are at least
/// [`MIN_SPACED`] printable ones with a letter among them. Returns where
/// they end.
fn char_codes_at(
    data: &[u8],
    start: usize,
    budget: &mut Budget,
    produced: &mut Vec<Vec<u8>>,
) -> usize {
    let number_at = |at: usize| {
        let at = at.min(data.len());
        let digits = data[at..]
            .iter()
            .take(4)
            .take_while(|b| b.is_ascii_digit())
            .count();
        let value = data[at..at + digits]
            .iter()
            .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
        (digits, value)
    };
    let printable = |value: u32| (32..127).contains(&value);
    let (digits, value) = number_at(start);
    if !(2..=3).contains(&digits) || !printable(value) {
        return start + 1;
    }
    let mut i = start + digits;
    let gap = data[i..]
        .iter()
        .take(MAX_CODE_SEPARATOR + 1)
        .take_while(|b| !b.is_ascii_digit())
        .count();
    if gap == 0 || gap > MAX_CODE_SEPARATOR {
        return i;
    }
    let separator = &data[i..i + gap];
    let mut characters = vec![value as u8];
    while data.get(i..i + gap) == Some(separator) {
        let (digits, value) = number_at(i + gap);
        if !(2..=3).contains(&digits) || !printable(value) {
            break;
        }
        characters.push(value as u8);
        i += gap + digits;
    }
    if characters.len() >= MIN_SPACED
        && characters.iter().any(u8::is_ascii_alphabetic)
        && budget.take(characters.len())
    {
        produced.push(characters);
    }
    i
}

/// Lone letters and digits in 64 bytes from which on a spelled-out token is
/// looked for: ordinary text has a few (`a`, `I`, `2`), a token spelled out
/// over 64 bytes at least 12.
const MIN_LONE_PER_WORD: u32 = 8;

/// Longest separator between the characters of a spelled-out token.
const MAX_SEPARATOR: usize = 4;

/// The characters spelled out around `start` (a lone letter or digit) with
/// the same separator of 1 to [`MAX_SEPARATOR`] bytes between each, taken
/// out as a layer if there are at least [`MIN_SPACED`] of them. The
/// separator is what lies between `start` and the next letter or digit.
/// Returns where the characters end.
fn spaced_at(data: &[u8], start: usize, budget: &mut Budget, produced: &mut Vec<Vec<u8>>) -> usize {
    // Bytes other than letters and digits, and line-break and tab escapes
    // (`\n`, `\\n` in a string inside a string): their letter separates.
    let mut gap = 0;
    while gap <= MAX_SEPARATOR
        && let Some(&b) = data.get(start + 1 + gap)
    {
        let escape_letter =
            gap > 0 && data[start + gap] == b'\\' && matches!(b, b'n' | b'r' | b't');
        if b.is_ascii_alphanumeric() && !escape_letter {
            break;
        }
        gap += 1;
    }
    if gap == 0 || gap > MAX_SEPARATOR || start + 1 + gap >= data.len() {
        return start + 1;
    }
    let separator = &data[start + 1..start + 1 + gap];
    let step = gap + 1;
    let separated = |at: usize| data.get(at..at + gap) == Some(separator);
    // A character that is the separator itself (`_ _ _`) has one after it.
    let spelled = |at: usize| {
        data.get(at)
            .is_some_and(|&c| c.is_ascii_graphic() && (c != separator[0] || separated(at + 1)))
    };
    let mut first = start;
    while first >= step && separated(first - gap) && spelled(first - step) {
        first -= step;
    }
    let mut characters = Vec::with_capacity(64);
    let mut i = first;
    characters.push(data[i]);
    while separated(i + 1) && spelled(i + step) {
        characters.push(data[i + step]);
        i += step;
    }
    // Digits alone are a list of numbers (scores, a board, a tensor), not a
    // token: put together they would look like a card number.
    if characters.len() >= MIN_SPACED
        && characters.iter().any(u8::is_ascii_alphabetic)
        && budget.take(characters.len())
    {
        produced.push(characters);
    }
    i + 1
}

/// The lines of wrapped base64 or hex from `start` (each as long as the
/// first, the last one shorter or as long, each followed by a line break:
/// `\n`, `\r\n`, or those escaped in a string), joined as one layer, so that
/// what crosses a line break is decoded whole. Returns where they end.
fn wrapped_at(
    data: &[u8],
    start: usize,
    budget: &mut Budget,
    produced: &mut Vec<Vec<u8>>,
) -> usize {
    // The lines' ends: (start, end) of each; the text is copied only for a
    // block that is one.
    let mut lines: Vec<(usize, usize)> = Vec::new();
    let mut width = None;
    let mut i = start;
    let block = loop {
        let end = i + encoding_len(data, i);
        let len = end - i;
        if width.is_some_and(|width| len > width) || len == 0 {
            // The block ended with the line break before this.
            break true;
        }
        lines.push((i, end));
        i = end;
        let line_break = match data[end..] {
            [b'\r', b'\n', ..] | [b'\\', b'n', ..] => 2,
            [b'\n', ..] => 1,
            [b'\\', b'r', b'\\', b'n', ..] => 4,
            _ => 0,
        };
        if line_break == 0 {
            // The last line ends the text, its string or its word; not so a
            // line of prose (`commit 5b8a…\nAuthor: …`).
            break data
                .get(end)
                .is_none_or(|&b| b.is_ascii_whitespace() || b"\"'`<>,;)]}&".contains(&b));
        }
        // A line shorter than the first is the last one.
        if width.is_some_and(|width| len < width) {
            break true;
        }
        width.get_or_insert(len);
        i = end + line_break;
    };
    if block && lines.len() >= 2 {
        let joined: Vec<u8> = lines
            .iter()
            .flat_map(|&(from, to)| &data[from..to])
            .copied()
            .collect();
        if budget.take(joined.len()) {
            produced.push(joined);
        }
    }
    i.max(start + 1)
}

/// Whether the run `data[start..end]` ends in `=` and a hex pair that a
/// delimiter follows: the first of separated hex pairs given as a value
/// (`d=67:68:70`).
fn ends_in_assigned_pair(data: &[u8], start: usize, end: usize) -> bool {
    end - start >= 3
        && data[end - 3] == b'='
        && data[end - 2..end].iter().all(u8::is_ascii_hexdigit)
        && data.get(end).is_some_and(|&b| is_pair_delimiter(b))
}

/// What may follow a hex pair in separated pairs, before the next one.
fn is_pair_delimiter(b: u8) -> bool {
    matches!(b, b':' | b' ' | b',' | b';' | b'.' | b'|' | b'\t')
}

/// Word `w` of `words` with the next one above it.
fn pair_of_words(words: &[u64], w: usize) -> u128 {
    u128::from(words[w]) | u128::from(words.get(w + 1).copied().unwrap_or(0)) << 64
}

/// Whether bit `at` is set.
fn bit(words: &[u64], at: usize) -> bool {
    words.get(at / 64).is_some_and(|w| w >> (at % 64) & 1 == 1)
}

/// Feeds `shapes` the runs of letters and digits that can matter to it, 64
/// bytes at a time: in order, the maximal runs with no lower-case letter
/// (only those can start or extend a chain, see
/// [`ShapeScanner::classified_run`]); the runs with one that are long
/// enough to be Base58 are fed on the side ([`feed_mixed_base58`]). What a
/// mixed run does to the chains is done just as well without it: it closes
/// the chains open before it, and the next run fed closes them at the same
/// place, since a mixed run in between keeps it from being joined to them.
/// Most words (lower-case, or a capital and lower-case) cost nothing each.
fn feed_shapes(data: &[u8], masks: &Masks, shapes: &mut ShapeScanner) {
    let len = masks.len;
    let lower = |w: usize| masks.alnum()[w] & !masks.upper_or_digit()[w];
    for w in 0..masks.alnum().len() {
        let alnum = masks.alnum()[w];
        let before = w.checked_sub(1).map_or(0, |v| masks.alnum()[v] >> 63);
        let starts = alnum & !(alnum << 1 | before);
        let lower_next = if w + 1 < masks.alnum().len() {
            lower(w + 1) & 1
        } else {
            0
        };
        // Starts with a digit or a capital not followed by a lower-case letter.
        let mut clean = starts & masks.upper_or_digit()[w] & !(lower(w) >> 1 | lower_next << 63);
        while clean != 0 {
            let start = w * 64 + clean.trailing_zeros() as usize;
            clean &= clean - 1;
            let end = next_one(masks.upper_or_digit(), start, len, true);
            if bit(masks.alnum(), end) {
                // A lower-case letter further on.
                continue;
            }
            // Without stopping early: vectorized, and no branch per byte.
            let all_digits = data[start..end]
                .iter()
                .fold(true, |all, b| all & b.is_ascii_digit());
            shapes.classified_run(data, start, end, all_digits, true);
        }
    }
}

/// Feeds `shapes` the runs of letters and digits with a lower-case letter
/// in `data[from..to]` (a run of encoding bytes) that are long enough to be
/// Base58 (no shorter run can be, and every run that long is in a long run
/// of encoding bytes, so this is the only place that looks for them).
fn feed_mixed_base58(
    data: &[u8],
    masks: &Masks,
    from: usize,
    to: usize,
    shapes: &mut ShapeScanner,
) {
    for w in from / 64..to.div_ceil(64) {
        let before = w.checked_sub(1).map_or(0, |v| masks.alnum()[v] >> 63);
        let starts = masks.alnum()[w] & !(masks.alnum()[w] << 1 | before);
        // Bit p: letters and digits at p..p + 26.
        let alnum = pair_of_words(masks.alnum(), w);
        let mut long = alnum & (alnum >> 1);
        long &= long >> 2;
        long &= long >> 4;
        long &= long >> 8;
        long &= long >> (SHORTEST_BASE58 - 16);
        let mut long_starts = starts & long as u64;
        while long_starts != 0 {
            let start = w * 64 + long_starts.trailing_zeros() as usize;
            long_starts &= long_starts - 1;
            if start >= to {
                break;
            }
            if start < from {
                continue;
            }
            // What the Base58 rule can start with, before the longer looks.
            if !matches!(
                data[start],
                b'1' | b'3' | b'5' | b'K' | b'L' | b'M' | b'D' | b'T' | b'm' | b'n' | b'2' | b'c'
            ) {
                continue;
            }
            let end = next_one(masks.alnum(), start, to, true);
            if data[start..end].iter().any(u8::is_ascii_lowercase) {
                shapes.mixed_run(data, start, end);
            }
        }
    }
}

/// The first `=` in `bytes`, found with a vectorized search (long base64
/// runs have none, or only at the end).
fn find_equals(bytes: &[u8]) -> Option<usize> {
    // Most runs are short and have none: the standard library's byte
    // search says so with less setup than a searcher.
    if bytes.len() < 256 && !bytes.contains(&b'=') {
        return None;
    }
    static EQUALS: std::sync::LazyLock<aho_corasick::AhoCorasick> =
        std::sync::LazyLock::new(|| {
            aho_corasick::AhoCorasick::new([b"="]).expect("one literal always builds")
        });
    EQUALS.find(bytes).map(|m| m.start())
}

/// A run of at least [`MIN_CANDIDATE`] encoding bytes, `data[start..end]`.
fn long_run(
    data: &[u8],
    masks: &Masks,
    start: usize,
    end: usize,
    hex_starts: &mut Vec<usize>,
    f: &mut impl FnMut(&[u8], Option<Facts>),
) {
    let run = &data[start..end];
    if run.len() >= 23 && run[2] == b'-' && is_dashed_hex(run) {
        hex_starts.push(start);
    }

    // One look at the whole run, for what most runs have none of.
    let facts = Facts::of_run(data, masks, start, end);
    if facts.equals && looks_quoted_printable(run) {
        f(run, Some(facts));
        return;
    }
    if !facts.equals {
        emit_piece(run, Some(facts), facts.slash, f);
        return;
    }
    // `key=value`: an `=` followed by something other than padding.
    let mut piece_start = 0;
    let mut from = 0;
    while let Some(offset) = find_equals(&run[from..]) {
        let j = from + offset;
        // `key==67=68…`: quoted-printable after the key, kept whole.
        if looks_quoted_printable(&run[j..]) {
            emit_piece(&run[piece_start..j], None, facts.slash, f);
            f(&run[j..], None);
            return;
        }
        if run.get(j + 1).is_some_and(|&n| n != b'=') {
            emit_piece(&run[piece_start..j], None, facts.slash, f);
            piece_start = j + 1;
        }
        from = j + 1;
    }
    let whole = (piece_start == 0).then_some(facts);
    emit_piece(&run[piece_start..], whole, facts.slash, f);
}

/// Hands `f` a piece of a run (with its [`Facts`] if known) and, if it is
/// short and has slashes (`slash`: the run has one), each of its segments.
fn emit_piece(
    piece: &[u8],
    facts: Option<Facts>,
    slash: bool,
    f: &mut impl FnMut(&[u8], Option<Facts>),
) {
    if piece.len() < MIN_CANDIDATE {
        return;
    }
    f(piece, facts);
    if slash && piece.len() <= 512 && piece.contains(&b'/') {
        for segment in piece.split(|&b| b == b'/') {
            if segment.len() >= MIN_CANDIDATE && segment.len() < piece.len() {
                f(segment, None);
            }
        }
    }
}

/// What a candidate could be, found in one pass with comparisons rather
/// than a table, so that it is vectorized (a run can be a whole base64
/// image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Facts {
    percent: bool,
    /// `+` or `/`: standard base64.
    standard: bool,
    /// `-` or `_`: URL-safe base64.
    url_safe: bool,
    all_hex: bool,
    equals: bool,
    slash: bool,
}

impl Facts {
    /// The facts of the run `data[start..end]` (encoding bytes only): from
    /// the masks if it is short (a vectorized pass costs more there), where
    /// only the few bytes other than letters and digits are looked at.
    fn of_run(data: &[u8], masks: &Masks, start: usize, end: usize) -> Self {
        if end - start > 256 {
            return Self::of(&data[start..end]);
        }
        let mut facts = Self {
            percent: false,
            standard: false,
            url_safe: false,
            all_hex: true,
            equals: false,
            slash: false,
        };
        for w in start / 64..end.div_ceil(64) {
            let from = start.max(w * 64) - w * 64;
            let to = end.min(w * 64 + 64) - w * 64;
            let range = (u64::MAX >> (64 - (to - from))) << from;
            facts.all_hex &= masks.hex()[w] & range == range;
            // Encoding bytes other than letters and digits: `+/=_-%`.
            let mut others = masks.run()[w] & !masks.alnum()[w] & range;
            while others != 0 {
                let b = data[w * 64 + others.trailing_zeros() as usize];
                others &= others - 1;
                facts.percent |= b == b'%';
                facts.standard |= matches!(b, b'+' | b'/');
                facts.url_safe |= matches!(b, b'-' | b'_');
                facts.equals |= b == b'=';
                facts.slash |= b == b'/';
            }
        }
        facts
    }

    fn of(bytes: &[u8]) -> Self {
        let [
            mut percent,
            mut plus,
            mut slash,
            mut url_safe,
            mut not_hex,
            mut equals,
        ] = [0u8; 6];
        for &b in bytes {
            let hex = (b.wrapping_sub(b'0') < 10) | ((b | 0x20).wrapping_sub(b'a') < 6);
            percent |= u8::from(b == b'%');
            plus |= u8::from(b == b'+');
            slash |= u8::from(b == b'/');
            url_safe |= u8::from((b == b'-') | (b == b'_'));
            not_hex |= u8::from(!hex);
            equals |= u8::from(b == b'=');
        }
        Self {
            percent: percent != 0,
            standard: plus | slash != 0,
            url_safe: url_safe != 0,
            all_hex: not_hex == 0,
            equals: equals != 0,
            slash: slash != 0,
        }
    }
}

/// Mostly printable ASCII: what a secret, a config file or a nested
/// encoding looks like once decoded, and what random bytes do not.
pub fn is_texty(bytes: &[u8]) -> bool {
    if bytes.len() < 8 {
        return false;
    }
    let printable = bytes
        .iter()
        .filter(|&&b| (0x20..0x7f).contains(&b) || matches!(b, b'\n' | b'\r' | b'\t'))
        .count();
    printable * 10 >= bytes.len() * 9
}

/// Decodes `candidate` (whose [`Facts`] the caller may know already) if it
/// looks like an encoding of text.
fn decode_candidate(
    candidate: &[u8],
    facts: Option<Facts>,
    budget: &mut Budget,
    produced: &mut Vec<Vec<u8>>,
) {
    turn_back(candidate, budget, produced);
    let facts = facts.unwrap_or_else(|| Facts::of(candidate));
    // Bits, eight to a byte (`01100111…`).
    if facts.all_hex
        && candidate.len() >= 64
        && candidate.len().is_multiple_of(8)
        && candidate.iter().all(|&b| b == b'0' || b == b'1')
    {
        let decoded: Vec<u8> = candidate
            .chunks_exact(8)
            .map(|bits| bits.iter().fold(0u8, |byte, &b| byte << 1 | (b - b'0')))
            .collect();
        if is_texty(&decoded) && budget.take(decoded.len()) {
            produced.push(decoded);
        }
        return;
    }
    if facts.equals && looks_quoted_printable(candidate) {
        if let Some(decoded) = quoted_printable_decode(candidate)
            && is_texty(&decoded)
            && budget.take(decoded.len())
        {
            produced.push(decoded);
        }
        return;
    }
    if facts.percent {
        if let Some(decoded) = percent_decode_strict(candidate)
            && budget.take(decoded.len())
        {
            produced.push(decoded);
        }
        return;
    }
    let body = candidate
        .strip_prefix(b"0x")
        .or_else(|| candidate.strip_prefix(b"0X"))
        .unwrap_or(candidate);
    let hex_like = if body.len() == candidate.len() {
        facts.all_hex
    } else {
        body.iter().all(u8::is_ascii_hexdigit)
    };
    if hex_like && body.len() >= MIN_CANDIDATE && body.len().is_multiple_of(2) {
        let head = &body[..body.len().min(64)];
        if !could_be_texty(
            head.chunks_exact(2),
            |&[first, _]: &[u8; 2]| matches!(first, b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'),
        ) {
            return;
        }
        let mut head_bytes = [0u8; 32];
        let head_bytes = &mut head_bytes[..head.len() / 2];
        if hex::decode_to_slice(head, head_bytes).is_ok()
            && is_texty(head_bytes)
            && let Ok(decoded) = hex::decode(body)
            && budget.take(decoded.len())
        {
            produced.push(decoded);
        }
        return;
    }
    let unpadded = trim_padding(candidate);
    if unpadded.len() >= MIN_CANDIDATE
        && (unpadded
            .iter()
            .all(|&b| CLASSES[b as usize] & B32_UPPER != 0)
            || unpadded
                .iter()
                .all(|&b| CLASSES[b as usize] & B32_LOWER != 0))
        && let Some(decoded) = base32_decode(unpadded)
        && is_texty(&decoded)
        && budget.take(decoded.len())
    {
        produced.push(decoded);
        return;
    }
    let engine = match (facts.standard, facts.url_safe) {
        (true, true) => return,
        (true, false) => &STANDARD,
        _ => &URL_SAFE,
    };
    if let Some(inflated) = compressed_text(unpadded, engine, budget) {
        produced.push(inflated);
        return;
    }
    // A run longer than the scan overlap may start mid-quantum: try every
    // alignment for long runs.
    let alignments = if unpadded.len() > 256 { 4 } else { 1 };
    for offset in 0..alignments {
        let aligned = &unpadded[offset..];
        let usable = aligned.len() - aligned.len() % 4;
        let probe = &aligned[..usable.min(64)];
        // A quantum whose first character is worth 32 or more decodes to a
        // first byte with the high bit set: too many, and the decoded head
        // cannot pass `is_texty` (no padding inside: it was split off).
        if (!facts.equals || !probe.contains(&b'='))
            && !could_be_texty(
                probe.chunks_exact(4),
                |quantum: &[u8; 4]| !matches!(quantum[0], b'A'..=b'Z' | b'a'..=b'f'),
            )
        {
            continue;
        }
        // Into a buffer on the stack: most probes are turned down.
        let mut head = [0u8; 64];
        let Ok(decoded_len) = engine.decode_slice(probe, &mut head) else {
            continue;
        };
        // A lone trailing character carries no whole byte.
        let whole = if aligned.len() % 4 == 1 {
            &aligned[..usable]
        } else {
            aligned
        };
        if !is_texty(&head[..decoded_len]) {
            if offset == 0
                && is_base64_tar(aligned, engine)
                && let Ok(archive) = engine.decode(whole)
            {
                let text = printable_strings(&archive);
                if budget.take(text.len()) {
                    produced.push(text);
                }
                return;
            }
            // UTF-16 text (PowerShell's `-EncodedCommand`): every other byte 0.
            if let Some(parity) = utf16_parity(&head[..decoded_len])
                && let Ok(decoded) = engine.decode(whole)
            {
                let narrow: Vec<u8> = decoded.iter().skip(parity).step_by(2).copied().collect();
                if budget.take(narrow.len()) {
                    produced.push(narrow);
                }
                return;
            }
            continue;
        }
        if let Ok(decoded) = engine.decode(whole)
            && budget.take(decoded.len())
        {
            produced.push(decoded);
            return;
        }
    }
}

/// Whether `run` starts as quoted-printable text written all in escapes
/// (`=67=68=70…`): at least 8 of them in a row.
fn looks_quoted_printable(run: &[u8]) -> bool {
    run.len() >= 24
        && run[..24]
            .chunks_exact(3)
            .all(|t| t[0] == b'=' && hex_value(t[1]).is_some() && hex_value(t[2]).is_some())
}

/// Quoted-printable (`=HH` escapes among plain bytes) decoded; None if an
/// `=` is not an escape.
fn quoted_printable_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 3);
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'=' {
            let h = hex_value(*text.get(i + 1)?)?;
            let l = hex_value(*text.get(i + 2)?)?;
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Which bytes of `bytes` hold ASCII text if it is UTF-16 (0: the even
/// ones, little-endian; 1: the odd ones): the others are all 0.
fn utf16_parity(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 16 {
        return None;
    }
    (0..2).find(|&parity| {
        let (text, zeros): (Vec<u8>, Vec<u8>) = (
            bytes.iter().skip(parity).step_by(2).copied().collect(),
            bytes.iter().skip(1 - parity).step_by(2).copied().collect(),
        );
        zeros.iter().all(|&b| b == 0) && is_texty(&text)
    })
}

/// Most a compressed candidate may inflate to.
const MAX_INFLATED: usize = 1 << 20;

/// Text compressed with gzip or zlib and then base64-encoded (`gzip | base64`),
/// inflated: a candidate whose base64 starts with the gzip magic (`H4sI`) or
/// a zlib header (`eJ`, `eN`, `eF`, `eA`). Inflates at most
/// [`MAX_INFLATED`] bytes and no more than the budget allows; a stream cut
/// short gives what came out before the cut.
fn compressed_text(
    unpadded: &[u8],
    engine: &GeneralPurpose,
    budget: &mut Budget,
) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let gzip = unpadded.starts_with(b"H4sI");
    let zlib = matches!(unpadded, [b'e', b'J' | b'N' | b'F' | b'A', ..]);
    if !(gzip || zlib) {
        return None;
    }
    let usable = unpadded.len() - unpadded.len() % 4;
    let whole = if unpadded.len() % 4 == 1 {
        &unpadded[..usable]
    } else {
        unpadded
    };
    let compressed = engine.decode(whole).ok()?;
    // One byte past the budget, so that running out of it shows.
    let limit = MAX_INFLATED.min(budget.remaining.saturating_add(1)) as u64;
    let mut inflated = Vec::new();
    let reader: Box<dyn std::io::Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(compressed.as_slice()))
    } else {
        // A zlib header's check bits: the first two bytes, big-endian, are a
        // multiple of 31.
        if compressed.len() < 2 || u16::from_be_bytes([compressed[0], compressed[1]]) % 31 != 0 {
            return None;
        }
        Box::new(flate2::read::ZlibDecoder::new(compressed.as_slice()))
    };
    // An error (a stream cut short) leaves what was inflated before it.
    let _ = reader.take(limit).read_to_end(&mut inflated);
    // An archive (`tar czf - … | base64`) is mostly NULs: its text is kept.
    let text = if is_texty(&inflated) {
        inflated
    } else {
        printable_strings(&inflated)
    };
    (!text.is_empty() && budget.take(text.len())).then_some(text)
}

/// The runs of at least 8 printable characters in `bytes`, a line each (what
/// `strings` prints): the files' text in an archive.
fn printable_strings(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let printable = |b: &u8| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    for run in bytes.split(|b| !printable(b)) {
        if run.len() >= 8 {
            out.extend_from_slice(run);
            out.push(b'\n');
        }
    }
    out
}

/// Where a tar archive has its magic (`ustar` at byte 257): base64 of a
/// `tar` is decoded for the text of its files even though it is mostly NULs.
fn is_base64_tar(aligned: &[u8], engine: &GeneralPurpose) -> bool {
    // Characters 340..352 are bytes 255..264.
    let mut head = [0u8; 9];
    aligned.len() >= 352
        && engine.decode_slice(&aligned[340..352], &mut head).is_ok()
        && head[2..7] == *b"ustar"
}

/// Whether the bytes decoded from `units` (each decoding to `N * 3 / 4`
/// or `N / 2` bytes) could pass [`is_texty`], counting only the units that
/// `high` says decode to a byte of 0x80 or more: a cheap way to turn down
/// binary before decoding it.
fn could_be_texty<'a, const N: usize>(
    units: std::slice::ChunksExact<'a, u8>,
    high: impl Fn(&[u8; N]) -> bool,
) -> bool {
    let bytes_per_unit = if N == 4 { 3 } else { 1 };
    let total = units.len() * bytes_per_unit;
    let non_printable = units
        .filter(|unit| <&[u8; N]>::try_from(*unit).is_ok_and(&high))
        .count();
    // `is_texty` wants printable * 10 >= len * 9, i.e. non-printable * 10 <= len.
    non_printable * 10 <= total
}

fn trim_padding(candidate: &[u8]) -> &[u8] {
    let end = candidate
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(0, |p| p + 1);
    &candidate[..end]
}

/// RFC 4648 base32 without padding, either case.
pub fn base32_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer = 0u64;
    let mut bits = 0u32;
    for &c in text {
        let value = match c.to_ascii_uppercase() {
            b @ b'A'..=b'Z' => b - b'A',
            b @ b'2'..=b'7' => b - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u64::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Percent-decoding that only answers when there was at least one valid
/// escape (`+` is left alone: it is also base64).
pub fn percent_decode_strict(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut escapes = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%'
            && let (Some(h), Some(l)) = (
                text.get(i + 1).and_then(|c| hex_value(*c)),
                text.get(i + 2).and_then(|c| hex_value(*c)),
            )
        {
            out.push(h << 4 | l);
            escapes += 1;
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    (escapes > 0).then_some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `data` with its escapes undone, if it has any: `\xHH`, `\uHHHH` (ASCII
/// range), `\/` and octal `\NNN` (or `\NN`) string escapes; HTML character references
/// (`&#103;`, `&#x67;`); full-width forms of ASCII (`ｇｈｐ`) folded; and
/// zero-width characters (U+200B–U+200D, U+2060, U+FEFF) dropped, so a
/// token spelled with any of them reads as itself.
pub fn unescape(data: &[u8]) -> Option<Vec<u8>> {
    let first = memchr_escape(data)?;
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..first]);
    let mut i = first;
    let mut changed = false;
    while i < data.len() {
        if matches!(
            data[i],
            b'\\' | b'&' | b'%' | 0xC2 | 0xCD | 0xE1 | 0xE2 | 0xEF
        ) && let Some((byte, used)) = escape_at(&data[i..])
        {
            out.extend(byte);
            i += used;
            changed = true;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    changed.then_some(out)
}

/// The escape at the start of `rest`, if one is there: the byte it stands
/// for (None: it stands for nothing) and how many bytes it takes.
fn escape_at(rest: &[u8]) -> Option<(Option<u8>, usize)> {
    // An escape inside a string that was itself escaped (`\\x67` in JSON
    // for `\x67`) stands for the same byte: its backslash is doubled.
    let extra = rest
        .iter()
        .take(MAX_DOUBLED_BACKSLASHES)
        .take_while(|&&b| b == b'\\')
        .count()
        .saturating_sub(1);
    if extra > 0 {
        let (byte, used) = escape_at(&rest[extra..])?;
        return Some((byte, used + extra));
    }
    // Only an escape of a printable character counts: nothing else can be
    // part of a token, and ANSI colours (`\033[`) or NULs would make a
    // whole chunk into a layer for nothing.
    escape_of_any_byte(rest)
        .filter(|(byte, _)| byte.is_none_or(|b| b == b' ' || b.is_ascii_graphic()))
}

/// [`escape_at`], whatever byte the escape stands for.
fn escape_of_any_byte(rest: &[u8]) -> Option<(Option<u8>, usize)> {
    let hex = |at: usize| rest.get(at).and_then(|c| hex_value(*c));
    match *rest {
        [b'\\', b'/', ..] => Some((Some(b'/'), 2)),
        [b'\\', b'x' | b'X', ..] => Some((Some(hex(2)? << 4 | hex(3)?), 4)),
        // `\u{67}` (Rust, JavaScript, Swift): one to six hex digits in braces.
        [b'\\', b'u', b'{', ..] => {
            let digits = rest[3..]
                .iter()
                .take(7)
                .take_while(|c| c.is_ascii_hexdigit())
                .count();
            if !(1..=6).contains(&digits) || rest.get(3 + digits) != Some(&b'}') {
                return None;
            }
            let code =
                (3..3 + digits).try_fold(0u32, |code, at| Some(code << 4 | u32::from(hex(at)?)))?;
            Some((wide_char(code)?, 4 + digits))
        }
        // `\u0067`; `%u0067` (JavaScript's old `escape()`).
        [b'\\' | b'%', b'u' | b'U', ..] if rest[0] == b'%' || rest[1] == b'u' => {
            let code = (2..6).try_fold(0u32, |code, at| Some(code << 4 | u32::from(hex(at)?)))?;
            Some((wide_char(code)?, 6))
        }
        // `\U00000067` (Python, C): eight hex digits.
        [b'\\', b'U', ..] => {
            let code = (2..10).try_fold(0u32, |code, at| Some(code << 4 | u32::from(hex(at)?)))?;
            Some((wide_char(code)?, 10))
        }
        // Octal, two or three digits (one would be a control character).
        [b'\\', a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] => {
            Some((Some((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0')), 4))
        }
        [b'\\', a @ b'0'..=b'7', b @ b'0'..=b'7', ..] => {
            Some((Some((a - b'0') << 3 | (b - b'0')), 3))
        }
        [b'&', b'#', ..] => {
            let (radix, digits_from) = match rest.get(2) {
                Some(b'x' | b'X') => (16, 3),
                _ => (10, 2),
            };
            let digits = rest[digits_from..]
                .iter()
                .take(8)
                .take_while(|c| c.is_ascii_hexdigit() && (radix == 16 || c.is_ascii_digit()))
                .count();
            if digits == 0 {
                return None;
            }
            let text = std::str::from_utf8(&rest[digits_from..digits_from + digits]).ok()?;
            let value = u32::from_str_radix(text, radix).ok()?;
            let byte = u8::try_from(value).ok().filter(u8::is_ascii)?;
            let end = digits_from + digits;
            let used = if rest.get(end) == Some(&b';') {
                end + 1
            } else {
                end
            };
            Some((Some(byte), used))
        }
        // Full-width forms and invisible characters, in UTF-8.
        [a @ (0xC2 | 0xCD), b @ 0x80..=0xBF, ..] => {
            let code = u32::from(a & 0x1F) << 6 | u32::from(b & 0x3F);
            Some((wide_char(code).filter(|_| code >= 0x80)?, 2))
        }
        [
            a @ (0xE1 | 0xE2 | 0xEF),
            b @ 0x80..=0xBF,
            c @ 0x80..=0xBF,
            ..,
        ] => {
            let code = u32::from(a & 0x0F) << 12 | u32::from(b & 0x3F) << 6 | u32::from(c & 0x3F);
            Some((wide_char(code).filter(|_| code >= 0x80)?, 3))
        }
        _ => None,
    }
}

/// What the character `code` stands for in a token, if it is ASCII, the
/// full-width form of an ASCII character (U+FF01..=U+FF5E: `!`..=`~`), or
/// invisible (zero-width, soft hyphen, direction marks and overrides,
/// invisible operators: None, dropped).
fn wide_char(code: u32) -> Option<Option<u8>> {
    match code {
        0..=0x7F => Some(Some(code as u8)),
        0xFF01..=0xFF5E => Some(Some((code - 0xFF01) as u8 + b'!')),
        0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF => {
            Some(None)
        }
        0xAD | 0x34F | 0x180E => Some(None),
        _ => None,
    }
}

fn memchr_escape(data: &[u8]) -> Option<usize> {
    // A vectorized search for all the escapes' starts at once (Teddy), not
    // a loop over every backslash: JSON bodies are full of `\n`.
    static SEARCHER: std::sync::LazyLock<Option<aho_corasick::packed::Searcher>> =
        std::sync::LazyLock::new(|| {
            let mut patterns: Vec<Vec<u8>> = ESCAPES
                .iter()
                .flat_map(|escape| [escape.to_ascii_lowercase(), escape.to_ascii_uppercase()])
                .collect();
            patterns.sort();
            patterns.dedup();
            aho_corasick::packed::Searcher::new(patterns)
        });
    let searcher = SEARCHER.as_ref()?;
    let mut from = 0;
    // The searcher is a prefilter: an escape's start may not be one.
    while let Some(found) = searcher.find(&data[from..]) {
        let mut at = from + found.start();
        // Back over the backslashes that double this one.
        let floor = at.saturating_sub(MAX_DOUBLED_BACKSLASHES - 1);
        while at > floor && data[at] == b'\\' && data[at - 1] == b'\\' {
            at -= 1;
        }
        if escape_at(&data[at..]).is_some() {
            return Some(at);
        }
        from = from + found.start() + 1;
    }
    None
}

/// Backslashes an escape may carry (escaped once, twice, three times).
const MAX_DOUBLED_BACKSLASHES: usize = 8;

/// `67-68-70-…`: hex pairs joined by hyphens, a run of its own.
fn is_dashed_hex(run: &[u8]) -> bool {
    run.iter().enumerate().all(|(i, &b)| {
        if i % 3 == 2 {
            b == b'-'
        } else {
            CLASSES[b as usize] & HEX != 0
        }
    })
}

/// A rule keyword turned to hide the token it starts: rot13'd (the token
/// then starts with it) or written backwards (the token ends with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Turn {
    Rot13,
    Reversed,
}

/// The rules' keywords that can start a token (three bytes or more, token
/// bytes only), rot13'd and backwards, by the three bytes a candidate
/// starts (rot13) or ends (backwards) with if it holds one, lower-case;
/// with a bit per 15-bit hash of those three bytes, so that most
/// candidates are turned down by one bit test.
struct Turned {
    spellings: Vec<([u8; 3], Turn, Vec<u8>)>,
    /// Bit `hash(key)` set if some spelling has that key, per [`Turn`].
    bits: [[u64; 512]; 2],
}

/// 15 bits of three bytes (their low five each: letters apart).
fn turned_hash(key: [u8; 3]) -> usize {
    usize::from(key[0] & 31) << 10 | usize::from(key[1] & 31) << 5 | usize::from(key[2] & 31)
}

static TURNED: std::sync::LazyLock<Turned> = std::sync::LazyLock::new(|| {
    let mut spellings = Vec::new();
    for rule in super::rules::BUILTIN_RULES {
        for keyword in rule.keywords.iter().map(|k| k.as_bytes()) {
            if keyword.len() < 3
                || !keyword
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"_-.+/=~".contains(&b))
            {
                continue;
            }
            let lower = keyword.to_ascii_lowercase();
            let rot: Vec<u8> = lower.iter().map(|&b| super::forms::rot13(b)).collect();
            let back: Vec<u8> = lower.iter().rev().copied().collect();
            let rot_key = [rot[0], rot[1], rot[2]];
            let n = back.len();
            let back_key = [back[n - 3], back[n - 2], back[n - 1]];
            spellings.push((rot_key, Turn::Rot13, rot));
            spellings.push((back_key, Turn::Reversed, back));
        }
    }
    spellings.sort();
    spellings.dedup();
    let mut bits = [[0u64; 512]; 2];
    for (key, turn, _) in &spellings {
        let h = turned_hash(*key);
        bits[*turn as usize][h / 64] |= 1 << (h % 64);
    }
    Turned { spellings, bits }
});

/// If `candidate` starts with a rule keyword rot13'd or ends with one
/// backwards (`tuc_…` or `…_phg` for `ghp_…`), adds it turned back to the
/// layers.
fn turn_back(candidate: &[u8], budget: &mut Budget, produced: &mut Vec<Vec<u8>>) {
    let n = candidate.len();
    if n < 3 {
        return;
    }
    let turned = &*TURNED;
    let first: [u8; 3] = std::array::from_fn(|i| candidate[i].to_ascii_lowercase());
    let last: [u8; 3] = std::array::from_fn(|i| candidate[n - 3 + i].to_ascii_lowercase());
    for (key, turn) in [(first, Turn::Rot13), (last, Turn::Reversed)] {
        let h = turned_hash(key);
        if turned.bits[turn as usize][h / 64] & 1 << (h % 64) == 0 {
            continue;
        }
        let spellings = &turned.spellings;
        let from = spellings.partition_point(|(k, t, _)| (*k, *t) < (key, turn));
        let found = spellings[from..]
            .iter()
            .take_while(|(k, t, _)| (*k, *t) == (key, turn))
            .any(|(_, _, spelling)| match turn {
                Turn::Rot13 => candidate
                    .get(..spelling.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(spelling)),
                Turn::Reversed => {
                    n >= spelling.len()
                        && candidate[n - spelling.len()..].eq_ignore_ascii_case(spelling)
                }
            });
        if found && budget.take(n) {
            produced.push(match turn {
                Turn::Rot13 => candidate.iter().map(|&b| super::forms::rot13(b)).collect(),
                Turn::Reversed => candidate.iter().rev().copied().collect(),
            });
        }
    }
}

/// Hex written as separated pairs (`67:68:70`, `67 68 70`, `0x67, 0x68`,
/// `67-68-70`) from `start`: at least 8 pairs, decoded if they make text.
/// Returns where the pairs end.
fn delimited_hex_at(
    data: &[u8],
    start: usize,
    budget: &mut Budget,
    produced: &mut Vec<Vec<u8>>,
) -> usize {
    // Counted first: most starts are a lone pair, not worth an allocation.
    let mut pairs = 0;
    let mut end = hex_pairs_at(data, start, |_| pairs += 1);
    if pairs >= 8 {
        let mut bytes = Vec::with_capacity(pairs);
        let mut line = start;
        // A dump (`xxd`, `hexdump -C`, `od`) goes on from line to line.
        loop {
            let before = bytes.len();
            end = hex_pairs_at(data, line, |byte| bytes.push(byte));
            match next_dump_line(data, end) {
                Some(next) if bytes.len() - before >= 8 => line = next,
                _ => break,
            }
        }
        if is_texty(&bytes) && budget.take(bytes.len()) {
            produced.push(bytes);
        }
    }
    end.max(start + 1)
}

/// Where the hex of the next line of a dump starts, if `end` (where one
/// line's pairs stop) is followed by the rest of a dump line: at most
/// 18 bytes of its text column, a line break (maybe escaped in a string),
/// an offset (`00000010:`, `00000010 `) or spaces, then a hex pair.
fn next_dump_line(data: &[u8], end: usize) -> Option<usize> {
    let rest = data.get(end..)?;
    let (line_end, line_break) =
        rest.iter()
            .take(20)
            .enumerate()
            .find_map(|(k, _)| match rest[k..] {
                [b'\r', b'\n', ..] | [b'\\', b'n', ..] => Some((k, 2)),
                [b'\n', ..] => Some((k, 1)),
                [b'\\', b'r', b'\\', b'n', ..] => Some((k, 4)),
                _ => None,
            })?;
    let mut at = end + line_end + line_break;
    let offset = data[at..]
        .iter()
        .take(9)
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    if (6..=8).contains(&offset) && matches!(data.get(at + offset), Some(b':' | b' ')) {
        at += offset + 1;
    }
    at += data[at..]
        .iter()
        .take(4)
        .take_while(|&&b| b == b' ')
        .count();
    hex_value(*data.get(at)?)?;
    hex_value(*data.get(at + 1)?)?;
    Some(at)
}

/// Calls `f` with each byte of the separated hex pairs from `start`;
/// returns where they end.
fn hex_pairs_at(data: &[u8], start: usize, mut f: impl FnMut(u8)) -> usize {
    let byte_at =
        |at: usize| Some(hex_value(*data.get(at)?)? << 4 | hex_value(*data.get(at + 1)?)?);
    let mut j = start;
    while let Some(byte) = byte_at(j) {
        if data.get(j + 2).is_some_and(u8::is_ascii_alphanumeric) {
            // Two pairs in a group (`xxd`'s `6768 705f`), or a longer run.
            match byte_at(j + 2) {
                Some(next) if !data.get(j + 4).is_some_and(u8::is_ascii_alphanumeric) => {
                    f(byte);
                    f(next);
                    j += 4;
                }
                _ => break,
            }
        } else {
            f(byte);
            j += 2;
        }
        // Delimiter: up to two of `: ,-`, then an optional `0x` or `\x`.
        let mut k = j;
        while k < data.len() && k < j + 2 && is_delimiter(data[k]) {
            k += 1;
        }
        if k == j {
            break;
        }
        if data
            .get(k..k + 2)
            .is_some_and(|p| p == b"0x" || p == b"\\x")
        {
            k += 2;
        }
        j = k;
    }
    j
}

fn is_delimiter(b: u8) -> bool {
    matches!(b, b'-') || is_pair_delimiter(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};

    const TEXT: &str = "ghp_FAKEFAKEFAKEFAKEFAKEFAKE0123456789";

    /// The byte-by-byte walk the masks replaced, feeding every letter-and-digit
    /// run to the shape pass: the reference for the fast one.
    fn reference_candidates(
        data: &[u8],
        hex_starts: &mut Vec<usize>,
        shapes: &mut ShapeScanner,
        f: &mut impl FnMut(&[u8], Option<Facts>),
    ) {
        let is_run = |b: u8| b.is_ascii_alphanumeric() || b"+/=_-%".contains(&b);
        let mut i = 0;
        while i < data.len() {
            if !is_run(data[i]) {
                i += 1;
                continue;
            }
            let start = i;
            let mut alnum_start = None;
            while i < data.len() && is_run(data[i]) {
                if data[i].is_ascii_alphanumeric() {
                    alnum_start.get_or_insert(i);
                } else if let Some(from) = alnum_start.take() {
                    shapes.alnum_run(data, from, i);
                }
                i += 1;
            }
            if let Some(from) = alnum_start {
                shapes.alnum_run(data, from, i);
            }
            let run = &data[start..i];
            if run.len() >= 3
                && run[run.len() - 3] == b'='
                && run[run.len() - 2..].iter().all(u8::is_ascii_hexdigit)
                && data
                    .get(i)
                    .is_some_and(|&b| matches!(b, b':' | b' ' | b','))
            {
                hex_starts.push(i - 2);
            }
            if run.len() < MIN_CANDIDATE {
                let pair = match run.len() {
                    2 => Some(run),
                    4 if run[..2].eq_ignore_ascii_case(b"0x") => Some(&run[2..]),
                    4 => Some(run),
                    _ => None,
                };
                if let Some(pair) = pair
                    && pair.iter().all(u8::is_ascii_hexdigit)
                    && data
                        .get(i)
                        .is_some_and(|&b| matches!(b, b':' | b' ' | b','))
                {
                    hex_starts.push(i - pair.len());
                }
                continue;
            }
            if run.len() >= 23 && run[2] == b'-' && is_dashed_hex(run) {
                hex_starts.push(start);
            }
            let mut piece_start = 0;
            for j in 0..run.len() {
                if run[j] == b'=' && run.get(j + 1).is_some_and(|&n| n != b'=') {
                    emit_piece(&run[piece_start..j], None, true, f);
                    piece_start = j + 1;
                }
            }
            emit_piece(&run[piece_start..], None, true, f);
        }
    }

    #[test]
    fn a_split_budget_is_shared_in_proportion_and_no_larger_than_the_whole() {
        let budget = Budget::new(1000);
        let (mut a, mut b) = budget.split(30, 70);
        assert!(a.take(300) && !a.take(1), "the first share is 300");
        assert!(b.take(700) && !b.take(1), "the second share is 700");
        let merged = Budget::merge(a, b);
        assert!(merged.exhausted());
        let (mut a, b) = Budget::new(10).split(1, 1);
        assert!(a.take(5));
        let mut merged = Budget::merge(a, b);
        assert!(!merged.exhausted());
        assert!(merged.take(5) && !merged.take(1), "what is left comes back");
        let (a, b) = Budget::new(usize::MAX).split(usize::MAX / 2, usize::MAX / 2);
        assert_eq!(a.remaining + b.remaining, usize::MAX);
        let (a, b) = merged.split(3, 4);
        assert!(
            a.exhausted() && b.exhausted(),
            "an exhausted budget stays so"
        );
    }

    #[test]
    fn the_cheap_texty_check_never_turns_down_text() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..3000 {
            let len = 8 + round % 40;
            // Text, binary, and mixes of both.
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if (round / 3) % 4 == 0 || i % ((round % 5) + 2) == 0 {
                        (state >> 24) as u8
                    } else {
                        b' ' + (state % 95) as u8
                    }
                })
                .collect();
            let texty = is_texty(&bytes);
            let b64 = B64.encode(&bytes);
            let probe = &b64.as_bytes()[..b64.len() / 4 * 4];
            let decoded = B64.decode(probe).unwrap();
            let cheap = could_be_texty(
                probe.chunks_exact(4),
                |q: &[u8; 4]| !matches!(q[0], b'A'..=b'Z' | b'a'..=b'f'),
            );
            assert!(cheap || !is_texty(&decoded), "{b64}");
            let hex = hex::encode(&bytes);
            let cheap = could_be_texty(
                hex.as_bytes().chunks_exact(2),
                |&[first, _]: &[u8; 2]| matches!(first, b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'),
            );
            assert!(cheap || !texty, "{hex}");
        }
    }

    /// The masks of a block are each byte's facts, whichever way they are
    /// computed: every byte value at every position, and mixed blocks.
    #[test]
    fn block_masks_hold_each_bytes_facts() {
        let facts = |b: u8| {
            let alnum = b.is_ascii_alphanumeric();
            [
                alnum || b"+/=_-%".contains(&b),
                alnum,
                b.is_ascii_uppercase() || b.is_ascii_digit(),
                b.is_ascii_hexdigit(),
            ]
        };
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut blocks: Vec<[u8; 64]> = (0..=255u8)
            .map(|b| std::array::from_fn(|i| b.wrapping_add(i as u8 * 4)))
            .collect();
        blocks.extend((0..2000).map(|_| {
            std::array::from_fn(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
        }));
        for block in &blocks {
            let expected: [u64; 4] = std::array::from_fn(|k| {
                block
                    .iter()
                    .enumerate()
                    .fold(0, |m, (i, &b)| m | u64::from(facts(b)[k]) << i)
            });
            assert_eq!(block_masks(block), expected, "{block:?}");
            assert_eq!(portable_block_masks(block), expected, "{block:?}");
            // Masks::new (AVX2 where the CPU has it), also on a short tail.
            let whole = Masks::new(block);
            let got: [u64; 4] = std::array::from_fn(|k| whole.all[k]);
            assert_eq!(got, expected, "{block:?}");
            let short = Masks::new(&block[..37]);
            let got: [u64; 4] = std::array::from_fn(|k| short.all[k]);
            let low = (1u64 << 37) - 1;
            assert_eq!(got, expected.map(|m| m & low), "{block:?}");
        }
    }

    #[test]
    fn the_mask_walk_finds_what_the_byte_walk_finds() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Runs of every kind and length: words, digit groups, IBAN-like
        // capitals, hex pairs with delimiters, base64 with padding.
        let pieces: &[&[u8]] = &[
            b"a",
            b"ab",
            b"word",
            b"Word",
            b"0x",
            b"de",
            b"4111",
            b"1",
            b"DE89",
            b"K",
            b"3",
            b"-",
            b"_",
            b"=",
            b"==",
            b"+",
            b"/",
            b"%2",
            b" ",
            b":",
            b",",
            b"\\n",
            b"\"",
            b"\n",
            b"aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ",
            b"1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
            b"67:68:70:5f:61:62:63:64:65",
            b"0123456789abcdef0123",
            b"x=",
            b"ZZ",
            b"=6a",
            b"key=4F",
            // IBAN groups, mixed runs, `0x` pairs, Base58 of each length
            // class (valid characters or not, with or without lower case).
            b"GB82",
            b"WEST",
            b"IDs",
            b"Xy",
            b"A1b2",
            b"0X4f",
            b"be",
            b"42",
            b"5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ",
            b"KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73sVHnoWn",
            b"3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
            b"1QWERTYUPASDFGHJKZXCVBNM23456",
            b"1BOAT0IlXXXXXXXXXXXXXXXXXXXXXXXXX",
        ];
        for round in 0..600 {
            let mut data = Vec::new();
            let target = (next() % 1200) as usize + round % 7;
            while data.len() < target {
                data.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let (mut want_hex, mut want_shapes, mut want) =
                (Vec::new(), ShapeScanner::default(), Vec::new());
            reference_candidates(&data, &mut want_hex, &mut want_shapes, &mut |c, _| {
                want.push(c.to_vec())
            });
            let (mut got_hex, mut got_shapes, mut got) =
                (Vec::new(), ShapeScanner::default(), Vec::new());
            let starts = Starts {
                hex: &mut got_hex,
                spaced: &mut Vec::new(),
                wrapped: &mut Vec::new(),
                codes: &mut Vec::new(),
                joins: &mut Vec::new(),
                groups: &mut Vec::new(),
                reshaped: &mut Vec::new(),
            };
            for_each_candidate(&data, starts, Some(&mut got_shapes), |c, facts| {
                assert!(facts.is_none_or(|f| f == Facts::of(c)));
                got.push(c.to_vec())
            });
            let text = String::from_utf8_lossy(&data);
            assert_eq!(got, want, "{text}");
            assert_eq!(got_hex, want_hex, "{text}");
            let mut got_spans = got_shapes.finish(&data);
            let mut want_spans = want_shapes.finish(&data);
            // Same spans; a chain may be closed a run later, never elsewhere.
            got_spans.sort_by_key(|(shape, span)| (format!("{shape:?}"), span.start, span.end));
            want_spans.sort_by_key(|(shape, span)| (format!("{shape:?}"), span.start, span.end));
            assert_eq!(got_spans, want_spans, "{text}");
        }
    }

    fn layers(data: &str) -> Vec<String> {
        decode_layers(data.as_bytes(), &mut Budget::per_request())
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .collect()
    }

    fn found(data: &str) -> bool {
        layers(data).iter().any(|l| l.contains(TEXT))
    }

    #[test]
    fn single_encodings_are_unwrapped() {
        let b64 = B64.encode(TEXT);
        let hex = hex::encode(TEXT);
        for data in [
            format!("{{\"d\":\"{b64}\"}}"),
            format!("x={}", URL_SAFE_NO_PAD.encode(TEXT)),
            format!("/collect/{hex}"),
            format!("id=0x{}", hex::encode_upper(TEXT)),
            format!("q={}", super::super::base32_no_pad(TEXT.as_bytes())),
            format!(
                "q={}",
                super::super::base32_no_pad(TEXT.as_bytes()).to_ascii_lowercase()
            ),
            format!("v={}", utf8_escape(TEXT)),
        ] {
            assert!(found(&data), "{data}");
        }
    }

    fn utf8_escape(text: &str) -> String {
        text.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    #[test]
    fn nested_encodings_are_unwrapped() {
        let twice = B64.encode(B64.encode(TEXT));
        let hex_of_b64 = hex::encode(B64.encode(TEXT));
        let b64_of_json = B64.encode(format!("{{\"token\": \"{TEXT}\"}}"));
        let double_percent = utf8_escape(TEXT).replace('%', "%25");
        let triple_percent = double_percent.replace('%', "%25");
        for data in [
            twice,
            hex_of_b64,
            b64_of_json,
            double_percent,
            triple_percent,
        ] {
            assert!(found(&data), "{data}");
        }
    }

    #[test]
    fn delimited_hex_and_escapes_are_unwrapped() {
        let bytes = TEXT.as_bytes();
        let colons = bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>();
        for data in [
            colons.join(":"),
            colons.join(" "),
            colons.join("-"),
            colons
                .iter()
                .map(|c| format!("0x{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            colons.iter().map(|c| format!("\\x{c}")).collect(),
            colons.iter().map(|c| format!("\\u00{c}")).collect(),
            colons.join(";"),
            colons.join("."),
            colons.join("|"),
            colons.join("\t"),
            colons.join("; "),
        ] {
            assert!(found(&data), "{data}");
        }
        assert!(found(&B64.encode(TEXT).replace('/', "\\/")));
        // Given as a value: the first pair is glued to `key=`.
        for separator in [":", " ", ","] {
            for key in ["d", "data", "a_much_longer_key_name"] {
                let data = format!("{key}={}", colons.join(separator));
                assert!(found(&data), "{data}");
            }
        }
    }

    /// `text` as a JSON string literal's contents (backslashes doubled).
    fn json_escaped(text: &str) -> String {
        text.replace('\\', "\\\\")
    }

    #[test]
    fn escapes_of_every_kind_are_undone_also_inside_json_strings() {
        let bytes = TEXT.as_bytes();
        let each = |f: &dyn Fn(u8) -> String| bytes.iter().map(|&b| f(b)).collect::<String>();
        let spellings = [
            each(&|b| format!("\\{b:o}")),
            each(&|b| format!("\\{b:03o}")),
            each(&|b| format!("&#{b};")),
            each(&|b| format!("&#x{b:X};")),
            each(&|b| format!("&#{b}")),
            each(&|b| format!("\\x{b:02x}")),
            each(&|b| format!("\\u{{{b:x}}}")),
            each(&|b| format!("\\u{{{b:06X}}}")),
            each(&|b| format!("\\U{:08x}", b)),
            each(&|b| format!("%u{:04X}", b)),
            each(&|b| format!("%u{:04x}", b)),
            // JSON's own escapes of full-width forms (`ensure_ascii`).
            each(&|b| format!("\\u{:04x}", u32::from(b) + 0xFEE0)),
            TEXT.chars()
                .flat_map(|c| [c.to_string(), "\\u200b".into()])
                .collect(),
            // Full-width forms; zero-width characters between the letters.
            TEXT.chars()
                .map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap())
                .collect(),
            TEXT.chars().flat_map(|c| [c, '\u{200b}']).collect(),
            TEXT.chars().flat_map(|c| [c, '\u{feff}']).collect(),
            TEXT.chars().flat_map(|c| [c, '\u{00ad}']).collect(),
            TEXT.chars()
                .flat_map(|c| [c, '\u{200e}', '\u{202c}'])
                .collect(),
            TEXT.chars().flat_map(|c| [c, '\u{2063}']).collect(),
            TEXT.chars()
                .flat_map(|c| [c, '\u{2066}', '\u{2069}'])
                .collect(),
            TEXT.chars().flat_map(|c| [c, '\u{034f}']).collect(),
            TEXT.chars().flat_map(|c| [c, '\u{180e}']).collect(),
            // One invisible character is enough to break a keyword.
            TEXT.replacen("ghp", "gh\u{00ad}p", 1),
            TEXT.replacen("ghp", "g\u{2062}hp", 1),
            // A few letters only, enough to break the keyword.
            TEXT.replacen("ghp", "g&#104;p", 1),
            TEXT.replacen("ghp", "\\147hp", 1),
        ];
        for spelling in spellings {
            assert!(found(&spelling), "{spelling}");
            assert!(found(&json_escaped(&spelling)), "in JSON: {spelling}");
            assert!(
                found(&json_escaped(&json_escaped(&spelling))),
                "in JSON twice: {spelling}"
            );
        }
        // Look-alikes that are not escapes, and escapes of what cannot be in
        // a token (control characters), are left alone.
        for data in [
            "\\9999 &#; &#xZZ; \\8 \\ \\u{} \\u{1234567} \\u{67 %u67 %uZZZZ \\U0067",
            "printf(\"\\033[1;31m\\x00\\u0007&#0;\\01\"); path = \"C:\\\\01_src\"",
            "\\\\\\\\\\\\\\\\\\n",
            "\u{2019}quotes\u{201c} and \u{2014} dashes",
            "caf\u{e9} \u{a9} 2026\u{a0}text \u{2070}\u{2079} \u{1820}",
        ] {
            assert_eq!(unescape(data.as_bytes()), None, "{data}");
        }
    }

    #[test]
    fn string_literals_joined_with_plus_are_put_back_together() {
        let (a, b) = TEXT.split_at(9);
        let (b, c) = b.split_at(11);
        for data in [
            format!("const t = \"{a}\" + \"{b}\" + \"{c}\";"),
            format!("t = '{a}'+'{b}'+'{c}'"),
            format!("x=\"{a}\"+'{b}' + \"{c}\""),
            // Code inside a JSON string: the quotes are escaped.
            format!("{{\"code\": \"let t = \\\"{a}\\\" + \\\"{b}{c}\\\";\"}}"),
        ] {
            assert!(found(&data), "{data}");
        }
        for data in [
            "let total = a + b + \"units\" + c;",
            "x = \"a\" + 1",
            "1 + 2 + 3 = 6",
        ] {
            assert!(layers(data).is_empty(), "{data}: {:?}", layers(data));
        }
    }

    #[test]
    fn spelled_out_tokens_are_put_back_together_wherever_they_sit() {
        for separator in [
            " ", "-", ".", ",", "|", "_", "/", "\u{200b}", ", ", " - ", "  ", "\",\"", "', '",
            "\\n", "\\r\\n", "\\\\n", "\\t",
        ] {
            let spelled: String = TEXT
                .chars()
                .map(String::from)
                .collect::<Vec<_>>()
                .join(separator);
            // At every offset within a 64-byte block, in prose and in JSON.
            for pad in 0..70 {
                let data = format!("{}: {spelled} (spelled out)", "x".repeat(pad));
                assert!(found(&data), "{separator:?} at {pad}");
            }
            assert!(
                found(&format!("{{\"note\": \"{spelled}\"}}")),
                "{separator:?}"
            );
        }
        // After something else with another separator (`k=`, `1)`).
        for prefix in ["k=", "1)", "x:", "(a)"] {
            let data = format!(
                "{prefix}{}",
                TEXT.chars().map(String::from).collect::<Vec<_>>().join(" ")
            );
            assert!(found(&data), "{data}");
        }
        // Short spelled-out stretches, ordinary spaced text and lists of
        // digits are left alone.
        for data in [
            "{\"ratings\":[4,5,3,2,0,1,5,1,1,2,8,3,0,3,6,6]}",
            "4 0 1 2 8 8 8 8 8 8 8 8 1 8 8 1",
            "a b c d e f g",
            "x = a + b * c / d",
            "| 1 | 2 | 3 |",
            "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
        ] {
            assert!(layers(data).is_empty(), "{data}");
        }
    }

    #[test]
    fn characters_given_by_their_codes_are_put_back_together() {
        let codes: Vec<String> = TEXT.bytes().map(|b| b.to_string()).collect();
        for data in [
            format!("{{\"c\":[{}]}}", codes.join(",")),
            format!("String.fromCharCode({})", codes.join(", ")),
            format!("chr({})", codes.join(")+chr(")),
            format!("x {}", codes.join(" ")),
            format!("bytes([{}]).decode()", codes.join(", ")),
        ] {
            assert!(found(&data), "{data}");
        }
        // Numbers that are not character codes, or no letters among them.
        for data in [
            "[100, 200, 300, 400, 500, 600, 700, 800, 900, 100, 200, 300, 400, 500, 600, 700]",
            "[130, 140, 150, 160, 170, 180, 190, 200, 210, 220, 230, 240, 250, 130, 140, 150]",
        ] {
            assert!(layers(data).is_empty(), "{data}");
        }
    }

    #[test]
    fn hex_dumps_are_read_across_their_lines() {
        let text = format!("export TOKEN={TEXT}\n");
        let bytes = text.as_bytes();
        let mut xxd = String::new();
        let mut hexdump = String::new();
        let mut od = String::new();
        for (line, chunk) in bytes.chunks(16).enumerate() {
            let pairs: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let quads: Vec<String> = pairs.chunks(2).map(|q| q.concat()).collect();
            let shown: String = chunk
                .iter()
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
                .collect();
            xxd += &format!("{:08x}: {:<39}  {shown}\n", line * 16, quads.join(" "));
            // Two spaces after the eighth pair.
            let halves: Vec<String> = pairs.chunks(8).map(|h| h.join(" ")).collect();
            hexdump += &format!("{:08x}  {:<49} |{shown}|\n", line * 16, halves.join("  "));
            od += &format!(" {}\n", pairs.join(" "));
        }
        for dump in [&xxd, &hexdump, &od] {
            assert!(found(dump), "{dump}");
            let in_json = format!("{{\"out\":\"{}\"}}", dump.replace('\n', "\\n"));
            assert!(found(&in_json), "{in_json}");
        }
    }

    #[test]
    fn wrapped_lines_are_joined_where_a_token_crosses_them() {
        let text =
            format!("Here is the data you wanted from the workspace: {TEXT}\nend of data, bye");
        let wrap = |encoded: &str, width: usize, line_break: &str| {
            encoded
                .as_bytes()
                .chunks(width)
                .map(|line| String::from_utf8_lossy(line).into_owned())
                .collect::<Vec<_>>()
                .join(line_break)
        };
        let b64 = B64.encode(&text);
        let hex = hex::encode(&text);
        for line_break in ["\n", "\r\n", "\\n", "\\r\\n"] {
            for (encoded, width) in [(&b64, 76), (&b64, 64), (&b64, 20), (&hex, 60), (&hex, 32)] {
                let wrapped = wrap(encoded, width, line_break);
                for data in [wrapped.clone(), format!("{{\"note\":\"{wrapped}\"}}\n")] {
                    assert!(found(&data), "{data}");
                }
            }
        }
    }

    #[test]
    fn quoted_printable_utf16_and_compressed_text_are_unwrapped() {
        use std::io::Write as _;
        let bytes = TEXT.as_bytes();
        let quoted: String = bytes.iter().map(|b| format!("={b:02X}")).collect();
        let utf16: Vec<u8> = bytes.iter().flat_map(|&b| [b, 0]).collect();
        let utf16_be: Vec<u8> = bytes.iter().flat_map(|&b| [0, b]).collect();
        let compress = |mut encoder: Box<dyn std::io::Write>| {
            encoder
                .write_all(format!("export TOKEN={TEXT}\n").as_bytes())
                .unwrap();
        };
        let mut gzip = Vec::new();
        compress(Box::new(flate2::write::GzEncoder::new(
            &mut gzip,
            flate2::Compression::default(),
        )));
        let mut zlib = Vec::new();
        compress(Box::new(flate2::write::ZlibEncoder::new(
            &mut zlib,
            flate2::Compression::best(),
        )));
        for data in [
            quoted.clone(),
            format!("body={quoted}"),
            B64.encode(&utf16),
            B64.encode(&utf16_be),
            B64.encode(&gzip),
            URL_SAFE_NO_PAD.encode(&gzip),
            B64.encode(&zlib),
            B64.encode(B64.encode(&gzip)),
        ] {
            assert!(found(&data), "{data}");
        }
        // An archive of a file, plain and compressed (`tar czf - .env | base64`).
        let mut archive = vec![0u8; 512];
        archive[..4].copy_from_slice(b".env");
        archive[124..135].copy_from_slice(b"00000000052");
        archive[156] = b'0';
        archive[257..263].copy_from_slice(b"ustar\0");
        archive.extend_from_slice(format!("export TOKEN={TEXT}\n").as_bytes());
        archive.resize(512 * 4, 0);
        let mut tar_gz = Vec::new();
        {
            let mut encoder =
                flate2::write::GzEncoder::new(&mut tar_gz, flate2::Compression::default());
            encoder.write_all(&archive).unwrap();
        }
        for data in [B64.encode(&archive), B64.encode(&tar_gz)] {
            assert!(found(&data), "{data}");
        }
        // Cut short, a gzip stream still gives what it inflated so far.
        let cut = B64.encode(&gzip[..gzip.len() - 8]);
        assert!(found(&cut), "{cut}");
    }

    #[test]
    fn inflating_is_bounded_by_the_budget() {
        use std::io::Write as _;
        let mut gzip = Vec::new();
        {
            let mut encoder = flate2::write::GzEncoder::new(&mut gzip, flate2::Compression::best());
            encoder.write_all(&vec![b'a'; 4 * MAX_INFLATED]).unwrap();
        }
        let data = B64.encode(&gzip);
        let mut budget = Budget::new(1000);
        assert!(decode_layers(data.as_bytes(), &mut budget).is_empty());
        assert!(budget.exhausted());
        let mut budget = Budget::per_request();
        let layers = decode_layers(data.as_bytes(), &mut budget);
        assert_eq!(layers.iter().map(Vec::len).max(), Some(MAX_INFLATED));
    }

    #[test]
    fn binary_and_hashes_are_not_decoded() {
        // A git SHA, a sha256, base64 of random bytes: no layer comes out.
        assert!(layers("/objects/5b8a3a7765dfe001261dde915589e782f8c94d1e").is_empty());
        assert!(
            layers("sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQ9lJBuQRHBqgs9EFWXvVJD+ewSjIfhgWzPvnLb+FPfNNS1A==")
                .is_empty()
        );
        assert!(layers("just some ordinary words in a sentence").is_empty());
        // A hash at the end of a line is not the first line of wrapped hex.
        for line_break in ["\n", "\\n"] {
            let log =
                format!("commit 5b8a3a7765dfe001261dde915589e782f8c94d1e{line_break}Author: Dev");
            assert!(layers(&log).is_empty(), "{log}");
        }
    }

    #[test]
    fn depth_and_budget_are_bounded() {
        let mut nested = TEXT.to_owned();
        for _ in 0..(MAX_DEPTH + 2) {
            nested = B64.encode(nested);
        }
        assert!(!found(&nested), "deeper than MAX_DEPTH is not unwrapped");
        let mut budget = Budget::new(10);
        let _ = decode_layers(B64.encode(TEXT).as_bytes(), &mut budget);
        assert!(budget.exhausted());
    }

    #[test]
    fn base32_decodes_rfc_4648() {
        assert_eq!(base32_decode(b"MZXW6YTBOI").unwrap(), b"foobar");
        assert_eq!(base32_decode(b"mzxw6ytboi").unwrap(), b"foobar");
        assert_eq!(base32_decode(b"MZ1"), None);
    }
}
