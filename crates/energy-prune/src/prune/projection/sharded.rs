//! Sharded projection: the weighted sparse projection of weights that live in
//! several places (threads, processes, machines, files), computed with a few
//! rounds of small messages and equal to the in-memory
//! [`greedy_knapsack`](super::greedy_knapsack).
//!
//! # Protocol
//!
//! The weights, in canonical order (layers concatenated), are cut into shards of
//! consecutive positions; shard `s` holds positions `[start_s, start_s + len_s)`
//! and shards are numbered in position order. Every party knows the
//! [`ShardedProblem`] (per-layer costs and lengths, the capacity). A coordinator
//! ([`Coordinator`], a state machine with one merge step per round) sends a
//! [`Request`] to every shard, each shard answers with a [`Reply`] computed by
//! [`answer`] from its own weights only, and the coordinator merges the replies;
//! [`coordinate`] runs the whole exchange through one callback, so any transport
//! (threads, MPI, torch.distributed through bindings, Ray, Spark, files) can carry
//! it. On the wire every message is a [`RequestMessage`] or [`ReplyMessage`]
//! carrying the [`PROTOCOL_VERSION`]; a message of another version, or a reply of
//! another round, is an [`Error::Protocol`]. Messages serialise with serde.
//!
//! | round | request | a shard replies | size of a reply |
//! |---|---|---|---|
//! | 1 (and 2 when the state fits) | `Stats` | its span, sum of squares, largest magnitude, nonzeros per layer, best single weight, first non-finite value | `O(layers)` |
//! | 2-4 | `Magnitudes` (only layers whose cost depends on rank) | counts of magnitude bits per bucket (4096, 4096, 256 buckets) | `O(buckets)` per layer, sparse |
//! | 5-7 | `Keys` | per-class counts of the ratio keys per bucket, affordable nonzero weights only | `O(buckets x classes)`, sparse |
//! | 8 | `Ties` (if weights sit exactly at the cut) | the classes of its weights at the cut, in order, run-length coded | `O(runs)` |
//! | 9 | `Apply` | kept value and per-class kept counts, after zeroing what is not kept | `O(classes)` |
//! | 10 | `KeepOnly` (rare: the best single weight beats the greedy prefix) | nothing | `O(1)` |
//!
//! A state that already fits stops after round 2 (the statistics asked twice and
//! compared), unchanged. The radix rounds fix
//! 12, 12 and 8 bits of the cut's key: each narrows the search to one bucket whose
//! cumulative cost (per-class counts priced exactly by the canonical sum) crosses
//! the capacity, so the cut, the weights above it and the ties at it are exactly
//! those of the in-memory selection; ties are kept in position order while they
//! fit, shard by shard. The one comparison made on floating-point sums merged in a
//! different order is the single-weight fallback (`value(best) > kept value`),
//! which can differ from the in-memory result only when the two values agree to
//! about 1e-15 relative.
//!
//! # The sharded rule
//! The coordinator checks every reply against what it already knows, and a shard
//! checks every request, before anything changes where possible:
//! * round 1: values finite and non-negative, layers in range and increasing,
//!   nonzeros at most the shard's weights of each layer, nonzeros, sum of squares
//!   and largest magnitude consistent, one best weight per layer with nonzeros,
//!   finite, inside the layer and the shard, none larger than the shard's largest;
//! * every radix round: each shard's histogram adds up, per layer or class, to
//!   what the previous round established for that shard (its weights of the layer,
//!   its affordable nonzeros, its count in the bucket chosen last); the ties add
//!   up to its count in the last key bucket;
//! * apply: each shard's kept counts per class equal what the earlier rounds
//!   predict for it, its kept value lies in `[0, its value]`, and the total cost,
//!   computed from the shards' reports, is within the capacity before `Ok`;
//! * keep-only: the weight must be the one the shard holds.
//!
//! A reply that breaks a rule is an [`Error::Protocol`] naming the shard and the
//! numbers. Tested by a property test with a lying shard (every kind of corrupted
//! reply, in every round: never `Ok` over the capacity, never a value no shard
//! held) and one case per corruption. A shard that lies consistently about its
//! own weights in every round is indistinguishable from one holding other
//! weights; what it is asked to apply, it applies to the weights it holds.
//!
//! Messages stay small: a sparse histogram holds at most 4096 buckets times the
//! classes present in them (two per layer); on AlexNet's 61 M weights the largest
//! reply measured is reported by the `projection` bench and by
//! `energy-prune lab sharded`.

use super::kernels::{
    self, BLOCK, Ranks, abs_bits, bound_keep, bound_scan, largest_magnitude_bits, ranked_keep,
    ranked_scan,
};
use super::select::{
    KeyFn, KeyScale, Linear, Logarithmic, Selection, charged_of_classes, check_inputs,
    classes_of_nonzeros,
};
use crate::energy::LayerCost;
use crate::error::{Error, Origin, Result};

/// The knapsack every party agrees on.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ShardedProblem {
    /// Knapsack cost of every layer.
    pub costs: Vec<LayerCost>,
    /// Number of weights of every layer.
    pub layer_lens: Vec<u64>,
    /// The capacity (budget minus the weight-independent energy).
    pub capacity: f64,
}

impl ShardedProblem {
    /// Check the costs and capacity (as [`greedy_knapsack`](super::greedy_knapsack) does).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if costs and lengths differ in number,
    /// [`Error::InvalidParameter`] for a bad cost or capacity.
    pub fn validate(&self) -> Result<()> {
        if self.layer_lens.len() != self.costs.len() {
            return Err(Error::shape(
                "layer lengths (one per layer cost)",
                self.costs.len(),
                self.layer_lens.len(),
            ));
        }
        if self
            .layer_lens
            .iter()
            .try_fold(0u64, |sum, &n| sum.checked_add(n))
            .is_none()
        {
            return Err(Error::param(
                "layer_lens",
                format!("{:?}", self.layer_lens),
                "the layers' lengths must add up to at most 2^64 - 1 weights",
            ));
        }
        let empty: Vec<&[f32]> = vec![&[]; self.costs.len()];
        check_inputs(&empty, &self.costs, self.capacity, false)
    }

    /// Total number of weights.
    pub fn total(&self) -> u64 {
        self.layer_lens
            .iter()
            .fold(0u64, |a, &n| a.saturating_add(n))
    }

    /// First global position of every layer.
    fn offsets(&self) -> Vec<u64> {
        let mut o = Vec::with_capacity(self.layer_lens.len());
        let mut at = 0u64;
        for &n in &self.layer_lens {
            o.push(at);
            at = at.saturating_add(n);
        }
        o
    }

    fn class_cost(&self) -> Vec<f64> {
        self.costs
            .iter()
            .flat_map(|c| [c.base, c.base + c.surcharge])
            .collect()
    }

    /// Whether a layer's cost depends on the rank of a weight's magnitude.
    fn rank_dependent(&self, l: usize) -> bool {
        let c = &self.costs[l];
        c.surcharge != 0.0 && c.buffered > 0 && (c.buffered as u64) < self.layer_lens[l]
    }
}

/// Consecutive weights of one layer held by a shard.
#[derive(Debug)]
pub struct Segment<'a> {
    /// The layer.
    pub layer: usize,
    /// Position of the first weight within the layer.
    pub offset: u64,
    /// The weights.
    pub weights: &'a mut [f32],
}

/// The weights one shard holds: consecutive global positions, as segments of
/// consecutive layers.
#[derive(Debug)]
pub struct Shard<'a> {
    /// The segments, in position order.
    pub segments: Vec<Segment<'a>>,
}

impl<'a> Shard<'a> {
    /// The shard holding global positions `[start, start + weights.len())` of
    /// `problem`, split into segments at layer boundaries.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if the range runs past the last weight.
    pub fn from_range(
        problem: &ShardedProblem,
        start: u64,
        weights: &'a mut [f32],
    ) -> Result<Self> {
        let total = problem.total();
        let end = start.saturating_add(weights.len() as u64);
        if end > total {
            return Err(Error::IndexOutOfRange {
                what: "shard end",
                index: end as usize,
                len: total as usize,
            });
        }
        let mut segments = Vec::new();
        let mut rest = weights;
        let mut pos = start;
        for (l, off) in problem.offsets().into_iter().enumerate() {
            let layer_end = off + problem.layer_lens[l];
            if rest.is_empty() || pos >= layer_end {
                continue;
            }
            let take = (layer_end - pos).min(rest.len() as u64) as usize;
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(take);
            segments.push(Segment {
                layer: l,
                offset: pos - off,
                weights: head,
            });
            rest = tail;
            pos += take as u64;
        }
        Ok(Self { segments })
    }

