#![warn(missing_docs)]
//! # energy-prune-nn
//!
//! The reference network: a small, fast, pure-Rust CNN that implements the
//! [`network`](energy_prune::network) traits, plus MNIST loading, compaction, CPU
//! latency measurement ([`latency`]), measured energy on RAPL and NVML counters
//! ([`meter`]) and the workflows built on them ([`workflow`]). One implementation
//! of the traits among others: nothing of [`energy_prune`] depends on it.
//!
//! Layers: 2-D convolution (stride, padding, groups) via im2col + GEMM over the whole
//! batch, linear, ReLU, max-pool, average-pool; flatten is implicit before a linear
//! layer. Training is data-parallel over threads (each thread one shard of the
//! batch). Initialisation: seeded He-normal. Loss and optimizers come from
//! [`train`](energy_prune::train).

mod compact;
mod executor;
mod io;
pub mod kernels;
pub mod latency;
pub mod meter;
pub mod mnist;
mod model;
pub(crate) mod ops;
mod spec;
mod threads;
pub mod workflow;

pub use latency::{LatencyOracle, LatencyStats, LayerLatencyOracle, measure_latency};
pub use model::Cnn;
pub use spec::LayerSpec;
