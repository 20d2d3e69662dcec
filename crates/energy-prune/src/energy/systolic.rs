//! The analytic energy model of a systolic-array accelerator (Yang, Zhu, Liu,
//! "Energy-Constrained Compression for Deep Neural Networks via Weighted Sparse
//! Projection and Layer Input Masking", ICLR 2019, appendix).
//!
//! An Eyeriss-like chip: an `m x n` array of MAC units, an input buffer of `S_in`
//! and a weight buffer of `S_w` elements, and DRAM. Energy is counted in units of
//! one register-file access; only conv and fully-connected layers are modelled.
//!
//! # Exact energy of a layer
//! For a conv layer (input `C x H x W`, `D` filters of `(C/G) x R x R`, stride `t`,
//! padding `P`, `G` groups), with `A = H' W'` output positions and `Q = ceil(A / m)`:
//! ```text
//! E_compute = e_mac * N_mac
//! E_weights = e_buf Q N_w + e_rf A N_w + e_dram (min(N_w, S_w) + Q max(0, N_w - S_w))
//! E_input   = e_dram (N_x + L + D A) + e_buf U ceil((D/G) / n) + e_rf U ceil(D/G)
//! ```
//! `N_w` nonzero weights; `N_x` nonzero inputs; `N_mac` products of a nonzero weight
//! with a nonzero in-bounds input; `U` (output position, nonzero in-bounds input of
//! its receptive field) pairs; `L` input reloads when the input does not fit the
//! input buffer (rows are loaded in bands of as many whole rows as fit; the rows a
//! band shares with the next are read again).
//!
//! For a fully-connected layer (`C` inputs, `D` outputs):
//! ```text
//! E_compute = e_mac N_w
//! E_weights = (e_dram + e_buf + e_rf) N_w
//! E_input   = e_buf ceil(D/n) N_x + e_rf D N_x + e_dram (min(N_x, S_in) + ceil(D/n) max(0, N_x - S_in)) + e_dram D
//! ```
//! All counts are exact integers: `N_mac` is counted per kernel tap from
//! (strided) prefix sums of the input mask, never by convolving 0/1 tensors, so the
//! exact energy of a network costs about one pass over its weights.
//!
//! # Relaxed energy and knapsack costs
//! `E_input` does not depend on the weights. The relaxed conv compute is
//! `e_mac A N_w` (every weight meets every output position), an upper bound of the
//! exact one; with `beta_in = e_dram + Q e_buf + A e_rf` and
//! `beta_out = Q (e_dram + e_buf) + A e_rf` the relaxed energy is
//! `sum E_input + sum over nonzero weights of c_i`, with
//! `c_i = beta_in + e_mac A` for the `S_w` largest weights of a conv layer and
//! `c_i + beta_out - beta_in` for the others, and `c_i = e_dram + e_buf + e_rf + e_mac`
//! for linear layers.
//!
//! # Width form
//! For continuous channel counts the model is evaluated with every weight and input
//! dense, and with the array-tiling ceilings relaxed, `ceil(x / n) -> x / n`, so that
//! it is differentiable: within the buffer limits it is a constant plus linear plus
//! bilinear terms in the widths. At integer widths whose per-group output channel
//! counts are multiples of `n` it equals the exact dense energy of the narrowed
//! network. The reload term `L` is piecewise constant per element and is held fixed
//! in the gradient.
//!
//! What is ignored: pooling, activations, normalisation, control logic, and any
//! overlap of computation with data movement.

use crate::arch::{Architecture, Conv2dGeometry, Layer, LayerKind, valid_range};
use crate::energy::precision::{LayerPrecision, NumberFormat, PrecisionScaling, check_precision};
use crate::energy::{
    CostPart, EnergyReport, LayerCost, LayerEnergy, WeightEnergyModel, WidthCostModel,
};
use crate::error::{Error, Result, ensure};
use crate::network::{NetworkState, check_mask_len};

/// Access energy of one conv weight: `beta_in` while it fits the weight buffer,
/// `beta_out` when it spills (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightAccessEnergy {
    /// `e_dram + Q e_buf + A e_rf`.
    pub beta_in: f64,
    /// The access energy of a weight beyond the buffer.
    pub beta_out: f64,
}

/// Hardware parameters of the systolic array (energies relative to one
/// register-file access).
///
/// | field | default | range | meaning |
/// |---|---|---|---|
/// | `rows` (m) | 12 | >= 1 | array rows: output positions per pass |
/// | `cols` (n) | 14 | >= 1 | array columns: output channels per pass |
/// | `input_buffer` (S_in) | 51 200 | >= 1 | input buffer, elements |
/// | `weight_buffer` (S_w) | 4 096 | >= 1 | weight buffer, elements |
/// | `e_mac` | 3 | >= 0 | one MAC incl. its register-file traffic |
/// | `e_dram` | 200 | >= 0 | one DRAM access |
/// | `e_buf` | 6 | >= 0 | one buffer access |
/// | `e_rf` | 1 | >= 0 | one register-file access |
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "SystolicConfigFields")
)]
pub struct SystolicConfig {
    /// Array rows m.
    pub rows: usize,
    /// Array columns n.
    pub cols: usize,
    /// Input buffer capacity S_in (elements).
    pub input_buffer: u64,
    /// Weight buffer capacity S_w (elements).
    pub weight_buffer: u64,
    /// Energy of one MAC.
    pub e_mac: f64,
    /// Energy of one DRAM access.
    pub e_dram: f64,
    /// Energy of one buffer access.
    pub e_buf: f64,
    /// Energy of one register-file access.
    pub e_rf: f64,
    /// How the unit energies and buffer sizes scale with a layer's precision
    /// (see [`precision`](super::precision)); irrelevant at 16 bits.
    pub precision: PrecisionScaling,
}

/// The serialised form of a [`SystolicConfig`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct SystolicConfigFields {
    rows: usize,
    cols: usize,
    input_buffer: u64,
    weight_buffer: u64,
    e_mac: f64,
    e_dram: f64,
    e_buf: f64,
    e_rf: f64,
    #[serde(default)]
    precision: PrecisionScaling,
}

