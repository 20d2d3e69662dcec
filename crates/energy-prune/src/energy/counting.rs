//! Exact counting models: nonzero parameters, multiply-accumulates, and bytes of
//! sparse storage, as [`WeightEnergyModel`]s, so that they can be budgets next to
//! the systolic energy (see [`Budget`](crate::prune::Budget) and [`project`](crate::prune::project)).
//!
//! Per nonzero weight of a layer:
//! ```text
//! Parameters: 1
//! Macs:       H_out * W_out for a convolution (one MAC per output position and image), 1 for a linear layer
//! Bytes:      (value_bits + index_bits) / 8   (a value and its index in a sparse format)
//! ```
//! Costs do not depend on rank, input masks are ignored (no weight-independent
//! part), and the relaxed cost equals the exact one. Once a precision is set
//! ([`PrecisionModel::at_precision`]), a layer's stored value takes its weight
//! format's bits in place of `value_bits`; parameters and MACs do not depend on it.
//!
//! The same counts are a [`WidthCostModel`] of the layer widths (for channel
//! pruning, e.g. an ADMM constraint next to latency): a layer with `c` input and `d`
//! output channels has `c d k_h k_w / G` weights (`d k_h k_w` when depthwise, its
//! groups following its width; `c d` when linear, `c` counting every flattened
//! input), times the per-weight unit above. Exact at integer widths, bilinear in
//! between.

use super::precision::{LayerPrecision, PrecisionModel, check_precision};
use super::{CostPart, EnergyReport, LayerCost, LayerEnergy, WeightEnergyModel, WidthCostModel};
use crate::arch::{Architecture, LayerKind};
use crate::error::{Error, Result};
use crate::network::NetworkState;

/// What a [`CountingModel`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Nonzero weights.
    Parameters,
    /// Multiply-accumulates per image of the nonzero weights.
    Macs,
    /// Bytes of the nonzero weights stored sparsely.
    Bytes {
        /// Bits of a stored value (32 for `f32`, 8 for `int8`).
        value_bits: u32,
        /// Bits of a stored index (0 for a dense format).
        index_bits: u32,
    },
}

impl Count {
    /// A short name for reports (`"parameters"`, `"macs"`, `"bytes"`).
    pub fn name(&self) -> &'static str {
        match self {
            Count::Parameters => "parameters",
            Count::Macs => "macs",
            Count::Bytes { .. } => "bytes",
        }
    }
}

/// Counts nonzero parameters, MACs or bytes of a network exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct CountingModel {
    arch: Architecture,
    count: Count,
    unit: Vec<f64>,
    /// The precision set by [`PrecisionModel::at_precision`] (the reference until
    /// then, when bytes take `value_bits`).
    precision: Vec<LayerPrecision>,
}

impl CountingModel {
    /// A counting model of `arch`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a byte format of zero bits in all.
    pub fn new(arch: &Architecture, count: Count) -> Result<Self> {
        if let Count::Bytes {
            value_bits,
            index_bits,
        } = count
            && u64::from(value_bits) + u64::from(index_bits) == 0
        {
            return Err(Error::param(
                "value_bits + index_bits",
                0,
                "a stored weight takes at least one bit",
            ));
        }
        let unit = arch
            .layers()
            .iter()
            .map(|l| match (count, &l.kind) {
                (Count::Parameters, _) => 1.0,
                (Count::Macs, LayerKind::Conv2d(g)) => g.out_positions() as f64,
                (Count::Macs, LayerKind::Linear(_)) => 1.0,
                (
                    Count::Bytes {
                        value_bits,
                        index_bits,
                    },
                    _,
                ) => (f64::from(value_bits) + f64::from(index_bits)) / 8.0,
            })
            .collect();
        Ok(Self {
            arch: arch.clone(),
            count,
            unit,
            precision: vec![LayerPrecision::REFERENCE; arch.layers().len()],
        })
    }

    /// What the model counts.
    pub fn count(&self) -> Count {
        self.count
    }

    /// The count of the dense network (every weight nonzero).
    pub fn dense(&self) -> f64 {
        self.arch
            .layers()
            .iter()
            .zip(&self.unit)
            .map(|(l, u)| l.weight_count() as f64 * u)
            .sum()
    }

