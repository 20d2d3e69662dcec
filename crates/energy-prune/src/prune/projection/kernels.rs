//! The per-weight loops of the selection: statistics, the bracket scan and the
//! keep pass. Each loop has a portable form (branch-free, written so that the
//! compiler vectorises it) and, on x86-64 CPUs with AVX2, an explicit SIMD form
//! chosen at run time; the two give identical results (integer compares of the
//! bits of `|w|`, no floating-point arithmetic), which the tests check on blocks
//! full of ties, zeros and boundary values.
//!
//! Bounds are the bits of non-negative `f32` magnitudes as `i32` (they order like
//! the values); `-1` and `i32::MAX` serve as "everything" and "nothing" bounds.
//!
//! The module depends on no other part of the projection: the selection
//! (`select`) and the sharded protocol use it, and hand it cost classes in the
//! integer form [`Ranks`].

/// Weights per block of the branch-free loops (band members and ties are looked
/// up per block, from one 64-bit mask).
pub(super) const BLOCK: usize = 64;

/// Define `fn name(args) -> ret` whose body is compiled twice: for the baseline
/// target, and with AVX2 enabled, chosen at run time by CPU feature detection.
/// The body is the same code, so both give bit-identical results (no fused
/// multiply-add is introduced: Rust never contracts float operations).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn generic($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) -> $ret {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (detected just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

/// Sum of squares (f64, as [`sum_sq`]) and largest `|w|` of one piece of a layer.
/// A NaN poisons the sum (the caller reports it).
pub(super) fn layer_stats(w: &[f32]) -> (f64, f32) {
    (sum_sq(w), max_abs(w))
}

multiversion! {
/// Largest `|w|` in 16 independent lanes (vectorises; NaN is left to the sum of
/// squares: `f32::max` is NaN-aware and does not vectorise).
fn max_abs(w: &[f32]) -> f32 {
    let mut mx = [0.0f32; 16];
    let mut chunks = w.chunks_exact(16);
    for c in &mut chunks {
        for (m, v) in mx.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let tail = chunks.remainder().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    mx.iter().fold(tail, |a, b| a.max(*b))
}
}

/// A layer's cost classes in integer form for branch-free loops (made by the
/// selection's classifier): weights with `|w|` bits above `thr` are base, those
/// equal to it base while `seen < ties`; `thr = -1` charges every weight base.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ranks {
    pub(super) thr: i32,
    pub(super) ties: u64,
}

impl Ranks {
    /// [`Self::surcharged`] in a block holding `at` weights at the threshold: with
    /// none, no tie to count and no branch.
    #[inline(always)]
    pub(super) fn in_block(&self, a: i32, at: usize, seen: &mut u64) -> bool {
        if at == 0 {
            a < self.thr
        } else {
            self.surcharged(a, seen)
        }
    }

    /// Whether the next weight (in index order) with `|w|` bits `a` is surcharged.
    #[inline(always)]
    pub(super) fn surcharged(&self, a: i32, seen: &mut u64) -> bool {
        let at = a == self.thr;
        let base = (a > self.thr) | (at & (*seen < self.ties));
        *seen += at as u64;
        !base
    }
}

/// The bits of `|v|` as a non-negative `i32` (they order like the magnitudes).
#[inline(always)]
pub(super) fn abs_bits(v: f32) -> i32 {
    (v.to_bits() & 0x7fff_ffff) as i32
}

/// Independent `f64` lanes of [`sum_sq`]: enough partial sums in flight to hide
/// the latency of the adds (eight 4-wide AVX2 accumulators).
const LANES: usize = 32;

/// The largest `|w|` bits (of a finite `f32`, as `i32`) for which `ok` holds, for
/// `ok` true up to some magnitude and false above (a key compared with a bound:
/// keys never decrease with `|w|` within a class); -1 if not even zero passes.
/// A binary search over the 2^31 bit patterns, which order like the values.
pub(super) fn largest_magnitude_bits(ok: impl Fn(u32) -> bool) -> i32 {
    const TOP: u32 = 0x7f7f_ffff; // largest finite f32
    if !ok(0) {
        return -1;
    }
    if ok(TOP) {
        return TOP as i32;
    }
    let (mut yes, mut no) = (0u32, TOP);
    while no - yes > 1 {
        let mid = yes + (no - yes) / 2;
        if ok(mid) { yes = mid } else { no = mid }
    }
    yes as i32
}