#[cfg(feature = "serde")]
impl TryFrom<SystolicConfigFields> for SystolicConfig {
    type Error = Error;
    fn try_from(f: SystolicConfigFields) -> Result<Self> {
        let cfg = SystolicConfig {
            rows: f.rows,
            cols: f.cols,
            input_buffer: f.input_buffer,
            weight_buffer: f.weight_buffer,
            e_mac: f.e_mac,
            e_dram: f.e_dram,
            e_buf: f.e_buf,
            e_rf: f.e_rf,
            precision: f.precision,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Name of the report part `E_compute` (MACs and register-file reads).
pub const COMPUTE: &str = "compute";
/// Name of the report part `E_weights` (weight movement through DRAM, buffer and
/// register files).
pub const WEIGHT_MOVEMENT: &str = "weight movement";
/// Name of the report part `E_input` (input movement plus output write-back).
pub const INPUT_MOVEMENT: &str = "input movement";

/// The three parts of a layer's energy in the systolic model.
fn parts(compute: f64, weight_access: f64, input_access: f64) -> Vec<CostPart> {
    vec![
        CostPart::new(COMPUTE, compute),
        CostPart::new(WEIGHT_MOVEMENT, weight_access),
        CostPart::new(INPUT_MOVEMENT, input_access),
    ]
}

impl Default for SystolicConfig {
    fn default() -> Self {
        Self::EYERISS
    }
}

impl SystolicConfig {
    /// The Eyeriss-like defaults of the spec: a 12 x 14 array, 51 200-element input
    /// buffer, 4 096-element weight buffer, unit energies MAC 3, DRAM 200, buffer 6,
    /// register file 1.
    pub const EYERISS: Self = Self {
        rows: 12,
        cols: 14,
        input_buffer: 51_200,
        weight_buffer: 4_096,
        e_mac: 3.0,
        e_dram: 200.0,
        e_buf: 6.0,
        e_rf: 1.0,
        precision: PrecisionScaling::HOROWITZ,
    };

    /// Check every field against its range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.rows > 0,
            "rows",
            self.rows,
            "the array needs at least one row",
        )?;
        ensure(
            self.cols > 0,
            "cols",
            self.cols,
            "the array needs at least one column",
        )?;
        ensure(
            self.input_buffer > 0,
            "input_buffer",
            self.input_buffer,
            "must be >= 1 element",
        )?;
        ensure(
            self.weight_buffer > 0,
            "weight_buffer",
            self.weight_buffer,
            "must be >= 1 element",
        )?;
        for (name, v) in [
            ("e_mac", self.e_mac),
            ("e_dram", self.e_dram),
            ("e_buf", self.e_buf),
            ("e_rf", self.e_rf),
        ] {
            if !(0.0..=MAX_UNIT_ENERGY).contains(&v) {
                return Err(Error::param(
                    name,
                    v,
                    format!("unit energies must be in [0, {MAX_UNIT_ENERGY:e}]"),
                ));
            }
        }
        self.precision.validate()?;
        ensure(
            self.e_mac + self.e_dram + self.e_buf + self.e_rf > 0.0,
            "unit energies",
            "all zero",
            "at least one must be > 0 (else every network costs nothing)",
        )
    }
}

/// Largest unit energy accepted (in units of the MAC energy): a layer's energy
/// (at most about 2^80 accesses times this) then stays finite in `f64`.
pub const MAX_UNIT_ENERGY: f64 = 1e12;

/// Precomputed, weight-independent figures of a conv layer.
#[derive(Debug, Clone)]
struct ConvPre {
    g: Conv2dGeometry,
    a: u64,
    q: u64,
    /// Output rows (cols) whose input row (col) is in bounds, per kernel row (col).
    tap_y: Vec<u64>,
    tap_x: Vec<u64>,
    /// (output position, tap) pairs reading input row y (col x).
    cover_y: Vec<u64>,
    cover_x: Vec<u64>,
    /// `tap_y[i] * tap_x[j]`, row-major over the kernel.
    dense_taps: Vec<u64>,
    beta_in: f64,
    beta_out: f64,
}

/// The unit energies and buffer sizes of one layer at its precision: `w` prices
/// the weights (and, in `w.e_mac`, the MACs), `x` the input and output activations.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Units {
    w: SystolicConfig,
    x: SystolicConfig,
}

impl Units {
    /// The scaling of [`precision`](super::precision); the configuration itself at
    /// the reference precision.
    fn of(cfg: &SystolicConfig, precision: LayerPrecision) -> Self {
        let side = |format: NumberFormat| {
            let k = PrecisionScaling::movement(format);
            SystolicConfig {
                e_dram: cfg.e_dram * k,
                e_buf: cfg.e_buf * k,
                e_rf: cfg.e_rf * k,
                input_buffer: PrecisionScaling::capacity(cfg.input_buffer, format),
                weight_buffer: PrecisionScaling::capacity(cfg.weight_buffer, format),
                ..*cfg
            }
        };
        if precision.is_reference() {
            return Self { w: *cfg, x: *cfg };
        }
        let mut w = side(precision.weights);
        w.e_mac = cfg.precision.mac_energy(cfg.e_mac, precision);
        Self {
            w,
            x: side(precision.activations),
        }
    }
}

#[derive(Debug, Clone)]
enum Pre {
    Conv(Box<ConvPre>),
    Linear { c: u64, d: u64 },
}

/// The analytic systolic-array energy model; see the [module docs](self).
///
/// # Examples
/// ```
/// use energy_prune::arch::zoo;
/// use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
/// use energy_prune::network::NetworkState;
/// # fn main() -> energy_prune::Result<()> {
/// let arch = zoo::lenet5()?;
/// let model = SystolicArray::new(&arch, SystolicConfig::default())?;
/// let dense = model.energy(&NetworkState::dense(&arch))?;
/// assert_eq!(dense.total, 17_107_544.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SystolicArray {
    arch: Architecture,
    cfg: SystolicConfig,
    precision: Vec<LayerPrecision>,
    units: Vec<Units>,
    pre: Vec<Pre>,
    dense_input: Vec<f64>,
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

impl SystolicArray {
    /// Build the model for `arch`, precomputing every weight-independent figure.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a configuration out of range;
    /// [`Error::BufferTooSmall`] if the input buffer cannot hold the `R` rows of some
    /// layer's dense input that one output row needs.
    pub fn new(arch: &Architecture, cfg: SystolicConfig) -> Result<Self> {
        Self::with_precision(
            arch,
            cfg,
            &vec![LayerPrecision::REFERENCE; arch.layers().len()],
        )
    }

