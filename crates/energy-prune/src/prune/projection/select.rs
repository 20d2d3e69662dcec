//! The selection algorithm of the weighted sparse projection: a greedy 0/1
//! knapsack whose cut is found in expected `O(n)` with two passes over the
//! weights.
//!
//! 1. A strided sample of the weights (read directly, `n^(2/3) / 2` positions
//!    up to 131 072) estimates the cut and a band of keys around it, wide enough
//!    to hold it with high probability ([`Sample`], `Scan::band`).
//! 2. The counting pass ([`super::kernels`]): per unit of 65 536 weights, the
//!    weights whose key lies above the band are counted per class, those inside
//!    listed; the pass also counts nonzeros and finds the largest magnitudes
//!    (finiteness, the single best weight, and a check of the key scale guessed
//!    from the sample). The cut is selected among the listed items
//!    ([`bucketed_select`]); if it lies outside the band, among all items.
//! 3. The keep pass zeroes what falls below the cut, settles exact ties in index
//!    order and sums the values before and after.
//!
//! Layers whose costs depend on rank first find their `buffered`-th largest
//! magnitude ([`Classifier`]): a threshold from a small sample, one vectorised
//! pass listing the magnitudes above it, a selection among those.
//!
//! Items are 8 bytes (`f32` key `w^2 / c` and a cost class); a reusable
//! [`ProjectionWorkspace`] keeps repeated selections from reallocating their
//! buffers. Per-weight costs depend on the weight's rank in its layer: the
//! `buffered` largest magnitudes cost `base`, the others `base + surcharge`
//! ([`LayerCost`]).

use crate::energy::LayerCost;
use crate::error::{Error, Result};

use super::kernels::{
    Ranks, abs_bits, bound_keep, bound_scan, largest_magnitude_bits, layer_stats, ranked_keep,
    ranked_scan, sum_sq,
};

#[derive(Debug, Clone, Copy, PartialEq)]
struct Item {
    key: f32,
    class: u32,
}

/// Reusable buffers for [`project_with_workspace`](super::project_with_workspace) and [`greedy_knapsack`].
#[derive(Debug, Clone, Default)]
pub struct ProjectionWorkspace {
    cut: CutBuffers,
    mags: Vec<f32>,
    class_cost: Vec<f64>,
    params: Vec<f32>,
}

/// The buffers of the cut search.
#[derive(Debug, Clone, Default)]
struct CutBuffers {
    /// Items: all of them if the bracket missed the cut.
    items: Vec<Item>,
    /// The items of the bucket holding the cut (see [`bucketed_select`]).
    chosen: Vec<Item>,
    /// `(key, cost)` of the sampled weights.
    sample: Vec<(f32, f64)>,
    /// The count table of [`bucketed_select`].
    buckets: Vec<u32>,
}

impl ProjectionWorkspace {
    /// An empty workspace (buffers grow on first use).
    pub fn new() -> Self {
        Self::default()
    }
}

/// Assigns `base` or `base + surcharge` to the weights of one layer, in index
/// order: the `buffered` largest magnitudes (ties by index) get `base`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Classifier {
    /// The magnitude of the `buffered`-th largest weight.
    pub(super) thr: f32,
    /// Weights at `thr` still charged `base` (in index order).
    pub(super) ties_left: usize,
    /// Every weight costs `base` (no surcharge, or everything buffered).
    pub(super) all_base: bool,
    /// The class of a weight follows from its magnitude alone (every weight at
    /// `thr` is charged `base`, or none is), so the layer can be cut into pieces
    /// classified independently.
    pub(super) by_magnitude: bool,
}

impl Classifier {
    pub(super) fn new(w: &[f32], cost: &LayerCost, mags: &mut Vec<f32>) -> Self {
        if cost.surcharge == 0.0 || cost.buffered >= w.len() {
            return Self {
                thr: 0.0,
                ties_left: 0,
                all_base: true,
                by_magnitude: true,
            };
        }
        if cost.buffered == 0 {
            return Self {
                thr: f32::INFINITY,
                ties_left: 0,
                all_base: false,
                by_magnitude: true,
            };
        }
        let k = cost.buffered;
        let (thr, greater, at) = match top_k_by_filter(w, k, mags) {
            Some(found) => found,
            None => {
                mags.clear();
                mags.extend(w.iter().map(|v| v.abs()));
                let (_, thr, _) = mags.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                let thr = *thr;
                let (greater, at) = w.iter().fold((0, 0), |(g, e), v| {
                    let a = v.abs();
                    (g + usize::from(a > thr), e + usize::from(a == thr))
                });
                (thr, greater, at)
            }
        };
        let ties_left = cost.buffered - greater;
        Self {
            thr,
            ties_left,
            all_base: false,
            by_magnitude: ties_left >= at,
        }
    }

    /// The integer form of the classes, for the kernels.
    pub(super) fn ranks(&self) -> Ranks {
        if self.all_base {
            Ranks { thr: -1, ties: 0 }
        } else {
            // An infinite threshold (nothing buffered) compares above every finite |w|.
            Ranks {
                thr: (self.thr.to_bits() & 0x7fff_ffff) as i32,
                ties: self.ties_left as u64,
            }
        }
    }

    /// Whether the next weight (in index order) is charged the surcharge.
    #[inline]
    pub(super) fn surcharged(&mut self, v: f32) -> bool {
        if self.all_base {
            return false;
        }
        let m = v.abs();
        if m > self.thr {
            false
        } else if m == self.thr && self.ties_left > 0 {
            self.ties_left -= 1;
            false
        } else {
            true
        }
    }
}

/// The `k`-th largest magnitude of `w` (finite, `0 < k < w.len()`), how many
/// magnitudes exceed it and how many equal it, for `k` small next to `w.len()`: a threshold estimated
/// from a strided sample so that about `2k` magnitudes reach it, one vectorised
/// pass collecting those into `mags`, and a selection among them. `None` (the caller
/// selects among all) when `k` is not small or the sample's threshold let fewer
/// than `k` through.
fn top_k_by_filter(w: &[f32], k: usize, mags: &mut Vec<f32>) -> Option<(f32, usize, usize)> {
    const SAMPLED: usize = 2048;
    let n = w.len();
    if n < 4 * SAMPLED || k > n / 8 {
        return None;
    }
    let desc = |a: &f32, b: &f32| b.total_cmp(a);
    mags.clear();
    mags.extend((0..SAMPLED).map(|i| w[i * n / SAMPLED].abs()));
    // Sample rank of about twice the expected share of the top `k`, plus slack.
    let rank = (2 * k * SAMPLED).div_ceil(n) + 8;
    if rank >= SAMPLED {
        return None;
    }
    let t = *mags.select_nth_unstable_by(rank, desc).1;
    if t <= 0.0 || t.is_nan() || u32::try_from(n).is_err() {
        return None;
    }
    // The positions of |w| >= t, by the bracket scan's kernel (bits in
    // (bits(t) - 1, MAX], nonzero).
    let mut at = Vec::with_capacity(4 * k);
    bound_scan(w, i32::MAX, abs_bits(t) - 1, &mut at);
    mags.clear();
    mags.extend(at.iter().map(|&i| w[i as usize].abs()));
    if mags.len() < k {
        return None;
    }
    let thr = *mags.select_nth_unstable_by(k - 1, desc).1;
    // Every magnitude at or above `thr` (>= t) was collected.
    let greater = mags.iter().filter(|a| **a > thr).count();
    let at = mags.iter().filter(|a| **a == thr).count();
    Some((thr, greater, at))
}

/// How the greedy's ordering key `w^2 / c` is represented in the 8-byte items.
///
/// Keys only need to order the weights, so any strictly increasing function of
/// `w^2 / c` computed the same way everywhere will do. [`Linear`] computes
/// `w * w * p` in `f32` with `p = 2^s / c` (`s = 0` unless the instance needs a
/// shift): fast, and exact enough whenever every key of a nonzero weight is a
/// normal `f32`. Instances whose keys span more than `f32` can hold (weights or
/// costs near the ends of their types) use [`Logarithmic`] keys
/// `2 ln|w| - ln c`, which are finite for every finite nonzero weight and positive
/// finite cost. [`KeyScale::choose`] picks per instance.
pub(super) trait KeyFn: Copy {
    /// The key of weight `w` in a class with parameter `p`.
    fn key(self, w: f32, p: f32) -> f32;
}

/// `w * w * p`, `p = 2^s / c`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Linear;

impl KeyFn for Linear {
    #[inline(always)]
    fn key(self, w: f32, p: f32) -> f32 {
        w * w * p
    }
}

/// `2 ln|w| + p`, `p = -ln c` (`-inf` for a zero weight).
#[derive(Debug, Clone, Copy)]
pub(super) struct Logarithmic;

impl KeyFn for Logarithmic {
    #[inline(always)]
    fn key(self, w: f32, p: f32) -> f32 {
        (2.0 * f64::from(w.abs()).ln() + f64::from(p)) as f32
    }
}

/// The key representation of one instance (see [`KeyFn`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum KeyScale {
    /// `w * w * 2^shift / c` in `f32`.
    Linear { shift: i32 },
    /// `2 ln|w| - ln c`.
    Logarithmic,
}

/// The linear scale puts the largest key at about `2^TOP`.
const TOP: i32 = 100;
/// ... and keeps the largest key of every affordable class above `2^-FLOOR`.
const FLOOR: i32 = 60;