/// Sum of squares in `f64`: element `i` goes to lane `i % 32` (the tail of under
/// 32 elements is added after the lanes, in order). Every square of an `f32` is
/// exact in `f64`, so the fused multiply-add of the AVX2 form rounds exactly as
/// the portable form's multiply-then-add: the two give the same bits.
pub(super) fn sum_sq(w: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (detected just above).
        return unsafe { avx2::sum_sq(w) };
    }
    portable::sum_sq(w)
}

/// The lanes of [`sum_sq`] added in order, then its tail.
#[inline(always)]
fn sum_lanes(acc: &[f64; LANES], tail: &[f32]) -> f64 {
    acc.iter().sum::<f64>()
        + tail
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
}

/// Band positions staged in a small buffer and appended in batches: two per block
/// written without a branch on whether there are any (a block holds none, one or
/// two nearly always; the rare further ones take a loop).
struct Stage {
    buf: [u32; BLOCK + 16],
    n: usize,
}

impl Stage {
    fn new() -> Self {
        Self {
            buf: [0; BLOCK + 16],
            n: 0,
        }
    }

    /// Stage `base + j` for every set bit `j` of `mask`, lowest first.
    #[inline(always)]
    fn block(&mut self, mut mask: u64, base: u32, out: &mut Vec<u32>) {
        for _ in 0..2 {
            // Written always, kept only if the mask had a bit (`n` below 16 + 64).
            self.buf[self.n] = base.wrapping_add(mask.trailing_zeros());
            self.n += usize::from(mask != 0);
            mask &= mask.wrapping_sub(1);
        }
        while mask != 0 {
            self.buf[self.n] = base.wrapping_add(mask.trailing_zeros());
            self.n += 1;
            mask &= mask - 1;
        }
        if self.n >= 16 {
            self.flush(out);
        }
    }

    fn flush(&mut self, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.buf[..self.n]);
        self.n = 0;
    }
}

/// What a bracket scan counted: items above the band (per class for ranked
/// layers), nonzero weights, and the largest `|w|` bits (above those of `f32::MAX`
/// exactly when a weight is infinite or NaN: the pass doubles as the finiteness
/// check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct ScanCounts {
    pub(super) above: [u64; 2],
    pub(super) nonzeros: u64,
    pub(super) max_bits: i32,
}

/// The bracket pass over weights of one cost class: how many have a key above
/// the band (`|w|` bits above `t_hi`), how many are nonzero, the largest `|w|`,
/// and the positions of those inside the band (bits in `(t_lo, t_hi]`, nonzero),
/// appended to `band` in index order.
pub(super) fn bound_scan(w: &[f32], t_hi: i32, t_lo: i32, band: &mut Vec<u32>) -> ScanCounts {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (detected just above).
        return unsafe { avx2::bound_scan(w, t_hi, t_lo, band) };
    }
    portable::bound_scan(w, t_hi, t_lo, band)
}

/// The keep pass over a chunk of one cost class: weights whose `|w|` bits are
/// above `t_keep` are kept, nonzero ones in `(t_tie, t_keep]` (exact ties with the
/// cut) left in place, the rest zeroed; returns (kept, ties).
pub(super) fn bound_keep(chunk: &mut [f32], t_keep: i32, t_tie: i32) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (detected just above).
        return unsafe { avx2::bound_keep(chunk, t_keep, t_tie) };
    }
    portable::bound_keep(chunk, t_keep, t_tie)
}

/// [`bound_scan`] for a layer whose cost depends on rank (`ranks`): per class
/// (base, surcharged) counts above the band, nonzeros, largest `|w|`, and
/// `(position, class)` of the band members. Blocks without a weight exactly at the
/// class threshold (nearly all) are classified without branches; the others in
/// index order.
pub(super) fn ranked_scan(
    w: &[f32],
    ranks: Ranks,
    hi_b: [i32; 2],
    lo_b: [i32; 2],
    band: &mut Vec<(u32, u8)>,
) -> ScanCounts {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (detected just above).
        return unsafe { avx2::ranked_scan(w, ranks, hi_b, lo_b, band) };
    }
    portable::ranked_scan(w, ranks, hi_b, lo_b, band)
}

