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
//! * [`WidthEnergyModel`]: energy `f(s)` and its gradient for continuous layer
//!   widths `s` (channel counts). Implemented by [`SystolicArray`] in width form and
//!   by the learned [`Bilinear`] model, fitted to measurements of any black-box
//!   [`CostOracle`] (see [`profile`] for the calibration workflow).
//!
//! Units are the model's own (for the systolic model: multiples of one
//! register-file access).

pub mod bilinear;
pub mod profile;
pub mod systolic;

pub use bilinear::{Bilinear, FitError, FitOptions, FitReport, Term};
pub use profile::{CostOracle, ModelOracle, ProfileSet, WidthSampler};
pub use systolic::{SystolicArray, SystolicConfig};

use std::fmt;
use std::sync::Arc;

use crate::arch::{Architecture, LayerKind};
use crate::error::{Error, Result};
use crate::network::{Network, NetworkMut};

/// The weights and input masks of every prunable layer: the *sparsity state* that a
/// weight-level model prices. A weight is "in the support" when it is nonzero; an
/// input element is present when its mask entry is nonzero (no mask: all present).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkState {
    /// Weights per prunable layer, canonical layout.
    pub weights: Vec<Vec<f32>>,
    /// Optional input mask per prunable layer (`C x H x W` for conv, `C` for linear).
    pub input_masks: Vec<Option<Vec<f32>>>,
}

impl NetworkState {
    /// Copy the weights and input masks out of a network.
    ///
    /// # Errors
    /// Errors of the network's `read_weights` / `read_input_mask`.
    pub fn from_network<N: Network + ?Sized>(net: &N) -> Result<Self> {
        let arch = net.architecture();
        let mut weights = Vec::with_capacity(arch.layers().len());
        let mut input_masks = Vec::with_capacity(arch.layers().len());
        for (l, layer) in arch.layers().iter().enumerate() {
            weights.push(net.weights(l)?);
            let mut m = vec![0.0; layer.in_features()];
            input_masks.push(net.read_input_mask(l, &mut m)?.then_some(m));
        }
        Ok(Self {
            weights,
            input_masks,
        })
    }

    /// All weights equal to one, no input masks: the dense network.
    pub fn dense(arch: &Architecture) -> Self {
        Self {
            weights: arch
                .layers()
                .iter()
                .map(|l| vec![1.0; l.weight_count()])
                .collect(),
            input_masks: vec![None; arch.layers().len()],
        }
    }

    /// Write the weights back into a network (masks are not written).
    ///
    /// # Errors
    /// Errors of the network's `write_weights`.
    pub fn write_weights_to<N: NetworkMut + ?Sized>(&self, net: &mut N) -> Result<()> {
        for (l, w) in self.weights.iter().enumerate() {
            net.write_weights(l, w)?;
        }
        Ok(())
    }

    /// Number of nonzero weights per layer.
    pub fn nonzeros(&self) -> Vec<u64> {
        self.weights
            .iter()
            .map(|w| w.iter().filter(|v| **v != 0.0).count() as u64)
            .collect()
    }

    /// Check that the state fits `arch` (one entry per layer, right lengths).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming the first layer that does not fit.
    pub fn check(&self, arch: &Architecture) -> Result<()> {
        let n = arch.layers().len();
        if self.weights.len() != n || self.input_masks.len() != n {
            return Err(Error::shape(
                "layers in the network state",
                n,
                self.weights.len().min(self.input_masks.len()),
            ));
        }
        for (layer, (w, m)) in arch
            .layers()
            .iter()
            .zip(self.weights.iter().zip(&self.input_masks))
        {
            if w.len() != layer.weight_count() {
                return Err(Error::shape(
                    format!("weights of layer {}", layer.name),
                    layer.weight_count(),
                    w.len(),
                ));
            }
            check_mask_len(layer, m.as_deref())?;
        }
        Ok(())
    }
}

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

/// Energy of one layer, split as in the ICLR 2019 model.
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
    /// `E_compute`.
    pub compute: f64,
    /// `E_weights` (weight movement through DRAM, buffer and register files).
    pub weight_access: f64,
    /// `E_input` (input movement plus output write-back).
    pub input_access: f64,
    /// Sum of the three parts.
    pub total: f64,
}

impl LayerEnergy {
    /// The breakdown of `layer`, its total being the sum of the three parts.
    pub(crate) fn of(
        layer: &crate::arch::Layer,
        nonzero: u64,
        macs: u64,
        compute: f64,
        weight_access: f64,
        input_access: f64,
    ) -> Self {
        Self {
            name: layer.name.clone(),
            kind: kind_name(&layer.kind),
            weights: layer.weight_count() as u64,
            nonzero,
            macs,
            compute,
            weight_access,
            input_access,
            total: compute + weight_access + input_access,
        }
    }
}