impl KeyScale {
    /// The linear scale (no shift if that serves, else a power of two putting the
    /// largest key near `2^100`) when it represents every class well, else the
    /// logarithmic one.
    ///
    /// "Well": `w * w` does not overflow, the largest key stays below `2^120`, and
    /// in every affordable class the keys of weights within `2^30` of the largest
    /// are normal `f32`. Smaller weights may get a subnormal or zero key and then
    /// rank last, in index order; their value is below `2^-60` of the largest
    /// weight's, so the kept value changes by less than that (the budget is never
    /// affected: costs are summed in `f64` whatever the keys).
    pub(super) fn choose(max_abs: f32, class_cost: &[f64], capacity: f64) -> Self {
        let affordable = class_cost.iter().filter(|c| **c <= capacity);
        let (cmin, cmax) = affordable.fold((f64::INFINITY, 0.0f64), |(lo, hi), &c| {
            (lo.min(c), hi.max(c))
        });
        if max_abs == 0.0 || cmax == 0.0 {
            return Self::Linear { shift: 0 };
        }
        let wmax = f64::from(max_abs);
        let fits = |shift: i32| {
            let sc = 2f64.powi(shift);
            wmax <= 2f64.powi(62)
                && wmax >= 2f64.powi(-32)
                && sc / cmin <= 2f64.powi(126)
                && wmax * wmax * sc / cmin <= 2f64.powi(TOP + 20)
                && wmax * wmax * sc / cmax >= 2f64.powi(-FLOOR)
        };
        if fits(0) {
            return Self::Linear { shift: 0 };
        }
        let shift = (f64::from(TOP) - (wmax * wmax / cmin).log2()).round();
        if shift.is_finite() && shift.abs() < 1000.0 && fits(shift as i32) {
            Self::Linear {
                shift: shift as i32,
            }
        } else {
            Self::Logarithmic
        }
    }

    /// The key parameter of a class of cost `c` (0 for unaffordable classes, whose
    /// keys are never used).
    pub(super) fn param(self, c: f64, capacity: f64) -> f32 {
        if c > capacity {
            return 0.0;
        }
        match self {
            Self::Linear { shift } => (2f64.powi(shift) / c) as f32,
            Self::Logarithmic => (-c.ln()) as f32,
        }
    }

    /// The key of weight `w` under class parameter `p` (dispatching; the hot loops
    /// are monomorphised on [`KeyFn`] instead).
    pub(super) fn key(self, w: f32, p: f32) -> f32 {
        match self {
            Self::Linear { .. } => Linear.key(w, p),
            Self::Logarithmic => Logarithmic.key(w, p),
        }
    }
}

/// What one pass over the weights learns: their value and largest magnitude.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WeightStats {
    /// Sum of `w^2` over all weights.
    pub(super) total_value: f64,
    /// Largest `|w|`.
    pub(super) max_abs: f32,
}

impl WeightStats {
    /// One pass over every layer: value and largest magnitude, which doubles as
    /// the finiteness check (f32 squares cannot overflow f64).
    ///
    /// # Errors
    /// [`Error::NonFinite`] naming the layer and index of a NaN or infinite weight.
    pub(super) fn of<W: AsRef<[f32]> + Sync>(weights: &[W], threads: usize) -> Result<Self> {
        // Fixed pieces of `UNIT` weights summed in order: the same figures whatever
        // the number of threads.
        let pieces: Vec<(usize, usize, usize)> = weights
            .iter()
            .enumerate()
            .flat_map(|(l, w)| {
                let n = w.as_ref().len();
                (0..n.div_ceil(UNIT)).map(move |i| (l, i * UNIT, ((i + 1) * UNIT).min(n)))
            })
            .collect();
        let parts = par_map(
            pieces.clone(),
            threads,
            |&(_, a, b)| b - a,
            |(l, a, b)| layer_stats(&weights[l].as_ref()[a..b]),
        );
        let mut s = Self::default();
        for (&(l, _, _), (v, mx)) in pieces.iter().zip(parts) {
            if !v.is_finite() {
                crate::error::check_finite(&format!("weights of layer {l}"), weights[l].as_ref())?;
            }
            s.total_value += v;
            s.max_abs = s.max_abs.max(mx);
        }
        Ok(s)
    }
}

/// The weights at every `stride`-th global position, read directly (a few
/// hundred kilobytes of a model's weights): what the cut is first estimated
/// from, before the one pass that counts.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// `(layer, value)` of the sampled weights.
    picks: Vec<(u32, f32)>,
    /// Weight positions each pick stands for.
    stride: usize,
    /// Largest finite sampled `|w|`: a guess of the largest magnitude, checked
    /// against the exact one that the scan finds.
    max_abs: f32,
}

impl Sample {
    /// [`sample_size`] positions of `weights`, read on up to `threads` threads
    /// (the reads are cache misses: latency, not bandwidth).
    fn of<W: AsRef<[f32]> + Sync>(weights: &[W], threads: usize) -> Self {
        let total: usize = weights.iter().map(|w| w.as_ref().len()).sum();
        let stride = (total / sample_size(total)).max(1);
        // Pieces of `UNIT` positions with their global offsets.
        let mut pieces = Vec::new();
        let mut at = 0usize;
        for (l, w) in weights.iter().enumerate() {
            let n = w.as_ref().len();
            pieces
                .extend((0..n.div_ceil(UNIT)).map(|i| (l, i * UNIT, ((i + 1) * UNIT).min(n), at)));
            at += n;
        }
        let parts = par_map(
            pieces,
            threads,
            |p| p.2 - p.1,
            |(l, a, b, at)| {
                let first = (stride - (at + a) % stride) % stride;
                let w = &weights[l].as_ref()[a..b];
                w.iter()
                    .skip(first)
                    .step_by(stride)
                    .map(|&v| (l as u32, v))
                    .collect::<Vec<_>>()
            },
        );
        let picks: Vec<(u32, f32)> = parts.concat();
        let max_abs = picks
            .iter()
            .filter(|(_, v)| v.is_finite())
            .fold(0.0f32, |m, (_, v)| m.max(v.abs()));
        Self {
            picks,
            stride,
            max_abs,
        }
    }
}

/// The cost charged for the nonzero weights of each layer when they are ranked
/// among themselves (the first `buffered` cost `base`, the others
/// `base + surcharge`), as per-class counts and class costs (two classes a layer).
/// Summed with [`charged_of_classes`] this is the relaxed energy above the
/// constant: the definition of "fits" under which the projection is the identity.
pub(super) fn classes_of_nonzeros(costs: &[LayerCost], nonzeros: &[u64]) -> (Vec<u64>, Vec<f64>) {
    let mut counts = Vec::with_capacity(2 * costs.len());
    let mut class_cost = Vec::with_capacity(2 * costs.len());
    for (c, &n) in costs.iter().zip(nonzeros) {
        let base = if c.surcharge == 0.0 {
            n
        } else {
            n.min(c.buffered as u64)
        };
        counts.extend([base, n - base]);
        class_cost.extend([c.base, c.base + c.surcharge]);
    }
    (counts, class_cost)
}

/// Items sampled to bracket the cut before the full pass.
const SAMPLE: usize = 131_072;

/// Sample positions for `total` weights: `total^(2/3) / 2`, between 4096 and
/// [`SAMPLE`]. A sample of `S` costs about `S` reads that miss the cache, and the
/// band it leaves (`2 sqrt(S)` sample positions either side of the cut, each
/// standing for `total / S` weights) holds about `4 total / sqrt(S)` items to list
/// and select among: the sum of the two is least near `S ~ total^(2/3) / 2`.
fn sample_size(total: usize) -> usize {
    ((total as f64).powf(2.0 / 3.0) / 2.0).clamp(4096.0, SAMPLE as f64) as usize
}
/// Weights per unit of work. A layer with rank-dependent costs whose weights at the
/// threshold are not all charged alike is one unit (their classes follow index
/// order); see [`Classifier::by_magnitude`].
const UNIT: usize = 1 << 16;
/// Weights per term of the kept value's sum (`UNIT` is a multiple).
const CHUNK: usize = 4096;

/// The position, in descending key order, of the first `(key, cost)` whose
/// running cost exceeds `budget` (`s.len()` if none), found by repeated
/// selection in expected `O(n)`; `s` is left partitioned around it (keys of
/// `s[..pos]` at least that of `s[pos]`, keys of `s[pos + 1..]` at most).
fn cost_position(s: &mut [(f32, f64)], budget: f64) -> usize {
    let desc = |a: &(f32, f64), b: &(f32, f64)| b.0.total_cmp(&a.0);
    // `s[..lo]` (cost `cum <= budget`) lies before the answer, `s[hi..]` after it.
    let (mut lo, mut hi, mut cum) = (0usize, s.len(), 0.0f64);
    while lo < hi {
        let part = &mut s[lo..hi];
        let m = part.len() / 2;
        part.select_nth_unstable_by(m, desc);
        let below: f64 = part[..m].iter().map(|x| x.1).sum();
        if cum + below > budget {
            hi = lo + m;
        } else if cum + below + part[m].1 > budget {
            return lo + m;
        } else {
            cum += below + part[m].1;
            lo += m + 1;
        }
    }
    lo
}

/// The most valuable affordable single weight (first in index order among equals).
#[derive(Debug, Clone, Copy)]
struct Best {
    layer: usize,
    index: usize,
    weight: f32,
    class: usize,
}

/// A range of one layer's weights processed as one piece of work.
#[derive(Debug, Clone, Copy)]
struct Unit {
    layer: usize,
    start: usize,
    end: usize,
}

/// The units of a set of layers, in index order.
fn make_units(lens: &[usize], classifiers: &[Classifier]) -> Vec<Unit> {
    let mut units = Vec::new();
    for (layer, (&n, cls)) in lens.iter().zip(classifiers).enumerate() {
        let step = if cls.by_magnitude { UNIT } else { n.max(1) };
        let mut start = 0;
        while start < n {
            let end = (start + step).min(n);
            units.push(Unit { layer, start, end });
            start = end;
        }
    }
    units
}