    /// Cut per-layer weights into `parts` shards of about equal size (for a
    /// parallel projection in memory).
    pub fn split<W: AsMut<[f32]>>(weights: &'a mut [W], parts: usize) -> Vec<Shard<'a>> {
        let total: usize = weights.iter_mut().map(|w| w.as_mut().len()).sum();
        let parts = parts.clamp(1, total.max(1));
        let per = total.div_ceil(parts).max(1);
        let mut shards: Vec<Shard<'a>> = Vec::with_capacity(parts);
        let mut current = Shard {
            segments: Vec::new(),
        };
        let mut room = per;
        for (l, w) in weights.iter_mut().enumerate() {
            let mut rest: &'a mut [f32] = w.as_mut();
            let mut offset = 0u64;
            while !rest.is_empty() {
                let take = room.min(rest.len());
                let (head, tail) = rest.split_at_mut(take);
                current.segments.push(Segment {
                    layer: l,
                    offset,
                    weights: head,
                });
                offset += take as u64;
                rest = tail;
                room -= take;
                if room == 0 {
                    shards.push(std::mem::replace(
                        &mut current,
                        Shard {
                            segments: Vec::new(),
                        },
                    ));
                    room = per;
                }
            }
        }
        if !current.segments.is_empty() || shards.is_empty() {
            shards.push(current);
        }
        shards
    }

    fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.weights.len() as u64).sum()
    }
}

/// How the coordinator classifies the weights of one rank-dependent layer: the
/// magnitude threshold of the `buffered` largest and, per shard, how many of the
/// weights exactly at the threshold still get the base cost (first in position
/// order).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerClasses {
    /// The layer.
    pub layer: usize,
    /// Magnitude of the `buffered`-th largest weight.
    pub threshold: f32,
    /// Per shard, the weights at the threshold charged `base`.
    pub base_ties: Vec<u64>,
}

/// What a shard needs to compute keys and classes.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KeyContext {
    /// Logarithmic keys (else linear `w * w * p`).
    pub logarithmic: bool,
    /// Key parameter of every class.
    pub params: Vec<f32>,
    /// Classification of the rank-dependent layers.
    pub classes: Vec<LayerClasses>,
}

/// One step of a radix search: the bits fixed so far and how many more to bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RadixStep {
    /// The `known` high bits fixed so far.
    pub prefix: u32,
    /// How many high bits are fixed.
    pub known: u32,
    /// How many further bits the buckets resolve.
    pub bits: u32,
}

impl RadixStep {
    fn matches(&self, x: u32) -> bool {
        self.known == 0 || x >> (32 - self.known) == self.prefix
    }
    fn bucket(&self, x: u32) -> u32 {
        (x >> (32 - self.known - self.bits)) & ((1u32 << self.bits) - 1)
    }
    /// The least and largest `x` that [`Self::matches`].
    fn range(&self) -> (u32, u32) {
        if self.known == 0 {
            return (0, u32::MAX);
        }
        let free = 32 - self.known;
        let lo = ((u64::from(self.prefix) << free) & 0xffff_ffff) as u32;
        (lo, lo | ((1u64 << free) - 1) as u32)
    }
}

/// A message from the coordinator to every shard (sent as a [`RequestMessage`]).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Request {
    /// Round 1: span, value, largest magnitude, nonzeros, best weight, finiteness.
    Stats,
    /// Histogram of magnitude bits (zeros included) of rank-dependent layers.
    Magnitudes {
        /// `(layer, step)` per layer still being searched.
        layers: Vec<(usize, RadixStep)>,
    },
    /// Histogram of key bits of the affordable nonzero weights.
    Keys {
        /// Keys and classes.
        ctx: KeyContext,
        /// The radix step.
        step: RadixStep,
    },
    /// Classes of the weights whose key is exactly the cut, in position order.
    Ties {
        /// Keys and classes.
        ctx: KeyContext,
        /// The cut (order-preserving bits of the key).
        cut: u32,
    },
    /// Keep the weights above the cut and the first `tie_quota[shard]` at it.
    Apply {
        /// Keys and classes.
        ctx: KeyContext,
        /// The cut, `None` when every affordable weight fits.
        cut: Option<u32>,
        /// Per shard, the weights at the cut to keep.
        tie_quota: Vec<u64>,
    },
    /// Keep only the weight at global `position` (value `weight`), zero the rest.
    KeepOnly {
        /// Global position.
        position: u64,
        /// Its value (restored if it was zeroed by `Apply`).
        weight: f32,
    },
}

/// The best single weight a shard holds.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BestWeight {
    /// Global position.
    pub position: u64,
    /// Its layer.
    pub layer: usize,
    /// Its value.
    pub weight: f32,
}

/// A sparse histogram: `(bucket, class, count)`, sorted by bucket then class.
pub type Histogram = Vec<(u32, u32, u64)>;

/// A shard's answer (sent as a [`ReplyMessage`]).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Reply {
    /// To [`Request::Stats`].
    Stats {
        /// First global position held.
        start: u64,
        /// Number of weights held.
        len: u64,
        /// Sum of `w^2`.
        sum_sq: f64,
        /// Largest `|w|`.
        max_abs: f32,
        /// `(layer, nonzeros)` for every layer touched.
        nonzeros: Vec<(usize, u64)>,
        /// Per layer touched, the largest-magnitude weight (first in position order).
        best: Vec<BestWeight>,
        /// Global position of the first NaN or infinite weight.
        non_finite: Option<u64>,
    },
    /// To [`Request::Magnitudes`]: one histogram per layer asked, in order
    /// (class 0 throughout).
    Magnitudes(Vec<Histogram>),
    /// To [`Request::Keys`].
    Keys(Histogram),
    /// To [`Request::Ties`]: runs `(class, count)` in position order.
    Ties(Vec<(u32, u64)>),
    /// To [`Request::Apply`].
    Applied {
        /// Sum of `w^2` kept.
        kept_value: f64,
        /// Kept weights per class.
        kept: Vec<u64>,
    },
    /// To [`Request::KeepOnly`].
    Done,
}

/// Order-preserving `u32` image of a finite `f32` (larger float, larger integer).
fn ordered_bits(k: f32) -> u32 {
    // `+ 0.0` turns -0.0 into 0.0: equal floats, equal images.
    let b = (k + 0.0).to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// How the weights of one segment are classed: as the in-memory classifier of a
/// whole layer, with the layer's threshold and this shard's share of the base
/// ties (those still unused by the shard's earlier segments of the layer).
#[derive(Debug, Clone, Copy)]
enum SegmentKind {
    /// Every weight in one class.
    Fixed(usize),
    /// Base or surcharged by magnitude against the layer's threshold.
    Ranked(Ranks),
}

/// The kind of `seg`; for a ranked segment, `used` (base ties taken per layer by
/// the shard so far) is advanced past it.
fn segment_kind(
    problem: &ShardedProblem,
    ctx: &KeyContext,
    shard: usize,
    seg: &Segment<'_>,
    used: &mut [u64],
) -> SegmentKind {
    let l = seg.layer;
    let c = &problem.costs[l];
    if c.surcharge == 0.0 || c.buffered as u64 >= problem.layer_lens[l] {
        return SegmentKind::Fixed(2 * l);
    }
    if c.buffered == 0 {
        return SegmentKind::Fixed(2 * l + 1);
    }
    match ctx.classes.iter().find(|k| k.layer == l) {
        Some(k) => {
            let quota = k.base_ties.get(shard).copied().unwrap_or(0);
            let ties = quota.saturating_sub(used[l]);
            let thr = abs_bits(k.threshold);
            let at = seg.weights.iter().filter(|v| abs_bits(**v) == thr).count() as u64;
            used[l] += at.min(ties);
            SegmentKind::Ranked(Ranks { thr, ties })
        }
        None => SegmentKind::Fixed(2 * l),
    }
}

/// Keys of a shard's weights: the key function, class parameters and costs.
struct ShardKeys<'a> {
    key: fn(f32, f32) -> f32,
    logarithmic: bool,
    params: &'a [f32],
    class_cost: &'a [f64],
    capacity: f64,
}

impl<'a> ShardKeys<'a> {
    fn new(problem: &ShardedProblem, ctx: &'a KeyContext, class_cost: &'a [f64]) -> Self {
        Self {
            key: key_fn(ctx),
            logarithmic: ctx.logarithmic,
            params: &ctx.params,
            class_cost,
            capacity: problem.capacity,
        }
    }

    fn affordable(&self, c: usize) -> bool {
        self.class_cost[c] <= self.capacity
    }

    /// Order-preserving bits of the key of `w` in class `c`.
    fn bits(&self, w: f32, c: usize) -> u32 {
        ordered_bits((self.key)(w, self.params[c]))
    }

    /// The magnitude bounds `(above, at_least)` of class `c` such that a nonzero
    /// weight's key bits lie in `[lo, hi]` exactly when its `|w|` bits lie in
    /// `(at_least, above]` (keys never decrease with `|w|` within a class); bounds
    /// that nothing passes for an unaffordable class.
    fn bounds(&self, c: usize, lo: u32, hi: u32) -> (i32, i32) {
        if !self.affordable(c) {
            return (i32::MAX, i32::MAX);
        }
        let k = |m: u32| self.bits(f32::from_bits(m), c);
        (
            largest_magnitude_bits(|m| k(m) <= hi),
            largest_magnitude_bits(|m| k(m) < lo),
        )
    }

    /// `f(index, key bits, class)` for every affordable nonzero weight of `seg`,
    /// in index order.
    fn each_key(&self, seg: &Segment<'_>, kind: SegmentKind, mut f: impl FnMut(usize, u32, usize)) {
        match kind {
            SegmentKind::Fixed(c) => {
                if !self.affordable(c) {
                    return;
                }
                for (i, &w) in seg.weights.iter().enumerate() {
                    if w != 0.0 {
                        f(i, self.bits(w, c), c);
                    }
                }
            }
            SegmentKind::Ranked(ranks) => {
                let c0 = 2 * seg.layer;
                let mut seen = 0u64;
                for (i, &w) in seg.weights.iter().enumerate() {
                    let c = c0 + usize::from(ranks.surcharged(abs_bits(w), &mut seen));
                    if w != 0.0 && self.affordable(c) {
                        f(i, self.bits(w, c), c);
                    }
                }
            }
        }
    }

