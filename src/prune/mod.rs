//! Constrained optimizers: projection onto an energy budget and the training
//! drivers around it.

mod projection;

pub use projection::{
    ProjectionOutcome, ProjectionWorkspace, greedy_knapsack, project, project_sorted,
    project_top_k, project_with_workspace,
};