/// A per-layer energy breakdown and its total.
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
    /// Sum of `E_compute` over layers.
    pub fn compute(&self) -> f64 {
        self.layers.iter().map(|l| l.compute).sum()
    }
    /// Sum of `E_weights` over layers.
    pub fn weight_access(&self) -> f64 {
        self.layers.iter().map(|l| l.weight_access).sum()
    }
    /// Sum of `E_input` over layers.
    pub fn input_access(&self) -> f64 {
        self.layers.iter().map(|l| l.input_access).sum()
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
        writeln!(
            f,
            "{:<name_w$}  {:<6}  {:>11}  {:>11}  {:>14}  {:>14}  {:>14}  {:>14}  {:>14}",
            "layer",
            "kind",
            "weights",
            "nonzero",
            "MACs",
            "E_compute",
            "E_weights",
            "E_input",
            "total"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<name_w$}  {:<6}  {:>11}  {:>11}  {:>14}  {:>14.6e}  {:>14.6e}  {:>14.6e}  {:>14.6e}",
                l.name,
                l.kind,
                l.weights,
                l.nonzero,
                l.macs,
                l.compute,
                l.weight_access,
                l.input_access,
                l.total
            )?;
        }
        let (w, nz, macs) = self.layers.iter().fold((0, 0, 0), |(a, b, c), l| {
            (a + l.weights, b + l.nonzero, c + l.macs)
        });
        write!(
            f,
            "{:<name_w$}  {:<6}  {:>11}  {:>11}  {:>14}  {:>14.6e}  {:>14.6e}  {:>14.6e}  {:>14.6e}",
            "total",
            "",
            w,
            nz,
            macs,
            self.compute(),
            self.weight_access(),
            self.input_access(),
            self.total
        )
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
}

/// A model of energy (or latency) as a differentiable function of continuous
/// widths `s`, one per [`Width`](crate::arch::Width) of the architecture.
pub trait WidthEnergyModel: Send + Sync + fmt::Debug {
    /// Number of widths the model expects.
    fn num_widths(&self) -> usize;

    /// Energy at widths `s`, writing `df/ds` into `grad` (same length).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] on wrong lengths, [`Error::NonFinite`] for NaN widths.
    fn energy_and_gradient(&self, widths: &[f64], grad: &mut [f64]) -> Result<f64>;

    /// Energy at widths `s`.
    ///
    /// # Errors
    /// As [`WidthEnergyModel::energy_and_gradient`].
    fn width_energy(&self, widths: &[f64]) -> Result<f64> {
        let mut g = vec![0.0; widths.len()];
        self.energy_and_gradient(widths, &mut g)
    }
}

macro_rules! forward_models {
    ($($ptr:ty),*) => {$(
        impl<T: WeightEnergyModel + ?Sized> WeightEnergyModel for $ptr {
            fn architecture(&self) -> &Architecture { (**self).architecture() }
            fn energy(&self, state: &NetworkState) -> Result<EnergyReport> { (**self).energy(state) }
            fn input_energy(&self, m: &[Option<Vec<f32>>]) -> Result<Vec<f64>> { (**self).input_energy(m) }
            fn relaxed_energy(&self, nz: &[u64], ie: &[f64]) -> Result<EnergyReport> { (**self).relaxed_energy(nz, ie) }
            fn knapsack_costs(&self) -> Vec<LayerCost> { (**self).knapsack_costs() }
        }
        impl<T: WidthEnergyModel + ?Sized> WidthEnergyModel for $ptr {
            fn num_widths(&self) -> usize { (**self).num_widths() }
            fn energy_and_gradient(&self, s: &[f64], g: &mut [f64]) -> Result<f64> { (**self).energy_and_gradient(s, g) }
        }
    )*};
}
forward_models!(&T, Box<T>, Arc<T>);

/// An input mask, if present, must have one entry per input element of `layer`.
pub(crate) fn check_mask_len(layer: &crate::arch::Layer, mask: Option<&[f32]>) -> Result<()> {
    match mask {
        Some(m) if m.len() != layer.in_features() => Err(Error::shape(
            format!("input mask of layer {}", layer.name),
            layer.in_features(),
            m.len(),
        )),
        _ => Ok(()),
    }
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
        let by_ref: &dyn WidthEnergyModel = &model;
        let widths: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
        let boxed_w: Box<dyn WidthEnergyModel> = Box::new(&model);
        assert_eq!(
            by_ref.width_energy(&widths).unwrap(),
            boxed_w.width_energy(&widths).unwrap()
        );
        fn bounds<T: Send + Sync + std::fmt::Debug>() {}
        bounds::<SystolicArray>();
        bounds::<Box<dyn WeightEnergyModel>>();
    }
}