    /// Count every affordable nonzero weight of `seg` into `counts` (`[bucket][class]`)
    /// by the bucket of its key under `step`. Linear keys of a one-class segment
    /// (most weights) eight at a time: `w * w * p >= +0`, whose order-preserving
    /// bits are its bits with the sign bit set; zeros are counted with the rest
    /// and taken out of the bucket of `+0` afterwards.
    fn count_all(
        &self,
        seg: &Segment<'_>,
        kind: SegmentKind,
        step: &RadixStep,
        counts: &mut [u64],
    ) {
        let classes = self.class_cost.len();
        match kind {
            SegmentKind::Fixed(c) if !self.logarithmic => {
                if !self.affordable(c) {
                    return;
                }
                let p = self.params[c];
                let bucket = |w: f32| step.bucket((w * w * p).to_bits() | 0x8000_0000) as usize;
                // Four interleaved tables: consecutive weights (often in the same
                // bucket) do not wait on each other's increments.
                let n = 1usize << step.bits;
                let mut local = vec![0u32; 4 * n];
                for part in seg.weights.chunks(PART) {
                    let mut zeros = 0u32;
                    let mut eights = part.chunks_exact(8);
                    for e in &mut eights {
                        let mut at = [0usize; 8];
                        for (b, &w) in at.iter_mut().zip(e) {
                            *b = bucket(w);
                        }
                        for (j, b) in at.into_iter().enumerate() {
                            local[(j & 3) * n + b] += 1;
                        }
                        zeros += e.iter().filter(|w| **w == 0.0).count() as u32;
                    }
                    for &w in eights.remainder() {
                        local[bucket(w)] += 1;
                        zeros += u32::from(w == 0.0);
                    }
                    let zero_bucket = bucket(0.0);
                    flush_tables(&mut local, zeros, zero_bucket, counts, classes, c);
                }
            }
            SegmentKind::Ranked(ranks) if !self.logarithmic => {
                // The class of each weight by magnitude, block by block as the
                // kernels do (in index order only in blocks holding a weight at the
                // threshold); four interleaved tables per class.
                let c0 = 2 * seg.layer;
                let p = [self.params[c0], self.params[c0 + 1]];
                let bucket =
                    |w: f32, s: usize| step.bucket((w * w * p[s]).to_bits() | 0x8000_0000) as usize;
                let n = 1usize << step.bits;
                let mut local = vec![0u32; 8 * n];
                let mut seen = 0u64;
                for part in seg.weights.chunks(PART) {
                    let mut zeros = [0u32; 2];
                    for b in part.chunks(BLOCK) {
                        let at = b.iter().filter(|v| abs_bits(**v) == ranks.thr).count();
                        for (j, &w) in b.iter().enumerate() {
                            let s = usize::from(ranks.in_block(abs_bits(w), at, &mut seen));
                            local[(4 * s + (j & 3)) * n + bucket(w, s)] += 1;
                            zeros[s] += u32::from(w == 0.0);
                        }
                    }
                    let zero_bucket = bucket(0.0, 0);
                    for (s, table) in local.chunks_mut(4 * n).enumerate() {
                        if self.affordable(c0 + s) {
                            flush_tables(table, zeros[s], zero_bucket, counts, classes, c0 + s);
                        } else {
                            table.fill(0);
                        }
                    }
                }
            }
            _ => self.each_key(seg, kind, |_, x, c| {
                counts[step.bucket(x) as usize * classes + c] += 1;
            }),
        }
    }

    /// [`Self::each_key`] restricted to keys with bits in `[lo, hi]`, found by the
    /// vectorised bracket scan against magnitude bounds.
    fn in_range(
        &self,
        seg: &Segment<'_>,
        kind: SegmentKind,
        lo: u32,
        hi: u32,
        mut f: impl FnMut(usize, u32, usize),
    ) {
        let w = &*seg.weights;
        match kind {
            SegmentKind::Fixed(c) => {
                let (t_hi, t_lo) = self.bounds(c, lo, hi);
                let mut at = Vec::new();
                for (k, part) in w.chunks(PART).enumerate() {
                    at.clear();
                    bound_scan(part, t_hi, t_lo, &mut at);
                    for &i in &at {
                        let i = k * PART + i as usize;
                        f(i, self.bits(w[i], c), c);
                    }
                }
            }
            SegmentKind::Ranked(ranks) => {
                let c0 = 2 * seg.layer;
                let (b0, b1) = (self.bounds(c0, lo, hi), self.bounds(c0 + 1, lo, hi));
                let mut at = Vec::new();
                // One call over the whole segment: the tie quota runs in index order.
                ranked_scan(w, ranks, [b0.0, b1.0], [b0.1, b1.1], &mut at);
                for (i, s) in at {
                    let c = c0 + s as usize;
                    f(i as usize, self.bits(w[i as usize], c), c);
                }
            }
        }
    }

