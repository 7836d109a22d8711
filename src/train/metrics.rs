//! Validation metrics over the whole validation set. The training loop gathers scores, labels and keys
//! from every rank first and then calls these pure functions, so every rank (or rank 0 alone) reports
//! the same numbers. Slice scores are aggregated to series or patient scores by [`aggregate`].

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Area under the ROC curve by the Mann–Whitney statistic: the probability that a random positive
/// scores above a random negative, ties counted one half (average ranks). `None` when one class is
/// empty, the lengths differ, or a score is NaN.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if scores.len() != labels.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let ranks = average_ranks(scores);
    let positive_rank_sum: f64 = ranks.iter().zip(labels).filter(|(_, &l)| l).map(|(r, _)| r).sum();
    let (p, n) = (positives as f64, negatives as f64);
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// 1-based ranks of `values`, tied values sharing the mean of the ranks they span. No NaN expected.
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        // -0.0 and 0.0 are one score: compare by value, not by total order.
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0; // mean of start+1 ..= end
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// A point estimate with a percentile-bootstrap confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// Coverage of the interval, e.g. 0.95.
    pub level: f64,
    /// Bootstrap draws that gave a value (the interval's sample size).
    pub draws: u32,
    /// Draws on which the statistic was undefined (e.g. only one class drawn), left out.
    pub skipped: u32,
}

