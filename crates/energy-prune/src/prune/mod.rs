//! Constrained optimizers: training that keeps a network within a cost budget.
//!
//! | piece | what it is |
//! |---|---|
//! | [`ConstrainedOptimizer`] | the trait: a step after each weight update that keeps (or brings) the network within budget, its status, its frozen support |
//! | [`WeightProjection`] | weighted sparse projection onto `{energy <= budget}` of every budget on a budget schedule (ICLR 2019); [`project`] is one projection |
//! | [`AdmmPruning`] | ADMM channel pruning under a width-level cost model (ECC, CVPR 2019); [`Admm`] is one iteration |
//! | [`JointQuantization`] | pruning and per-layer precision chosen together under the budgets; [`joint::project_joint`] is one projection |
//! | [`MagnitudePruning`], [`UniformScaling`] | the baselines, as solvers |
//! | [`train_constrained`] | the one driver: phases, teacher, schedule, observers, termination |
//! | [`Budget`] | what every solver constrains: a name, a model, a limit (absolute or a fraction of dense); every solver takes a non-empty list |
//! | [`train_projected`], [`train_magnitude`], [`train_admm`], [`train_uniform`] | the papers' settings in one call |
//!
//! Everything here knows networks only through the [`network`](crate::network)
//! traits and trains through [`train`](crate::train); nothing depends on the
//! reference CNN.

pub mod admm;
pub mod baselines;
pub mod budget;
pub mod constraint;
pub mod driver;
pub mod joint;
pub mod observer;
pub mod projection;
pub mod recipes;
pub mod schedule;

pub use admm::{Admm, AdmmConfig, AdmmPruning, AdmmStep};
pub use baselines::{
    MagnitudePruning, MagnitudeRule, UniformScaling, magnitude_prune, uniform_widths,
};
pub use budget::{Budget, Limit};
pub use constraint::{
    AdmmEvent, BudgetStatus, ConstrainedOptimizer, ConstraintStatus, Kept, Phase, ProjectionEvent,
    RunInfo, SolverEvent, StepContext, StepReport,
};
pub use driver::{
    Data, Divergence, DivergenceCause, LrSchedule, MaskRounds, Termination, TrainingConfig,
    TrainingReport, train_constrained, train_constrained_with_loss,
};
pub use joint::{JointConfig, JointOutcome, JointQuantization, precision_options, project_joint};
pub use observer::{EpochEvent, NoObserver, Observer, OnEpoch};
pub use projection::multi::{KnapsackConstraint, MultiSelection, multi_knapsack};
pub use projection::sharded::{ShardedOutcome, ShardedProblem};
pub use projection::{
    ProjectionOutcome, ProjectionWorkspace, Selection, WEIGHTS_PER_THREAD, WeightProjection,
    WeightProjectionConfig, greedy_knapsack, greedy_knapsack_parallel, project, project_top_k,
    project_weights, project_with_workspace, weight_costs,
};
pub use recipes::{
    AdmmTraining, JointChoice, JointTraining, ProjectedTraining, train_admm, train_joint,
    train_magnitude, train_projected, train_uniform,
};
pub use schedule::BudgetSchedule;