    /// Keep the affordable weights with a key above `cut` (all of them if `None`)
    /// and those exactly at it while `quota` lasts (index order), zero the rest;
    /// count the kept per class.
    fn apply(
        &self,
        seg: &mut Segment<'_>,
        kind: SegmentKind,
        cut: Option<u32>,
        quota: &mut u64,
        kept: &mut [u64],
    ) {
        // Keep `(t_keep, ..]`, ties `(t_tie, t_keep]`: for "everything", keep the
        // nonzero weights (bits above 0) and no ties.
        let bounds = |c: usize| match cut {
            None if self.affordable(c) => (0, 0),
            None => (i32::MAX, i32::MAX),
            Some(t) => self.bounds(c, t, t),
        };
        let w = &mut *seg.weights;
        match kind {
            SegmentKind::Fixed(c) => {
                let (t_keep, t_tie) = bounds(c);
                for part in w.chunks_mut(PART) {
                    let (m, t) = bound_keep(part, t_keep, t_tie);
                    kept[c] += u64::from(m);
                    if t > 0 {
                        for v in part.iter_mut() {
                            let a = abs_bits(*v);
                            if (a > t_tie) & (a <= t_keep) & (a != 0) {
                                if *quota > 0 {
                                    *quota -= 1;
                                    kept[c] += 1;
                                } else {
                                    *v = 0.0;
                                }
                            }
                        }
                    }
                }
            }
            SegmentKind::Ranked(ranks) => {
                let c0 = 2 * seg.layer;
                let (b0, b1) = (bounds(c0), bounds(c0 + 1));
                let (keep_b, tie_b) = ([b0.0, b1.0], [b0.1, b1.1]);
                // Chunk by chunk: a copy of the chunk keeps the classes readable
                // (they follow from the values in index order) while ties, left
                // in place by the kernel, are settled in the same order.
                let mut before = Vec::with_capacity(CHUNK.min(w.len()));
                let mut seen = 0u64;
                for chunk in w.chunks_mut(CHUNK) {
                    before.clear();
                    before.extend_from_slice(chunk);
                    let mut seen_before = seen;
                    let (m, t) = ranked_keep(chunk, ranks, &mut seen, keep_b, tie_b);
                    kept[c0] += m[0];
                    kept[c0 + 1] += m[1];
                    if t == 0 {
                        continue;
                    }
                    for (v, &x) in chunk.iter_mut().zip(&before) {
                        let a = abs_bits(x);
                        let s = usize::from(ranks.surcharged(a, &mut seen_before));
                        if (a > tie_b[s]) & (a <= keep_b[s]) & (a != 0) {
                            if *quota > 0 {
                                *quota -= 1;
                                kept[c0 + s] += 1;
                            } else {
                                *v = 0.0;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Add four interleaved tables of bucket counts (`local`, four times the buckets)
/// into `counts` (`[bucket][class]`) for class `c`, less the `zeros` counted in the
/// bucket of the key +0 (`zero_bucket`), and clear them.
fn flush_tables(
    local: &mut [u32],
    zeros: u32,
    zero_bucket: usize,
    counts: &mut [u64],
    classes: usize,
    c: usize,
) {
    let n = local.len() / 4;
    for b in 0..n {
        let sum: u64 = (0..4).map(|k| u64::from(local[k * n + b])).sum();
        let zeros = if b == zero_bucket {
            u64::from(zeros)
        } else {
            0
        };
        counts[b * classes + c] += sum - zeros;
    }
    local.fill(0);
}

/// Weights per call of the 32-bit-counting kernels.
const PART: usize = 1 << 24;
/// Weights per chunk of the keep pass of a ranked segment.
const CHUNK: usize = 4096;

/// A shard's answer to one request, computed from its own weights.
///
/// `index` is the shard's number (position order, from 0). `Apply` and `KeepOnly`
/// modify the weights; the other requests only read them.
///
/// # Errors
/// [`Error::Protocol`] for a request of another protocol version or one that does
/// not fit the problem (a layer or class out of range, a malformed radix step);
/// [`Error::IndexOutOfRange`] for a shard holding a layer the problem does not
/// have.
pub fn answer(
    problem: &ShardedProblem,
    index: usize,
    shard: &mut Shard<'_>,
    message: &RequestMessage,
) -> Result<ReplyMessage> {
    check_version("request", message.version)?;
    answer_request(problem, index, shard, &message.request).map(ReplyMessage::new)
}

fn answer_request(
    problem: &ShardedProblem,
    index: usize,
    shard: &mut Shard<'_>,
    request: &Request,
) -> Result<Reply> {
    let layers = problem.costs.len();
    if let Some(seg) = shard.segments.iter().find(|s| s.layer >= layers) {
        return Err(Error::IndexOutOfRange {
            what: "segment layer",
            index: seg.layer,
            len: layers,
        });
    }
    let check_ctx = |ctx: &KeyContext| -> Result<()> {
        if ctx.params.len() != 2 * layers || ctx.classes.iter().any(|c| c.layer >= layers) {
            return Err(Error::protocol(
                "request",
                "key context: does not fit the problem (params per class, layers in range)",
            ));
        }
        Ok(())
    };
    let check_step = |s: &RadixStep| -> Result<()> {
        if s.bits == 0 || s.bits > 16 || s.known.checked_add(s.bits).is_none_or(|t| t > 32) {
            return Err(Error::protocol(
                "request",
                "radix step: bits in 1..=16, known + bits <= 32",
            ));
        }
        Ok(())
    };
    let offsets = problem.offsets();
    match request {
        Request::Stats => {
            let start = shard
                .segments
                .first()
                .map_or(0, |s| offsets[s.layer] + s.offset);
            let (mut sum_sq, mut max_abs) = (0.0f64, 0.0f32);
            let mut nonzeros: Vec<(usize, u64)> = Vec::new();
            let mut best: Vec<BestWeight> = Vec::new();
            let mut non_finite = None;
            for seg in &shard.segments {
                let base = offsets[seg.layer] + seg.offset;
                // Nonzeros and the largest |w| bits (NaN and infinities above those
                // of f32::MAX) in one vectorised pass; the sum of squares in another.
                let counts = bound_scan(seg.weights, i32::MAX, i32::MAX, &mut Vec::new());
                if counts.max_bits > abs_bits(f32::MAX) {
                    if non_finite.is_none() {
                        let i = seg.weights.iter().position(|v| !v.is_finite());
                        non_finite = i.map(|i| base + i as u64);
                    }
                    continue;
                }
                sum_sq += kernels::sum_sq(seg.weights);
                let top = f32::from_bits(counts.max_bits as u32);
                max_abs = max_abs.max(top);
                match nonzeros.last_mut() {
                    Some((l, n)) if *l == seg.layer => *n += counts.nonzeros,
                    _ => nonzeros.push((seg.layer, counts.nonzeros)),
                }
                if counts.nonzeros > 0 {
                    // The first weight of the largest magnitude.
                    let i = seg.weights.iter().position(|v| v.abs() == top).unwrap_or(0);
                    let cand = BestWeight {
                        position: base + i as u64,
                        layer: seg.layer,
                        weight: seg.weights[i],
                    };
                    match best.last_mut() {
                        Some(prev) if prev.layer == seg.layer => {
                            if top > prev.weight.abs() {
                                *prev = cand;
                            }
                        }
                        _ => best.push(cand),
                    }
                }
            }
            Ok(Reply::Stats {
                start,
                len: shard.len(),
                sum_sq,
                max_abs,
                nonzeros,
                best,
                non_finite,
            })
        }
        Request::Magnitudes { layers: asked } => {
            let mut out = Vec::with_capacity(asked.len());
            for (l, step) in asked {
                check_step(step)?;
                if *l >= layers {
                    return Err(Error::IndexOutOfRange {
                        what: "layer",
                        index: *l,
                        len: layers,
                    });
                }
                let mut counts = vec![0u64; 1 << step.bits];
                let (lo, hi) = step.range();
                for seg in shard.segments.iter().filter(|s| s.layer == *l) {
                    if step.known == 0 || lo == 0 {
                        for &v in seg.weights.iter() {
                            let x = v.abs().to_bits();
                            if step.matches(x) {
                                counts[step.bucket(x) as usize] += 1;
                            }
                        }
                    } else {
                        // Only the magnitudes under the prefix (none of them zero),
                        // found by the vectorised scan.
                        let hi = i32::try_from(hi).unwrap_or(i32::MAX);
                        let mut at = Vec::new();
                        bound_scan(seg.weights, hi, lo as i32 - 1, &mut at);
                        for i in at {
                            let x = seg.weights[i as usize].abs().to_bits();
                            counts[step.bucket(x) as usize] += 1;
                        }
                    }
                }
                out.push(
                    counts
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(b, n)| (b as u32, 0, *n))
                        .collect(),
                );
            }
            Ok(Reply::Magnitudes(out))
        }
        Request::Keys { ctx, step } => {
            check_ctx(ctx)?;
            check_step(step)?;
            let class_cost = problem.class_cost();
            let classes = class_cost.len();
            let mut counts = vec![0u64; (1usize << step.bits) * classes];
            let keys = ShardKeys::new(problem, ctx, &class_cost);
            let mut used = vec![0u64; layers];
            for seg in shard.segments.iter() {
                let kind = segment_kind(problem, ctx, index, seg, &mut used);
                if step.known == 0 {
                    // Every weight has a bucket: the keys of all of them.
                    keys.count_all(seg, kind, step, &mut counts);
                } else {
                    let (lo, hi) = step.range();
                    keys.in_range(seg, kind, lo, hi, |_, x, c| {
                        counts[step.bucket(x) as usize * classes + c] += 1;
                    });
                }
            }
            Ok(Reply::Keys(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, n)| ((i / classes) as u32, (i % classes) as u32, *n))
                    .collect(),
            ))
        }
        Request::Ties { ctx, cut } => {
            check_ctx(ctx)?;
            let class_cost = problem.class_cost();
            let keys = ShardKeys::new(problem, ctx, &class_cost);
            let mut runs: Vec<(u32, u64)> = Vec::new();
            let mut used = vec![0u64; layers];
            for seg in shard.segments.iter() {
                let kind = segment_kind(problem, ctx, index, seg, &mut used);
                keys.in_range(seg, kind, *cut, *cut, |_, _, c| match runs.last_mut() {
                    Some((rc, n)) if *rc == c as u32 => *n += 1,
                    _ => runs.push((c as u32, 1)),
                });
            }
            Ok(Reply::Ties(runs))
        }
        Request::Apply {
            ctx,
            cut,
            tie_quota,
        } => {
            check_ctx(ctx)?;
            let class_cost = problem.class_cost();
            let keys = ShardKeys::new(problem, ctx, &class_cost);
            let mut quota = tie_quota.get(index).copied().unwrap_or(0);
            let mut kept = vec![0u64; class_cost.len()];
            let mut kept_value = 0.0f64;
            let mut used = vec![0u64; layers];
            for seg in shard.segments.iter_mut() {
                let kind = segment_kind(problem, ctx, index, seg, &mut used);
                keys.apply(seg, kind, *cut, &mut quota, &mut kept);
                kept_value += kernels::sum_sq(seg.weights);
            }
            Ok(Reply::Applied { kept_value, kept })
        }
        Request::KeepOnly { position, weight } => {
            if !weight.is_finite() || *position >= problem.total() {
                return Err(Error::protocol(
                    "request",
                    format!(
                        "keep-only of weight {weight} at position {position}: must be finite and inside the weights"
                    ),
                ));
            }
            // The weight must be the one this shard holds there (or zeroed by the
            // apply round): a request carrying another value is refused before
            // anything changes.
            for seg in shard.segments.iter() {
                let base = offsets[seg.layer] + seg.offset;
                let end = base + seg.weights.len() as u64;
                if (base..end).contains(position) {
                    let held = seg.weights[(position - base) as usize];
                    if held != 0.0 && held.to_bits() != weight.to_bits() {
                        return Err(Error::protocol(
                            "request",
                            format!(
                                "keep-only of weight {weight} at position {position}, where \
                                 this shard holds {held}"
                            ),
                        ));
                    }
                }
            }
            for seg in shard.segments.iter_mut() {
                let base = offsets[seg.layer] + seg.offset;
                let end = base + seg.weights.len() as u64;
                seg.weights.fill(0.0);
                if (base..end).contains(position) {
                    seg.weights[(position - base) as usize] = *weight;
                }
            }
            Ok(Reply::Done)
        }
    }
}

fn key_fn(ctx: &KeyContext) -> fn(f32, f32) -> f32 {
    if ctx.logarithmic {
        |w, p| Logarithmic.key(w, p)
    } else {
        |w, p| Linear.key(w, p)
    }
}

/// Add a sparse histogram into a dense `[bucket][class]` table.
fn add_into(dense: &mut [u64], classes: usize, h: &Histogram) -> Result<()> {
    for &(b, c, n) in h {
        let i = b as usize * classes + c as usize;
        if c as usize >= classes || i >= dense.len() {
            return Err(Error::protocol(
                "keys",
                "histogram bucket or class out of range",
            ));
        }
        dense[i] = dense[i].saturating_add(n);
    }
    Ok(())
}

/// What a sharded projection did.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardedOutcome {
    /// As the in-memory [`Selection`] (`total_value` and `kept_value` summed shard
    /// by shard).
    pub selection: Selection,
    /// Request/reply rounds, i.e. passes over every shard's weights.
    pub rounds: usize,
    /// Largest single reply, in serialised-size units of 8 bytes per number.
    pub largest_reply_numbers: usize,
}

/// Bits the three radix rounds fix.
const RADIX_BITS: [u32; 3] = [12, 12, 8];

/// The version of the messages this crate sends and accepts; a message of another
/// version is refused with [`Error::Protocol`] (every party must run the same
/// protocol).
pub const PROTOCOL_VERSION: u32 = 2;

/// A [`Request`] on the wire, with the protocol version.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct RequestMessage {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The request.
    pub request: Request,
}

impl RequestMessage {
    /// `request` at this crate's [`PROTOCOL_VERSION`].
    pub fn new(request: Request) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            request,
        }
    }
}

/// A [`Reply`] on the wire, with the protocol version.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct ReplyMessage {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The reply.
    pub reply: Reply,
}