/// [`bound_keep`] for a layer whose cost depends on rank: per class kept, and
/// ties left in place; `seen` carries the weights at the class threshold met so
/// far (the tie quota runs in index order).
pub(super) fn ranked_keep(
    chunk: &mut [f32],
    ranks: Ranks,
    seen: &mut u64,
    keep_b: [i32; 2],
    tie_b: [i32; 2],
) -> ([u64; 2], u32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (detected just above).
        return unsafe { avx2::ranked_keep(chunk, ranks, seen, keep_b, tie_b) };
    }
    portable::ranked_keep(chunk, ranks, seen, keep_b, tie_b)
}

/// One block of [`ranked_scan`] in index order: (above base, above surcharged,
/// zeros); band members appended with positions from `base`, `max_bits` raised to
/// the block's largest `|w|` bits.
#[inline(always)]
fn ranked_scan_block(
    b: &[f32],
    ranks: Ranks,
    (hi_b, lo_b): ([i32; 2], [i32; 2]),
    seen: &mut u64,
    base: u32,
    band: &mut Vec<(u32, u8)>,
    max_bits: &mut i32,
) -> (u32, u32, u32) {
    let at = b.iter().filter(|v| abs_bits(**v) == ranks.thr).count();
    let (mut na0, mut na1, mut z) = (0u32, 0u32, 0u32);
    let mut mask = 0u64;
    let mut surcharged = 0u64;
    for (j, &v) in b.iter().enumerate() {
        let a = abs_bits(v);
        *max_bits = (*max_bits).max(a);
        let s = ranks.in_block(a, at, seen);
        let (th, tl) = (hi_b[usize::from(s)], lo_b[usize::from(s)]);
        let up = a > th;
        na0 += (up & !s) as u32;
        na1 += (up & s) as u32;
        z += (a == 0) as u32;
        let inb = (a <= th) & (a > tl) & (a != 0);
        mask |= u64::from(inb) << j;
        surcharged |= u64::from(s) << j;
    }
    push_members(mask, base, |p, j| {
        band.push((p, ((surcharged >> j) & 1) as u8))
    });
    (na0, na1, z)
}

/// One block of [`ranked_keep`] in index order: (kept base, kept surcharged, ties).
#[inline(always)]
fn ranked_keep_block(
    b: &mut [f32],
    ranks: Ranks,
    seen: &mut u64,
    keep_b: [i32; 2],
    tie_b: [i32; 2],
) -> (u32, u32, u32) {
    let at = b.iter().filter(|v| abs_bits(**v) == ranks.thr).count();
    let (mut m0, mut m1, mut tb) = (0u32, 0u32, 0u32);
    for v in b.iter_mut() {
        let x = *v;
        let a = abs_bits(x);
        let s = ranks.in_block(a, at, seen);
        let (tk, tt) = (keep_b[usize::from(s)], tie_b[usize::from(s)]);
        let keep = (a > tk) & (a != 0);
        let tie = (a > tt) & (a <= tk) & (a != 0);
        m0 += (keep & !s) as u32;
        m1 += (keep & s) as u32;
        tb += tie as u32;
        *v = if keep | tie { x } else { 0.0 };
    }
    (m0, m1, tb)
}

/// Call `f(base + j, j)` for every set bit `j` of `mask`, lowest first.
#[inline(always)]
fn push_members(mut mask: u64, base: u32, mut f: impl FnMut(u32, u32)) {
    while mask != 0 {
        let j = mask.trailing_zeros();
        f(base + j, j);
        mask &= mask - 1;
    }
}

/// The portable forms (also the reference of the SIMD ones in the tests).
mod portable {
    use super::*;

    pub(super) fn bound_scan(w: &[f32], t_hi: i32, t_lo: i32, band: &mut Vec<u32>) -> ScanCounts {
        let (mut above, mut nonzeros, mut mx) = (0u64, 0u64, 0i32);
        let mut stage = Stage::new();
        let mut base = 0u32;
        for b in w.chunks(BLOCK) {
            let (mut na, mut z) = (0u32, 0u32);
            let mut mask = 0u64;
            for (j, &v) in b.iter().enumerate() {
                let a = abs_bits(v);
                mx = mx.max(a);
                let inb = (a <= t_hi) & (a > t_lo) & (a != 0);
                na += (a > t_hi) as u32;
                z += (a == 0) as u32;
                mask |= u64::from(inb) << j;
            }
            above += u64::from(na);
            nonzeros += (b.len() as u32 - z) as u64;
            stage.block(mask, base, band);
            base = base.wrapping_add(BLOCK as u32);
        }
        stage.flush(band);
        ScanCounts {
            above: [above, 0],
            nonzeros,
            max_bits: mx,
        }
    }

