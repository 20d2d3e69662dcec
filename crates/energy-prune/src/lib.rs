#![warn(missing_docs)]
//! # energy-prune
//!
//! Compress deep neural networks so that they fit a hardware **energy budget**,
//! losing as little accuracy as possible. Parameter counts are a poor proxy for
//! energy: on real accelerators data movement dominates arithmetic, so
//! energy-prune makes the budget a hard constraint of training, priced by a model
//! of the hardware.
//!
//! ## The layers
//! Dependencies point down only; each module knows nothing of the ones above it.
//! The adapters are crates of their own that depend on this one, never the
//! reverse: `energy-prune-nn` (the reference CNN, MNIST loader, compaction, CPU
//! latency oracles, the closed latency loop), `energy-prune-onnx` (ONNX models in
//! and out), `energy-prune-candle` (candle models), and the `energy-prune`
//! command-line tool (`energy-prune-cli`).
//!
//! | layer | module | what it holds |
//! |---|---|---|
//! | constrained optimizers | [`prune`] | the [`ConstrainedOptimizer`](prune::ConstrainedOptimizer) trait and its solvers ([`WeightProjection`](prune::WeightProjection), [`JointQuantization`](prune::JointQuantization), [`AdmmPruning`](prune::AdmmPruning), the baselines), the one driver [`train_constrained`](prune::train_constrained) with typed observer events and a termination reason |
//! | quantizers | [`quant`] | uniform symmetric quantization (per-channel weights, per-tensor activations), straight-through gradients, the rounding-noise model the joint solver prices |
//! | training | [`train`] | [`DataSource`](train::DataSource), [`Loss`](train::Loss) (cross-entropy, distillation, your own), fallible [`Optimizer`](train::Optimizer) (SGD, Adam, the mask optimizer), the epoch loop and evaluation |
//! | cost models | [`energy`] | [`WeightEnergyModel`](energy::WeightEnergyModel) and [`WidthCostModel`](energy::WidthCostModel); per-layer [`precision`](energy::precision) ([`PrecisionModel`](energy::PrecisionModel)); the analytic [`SystolicArray`](energy::SystolicArray); exact counts ([`CountingModel`](energy::CountingModel)); the learned [`Bilinear`](energy::Bilinear) and [`LayerTable`](energy::LayerTable) with their calibration workflow and measurement [`protocol`](energy::protocol) |
//! | network | [`network`] | [`Network`](network::Network), [`NetworkMut`](network::NetworkMut), [`Trainable`](network::Trainable); [`NetworkState`](network::NetworkState) (a snapshot of weights and masks), [`PruningPlan`](network::PruningPlan) (kept channels) |
//! | architecture | [`arch`] | [`Architecture`](arch::Architecture): prunable layers, widths, [`SlotLayout`](arch::SlotLayout) (where a channel's weights sit), the zoo |
//! | errors | [`error`] | one [`Error`] enum |
//!
//! ## The picture
//! A user brings three things:
//! 1. a static description of the network's prunable layers, an
//!    [`Architecture`](arch::Architecture) (conv incl. strided/padded/grouped/depthwise,
//!    linear; channel groups that prune together are *widths*);
//! 2. access to its weights (and, for training, gradients) through the capability
//!    traits of [`network`]: [`Network`](network::Network) (read),
//!    [`NetworkMut`](network::NetworkMut) (write), [`Trainable`](network::Trainable)
//!    (forward/backward on a batch); weights are copied in and out in one canonical
//!    layout, so they may live in any framework;
//! 3. a cost model of the target hardware from [`energy`]: the analytic
//!    [`SystolicArray`](energy::SystolicArray) model of an Eyeriss-like chip (Yang,
//!    Zhu, Liu, ICLR 2019), usable at weight level (exact energy of a sparsity
//!    state, per-weight knapsack costs) and at width level (cost and gradient for
//!    continuous channel counts); or, for hardware that is a black box, the
//!    bilinear model of ECC (Yang, Zhu, Liu, CVPR 2019) fitted to measurements of
//!    any [`CostOracle`](energy::CostOracle) ([`energy::profile`]).
//!
//! The constrained optimizers of [`prune`] then keep the network within its
//! budgets while it trains. A [`Budget`](prune::Budget) is a name, a model and a
//! limit (absolute, or a fraction of the dense cost); every solver takes a
//! non-empty list of them, and one budget is a list of one:
//! * [`WeightProjection`](prune::WeightProjection): weighted sparse projection onto
//!   `{energy <= budget}` (a 0/1 knapsack solved greedily in expected `O(n)`; with
//!   several budgets a multi-dimensional knapsack) every k updates on a decaying
//!   budget schedule; optional rounds of learnable layer input masks lower the
//!   weight-independent energy ([`prune::train_projected`]);
//! * [`AdmmPruning`](prune::AdmmPruning): ECC's ADMM on channel groups (proximal
//!   step, step on the continuous widths, dual ascent per budget) until the models'
//!   costs of the live widths meet every budget ([`prune::train_admm`]);
//! * [`JointQuantization`](prune::JointQuantization): pruning and quantization under
//!   one budget, each layer's weight and activation bits chosen with its kept
//!   weights (a Lagrangian over the layers' options around the same projection),
//!   trained quantization-aware ([`prune::train_joint`]);
//! * the baselines [`MagnitudePruning`](prune::MagnitudePruning) (global or
//!   layer-uniform) and [`UniformScaling`](prune::UniformScaling), through the same
//!   driver.
//!
//! Each is a step you can also call from your own training loop (see the example
//! `custom_training_loop` of the workspace): `begin`, `begin_phase`, `step` after each update,
//! `hold` while fine-tuning, `status` for the cost against the budget.