/// Percentile bootstrap over `units` (resample whole units, e.g. patients: `unit_of[i]` gives the unit of
/// item i; `None` makes every item its own unit). `resamples` draws from a ChaCha8 RNG seeded with `seed`;
/// each draw takes as many units as there are, with replacement, and hands `stat` the indices of their
/// items. Draws on which `stat` is `None` (one class only) are skipped and counted. Deterministic.
/// `None` when the statistic is undefined on the full set, no draw gave a value, `level` is not in
/// (0, 1), or `unit_of` has the wrong length.
pub fn bootstrap<F: Fn(&[usize]) -> Option<f64>>(
    n: usize,
    unit_of: Option<&[u32]>,
    resamples: u32,
    level: f64,
    seed: u64,
    stat: F,
) -> Option<Interval> {
    if !(level > 0.0 && level < 1.0) || unit_of.is_some_and(|u| u.len() != n) {
        return None;
    }
    let all: Vec<usize> = (0..n).collect();
    let estimate = stat(&all)?;
    let units = group_units(n, unit_of);
    if units.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(resamples as usize);
    let mut skipped = 0u32;
    let mut drawn = Vec::with_capacity(n);
    for _ in 0..resamples {
        drawn.clear();
        for _ in 0..units.len() {
            drawn.extend_from_slice(&units[rng.gen_range(0..units.len())]);
        }
        match stat(&drawn) {
            Some(v) if !v.is_nan() => values.push(v),
            _ => skipped += 1,
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some(Interval {
        estimate,
        low: quantile(&values, tail),
        high: quantile(&values, 1.0 - tail),
        level,
        draws: values.len() as u32,
        skipped,
    })
}

/// Item indices per unit, units in ascending id order (so the draw sequence does not depend on the
/// order in which items arrived from the ranks beyond their ids).
fn group_units(n: usize, unit_of: Option<&[u32]>) -> Vec<Vec<usize>> {
    match unit_of {
        None => (0..n).map(|i| vec![i]).collect(),
        Some(unit_of) => {
            let mut by_unit: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
            for (i, &u) in unit_of.iter().enumerate() {
                by_unit.entry(u).or_default().push(i);
            }
            by_unit.into_values().collect()
        }
    }
}

/// Linear-interpolated quantile of sorted, non-empty `values` (Hyndman–Fan type 7, numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f64;
    sorted[below] + fraction * (sorted[above] - sorted[below])
}

/// Bootstrap draws for [`auc_with_ci`] when the config does not say otherwise.
pub const DEFAULT_RESAMPLES: u32 = 1000;
/// Coverage of the AUC interval.
pub const AUC_CI_LEVEL: f64 = 0.95;

/// ROC AUC with a 95% percentile-bootstrap interval, resampling whole units (patients) when given.
pub fn auc_with_ci(
    scores: &[f64],
    labels: &[bool],
    unit_of: Option<&[u32]>,
    resamples: u32,
    seed: u64,
) -> Option<Interval> {
    if scores.len() != labels.len() {
        return None;
    }
    bootstrap(scores.len(), unit_of, resamples, AUC_CI_LEVEL, seed, |idx| {
        let drawn_scores: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        let drawn_labels: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
        roc_auc(&drawn_scores, &drawn_labels)
    })
}

/// Harrell's concordance index for risk scores (higher risk = earlier event). A pair (i, j) is
/// comparable when `time[i] < time[j]` and item i had the event; it is concordant when
/// `risk[i] > risk[j]`, and counts one half when the risks tie. `None` when no pair is comparable, the
/// lengths differ, or a risk or time is NaN. O(n log n).
pub fn c_index(risk: &[f64], time: &[f64], event: &[bool]) -> Option<f64> {
    let n = risk.len();
    if time.len() != n || event.len() != n || risk.iter().chain(time).any(|v| v.is_nan()) {
        return None;
    }
    // Dense ranks of the risks, so a Fenwick tree can count "lower risk" and "equal risk" quickly.
    let mut distinct: Vec<f64> = risk.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup_by(|a, b| a == b);
    let rank_of = |r: f64| distinct.partition_point(|&d| d < r);
    let mut by_time: Vec<usize> = (0..n).collect();
    by_time.sort_by(|&a, &b| time[b].total_cmp(&time[a])); // latest first
    let mut later = Fenwick::new(distinct.len());
    let (mut concordant, mut comparable) = (0.0f64, 0u64);
    let mut start = 0;
    while start < n {
        // One group of equal times: compare its events against strictly later items, then insert it.
        let mut end = start + 1;
        while end < n && time[by_time[end]] == time[by_time[start]] {
            end += 1;
        }
        for &i in by_time[start..end].iter().filter(|&&i| event[i]) {
            let r = rank_of(risk[i]);
            let lower = later.prefix(r);
            let tied = later.prefix(r + 1) - lower;
            concordant += lower as f64 + 0.5 * tied as f64;
            comparable += later.total;
        }
        for &i in &by_time[start..end] {
            later.add(rank_of(risk[i]));
        }
        start = end;
    }
    (comparable > 0).then(|| concordant / comparable as f64)
}

/// Counts per rank position; `prefix(k)` = items with rank < k.
struct Fenwick {
    tree: Vec<u64>,
    total: u64,
}

impl Fenwick {
    fn new(len: usize) -> Fenwick {
        Fenwick {
            tree: vec![0; len + 1],
            total: 0,
        }
    }

    fn add(&mut self, rank: usize) {
        self.total += 1;
        let mut k = rank + 1;
        while k < self.tree.len() {
            self.tree[k] += 1;
            k += k & k.wrapping_neg();
        }
    }

    fn prefix(&self, rank: usize) -> u64 {
        let (mut k, mut sum) = (rank, 0);
        while k > 0 {
            sum += self.tree[k];
            k -= k & k.wrapping_neg();
        }
        sum
    }
}

/// Mean absolute error. `None` when empty or the lengths differ.
pub fn mae(pred: &[f64], target: &[f64]) -> Option<f64> {
    if pred.is_empty() || pred.len() != target.len() {
        return None;
    }
    Some(pred.iter().zip(target).map(|(p, t)| (p - t).abs()).sum::<f64>() / pred.len() as f64)
}

/// Average ranks (1-based; ties get the mean of the ranks they span), as scipy's `rankdata`.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Spearman's rank correlation: Pearson's correlation of the average ranks. `None` when fewer than
/// two pairs, the lengths differ, or either side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 2 || a.len() != b.len() {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// Fraction of items whose prediction (`score >= threshold`) matches the label. `None` when empty or
/// the lengths differ.
pub fn accuracy(scores: &[f64], labels: &[bool], threshold: f64) -> Option<f64> {
    if scores.is_empty() || scores.len() != labels.len() {
        return None;
    }
    let c = confusion(scores, labels, threshold);
    Some((c.tp + c.tn) as f64 / scores.len() as f64)
}

/// Confusion counts at one threshold (`score >= threshold` predicts positive; NaN predicts negative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    /// True-positive rate, tp / (tp + fn); `None` without positives.
    pub fn sensitivity(&self) -> Option<f64> {
        let positives = self.tp + self.fn_;
        (positives > 0).then(|| self.tp as f64 / positives as f64)
    }

    /// True-negative rate, tn / (tn + fp); `None` without negatives.
    pub fn specificity(&self) -> Option<f64> {
        let negatives = self.tn + self.fp;
        (negatives > 0).then(|| self.tn as f64 / negatives as f64)
    }
}