    pub(super) fn sum_sq(w: &[f32]) -> f64 {
        let mut acc = [0.0f64; LANES];
        let mut chunks = w.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += f64::from(*v) * f64::from(*v);
            }
        }
        sum_lanes(&acc, chunks.remainder())
    }

    pub(super) fn bound_keep(chunk: &mut [f32], t_keep: i32, t_tie: i32) -> (u32, u32) {
        let (mut m, mut t) = (0u32, 0u32);
        for v in chunk.iter_mut() {
            let x = *v;
            let a = abs_bits(x);
            let keep = a > t_keep;
            let tie = (a > t_tie) & (a <= t_keep) & (a != 0);
            m += keep as u32;
            t += tie as u32;
            *v = if keep | tie { x } else { 0.0 };
        }
        (m, t)
    }

    pub(super) fn ranked_scan(
        w: &[f32],
        ranks: Ranks,
        hi_b: [i32; 2],
        lo_b: [i32; 2],
        band: &mut Vec<(u32, u8)>,
    ) -> ScanCounts {
        let (mut above, mut nonzeros, mut max_bits) = ([0u64; 2], 0u64, 0i32);
        let mut seen = 0u64;
        let mut base = 0u32;
        for b in w.chunks(BLOCK) {
            let (na0, na1, z) =
                ranked_scan_block(b, ranks, (hi_b, lo_b), &mut seen, base, band, &mut max_bits);
            above[0] += u64::from(na0);
            above[1] += u64::from(na1);
            nonzeros += u64::from(b.len() as u32 - z);
            base = base.wrapping_add(BLOCK as u32);
        }
        ScanCounts {
            above,
            nonzeros,
            max_bits,
        }
    }

    pub(super) fn ranked_keep(
        chunk: &mut [f32],
        ranks: Ranks,
        seen: &mut u64,
        keep_b: [i32; 2],
        tie_b: [i32; 2],
    ) -> ([u64; 2], u32) {
        let (mut m, mut t) = ([0u64; 2], 0u32);
        for b in chunk.chunks_mut(BLOCK) {
            let (m0, m1, tb) = ranked_keep_block(b, ranks, seen, keep_b, tie_b);
            m[0] += u64::from(m0);
            m[1] += u64::from(m1);
            t += tb;
        }
        (m, t)
    }
}