impl ReplyMessage {
    /// `reply` at this crate's [`PROTOCOL_VERSION`].
    pub fn new(reply: Reply) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            reply,
        }
    }
}

/// An error unless a message of `version` can be read here.
fn check_version(round: &'static str, version: u32) -> Result<()> {
    if version != PROTOCOL_VERSION {
        return Err(Error::protocol(
            round,
            format!("message of protocol version {version}, this side speaks {PROTOCOL_VERSION}"),
        ));
    }
    Ok(())
}

/// Where a [`Coordinator`] stands: the request it sends next.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Round {
    Stats,
    /// The statistics asked again when the state already fits, and compared.
    Verify,
    /// Radix step `step` (0..3) on the magnitudes of the rank-dependent layers.
    Magnitudes(usize),
    /// Radix step `step` (0..3) on the keys.
    Keys(usize),
    Ties,
    Apply,
    KeepOnly,
    Done,
}

impl Round {
    fn name(self) -> &'static str {
        match self {
            Round::Stats => "stats",
            Round::Verify => "verify",
            Round::Magnitudes(_) => "magnitudes",
            Round::Keys(_) => "keys",
            Round::Ties => "ties",
            Round::Apply => "apply",
            Round::KeepOnly => "keep-only",
            Round::Done => "done",
        }
    }
}

/// The coordinator of the sharded projection as a state machine: ask it for the
/// next request ([`Coordinator::next_request`]), deliver that request to every
/// shard, and hand it the replies in shard order ([`Coordinator::receive`]),
/// until `receive` returns the outcome. Each round has its own merge step
/// (`on_stats`, `on_magnitudes`, `on_keys`, `on_ties`, `on_applied`); a reply of
/// another round or protocol version, or one that does not fit what the earlier
/// rounds established, is an [`Error::Protocol`]. [`coordinate`] runs the whole
/// exchange through one callback.
#[derive(Debug)]
pub struct Coordinator<'p> {
    problem: std::borrow::Cow<'p, ShardedProblem>,
    class_cost: Vec<f64>,
    round: Round,
    rounds: usize,
    largest: usize,
    // Round 1, per shard: span, value, nonzeros per layer (and the replies, for
    // the verification pass of a state that fits).
    shard_lens: Vec<u64>,
    shard_starts: Vec<u64>,
    shard_value: Vec<f64>,
    shard_nonzeros: Vec<Vec<(usize, u64)>>,
    stats_replies: Vec<Reply>,
    total_value: f64,
    max_abs: f32,
    nonzeros: Vec<u64>,
    best: Option<BestWeight>,
    // Rounds 2-4: per rank-dependent layer `(prefix, known, above)`.
    ranked: Vec<usize>,
    magnitude_state: Vec<(u32, u32, u64)>,
    last_magnitudes: Vec<Vec<Histogram>>,
    /// Per shard and searched layer, the count in the bucket the last step chose
    /// (what the next step's histogram must add up to).
    magnitude_at: Vec<Vec<u64>>,
    // Rounds 5-8, per shard and class: counts above the buckets chosen so far and
    // in the bucket chosen last; the ties kept.
    key_above: Vec<Vec<u64>>,
    key_at: Vec<Vec<u64>>,
    tie_kept: Vec<Vec<u64>>,
    ctx: Option<KeyContext>,
    above: Vec<u64>,
    prefix: u32,
    known: u32,
    cut: Option<u32>,
    tie_quota: Vec<u64>,
    // Round 9.
    kept: Vec<u64>,
    kept_value: f64,
}

impl<'p> Coordinator<'p> {
    /// A coordinator for `problem`, about to ask for the statistics.
    ///
    /// # Errors
    /// A bad problem ([`ShardedProblem::validate`]).
    pub fn new(problem: &'p ShardedProblem) -> Result<Self> {
        problem.validate()?;
        let class_cost = problem.class_cost();
        Ok(Self {
            nonzeros: vec![0; problem.costs.len()],
            above: vec![0; class_cost.len()],
            class_cost,
            problem: std::borrow::Cow::Borrowed(problem),
            round: Round::Stats,
            rounds: 0,
            largest: 0,
            shard_lens: Vec::new(),
            shard_starts: Vec::new(),
            shard_value: Vec::new(),
            shard_nonzeros: Vec::new(),
            stats_replies: Vec::new(),
            magnitude_at: Vec::new(),
            key_above: Vec::new(),
            key_at: Vec::new(),
            tie_kept: Vec::new(),
            total_value: 0.0,
            max_abs: 0.0,
            best: None,
            ranked: Vec::new(),
            magnitude_state: Vec::new(),
            last_magnitudes: Vec::new(),
            ctx: None,
            prefix: 0,
            known: 0,
            cut: None,
            tie_quota: Vec::new(),
            kept: Vec::new(),
            kept_value: 0.0,
        })
    }

