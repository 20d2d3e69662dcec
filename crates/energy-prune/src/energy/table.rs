//! A per-layer lookup table of measured costs, made differentiable by bilinear
//! interpolation: the black-box cost model of HALP and NetAdapt (a table of
//! per-layer latencies) in a form that ADMM can differentiate.
//!
//! Each prunable layer `l` is measured alone ([`LayerOracle`]) on a grid of input
//! channels `c` and output channels `d` (its input width may concatenate several
//! widths: `c` is their sum). Between grid points the layer's cost is interpolated
//! bilinearly (linearly extrapolated beyond the grid), and the network's cost is
//!
//! ```text
//! f(s) = a0 + b * sum_l T_l(c_l(s), d_l(s))
//! ```
//!
//! with `a0` (overheads outside the layers: input copies, softmax, thread
//! start-up) and `b` (how isolated layers compare with layers inside the network)
//! fitted on whole-network measurements by least squares on relative errors
//! ([`LayerTable::fit`]). The gradient is exact for the interpolant (piecewise
//! bilinear, so piecewise constant in each coordinate across cells).

use super::WidthCostModel;
use super::bilinear::{FitMetrics, FitOptions, FitReport, fit_metrics};
use super::profile::{CostOracle, ProfileSet};
use super::protocol::{Protocol, measure_interleaved};
use crate::arch::Architecture;
use crate::error::{Error, Result};

/// Measures the cost of one prunable layer alone, at given input and output
/// channel counts (the layer's geometry otherwise as in the architecture).
pub trait LayerOracle {
    /// The cost of layer `layer` (index in [`Architecture::layers`]) with `c_in`
    /// input and `c_out` output channels (finite and positive).
    ///
    /// # Errors
    /// Whatever the measurement can fail with.
    fn measure_layer(&mut self, layer: usize, c_in: usize, c_out: usize) -> Result<f64>;
}

/// One layer's grid of measured costs.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerGrid {
    /// Width ids whose channels form the input (summed).
    pub input_widths: Vec<usize>,
    /// Width id of the output.
    pub output_width: usize,
    /// Input channel counts of the grid, increasing.
    pub inputs: Vec<usize>,
    /// Output channel counts of the grid, increasing.
    pub outputs: Vec<usize>,
    /// `cost[i * outputs.len() + j]` at `(inputs[i], outputs[j])`.
    pub cost: Vec<f64>,
}

/// Interpolation weights along one axis: the cell `(i, i + 1)` and the position
/// `t` in it (outside `[0, 1]` when extrapolating), and `1 / (x_{i+1} - x_i)`.
fn locate(axis: &[usize], x: f64) -> (usize, f64, f64) {
    if axis.len() == 1 {
        return (0, 0.0, 0.0);
    }
    let last = axis.len() - 2;
    let i = axis[1..=last]
        .iter()
        .position(|&v| x < v as f64)
        .unwrap_or(last);
    let (a, b) = (axis[i] as f64, axis[i + 1] as f64);
    (i, (x - a) / (b - a), 1.0 / (b - a))
}

impl LayerGrid {
    fn at(&self, i: usize, j: usize) -> f64 {
        self.cost[i * self.outputs.len() + j]
    }

    /// The interpolated cost at `(c, d)` and its partial derivatives (the grid is
    /// valid: see [`LayerTable::validate`]).
    pub(crate) fn value_and_gradient(&self, c: f64, d: f64) -> (f64, f64, f64) {
        let (i, t, ic) = locate(&self.inputs, c);
        let (j, u, id) = locate(&self.outputs, d);
        let i1 = (i + 1).min(self.inputs.len() - 1);
        let j1 = (j + 1).min(self.outputs.len() - 1);
        let (t00, t10, t01, t11) = (
            self.at(i, j),
            self.at(i1, j),
            self.at(i, j1),
            self.at(i1, j1),
        );
        let v =
            (1.0 - t) * (1.0 - u) * t00 + t * (1.0 - u) * t10 + (1.0 - t) * u * t01 + t * u * t11;
        let dc = ((1.0 - u) * (t10 - t00) + u * (t11 - t01)) * ic;
        let dd = ((1.0 - t) * (t01 - t00) + t * (t11 - t10)) * id;
        (v, dc, dd)
    }
}

