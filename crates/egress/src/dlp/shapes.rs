//! Candidate spans for the rules no keyword can announce (card numbers,
//! IBANs, Base58 keys and addresses): one pass over the data finds runs of
//! letters and digits, chained by single spaces or hyphens, and hands the
//! few that have the right shape to the rule's regex and checksum. Running
//! those regexes over whole bodies would cost more than everything else DLP
//! does.

use std::ops::Range;

/// A shape a rule's candidates have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 13 to 19 digits, in groups separated by single spaces or hyphens.
    DigitGroups,
    /// Two capitals, two digits, then capitals and digits (grouped or not),
    /// 15 to 34 in all.
    Iban,
    /// One run of Base58 letters and digits, 26 to 35 long starting with `1`
    /// or `3` (legacy Bitcoin addresses), or 51 or 52 long starting with `5`,
    /// `K` or `L` (WIF keys): exactly what the rule's regex can match.
    Base58Run,
}

const DIGIT: u8 = 1;
const UPPER: u8 = 2;
const LOWER: u8 = 3;

/// 0 for bytes outside `[A-Za-z0-9]`.
const CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_uppercase() {
            UPPER
        } else if c.is_ascii_lowercase() {
            LOWER
        } else {
            0
        };
        b += 1;
    }
    table
};

/// The candidate spans of `data`, each widened by one byte either side so
/// the regex sees the boundaries.
pub fn candidates(data: &[u8]) -> Vec<(Shape, Range<usize>)> {
    let mut scanner = ShapeScanner::default();
    let mut i = 0;
    while i < data.len() {
        if CLASS[data[i] as usize] == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < data.len() && CLASS[data[i] as usize] != 0 {
            i += 1;
        }
        scanner.alnum_run(data, start, i);
    }
    scanner.finish(data)
}

/// The shape pass as a visitor: fed the maximal runs of letters and digits
/// in order (every one by [`candidates`]; by the decoding pass, which walks
/// the same bytes anyway, those without a lower-case letter, and the long
/// ones with one through [`ShapeScanner::mixed_run`]), it yields the
/// candidate spans at the end.
#[derive(Debug, Default)]
pub struct ShapeScanner {
    out: Vec<(Shape, Range<usize>)>,
    /// Open chains: (start, digits or characters so far).
    digit_chain: Option<(usize, usize)>,
    iban_chain: Option<(usize, usize)>,
    prev_end: Option<usize>,
}

impl ShapeScanner {
    /// Feeds `data[start..end]`, a maximal run of letters and digits that
    /// starts after every run fed before. Runs with a lower-case letter may
    /// be left out (if long enough to be Base58, fed to
    /// [`ShapeScanner::mixed_run`] instead): they cannot start or extend a
    /// chain, and the chain they would close ends where it ends either way
    /// (the next run fed is not joined to it).
    pub fn alnum_run(&mut self, data: &[u8], start: usize, end: usize) {
        let run = &data[start..end];
        let all_digits = run.iter().all(|&b| CLASS[b as usize] == DIGIT);
        let upper_or_digit = run
            .iter()
            .all(|&b| matches!(CLASS[b as usize], DIGIT | UPPER));
        self.classified_run(data, start, end, all_digits, upper_or_digit);
    }

    /// [`ShapeScanner::alnum_run`] with the run already classified: all
    /// digits, or capitals and digits only.
    #[inline]
    pub fn classified_run(
        &mut self,
        data: &[u8],
        start: usize,
        end: usize,
        all_digits: bool,
        upper_or_digit: bool,
    ) {
        // Most runs are words with nothing open: nothing to do unless the
        // run starts a chain (all digits; capitals and digits from an IBAN
        // head) or is a Base58 candidate.
        let len = end - start;
        let base58 = is_base58_candidate(&data[start..end]);
        if self.digit_chain.is_none()
            && self.iban_chain.is_none()
            && !all_digits
            && (!upper_or_digit || len < 4)
            && !base58
        {
            self.prev_end = Some(end);
            return;
        }
        let widen = |r: Range<usize>| r.start.saturating_sub(1)..(r.end + 1).min(data.len());
        let run = &data[start..end];
        if base58 {
            self.out.push((Shape::Base58Run, widen(start..end)));
        }
        // Joined to the previous run by one space or hyphen?
        let separator = self
            .prev_end
            .filter(|&p| start == p + 1)
            .map(|p| data[p])
            .filter(|b| matches!(b, b' ' | b'-'));
        let prev_end = self.prev_end.unwrap_or(0);
        self.digit_chain = match (all_digits, separator.is_some(), self.digit_chain) {
            (true, true, Some((s, n))) => Some((s, n + run.len())),
            (true, _, chain) => {
                flush_digits(&mut self.out, chain, prev_end, &widen);
                Some((start, run.len()))
            }
            (false, _, chain) => {
                flush_digits(&mut self.out, chain, prev_end, &widen);
                None
            }
        };
        let iban_head = run.len() >= 4
            && run[..2].iter().all(u8::is_ascii_uppercase)
            && run[2..4].iter().all(u8::is_ascii_digit);
        self.iban_chain = match (upper_or_digit, separator == Some(b' '), self.iban_chain) {
            (true, true, Some((s, n))) => Some((s, n + run.len())),
            (true, _, chain) => {
                flush_iban(&mut self.out, chain, prev_end, &widen);
                iban_head.then_some((start, run.len()))
            }
            (false, _, chain) => {
                flush_iban(&mut self.out, chain, prev_end, &widen);
                None
            }
        };
        self.prev_end = Some(end);
    }

