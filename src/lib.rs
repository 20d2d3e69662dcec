#![warn(missing_docs)]
//! # energy-prune
//!
//! Compress deep neural networks so that they fit a hardware **energy budget**,
//! losing as little accuracy as possible. Parameter counts are a poor proxy for
//! energy: on real accelerators data movement dominates arithmetic, so
//! energy-prune makes the budget a hard constraint of training, priced by a model
//! of the hardware.
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
//! 3. an energy model of the target hardware from [`energy`]: the analytic
//!    [`SystolicArray`](energy::SystolicArray) model of an Eyeriss-like chip (Yang,
//!    Zhu, Liu, ICLR 2019), usable at weight level (exact energy of a sparsity
//!    state, per-weight knapsack costs) and at width level (energy and gradient for
//!    continuous channel counts).
//!
//! For hardware that is a black box, [`energy::profile`] holds the calibration
//! workflow of ECC (Yang, Zhu, Liu, CVPR 2019): sample layer widths
//! ([`WidthSampler`](energy::WidthSampler)), measure each configuration with a
//! [`CostOracle`](energy::CostOracle) (energy, latency; [`nn::LatencyOracle`] times
//! the reference CNN on this CPU), fit the bilinear model
//! [`Bilinear`](energy::Bilinear), check its validation error, save it as JSON.
//!
//! The optimizers of [`prune`] return a network that provably meets the budget
//! under that model:
//! * [`prune::project`]: weighted sparse projection onto `{energy <= budget}`, a
//!   0/1 knapsack solved greedily in expected `O(n)`;
//! * [`prune::train_projected`]: projected SGD with a decaying budget schedule,
//!   optional distillation from the dense teacher, optional rounds of learnable
//!   layer input masks (which lower the weight-independent energy), then
//!   fixed-support fine-tuning;
//! * [`prune::train_magnitude`]: the magnitude-pruning baseline at the same energy.
//!
//! [`nn`] is a small, fast, pure-Rust CNN (im2col + GEMM convolutions, data-parallel
//! training, MNIST loading) that implements the traits, so that examples and tests
//! train real networks on real data.
//!
//! ## Quick start
//! ```
//! use energy_prune::arch::zoo;
//! use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
//! use energy_prune::network::NetworkState;
//! use energy_prune::prune::project;
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
//! let out = project(&model, &mut state, 0.3 * dense)?;
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
pub mod network;
pub mod nn;
pub mod prune;
#[doc(hidden)]
pub mod testing;
pub mod train;

pub use error::{Error, Result};