/// Apply `f` to every input on up to `threads` scoped threads (contiguous groups
/// balanced by `size`), results in input order.
fn par_map<I: Send, T: Send>(
    inputs: Vec<I>,
    threads: usize,
    size: impl Fn(&I) -> usize,
    f: impl Fn(I) -> T + Sync,
) -> Vec<T> {
    par_groups(inputs, threads, size, |g| {
        g.into_iter().map(&f).collect::<Vec<T>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Split `inputs` into up to `threads` contiguous groups balanced by `size` and
/// apply `f` to each group on its own scoped thread; results in group order (one
/// group, on the calling thread, when `threads <= 1`).
fn par_groups<I: Send, T: Send>(
    inputs: Vec<I>,
    threads: usize,
    size: impl Fn(&I) -> usize,
    f: impl Fn(Vec<I>) -> T + Sync,
) -> Vec<T> {
    if threads <= 1 || inputs.len() <= 1 {
        return vec![f(inputs)];
    }
    let total: usize = inputs.iter().map(&size).sum();
    let per = total.div_ceil(threads);
    let mut groups: Vec<Vec<I>> = vec![Vec::new()];
    let mut filled = 0;
    for input in inputs {
        let n = size(&input);
        if filled >= per && groups.len() < threads {
            groups.push(Vec::new());
            filled = 0;
        }
        filled += n;
        groups.last_mut().expect("one group").push(input);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| scope.spawn(move || f(g)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// What scanning one unit found.
struct UnitScan {
    /// Items above the band, per class of the unit's layer (base, surcharged).
    above: [u64; 2],
    /// Items inside the band.
    band: Vec<Item>,
    /// Of which per class.
    band_count: [u64; 2],
    nonzeros: u64,
    /// Largest `|w|` bits (beyond `f32::MAX`'s for a NaN or infinity).
    max_bits: i32,
}

/// What the keep pass did to one unit.
struct UnitKeep {
    /// Kept per class of the layer (ties not yet included).
    kept: [u64; 2],
    /// Weights exactly at the cut, left in place: `(index in layer, class)`.
    ties: Vec<(usize, usize)>,
    /// Sum of `w^2` of every `CHUNK` of the unit (NaN where ties are pending).
    chunk_sums: Vec<f64>,
    /// Sum of `w^2` of the unit before the pass (its chunks' sums in order).
    before: f64,
}

/// Iterates the knapsack items (nonzero weights) of a set of layers.
struct Scan<'a, K> {
    classifiers: &'a [Classifier],
    class_cost: &'a [f64],
    params: &'a [f32],
    capacity: f64,
    keys: K,
    /// The scale the keys are computed in (`keys` is its monomorphised form).
    scale: KeyScale,
}

impl<K: KeyFn + Sync> Scan<'_, K> {
    #[inline(always)]
    fn key(&self, v: f32, p: f32) -> f32 {
        self.keys.key(v, p)
    }

    /// Call `f(index, value, key, class)` for every affordable item of layer `l`
    /// (nonzero weights whose cost fits the capacity), in index order.
    #[inline(always)]
    fn layer_items(&self, l: usize, w: &[f32], mut f: impl FnMut(usize, f32, f32, usize)) {
        let (c0, c1) = (2 * l, 2 * l + 1);
        let (aff0, aff1) = (
            self.class_cost[c0] <= self.capacity,
            self.class_cost[c1] <= self.capacity,
        );
        let mut cls = self.classifiers[l];
        if cls.all_base {
            if !aff0 {
                return;
            }
            let p = self.params[c0];
            for (i, &v) in w.iter().enumerate() {
                if v != 0.0 {
                    f(i, v, self.key(v, p), c0);
                }
            }
            return;
        }
        for (i, &v) in w.iter().enumerate() {
            let surcharged = cls.surcharged(v);
            let c = if surcharged { c1 } else { c0 };
            if v != 0.0 && (if surcharged { aff1 } else { aff0 }) {
                f(i, v, self.key(v, self.params[c]), c);
            }
        }
    }

    /// The `(key, cost)` of the sampled weights ([`sample_size`] positions, read by
    /// [`Sample::of`]), and the number of weight positions each stands for.
    fn sample(&self, sample: &Sample, out: &mut Vec<(f32, f64)>) -> f64 {
        out.clear();
        for &(l, v) in &sample.picks {
            let l = l as usize;
            let cls = self.classifiers[l];
            // Approximate class (ties ignored): this only steers the bracket.
            let c = 2 * l + (!cls.all_base && v.abs() < cls.thr) as usize;
            if v != 0.0 && self.class_cost[c] <= self.capacity {
                out.push((self.key(v, self.params[c]), self.class_cost[c]));
            }
        }
        sample.stride as f64
    }

    /// The band `[lo, hi]` of keys expected to hold the cut: `2 sqrt(sample)`
    /// sample positions either side of the cut estimated from the sample.
    fn band(&self, picks: &Sample, sample: &mut Vec<(f32, f64)>) -> (f32, f32) {
        let scale = self.sample(picks, sample);
        let pos = cost_position(sample, self.capacity / scale);
        let margin = 2 * (sample.len() as f64).sqrt() as usize + 16;
        let desc = |a: &(f32, f64), b: &(f32, f64)| b.0.total_cmp(&a.0);
        let hi = if pos >= margin {
            sample[..pos].select_nth_unstable_by(pos - margin, desc).1.0
        } else {
            f32::INFINITY
        };
        let lo = if pos + margin < sample.len() {
            sample[pos + 1..]
                .select_nth_unstable_by(margin - 1, desc)
                .1
                .0
        } else {
            f32::NEG_INFINITY
        };
        (lo, hi)
    }

    /// Scan one unit: items above `hi`, items in `[lo, hi]`, nonzeros, largest `|w|`.
    fn scan_unit(&self, u: Unit, layer: &[f32], lo: f32, hi: f32) -> UnitScan {
        let l = u.layer;
        let c0 = 2 * l;
        let mut band = Vec::new();
        let mut band_count = [0u64; 2];
        let counts = if !self.classifiers[l].all_base {
            // Rank-dependent costs: the class follows from |w| against the layer's
            // threshold (ties at it take `base` while the layer's quota lasts; a
            // unit is the whole layer unless magnitude alone decides), and then
            // the same magnitude bounds as below, one pair per class.
            let w = &layer[u.start..u.end];
            let ranks = self.classifiers[l].ranks();
            let (hi_b, lo_b) = self.class_bounds(l, hi, lo);
            let mut idx = Vec::new();
            let counts = ranked_scan(w, ranks, hi_b, lo_b, &mut idx);
            band.extend(idx.iter().map(|&(i, s)| {
                band_count[s as usize] += 1;
                let c = c0 + s as usize;
                Item {
                    key: self.key(w[i as usize], self.params[c]),
                    class: c as u32,
                }
            }));
            counts
        } else if self.class_cost[c0] > self.capacity {
            // Nothing of the layer is affordable: bounds that nothing passes, for
            // the nonzeros and the largest magnitude.
            bound_scan(&layer[u.start..u.end], i32::MAX, i32::MAX, &mut Vec::new())
        } else {
            // Fast path (no rank-dependent cost). The key is a non-decreasing
            // function of |w| within a class, so `key > hi` and `key >= lo` are
            // integer compares of the bits of |w| against two magnitude bounds
            // found once: no arithmetic per weight. Blocks of 64 give counts and a
            // bit mask of the band members without branches; the few members are
            // then read off the mask.
            let w = &layer[u.start..u.end];
            let p = self.params[c0];
            let t_hi = self.mag_bound(hi, p, false);
            let t_lo = self.mag_bound(lo, p, true);
            let mut idx = Vec::new();
            let counts = bound_scan(w, t_hi, t_lo, &mut idx);
            band_count[0] = idx.len() as u64;
            band.extend(idx.iter().map(|&i| Item {
                key: self.key(w[i as usize], p),
                class: c0 as u32,
            }));
            counts
        };
        UnitScan {
            above: counts.above,
            band,
            band_count,
            nonzeros: counts.nonzeros,
            max_bits: counts.max_bits,
        }
    }

    /// Per class of layer `l` (base, surcharged), the magnitude bounds of `key > hi`
    /// and `key >= lo`; an unaffordable class gets bounds that nothing passes.
    fn class_bounds(&self, l: usize, hi: f32, lo: f32) -> ([i32; 2], [i32; 2]) {
        let mut h = [i32::MAX; 2];
        let mut o = [i32::MAX; 2];
        for j in 0..2 {
            let c = 2 * l + j;
            if self.class_cost[c] <= self.capacity {
                h[j] = self.mag_bound(hi, self.params[c], false);
                o[j] = self.mag_bound(lo, self.params[c], true);
            }
        }
        (h, o)
    }

    /// The largest `|w|` (as the bits of a non-negative `f32`, which order like the
    /// values) whose key under class parameter `p` is `<= t` (or `< t` if
    /// `strict`); -1 if not even a zero weight's key qualifies. Keys never decrease
    /// with `|w|` (each rounding step is monotone), so a binary search over the 2^31
    /// bit patterns finds it in 31 evaluations, and `key(w) > t` holds exactly when
    /// `abs_bits(w) > bound`.
    fn mag_bound(&self, t: f32, p: f32, strict: bool) -> i32 {
        largest_magnitude_bits(|m| {
            let k = self.key(f32::from_bits(m), p);
            if strict { k < t } else { k <= t }
        })
    }

    /// The cut `tau` with the per-class counts of the items above it (bracketed from
    /// a sample, selected inside the bracket, with a quickselect over all items if
    /// the bracket missed), the best single affordable item and the nonzeros per
    /// layer; or [`Step::Rescale`] when the scan finds a largest magnitude for
    /// which the key scale (chosen from the sample) is not the right one. Units
    /// are scanned on up to `threads` threads.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite weight (found by the scan, before
    /// anything is changed).
    fn find_cut<W: AsRef<[f32]> + Sync>(
        &self,
        weights: &[W],
        units: &[Unit],
        picks: &Sample,
        threads: usize,
        buf: &mut CutBuffers,
    ) -> Result<Step<CutFound>> {
        let found = match self.bracket(weights, units, picks, threads, buf)? {
            Step::Rescale(m) => return Ok(Step::Rescale(m)),
            Step::Done(found) => found,
        };
        if found.threshold.is_some() {
            return Ok(Step::Done(found));
        }
        let ws = &mut buf.items;
        ws.clear();
        for (l, w) in weights.iter().enumerate() {
            self.layer_items(l, w.as_ref(), |_, _, k, c| {
                ws.push(Item {
                    key: k,
                    class: c as u32,
                })
            });
        }
        let mut above = vec![0u64; self.class_cost.len()];
        let t = bucketed_select(
            &[&ws[..]],
            None,
            self.class_cost,
            &mut above,
            self.capacity,
            (&mut buf.chosen, &mut buf.buckets),
            threads,
        );
        Ok(Step::Done(CutFound {
            threshold: Some(t),
            above,
            ..found
        }))
    }

    /// One pass: estimate the band of the cut from a sample, scan every unit, and
    /// select inside the band (`threshold` `None` if the cut lies outside it); also
    /// the best single item, the nonzeros per layer and the finiteness check.
    fn bracket<W: AsRef<[f32]> + Sync>(
        &self,
        weights: &[W],
        units: &[Unit],
        picks: &Sample,
        threads: usize,
        buf: &mut CutBuffers,
    ) -> Result<Step<CutFound>> {
        let (lo, hi) = self.band(picks, &mut buf.sample);
        let scans = par_map(
            units.to_vec(),
            threads,
            |u| u.end - u.start,
            |u| self.scan_unit(u, weights[u.layer].as_ref(), lo, hi),
        );
        let classes = self.class_cost.len();
        let (mut above, mut band) = (vec![0u64; classes], vec![0u64; classes]);
        let mut nonzeros = vec![0u64; weights.len()];
        // Per layer: largest |w| bits and the start of the first unit holding it.
        let mut layer_max = vec![(-1i32, 0usize); weights.len()];
        for (u, sc) in units.iter().zip(&scans) {
            let l = u.layer;
            above[2 * l] += sc.above[0];
            above[2 * l + 1] += sc.above[1];
            band[2 * l] += sc.band_count[0];
            band[2 * l + 1] += sc.band_count[1];
            nonzeros[l] += sc.nonzeros;
            if sc.max_bits > layer_max[l].0 {
                layer_max[l] = (sc.max_bits, u.start);
            }
        }
        let mut max_abs = 0.0f32;
        for (l, &(bits, _)) in layer_max.iter().enumerate() {
            if bits > abs_bits(f32::MAX) {
                crate::error::check_finite(&format!("weights of layer {l}"), weights[l].as_ref())?;
            }
            max_abs = max_abs.max(f32::from_bits(bits.max(0) as u32));
        }
        if KeyScale::choose(max_abs, self.class_cost, self.capacity) != self.scale {
            return Ok(Step::Rescale(max_abs));
        }
        // The best single item: the largest |w| of the layer whose top weight is
        // affordable (first layer among equals), first in index order within it. The
        // top weight of a layer is charged `base` unless nothing is buffered.
        let mut best: Option<Best> = None;
        for (l, &(bits, _)) in layer_max.iter().enumerate() {
            let m = f32::from_bits(bits.max(0) as u32);
            let cls = &self.classifiers[l];
            let top = 2 * l + usize::from(!cls.all_base && cls.thr == f32::INFINITY);
            if self.class_cost[top] <= self.capacity && m > best.map_or(0.0, |b| b.weight) {
                best = Some(Best {
                    layer: l,
                    index: 0,
                    weight: m,
                    class: top,
                });
            }
        }
        if let Some(b) = best.as_mut() {
            let (w, from) = (weights[b.layer].as_ref(), layer_max[b.layer].1);
            b.index = w[from..]
                .iter()
                .position(|v| v.abs() == b.weight)
                .map_or(0, |i| from + i);
            b.weight = w[b.index];
        }
        let cap = self.capacity;
        let with_band: Vec<u64> = above.iter().zip(&band).map(|(a, b)| a + b).collect();
        let holds = charged_of_classes(&above, self.class_cost) <= cap
            && (lo == f32::NEG_INFINITY || charged_of_classes(&with_band, self.class_cost) > cap);
        let threshold = holds.then(|| {
            // The band members, unit by unit where the scan left them.
            let parts: Vec<&[Item]> = scans.iter().map(|sc| &sc.band[..]).collect();
            // Band members have keys in [lo, hi] (see `mag_bound`).
            let range = (lo.is_finite() && hi.is_finite()).then_some((lo, hi));
            let scratch = (&mut buf.chosen, &mut buf.buckets);
            bucketed_select(
                &parts,
                range,
                self.class_cost,
                &mut above,
                cap,
                scratch,
                threads,
            )
        });
        Ok(Step::Done(CutFound {
            threshold,
            above,
            best,
            nonzeros,
        }))
    }

    /// Keep pass of one unit: weights above the cut kept, exact ties left in place
    /// and listed (settled afterwards in index order), the rest zeroed.
    fn keep_unit(&self, u: Unit, w: &mut [f32], threshold: f32) -> UnitKeep {
        let l = u.layer;
        let c0 = 2 * l;
        let mut out = UnitKeep {
            kept: [0; 2],
            ties: Vec::new(),
            chunk_sums: Vec::with_capacity(w.len().div_ceil(CHUNK)),
            before: 0.0,
        };
        let cls = self.classifiers[l];
        if cls.all_base {
            if self.class_cost[c0] > self.capacity {
                out.before = value(w);
                w.fill(0.0);
                return out;
            }
            let p = self.params[c0];
            let (t_keep, t_tie) = (
                self.mag_bound(threshold, p, false),
                self.mag_bound(threshold, p, true),
            );
            for (ci, chunk) in w.chunks_mut(CHUNK).enumerate() {
                let before = sum_sq(chunk);
                out.before += before;
                if threshold == f32::NEG_INFINITY {
                    // Everything affordable fits: keep all.
                    out.kept[0] += chunk.iter().filter(|v| **v != 0.0).count() as u64;
                    out.chunk_sums.push(before);
                    continue;
                }
                // Branch-free: keep above the cut, leave exact ties (nonzero) for
                // later, zero the rest; integer compares of |w| bits against the
                // magnitude bounds of the cut (see `mag_bound`).
                let (m, t) = bound_keep(chunk, t_keep, t_tie);
                out.kept[0] += m as u64;
                if t > 0 {
                    let base = u.start + ci * CHUNK;
                    for (i, &x) in chunk.iter().enumerate() {
                        let a = abs_bits(x);
                        // The tie test of `bound_keep`.
                        if (a > t_tie) & (a <= t_keep) & (a != 0) {
                            out.ties.push((base + i, c0));
                        }
                    }
                    out.chunk_sums.push(f64::NAN);
                } else {
                    out.chunk_sums.push(sum_sq(chunk));
                }
            }
            return out;
        }
        // Rank-dependent costs (the unit is the whole layer unless magnitude alone
        // decides the class): classes as in the scan, then per class the bounds of
        // `key > cut` and `key >= cut`.
        let ranks = cls.ranks();
        let (keep_b, tie_b) = self.class_bounds(l, threshold, threshold);
        let mut seen = 0u64;
        for (ci, chunk) in w.chunks_mut(CHUNK).enumerate() {
            out.before += sum_sq(chunk);
            let seen_at_start = seen;
            let (m, t) = ranked_keep(chunk, ranks, &mut seen, keep_b, tie_b);
            out.kept[0] += m[0];
            out.kept[1] += m[1];
            if t > 0 {
                let mut seen2 = seen_at_start;
                for (i, &x) in chunk.iter().enumerate() {
                    let a = abs_bits(x);
                    let s = ranks.surcharged(a, &mut seen2);
                    let (tk, tt) = (keep_b[s as usize], tie_b[s as usize]);
                    if (a > tt) & (a <= tk) & (a != 0) {
                        out.ties.push((u.start + ci * CHUNK + i, c0 + s as usize));
                    }
                }
                out.chunk_sums.push(f64::NAN);
            } else {
                out.chunk_sums.push(sum_sq(chunk));
            }
        }
        out
    }
}

pub(super) fn check_inputs<W: AsRef<[f32]>>(
    weights: &[W],
    costs: &[LayerCost],
    capacity: f64,
    check_weights: bool,
) -> Result<()> {
    if weights.len() != costs.len() {
        return Err(Error::shape(
            "layer costs (one per layer)",
            weights.len(),
            costs.len(),
        ));
    }
    if capacity.is_nan() || capacity < 0.0 {
        return Err(Error::param(
            "capacity",
            capacity,
            "must be >= 0 (the cost of keeping nothing is 0)",
        ));
    }
    for (l, (w, c)) in weights.iter().zip(costs).enumerate() {
        if check_weights {
            crate::error::check_finite(&format!("weights of layer {l}"), w.as_ref())?;
        }
        if !(c.base.is_finite()
            && c.base > 0.0
            && c.surcharge.is_finite()
            && c.surcharge >= 0.0
            && (c.base + c.surcharge).is_finite())
        {
            return Err(Error::param(
                "layer cost",
                format!("{c:?}"),
                format!(
                    "layer {l}: base must be finite and > 0, surcharge finite and >= 0, \
                     their sum finite"
                ),
            ));
        }
    }
    Ok(())
}

/// What one knapsack selection kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// Weights kept (nonzero after the selection).
    pub kept: u64,
    /// Total cost charged for the kept weights (`<= capacity`).
    pub charged: f64,
    /// Sum of `w^2` kept.
    pub kept_value: f64,
    /// Sum of `w^2` before the selection.
    pub total_value: f64,
    /// True when the single-best-weight fallback beat the greedy prefix.
    pub single_item: bool,
}

/// The fewest weights worth a thread of their own in [`greedy_knapsack_parallel`]:
/// a selection starts threads about six times (some 70 µs each on a 2-core
/// machine), which is the time a thread takes for about this many weights.
pub const WEIGHTS_PER_THREAD: usize = 1 << 21;

/// Rounds of re-selection allowed when rounding left a selection a few ulps over.
const REPAIR_ROUNDS: u32 = 8;

/// How a selection treats a state that already fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum IfFits {
    /// Return it unchanged (first round).
    Identity,
    /// Select anyway (repair rounds).
    Select,
}

/// The guarantees shared by every selection algorithm: a state that already fits
/// is returned unchanged (the selection counts the nonzeros in its first pass and
/// stops there, see [`fits`]); a selection is never returned above `capacity` (if
/// the running sums of `select` and the canonical per-class sum disagree by
/// rounding, the selection is repeated on its own result with a capacity tightened
/// by the overshoot; after [`REPAIR_ROUNDS`] everything is zeroed, which always fits).
/// `select` reports the value of the weights it was given in `total_value`; the
/// first round's is returned.
pub(super) fn select_with_guarantees<W: AsMut<[f32]> + AsRef<[f32]>>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
    mut select: impl FnMut(&mut [W], f64, IfFits) -> Result<Selection>,
) -> Result<Selection> {
    check_inputs(weights, costs, capacity, false)?;
    let (mut cap, mut if_fits, mut total) = (capacity, IfFits::Identity, None);
    for round in 0..REPAIR_ROUNDS {
        let sel = select(weights, cap, if_fits)?;
        let total_value = *total.get_or_insert(sel.total_value);
        if sel.charged <= capacity {
            return Ok(Selection { total_value, ..sel });
        }
        let over = (sel.charged - capacity) * f64::from(1u32 << round) + capacity * f64::EPSILON;
        cap = (cap - over).max(0.0);
        if_fits = IfFits::Select;
    }
    for w in weights.iter_mut() {
        w.as_mut().fill(0.0);
    }
    Ok(Selection {
        kept: 0,
        charged: 0.0,
        kept_value: 0.0,
        total_value: total.unwrap_or(0.0),
        single_item: false,
    })
}

/// The identity selection if the state with `nonzeros` per layer fits `capacity`
/// under the canonical accounting ([`classes_of_nonzeros`], [`charged_of_classes`]);
/// `value` sums the weights' value (called only then).
pub(super) fn fits(
    costs: &[LayerCost],
    nonzeros: &[u64],
    capacity: f64,
    value: impl FnOnce() -> f64,
) -> Option<Selection> {
    let (counts, class_cost) = classes_of_nonzeros(costs, nonzeros);
    let charged = charged_of_classes(&counts, &class_cost);
    (charged <= capacity).then(|| {
        let value = value();
        Selection {
            kept: nonzeros.iter().sum(),
            charged,
            kept_value: value,
            total_value: value,
            single_item: false,
        }
    })
}

/// Greedy 0/1 knapsack on the weights in place: keep the weights of the longest
/// prefix by `w^2 / c` whose total cost is at most `capacity` (or the best single
/// weight if worth more), zero the others. A state whose own cost (its nonzeros
/// ranked among themselves) already fits is returned unchanged, and the result
/// never costs more than `capacity`, at every finite scale of weights and costs.
///
/// Returns what was kept as a [`Selection`].
///
/// # Errors
/// [`Error::ShapeMismatch`] if `costs` has not one entry per layer,
/// [`Error::NonFinite`] for a NaN or infinite weight, [`Error::InvalidParameter`]
/// for a non-positive cost or a negative or NaN capacity. Weights are unchanged on
/// error.
pub fn greedy_knapsack<W: AsMut<[f32]> + AsRef<[f32]> + Send + Sync>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
    ws: &mut ProjectionWorkspace,
) -> Result<Selection> {
    greedy_knapsack_parallel(weights, costs, capacity, ws, 1)
}