    /// The model for `arch` with layer `l` at `precision[l]` (see
    /// [`precision`](super::precision) for the scaling; [`SystolicArray::new`] is
    /// every layer at the 16-bit reference).
    ///
    /// ```
    /// use energy_prune::arch::zoo;
    /// use energy_prune::energy::{LayerPrecision, SystolicArray, SystolicConfig, WeightEnergyModel};
    /// use energy_prune::network::NetworkState;
    /// # fn main() -> energy_prune::Result<()> {
    /// let arch = zoo::lenet5()?;
    /// let int8 = vec![LayerPrecision::int(8, 8)?; arch.layers().len()];
    /// let m16 = SystolicArray::new(&arch, SystolicConfig::default())?;
    /// let m8 = SystolicArray::with_precision(&arch, SystolicConfig::default(), &int8)?;
    /// let dense = NetworkState::dense(&arch);
    /// assert!(m8.energy_total(&dense)? < 0.6 * m16.energy_total(&dense)?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`SystolicArray::new`]; as [`check_precision`].
    pub fn with_precision(
        arch: &Architecture,
        cfg: SystolicConfig,
        precision: &[LayerPrecision],
    ) -> Result<Self> {
        cfg.validate()?;
        check_precision(arch, precision)?;
        let units: Vec<Units> = precision.iter().map(|p| Units::of(&cfg, *p)).collect();
        let m = cfg.rows as u64;
        let pre: Vec<Pre> = arch
            .layers()
            .iter()
            .zip(&units)
            .map(|(layer, u)| match &layer.kind {
                LayerKind::Conv2d(g) => {
                    let (oh, ow) = (g.out_h(), g.out_w());
                    let a = (oh * ow) as u64;
                    let q = ceil_div(a, m);
                    let taps = |k: usize, n: usize, out: usize| -> Vec<u64> {
                        (0..k)
                            .map(|i| {
                                let (lo, hi) = valid_range(i, g.padding, g.stride, n, out);
                                (hi - lo) as u64
                            })
                            .collect()
                    };
                    let cover = |k: usize, n: usize, out: usize| -> Vec<u64> {
                        let mut c = vec![0u64; n];
                        for o in 0..out {
                            for i in 0..k {
                                let y = (o * g.stride + i) as isize - g.padding as isize;
                                if y >= 0 && (y as usize) < n {
                                    c[y as usize] += 1;
                                }
                            }
                        }
                        c
                    };
                    let tap_y = taps(g.kernel_h, g.in_h, oh);
                    let tap_x = taps(g.kernel_w, g.in_w, ow);
                    let dense_taps = tap_y
                        .iter()
                        .flat_map(|ty| tap_x.iter().map(move |tx| ty * tx))
                        .collect();
                    let (qf, af, e) = (q as f64, a as f64, &u.w);
                    Pre::Conv(Box::new(ConvPre {
                        g: *g,
                        a,
                        q,
                        cover_y: cover(g.kernel_h, g.in_h, oh),
                        cover_x: cover(g.kernel_w, g.in_w, ow),
                        tap_y,
                        tap_x,
                        dense_taps,
                        beta_in: e.e_dram + qf * e.e_buf + af * e.e_rf,
                        beta_out: qf * e.e_dram + qf * e.e_buf + af * e.e_rf,
                    }))
                }
                LayerKind::Linear(g) => Pre::Linear {
                    c: g.in_features as u64,
                    d: g.out_features as u64,
                },
            })
            .collect();
        let mut model = Self {
            arch: arch.clone(),
            cfg,
            precision: precision.to_vec(),
            units,
            pre,
            dense_input: Vec::new(),
        };
        model.dense_input = model.input_energy(&vec![None; arch.layers().len()])?;
        Ok(model)
    }

    /// The hardware parameters.
    pub fn config(&self) -> &SystolicConfig {
        &self.cfg
    }

    /// The precision of every layer.
    pub fn precision(&self) -> &[LayerPrecision] {
        &self.precision
    }

    /// The per-weight access energies `beta_in` / `beta_out` of conv layer `layer`
    /// (see the module docs; None for linear layers).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for a bad index.
    pub fn conv_access_energy(&self, layer: usize) -> Result<Option<WeightAccessEnergy>> {
        self.arch.layer(layer)?;
        Ok(match &self.pre[layer] {
            Pre::Conv(p) => Some(WeightAccessEnergy {
                beta_in: p.beta_in,
                beta_out: p.beta_out,
            }),
            Pre::Linear { .. } => None,
        })
    }

    /// `E_input` of every layer with dense inputs (the all-zero-weights energy is their sum).
    pub fn dense_input_energy(&self) -> &[f64] {
        &self.dense_input
    }

    /// Energy of the network with every weight zero and dense inputs: the floor that
    /// no weight pruning can go below.
    pub fn dense_floor(&self) -> f64 {
        self.dense_input.iter().sum()
    }

    fn check_lens(&self, a: usize, b: usize) -> Result<()> {
        let n = self.pre.len();
        if a != n || b != n {
            return Err(Error::shape(
                "per-layer entries",
                n,
                if a != n { a } else { b },
            ));
        }
        Ok(())
    }

    fn conv_weight_energy(u: &Units, p: &ConvPre, nw: u64) -> f64 {
        let e = &u.w;
        let sw = e.weight_buffer;
        e.e_buf * (p.q * nw) as f64
            + e.e_rf * (p.a * nw) as f64
            + e.e_dram * (nw.min(sw) + p.q * nw.saturating_sub(sw)) as f64
    }

    /// (compute, weight access) of the relaxed model for `nw` nonzero weights.
    fn relaxed_weight_terms(u: &Units, p: &Pre, nw: u64) -> (f64, f64) {
        let e = &u.w;
        match p {
            Pre::Conv(c) => (
                e.e_mac * (c.a * nw) as f64,
                Self::conv_weight_energy(u, c, nw),
            ),
            Pre::Linear { .. } => (
                e.e_mac * nw as f64,
                (e.e_dram + e.e_buf + e.e_rf) * nw as f64,
            ),
        }
    }

