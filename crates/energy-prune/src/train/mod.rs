//! Framework-neutral training: where batches come from ([`DataSource`]), what is
//! minimised ([`Loss`]), how parameters move ([`Optimizer`]), and the epoch loop
//! and evaluation around them ([`train_epoch`], [`evaluate`]).
//!
//! This layer knows the network only through [`Trainable`](crate::network::Trainable)
//! and nothing about pruning; the constrained optimizers of [`prune`](crate::prune)
//! build on it. Any model that implements the network traits (the reference CNN of
//! the reference CNN of `energy-prune-nn`, or a user's own) trains with it.

mod data;
mod epoch;
mod loss;
mod optim;

pub use data::{DataSource, Dataset};
pub use epoch::{Control, EpochStats, cosine_lr, evaluate, predict_all, train_epoch};
pub use loss::{
    Batch, CrossEntropy, Distillation, Loss, LossFn, argmax_rows, cross_entropy, mse_distillation,
};
pub use optim::{Adam, InputMaskAdam, Optimizer, Preconditioner, Sgd};