/// [`greedy_knapsack`] with its passes over the weights split across up to
/// `threads` threads. The result is identical for every number of threads (the
/// same weights kept, the same counts, cost and kept value): work is cut into
/// units of 65 536 weights (a layer whose costs depend on rank is one unit only when
/// weights of equal magnitude at its threshold are charged differently), the cut is
/// found from exact per-class counts, ties are settled in index order, and the kept
/// value is summed chunk by chunk in index order. Each thread gets at least
/// [`WEIGHTS_PER_THREAD`] weights (starting threads costs more than it saves on
/// fewer), so small problems run on fewer threads than asked.
///
/// # Errors
/// As [`greedy_knapsack`].
pub fn greedy_knapsack_parallel<W: AsMut<[f32]> + AsRef<[f32]> + Send + Sync>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
    ws: &mut ProjectionWorkspace,
    threads: usize,
) -> Result<Selection> {
    let total: usize = weights.iter().map(|w| w.as_ref().len()).sum();
    let threads = threads.clamp(1, (total / WEIGHTS_PER_THREAD).max(1));
    greedy_knapsack_on_threads(weights, costs, capacity, ws, threads)
}

/// [`greedy_knapsack_parallel`] on exactly `threads` threads however few the
/// weights: the result is the same on any thread count, and this form lets a test
/// or a caller who knows better than the default split check or choose it.
///
/// # Errors
/// As [`greedy_knapsack`].
pub fn greedy_knapsack_on_threads<W: AsMut<[f32]> + AsRef<[f32]> + Send + Sync>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
    ws: &mut ProjectionWorkspace,
    threads: usize,
) -> Result<Selection> {
    let threads = threads.max(1);
    select_with_guarantees(weights, costs, capacity, |w, cap, if_fits| {
        select_once(w, costs, cap, ws, if_fits, threads)
    })
}

