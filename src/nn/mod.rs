//! The reference network: a small, fast, pure-Rust CNN that implements
//! [`Trainable`](crate::network::Trainable), with its optimizers, losses, MNIST
//! loading and a simple training loop.
//!
//! Layers: 2-D convolution (stride, padding, groups) via im2col + GEMM over the whole
//! batch, linear, ReLU, max-pool, average-pool; flatten is implicit before a linear
//! layer. Losses: softmax cross-entropy and MSE distillation. Optimizers: SGD with
//! momentum and weight decay, Adam. Initialisation: seeded He-normal.

mod compact;
mod io;
pub mod latency;
pub mod loss;
pub mod mnist;
mod model;
pub mod ops;
pub mod optim;
mod train;

pub use latency::{LatencyOracle, LatencyStats, measure_latency};
pub use model::{Cnn, LayerSpec};
pub use train::{EpochStats, TrainConfig, cosine_lr, evaluate, predict_all, train_epoch};