/// The per-layer lookup-table model; see the [module docs](self). Deserialising
/// validates it ([`LayerTable::validate`]).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "LayerTableFields")
)]
pub struct LayerTable {
    /// Channels of every width (the dense network).
    max: Vec<usize>,
    /// One grid per prunable layer.
    layers: Vec<LayerGrid>,
    /// Fitted constant `a0`.
    constant: f64,
    /// Fitted scale `b` of the layer sum.
    scale: f64,
}

/// The serialised form of [`LayerTable`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct LayerTableFields {
    max: Vec<usize>,
    layers: Vec<LayerGrid>,
    constant: f64,
    scale: f64,
}

#[cfg(feature = "serde")]
impl TryFrom<LayerTableFields> for LayerTable {
    type Error = Error;
    fn try_from(f: LayerTableFields) -> Result<Self> {
        let t = LayerTable {
            max: f.max,
            layers: f.layers,
            constant: f.constant,
            scale: f.scale,
        };
        t.validate()?;
        Ok(t)
    }
}

/// Grid points on `[lo, hi]`: `points` roughly even integers, ends included.
fn axis(lo: usize, hi: usize, points: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..points.max(2))
        .map(|k| {
            let f = k as f64 / (points.max(2) - 1) as f64;
            (lo as f64 + f * (hi - lo) as f64).round() as usize
        })
        .collect();
    v.dedup();
    v
}

/// Adapts a [`LayerOracle`] to a [`CostOracle`] over `[layer, c, d]` so that the
/// measurement protocol can interleave grid points.
struct Points<'a, O: ?Sized>(&'a mut O);

impl<O: LayerOracle + ?Sized> CostOracle for Points<'_, O> {
    fn measure(&mut self, p: &[usize]) -> Result<f64> {
        self.0.measure_layer(p[0], p[1], p[2])
    }
}

impl LayerTable {
    /// Measure every prunable layer of `arch` on a grid of `points` input and
    /// `points` output channel counts from `min_fraction` of each width to all of
    /// it (fixed widths: their one value), interleaved under `protocol`. The
    /// constant is 0 and the scale 1 until [`LayerTable::fit`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for `points < 2` or a fraction outside [0, 1]
    /// (0 samples down to one channel);
    /// errors of the protocol and the oracle.
    pub fn measure<O: LayerOracle + ?Sized>(
        arch: &Architecture,
        oracle: &mut O,
        points: usize,
        min_fraction: f64,
        protocol: &Protocol,
    ) -> Result<Self> {
        if points < 2 {
            return Err(Error::param(
                "points",
                points,
                "a grid needs >= 2 points per axis",
            ));
        }
        if !(0.0..=1.0).contains(&min_fraction) {
            return Err(Error::param(
                "min_fraction",
                min_fraction,
                "must be in [0, 1] (0: down to one channel)",
            ));
        }
        let widths = arch.widths();
        let range = |u: usize| {
            let w = &widths[u];
            if w.fixed {
                (w.channels, w.channels)
            } else {
                (
                    ((w.channels as f64) * min_fraction).ceil().max(1.0) as usize,
                    w.channels,
                )
            }
        };
        let mut layers = Vec::with_capacity(arch.layers().len());
        let mut configs = Vec::new();
        for (l, layer) in arch.layers().iter().enumerate() {
            let input_widths: Vec<usize> = layer.input.iter().map(|s| s.width.0).collect();
            let (lo, hi) = input_widths
                .iter()
                .map(|&u| range(u))
                .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
            let inputs = axis(lo, hi, points);
            let (lo, hi) = range(layer.output.0);
            let outputs = axis(lo, hi, points);
            for &c in &inputs {
                for &d in &outputs {
                    configs.push(vec![l, c, d]);
                }
            }
            layers.push(LayerGrid {
                input_widths,
                output_width: layer.output.0,
                cost: Vec::with_capacity(inputs.len() * outputs.len()),
                inputs,
                outputs,
            });
        }
        let run = measure_interleaved(&mut Points(oracle), &configs, protocol)?;
        for (p, cost) in run.profile.iter() {
            layers[p[0]].cost.push(cost);
        }
        Ok(Self {
            max: widths.iter().map(|w| w.channels).collect(),
            layers,
            constant: 0.0,
            scale: 1.0,
        })
    }

