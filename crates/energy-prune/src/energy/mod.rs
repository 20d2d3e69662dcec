//! Energy (or latency) models: the hardware as seen by the optimizers.
//!
//! Two capabilities, each an object-safe trait (`Box<dyn …>`, `&dyn …` and
//! `Arc<dyn …>` all work), so that any model drives any optimizer whose granularity
//! it supports:
//!
//! * [`WeightEnergyModel`]: energy of a given *weight-level* sparsity state (which
//!   weights are nonzero, which input elements are masked), with a per-layer
//!   breakdown, plus the per-layer knapsack costs that weighted sparse projection
//!   needs. Implemented by the analytic [`SystolicArray`] model.
//! * [`WidthCostModel`]: energy `f(s)` and its gradient for continuous layer
//!   widths `s` (channel counts). Implemented by [`SystolicArray`] in width form and
//!   by the learned [`Bilinear`] model, fitted to measurements of any black-box
//!   [`CostOracle`] (see [`profile`] for the calibration workflow, and
//!   [`protocol`] for measuring on a noisy machine: warm-up, interleaved repeats,
//!   robust statistics, re-measurement, a noise report).
//!
//! Units are the model's own (for the systolic model: multiples of one
//! register-file access).

pub mod bilinear;
pub mod calibrated;
pub mod counting;
pub mod precision;
pub mod profile;
pub mod protocol;
pub mod systolic;
pub mod table;

pub use bilinear::{Bilinear, FitMetrics, FitOptions, FitReport, Fitted, Term};
pub use calibrated::{CalibratedModel, FitProvenance};
pub use counting::{Count, CountingModel};
pub use precision::{
    LayerPrecision, NumberFormat, PrecisionModel, PrecisionScaling, REFERENCE_BITS, check_precision,
};
pub use profile::{CostOracle, ModelOracle, ProfileSet, WidthSampler};
pub use protocol::{Measured, MeasuredSet, NoiseReport, Protocol, Statistic, measure_interleaved};
pub use systolic::{SystolicArray, SystolicConfig, WeightAccessEnergy};
pub use table::{LayerGrid, LayerOracle, LayerTable};

use std::fmt;
use std::sync::Arc;

use crate::arch::{Architecture, LayerKind};
use crate::error::{Error, Origin, Result};
use crate::network::NetworkState;

/// Whether a layer is a convolution or a linear layer (serialised as `"conv"` / `"linear"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum LayerType {
    /// A 2-D convolution.
    Conv,
    /// A fully-connected layer.
    Linear,
}

impl LayerType {
    /// `"conv"` or `"linear"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LayerType::Conv => "conv",
            LayerType::Linear => "linear",
        }
    }
}

impl fmt::Display for LayerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One named part of a layer's cost. The model that made the report names its
/// parts: the systolic model's are [`systolic::COMPUTE`], [`systolic::WEIGHT_MOVEMENT`]
/// and [`systolic::INPUT_MOVEMENT`]; a [`CountingModel`] has one part named by
/// what it counts (`"parameters"`, `"macs"`, `"bytes"`). A model with more
/// structure (bit-widths, another memory hierarchy) adds parts of its own.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CostPart {
    /// The part's name, as the model gives it.
    pub name: String,
    /// Its cost, in the model's unit.
    pub value: f64,
}

impl CostPart {
    /// A part named `name` of cost `value`.
    pub fn new(name: &str, value: f64) -> Self {
        Self {
            name: name.to_owned(),
            value,
        }
    }
}

/// The cost of one layer, split into the parts its model names.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerEnergy {
    /// Layer name.
    pub name: String,
    /// Conv or linear.
    pub kind: LayerType,
    /// Weights of the layer.
    pub weights: u64,
    /// Nonzero weights `N_w`.
    pub nonzero: u64,
    /// Multiply-accumulates counted by the model (`N_mac`).
    pub macs: u64,
    /// The parts of the cost, in the model's order (the same for every layer of a
    /// report).
    pub parts: Vec<CostPart>,
    /// Sum of the parts.
    pub total: f64,
}

impl LayerEnergy {
    /// The breakdown of `layer`, its total being the sum of `parts` in order.
    pub(crate) fn of(
        layer: &crate::arch::Layer,
        nonzero: u64,
        macs: u64,
        parts: Vec<CostPart>,
    ) -> Self {
        let total = parts.iter().map(|p| p.value).sum();
        Self {
            name: layer.name.clone(),
            kind: kind_name(&layer.kind),
            weights: layer.weight_count() as u64,
            nonzero,
            macs,
            parts,
            total,
        }
    }

    /// The cost of the part named `name`, if the model has one.
    pub fn part(&self, name: &str) -> Option<f64> {
        self.parts.iter().find(|p| p.name == name).map(|p| p.value)
    }
}

