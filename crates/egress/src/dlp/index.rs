//! The one case-insensitive automaton over the rules' keywords and the
//! bottle's secrets' forms, run over long data in several lanes at once.
//!
//! A DFA step is a table load that depends on the previous one, so a
//! single walk over the data runs at the speed of the load latency, not of
//! the CPU. Long data is therefore cut into [`LANES`] segments walked side by
//! side in one loop (independent loads overlap); each segment after the
//! first starts `longest pattern - 1` bytes early without reporting, which
//! puts its automaton in exactly the state a walk from the start of the data
//! would be in. Every match is reported once, in the order a single
//! overlapping search reports them (by end, then as the automaton lists
//! them).

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind, StartKind};

/// Segments walked side by side.
const LANES: usize = 4;

/// Shorter data is walked in one lane.
const MIN_LANE: usize = 1024;

/// A match: (pattern, start, end).
type Hit = (usize, usize, usize);

/// The compiled automaton.
pub struct Index {
    dfa: DFA,
    start: StateID,
    /// Bytes a lane starts early: the longest pattern less one.
    warmup: usize,
}

impl Index {
    /// Builds the automaton over `patterns` (ASCII case-insensitive).
    pub fn new(patterns: &[&[u8]]) -> Result<Self, String> {
        let dfa = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .prefilter(false)
            .build(patterns)
            .map_err(|e| e.to_string())?;
        let start = dfa.start_state(Anchored::No).map_err(|e| e.to_string())?;
        let warmup = dfa.max_pattern_len().saturating_sub(1);
        Ok(Self { dfa, start, warmup })
    }

    /// Calls `f(pattern, start, end)` for every (overlapping) match in
    /// `data`, by end position.
    pub fn for_each_match(&self, data: &[u8], mut f: impl FnMut(usize, usize, usize)) {
        let segment = data.len().div_ceil(LANES);
        if segment < MIN_LANE.max(self.warmup) {
            self.walk(self.start, data, 0, &mut f);
            return;
        }
        // Lane k reports the matches ending in its segment
        // data[k * segment..(k + 1) * segment] (the last one may be shorter).
        let bounds: [usize; LANES + 1] = std::array::from_fn(|k| (k * segment).min(data.len()));
        let mut states = [self.start; LANES];
        for k in 1..LANES {
            let from = bounds[k] - self.warmup;
            states[k] = self.walk(self.start, &data[from..bounds[k]], from, &mut |_, _, _| {});
        }
        let mut hits: [Vec<Hit>; LANES] = Default::default();
        // All lanes side by side for as long as the shortest (the last) one.
        let common = bounds[LANES] - bounds[LANES - 1];
        {
            let lane = |k: usize| &data[bounds[k]..bounds[k] + common];
            let (l0, l1, l2, l3) = (lane(0), lane(1), lane(2), lane(3));
            let [mut s0, mut s1, mut s2, mut s3] = states;
            let dfa = &self.dfa;
            let mut i = 0;
            while i < common {
                // The tight loop: four independent steps, one branch for
                // all four lanes, nothing stored; matches are rare.
                while i < common {
                    s0 = dfa.next_state(Anchored::No, s0, l0[i]);
                    s1 = dfa.next_state(Anchored::No, s1, l1[i]);
                    s2 = dfa.next_state(Anchored::No, s2, l2[i]);
                    s3 = dfa.next_state(Anchored::No, s3, l3[i]);
                    i += 1;
                    if dfa.is_special(s0)
                        | dfa.is_special(s1)
                        | dfa.is_special(s2)
                        | dfa.is_special(s3)
                    {
                        break;
                    }
                }
                for (k, sid) in [s0, s1, s2, s3].into_iter().enumerate() {
                    if dfa.is_special(sid) {
                        let lane_hits = &mut hits[k];
                        self.report(sid, bounds[k] + i, &mut |p, s, e| lane_hits.push((p, s, e)));
                    }
                }
            }
            states = [s0, s1, s2, s3];
        }
        for (k, lane_hits) in hits.iter_mut().enumerate() {
            let from = bounds[k] + common;
            self.walk(
                states[k],
                &data[from..bounds[k + 1]],
                from,
                &mut |p, s, e| {
                    lane_hits.push((p, s, e));
                },
            );
        }
        for (pattern, start, end) in hits.into_iter().flatten() {
            f(pattern, start, end);
        }
    }

    /// Walks `data` (at `offset` in the whole) from `sid`, reporting its
    /// matches; returns the state at the end.
    fn walk(
        &self,
        mut sid: StateID,
        data: &[u8],
        offset: usize,
        f: &mut impl FnMut(usize, usize, usize),
    ) -> StateID {
        for (i, &byte) in data.iter().enumerate() {
            sid = self.dfa.next_state(Anchored::No, sid, byte);
            if self.dfa.is_special(sid) {
                self.report(sid, offset + i + 1, f);
            }
        }
        sid
    }

    fn report(&self, sid: StateID, end: usize, f: &mut impl FnMut(usize, usize, usize)) {
        if !self.dfa.is_match(sid) {
            return;
        }
        for k in 0..self.dfa.match_len(sid) {
            let pattern = self.dfa.match_pattern(sid, k);
            f(pattern.as_usize(), end - self.dfa.pattern_len(pattern), end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::AhoCorasick;

    /// The lanes find exactly what one overlapping search finds, in order.
    #[test]
    fn lanes_match_a_single_overlapping_search() {
        let patterns: Vec<&[u8]> = vec![
            b"token",
            b"tok",
            b"ok",
            b"sk-",
            b"sk-ant-",
            b"abcabc",
            b"Q~",
            b"password",
        ];
        let index = Index::new(&patterns).unwrap();
        let reference = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&patterns)
            .unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"tokenTOKENsk-antabcQ~password ";
        for len in [0, 1, 5, 100, 4095, 4096, 4097, 4100, 10_000, 70_001] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            let expected: Vec<Hit> = reference
                .find_overlapping_iter(&data)
                .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
                .collect();
            let mut found = Vec::new();
            index.for_each_match(&data, |p, s, e| found.push((p, s, e)));
            assert_eq!(found, expected, "len {len}");
        }
    }
}