/// Confusion counts over the pairs of `scores` and `labels` (extra items of the longer slice ignored).
pub fn confusion(scores: &[f64], labels: &[bool], threshold: f64) -> Confusion {
    let mut c = Confusion::default();
    for (&s, &l) in scores.iter().zip(labels) {
        match (s >= threshold, l) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, false) => c.tn += 1,
            (false, true) => c.fn_ += 1,
        }
    }
    c
}

use crate::settings::Aggregate;

/// One aggregated group (a series or a patient).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Group {
    pub key: u64,
    pub score: f64,
    /// Any item positive; `None` when no labels were given.
    pub label: Option<bool>,
    /// Items in the group.
    pub count: u32,
}

/// Groups items by key (any order), scores each group by `how`, labels it positive when any item is
/// positive (labels optional), and returns the groups sorted by key. A NaN item score makes its group
/// score NaN. Panics when the slices differ in length (a caller bug, not user input).
pub fn aggregate(keys: &[u64], scores: &[f64], labels: Option<&[bool]>, how: Aggregate) -> Vec<Group> {
    assert_eq!(
        keys.len(),
        scores.len(),
        "aggregate: keys and scores differ in length"
    );
    if let Some(labels) = labels {
        assert_eq!(
            keys.len(),
            labels.len(),
            "aggregate: keys and labels differ in length"
        );
    }
    let mut members: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, &k) in keys.iter().enumerate() {
        members.entry(k).or_default().push(i);
    }
    members
        .into_iter()
        .map(|(key, items)| {
            let group_scores: Vec<f64> = items.iter().map(|&i| scores[i]).collect();
            Group {
                key,
                score: aggregate_scores(group_scores, how),
                label: labels.map(|l| items.iter().any(|&i| l[i])),
                count: items.len() as u32,
            }
        })
        .collect()
}