//!
//! Every solver implements the dyn-compatible
//! [`ConstrainedOptimizer`](prune::ConstrainedOptimizer): a `Box<dyn ConstrainedOptimizer>`
//! chosen at run time goes through the same driver.
//!
//! ## Features
//! `serde` (off by default): derives and JSON files of architectures, plans,
//! profiles and calibrated models (with `serde_json`). Without it the crate
//! depends on nalgebra, rand, num-traits and thiserror only.
//!
//! ## Reproducibility
//! Every seed of the crate (initialisation, data order, samples, the driver's
//! `seed`) drives `rand::rngs::ChaCha12Rng`, a generator named after its algorithm
//! and so value-stable across rand releases (rand's `StdRng` makes no such
//! promise; in rand 0.10 it is the same ChaCha12 stream, so figures measured with
//! it reproduce).
//!
//! ## Quick start
//! ```
//! use energy_prune::arch::zoo;
//! use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
//! use energy_prune::network::NetworkState;
//! use energy_prune::prune::{Budget, project};
//!
//! # fn main() -> energy_prune::Result<()> {
//! // The hardware model for LeNet-5 on the default 12 x 14 systolic array.
//! let arch = zoo::lenet5()?;
//! let model = SystolicArray::new(&arch, SystolicConfig::default())?;
//!
//! // Weights would come from a trained network (`NetworkState::from_network`).
//! let mut state = NetworkState::dense(&arch);
//! for (l, w) in state.weights.iter_mut().enumerate() {
//!     w.iter_mut().enumerate().for_each(|(i, v)| *v = ((i * 31 + l) % 97) as f32 - 48.0);
//! }
//! let dense = model.energy(&state)?.total;
//!
//! // Project onto 30 % of the dense energy: the result provably fits.
//! let out = project(&mut state, &[Budget::absolute("energy", &model, 0.3 * dense)])?;
//! let exact = model.energy(&state)?;
//! assert!(exact.total <= 0.3 * dense);
//! println!("{exact}"); // per-layer table
//! # let _ = out;
//! # Ok(()) }
//! ```
//!
//! ## Errors
//! Every fallible function returns [`Result`] with the single [`Error`] enum; its
//! messages say what was wrong and how to fix it (mismatched shapes, non-finite
//! weights, a budget below the smallest achievable energy, an input buffer too
//! small for a layer, corrupt data files).
pub mod arch;
pub mod energy;
pub mod error;
pub mod files;
pub mod network;
pub mod prune;
pub mod quant;
pub mod train;

pub use error::{Error, Origin, Result};

/// The README's library example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    /// The crate's generator gives rand 0.10's `StdRng` stream for the same seed,
    /// so figures measured with `StdRng` before the switch reproduce.
    #[test]
    fn chacha12_is_the_stream_of_std_rng() {
        for seed in [0u64, 1, 42, u64::MAX] {
            let mut a = rand::rngs::ChaCha12Rng::seed_from_u64(seed);
            let mut b = rand::rngs::StdRng::seed_from_u64(seed);
            for _ in 0..64 {
                assert_eq!(a.next_u64(), b.next_u64());
            }
        }
    }
}