    fn linear_input_energy(u: &Units, nx: u64, d: u64) -> f64 {
        let e = &u.x;
        let dn = ceil_div(d, e.cols as u64);
        let sin = e.input_buffer;
        e.e_buf * (dn * nx) as f64
            + e.e_rf * (d * nx) as f64
            + e.e_dram * (nx.min(sin) + dn * nx.saturating_sub(sin)) as f64
            + e.e_dram * d as f64
    }

    /// `E_input` of a conv layer given its input mask (None = dense).
    fn conv_input_energy(
        u: &Units,
        layer: &Layer,
        p: &ConvPre,
        mask: Option<&[f32]>,
    ) -> Result<f64> {
        let g = &p.g;
        let e = &u.x;
        let (h, w) = (g.in_h, g.in_w);
        let (nx, u, rows): (u64, u64, Vec<u64>) = match mask {
            None => {
                let sum_y: u64 = p.cover_y.iter().sum();
                let sum_x: u64 = p.cover_x.iter().sum();
                let c = g.in_channels as u64;
                (c * (h * w) as u64, c * sum_y * sum_x, vec![c * w as u64; h])
            }
            Some(m) => {
                let mut nx = 0u64;
                let mut u = 0u64;
                let mut rows = vec![0u64; h];
                for plane in m.chunks_exact(h * w) {
                    for (y, row) in plane.chunks_exact(w).enumerate() {
                        let mut ry = 0u64;
                        let mut cov = 0u64;
                        for (x, v) in row.iter().enumerate() {
                            if *v != 0.0 {
                                ry += 1;
                                cov += p.cover_x[x];
                            }
                        }
                        rows[y] += ry;
                        nx += ry;
                        u += cov * p.cover_y[y];
                    }
                }
                (nx, u, rows)
            }
        };
        let l = Self::reloads(e.input_buffer, layer, g, &rows)?;
        let d = g.out_channels as u64;
        let dg = g.out_per_group() as u64;
        Ok(e.e_dram * (nx + l + d * p.a) as f64
            + e.e_buf * (u * ceil_div(dg, e.cols as u64)) as f64
            + e.e_rf * (u * dg) as f64)
    }

    /// Input reloads `L` from the nonzero count of each (unpadded) input row.
    fn reloads(sin: u64, layer: &Layer, g: &Conv2dGeometry, rows: &[u64]) -> Result<u64> {
        let pad = g.padding;
        let hp = rows.len() + 2 * pad;
        let r_at = |y: usize| -> u64 {
            if y < pad || y >= pad + rows.len() {
                0
            } else {
                rows[y - pad]
            }
        };
        let (kh, t) = (g.kernel_h, g.stride);
        let too_small = || {
            // The smallest buffer that holds any R-row window a band can start at.
            let needed = (0..hp.saturating_sub(kh) + 1)
                .step_by(t)
                .map(|b| (b..b + kh).map(r_at).sum::<u64>())
                .max()
                .unwrap_or(0);
            Error::BufferTooSmall {
                layer: layer.name.clone(),
                buffer: sin,
                needed,
            }
        };
        let (mut b, mut l) = (0usize, 0u64);
        loop {
            let (mut e, mut sum) = (b, 0u64);
            while e < hp && sum + r_at(e) <= sin {
                sum += r_at(e);
                e += 1;
            }
            if e - b < kh {
                return Err(too_small());
            }
            let next = b + ((e - b - kh) / t + 1) * t;
            if next + kh > hp {
                return Ok(l);
            }
            l += (next..e).map(r_at).sum::<u64>();
            b = next;
        }
    }

    /// Number of (nonzero weight, nonzero in-bounds input) products of a conv layer.
    fn conv_macs(&self, p: &ConvPre, weights: &[f32], mask: Option<&[f32]>) -> u64 {
        let g = &p.g;
        let kk = g.kernel_h * g.kernel_w;
        let cg = g.in_per_group();
        let dg = g.out_per_group();
        match mask {
            None => weights
                .chunks_exact(kk)
                .map(|f| {
                    f.iter()
                        .zip(&p.dense_taps)
                        .filter(|(w, _)| **w != 0.0)
                        .map(|(_, c)| *c)
                        .sum::<u64>()
                })
                .sum(),
            Some(m) => {
                let counts = self.masked_tap_counts(p, m);
                let mut total = 0u64;
                for (d, filt) in weights.chunks_exact(cg * kk).enumerate() {
                    let grp = d / dg;
                    for (ci, taps) in filt.chunks_exact(kk).enumerate() {
                        let cnt = &counts[(grp * cg + ci) * kk..(grp * cg + ci + 1) * kk];
                        total += taps
                            .iter()
                            .zip(cnt)
                            .filter(|(w, _)| **w != 0.0)
                            .map(|(_, c)| *c)
                            .sum::<u64>();
                    }
                }
                total
            }
        }
    }

    /// For every (channel, kernel tap), the number of output positions whose input
    /// under that tap is in bounds and unmasked, via strided 2-D prefix sums.
    fn masked_tap_counts(&self, p: &ConvPre, mask: &[f32]) -> Vec<u64> {
        let g = &p.g;
        let (h, w, s) = (g.in_h, g.in_w, g.stride);
        let (oh, ow) = (g.out_h(), g.out_w());
        let kk = g.kernel_h * g.kernel_w;
        let mut counts = vec![0u64; g.in_channels * kk];
        let mut ps = vec![0u64; h * w];
        for (c, plane) in mask.chunks_exact(h * w).enumerate() {
            // ps[y][x] = [m(y,x) != 0] + ps[y-s][x] + ps[y][x-s] - ps[y-s][x-s]
            for y in 0..h {
                for x in 0..w {
                    let mut v = (plane[y * w + x] != 0.0) as u64;
                    if y >= s {
                        v += ps[(y - s) * w + x];
                    }
                    if x >= s {
                        v += ps[y * w + x - s];
                    }
                    if y >= s && x >= s {
                        v -= ps[(y - s) * w + x - s];
                    }
                    ps[y * w + x] = v;
                }
            }
            let at = |y: isize, x: isize| -> u64 {
                if y < 0 || x < 0 {
                    0
                } else {
                    ps[y as usize * w + x as usize]
                }
            };
            for i in 0..g.kernel_h {
                let (ylo, yhi) = valid_range(i, g.padding, s, h, oh);
                for j in 0..g.kernel_w {
                    let (xlo, xhi) = valid_range(j, g.padding, s, w, ow);
                    if ylo >= yhi || xlo >= xhi {
                        continue;
                    }
                    let y0 = (ylo * s + i - g.padding) as isize;
                    let y1 = ((yhi - 1) * s + i - g.padding) as isize;
                    let x0 = (xlo * s + j - g.padding) as isize;
                    let x1 = ((xhi - 1) * s + j - g.padding) as isize;
                    let si = s as isize;
                    counts[c * kk + i * g.kernel_w + j] =
                        at(y1, x1) + at(y0 - si, x0 - si) - at(y0 - si, x1) - at(y1, x0 - si);
                }
            }
        }
        counts
    }

