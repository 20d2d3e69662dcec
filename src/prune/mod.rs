//! Constrained optimizers: projection onto an energy budget and the training
//! drivers around it.
//!
//! * [`project`]: one weighted sparse projection (a pure step, usable from any
//!   training loop);
//! * [`train_projected`]: the ICLR 2019 driver (projected SGD, budget schedule,
//!   distillation, fixed-support fine-tuning);
//! * [`train_magnitude`]: the magnitude-pruning baseline at the same energy.

pub mod admm;
pub mod admm_train;
pub mod observer;
pub mod plan;
pub mod projected;
pub mod projection;
pub mod schedule;

pub use admm::{Admm, AdmmConfig, AdmmStep, prox_keep};
pub use admm_train::{AdmmReport, AdmmTraining, train_admm, uniform_widths};
pub use observer::{EpochEvent, NoObserver, Observer, OnEpoch};
pub use plan::PruningPlan;
pub use projected::{
    Data, MaskRounds, ProjectedTraining, PruneReport, Termination, magnitude_prune,
    train_magnitude, train_projected,
};
pub use projection::{
    ProjectionOutcome, ProjectionWorkspace, greedy_knapsack, project, project_sorted,
    project_top_k, project_with_workspace, weight_costs,
};
pub use schedule::BudgetSchedule;
