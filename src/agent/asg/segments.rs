//! Overlapping ranges to disjoint segments, each with the value of the highest-priority range
//! covering it (an nftables interval map holds no overlapping keys). Adjacent segments with the
//! same value merge; uncovered points get nothing.

use std::collections::BTreeMap;

/// `ranges`: (start, end inclusive, priority, value); a lower priority wins. Returns (start, end,
/// value) in order, disjoint.
pub fn segment<V: Clone + Eq, P: Ord + Clone>(ranges: &[(u32, u32, P, V)]) -> Vec<(u32, u32, V)> {
    // Events at start (open) and end + 1 (close); u64 so that end = u32::MAX closes cleanly.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ranges.len() * 2);
    for (i, (s, e, _, _)) in ranges.iter().enumerate() {
        if s > e {
            continue;
        }
        events.push((*s as u64, true, i));
        events.push((*e as u64 + 1, false, i));
    }
    events.sort_unstable_by_key(|(at, open, i)| (*at, *open, *i));
    let mut active: BTreeMap<(P, usize), ()> = BTreeMap::new();
    let mut out: Vec<(u32, u32, V)> = Vec::new();
    let mut k = 0;
    while k < events.len() {
        let at = events[k].0;
        while k < events.len() && events[k].0 == at {
            let (_, open, i) = events[k];
            let key = (ranges[i].2.clone(), i);
            if open {
                active.insert(key, ());
            } else {
                active.remove(&key);
            }
            k += 1;
        }
        let Some(((_, winner), _)) = active.iter().next() else {
            continue;
        };
        let next = events.get(k).map(|e| e.0).unwrap_or(u32::MAX as u64 + 1);
        let (start, end) = (at as u32, (next - 1) as u32);
        let value = &ranges[*winner].3;
        match out.last_mut() {
            Some(last) if last.1 as u64 + 1 == at && &last.2 == value => last.1 = end,
            _ => out.push((start, end, value.clone())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn overlaps_split_and_the_best_priority_wins() {
        let got = segment(&[
            (10, 20, 1, "plain"),
            (15, 30, 0, "logged"),
            (40, 40, 1, "plain"),
            (41, 50, 1, "plain"),
            (0, u32::MAX, 5, "wide"),
        ]);
        assert_eq!(
            got,
            vec![
                (0, 9, "wide"),
                (10, 14, "plain"),
                (15, 30, "logged"),
                (31, 39, "wide"),
                (40, 50, "plain"),
                (51, u32::MAX, "wide"),
            ]
        );
        assert!(segment::<u8, u8>(&[]).is_empty());
    }

    proptest! {
        /// Every point gets exactly the value of the best range covering it (or none).
        #[test]
        fn every_point_gets_its_best_range(ranges in proptest::collection::vec((0u32..60, 0u32..60, 0u8..4), 0..12)) {
            let ranges: Vec<(u32, u32, u8, u8)> = ranges.into_iter().map(|(a, b, p)| (a.min(b), a.max(b), p, p)).collect();
            let segs = segment(&ranges);
            for w in segs.windows(2) {
                prop_assert!(w[0].1 < w[1].0);
            }
            for x in 0u32..64 {
                let best = ranges.iter().filter(|r| r.0 <= x && x <= r.1).map(|r| r.2).min();
                let got = segs.iter().find(|s| s.0 <= x && x <= s.1).map(|s| s.2);
                prop_assert_eq!(best, got, "point {}", x);
            }
        }
    }
}