    /// Energy `E(C, D)` of one layer at continuous input features `c` and outputs `d`,
    /// with `(dE/dc, dE/dd)`.
    fn width_layer(u: &Units, layer: &Layer, p: &Pre, c: f64, d: f64) -> Result<(f64, f64, f64)> {
        let (ew_, e) = (&u.w, &u.x);
        let n = e.cols as f64;
        match p {
            Pre::Linear { .. } => {
                let sin = e.input_buffer as f64;
                let per_w = ew_.e_mac + ew_.e_dram + ew_.e_buf + ew_.e_rf;
                let over = (c - sin).max(0.0);
                let energy = per_w * c * d
                    + e.e_buf * (d / n) * c
                    + e.e_rf * d * c
                    + e.e_dram * (c.min(sin) + (d / n) * over)
                    + e.e_dram * d;
                let dc = per_w * d
                    + e.e_buf * d / n
                    + e.e_rf * d
                    + e.e_dram * (if c < sin { 1.0 } else { d / n });
                let dd = per_w * c + e.e_buf * c / n + e.e_rf * c + e.e_dram * over / n + e.e_dram;
                Ok((energy, dc, dd))
            }
            Pre::Conv(pc) => {
                let g = &pc.g;
                let (a, q) = (pc.a as f64, pc.q as f64);
                let kk = (g.kernel_h * g.kernel_w) as f64;
                let taps = (pc.tap_y.iter().sum::<u64>() * pc.tap_x.iter().sum::<u64>()) as f64;
                let hw = (g.in_h * g.in_w) as f64;
                // Depthwise: groups follow the width, one channel per group.
                let (cg, dg, dcg_dc, ddg_dd) = if g.is_depthwise() {
                    (1.0, 1.0, 0.0, 0.0)
                } else {
                    let gr = g.groups as f64;
                    (c / gr, d / gr, 1.0 / gr, 1.0 / gr)
                };
                let nw = d * cg * kk;
                let sw = ew_.weight_buffer as f64;
                let per_w = ew_.e_buf * q + ew_.e_rf * a;
                let ew = per_w * nw + ew_.e_dram * (nw.min(sw) + q * (nw - sw).max(0.0));
                let dew_dnw = per_w + ew_.e_dram * if nw < sw { 1.0 } else { q };
                let ec = ew_.e_mac * d * cg * taps;
                let u = c * taps;
                // Reloads at this (continuous) channel count; rows scale with c.
                let row = c * g.in_w as f64;
                let rows_reloaded = Self::reloaded_rows(e.input_buffer, layer, g, row)?;
                let l = row * rows_reloaded;
                // ceil((D/G) / n) relaxed to (D/G) / n; a depthwise layer has D/G = 1
                // whatever its width, so its ceiling stays exact.
                let (tiles, dtiles_dd) = if g.is_depthwise() {
                    ((1.0 / n).ceil(), 0.0)
                } else {
                    (dg / n, ddg_dd / n)
                };
                let ein = e.e_dram * (c * hw + l + d * a) + e.e_buf * u * tiles + e.e_rf * u * dg;
                let energy = ec + ew + ein;
                // Partial derivatives, holding the band structure fixed.
                let dnw_dc = d * dcg_dc * kk;
                let dnw_dd = cg * kk;
                let dc = ew_.e_mac * d * dcg_dc * taps
                    + dew_dnw * dnw_dc
                    + e.e_dram * (hw + g.in_w as f64 * rows_reloaded)
                    + e.e_buf * taps * tiles
                    + e.e_rf * taps * dg;
                let dd = ew_.e_mac * cg * taps
                    + dew_dnw * dnw_dd
                    + e.e_dram * a
                    + e.e_buf * u * dtiles_dd
                    + e.e_rf * u * ddg_dd;
                // A depthwise layer reads and writes one width: the caller adds both.
                Ok((energy, dc, dd))
            }
        }
    }

    /// Rows read again per band overlap for a dense input whose rows hold `row`
    /// (possibly fractional) elements each.
    fn reloaded_rows(buffer: u64, layer: &Layer, g: &Conv2dGeometry, row: f64) -> Result<f64> {
        let pad = g.padding;
        let hp = g.in_h + 2 * pad;
        let r_at = |y: usize| {
            if y < pad || y >= pad + g.in_h {
                0.0
            } else {
                row
            }
        };
        let sin = buffer as f64;
        let (kh, t) = (g.kernel_h, g.stride);
        let (mut b, mut reloaded) = (0usize, 0.0);
        loop {
            let (mut e, mut sum) = (b, 0.0);
            while e < hp && sum + r_at(e) <= sin {
                sum += r_at(e);
                e += 1;
            }
            if e - b < kh {
                return Err(Error::BufferTooSmall {
                    layer: layer.name.clone(),
                    buffer,
                    needed: (row * kh as f64).ceil() as u64,
                });
            }
            let next = b + ((e - b - kh) / t + 1) * t;
            if next + kh > hp {
                return Ok(reloaded);
            }
            reloaded += (next..e).filter(|&y| y >= pad && y < pad + g.in_h).count() as f64;
            b = next;
        }
    }
}