    fn report(&self, nonzeros: &[u64]) -> EnergyReport {
        let layers = self
            .arch
            .layers()
            .iter()
            .zip(&self.unit)
            .zip(nonzeros)
            .map(|((layer, u), &nz)| {
                let macs = match &layer.kind {
                    LayerKind::Conv2d(g) => nz * g.out_positions() as u64,
                    LayerKind::Linear(_) => nz,
                };
                LayerEnergy::of(
                    layer,
                    nz,
                    macs,
                    vec![CostPart::new(self.count.name(), nz as f64 * u)],
                )
            })
            .collect();
        EnergyReport::from_layers(layers)
    }
}

impl WeightEnergyModel for CountingModel {
    fn architecture(&self) -> &Architecture {
        &self.arch
    }

    fn energy(&self, state: &NetworkState) -> Result<EnergyReport> {
        state.check(&self.arch)?;
        state.check_finite()?;
        Ok(self.report(&state.nonzeros()))
    }

    fn input_energy(&self, input_masks: &[Option<Vec<f32>>]) -> Result<Vec<f64>> {
        let n = self.arch.layers().len();
        if input_masks.len() != n {
            return Err(Error::shape(
                "input masks (one per layer)",
                n,
                input_masks.len(),
            ));
        }
        Ok(vec![0.0; n])
    }

    fn relaxed_energy(&self, nonzeros: &[u64], input_energy: &[f64]) -> Result<EnergyReport> {
        let n = self.arch.layers().len();
        if nonzeros.len() != n || input_energy.len() != n {
            return Err(Error::shape(
                "nonzeros and input energies (one per layer)",
                n,
                nonzeros.len().min(input_energy.len()),
            ));
        }
        Ok(self.report(nonzeros))
    }

    fn knapsack_costs(&self) -> Vec<LayerCost> {
        self.arch
            .layers()
            .iter()
            .zip(&self.unit)
            .map(|(l, &u)| LayerCost {
                base: u,
                surcharge: 0.0,
                buffered: l.weight_count(),
            })
            .collect()
    }
}

impl PrecisionModel for CountingModel {
    fn precision(&self) -> &[LayerPrecision] {
        &self.precision
    }

    fn at_precision(&self, precision: &[LayerPrecision]) -> Result<Box<dyn PrecisionModel>> {
        check_precision(&self.arch, precision)?;
        let mut model = self.clone();
        if let Count::Bytes { index_bits, .. } = self.count {
            for (u, p) in model.unit.iter_mut().zip(precision) {
                *u = (f64::from(p.weights.bits()) + f64::from(index_bits)) / 8.0;
            }
        }
        model.precision = precision.to_vec();
        Ok(Box::new(model))
    }
}

impl WidthCostModel for CountingModel {
    fn num_widths(&self) -> usize {
        self.arch.widths().len()
    }