/// A per-layer cost breakdown and its total.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EnergyReport {
    /// Layers in forward order.
    pub layers: Vec<LayerEnergy>,
    /// Sum over layers.
    pub total: f64,
}

impl EnergyReport {
    pub(crate) fn from_layers(layers: Vec<LayerEnergy>) -> Self {
        let total = layers.iter().map(|l| l.total).sum();
        Self { layers, total }
    }

    /// The names of the parts, in the model's order.
    pub fn part_names(&self) -> Vec<&str> {
        self.layers.first().map_or_else(Vec::new, |l| {
            l.parts.iter().map(|p| p.name.as_str()).collect()
        })
    }

    /// The sum over layers of the part named `name` (`None` if the model has no
    /// such part).
    pub fn part(&self, name: &str) -> Option<f64> {
        let mut found = false;
        let mut sum = 0.0;
        for l in &self.layers {
            if let Some(v) = l.part(name) {
                found = true;
                sum += v;
            }
        }
        found.then_some(sum)
    }
}

impl fmt::Display for EnergyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_w = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let names = self.part_names();
        let col = |n: &str| n.len().max(14);
        write!(
            f,
            "{:<name_w$}  {:<6}  {:>11}  {:>11}  {:>14}",
            "layer", "kind", "weights", "nonzero", "MACs"
        )?;
        for n in &names {
            write!(f, "  {:>w$}", n, w = col(n))?;
        }
        writeln!(f, "  {:>14}", "total")?;
        for l in &self.layers {
            write!(
                f,
                "{:<name_w$}  {:<6}  {:>11}  {:>11}  {:>14}",
                l.name, l.kind, l.weights, l.nonzero, l.macs
            )?;
            for n in &names {
                write!(f, "  {:>w$.6e}", l.part(n).unwrap_or(0.0), w = col(n))?;
            }
            writeln!(f, "  {:>14.6e}", l.total)?;
        }
        let (w, nz, macs) = self.layers.iter().fold((0, 0, 0), |(a, b, c), l| {
            (a + l.weights, b + l.nonzero, c + l.macs)
        });
        write!(
            f,
            "{:<name_w$}  {:<6}  {:>11}  {:>11}  {:>14}",
            "total", "", w, nz, macs
        )?;
        for n in &names {
            write!(f, "  {:>w$.6e}", self.part(n).unwrap_or(0.0), w = col(n))?;
        }
        write!(f, "  {:>14.6e}", self.total)
    }
}

/// Knapsack cost of the weights of one layer for weighted sparse projection.
///
/// The `buffered` largest-magnitude weights of the layer cost `base` each; every
/// other weight costs `base + surcharge` (it spills out of the weight buffer).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerCost {
    /// Cost of a weight kept in the buffer.
    pub base: f64,
    /// Extra cost of a weight beyond the buffer.
    pub surcharge: f64,
    /// How many of the largest weights are charged `base` only.
    pub buffered: usize,
}

/// A model that prices weight-level sparsity states (for projection-based pruning).
pub trait WeightEnergyModel: Send + Sync + fmt::Debug {
    /// The architecture the model was built for.
    fn architecture(&self) -> &Architecture;

    /// Exact energy of a sparsity state, with a per-layer breakdown.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the state does not fit the architecture, and
    /// model-specific errors.
    fn energy(&self, state: &NetworkState) -> Result<EnergyReport>;

    /// Exact energy of the dense network (every weight nonzero, no input masks):
    /// what a budget given as a fraction is a fraction of. The default prices a
    /// [`NetworkState::dense`] (one `f32` per weight); models override it to price
    /// without one.
    ///
    /// # Errors
    /// As [`WeightEnergyModel::energy`].
    fn dense_energy(&self) -> Result<EnergyReport> {
        self.energy(&NetworkState::dense(self.architecture()))
    }

    /// The part of each layer's energy that does not depend on the weights
    /// (for the systolic model, `E_input`), given the input masks.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for masks of the wrong size.
    fn input_energy(&self, input_masks: &[Option<Vec<f32>>]) -> Result<Vec<f64>>;

    /// Relaxed energy (an upper bound of the exact one that depends on the weights
    /// only through each layer's nonzero count), with the weight-independent part
    /// taken from `input_energy`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the slices do not have one entry per layer.
    fn relaxed_energy(&self, nonzeros: &[u64], input_energy: &[f64]) -> Result<EnergyReport>;

    /// Per-layer knapsack costs: the relaxed energy of a state equals
    /// `sum(input_energy) + sum over kept weights of their cost`.
    fn knapsack_costs(&self) -> Vec<LayerCost>;