impl SystolicArray {
    /// Exact energy of layer `l` with weights `w` (checked, finite) and input
    /// mask `mask`.
    fn layer_energy(&self, l: usize, w: &[f32], mask: Option<&[f32]>) -> Result<LayerEnergy> {
        let layer = &self.arch.layers()[l];
        let (p, u) = (&self.pre[l], &self.units[l]);
        let nw = w.iter().filter(|v| **v != 0.0).count() as u64;
        let (macs, compute, weight_access, input_access) = match p {
            Pre::Conv(pc) => {
                let macs = self.conv_macs(pc, w, mask);
                let ein = match mask {
                    None => self.dense_input[l],
                    Some(m) => Self::conv_input_energy(u, layer, pc, Some(m))?,
                };
                (
                    macs,
                    u.w.e_mac * macs as f64,
                    Self::conv_weight_energy(u, pc, nw),
                    ein,
                )
            }
            Pre::Linear { c, d } => {
                let nx = mask.map_or(*c, |m| m.iter().filter(|v| **v != 0.0).count() as u64);
                let (compute, wa) = Self::relaxed_weight_terms(u, p, nw);
                (nw, compute, wa, Self::linear_input_energy(u, nx, *d))
            }
        };
        Ok(LayerEnergy::of(
            layer,
            nw,
            macs,
            parts(compute, weight_access, input_access),
        ))
    }
}

impl WeightEnergyModel for SystolicArray {
    fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// Allocation-free.
    fn relaxed_total(&self, nonzeros: &[u64], input_energy: &[f64]) -> Result<f64> {
        self.check_lens(nonzeros.len(), input_energy.len())?;
        Ok(self
            .pre
            .iter()
            .zip(&self.units)
            .zip(nonzeros)
            .zip(input_energy)
            .map(|(((p, u), &nw), ie)| {
                let (c, w) = Self::relaxed_weight_terms(u, p, nw);
                c + w + ie
            })
            .sum())
    }

    fn energy(&self, state: &NetworkState) -> Result<EnergyReport> {
        state.check(&self.arch)?;
        state.check_finite()?;
        let out = (0..self.pre.len())
            .map(|l| self.layer_energy(l, &state.weights[l], state.input_masks[l].as_deref()))
            .collect::<Result<_>>()?;
        Ok(EnergyReport::from_layers(out))
    }

    /// The dense network's exact energy, one layer of ones at a time (no dense
    /// [`NetworkState`] is built: a large model's weights are not held twice).
    fn dense_energy(&self) -> Result<EnergyReport> {
        let mut ones = Vec::new();
        let out = (0..self.pre.len())
            .map(|l| {
                ones.clear();
                ones.resize(self.arch.layers()[l].weight_count(), 1.0f32);
                self.layer_energy(l, &ones, None)
            })
            .collect::<Result<_>>()?;
        Ok(EnergyReport::from_layers(out))
    }

    fn input_energy(&self, input_masks: &[Option<Vec<f32>>]) -> Result<Vec<f64>> {
        let n = self.pre.len();
        if input_masks.len() != n {
            return Err(Error::shape(
                "input masks (one per layer)",
                n,
                input_masks.len(),
            ));
        }
        self.arch
            .layers()
            .iter()
            .zip(self.pre.iter().zip(&self.units))
            .zip(input_masks)
            .map(|((layer, (p, u)), m)| {
                check_mask_len(layer, m.as_deref())?;
                if let Some(m) = m {
                    crate::error::check_finite(&format!("input mask of layer {}", layer.name), m)?;
                }
                match p {
                    Pre::Conv(pc) => Self::conv_input_energy(u, layer, pc, m.as_deref()),
                    Pre::Linear { c, d } => {
                        let nx = m
                            .as_ref()
                            .map_or(*c, |m| m.iter().filter(|v| **v != 0.0).count() as u64);
                        Ok(Self::linear_input_energy(u, nx, *d))
                    }
                }
            })
            .collect()
    }

    fn relaxed_energy(&self, nonzeros: &[u64], input_energy: &[f64]) -> Result<EnergyReport> {
        self.check_lens(nonzeros.len(), input_energy.len())?;
        let layers = self
            .arch
            .layers()
            .iter()
            .zip(self.pre.iter().zip(&self.units))
            .zip(nonzeros.iter().zip(input_energy))
            .map(|((layer, (p, u)), (&nw, &ie))| {
                let (compute, weight_access) = Self::relaxed_weight_terms(u, p, nw);
                let macs = match p {
                    Pre::Conv(pc) => pc.a * nw,
                    Pre::Linear { .. } => nw,
                };
                LayerEnergy::of(layer, nw, macs, parts(compute, weight_access, ie))
            })
            .collect();
        Ok(EnergyReport::from_layers(layers))
    }

    fn knapsack_costs(&self) -> Vec<LayerCost> {
        self.arch
            .layers()
            .iter()
            .zip(self.pre.iter().zip(&self.units))
            .map(|(layer, (p, Units { w: e, .. }))| match p {
                Pre::Conv(pc) => LayerCost {
                    base: pc.beta_in + e.e_mac * pc.a as f64,
                    surcharge: pc.beta_out - pc.beta_in,
                    buffered: layer.weight_count().min(e.weight_buffer as usize),
                },
                Pre::Linear { .. } => LayerCost {
                    base: e.e_dram + e.e_buf + e.e_rf + e.e_mac,
                    surcharge: 0.0,
                    buffered: layer.weight_count(),
                },
            })
            .collect()
    }
}

impl crate::energy::PrecisionModel for SystolicArray {
    fn precision(&self) -> &[LayerPrecision] {
        &self.precision
    }

    fn at_precision(
        &self,
        precision: &[LayerPrecision],
    ) -> Result<Box<dyn crate::energy::PrecisionModel>> {
        Ok(Box::new(Self::with_precision(
            &self.arch, self.cfg, precision,
        )?))
    }
}

impl WidthCostModel for SystolicArray {
    fn num_widths(&self) -> usize {
        self.arch.widths().len()
    }