    /// A coordinator that owns its problem (for a coordinator kept between
    /// calls, e.g. behind another language's object).
    ///
    /// # Errors
    /// As [`Coordinator::new`].
    pub fn owned(problem: ShardedProblem) -> Result<Coordinator<'static>> {
        let c = Coordinator::new(&problem)?.detach();
        Ok(Coordinator {
            problem: std::borrow::Cow::Owned(problem),
            ..c
        })
    }

    /// This coordinator with its borrowed problem swapped for a placeholder (its
    /// state only; `owned` puts the problem back).
    fn detach(self) -> Coordinator<'static> {
        Coordinator {
            problem: std::borrow::Cow::Owned(ShardedProblem {
                costs: Vec::new(),
                layer_lens: Vec::new(),
                capacity: 0.0,
            }),
            class_cost: self.class_cost,
            round: self.round,
            rounds: self.rounds,
            largest: self.largest,
            shard_lens: self.shard_lens,
            shard_starts: self.shard_starts,
            shard_value: self.shard_value,
            shard_nonzeros: self.shard_nonzeros,
            stats_replies: self.stats_replies,
            total_value: self.total_value,
            max_abs: self.max_abs,
            nonzeros: self.nonzeros,
            best: self.best,
            ranked: self.ranked,
            magnitude_state: self.magnitude_state,
            last_magnitudes: self.last_magnitudes,
            magnitude_at: self.magnitude_at,
            key_above: self.key_above,
            key_at: self.key_at,
            tie_kept: self.tie_kept,
            ctx: self.ctx,
            above: self.above,
            prefix: self.prefix,
            known: self.known,
            cut: self.cut,
            tie_quota: self.tie_quota,
            kept: self.kept,
            kept_value: self.kept_value,
        }
    }

    /// The request to send to every shard now; `None` once the outcome is known.
    pub fn next_request(&self) -> Option<RequestMessage> {
        let ctx = || {
            self.ctx
                .clone()
                .expect("key context set after the magnitudes")
        };
        let request = match self.round {
            Round::Stats | Round::Verify => Request::Stats,
            Round::Magnitudes(step) => Request::Magnitudes {
                layers: self
                    .ranked
                    .iter()
                    .zip(&self.magnitude_state)
                    .map(|(&l, &(prefix, known, _))| {
                        (
                            l,
                            RadixStep {
                                prefix,
                                known,
                                bits: RADIX_BITS[step],
                            },
                        )
                    })
                    .collect(),
            },
            Round::Keys(step) => Request::Keys {
                ctx: ctx(),
                step: RadixStep {
                    prefix: self.prefix,
                    known: self.known,
                    bits: RADIX_BITS[step],
                },
            },
            Round::Ties => Request::Ties {
                ctx: ctx(),
                cut: self.prefix,
            },
            Round::Apply => Request::Apply {
                ctx: ctx(),
                cut: self.cut,
                tie_quota: self.tie_quota.clone(),
            },
            Round::KeepOnly => {
                let b = self.best.expect("a best weight for the single-item round");
                Request::KeepOnly {
                    position: b.position,
                    weight: b.weight,
                }
            }
            Round::Done => return None,
        };
        Some(RequestMessage::new(request))
    }

    /// Merge the replies to the last request (one per shard, in shard order): the
    /// outcome once the projection is complete, `None` while more rounds follow.
    ///
    /// # Errors
    /// [`Error::Protocol`] for replies of another version or round, a reply count
    /// other than the shards', shards that do not tile the weights, layers or
    /// classes out of range; [`Error::NonFinite`] naming the global position of a
    /// NaN or infinite weight (after round 1, so nothing has changed).
    pub fn receive(&mut self, replies: &[ReplyMessage]) -> Result<Option<ShardedOutcome>> {
        let round = self.round;
        if round == Round::Done {
            return Err(Error::protocol(
                "done",
                "the projection is complete; no reply is expected",
            ));
        }
        if round != Round::Stats && replies.len() != self.shard_lens.len() {
            return Err(Error::protocol(
                round.name(),
                format!(
                    "{} replies, expected one per shard ({})",
                    replies.len(),
                    self.shard_lens.len()
                ),
            ));
        }
        for r in replies {
            check_version(round.name(), r.version)?;
            self.largest = self.largest.max(reply_numbers(&r.reply));
        }
        self.rounds += 1;
        let replies: Vec<&Reply> = replies.iter().map(|r| &r.reply).collect();
        match round {
            Round::Stats => self.on_stats(&replies),
            Round::Verify => self.on_verify(&replies),
            Round::Magnitudes(step) => self.on_magnitudes(step, &replies).map(|()| None),
            Round::Keys(step) => self.on_keys(step, &replies).map(|()| None),
            Round::Ties => self.on_ties(&replies).map(|()| None),
            Round::Apply => self.on_applied(&replies),
            Round::KeepOnly => {
                if let Some(s) = replies.iter().position(|r| !matches!(r, Reply::Done)) {
                    return Err(Error::protocol(
                        "keep-only",
                        format!("shard {s}: expected Done"),
                    ));
                }
                Ok(Some(self.single_item_outcome()))
            }
            Round::Done => unreachable!("refused above"),
        }
    }

    fn outcome(&self, selection: Selection) -> ShardedOutcome {
        ShardedOutcome {
            selection,
            rounds: self.rounds,
            largest_reply_numbers: self.largest,
        }
    }

    /// The class of a layer's largest weight: base unless no weight is buffered.
    fn class_of_top(&self, layer: usize) -> usize {
        let c = &self.problem.costs[layer];
        2 * layer + usize::from(c.surcharge != 0.0 && c.buffered == 0)
    }

    /// The overlap of shard `s`'s span with layer `l`.
    fn overlap(&self, offsets: &[u64], s: usize, l: usize) -> u64 {
        let (a, b) = (
            self.shard_starts[s],
            self.shard_starts[s] + self.shard_lens[s],
        );
        let (c, d) = (offsets[l], offsets[l] + self.problem.layer_lens[l]);
        b.min(d).saturating_sub(a.max(c))
    }

    /// Round 1: spans, values, nonzeros, the best weight, each checked against
    /// the shard's span; a state that already fits is verified by a second pass.
    fn on_stats(&mut self, replies: &[&Reply]) -> Result<Option<ShardedOutcome>> {
        // A cheap copy for a borrowed problem, per-layer vectors for an owned one.
        let problem = self.problem.clone();
        let layers = problem.costs.len();
        let offsets = problem.offsets();
        let mut pos = 0u64;
        for (s, rep) in replies.iter().enumerate() {
            let Reply::Stats {
                start,
                len,
                sum_sq,
                max_abs: m,
                nonzeros: nz,
                best: b,
                non_finite,
            } = rep
            else {
                return Err(Error::protocol(
                    "stats",
                    format!("shard {s}: expected Stats"),
                ));
            };
            if let Some(p) = non_finite {
                return Err(Error::non_finite(
                    "weights (global position)",
                    *p as usize,
                    Origin::Input,
                ));
            }
            if *start != pos {
                return Err(Error::protocol(
                    "stats",
                    format!(
                        "shard {s} starts at {start}; shards must tile the weights in position order (expected start {pos})"
                    ),
                ));
            }
            pos = pos
                .checked_add(*len)
                .filter(|p| *p <= problem.total())
                .ok_or_else(|| {
                    Error::protocol(
                        "stats",
                        format!("shard {s}: shard length past the last weight"),
                    )
                })?;
            self.shard_starts.push(*start);
            self.shard_lens.push(*len);
            let bad = |why: String| Error::protocol("stats", format!("shard {s}: {why}"));
            if !(sum_sq.is_finite() && *sum_sq >= 0.0 && m.is_finite() && *m >= 0.0) {
                return Err(bad(format!(
                    "sum of squares {sum_sq} and largest magnitude {m} must be finite and >= 0"
                )));
            }
            let mut count = 0u64;
            let mut prev: Option<usize> = None;
            for &(l, n) in nz {
                if l >= layers || prev.is_some_and(|p| l <= p) {
                    return Err(bad(format!(
                        "nonzeros of layer {l}: layers must be in range and increasing"
                    )));
                }
                prev = Some(l);
                let room = self.overlap(&offsets, s, l);
                if n > room {
                    return Err(bad(format!(
                        "{n} nonzeros in layer {l}, which has {room} weights in the shard"
                    )));
                }
                count += n;
            }
            // Each nonzero weight adds at most m^2; the largest adds m^2.
            let m2 = f64::from(*m) * f64::from(*m);
            let slack = 1e-6 * m2 + f64::MIN_POSITIVE;
            if (count == 0) != (*m == 0.0)
                || *sum_sq > count as f64 * m2 * (1.0 + 1e-6) + slack
                || *sum_sq < m2 * (1.0 - 1e-6) - slack
            {
                return Err(bad(format!(
                    "{count} nonzeros, sum of squares {sum_sq} and largest magnitude {m} do not fit together"
                )));
            }
            let mut top = 0.0f32;
            let mut prev: Option<usize> = None;
            for cand in b {
                let l = cand.layer;
                let held = nz.iter().find(|e| e.0 == l).map_or(0, |e| e.1);
                let in_layer = l < layers
                    && (offsets[l]..offsets[l] + problem.layer_lens[l]).contains(&cand.position);
                let in_shard = (*start..*start + *len).contains(&cand.position);
                if !in_layer
                    || !in_shard
                    || held == 0
                    || prev.is_some_and(|p| l <= p)
                    || !cand.weight.is_finite()
                    || cand.weight == 0.0
                    || cand.weight.abs() > *m
                {
                    return Err(bad(format!(
                        "best weight {} of layer {l} at position {}: must be a finite nonzero \
                         of at most the shard's largest magnitude, in a layer with nonzeros, \
                         inside the layer and the shard, one per layer in order",
                        cand.weight, cand.position
                    )));
                }
                prev = Some(l);
                top = top.max(cand.weight.abs());
            }
            if top != *m || b.len() != nz.iter().filter(|e| e.1 > 0).count() {
                return Err(bad(format!(
                    "one best weight per layer with nonzeros, the largest of magnitude {m} \
                     (got {} for {} layers, largest {top})",
                    b.len(),
                    nz.iter().filter(|e| e.1 > 0).count()
                )));
            }
            self.total_value += sum_sq;
            self.shard_value.push(*sum_sq);
            self.max_abs = self.max_abs.max(*m);
            for &(l, n) in nz {
                self.nonzeros[l] += n;
            }
            self.shard_nonzeros.push(nz.clone());
            for cand in b {
                if self.class_cost[self.class_of_top(cand.layer)] > problem.capacity {
                    continue;
                }
                if self
                    .best
                    .is_none_or(|bw| cand.weight.abs() > bw.weight.abs())
                {
                    self.best = Some(*cand);
                }
            }
        }
        if pos != problem.total() {
            return Err(Error::shape(
                "weights held by the shards",
                problem.total() as usize,
                pos as usize,
            ));
        }
        let shards = replies.len();
        let classes = self.class_cost.len();
        self.key_above = vec![vec![0; classes]; shards];
        self.key_at = vec![vec![0; classes]; shards];
        let (counts, _) = classes_of_nonzeros(&problem.costs, &self.nonzeros);
        let charged_now = charged_of_classes(&counts, &self.class_cost);
        if charged_now <= problem.capacity {
            // Nothing to change: the same statistics once more, so that a reply
            // corrupted on its way cannot make an over-budget state pass as fitting.
            self.stats_replies = replies.iter().map(|r| (*r).clone()).collect();
            self.round = Round::Verify;
            return Ok(None);
        }
        self.ranked = (0..layers).filter(|&l| problem.rank_dependent(l)).collect();
        self.magnitude_state = vec![(0, 0, 0); self.ranked.len()];
        if self.ranked.is_empty() {
            self.start_keys(Vec::new());
        } else {
            self.round = Round::Magnitudes(0);
        }
        Ok(None)
    }

    /// The second statistics pass of a state that fits: the same replies, and the
    /// state unchanged.
    fn on_verify(&mut self, replies: &[&Reply]) -> Result<Option<ShardedOutcome>> {
        if replies.len() != self.stats_replies.len()
            || replies
                .iter()
                .zip(&self.stats_replies)
                .any(|(a, b)| *a != b)
        {
            return Err(Error::protocol(
                "verify",
                "the shards' statistics changed between two passes over unchanged weights",
            ));
        }
        let (counts, _) = classes_of_nonzeros(&self.problem.costs, &self.nonzeros);
        self.round = Round::Done;
        Ok(Some(self.outcome(Selection {
            kept: self.nonzeros.iter().sum(),
            charged: charged_of_classes(&counts, &self.class_cost),
            kept_value: self.total_value,
            total_value: self.total_value,
            single_item: false,
        })))
    }

    /// Rounds 2-4: one radix step towards each rank-dependent layer's threshold
    /// (its `buffered`-th largest `|w|`); after the last, the layers' classes.
    /// Each shard's histogram of a layer adds up to its weights of the layer
    /// (first step) or to its count in the bucket the previous step chose.
    fn on_magnitudes(&mut self, step: usize, replies: &[&Reply]) -> Result<()> {
        let bits = RADIX_BITS[step];
        let n = self.ranked.len();
        let offsets = self.problem.offsets();
        let mut dense = vec![vec![0u64; 1 << bits]; n];
        self.last_magnitudes.clear();
        for (s, rep) in replies.iter().enumerate() {
            let Reply::Magnitudes(hs) = rep else {
                return Err(Error::protocol(
                    "magnitudes",
                    format!("shard {s}: expected Magnitudes"),
                ));
            };
            if hs.len() != n {
                return Err(Error::protocol(
                    "magnitudes",
                    format!("shard {s}: one histogram per layer asked"),
                ));
            }
            for (j, (d, h)) in dense.iter_mut().zip(hs).enumerate() {
                if h.iter().any(|e| e.1 != 0) {
                    return Err(Error::protocol(
                        "magnitudes",
                        format!("shard {s}: magnitude histograms have class 0 only"),
                    ));
                }
                add_into(d, 1, h)?;
                let total = h.iter().fold(0u64, |a, e| a.saturating_add(e.2));
                let want = if step == 0 {
                    self.overlap(&offsets, s, self.ranked[j])
                } else {
                    self.magnitude_at[s][j]
                };
                if total != want {
                    return Err(Error::protocol(
                        "magnitudes",
                        format!(
                            "shard {s}: {total} magnitudes of layer {} where earlier rounds \
                             established {want}",
                            self.ranked[j]
                        ),
                    ));
                }
            }
            self.last_magnitudes.push(hs.clone());
        }
        let mut chosen_buckets = Vec::with_capacity(n);
        for (j, &l) in self.ranked.iter().enumerate() {
            let k = self.problem.costs[l].buffered as u64;
            let (prefix, known, above) = self.magnitude_state[j];
            let mut acc = above;
            let mut chosen = 0u32;
            for b in (0..(1u32 << bits)).rev() {
                let n = dense[j][b as usize];
                if acc.saturating_add(n) >= k {
                    chosen = b;
                    break;
                }
                acc = acc.saturating_add(n);
            }
            self.magnitude_state[j] = ((prefix << bits) | chosen, known + bits, acc);
            chosen_buckets.push(chosen);
        }
        self.magnitude_at = self
            .last_magnitudes
            .iter()
            .map(|hs| {
                hs.iter()
                    .zip(&chosen_buckets)
                    .map(|(h, &b)| h.iter().find(|e| e.0 == b).map_or(0, |e| e.2))
                    .collect()
            })
            .collect();
        if step + 1 < RADIX_BITS.len() {
            self.round = Round::Magnitudes(step + 1);
            return Ok(());
        }
        let mut class_info = Vec::with_capacity(n);
        for (j, &l) in self.ranked.iter().enumerate() {
            let (thr_bits, _, above) = self.magnitude_state[j];
            let k = self.problem.costs[l].buffered as u64;
            let mut left = k.saturating_sub(above);
            let base_ties = self
                .magnitude_at
                .iter()
                .map(|at| {
                    let q = at[j].min(left);
                    left -= q;
                    q
                })
                .collect();
            class_info.push(LayerClasses {
                layer: l,
                threshold: f32::from_bits(thr_bits),
                base_ties,
            });
        }
        self.start_keys(class_info);
        Ok(())
    }

    /// The key context of rounds 5-9, and the first key round.
    fn start_keys(&mut self, classes: Vec<LayerClasses>) {
        let capacity = self.problem.capacity;
        let scale = KeyScale::choose(self.max_abs, &self.class_cost, capacity);
        self.ctx = Some(KeyContext {
            logarithmic: scale == KeyScale::Logarithmic,
            params: self
                .class_cost
                .iter()
                .map(|&c| scale.param(c, capacity))
                .collect(),
            classes,
        });
        self.round = Round::Keys(0);
    }

    /// Check shard `s`'s per-class key counts `totals` of one key round against
    /// what is known: in the first step, the affordable nonzero weights of each
    /// layer it holds; later, its counts in the bucket the previous step chose.
    fn check_key_totals(&self, s: usize, step: usize, totals: &[u64]) -> Result<()> {
        let bad = |why: String| Error::protocol("keys", format!("shard {s}: {why}"));
        if step > 0 {
            if totals != self.key_at[s].as_slice() {
                return Err(bad(format!(
                    "key counts per class {totals:?} where the previous round established {:?}",
                    self.key_at[s]
                )));
            }
            return Ok(());
        }
        for (l, pair) in totals.chunks_exact(2).enumerate() {
            let held = self.shard_nonzeros[s]
                .iter()
                .find(|e| e.0 == l)
                .map_or(0, |e| e.1);
            let affordable =
                [2 * l, 2 * l + 1].map(|c| self.class_cost[c] <= self.problem.capacity);
            let counted = pair[0].saturating_add(pair[1]);
            let unaffordable_counted = (0..2).any(|k| !affordable[k] && pair[k] > 0);
            let exact = affordable[0] && affordable[1];
            if unaffordable_counted || counted > held || (exact && counted != held) {
                return Err(bad(format!(
                    "{counted} keys in layer {l}, which holds {held} nonzero weights in the shard"
                )));
            }
        }
        Ok(())
    }

    /// Rounds 5-7: one radix step towards the cut, the bucket whose cumulative
    /// cost crosses the capacity.
    fn on_keys(&mut self, step: usize, replies: &[&Reply]) -> Result<()> {
        let bits = RADIX_BITS[step];
        let classes = self.class_cost.len();
        let mut dense = vec![0u64; (1usize << bits) * classes];
        let mut hists = Vec::with_capacity(replies.len());
        for (s, rep) in replies.iter().enumerate() {
            let Reply::Keys(h) = rep else {
                return Err(Error::protocol("keys", format!("shard {s}: expected Keys")));
            };
            add_into(&mut dense, classes, h)?;
            let mut totals = vec![0u64; classes];
            for &(_, c, n) in h {
                totals[c as usize] = totals[c as usize].saturating_add(n);
            }
            self.check_key_totals(s, step, &totals)?;
            hists.push(h);
        }
        let mut chosen = None;
        let mut trial = self.above.clone();
        for b in (0..(1usize << bits)).rev() {
            let row = &dense[b * classes..(b + 1) * classes];
            trial
                .iter_mut()
                .zip(row)
                .for_each(|(t, n)| *t = t.saturating_add(*n));
            if charged_of_classes(&trial, &self.class_cost) > self.problem.capacity {
                chosen = Some(b as u32);
                break;
            }
            self.above.copy_from_slice(&trial);
        }
        // Per shard: what lies above the chosen bucket is kept, what is in it is
        // searched further (everything is kept when no bucket crosses).
        for (s, h) in hists.iter().enumerate() {
            self.key_at[s].iter_mut().for_each(|v| *v = 0);
            for &(b, c, n) in h.iter() {
                let c = c as usize;
                match chosen {
                    Some(cb) if b == cb => self.key_at[s][c] += n,
                    Some(cb) if b < cb => {}
                    _ => self.key_above[s][c] = self.key_above[s][c].saturating_add(n),
                }
            }
        }
        match chosen {
            Some(b) => {
                self.prefix = (self.prefix << bits) | b;
                self.known += bits;
                self.round = if step + 1 < RADIX_BITS.len() {
                    Round::Keys(step + 1)
                } else {
                    Round::Ties
                };
            }
            None => {
                // Every affordable weight fits: no cut, no ties.
                self.cut = None;
                self.tie_quota = vec![0; self.shard_lens.len()];
                self.tie_kept = vec![vec![0; classes]; self.shard_lens.len()];
                self.round = Round::Apply;
            }
        }
        Ok(())
    }

    /// Round 8: the weights at the cut, kept in position order while they fit.
    /// Each shard's ties add up, per class, to its count in the last key bucket.
    fn on_ties(&mut self, replies: &[&Reply]) -> Result<()> {
        let classes = self.class_cost.len();
        for (s, rep) in replies.iter().enumerate() {
            let Reply::Ties(runs) = rep else {
                return Err(Error::protocol("ties", format!("shard {s}: expected Ties")));
            };
            let mut per_class = vec![0u64; classes];
            for &(c, n) in runs {
                if c as usize >= classes || n == 0 {
                    return Err(Error::protocol(
                        "ties",
                        format!("shard {s}: class out of range or an empty run"),
                    ));
                }
                per_class[c as usize] = per_class[c as usize].saturating_add(n);
            }
            if per_class != self.key_at[s] {
                return Err(Error::protocol(
                    "ties",
                    format!(
                        "shard {s}: ties per class {per_class:?} where the key rounds \
                         established {:?}",
                        self.key_at[s]
                    ),
                ));
            }
        }
        let mut counts = self.above.clone();
        let mut open = true;
        let mut quota = Vec::with_capacity(replies.len());
        let mut kept = Vec::with_capacity(replies.len());
        for rep in replies {
            let Reply::Ties(runs) = rep else {
                unreachable!("checked above")
            };
            let mut q = 0u64;
            let mut k = vec![0u64; classes];
            for &(c, n) in runs {
                let c = c as usize;
                for _ in 0..n {
                    if !open {
                        break;
                    }
                    counts[c] += 1;
                    if charged_of_classes(&counts, &self.class_cost) <= self.problem.capacity {
                        q += 1;
                        k[c] += 1;
                    } else {
                        counts[c] -= 1;
                        open = false;
                    }
                }
            }
            quota.push(q);
            kept.push(k);
        }
        self.cut = Some(self.prefix);
        self.tie_quota = quota;
        self.tie_kept = kept;
        self.round = Round::Apply;
        Ok(())
    }

    /// Round 9: what the shards kept, each shard's counts equal to what the
    /// earlier rounds predict and the total cost verified against the capacity;
    /// round 10 follows when the best single weight beats the greedy prefix.
    fn on_applied(&mut self, replies: &[&Reply]) -> Result<Option<ShardedOutcome>> {
        let classes = self.class_cost.len();
        let mut kept = vec![0u64; classes];
        let mut kept_value = 0.0f64;
        for (s, rep) in replies.iter().enumerate() {
            let Reply::Applied {
                kept_value: v,
                kept: k,
            } = rep
            else {
                return Err(Error::protocol(
                    "apply",
                    format!("shard {s}: expected Applied"),
                ));
            };
            let want: Vec<u64> = self.key_above[s]
                .iter()
                .zip(&self.tie_kept[s])
                .map(|(a, t)| a + t)
                .collect();
            if *k != want {
                return Err(Error::protocol(
                    "apply",
                    format!(
                        "shard {s}: kept {k:?} per class where the earlier rounds established {want:?}"
                    ),
                ));
            }
            let value = self.shard_value[s];
            if !(v.is_finite() && *v >= 0.0 && *v <= value * (1.0 + 1e-9) + f64::MIN_POSITIVE) {
                return Err(Error::protocol(
                    "apply",
                    format!("shard {s}: kept value {v} outside [0, {value}]"),
                ));
            }
            kept_value += v;
            kept.iter_mut()
                .zip(k)
                .for_each(|(a, b)| *a = a.saturating_add(*b));
        }
        let charged = charged_of_classes(&kept, &self.class_cost);
        if charged > self.problem.capacity {
            return Err(Error::protocol(
                "apply",
                format!(
                    "the kept weights cost {charged}, over the capacity {}",
                    self.problem.capacity
                ),
            ));
        }
        self.kept = kept;
        self.kept_value = kept_value;
        if let Some(b) = self.best {
            let value = f64::from(b.weight) * f64::from(b.weight);
            if value > kept_value {
                self.round = Round::KeepOnly;
                return Ok(None);
            }
        }
        self.round = Round::Done;
        Ok(Some(self.outcome(Selection {
            kept: self.kept.iter().sum(),
            charged,
            kept_value,
            total_value: self.total_value,
            single_item: false,
        })))
    }

    /// Round 10 done: the best single weight alone.
    fn single_item_outcome(&mut self) -> ShardedOutcome {
        let b = self.best.expect("a best weight for the single-item round");
        let value = f64::from(b.weight) * f64::from(b.weight);
        self.round = Round::Done;
        self.outcome(Selection {
            kept: 1,
            charged: self.class_cost[self.class_of_top(b.layer)],
            kept_value: value,
            total_value: self.total_value,
            single_item: true,
        })
    }
}