    /// The sum of the layers' interpolated costs at widths `s`, and its gradient
    /// added into `grad` times `weight`.
    fn layer_sum(&self, s: &[f64], grad: Option<(&mut [f64], f64)>) -> f64 {
        let mut total = 0.0;
        let mut grad = grad;
        for g in &self.layers {
            let c: f64 = g.input_widths.iter().map(|&u| s[u]).sum();
            let (v, dc, dd) = g.value_and_gradient(c, s[g.output_width]);
            total += v;
            if let Some((gr, w)) = grad.as_mut() {
                for &u in &g.input_widths {
                    gr[u] += *w * dc;
                }
                gr[g.output_width] += *w * dd;
            }
        }
        total
    }

    /// Fit the constant and the scale on whole-network measurements `data`
    /// (train/validation split of `opts`; least squares on relative errors) and
    /// report the errors (`lambda` is 0: no ridge term).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for samples of another number of widths;
    /// [`Error::InvalidParameter`] when the training samples cannot fix two
    /// parameters (fewer than 2, or every layer sum equal).
    pub fn fit(&mut self, data: &ProfileSet, opts: &FitOptions) -> Result<FitReport> {
        if data.num_widths() != self.max.len() {
            return Err(Error::shape(
                "widths per profile sample",
                self.max.len(),
                data.num_widths(),
            ));
        }
        let (train, validation) = data.split(opts.validation, opts.seed)?;
        // Weighted least squares of y ~ a0 + b x with weights 1 / y^2.
        let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (w, y) in train.iter() {
            let s: Vec<f64> = w.iter().map(|v| *v as f64).collect();
            let x = self.layer_sum(&s, None);
            let k = 1.0 / (y * y);
            sw += k;
            sx += k * x;
            sy += k * y;
            sxx += k * x * x;
            sxy += k * x * y;
        }
        let det = sw * sxx - sx * sx;
        let determined = det.abs() > 1e-12 * sw * sxx; // false for NaN too
        if train.len() < 2 || !determined {
            return Err(Error::param(
                "profile",
                train.len(),
                "the layer table's constant and scale need >= 2 training samples of different widths",
            ));
        }
        self.scale = (sw * sxy - sx * sy) / det;
        self.constant = (sy - self.scale * sx) / sw;
        Ok(FitReport {
            train: self.error_on(&train)?,
            validation: self.error_on(&validation)?,
            lambda: 0.0,
        })
    }

    /// Channels of every width of the dense network.
    pub fn max(&self) -> &[usize] {
        &self.max
    }

    /// The measured grid of every prunable layer.
    pub fn layers(&self) -> &[LayerGrid] {
        &self.layers
    }

    /// The fitted constant `a0`.
    pub fn constant(&self) -> f64 {
        self.constant
    }

    /// The fitted scale `b`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The model's cost at continuous widths `s`.
    pub fn value(&self, s: &[f64]) -> f64 {
        self.constant + self.scale * self.layer_sum(s, None)
    }

    /// Prediction error of the model on `data`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for samples of another number of widths.
    pub fn error_on(&self, data: &ProfileSet) -> Result<FitMetrics> {
        if data.num_widths() != self.max.len() {
            return Err(Error::shape(
                "widths per profile sample",
                self.max.len(),
                data.num_widths(),
            ));
        }
        Ok(fit_metrics(data, |s| self.value(s)))
    }

    /// Channels of every width of the dense network.
    pub fn dense_channels(&self) -> Vec<usize> {
        self.max.clone()
    }

    /// Check the tables' shapes and values (after deserialising).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming what is inconsistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| {
            Err(Error::param(
                "layer table",
                what,
                "is inconsistent; re-run the calibration",
            ))
        };
        if self.max.is_empty() || self.layers.is_empty() {
            return bad("no widths or no layers".into());
        }
        if !(self.constant.is_finite() && self.scale.is_finite() && self.scale > 0.0) {
            return bad(format!(
                "constant {} / scale {} (finite, scale > 0)",
                self.constant, self.scale
            ));
        }
        if let Some(u) = self.max.iter().position(|&m| m == 0) {
            return bad(format!("width {u} has a maximum of 0 channels"));
        }
        for (l, g) in self.layers.iter().enumerate() {
            let ok = !g.inputs.is_empty()
                && !g.outputs.is_empty()
                && g.inputs.windows(2).all(|w| w[0] < w[1])
                && g.outputs.windows(2).all(|w| w[0] < w[1])
                && g.cost.len() == g.inputs.len() * g.outputs.len()
                && g.cost.iter().all(|c| c.is_finite() && *c >= 0.0)
                && g.output_width < self.max.len()
                && g.input_widths.iter().all(|&u| u < self.max.len());
            if !ok {
                return bad(format!(
                    "grid of layer {l} (increasing points, one finite non-negative cost per \
                     point, widths in range)"
                ));
            }
            let in_max: usize = g.input_widths.iter().map(|&u| self.max[u]).sum();
            let out_max = self.max[g.output_width];
            let (i_last, o_last) = (g.inputs[g.inputs.len() - 1], g.outputs[g.outputs.len() - 1]);
            if g.inputs[0] == 0 || g.outputs[0] == 0 || i_last > in_max || o_last > out_max {
                return bad(format!(
                    "grid of layer {l} spans inputs {}..={i_last} and outputs {}..={o_last}, \
                     outside 1..={in_max} and 1..={out_max}",
                    g.inputs[0], g.outputs[0]
                ));
            }
        }
        let max: Vec<f64> = self.max.iter().map(|&m| m as f64).collect();
        let min = vec![1.0; max.len()];
        super::check_model_evaluates(self, &min, &max, "layer table")
    }
}