    fn cost_and_gradient(&self, widths: &[f64], grad: &mut [f64]) -> Result<f64> {
        super::check_widths(self.arch.widths().len(), widths, grad)?;
        grad.fill(0.0);
        let mut total = 0.0;
        for (layer, &unit) in self.arch.layers().iter().zip(&self.unit) {
            let (c, d) = super::layer_extent(layer, widths);
            // Weights as a function of (c, d) and its partial derivatives.
            let (weights, dc, dd) = match &layer.kind {
                LayerKind::Conv2d(g) => {
                    let kk = (g.kernel_h * g.kernel_w) as f64;
                    if g.is_depthwise() {
                        (d * kk, 0.0, kk)
                    } else {
                        let per = kk / g.groups as f64;
                        (c * d * per, d * per, c * per)
                    }
                }
                LayerKind::Linear(_) => (c * d, d, c),
            };
            total += unit * weights;
            super::add_layer_gradient(layer, grad, unit * dc, unit * dd);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{SlotLayout, zoo};
    use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

    /// Count by brute force the weights that survive keeping the first `widths[u]`
    /// channels of every width: a weight survives when its input slot and its output
    /// channel are both kept (walked through the slot layout, as compaction does).
    fn surviving(arch: &Architecture, widths: &[usize], unit: &[f64]) -> f64 {
        let mut total = 0.0;
        for (l, layer) in arch.layers().iter().enumerate() {
            let mut kept = vec![true; layer.weight_count()];
            let out = widths[layer.output.0];
            for slots in SlotLayout::of_layer(arch, l).unwrap() {
                let w = widths[slots.width];
                slots.for_each_run_with_output(|o, k, r| {
                    if k >= w || o >= out {
                        kept[r].fill(false);
                    }
                });
            }
            total += unit[l] * kept.iter().filter(|k| **k).count() as f64;
        }
        total
    }

    #[test]
    fn width_counts_are_exact_at_integer_widths_on_the_zoo() {
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        for arch in [
            zoo::lenet5().unwrap(),
            zoo::squeezenet1_0().unwrap(),
            zoo::mobilenet_v1().unwrap(),
            zoo::resnet18().unwrap(),
        ] {
            for count in [Count::Parameters, Count::Macs] {
                let m = CountingModel::new(&arch, count).unwrap();
                let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
                assert_eq!(
                    m.cost_of_widths(&full).unwrap(),
                    m.dense(),
                    "{}",
                    arch.name()
                );
                for _ in 0..3 {
                    let w: Vec<usize> = arch
                        .widths()
                        .iter()
                        .map(|w| {
                            if w.fixed {
                                w.channels
                            } else {
                                rng.random_range(1..=w.channels)
                            }
                        })
                        .collect();
                    let got = m.cost_of_widths(&w).unwrap();
                    let want = surviving(&arch, &w, &m.unit);
                    assert!(
                        (got - want).abs() <= 1e-9 * want,
                        "{}: {got} vs {want}",
                        arch.name()
                    );
                }
            }
        }
    }

    #[test]
    fn width_gradient_matches_finite_differences() {
        let arch = zoo::mobilenet_v1().unwrap();
        let m = CountingModel::new(&arch, Count::Macs).unwrap();
        let s: Vec<f64> = arch
            .widths()
            .iter()
            .enumerate()
            .map(|(u, w)| w.channels as f64 * (0.4 + 0.05 * (u % 7) as f64))
            .collect();
        let mut g = vec![0.0; s.len()];
        m.cost_and_gradient(&s, &mut g).unwrap();
        energy_prune_testing::check_gradient(&s, &g, 1e-3, 1e-6, 1e-6, |x| m.cost(x).unwrap())
            .unwrap();
        assert!(m.cost(&[1.0]).is_err());
        let mut bad = s.clone();
        bad[1] = f64::NAN;
        assert!(m.cost(&bad).is_err());
    }

    #[test]
    fn counts_lenet5_by_hand() {
        let arch = zoo::lenet5().unwrap();
        let p = CountingModel::new(&arch, Count::Parameters).unwrap();
        assert_eq!(p.dense(), 61_470.0);
        let m = CountingModel::new(&arch, Count::Macs).unwrap();
        // conv1 150 weights x 28*28, conv2 2400 x 10*10, then 48 000 + 10 080 + 840.
        assert_eq!(
            m.dense(),
            (150 * 784 + 2400 * 100 + 48_000 + 10_080 + 840) as f64
        );
        assert_eq!(m.dense(), arch.macs() as f64);
        let b = CountingModel::new(
            &arch,
            Count::Bytes {
                value_bits: 8,
                index_bits: 16,
            },
        )
        .unwrap();
        assert_eq!(b.dense(), 61_470.0 * 3.0);
        let mut s = NetworkState::dense(&arch);
        s.weights[0][..100].fill(0.0);
        let r = m.energy(&s).unwrap();
        assert_eq!(r.layers[0].nonzero, 50);
        assert_eq!(r.total, m.dense() - 100.0 * 784.0);
        assert_eq!(m.relaxed_energy_of(&s).unwrap(), r.total);
        assert_eq!(m.floor(&s.input_masks).unwrap(), 0.0);
        assert_eq!(m.knapsack_costs()[1].base, 100.0);
        assert!(
            CountingModel::new(
                &arch,
                Count::Bytes {
                    value_bits: 0,
                    index_bits: 0
                }
            )
            .is_err()
        );
        assert!(m.input_energy(&[]).is_err());
        assert!(m.relaxed_energy(&[1], &[0.0]).is_err());
        assert_eq!(
            (
                Count::Parameters.name(),
                Count::Macs.name(),
                b.count().name()
            ),
            ("parameters", "macs", "bytes")
        );
    }
}