/// Run the sharded projection: `exchange(request)` must deliver the request to
/// every shard and return their replies in shard order (each from [`answer`]).
/// The weights end as [`greedy_knapsack`](super::greedy_knapsack) would leave them
/// on the concatenated shards (see the [module docs](self) for the one exception).
/// A loop over a [`Coordinator`].
///
/// # Errors
/// As [`Coordinator::new`] and [`Coordinator::receive`], and the transport's
/// errors.
pub fn coordinate(
    problem: &ShardedProblem,
    mut exchange: impl FnMut(&RequestMessage) -> Result<Vec<ReplyMessage>>,
) -> Result<ShardedOutcome> {
    let mut c = Coordinator::new(problem)?;
    loop {
        let request = c
            .next_request()
            .ok_or_else(|| Error::protocol("done", "no outcome after the last round"))?;
        let replies = exchange(&request)?;
        if let Some(out) = c.receive(&replies)? {
            return Ok(out);
        }
    }
}

/// Numbers in a reply (its serialised size is about 8 bytes each).
fn reply_numbers(r: &Reply) -> usize {
    match r {
        Reply::Stats { nonzeros, best, .. } => 6 + 2 * nonzeros.len() + 3 * best.len(),
        Reply::Magnitudes(hs) => hs.iter().map(|h| 3 * h.len()).sum(),
        Reply::Keys(h) => 3 * h.len(),
        Reply::Ties(runs) => 2 * runs.len(),
        Reply::Applied { kept, .. } => 1 + kept.len(),
        Reply::Done => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_bits_preserve_order() {
        let xs = [-3.0f32, -1.0, -1e-30, 0.0, 1e-40, 1e-30, 0.5, 1.0, 3e38];
        for w in xs.windows(2) {
            assert!(ordered_bits(w[0]) < ordered_bits(w[1]), "{w:?}");
        }
    }

    #[test]
    fn key_histograms_count_every_affordable_nonzero_weight_once() {
        // A one-class layer (the eight-at-a-time path, zeros of both signs among
        // the weights, a tail under eight) and a ranked one (the general path).
        let mut w = vec![
            (0..1003)
                .map(|i| match i % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => (i as f32 - 500.0) / 37.0,
                })
                .collect::<Vec<f32>>(),
            (0..301).map(|i| (i % 17) as f32 - 8.0).collect(),
        ];
        let problem = ShardedProblem {
            costs: vec![
                LayerCost {
                    base: 1.5,
                    surcharge: 0.0,
                    buffered: 1003,
                },
                LayerCost {
                    base: 1.0,
                    surcharge: 2.0,
                    buffered: 40,
                },
            ],
            layer_lens: vec![1003, 301],
            capacity: 1e9,
        };
        let ctx = KeyContext {
            logarithmic: false,
            params: vec![1.0 / 1.5, 0.0, 1.0, 1.0 / 3.0],
            classes: vec![LayerClasses {
                layer: 1,
                threshold: 7.0,
                base_ties: vec![2],
            }],
        };
        let step = RadixStep {
            prefix: 0,
            known: 0,
            bits: 12,
        };
        let mut want = vec![0u64; (1 << 12) * 4];
        let mut seen = 0u64;
        for (l, layer) in w.iter().enumerate() {
            for &v in layer {
                // Layer 1: above 7 base, the first two at 7 base, the rest surcharged.
                let c = if l == 0 {
                    0
                } else if v.abs() > 7.0
                    || (v.abs() == 7.0 && {
                        seen += 1;
                        seen <= 2
                    })
                {
                    2
                } else {
                    3
                };
                if v != 0.0 {
                    let x = ordered_bits(v * v * ctx.params[c]);
                    want[step.bucket(x) as usize * 4 + c] += 1;
                }
            }
        }
        let mut shards = Shard::split(&mut w, 1);
        let reply = answer(
            &problem,
            0,
            &mut shards[0],
            &RequestMessage::new(Request::Keys { ctx, step }),
        )
        .unwrap()
        .reply;
        let Reply::Keys(h) = reply else {
            panic!("a key histogram")
        };
        let mut got = vec![0u64; (1 << 12) * 4];
        add_into(&mut got, 4, &h).unwrap();
        let diff: Vec<(usize, u64, u64)> = (0..got.len())
            .filter(|&i| got[i] != want[i])
            .map(|i| (i, got[i], want[i]))
            .collect();
        assert!(diff.is_empty(), "(index, got, want): {diff:?}");
    }

    #[test]
    fn shards_split_and_tile_the_weights() {
        let mut w = vec![vec![1.0f32; 5], vec![2.0; 3], vec![3.0; 4]];
        let shards = Shard::split(&mut w, 3);
        assert_eq!(shards.len(), 3);
        let lens: Vec<u64> = shards.iter().map(Shard::len).collect();
        assert_eq!(lens, vec![4, 4, 4]);
        assert_eq!(shards[1].segments[0].layer, 0);
        assert_eq!(shards[1].segments[0].offset, 4);
        assert_eq!(shards[1].segments[1].layer, 1);
        let problem = ShardedProblem {
            costs: vec![
                LayerCost {
                    base: 1.0,
                    surcharge: 0.0,
                    buffered: 0
                };
                3
            ],
            layer_lens: vec![5, 3, 4],
            capacity: 1.0,
        };
        let mut buf = vec![0.0f32; 6];
        let s = Shard::from_range(&problem, 3, &mut buf).unwrap();
        let layout: Vec<(usize, u64, usize)> = s
            .segments
            .iter()
            .map(|g| (g.layer, g.offset, g.weights.len()))
            .collect();
        assert_eq!(layout, vec![(0, 3, 2), (1, 0, 3), (2, 0, 1)]);
        let mut buf = vec![0.0f32; 20];
        assert!(Shard::from_range(&problem, 0, &mut buf).is_err());
    }
}