/// One greedy selection (no guarantees beyond those of the algorithm itself).
///
/// The key scale is chosen from the sample's largest magnitude and checked
/// against the exact one that the scan finds; in the rare case they call for
/// different scales, the selection starts again with the exact one.
fn select_once<W: AsMut<[f32]> + AsRef<[f32]> + Send + Sync>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
    ws: &mut ProjectionWorkspace,
    if_fits: IfFits,
    threads: usize,
) -> Result<Selection> {
    let picks = Sample::of(weights, threads);
    let classifiers: Vec<Classifier> = if threads <= 1 {
        weights
            .iter()
            .zip(costs)
            .map(|(w, c)| Classifier::new(w.as_ref(), c, &mut ws.mags))
            .collect()
    } else {
        // Layers in parallel; only those with rank-dependent costs do any work.
        let shared: &[W] = weights;
        let work = |&l: &usize| {
            let (n, c) = (shared[l].as_ref().len(), &costs[l]);
            if c.surcharge > 0.0 && c.buffered < n {
                n
            } else {
                1
            }
        };
        par_map((0..shared.len()).collect(), threads, work, |l| {
            Classifier::new(shared[l].as_ref(), &costs[l], &mut Vec::new())
        })
    };
    ws.class_cost.clear();
    for c in costs {
        ws.class_cost.push(c.base);
        ws.class_cost.push(c.base + c.surcharge);
    }
    let mut max_abs = picks.max_abs;
    loop {
        let scale = KeyScale::choose(max_abs, &ws.class_cost, capacity);
        let (class_cost, params) = (&ws.class_cost, &mut ws.params);
        params.clear();
        params.extend(class_cost.iter().map(|&c| scale.param(c, capacity)));
        let job = Job {
            costs,
            capacity,
            classifiers: &classifiers,
            picks: &picks,
            if_fits,
            threads,
            scale,
        };
        let step = match scale {
            KeyScale::Linear { .. } => select_keyed(weights, ws, &job, Linear)?,
            KeyScale::Logarithmic => select_keyed(weights, ws, &job, Logarithmic)?,
        };
        match step {
            Step::Done(sel) => return Ok(sel),
            Step::Rescale(exact) => max_abs = exact,
        }
    }
}

/// The inputs of one selection besides the weights and the workspace.
struct Job<'a> {
    costs: &'a [LayerCost],
    capacity: f64,
    classifiers: &'a [Classifier],
    picks: &'a Sample,
    if_fits: IfFits,
    threads: usize,
    scale: KeyScale,
}

/// A result, or the largest magnitude that calls for another key scale.
enum Step<T> {
    Done(T),
    Rescale(f32),
}

/// What the cut search found.
struct CutFound {
    /// The cut `tau` (`None` while the bracket missed it).
    threshold: Option<f32>,
    /// Items with a key above the cut, per class.
    above: Vec<u64>,
    /// The most valuable affordable single weight.
    best: Option<Best>,
    /// Nonzero weights per layer.
    nonzeros: Vec<u64>,
}