    /// Total of [`WeightEnergyModel::relaxed_energy`]; models override it with an
    /// allocation-free version (the systolic model does).
    ///
    /// # Errors
    /// As [`WeightEnergyModel::relaxed_energy`].
    fn relaxed_total(&self, nonzeros: &[u64], input_energy: &[f64]) -> Result<f64> {
        Ok(self.relaxed_energy(nonzeros, input_energy)?.total)
    }

    /// Relaxed energy of a state: `floor + sum over nonzero weights of their cost`.
    ///
    /// # Errors
    /// As [`WeightEnergyModel::relaxed_energy`] and [`WeightEnergyModel::input_energy`].
    fn relaxed_energy_of(&self, state: &NetworkState) -> Result<f64> {
        let input = self.input_energy(&state.input_masks)?;
        Ok(self.relaxed_energy(&state.nonzeros(), &input)?.total)
    }

    /// The energy of the all-zero weights with the given input masks: the floor no
    /// weight pruning can go below (`sum(input_energy)`).
    ///
    /// # Errors
    /// As [`WeightEnergyModel::input_energy`].
    fn floor(&self, input_masks: &[Option<Vec<f32>>]) -> Result<f64> {
        Ok(self.input_energy(input_masks)?.iter().sum())
    }

    /// Total exact energy of a state (the total of [`WeightEnergyModel::energy`]).
    ///
    /// # Errors
    /// As [`WeightEnergyModel::energy`].
    fn energy_total(&self, state: &NetworkState) -> Result<f64> {
        Ok(self.energy(state)?.total)
    }
}

/// A model of a cost (energy, latency, ...) as a differentiable function of
/// continuous widths `s`, one per [`Width`](crate::arch::Width) of the architecture.
pub trait WidthCostModel: Send + Sync + fmt::Debug {
    /// Number of widths the model expects.
    fn num_widths(&self) -> usize;

    /// Cost at widths `s`, writing `df/ds` into `grad` (same length).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] on wrong lengths, [`Error::NonFinite`] for NaN widths.
    fn cost_and_gradient(&self, widths: &[f64], grad: &mut [f64]) -> Result<f64>;

    /// Cost at widths `s`.
    ///
    /// # Errors
    /// As [`WidthCostModel::cost_and_gradient`].
    fn cost(&self, widths: &[f64]) -> Result<f64> {
        let mut g = vec![0.0; widths.len()];
        self.cost_and_gradient(widths, &mut g)
    }

    /// Cost at whole channel counts (e.g. the live widths of a pruned network).
    ///
    /// # Errors
    /// As [`WidthCostModel::cost_and_gradient`].
    fn cost_of_widths(&self, widths: &[usize]) -> Result<f64> {
        let s: Vec<f64> = widths.iter().map(|v| *v as f64).collect();
        self.cost(&s)
    }
}

macro_rules! forward_models {
    ($($ptr:ty),*) => {$(
        impl<T: WeightEnergyModel + ?Sized> WeightEnergyModel for $ptr {
            fn architecture(&self) -> &Architecture { (**self).architecture() }
            fn energy(&self, state: &NetworkState) -> Result<EnergyReport> { (**self).energy(state) }
            fn dense_energy(&self) -> Result<EnergyReport> { (**self).dense_energy() }
            fn input_energy(&self, m: &[Option<Vec<f32>>]) -> Result<Vec<f64>> { (**self).input_energy(m) }
            fn relaxed_energy(&self, nz: &[u64], ie: &[f64]) -> Result<EnergyReport> { (**self).relaxed_energy(nz, ie) }
            fn knapsack_costs(&self) -> Vec<LayerCost> { (**self).knapsack_costs() }
            fn relaxed_total(&self, nz: &[u64], ie: &[f64]) -> Result<f64> { (**self).relaxed_total(nz, ie) }
            fn relaxed_energy_of(&self, st: &NetworkState) -> Result<f64> { (**self).relaxed_energy_of(st) }
            fn floor(&self, m: &[Option<Vec<f32>>]) -> Result<f64> { (**self).floor(m) }
            fn energy_total(&self, st: &NetworkState) -> Result<f64> { (**self).energy_total(st) }
        }
        impl<T: WidthCostModel + ?Sized> WidthCostModel for $ptr {
            fn num_widths(&self) -> usize { (**self).num_widths() }
            fn cost_and_gradient(&self, s: &[f64], g: &mut [f64]) -> Result<f64> { (**self).cost_and_gradient(s, g) }
            fn cost(&self, s: &[f64]) -> Result<f64> { (**self).cost(s) }
            fn cost_of_widths(&self, w: &[usize]) -> Result<f64> { (**self).cost_of_widths(w) }
        }
    )*};
}
forward_models!(&T, Box<T>, Arc<T>);