impl WidthCostModel for LayerTable {
    fn num_widths(&self) -> usize {
        self.max.len()
    }

    fn cost_and_gradient(&self, widths: &[f64], grad: &mut [f64]) -> Result<f64> {
        super::check_widths(self.max.len(), widths, grad)?;
        grad.fill(0.0);
        let cost = self.constant + self.scale * self.layer_sum(widths, Some((grad, self.scale)));
        super::finite_cost(cost, grad, "layer table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::zoo;
    use crate::energy::{ModelOracle, SystolicArray, SystolicConfig, WidthSampler};

    /// A "machine" whose layers cost `p + q c d` each (bilinear per layer, so the
    /// interpolation is exact on it), plus a network overhead.
    struct Synthetic {
        per_layer: Vec<(f64, f64)>,
    }

    impl LayerOracle for Synthetic {
        fn measure_layer(&mut self, l: usize, c: usize, d: usize) -> Result<f64> {
            let (p, q) = self.per_layer[l];
            Ok(p + q * c as f64 * d as f64)
        }
    }

    fn network_cost(o: &Synthetic, arch: &Architecture, w: &[usize]) -> f64 {
        3.0 + 1.2
            * arch
                .layers()
                .iter()
                .zip(&o.per_layer)
                .map(|(l, (p, q))| {
                    let c: usize = l.input.iter().map(|s| w[s.width.0]).sum();
                    p + q * (c * w[l.output.0]) as f64
                })
                .sum::<f64>()
    }

    #[test]
    fn interpolation_by_hand() {
        let g = LayerGrid {
            input_widths: vec![0],
            output_width: 1,
            inputs: vec![2, 4],
            outputs: vec![10, 20, 40],
            cost: vec![1.0, 2.0, 4.0, 3.0, 5.0, 9.0],
        };
        assert_eq!(g.value_and_gradient(2.0, 10.0).0, 1.0);
        assert_eq!(g.value_and_gradient(4.0, 40.0).0, 9.0);
        // Middle of the first cell: mean of its corners.
        let (v, dc, dd) = g.value_and_gradient(3.0, 15.0);
        assert!((v - (1.0 + 2.0 + 3.0 + 5.0) / 4.0).abs() < 1e-12);
        assert!((dc - ((3.0 - 1.0) + (5.0 - 2.0)) / 2.0 / 2.0).abs() < 1e-12);
        assert!((dd - ((2.0 - 1.0) + (5.0 - 3.0)) / 2.0 / 10.0).abs() < 1e-12);
        // Linear extrapolation beyond the grid.
        let (v, _, _) = g.value_and_gradient(1.0, 10.0);
        assert!((v - 0.0).abs() < 1e-12);
    }

    #[test]
    fn recovers_a_bilinear_machine_and_its_gradient() {
        let arch = zoo::lenet5().unwrap();
        let mut o = Synthetic {
            per_layer: (0..arch.layers().len())
                .map(|l| (0.5 + l as f64, 1e-3 * (l + 1) as f64))
                .collect(),
        };
        let p = Protocol {
            warmup_passes: 0,
            repeats: 1,
            ..Protocol::default()
        };
        let mut t = LayerTable::measure(&arch, &mut o, 3, 0.25, &p).unwrap();
        let mut sampler = WidthSampler::new(&arch, 5);
        let mut data = ProfileSet::new(arch.widths().len());
        for _ in 0..40 {
            let w = sampler.sample();
            let c = network_cost(&o, &arch, &w);
            data.push(w, c).unwrap();
        }
        let rep = t.fit(&data, &FitOptions::default()).unwrap();
        assert!(rep.validation.mrae < 1e-9, "{rep:?}");
        assert!((t.constant - 3.0).abs() < 1e-6 && (t.scale - 1.2).abs() < 1e-9);
        // Gradient against finite differences, inside cells.
        let s: Vec<f64> = t.max.iter().map(|&m| (m as f64 * 0.61).max(1.0)).collect();
        let mut g = vec![0.0; s.len()];
        t.cost_and_gradient(&s, &mut g).unwrap();
        energy_prune_testing::check_gradient(&s, &g, 1e-4, 1e-6, 1e-6, |x| t.value(x)).unwrap();
        t.validate().unwrap();
        assert!(t.cost(&[1.0]).is_err());
    }

    #[test]
    fn fits_the_systolic_width_model_within_a_few_percent() {
        // The width form of the systolic model is not bilinear per layer; a grid of
        // 5 points per axis still predicts it closely (the table is a model class,
        // not a memorisation of the samples).
        let arch = zoo::lenet5().unwrap();
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        struct PerLayer(Architecture, SystolicArray);
        impl LayerOracle for PerLayer {
            fn measure_layer(&mut self, l: usize, c: usize, d: usize) -> Result<f64> {
                // The width form's cost of layer l alone: every other layer at its
                // smallest, difference to all at their smallest.
                let n = self.0.widths().len();
                let mut base = vec![1.0; n];
                for (u, w) in self.0.widths().iter().enumerate() {
                    if w.fixed {
                        base[u] = w.channels as f64;
                    }
                }
                let layer = &self.0.layers()[l];
                let mut s = base.clone();
                s[layer.input[0].width.0] = c as f64;
                s[layer.output.0] = d as f64;
                let mut zero = s.clone();
                zero[layer.input[0].width.0] = 0.0;
                zero[layer.output.0] = 0.0;
                Ok(self.1.cost(&s)? - self.1.cost(&zero)? + 1e-9)
            }
        }
        let mut o = PerLayer(arch.clone(), model.clone());
        let p = Protocol {
            warmup_passes: 0,
            repeats: 1,
            ..Protocol::default()
        };
        let mut t = LayerTable::measure(&arch, &mut o, 5, 0.25, &p).unwrap();
        let mut sampler = WidthSampler::new(&arch, 8);
        for (u, w) in arch.widths().iter().enumerate() {
            if !w.fixed {
                sampler = sampler
                    .with_bounds(u, w.channels.div_ceil(4), w.channels)
                    .unwrap();
            }
        }
        let mut oracle = ModelOracle(model);
        let mut data = ProfileSet::new(arch.widths().len());
        for _ in 0..60 {
            let w = sampler.sample();
            let c = oracle.measure(&w).unwrap();
            data.push(w, c).unwrap();
        }
        let rep = t.fit(&data, &FitOptions::default()).unwrap();
        assert!(rep.validation.mrae < 0.05, "{rep:?}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let arch = zoo::lenet5().unwrap();
        let mut o = Synthetic {
            per_layer: vec![(1.0, 1.0); arch.layers().len()],
        };
        let p = Protocol::default();
        assert!(LayerTable::measure(&arch, &mut o, 1, 0.25, &p).is_err());
        assert!(LayerTable::measure(&arch, &mut o, 3, -0.1, &p).is_err());
        assert!(LayerTable::measure(&arch, &mut o, 3, f64::NAN, &p).is_err());
        // 0 samples every width down to one channel.
        let low = LayerTable::measure(&arch, &mut o, 3, 0.0, &p).unwrap();
        assert_eq!(low.layers[0].outputs[0], 1);
        let mut t = LayerTable::measure(&arch, &mut o, 3, 0.25, &p).unwrap();
        // Every sample at the same widths: the scale cannot be fixed.
        let mut data = ProfileSet::new(arch.widths().len());
        let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
        for _ in 0..10 {
            data.push(full.clone(), 5.0).unwrap();
        }
        assert!(t.fit(&data, &FitOptions::default()).is_err());
        assert!(t.fit(&ProfileSet::new(2), &FitOptions::default()).is_err());
        let mut broken = t.clone();
        broken.layers[0].cost.pop();
        assert!(broken.validate().is_err());
    }
}