/// The selection proper, monomorphised on the key representation.
fn select_keyed<W: AsMut<[f32]> + AsRef<[f32]> + Send + Sync, K: KeyFn + Send + Sync>(
    weights: &mut [W],
    ws: &mut ProjectionWorkspace,
    job: &Job<'_>,
    keys: K,
) -> Result<Step<Selection>> {
    let (capacity, threads) = (job.capacity, job.threads);
    let ProjectionWorkspace {
        cut,
        class_cost,
        params,
        ..
    } = ws;
    let scan = Scan {
        classifiers: job.classifiers,
        class_cost,
        params,
        capacity,
        keys,
        scale: job.scale,
    };
    let lens: Vec<usize> = weights.iter().map(|w| w.as_ref().len()).collect();
    let units = make_units(&lens, job.classifiers);
    let found = match scan.find_cut(weights, &units, job.picks, threads, cut)? {
        Step::Done(found) => found,
        Step::Rescale(m) => return Ok(Step::Rescale(m)),
    };
    let CutFound {
        threshold,
        above,
        best,
        nonzeros,
    } = found;
    let threshold = threshold.unwrap_or(f32::NEG_INFINITY);
    if job.if_fits == IfFits::Identity
        && let Some(same) = fits(job.costs, &nonzeros, capacity, || {
            total_value(weights, &units, threads)
        })
    {
        return Ok(Step::Done(same));
    }
    // Keep pass, unit by unit (in parallel): weights above the cut kept, the rest
    // zeroed, exact ties with the cut left in place.
    let scan = &scan;
    let keeps = par_map(
        unit_slices(weights, &units),
        threads,
        |(u, _)| u.end - u.start,
        |(u, w)| (u, scan.keep_unit(u, w, threshold)),
    );
    // Ties, in index order, kept while the exact cost of everything kept fits; then
    // the kept value, summed chunk by chunk in index order (the same sum whatever
    // the number of threads).
    let mut kept = vec![0u64; class_cost.len()];
    let mut counts = above;
    let mut open = true;
    let (mut kept_value, mut total_value) = (0.0f64, 0.0f64);
    for (u, mut k) in keeps {
        let (c0, c1) = (2 * u.layer, 2 * u.layer + 1);
        kept[c0] += k.kept[0];
        kept[c1] += k.kept[1];
        total_value += k.before;
        let w = weights[u.layer].as_mut();
        for &(i, c) in &k.ties {
            counts[c] += 1;
            if open && charged_of_classes(&counts, class_cost) <= capacity {
                kept[c] += 1;
            } else {
                counts[c] -= 1;
                open = false;
                w[i] = 0.0;
            }
        }
        for (ci, s) in k.chunk_sums.iter_mut().enumerate() {
            if s.is_nan() {
                let from = u.start + ci * CHUNK;
                *s = sum_sq(&w[from..(from + CHUNK).min(u.end)]);
            }
            kept_value += *s;
        }
    }
    if let Some(b) = best {
        let value = (b.weight as f64) * (b.weight as f64);
        if value > kept_value {
            // One weight alone is worth more than the greedy prefix: keep just it.
            for w in weights.iter_mut() {
                w.as_mut().fill(0.0);
            }
            weights[b.layer].as_mut()[b.index] = b.weight;
            return Ok(Step::Done(Selection {
                kept: 1,
                charged: class_cost[b.class],
                kept_value: value,
                total_value,
                single_item: true,
            }));
        }
    }
    Ok(Step::Done(Selection {
        kept: kept.iter().sum(),
        charged: charged_of_classes(&kept, class_cost),
        kept_value,
        total_value,
        single_item: false,
    }))
}

/// The weights of every unit as a mutable slice, in unit order.
fn unit_slices<'w, W: AsMut<[f32]>>(
    weights: &'w mut [W],
    units: &[Unit],
) -> Vec<(Unit, &'w mut [f32])> {
    let mut slices = Vec::with_capacity(units.len());
    let mut units_iter = units.iter().peekable();
    for (l, w) in weights.iter_mut().enumerate() {
        let mut rest: &mut [f32] = w.as_mut();
        while let Some(u) = units_iter.next_if(|u| u.layer == l) {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(u.end - u.start);
            slices.push((*u, head));
            rest = tail;
        }
    }
    slices
}

/// Sum of `w^2` of a unit, chunk by chunk in order (as the keep pass sums it).
fn value(w: &[f32]) -> f64 {
    w.chunks(CHUNK).map(sum_sq).sum()
}

/// Sum of `w^2` of all weights, unit by unit in order (the same sum whatever the
/// number of threads, and the same as the keep pass's).
fn total_value<W: AsRef<[f32]> + Sync>(weights: &[W], units: &[Unit], threads: usize) -> f64 {
    par_map(
        units.to_vec(),
        threads,
        |u| u.end - u.start,
        |u| value(&weights[u.layer].as_ref()[u.start..u.end]),
    )
    .into_iter()
    .sum()
}

/// `sum_c kept_c * cost_c` in class order: the one way every selection sums its cost.
pub(super) fn charged_of_classes(kept: &[u64], class_cost: &[f64]) -> f64 {
    kept.iter()
        .zip(class_cost)
        .map(|(n, c)| *n as f64 * c)
        .sum()
}

/// [`weighted_select`] for many items (`parts`, in any order) in two passes:
/// per-class counts of the items in up to 4096 buckets of key order (`buckets`
/// is the table; one per thread, added up), a walk down the buckets pricing the
/// running counts exactly as [`charged_of_classes`] does, and [`weighted_select`]
/// among the items of the one bucket where the cost stops fitting (gathered into
/// `chosen`). Same result as [`weighted_select`] on all items: the cut is the
/// largest key whose strictly larger keys fit and whose equal-or-larger keys do
/// not, whichever way it is found. `range`, when given, bounds every key (else the
/// items are looked through for their least and largest keys).
fn bucketed_select(
    parts: &[&[Item]],
    range: Option<(f32, f32)>,
    class_cost: &[f64],
    above: &mut [u64],
    capacity: f64,
    (chosen, buckets): (&mut Vec<Item>, &mut Vec<u32>),
    threads: usize,
) -> f32 {
    let classes = class_cost.len();
    let per_class = (TABLE / classes.max(1)).min(4096);
    let total: usize = parts.iter().map(|p| p.len()).sum();
    chosen.clear();
    if total < 1 << 14 || per_class < 64 {
        parts.iter().for_each(|p| chosen.extend_from_slice(p));
        return weighted_select(chosen, class_cost, above, capacity);
    }
    // Keys as u32 in their order (`+ 0.0` makes -0 and +0 one key, as `==` does).
    let ord = |k: f32| {
        let b = (k + 0.0).to_bits();
        if b >> 31 == 1 { !b } else { b | 0x8000_0000 }
    };
    let least_and_largest = |group: Vec<&[Item]>| {
        let keys = group.iter().flat_map(|p| p.iter()).map(|it| ord(it.key));
        keys.fold((u32::MAX, 0u32), |(lo, hi), o| (lo.min(o), hi.max(o)))
    };
    let (lo, hi) = match range {
        Some((lo, hi)) => (ord(lo), ord(hi)),
        None => par_groups(parts.to_vec(), threads, |p| p.len(), least_and_largest)
            .into_iter()
            .fold((u32::MAX, 0u32), |(lo, hi), (a, b)| (lo.min(a), hi.max(b))),
    };
    let span = u64::from(hi - lo);
    let shift = (0..32).find(|s| span >> s < per_class as u64).unwrap_or(32);
    let bucket = |k: f32| ((ord(k) - lo) >> shift) as usize;
    let n = (span >> shift) as usize + 1;
    let count = |group: &[&[Item]], table: &mut [u32]| {
        for it in group.iter().flat_map(|p| p.iter()) {
            table[bucket(it.key) * classes + it.class as usize] += 1;
        }
    };
    buckets.clear();
    buckets.resize(n * classes, 0);
    if threads <= 1 {
        count(parts, buckets);
    } else {
        let tables = par_groups(
            parts.to_vec(),
            threads,
            |p| p.len(),
            |group| {
                let mut table = vec![0u32; n * classes];
                count(&group, &mut table);
                table
            },
        );
        for table in tables {
            buckets.iter_mut().zip(table).for_each(|(b, t)| *b += t);
        }
    }
    let mut trial = above.to_vec();
    for b in (0..n).rev() {
        let row = &buckets[b * classes..(b + 1) * classes];
        trial
            .iter_mut()
            .zip(row)
            .for_each(|(t, r)| *t += u64::from(*r));
        if charged_of_classes(&trial, class_cost) > capacity {
            let found = par_groups(
                parts.to_vec(),
                threads,
                |p| p.len(),
                |group| {
                    group
                        .iter()
                        .flat_map(|p| p.iter())
                        .filter(|it| bucket(it.key) == b)
                        .copied()
                        .collect::<Vec<Item>>()
                },
            );
            found.iter().for_each(|f| chosen.extend_from_slice(f));
            return weighted_select(chosen, class_cost, above, capacity);
        }
        above.copy_from_slice(&trial);
    }
    f32::NEG_INFINITY
}

/// Entries of the bucket table of [`bucketed_select`] (256 KiB of counts).
const TABLE: usize = 1 << 16;

