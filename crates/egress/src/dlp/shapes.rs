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
    /// One run of 25 to 52 letters and digits starting with `1`, `3`, `5`,
    /// `K` or `L` (legacy Bitcoin addresses, WIF keys).
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
/// in order (every one by [`candidates`]; those with a digit or a capital by
/// the decoding pass, which walks the same bytes anyway), it yields the
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
    /// starts after every run fed before. Runs of lower-case letters only
    /// may be left out: they cannot start a candidate, and the chain they
    /// would close ends where it ends either way (the next run fed is not
    /// joined to it).
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
        if self.digit_chain.is_none()
            && self.iban_chain.is_none()
            && !all_digits
            && (!upper_or_digit || len < 4)
            && !((25..=52).contains(&len)
                && matches!(data[start], b'1' | b'3' | b'5' | b'K' | b'L'))
        {
            self.prev_end = Some(end);
            return;
        }
        let widen = |r: Range<usize>| r.start.saturating_sub(1)..(r.end + 1).min(data.len());
        let run = &data[start..end];
        if (25..=52).contains(&run.len()) && matches!(run[0], b'1' | b'3' | b'5' | b'K' | b'L') {
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

    /// The candidates, once every run was fed.
    pub fn finish(mut self, data: &[u8]) -> Vec<(Shape, Range<usize>)> {
        let widen = |r: Range<usize>| r.start.saturating_sub(1)..(r.end + 1).min(data.len());
        let end = self.prev_end.unwrap_or(0);
        flush_digits(&mut self.out, self.digit_chain, end, &widen);
        flush_iban(&mut self.out, self.iban_chain, end, &widen);
        self.out
    }
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

    #[test]
    fn ordinary_text_has_no_candidates() {
        assert!(shapes("The retry loop backs off; page 42 of 1000, id 123456.").is_empty());
        // A git SHA starting with 5 is a Base58 candidate; the checksum turns it down.
        assert!(shapes("commit 0b8a3a7765dfe001261dde915589e782f8c94d1e").is_empty());
    }
}