    fn cost_and_gradient(&self, widths: &[f64], grad: &mut [f64]) -> Result<f64> {
        super::check_widths(self.arch.widths().len(), widths, grad)?;
        grad.fill(0.0);
        let mut total = 0.0;
        for (layer, (p, u)) in self
            .arch
            .layers()
            .iter()
            .zip(self.pre.iter().zip(&self.units))
        {
            let (c, d) = super::layer_extent(layer, widths);
            let (energy, dc, dd) = Self::width_layer(u, layer, p, c, d)?;
            total += energy;
            super::add_layer_gradient(layer, grad, dc, dd);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{ArchBuilder, Conv, zoo};
    use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

    fn one_conv(c: usize, h: usize, conv: Conv) -> Architecture {
        let mut b = ArchBuilder::new("one");
        let x = b.input(c, h, h).unwrap();
        let y = b.conv2d("conv", &x, conv).unwrap();
        b.finish(&y).unwrap()
    }

    #[test]
    fn dense_energy_is_the_energy_of_the_dense_state_bit_for_bit() {
        let mixed = [(4, 8), (2, 6), (8, 4), (16, 8), (6, 16)];
        for name in zoo::NAMES {
            let arch = zoo::by_name(name).unwrap();
            let precision: Vec<LayerPrecision> = (0..arch.layers().len())
                .map(|l| {
                    let (w, a) = mixed[l % mixed.len()];
                    LayerPrecision::int(w, a).unwrap()
                })
                .collect();
            for hw in [
                SystolicArray::new(&arch, SystolicConfig::default()).unwrap(),
                SystolicArray::with_precision(&arch, SystolicConfig::default(), &precision)
                    .unwrap(),
            ] {
                let direct = hw.dense_energy().unwrap();
                let via_state = hw.energy(&NetworkState::dense(&arch)).unwrap();
                assert_eq!(direct.total.to_bits(), via_state.total.to_bits(), "{name}");
                assert_eq!(direct.layers, via_state.layers, "{name}");
            }
        }
    }

    /// Brute-force (N_mac, U, N_x) by walking every output position and tap.
    fn brute(g: &Conv2dGeometry, w: &[f32], mask: &[f32]) -> (u64, u64, u64) {
        let (h, wd) = (g.in_h as isize, g.in_w as isize);
        let (cg, dg, kh, kw) = (g.in_per_group(), g.out_per_group(), g.kernel_h, g.kernel_w);
        let present = |c: usize, y: isize, x: isize| {
            y >= 0
                && x >= 0
                && y < h
                && x < wd
                && mask[(c * g.in_h + y as usize) * g.in_w + x as usize] != 0.0
        };
        let (mut macs, mut u) = (0u64, 0u64);
        for oy in 0..g.out_h() {
            for ox in 0..g.out_w() {
                for c in 0..g.in_channels {
                    for i in 0..kh {
                        for j in 0..kw {
                            let (y, x) = (
                                (oy * g.stride + i) as isize - g.padding as isize,
                                (ox * g.stride + j) as isize - g.padding as isize,
                            );
                            if present(c, y, x) {
                                u += 1;
                            }
                        }
                    }
                }
                for d in 0..g.out_channels {
                    let grp = d / dg;
                    for ci in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let (y, x) = (
                                    (oy * g.stride + i) as isize - g.padding as isize,
                                    (ox * g.stride + j) as isize - g.padding as isize,
                                );
                                if w[((d * cg + ci) * kh + i) * kw + j] != 0.0
                                    && present(grp * cg + ci, y, x)
                                {
                                    macs += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        (macs, u, mask.iter().filter(|v| **v != 0.0).count() as u64)
    }

    #[test]
    fn exact_counts_match_brute_force_with_masks_padding_stride_groups() {
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let cases = [
            (3, 9, Conv::new(4, 3).padding(1)),
            (4, 11, Conv::new(6, 3).stride(2).padding(1).groups(2)),
            (5, 8, Conv::depthwise(3).stride(2).padding(2)),
            (2, 10, Conv::new(3, 5).stride(3).padding(2)),
            (6, 7, Conv::new(4, 1)),
        ];
        // Only e_mac (for N_mac) or only e_buf with n >= D (for U) or only e_dram (N_x + D A).
        for (c, h, conv) in cases {
            let arch = one_conv(c, h, conv);
            let LayerKind::Conv2d(g) = arch.layers()[0].kind else {
                unreachable!()
            };
            let w: Vec<f32> = (0..g.out_channels * g.filter_len())
                .map(|_| if rng.random_bool(0.6) { 1.0 } else { 0.0 })
                .collect();
            let mask: Vec<f32> = (0..c * h * h)
                .map(|_| if rng.random_bool(0.7) { 0.5 } else { 0.0 })
                .collect();
            let (macs, u, nx) = brute(&g, &w, &mask);
            let state = NetworkState {
                weights: vec![w.clone()],
                input_masks: vec![Some(mask.clone())],
            };
            let only = |e_mac, e_dram, e_buf, e_rf| SystolicConfig {
                cols: 1000,
                e_mac,
                e_dram,
                e_buf,
                e_rf,
                ..SystolicConfig::default()
            };
            let m = SystolicArray::new(&arch, only(1.0, 0.0, 0.0, 0.0)).unwrap();
            let r = m.energy(&state).unwrap();
            assert_eq!(r.layers[0].macs, macs, "{g:?}");
            assert_eq!(r.total, macs as f64);
            let m = SystolicArray::new(&arch, only(0.0, 0.0, 1.0, 0.0)).unwrap();
            let r = m.energy(&state).unwrap();
            let nw = w.iter().filter(|v| **v != 0.0).count() as f64;
            let q = (g.out_positions() as f64 / 12.0).ceil();
            assert_eq!(r.layers[0].part(INPUT_MOVEMENT).unwrap(), u as f64, "{g:?}");
            assert_eq!(r.layers[0].part(WEIGHT_MOVEMENT).unwrap(), q * nw);
            let m = SystolicArray::new(&arch, only(0.0, 1.0, 0.0, 0.0)).unwrap();
            let r = m.energy(&state).unwrap();
            assert_eq!(
                r.layers[0].part(INPUT_MOVEMENT).unwrap(),
                (nx + (g.out_channels * g.out_positions()) as u64) as f64
            );
            // Dense mask gives the same as no mask.
            let dense_mask = NetworkState {
                weights: vec![w.clone()],
                input_masks: vec![Some(vec![1.0; c * h * h])],
            };
            let no_mask = NetworkState {
                weights: vec![w],
                input_masks: vec![None],
            };
            let m = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
            assert_eq!(m.energy(&dense_mask).unwrap(), m.energy(&no_mask).unwrap());
            // Relaxed is never below exact.
            let exact = m.energy(&state).unwrap().total;
            let ie = m.input_energy(&state.input_masks).unwrap();
            assert!(m.relaxed_total(&state.nonzeros(), &ie).unwrap() >= exact);
        }
    }

    fn reload_config(input_buffer: u64) -> SystolicConfig {
        SystolicConfig {
            input_buffer,
            e_mac: 0.0,
            e_dram: 1.0,
            e_buf: 0.0,
            e_rf: 0.0,
            ..SystolicConfig::default()
        }
    }

    #[test]
    fn reload_term_matches_hand_computation() {
        // 1 x 10 x 10 input, 3x3 kernel, one filter, rows of 10 elements, buffer of 4 rows:
        // bands [0,4) [2,6) [4,8) [6,10) reload 3 x 2 rows = 60 elements.
        let arch = one_conv(1, 10, Conv::new(1, 3));
        let m = SystolicArray::new(&arch, reload_config(40)).unwrap();
        assert_eq!(m.dense_input_energy()[0], (100 + 60 + 64) as f64);
        // Stride 2, padding 1 (padded rows hold nothing): bands [0,5) [4,8) [6,10) [8,12)
        // reload rows {4}, {6,7}, {8,9} (padded coordinates) = 50 elements.
        let arch = one_conv(1, 10, Conv::new(1, 3).stride(2).padding(1));
        let m = SystolicArray::new(&arch, reload_config(40)).unwrap();
        assert_eq!(m.dense_input_energy()[0], (100 + 50 + 25) as f64);
        // Everything fits: no reload.
        let m = SystolicArray::new(&arch, reload_config(100)).unwrap();
        assert_eq!(m.dense_input_energy()[0], (100 + 25) as f64);
    }

    #[test]
    fn too_small_input_buffer_names_layer_and_size() {
        let arch = one_conv(1, 10, Conv::new(1, 3));
        let err = SystolicArray::new(&arch, reload_config(25)).unwrap_err();
        match err {
            Error::BufferTooSmall {
                layer,
                buffer,
                needed,
            } => assert_eq!((layer.as_str(), buffer, needed), ("conv", 25, 30)),
            e => panic!("unexpected {e}"),
        }
        // AlexNet's first conv reloads with the default buffer, and fits.
        let alex = zoo::alexnet().unwrap();
        let m = SystolicArray::new(&alex, SystolicConfig::default()).unwrap();
        let no_reload = SystolicArray::new(
            &alex,
            SystolicConfig {
                input_buffer: 1 << 40,
                ..SystolicConfig::default()
            },
        )
        .unwrap();
        assert!(m.dense_input_energy()[0] > no_reload.dense_input_energy()[0]);
    }

    #[test]
    fn config_and_shape_errors() {
        let arch = zoo::lenet5().unwrap();
        assert!(
            SystolicArray::new(
                &arch,
                SystolicConfig {
                    rows: 0,
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert!(
            SystolicArray::new(
                &arch,
                SystolicConfig {
                    e_dram: f64::NAN,
                    ..Default::default()
                }
            )
            .is_err()
        );
        let m = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let mut s = NetworkState::dense(&arch);
        s.input_masks[0] = Some(vec![1.0; 5]);
        assert!(matches!(m.energy(&s), Err(Error::ShapeMismatch { .. })));
        s.input_masks[0] = None;
        s.weights[1].pop();
        assert!(m.energy(&s).is_err());
        assert!(m.relaxed_total(&[1, 2], &[0.0; 5]).is_err());
        let mut g = vec![0.0; 3];
        assert!(m.cost_and_gradient(&[1.0; 3], &mut g).is_err());
    }

    #[test]
    fn width_gradient_matches_finite_differences() {
        let mut rng = ChaCha12Rng::seed_from_u64(9);
        for arch in [
            zoo::lenet5().unwrap(),
            zoo::mobilenet_v1().unwrap(),
            zoo::squeezenet1_0().unwrap(),
            zoo::resnet18().unwrap(),
        ] {
            let m = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
            let s: Vec<f64> = arch
                .widths()
                .iter()
                .map(|w| {
                    if w.fixed {
                        w.channels as f64
                    } else {
                        w.channels as f64 * rng.random_range(0.3..0.95)
                    }
                })
                .collect();
            let mut g = vec![0.0; s.len()];
            let f0 = m.cost_and_gradient(&s, &mut g).unwrap();
            assert!(f0 > 0.0);
            energy_prune_testing::check_gradient(&s, &g, 1e-4, 1e-3, 1e-6, |x| m.cost(x).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        }
    }

    fn tiny(c1: usize, c3: usize, f: usize) -> Architecture {
        let mut b = ArchBuilder::new("tiny");
        let x = b.input(3, 16, 16).unwrap();
        let x = b.conv2d("a", &x, Conv::new(c1, 3).padding(1)).unwrap();
        let x = b
            .conv2d("dw", &x, Conv::depthwise(3).stride(2).padding(1))
            .unwrap();
        let x = b.conv2d("b", &x, Conv::new(c3, 1)).unwrap();
        let x = b.pool(&x, 2, 2, 0, false).unwrap();
        let x = b.linear("fc1", &x, f, true).unwrap();
        let x = b.linear("fc2", &x, 14, true).unwrap();
        b.finish(&x).unwrap()
    }

    #[test]
    fn width_form_equals_exact_dense_energy_at_multiples_of_the_array_width() {
        let full = tiny(56, 42, 28);
        let m = SystolicArray::new(&full, SystolicConfig::default()).unwrap();
        for (c1, c3, f) in [(56, 42, 28), (14, 28, 14), (28, 14, 42)] {
            let narrow = tiny(c1, c3, f);
            let exact = SystolicArray::new(&narrow, SystolicConfig::default())
                .unwrap()
                .energy(&NetworkState::dense(&narrow))
                .unwrap()
                .total;
            let s: Vec<f64> = narrow.widths().iter().map(|w| w.channels as f64).collect();
            let wf = m.cost(&s).unwrap();
            assert!(
                ((wf - exact) / exact).abs() < 1e-12,
                "{c1},{c3},{f}: width form {wf} vs exact {exact}"
            );
        }
        // Between multiples the relaxed ceilings make the width form a lower bound.
        let narrow = tiny(20, 30, 17);
        let exact = SystolicArray::new(&narrow, SystolicConfig::default())
            .unwrap()
            .energy(&NetworkState::dense(&narrow))
            .unwrap()
            .total;
        let s: Vec<f64> = narrow.widths().iter().map(|w| w.channels as f64).collect();
        assert!(m.cost(&s).unwrap() < exact);
    }
}