/// Weighted quickselect: the ratio `tau` of the first item (in descending ratio
/// order) whose cost no longer fits, with `above` (per-class counts of items
/// already known to lie above every item here) updated to the counts of all items
/// with a larger ratio, which all fit. Returns `f32::NEG_INFINITY` when everything
/// fits. Costs are compared exactly as [`charged_of_classes`] prices the counts, so
/// the cut does not depend on the order in which items are met.
fn weighted_select(
    items: &mut [Item],
    class_cost: &[f64],
    above: &mut [u64],
    capacity: f64,
) -> f32 {
    let (mut lo, mut hi) = (0usize, items.len());
    let mut rng_state = 0x9E37_79B9_7F4A_7C15u64;
    let mut trial = above.to_vec();
    while lo < hi {
        let part = &mut items[lo..hi];
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let n = part.len();
        let pivot = median3(
            part[(rng_state % n as u64) as usize].key,
            part[((rng_state >> 21) % n as u64) as usize].key,
            part[((rng_state >> 42) % n as u64) as usize].key,
        );
        let (gt_end, eq_end) = partition3(part, pivot);
        trial.copy_from_slice(above);
        part[..gt_end]
            .iter()
            .for_each(|it| trial[it.class as usize] += 1);
        if charged_of_classes(&trial, class_cost) > capacity {
            hi = lo + gt_end;
            continue;
        }
        above.copy_from_slice(&trial);
        part[gt_end..eq_end]
            .iter()
            .for_each(|it| trial[it.class as usize] += 1);
        if charged_of_classes(&trial, class_cost) > capacity {
            return pivot;
        }
        above.copy_from_slice(&trial);
        lo += eq_end;
    }
    f32::NEG_INFINITY
}

fn median3(a: f32, b: f32, c: f32) -> f32 {
    if (a >= b) == (a <= c) {
        a
    } else if (b >= a) == (b <= c) {
        b
    } else {
        c
    }
}