fn aggregate_scores(mut scores: Vec<f64>, how: Aggregate) -> f64 {
    if scores.iter().any(|s| s.is_nan()) {
        return f64::NAN;
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    match how {
        Aggregate::Max => scores.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregate::Mean => mean(&scores),
        Aggregate::TopK(k) => {
            scores.sort_by(|a, b| b.total_cmp(a)); // no NaN here
            let k = (k.max(1) as usize).min(scores.len());
            mean(&scores[..k])
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    /// O(n²) reference: fraction of (positive, negative) pairs ordered correctly, ties one half.
    fn pairwise_auc(scores: &[f64], labels: &[bool]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &li) in labels.iter().enumerate() {
            for (j, &lj) in labels.iter().enumerate() {
                if li && !lj {
                    pairs += 1.0;
                    wins += match scores[i].partial_cmp(&scores[j]).unwrap() {
                        Ordering::Greater => 1.0,
                        Ordering::Equal => 0.5,
                        Ordering::Less => 0.0,
                    };
                }
            }
        }
        wins / pairs
    }

    /// O(n²) reference straight from Harrell's definition.
    fn pairwise_c_index(risk: &[f64], time: &[f64], event: &[bool]) -> Option<f64> {
        let (mut concordant, mut comparable) = (0.0, 0.0);
        for i in 0..risk.len() {
            for j in 0..risk.len() {
                if event[i] && time[i] < time[j] {
                    comparable += 1.0;
                    if risk[i] > risk[j] {
                        concordant += 1.0;
                    } else if risk[i] == risk[j] {
                        concordant += 0.5;
                    }
                }
            }
        }
        (comparable > 0.0).then(|| concordant / comparable)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_closed_forms() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(roc_auc(&[0.5; 4], &labels), Some(0.5));
        // Positives {0.4, 0.6, 0.6}, negatives {0.2, 0.6}: 0.4 beats 0.2 and loses to 0.6 (1); each 0.6
        // beats 0.2 and ties 0.6 (1.5 each): 4 of 6 pairs.
        let scores = [0.4, 0.6, 0.6, 0.2, 0.6];
        let labels = [true, true, true, false, false];
        assert!(close(roc_auc(&scores, &labels).unwrap(), 4.0 / 6.0));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(roc_auc(&[0.1], &[true, false]), None);
        assert_eq!(roc_auc(&[f64::NAN, 0.2], &[true, false]), None);
    }

    #[test]
    fn auc_matches_pairwise_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for trial in 0..50 {
            let n = 2 + trial * 3;
            // Coarse scores so that ties are frequent.
            let scores: Vec<f64> = (0..n).map(|_| (rng.gen_range(0..10) as f64) / 10.0).collect();
            let mut labels: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.3)).collect();
            labels[0] = true;
            labels[1] = false;
            let fast = roc_auc(&scores, &labels).unwrap();
            assert!(close(fast, pairwise_auc(&scores, &labels)), "trial {trial}");
        }
    }

    #[test]
    fn c_index_hand_case() {
        // times 1(event) 2(event) 3(censored) 4(event); risks 4 3 1 2.
        // Comparable pairs: (0,1) (0,2) (0,3) (1,2) (1,3), all concordant: 5/5. Item 2 is censored and
        // item 3's event has no later item.
        let risk = [4.0, 3.0, 1.0, 2.0];
        let time = [1.0, 2.0, 3.0, 4.0];
        let event = [true, true, false, true];
        assert_eq!(c_index(&risk, &time, &event), Some(1.0));
        // (0,1) 2>1 concordant, (0,2) 2<3 no, (0,3) tie 0.5, (1,2) 1<3 no, (1,3) 1<2 no: 1.5/5.
        let risk = [2.0, 1.0, 3.0, 2.0];
        assert!(close(c_index(&risk, &time, &event).unwrap(), 1.5 / 5.0));
        // Equal times are not comparable; no events => None.
        assert_eq!(c_index(&[1.0, 2.0], &[1.0, 1.0], &[true, true]), None);
        assert_eq!(c_index(&[1.0, 2.0], &[1.0, 2.0], &[false, false]), None);
    }

    #[test]
    fn c_index_matches_pairwise_reference_with_censoring() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for trial in 0..40 {
            let n = 3 + trial * 4;
            let risk: Vec<f64> = (0..n).map(|_| rng.gen_range(0..6) as f64).collect();
            let time: Vec<f64> = (0..n).map(|_| rng.gen_range(0..8) as f64).collect();
            let event: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.6)).collect();
            let fast = c_index(&risk, &time, &event);
            let slow = pairwise_c_index(&risk, &time, &event);
            match (fast, slow) {
                (Some(a), Some(b)) => assert!(close(a, b), "trial {trial}: {a} vs {b}"),
                (a, b) => assert_eq!(a, b, "trial {trial}"),
            }
        }
    }

    /// A separable-ish synthetic problem: positives score higher on average.
    fn synthetic(n: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
        let scores = labels
            .iter()
            .map(|&l| rng.gen::<f64>() + if l { 0.4 } else { 0.0 })
            .collect();
        (scores, labels)
    }

    #[test]
    fn bootstrap_is_deterministic_contains_estimate_and_narrows() {
        let (scores, labels) = synthetic(60, 1);
        let a = auc_with_ci(&scores, &labels, None, 500, 42).unwrap();
        let b = auc_with_ci(&scores, &labels, None, 500, 42).unwrap();
        assert_eq!(a, b);
        let c = auc_with_ci(&scores, &labels, None, 500, 43).unwrap();
        assert_ne!((a.low, a.high), (c.low, c.high));
        assert_eq!(a.estimate, roc_auc(&scores, &labels).unwrap());
        assert!(a.low <= a.estimate && a.estimate <= a.high, "{a:?}");
        assert_eq!(a.draws + a.skipped, 500);
        assert_eq!(a.level, AUC_CI_LEVEL);

        let (scores, labels) = synthetic(2400, 2);
        let wide = a.high - a.low;
        let big = auc_with_ci(&scores, &labels, None, 500, 42).unwrap();
        let narrow = big.high - big.low;
        assert!(big.low <= big.estimate && big.estimate <= big.high, "{big:?}");
        // Width scales like 1/sqrt(n): 40x the data, about 1/6 the width.
        assert!(narrow < wide / 3.0, "{narrow} vs {wide}");
    }

    #[test]
    fn bootstrap_resamples_whole_units_and_counts_skipped_draws() {
        // Two units: unit 7 holds only positives, unit 9 only negatives. A draw of whole units has one
        // class whenever it draws the same unit twice (half the draws); item-level draws rarely do.
        let scores = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3];
        let labels = [true, true, true, false, false, false];
        let units = [7, 7, 7, 9, 9, 9];
        let by_unit = auc_with_ci(&scores, &labels, Some(&units), 400, 5).unwrap();
        assert!(by_unit.skipped > 120 && by_unit.skipped < 280, "{by_unit:?}");
        assert_eq!(by_unit.draws + by_unit.skipped, 400);
        // Every kept draw holds both units in full: AUC 1 every time.
        assert_eq!((by_unit.low, by_unit.high), (1.0, 1.0));
        let by_item = auc_with_ci(&scores, &labels, None, 400, 5).unwrap();
        assert!(by_item.skipped < 20, "{by_item:?}");
        // Wrong unit length, bad level, undefined statistic.
        assert_eq!(bootstrap(3, Some(&[1, 2]), 10, 0.95, 0, |_| Some(1.0)), None);
        assert_eq!(bootstrap(3, None, 10, 1.0, 0, |_| Some(1.0)), None);
        assert_eq!(bootstrap(3, None, 10, 0.9, 0, |_| None), None);
    }

    #[test]
    fn bootstrap_percentiles_of_the_mean() {
        // The bootstrap distribution of a mean of 0/1 items: the interval straddles the estimate and
        // stays within [0, 1]; its width is close to the normal approximation 2*1.96*sqrt(p(1-p)/n).
        let values: Vec<f64> = (0..400).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect();
        let mean = |idx: &[usize]| Some(idx.iter().map(|&i| values[i]).sum::<f64>() / idx.len() as f64);
        let ci = bootstrap(values.len(), None, 2000, 0.95, 3, mean).unwrap();
        assert_eq!(ci.estimate, 0.25);
        let normal = 2.0 * 1.96 * (0.25f64 * 0.75 / 400.0).sqrt();
        assert!(
            ((ci.high - ci.low) / normal - 1.0).abs() < 0.15,
            "{ci:?} vs {normal}"
        );
    }

    #[test]
    fn simple_metrics() {
        assert_eq!(mae(&[1.0, 2.0, 4.0], &[1.5, 2.0, 1.0]), Some(3.5 / 3.0));
        assert_eq!(mae(&[], &[]), None);
        // scipy.stats.rankdata([3, 1, 4, 1, 5]) = [3, 1.5, 4, 1.5, 5].
        assert_eq!(ranks(&[3.0, 1.0, 4.0, 1.0, 5.0]), vec![3.0, 1.5, 4.0, 1.5, 5.0]);
        // scipy.stats.spearmanr([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) = 0.8207826816681233.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5.0, 6.0, 7.0, 8.0, 7.0]).unwrap();
        assert!((rho - 0.820_782_681_668_123_3).abs() < 1e-12, "{rho}");
        assert_eq!(spearman(&[1.0, 2.0], &[3.0, 3.0]), None);
        assert_eq!(mae(&[1.0], &[]), None);
        let scores = [0.9, 0.6, 0.4, 0.1, 0.5];
        let labels = [true, false, true, false, true];
        let c = confusion(&scores, &labels, 0.5);
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 1,
                tn: 1,
                fn_: 1
            }
        );
        assert_eq!(c.sensitivity(), Some(2.0 / 3.0));
        assert_eq!(c.specificity(), Some(0.5));
        assert_eq!(accuracy(&scores, &labels, 0.5), Some(0.6));
        assert_eq!(accuracy(&[], &[], 0.5), None);
        assert_eq!(Confusion::default().sensitivity(), None);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"tp":2,"fp":1,"tn":1,"fn":1}"#);
    }

    #[test]
    fn aggregate_max_mean_topk() {
        // Patient 20: slices 0.1 0.9 0.5 (one positive); patient 10: 0.3 0.2; patient 30: 0.7.
        let keys = [20, 10, 20, 30, 20, 10];
        let scores = [0.1, 0.3, 0.9, 0.7, 0.5, 0.2];
        let labels = [false, false, true, false, false, false];
        let max = aggregate(&keys, &scores, Some(&labels), Aggregate::Max);
        let keys_out: Vec<u64> = max.iter().map(|g| g.key).collect();
        assert_eq!(keys_out, [10, 20, 30]);
        assert_eq!(max.iter().map(|g| g.score).collect::<Vec<_>>(), [0.3, 0.9, 0.7]);
        assert_eq!(
            max.iter().map(|g| g.label).collect::<Vec<_>>(),
            [Some(false), Some(true), Some(false)]
        );
        assert_eq!(max.iter().map(|g| g.count).collect::<Vec<_>>(), [2, 3, 1]);
        let mean = aggregate(&keys, &scores, None, Aggregate::Mean);
        assert!(close(mean[0].score, 0.25) && close(mean[1].score, 0.5) && close(mean[2].score, 0.7));
        assert_eq!(mean[1].label, None);
        let top2 = aggregate(&keys, &scores, None, Aggregate::TopK(2));
        assert!(close(top2[0].score, 0.25) && close(top2[1].score, 0.7) && close(top2[2].score, 0.7));
        let top0 = aggregate(&keys, &scores, None, Aggregate::TopK(0));
        assert_eq!(top0[1].score, 0.9);
        let nan = aggregate(&[1, 1], &[0.2, f64::NAN], None, Aggregate::Max);
        assert!(nan[0].score.is_nan());
        assert!(aggregate(&[], &[], None, Aggregate::Max).is_empty());
    }

    #[test]
    fn aggregate_reads_from_toml() {
        #[derive(serde::Deserialize)]
        struct Cfg {
            a: Aggregate,
            b: Aggregate,
            c: Aggregate,
        }
        let cfg: Cfg = toml::from_str("a = \"max\"\nb = \"mean\"\nc = { topk = 3 }\n").unwrap();
        assert_eq!(
            (cfg.a, cfg.b, cfg.c),
            (Aggregate::Max, Aggregate::Mean, Aggregate::TopK(3))
        );
        assert!(toml::from_str::<Cfg>("a = \"median\"\nb = \"mean\"\nc = \"max\"\n").is_err());
    }
}