    /// A maximal run of letters and digits with a lower-case letter, fed on
    /// the side instead of through [`ShapeScanner::classified_run`]: it
    /// becomes a Base58 candidate if it can be one, and leaves the chains
    /// alone (a mixed run only closes them, and the next run fed closes
    /// them at the same place).
    pub fn mixed_run(&mut self, data: &[u8], start: usize, end: usize) {
        if is_base58_candidate(&data[start..end]) {
            self.out.push((
                Shape::Base58Run,
                start.saturating_sub(1)..(end + 1).min(data.len()),
            ));
        }
    }

    /// The candidates, once every run was fed.
    pub fn finish(mut self, data: &[u8]) -> Vec<(Shape, Range<usize>)> {
        let widen = |r: Range<usize>| r.start.saturating_sub(1)..(r.end + 1).min(data.len());
        let end = self.prev_end.unwrap_or(0);
        flush_digits(&mut self.out, self.digit_chain, end, &widen);
        flush_iban(&mut self.out, self.iban_chain, end, &widen);
        self.out
    }
}

/// The shortest run [`Shape::Base58Run`] takes.
pub const SHORTEST_BASE58: usize = 26;

/// Whether a maximal run of letters and digits can be what the Base58 rule
/// matches: its regex takes a whole run (`\b` either side), 26 to 35
/// Base58 characters from `1` or `3`, 34 or 35 from another chain's or a
/// test network's version character, or 51 or 52 from `5`, `K`, `L` or `c`.
fn is_base58_candidate(run: &[u8]) -> bool {
    let length_fits = match run.first() {
        Some(b'1' | b'3') => (SHORTEST_BASE58..=35).contains(&run.len()),
        Some(b'L') => run.len() == 34 || (51..=52).contains(&run.len()),
        Some(b'M' | b'D' | b'T' | b'm' | b'n' | b'2') => (34..=35).contains(&run.len()),
        Some(b'5' | b'K' | b'c') => (51..=52).contains(&run.len()),
        _ => false,
    };
    length_fits && !run.iter().any(|b| matches!(b, b'0' | b'O' | b'I' | b'l'))
}

fn flush_digits(
    out: &mut Vec<(Shape, Range<usize>)>,
    chain: Option<(usize, usize)>,
    end: usize,
    widen: &impl Fn(Range<usize>) -> Range<usize>,
) {
    if let Some((start, digits)) = chain
        && (13..=19).contains(&digits)
    {
        out.push((Shape::DigitGroups, widen(start..end)));
    }
}

fn flush_iban(
    out: &mut Vec<(Shape, Range<usize>)>,
    chain: Option<(usize, usize)>,
    end: usize,
    widen: &impl Fn(Range<usize>) -> Range<usize>,
) {
    if let Some((start, len)) = chain
        && (15..=34).contains(&len)
    {
        out.push((Shape::Iban, widen(start..end)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(text: &str) -> Vec<(Shape, String)> {
        candidates(text.as_bytes())
            .into_iter()
            .map(|(s, r)| (s, text[r].to_owned()))
            .collect()
    }

    #[test]
    fn finds_each_shape() {
        assert_eq!(
            shapes("card 4111 1111 1111 1111."),
            vec![(Shape::DigitGroups, " 4111 1111 1111 1111.".to_owned())]
        );
        assert_eq!(
            shapes("x=4111-1111-1111-1111"),
            vec![(Shape::DigitGroups, "=4111-1111-1111-1111".to_owned())]
        );
        assert!(
            shapes("DE89 3704 0044 0532 0130 00")
                .contains(&(Shape::Iban, "DE89 3704 0044 0532 0130 00".to_owned()))
        );
        assert_eq!(
            shapes("to 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa!"),
            vec![(
                Shape::Base58Run,
                " 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa!".to_owned()
            )]
        );
    }

    /// Every run the Base58 rule's regex takes passes the candidate check
    /// (the check only saves the regex its misses).
    #[test]
    fn the_base58_check_never_turns_down_what_the_rule_matches() {
        let rule = crate::dlp::rules::BUILTIN_RULES
            .iter()
            .find(|r| r.shape == Some(Shape::Base58Run))
            .unwrap();
        let regex = regex::bytes::Regex::new(rule.regex).unwrap();
        let alphabet = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0OIl";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut matched = 0;
        for round in 0..20_000 {
            let len = 20 + round % 40;
            let mut run: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Mostly Base58 characters, now and then one that is not.
                    let pick = (state % 1000) as usize;
                    alphabet[if pick < 990 { pick % 58 } else { 58 + pick % 4 }]
                })
                .collect();
            run[0] = b"1356KLAz"[round % 8];
            let widened = [b" ", run.as_slice(), b" "].concat();
            if regex.is_match(&widened) {
                matched += 1;
                assert!(
                    is_base58_candidate(&run),
                    "{}",
                    String::from_utf8_lossy(&run)
                );
            }
        }
        assert!(matched > 500, "{matched}");
    }

    #[test]
    fn ordinary_text_has_no_candidates() {
        assert!(shapes("The retry loop backs off; page 42 of 1000, id 123456.").is_empty());
        // A git SHA starting with 5 is a Base58 candidate; the checksum turns it down.
        assert!(shapes("commit 0b8a3a7765dfe001261dde915589e782f8c94d1e").is_empty());
    }
}