/// The common input check of [`WidthCostModel::cost_and_gradient`]: `n` widths and
/// as many gradient entries, every width finite and `>= 0`.
/// A loaded width cost model must give finite, non-negative costs with finite
/// gradients at the dense widths `max` and at the smallest widths `min` (and,
/// the caller checks, everywhere between): a file that does not is refused when it
/// is read, not after training.
pub(crate) fn check_model_evaluates(
    model: &dyn WidthCostModel,
    min: &[f64],
    max: &[f64],
    what: &'static str,
) -> Result<()> {
    let mut grad = vec![0.0; max.len()];
    for (at, widths) in [("dense", max), ("smallest", min)] {
        let cost = model.cost_and_gradient(widths, &mut grad)?;
        if !cost.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            return Err(Error::param(
                what,
                format!("cost {cost} at the {at} widths"),
                "the model gives a non-finite cost or gradient; re-run the calibration",
            ));
        }
        if cost < 0.0 {
            return Err(Error::param(
                what,
                format!("cost {cost} at the {at} widths"),
                "a cost model must not predict negative costs; re-run the calibration \
                 with more samples or a ridge lambda",
            ));
        }
    }
    Ok(())
}

/// A cost and gradient computed by a model: finite, or an error naming the model.
pub(crate) fn finite_cost(cost: f64, grad: &[f64], what: &'static str) -> Result<f64> {
    if let Some(i) = grad.iter().position(|g| !g.is_finite()) {
        return Err(Error::non_finite(
            format!("gradient of the {what}"),
            i,
            Origin::Model,
        ));
    }
    if !cost.is_finite() {
        return Err(Error::non_finite(
            format!("cost of the {what}"),
            0,
            Origin::Model,
        ));
    }
    Ok(cost)
}

pub(crate) fn check_widths(n: usize, widths: &[f64], grad: &[f64]) -> Result<()> {
    if widths.len() != n || grad.len() != n {
        return Err(Error::shape(
            "widths / gradient",
            n,
            widths.len().min(grad.len()),
        ));
    }
    if let Some(i) = widths.iter().position(|s| !s.is_finite() || *s < 0.0) {
        return Err(Error::param(
            "widths",
            widths[i],
            format!("width {i} must be finite and >= 0"),
        ));
    }
    Ok(())
}

/// The width form of one layer: its input size `c` (every input width times its
/// spatial extent, so a flattened input counts features) and output channels `d`.
pub(crate) fn layer_extent(layer: &crate::arch::Layer, widths: &[f64]) -> (f64, f64) {
    let c = layer
        .input
        .iter()
        .map(|s| widths[s.width.0] * s.spatial as f64)
        .sum();
    (c, widths[layer.output.0])
}

/// Add a layer's partial derivatives `dc`, `dd` (with respect to its [`layer_extent`])
/// into the gradient over widths.
pub(crate) fn add_layer_gradient(layer: &crate::arch::Layer, grad: &mut [f64], dc: f64, dd: f64) {
    for s in &layer.input {
        grad[s.width.0] += dc * s.spatial as f64;
    }
    grad[layer.output.0] += dd;
}

pub(crate) fn kind_name(kind: &LayerKind) -> LayerType {
    match kind {
        LayerKind::Conv2d(_) => LayerType::Conv,
        LayerKind::Linear(_) => LayerType::Linear,
    }
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;
    use crate::arch::zoo;

    #[test]
    fn energy_report_round_trips_through_json() {
        let arch = zoo::lenet5().unwrap();
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let report = model.energy(&NetworkState::dense(&arch)).unwrap();
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"kind\":\"conv\""), "{json}");
        let back: EnergyReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let cfg: SystolicConfig =
            serde_json::from_str(&serde_json::to_string(&SystolicConfig::default()).unwrap())
                .unwrap();
        assert_eq!(cfg, SystolicConfig::default());
    }
}

#[cfg(test)]
mod trait_object_tests {
    use super::*;
    use crate::arch::zoo;

    #[test]
    fn models_work_behind_box_arc_and_references() {
        let arch = zoo::lenet5().unwrap();
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let dense = NetworkState::dense(&arch);
        let want = model.energy(&dense).unwrap().total;
        let boxed: Box<dyn WeightEnergyModel> = Box::new(model.clone());
        assert_eq!(boxed.energy(&dense).unwrap().total, want);
        let shared: Arc<dyn WeightEnergyModel> = Arc::new(model.clone());
        assert_eq!(shared.knapsack_costs(), model.knapsack_costs());
        let by_ref: &dyn WidthCostModel = &model;
        let widths: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
        let boxed_w: Box<dyn WidthCostModel> = Box::new(&model);
        assert_eq!(
            by_ref.cost(&widths).unwrap(),
            boxed_w.cost(&widths).unwrap()
        );
        fn bounds<T: Send + Sync + std::fmt::Debug>() {}
        bounds::<SystolicArray>();
        bounds::<Box<dyn WeightEnergyModel>>();
    }
}