/// The AVX2 forms: eight weights per instruction, band members and classes read
/// off `movemask` bits, blocks holding a weight exactly at a layer's class
/// threshold (tie quota in index order) handed to the portable block code.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Counts held in 32-bit lanes are added up at least every this many weights
    /// (a lane gains at most one per eight weights).
    const FLUSH: usize = 1 << 24;

    /// Sum of the eight (non-negative) 32-bit lanes.
    #[target_feature(enable = "avx2")]
    fn lanes_sum(v: __m256i) -> u64 {
        let mut a = [0u32; 8];
        // SAFETY: `a` holds 32 bytes; unaligned store.
        unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), v) };
        a.iter().map(|&x| u64::from(x)).sum()
    }

    /// The largest of the eight 32-bit lanes.
    #[target_feature(enable = "avx2")]
    fn lanes_max(v: __m256i) -> i32 {
        let mut a = [0i32; 8];
        // SAFETY: `a` holds 32 bytes; unaligned store.
        unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), v) };
        a.into_iter().fold(0, i32::max)
    }

    /// The bits of `|w|` of the eight weights at `p`.
    ///
    /// # Safety
    /// `p` must point at eight readable `f32`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load_abs(p: *const f32) -> __m256i {
        // SAFETY: the caller guarantees eight readable floats; unaligned load.
        let v = unsafe { _mm256_loadu_si256(p.cast()) };
        _mm256_and_si256(v, _mm256_set1_epi32(0x7fff_ffff))
    }

    /// One bit per lane (lane 0 lowest) of a compare mask.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn bits(m: __m256i) -> u64 {
        u64::from(_mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32)
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bound_scan(
        w: &[f32],
        t_hi: i32,
        t_lo: i32,
        band: &mut Vec<u32>,
    ) -> ScanCounts {
        let (hi, lo, zero) = (
            _mm256_set1_epi32(t_hi),
            _mm256_set1_epi32(t_lo),
            _mm256_setzero_si256(),
        );
        let (mut above, mut zeros, mut max_bits) = (0u64, 0u64, 0i32);
        let mut mx = zero;
        let mut stage = Stage::new();
        let mut base = 0u32;
        for part in w.chunks(FLUSH) {
            let (mut na, mut nz) = (zero, zero);
            let mut blocks = part.chunks_exact(BLOCK);
            for b in &mut blocks {
                let mut mask = 0u64;
                for k in 0..BLOCK / 8 {
                    // SAFETY: `b` holds BLOCK floats, so 8 from 8 * k.
                    let a = unsafe { load_abs(b.as_ptr().add(8 * k)) };
                    mx = _mm256_max_epi32(mx, a);
                    let up = _mm256_cmpgt_epi32(a, hi);
                    let z = _mm256_cmpeq_epi32(a, zero);
                    let inb =
                        _mm256_andnot_si256(_mm256_or_si256(up, z), _mm256_cmpgt_epi32(a, lo));
                    na = _mm256_sub_epi32(na, up);
                    nz = _mm256_sub_epi32(nz, z);
                    mask |= bits(inb) << (8 * k);
                }
                stage.block(mask, base, band);
                base = base.wrapping_add(BLOCK as u32);
            }
            stage.flush(band);
            above += lanes_sum(na);
            zeros += lanes_sum(nz);
            let rest = blocks.remainder();
            if !rest.is_empty() {
                // The tail (under one block): the portable loop, positions offset.
                let from = band.len();
                let tail = portable::bound_scan(rest, t_hi, t_lo, band);
                band[from..]
                    .iter_mut()
                    .for_each(|p| *p = p.wrapping_add(base));
                above += tail.above[0];
                zeros += rest.len() as u64 - tail.nonzeros;
                max_bits = max_bits.max(tail.max_bits);
                base = base.wrapping_add(rest.len() as u32);
            }
        }
        ScanCounts {
            above: [above, 0],
            nonzeros: w.len() as u64 - zeros,
            max_bits: max_bits.max(lanes_max(mx)),
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_sq(w: &[f32]) -> f64 {
        let mut acc = [_mm256_setzero_pd(); LANES / 4];
        let mut chunks = w.chunks_exact(LANES);
        for c in &mut chunks {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: `c` holds LANES floats, so 4 from 4 * k.
                let x = _mm256_cvtps_pd(unsafe { _mm_loadu_ps(c.as_ptr().add(4 * k)) });
                *a = _mm256_fmadd_pd(x, x, *a);
            }
        }
        let mut lanes = [0.0f64; LANES];
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: `lanes` holds 4 doubles from 4 * k.
            unsafe { _mm256_storeu_pd(lanes.as_mut_ptr().add(4 * k), *a) };
        }
        sum_lanes(&lanes, chunks.remainder())
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bound_keep(chunk: &mut [f32], t_keep: i32, t_tie: i32) -> (u32, u32) {
        let (tk, tt, zero) = (
            _mm256_set1_epi32(t_keep),
            _mm256_set1_epi32(t_tie),
            _mm256_setzero_si256(),
        );
        let (mut m, mut t) = (zero, zero);
        let mut eights = chunk.chunks_exact_mut(8);
        for c in &mut eights {
            // SAFETY: `c` holds eight floats.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
            let a = _mm256_and_si256(v, _mm256_set1_epi32(0x7fff_ffff));
            let keep = _mm256_cmpgt_epi32(a, tk);
            let z = _mm256_cmpeq_epi32(a, zero);
            let tie = _mm256_andnot_si256(_mm256_or_si256(keep, z), _mm256_cmpgt_epi32(a, tt));
            m = _mm256_sub_epi32(m, keep);
            t = _mm256_sub_epi32(t, tie);
            let out = _mm256_and_si256(v, _mm256_or_si256(keep, tie));
            // SAFETY: as the load.
            unsafe { _mm256_storeu_si256(c.as_mut_ptr().cast(), out) };
        }
        let (rm, rt) = portable::bound_keep(eights.into_remainder(), t_keep, t_tie);
        (lanes_sum(m) as u32 + rm, lanes_sum(t) as u32 + rt)
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn ranked_scan(
        w: &[f32],
        ranks: Ranks,
        hi_b: [i32; 2],
        lo_b: [i32; 2],
        band: &mut Vec<(u32, u8)>,
    ) -> ScanCounts {
        let zero = _mm256_setzero_si256();
        let thr = _mm256_set1_epi32(ranks.thr);
        let (h0, h1) = (_mm256_set1_epi32(hi_b[0]), _mm256_set1_epi32(hi_b[1]));
        let (l0, l1) = (_mm256_set1_epi32(lo_b[0]), _mm256_set1_epi32(lo_b[1]));
        let (mut above, mut zeros, mut max_bits) = ([0u64; 2], 0u64, 0i32);
        let mut mx = zero;
        let mut seen = 0u64;
        let mut base = 0u32;
        for part in w.chunks(FLUSH) {
            let (mut na0, mut na1, mut nz) = (zero, zero, zero);
            for b in part.chunks(BLOCK) {
                let mut a = [zero; BLOCK / 8];
                let mut at = zero;
                if b.len() == BLOCK {
                    for (k, ak) in a.iter_mut().enumerate() {
                        // SAFETY: `b` holds BLOCK floats, so 8 from 8 * k.
                        *ak = unsafe { load_abs(b.as_ptr().add(8 * k)) };
                        mx = _mm256_max_epi32(mx, *ak);
                        at = _mm256_or_si256(at, _mm256_cmpeq_epi32(*ak, thr));
                    }
                }
                if b.len() < BLOCK || _mm256_testz_si256(at, at) == 0 {
                    // A short block, or one with a weight at the threshold: in order.
                    let (x0, x1, z) = ranked_scan_block(
                        b,
                        ranks,
                        (hi_b, lo_b),
                        &mut seen,
                        base,
                        band,
                        &mut max_bits,
                    );
                    above[0] += u64::from(x0);
                    above[1] += u64::from(x1);
                    zeros += u64::from(z);
                    base = base.wrapping_add(BLOCK as u32);
                    continue;
                }
                let (mut mask, mut surcharged) = (0u64, 0u64);
                for (k, &ak) in a.iter().enumerate() {
                    let s = _mm256_cmpgt_epi32(thr, ak);
                    let th = _mm256_blendv_epi8(h0, h1, s);
                    let tl = _mm256_blendv_epi8(l0, l1, s);
                    let up = _mm256_cmpgt_epi32(ak, th);
                    let z = _mm256_cmpeq_epi32(ak, zero);
                    let inb =
                        _mm256_andnot_si256(_mm256_or_si256(up, z), _mm256_cmpgt_epi32(ak, tl));
                    na0 = _mm256_sub_epi32(na0, _mm256_andnot_si256(s, up));
                    na1 = _mm256_sub_epi32(na1, _mm256_and_si256(s, up));
                    nz = _mm256_sub_epi32(nz, z);
                    mask |= bits(inb) << (8 * k);
                    surcharged |= bits(s) << (8 * k);
                }
                push_members(mask, base, |p, j| {
                    band.push((p, ((surcharged >> j) & 1) as u8))
                });
                base = base.wrapping_add(BLOCK as u32);
            }
            above[0] += lanes_sum(na0);
            above[1] += lanes_sum(na1);
            zeros += lanes_sum(nz);
        }
        ScanCounts {
            above,
            nonzeros: w.len() as u64 - zeros,
            max_bits: max_bits.max(lanes_max(mx)),
        }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn ranked_keep(
        chunk: &mut [f32],
        ranks: Ranks,
        seen: &mut u64,
        keep_b: [i32; 2],
        tie_b: [i32; 2],
    ) -> ([u64; 2], u32) {
        let zero = _mm256_setzero_si256();
        let thr = _mm256_set1_epi32(ranks.thr);
        let (k0, k1) = (_mm256_set1_epi32(keep_b[0]), _mm256_set1_epi32(keep_b[1]));
        let (t0, t1) = (_mm256_set1_epi32(tie_b[0]), _mm256_set1_epi32(tie_b[1]));
        let (mut kept, mut ties) = ([0u64; 2], 0u64);
        for part in chunk.chunks_mut(FLUSH) {
            let (mut m0, mut m1, mut tb) = (zero, zero, zero);
            for b in part.chunks_mut(BLOCK) {
                let mut v = [zero; BLOCK / 8];
                let mut at = zero;
                if b.len() == BLOCK {
                    for (k, vk) in v.iter_mut().enumerate() {
                        // SAFETY: `b` holds BLOCK floats, so 8 from 8 * k.
                        *vk = unsafe { _mm256_loadu_si256(b.as_ptr().add(8 * k).cast()) };
                        let a = _mm256_and_si256(*vk, _mm256_set1_epi32(0x7fff_ffff));
                        at = _mm256_or_si256(at, _mm256_cmpeq_epi32(a, thr));
                    }
                }
                if b.len() < BLOCK || _mm256_testz_si256(at, at) == 0 {
                    let (x0, x1, t) = ranked_keep_block(b, ranks, seen, keep_b, tie_b);
                    kept[0] += u64::from(x0);
                    kept[1] += u64::from(x1);
                    ties += u64::from(t);
                    continue;
                }
                for (k, &vk) in v.iter().enumerate() {
                    let a = _mm256_and_si256(vk, _mm256_set1_epi32(0x7fff_ffff));
                    let s = _mm256_cmpgt_epi32(thr, a);
                    let tk = _mm256_blendv_epi8(k0, k1, s);
                    let tt = _mm256_blendv_epi8(t0, t1, s);
                    let z = _mm256_cmpeq_epi32(a, zero);
                    let gk = _mm256_cmpgt_epi32(a, tk);
                    let keep = _mm256_andnot_si256(z, gk);
                    let tie =
                        _mm256_andnot_si256(_mm256_or_si256(gk, z), _mm256_cmpgt_epi32(a, tt));
                    m0 = _mm256_sub_epi32(m0, _mm256_andnot_si256(s, keep));
                    m1 = _mm256_sub_epi32(m1, _mm256_and_si256(s, keep));
                    tb = _mm256_sub_epi32(tb, tie);
                    let out = _mm256_and_si256(vk, _mm256_or_si256(keep, tie));
                    // SAFETY: as the load.
                    unsafe { _mm256_storeu_si256(b.as_mut_ptr().add(8 * k).cast(), out) };
                }
            }
            kept[0] += lanes_sum(m0);
            kept[1] += lanes_sum(m1);
            ties += lanes_sum(tb);
        }
        (kept, ties as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

    /// Weights full of what the kernels must get right: zeros of both signs,
    /// values exactly at the bounds, one bit either side, NaN and infinities (the
    /// scan's largest magnitude reports them), and random values.
    fn hostile(rng: &mut ChaCha12Rng, n: usize, bounds: &[i32]) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
                match rng.random_range(0..60) {
                    0 => f32::NAN,
                    1 => f32::INFINITY * sign,
                    2..10 => 0.0 * sign,
                    10..30 => {
                        let b = bounds[rng.random_range(0..bounds.len())];
                        let d = rng.random_range(-1i32..=1);
                        let bits = b.saturating_add(d).clamp(0, 0x7f7f_ffff) as u32;
                        sign * f32::from_bits(bits)
                    }
                    _ => rng.random_range(-2.0f32..2.0),
                }
            })
            .collect()
    }

    fn bound(rng: &mut ChaCha12Rng) -> i32 {
        match rng.random_range(0..8) {
            0 => -1,
            1 => i32::MAX,
            2 => 0,
            _ => abs_bits(rng.random_range(0.0f32..2.0)),
        }
    }

    #[test]
    fn simd_kernels_equal_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut rng = ChaCha12Rng::seed_from_u64(11);
        for case in 0..400 {
            let n = match case % 4 {
                0 => rng.random_range(0..200),
                1 => 64 * rng.random_range(1..40),
                _ => rng.random_range(1..5000),
            };
            let (mut hi, mut lo) = (bound(&mut rng), bound(&mut rng));
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            let (hi2, lo2) = (bound(&mut rng), bound(&mut rng));
            let thr = if rng.random_bool(0.2) {
                abs_bits(f32::INFINITY)
            } else {
                bound(&mut rng).max(0)
            };
            let w = hostile(&mut rng, n, &[hi, lo, hi2, lo2, thr]);
            let ranks = Ranks {
                thr,
                ties: rng.random_range(0..4),
            };

            let (mut a, mut b) = (Vec::new(), Vec::new());
            let got = bound_scan(&w, hi, lo, &mut a);
            assert_eq!(got, portable::bound_scan(&w, hi, lo, &mut b), "case {case}");
            assert_eq!(a, b, "case {case}");

            let (mut a, mut b) = (Vec::new(), Vec::new());
            let got = ranked_scan(&w, ranks, [hi, hi2], [lo, lo2], &mut a);
            let want = portable::ranked_scan(&w, ranks, [hi, hi2], [lo, lo2], &mut b);
            assert_eq!(got, want, "case {case}");
            assert_eq!(a, b, "case {case}");

            let finite: Vec<f32> = w
                .iter()
                .filter(|v| v.is_finite())
                .map(|v| v * 1e-3)
                .collect();
            assert_eq!(
                sum_sq(&finite).to_bits(),
                portable::sum_sq(&finite).to_bits(),
                "case {case}"
            );

            let (mut x, mut y) = (w.clone(), w.clone());
            let got = bound_keep(&mut x, hi, lo);
            assert_eq!(got, portable::bound_keep(&mut y, hi, lo), "case {case}");
            assert_eq!(bits_of(&x), bits_of(&y), "case {case}");

            let (mut x, mut y) = (w.clone(), w.clone());
            let (mut s1, mut s2) = (0u64, 0u64);
            let got = ranked_keep(&mut x, ranks, &mut s1, [hi, hi2], [lo, lo2]);
            let want = portable::ranked_keep(&mut y, ranks, &mut s2, [hi, hi2], [lo, lo2]);
            assert_eq!((got, s1), (want, s2), "case {case}");
            assert_eq!(bits_of(&x), bits_of(&y), "case {case}");
        }
    }

    fn bits_of(w: &[f32]) -> Vec<u32> {
        w.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn layer_stats_by_hand() {
        let mut w = vec![0.5f32; 37];
        w[20] = -4.0;
        w[36] = 3.0;
        // 35 * 0.25 + 16 + 9 = 33.75; largest magnitude 4.
        assert_eq!(layer_stats(&w), (33.75, 4.0));
        w[5] = f32::NAN;
        assert!(layer_stats(&w).0.is_nan());
        assert_eq!(layer_stats(&[]), (0.0, 0.0));
    }

    #[test]
    fn largest_magnitude_bits_by_hand() {
        assert_eq!(largest_magnitude_bits(|m| m <= 12_345), 12_345);
        assert_eq!(largest_magnitude_bits(|_| false), -1);
        assert_eq!(largest_magnitude_bits(|_| true), abs_bits(f32::MAX));
        // The largest |w| with w * w * 0.5 <= 2 is 2.
        let b = largest_magnitude_bits(|m| f32::from_bits(m).powi(2) * 0.5 <= 2.0);
        assert_eq!(f32::from_bits(b as u32), 2.0);
    }

    #[test]
    fn portable_scan_counts_by_hand() {
        // |w| bits: 0 (zero), 1.0, 2.0, 3.0 with hi = bits(2.0), lo = bits(1.0).
        let w = [0.0f32, -1.0, 2.0, -3.0, 1.5, -0.0];
        let (hi, lo) = (abs_bits(2.0), abs_bits(1.0));
        let mut band = Vec::new();
        // Above: 3.0. Nonzero: four. Band (lo, hi]: 2.0 and 1.5 at positions 2 and 4.
        let counts = portable::bound_scan(&w, hi, lo, &mut band);
        assert_eq!(counts.above[0], 1);
        assert_eq!(counts.nonzeros, 4);
        assert_eq!(counts.max_bits, abs_bits(3.0));
        assert_eq!(band, [2, 4]);
        let mut k = w;
        // Keep above 2.0, ties in (1.0, 2.0], zero the rest.
        assert_eq!(portable::bound_keep(&mut k, hi, lo), (1, 2));
        assert_eq!(k, [0.0, 0.0, 2.0, -3.0, 1.5, 0.0]);
    }
}