/// Three-way partition: `[> p | == p | < p]`; returns the ends of the first two parts.
fn partition3(items: &mut [Item], p: f32) -> (usize, usize) {
    let (mut gt, mut i, mut lt) = (0usize, 0usize, items.len());
    while i < lt {
        let k = items[i].key;
        if k > p {
            items.swap(i, gt);
            gt += 1;
            i += 1;
        } else if k < p {
            lt -= 1;
            items.swap(i, lt);
        } else {
            i += 1;
        }
    }
    (gt, lt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::zoo;
    use crate::energy::{SystolicArray, SystolicConfig};
    use crate::network::NetworkState;
    use crate::prune::Budget;
    use crate::prune::projection::{project, project_sorted, project_top_k};
    use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

    fn random_instance(
        rng: &mut ChaCha12Rng,
        integer_costs: bool,
    ) -> (Vec<Vec<f32>>, Vec<LayerCost>) {
        let layers = rng.random_range(1..4);
        let mut w = Vec::new();
        let mut c = Vec::new();
        for _ in 0..layers {
            let n = rng.random_range(1..12);
            // A few exact ties and zeros on purpose.
            w.push(
                (0..n)
                    .map(|_| match rng.random_range(0..10) {
                        0 => 0.0,
                        1 => 0.5,
                        _ => rng.random_range(-2.0f32..2.0),
                    })
                    .collect(),
            );
            let base = if integer_costs {
                rng.random_range(1..8) as f64
            } else {
                rng.random_range(0.5..5.0)
            };
            let surcharge = if integer_costs {
                0.0
            } else if rng.random_bool(0.5) {
                rng.random_range(0.0..5.0)
            } else {
                0.0
            };
            c.push(LayerCost {
                base,
                surcharge,
                buffered: rng.random_range(0..n + 1),
            });
        }
        (w, c)
    }

    /// Exact 0/1 knapsack value by dynamic programming over integer costs.
    fn dp_optimum(w: &[Vec<f32>], c: &[LayerCost], cap: usize) -> f64 {
        let mut best = vec![0.0f64; cap + 1];
        for (wl, cl) in w.iter().zip(c) {
            for &v in wl {
                let cost = cl.base as usize;
                let val = (v as f64) * (v as f64);
                for b in (cost..=cap).rev() {
                    best[b] = best[b].max(best[b - cost] + val);
                }
            }
        }
        best[cap]
    }

    #[test]
    fn bucketed_select_equals_weighted_select() {
        let mut rng = ChaCha12Rng::seed_from_u64(21);
        let (mut table, mut chosen) = (Vec::new(), Vec::new());
        for case in 0..60 {
            let classes = [1, 2, 16, 200, 2000][case % 5];
            let n = rng.random_range(1 << 14..1 << 16);
            // Few distinct keys (heavy ties) or many, of either sign, with +-0.
            let distinct = if case % 3 == 0 { 50 } else { 1 << 30 };
            let items: Vec<Item> = (0..n)
                .map(|_| {
                    let k = (rng.random_range(0..distinct) % distinct) as f32 * 1e-3 - 20.0;
                    let key = match rng.random_range(0..20) {
                        0 => 0.0,
                        1 => -0.0,
                        _ => k,
                    };
                    Item {
                        key,
                        class: rng.random_range(0..classes as u32),
                    }
                })
                .collect();
            let class_cost: Vec<f64> = (0..classes).map(|_| rng.random_range(0.5..9.0)).collect();
            let all: f64 = items.iter().map(|it| class_cost[it.class as usize]).sum();
            let above0: Vec<u64> = (0..classes).map(|_| rng.random_range(0..3)).collect();
            for f in [0.0, 0.01, 0.3, 0.7, 0.999, 1.5] {
                let cap = charged_of_classes(&above0, &class_cost) + f * all;
                let mut b = items.clone();
                let mut above_b = above0.clone();
                let tb = weighted_select(&mut b, &class_cost, &mut above_b, cap);
                let (left, right) = items.split_at(n / 3);
                for threads in [1, 2, 3] {
                    let mut above_a = above0.clone();
                    // With and without the key range given.
                    let range = (threads == 2).then_some((-20.0, 1.1e6));
                    let ta = bucketed_select(
                        &[left, right],
                        range,
                        &class_cost,
                        &mut above_a,
                        cap,
                        (&mut chosen, &mut table),
                        threads,
                    );
                    // Equal as keys (a cut at -0 is a cut at +0).
                    assert_eq!(ta, tb, "case {case} fraction {f} threads {threads}");
                    assert_eq!(above_a, above_b, "case {case} fraction {f}");
                }
            }
        }
    }

    #[test]
    fn top_k_by_filter_equals_a_full_selection() {
        let mut rng = ChaCha12Rng::seed_from_u64(23);
        let mut mags = Vec::new();
        let (mut found, mut declined) = (0, 0);
        for case in 0..200 {
            let n = rng.random_range(8192..60_000);
            let levels = [3, 100, 1 << 20][case % 3];
            let mut w: Vec<f32> = (0..n)
                .map(|_| (rng.random_range(0..levels) as f32 - levels as f32 / 2.0) * 0.01)
                .collect();
            if case % 7 == 0 {
                // Adversarial for the strided sample: its positions hold the largest.
                let stride = n / 2048;
                (0..2048).for_each(|i| w[i * n / 2048] = 1e3 + (i % stride) as f32);
            }
            let k = rng.random_range(1..n / 8);
            let full = {
                let mut m: Vec<f32> = w.iter().map(|v| v.abs()).collect();
                let thr = *m.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1;
                let at = w.iter().filter(|v| v.abs() == thr).count();
                (thr, w.iter().filter(|v| v.abs() > thr).count(), at)
            };
            match top_k_by_filter(&w, k, &mut mags) {
                Some(got) => {
                    assert_eq!(got, full, "case {case}");
                    found += 1;
                }
                None => declined += 1,
            }
        }
        assert!(
            found > 150,
            "the filter served {found} of 200 ({declined} declined)"
        );
    }

    #[test]
    fn unsampled_extremes_rescale_or_fail_before_any_change() {
        let mut rng = ChaCha12Rng::seed_from_u64(24);
        let n = 1 << 20;
        let base: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let stride = n / sample_size(n);
        let cost = [LayerCost {
            base: 1.0,
            surcharge: 2.0,
            buffered: n / 100,
        }];
        let mut ws = ProjectionWorkspace::new();
        // A huge weight where the sample does not look: the scale chosen from the
        // sample is not the exact one, so the selection starts again.
        let mut w = vec![base.clone()];
        w[0][stride / 2] = 1e30;
        let (sampled, exact) = (Sample::of(&w, 1).max_abs, 1e30f32);
        assert!(sampled <= 1.0);
        assert_ne!(
            KeyScale::choose(sampled, &[1.0, 3.0], 1e5),
            KeyScale::choose(exact, &[1.0, 3.0], 1e5)
        );
        let mut reference = w.clone();
        let got = greedy_knapsack(&mut w, &cost, 1e5, &mut ws).unwrap();
        let want = project_sorted(&mut reference, &cost, 1e5).unwrap();
        assert!(w == reference);
        assert_eq!(got, want);
        // A NaN or an infinity where the sample does not look: an error naming the
        // layer and index, and nothing changed.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut w = vec![vec![0.5f32; 8], base.clone()];
            w[1][stride / 2 + 1] = bad;
            let before = w.clone();
            let err = greedy_knapsack_parallel(&mut w, &[cost[0], cost[0]], 1e3, &mut ws, 2)
                .unwrap_err()
                .to_string();
            assert!(err.contains("layer 1"), "{err}");
            assert!(err.contains(&format!("{}", stride / 2 + 1)), "{err}");
            assert_eq!(format!("{w:?}"), format!("{before:?}"));
        }
    }

    #[test]
    fn ranked_layers_cut_into_units_select_as_one() {
        let mut rng = ChaCha12Rng::seed_from_u64(25);
        let n = 5 * UNIT + 123;
        // Quantised magnitudes: many exact ties everywhere, the cut included.
        let w: Vec<f32> = (0..n)
            .map(|_| rng.random_range(-50i32..=50) as f32 * 0.01)
            .collect();
        let at_least_half = w.iter().filter(|v| v.abs() >= 0.5).count();
        let mut ws = ProjectionWorkspace::new();
        // Every weight at the threshold (0.5) buffered: classes by magnitude alone,
        // the layer is cut into units; seven fewer: one unit (ties by index).
        for (buffered, split) in [(at_least_half, true), (at_least_half - 7, false)] {
            let cost = [LayerCost {
                base: 1.0,
                surcharge: 2.5,
                buffered,
            }];
            let cls = Classifier::new(&w, &cost[0], &mut Vec::new());
            assert_eq!(cls.by_magnitude, split);
            assert_eq!(make_units(&[n], &[cls]).len() > 1, split);
            for cap in [100.0, 3e4, 1.2e5, 2.5e5] {
                let mut want = vec![w.clone()];
                let sel = project_sorted(&mut want, &cost, cap).unwrap();
                for threads in [1, 2, 3] {
                    let mut got = vec![w.clone()];
                    let out =
                        greedy_knapsack_on_threads(&mut got, &cost, cap, &mut ws, threads).unwrap();
                    assert!(
                        got == want,
                        "buffered {buffered} cap {cap} threads {threads}"
                    );
                    assert_eq!(out.kept, sel.kept);
                    assert_eq!(out.charged, sel.charged);
                }
            }
        }
    }

    #[test]
    fn cost_position_equals_a_sorted_walk() {
        let mut rng = ChaCha12Rng::seed_from_u64(22);
        for case in 0..300 {
            let n = rng.random_range(0..400);
            let s: Vec<(f32, f64)> = (0..n)
                .map(|_| (rng.random_range(0..50) as f32, rng.random_range(0.1..3.0)))
                .collect();
            let budget = rng.random_range(0.0..1.2) * s.iter().map(|x| x.1).sum::<f64>();
            let mut got = s.clone();
            let pos = cost_position(&mut got, budget);
            // The sorted walk's answer, with the same keys before and after.
            let mut sorted = got.clone();
            sorted[..pos].sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut cum = 0.0;
            let want = sorted
                .iter()
                .position(|x| {
                    cum += x.1;
                    cum > budget
                })
                .unwrap_or(n);
            assert_eq!(pos, want, "case {case}");
            if pos < n {
                assert!(got[..pos].iter().all(|x| x.0 >= got[pos].0), "case {case}");
                assert!(
                    got[pos + 1..].iter().all(|x| x.0 <= got[pos].0),
                    "case {case}"
                );
            }
        }
    }

    #[test]
    fn selection_equals_sort_based_and_respects_capacity() {
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let mut ws = ProjectionWorkspace::new();
        let instances = if cfg!(debug_assertions) {
            20_000
        } else {
            100_000
        };
        for _ in 0..instances {
            let (w, c) = random_instance(&mut rng, false);
            let cap = rng.random_range(0.0..30.0);
            let mut a = w.clone();
            let mut b = w.clone();
            let ra = greedy_knapsack(&mut a, &c, cap, &mut ws).unwrap();
            let rb = project_sorted(&mut b, &c, cap).unwrap();
            assert_eq!(a, b, "weights differ for {w:?} {c:?} cap {cap}");
            assert_eq!(ra.kept, rb.kept);
            assert!(
                ra.charged <= cap + 1e-9,
                "charged {} > capacity {cap}",
                ra.charged
            );
            assert!((ra.kept_value - rb.kept_value).abs() < 1e-9);
        }
    }

    #[test]
    fn large_instances_match_sort_based_including_bracket_misses() {
        let mut rng = ChaCha12Rng::seed_from_u64(4);
        let mut ws = ProjectionWorkspace::new();
        let n = 4 * SAMPLE * 3;
        let stride = n / sample_size(n);
        // Layer 0: random; layer 1: adversarial for the strided sample (every
        // sampled position tiny, the others large), so the bracket misses.
        let l0: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let l1: Vec<f32> = (0..n)
            .map(|i| {
                if i % stride == 0 {
                    1e-4
                } else {
                    rng.random_range(1.0f32..2.0)
                }
            })
            .collect();
        let costs = [
            LayerCost {
                base: 2.0,
                surcharge: 3.0,
                buffered: n / 3,
            },
            LayerCost {
                base: 1.0,
                surcharge: 0.0,
                buffered: n,
            },
        ];
        for cap in [10.0, 1e3, 2e4, 6e4, 1e5, 1e9] {
            let cases = [
                (vec![l0.clone()], &costs[..1]),
                (vec![l1.clone()], &costs[1..]),
                (vec![l0.clone(), l1.clone()], &costs[..]),
            ];
            for (layers, c) in cases {
                let mut a = layers.clone();
                let mut b = layers.clone();
                let ra = greedy_knapsack(&mut a, c, cap, &mut ws).unwrap();
                let rb = project_sorted(&mut b, c, cap).unwrap();
                assert!(a == b, "cap {cap}: selection and sort differ");
                assert_eq!(ra.kept, rb.kept);
                assert!(ra.charged <= cap);
            }
        }
    }

    #[test]
    fn bracket_hits_on_random_weights_and_misses_on_adversarial_ones() {
        let mut rng = ChaCha12Rng::seed_from_u64(5);
        let n = 64 * SAMPLE;
        let stride = n / sample_size(n);
        let random: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let adversarial: Vec<f32> = (0..n)
            .map(|i| {
                if i % stride == 0 {
                    1e-4
                } else {
                    1.0 + (i % 7) as f32
                }
            })
            .collect();
        let cost = [LayerCost {
            base: 1.0,
            surcharge: 0.0,
            buffered: n,
        }];
        let bracket = |w: &Vec<f32>, cap: f64| {
            let classifiers = [Classifier::new(w, &cost[0], &mut Vec::new())];
            let scan = Scan {
                classifiers: &classifiers,
                class_cost: &[1.0, 1.0],
                params: &[1.0, 1.0],
                capacity: cap,
                keys: Linear,
                scale: KeyScale::Linear { shift: 0 },
            };
            let units = make_units(&[w.len()], &classifiers);
            let w = std::slice::from_ref(w);
            let found = scan.bracket(w, &units, &Sample::of(w, 1), 1, &mut CutBuffers::default());
            match found.unwrap() {
                Step::Done(found) => found.threshold.is_some(),
                Step::Rescale(_) => panic!("the sample's scale is the exact one here"),
            }
        };
        assert!(bracket(&random, n as f64 / 3.0));
        assert!(!bracket(&adversarial, n as f64 / 3.0));
    }

    #[test]
    fn greedy_with_best_single_item_is_at_least_half_the_optimum() {
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        let mut ws = ProjectionWorkspace::new();
        let (mut sum_ratio, mut count, mut worst) = (0.0, 0, f64::INFINITY);
        for _ in 0..20_000 {
            let (mut w, c) = random_instance(&mut rng, true);
            let cap = rng.random_range(0..25usize);
            let opt = dp_optimum(&w, &c, cap);
            let Selection {
                charged,
                kept_value: value,
                ..
            } = greedy_knapsack(&mut w, &c, cap as f64, &mut ws).unwrap();
            assert!(charged <= cap as f64);
            if opt > 0.0 {
                let r = value / opt;
                assert!(r >= 0.5 - 1e-12, "greedy {value} < half of optimum {opt}");
                sum_ratio += r;
                worst = f64::min(worst, r);
                count += 1;
            }
        }
        let mean = sum_ratio / count as f64;
        eprintln!("greedy / optimum over {count} instances: mean {mean:.4}, worst {worst:.4}");
        assert!(mean > 0.9, "mean ratio {mean}");
    }

    #[test]
    fn projection_is_feasible_idempotent_and_monotone() {
        let arch = zoo::lenet5().unwrap();
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let mut dense = NetworkState::dense(&arch);
        for w in &mut dense.weights {
            w.iter_mut()
                .for_each(|v| *v = rng.random_range(-1.0f32..1.0));
        }
        let floor = model.dense_floor();
        let full = 17_107_544.0;
        let mut last_value = 0.0;
        for frac in [0.16, 0.2, 0.3, 0.5, 0.9, 1.0] {
            let budget = full * frac;
            let mut s = dense.clone();
            let out = project(&mut s, &[Budget::absolute("energy", &model, budget)]).unwrap();
            assert!(
                out.relaxed_energy <= budget,
                "{frac}: {} > {budget}",
                out.relaxed_energy
            );
            assert!(out.relaxed_energy >= floor);
            assert!(
                out.kept_value >= last_value,
                "value must not fall as the budget grows"
            );
            last_value = out.kept_value;
            let exact = crate::energy::WeightEnergyModel::energy(&model, &s)
                .unwrap()
                .total;
            assert!(exact <= out.relaxed_energy + 1e-6);
            let mut again = s.clone();
            project(&mut again, &[Budget::absolute("energy", &model, budget)]).unwrap();
            assert_eq!(again, s, "projection must be idempotent");
        }
        let mut s = dense.clone();
        match project(&mut s, &[Budget::absolute("energy", &model, floor * 0.99)]) {
            Err(Error::InfeasibleBudget { min_achievable, .. }) => {
                assert_eq!(min_achievable, floor)
            }
            other => panic!("expected InfeasibleBudget, got {other:?}"),
        }
        assert_eq!(s, dense, "state unchanged on error");
        s.weights[2][5] = f32::NAN;
        assert!(matches!(
            project(&mut s, &[Budget::absolute("energy", &model, full)]),
            Err(Error::NonFinite { .. })
        ));
    }

    #[test]
    fn top_k_keeps_largest_magnitudes() {
        let mut v = vec![0.1, -3.0, 2.0, 0.5, -2.0];
        project_top_k(&mut v, 2).unwrap();
        assert_eq!(v, vec![0.0, -3.0, 2.0, 0.0, 0.0]);
        let mut v = vec![1.0, 1.0, 1.0];
        project_top_k(&mut v, 2).unwrap();
        assert_eq!(v, vec![1.0, 1.0, 0.0]);
        assert!(project_top_k(&mut [f32::NAN], 0).is_err());
    }
}
