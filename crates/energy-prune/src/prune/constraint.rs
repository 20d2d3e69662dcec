//! The constrained-optimizer trait: one step that keeps (or brings) a network
//! within a cost budget, taken after the weight optimizer's update.
//!
//! Implemented by the weighted sparse projection ([`WeightProjection`](super::WeightProjection),
//! ICLR 2019), by ADMM channel pruning ([`AdmmPruning`](super::AdmmPruning), ECC,
//! CVPR 2019) and by the baselines ([`MagnitudePruning`](super::MagnitudePruning),
//! [`UniformScaling`](super::UniformScaling)). The driver
//! [`train_constrained`](super::train_constrained) runs any of them through the same
//! phases; a hand-written training loop calls the same methods itself:
//!
//! ```text
//! solver.begin(&mut net, &RunInfo::default())?;           // once
//! solver.begin_phase(&net, Phase::Constrained, steps)?;   // per phase
//! for each update: optimizer step, then
//!     let report = solver.step(&mut net, &StepContext::new(step, steps))?;
//! solver.begin_phase(&net, Phase::FineTune, ft_steps)?;   // freeze the support
//! for each update: optimizer step, then solver.hold(&mut net)?;
//! let status = solver.status(&net)?;                       // cost, budget, met
//! ```

use std::fmt;

use crate::error::{Result, ensure};
use crate::network::{Network, NetworkMut};
use crate::train::Preconditioner;

/// The budget check every solver's constructor makes.
pub(crate) fn check_budget(budget: f64) -> Result<()> {
    ensure(
        budget.is_finite() && budget > 0.0,
        "budget",
        budget,
        "must be finite and > 0",
    )
}

/// A phase of a constrained training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Training with the constrained step after every update (projection on a
    /// budget schedule, or ADMM until the budget is met).
    Constrained,
    /// Input-mask rounds: the masks are trained (weights fixed).
    InputMasks,
    /// Input-mask rounds: the weights are trained and projected at the target.
    MaskWeights,
    /// Fine-tuning with the support fixed (pruned weights or channels stay zero).
    FineTune,
}

impl Phase {
    /// A short lowercase name (`"constrained"`, `"masks"`, `"mask-weights"`, `"finetune"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Constrained => "constrained",
            Phase::InputMasks => "masks",
            Phase::MaskWeights => "mask-weights",
            Phase::FineTune => "finetune",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a run will do, told to the solver once at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunInfo {
    /// Whether input-mask rounds will run (then the reachable floor is that of
    /// all-zero masks).
    pub input_mask_rounds: bool,
}

/// What a constrained step may know of the update that preceded it.
#[derive(Clone, Copy, Default)]
pub struct StepContext<'a> {
    /// Update number within the phase, from 1.
    pub step: usize,
    /// Updates planned in the phase (0 if unknown); the step numbered `steps` is
    /// the phase's last.
    pub steps: usize,
    /// Learning rate of the update.
    pub learning_rate: f64,
    /// The weight optimizer's diagonal preconditioner, if it has one (Adam).
    pub preconditioner: Option<&'a dyn Preconditioner>,
}

impl fmt::Debug for StepContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("step", &self.step)
            .field("steps", &self.steps)
            .field("learning_rate", &self.learning_rate)
            .field("preconditioner", &self.preconditioner.is_some())
            .finish()
    }
}

impl StepContext<'_> {
    /// Step `step` of `steps`, learning rate 1, no preconditioner (what a plain
    /// SGD loop has to say).
    pub fn new(step: usize, steps: usize) -> Self {
        Self {
            step,
            steps,
            learning_rate: 1.0,
            preconditioner: None,
        }
    }

    /// Whether this is the phase's last planned step.
    pub fn is_last(&self) -> bool {
        self.steps > 0 && self.step == self.steps
    }
}

/// What the solver keeps of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Nonzero weights (weight-level solvers).
    Weights {
        /// Nonzero weights in all prunable layers.
        nonzero: u64,
    },
    /// Live channels per width (channel-level solvers).
    Channels {
        /// Live channels of every width.
        live: Vec<usize>,
    },
}

impl Kept {
    /// Nonzero weights, or the sum of live channels.
    pub fn total(&self) -> u64 {
        match self {
            Kept::Weights { nonzero } => *nonzero,
            Kept::Channels { live } => live.iter().map(|v| *v as u64).sum(),
        }
    }
}

/// Where a network stands against its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintStatus {
    /// The model's cost of the network as it is (exact energy of the support, or
    /// the cost of the live widths), in model units.
    pub cost: f64,
    /// The quantity the solver constrains on its way: the relaxed energy (an upper
    /// bound of `cost`) for projection, `f(s)` of the continuous widths for ADMM.
    pub relaxed_cost: f64,
    /// The budget in force now (a schedule may still be above the target).
    pub budget: f64,
    /// The final budget.
    pub target: f64,
    /// Whether `cost <= target`.
    pub met: bool,
    /// What is kept.
    pub kept: Kept,
    /// Every budget, in the solver's order (one entry for one budget; the fields
    /// above describe the tightest).
    pub budgets: Vec<BudgetStatus>,
}

/// Where a network stands against one of several budgets.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetStatus {
    /// The budget's name.
    pub name: String,
    /// Exact cost of the network under the budget's model.
    pub cost: f64,
    /// The budget.
    pub budget: f64,
    /// `cost <= budget`.
    pub met: bool,
    /// Less than 1 % of the budget left.
    pub binding: bool,
}

impl BudgetStatus {
    /// The status of budget `name` at `cost` against `budget`.
    pub fn of(name: &str, cost: f64, budget: f64) -> Self {
        Self {
            name: name.to_owned(),
            cost,
            budget,
            met: cost <= budget,
            binding: budget - cost <= 0.01 * budget,
        }
    }
}

/// What one [`ConstrainedOptimizer::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Whether the step changed the network beyond holding the support (a
    /// projection ran, an ADMM iteration ran).
    pub acted: bool,
    /// Whether the solver has fixed its support: the budget is met and further
    /// steps only hold it (the driver then moves on to fine-tuning).
    pub frozen: bool,
    /// The solver's own event, if the step acted.
    pub event: Option<SolverEvent>,
}

impl StepReport {
    /// A step that only held the support (or did nothing).
    pub fn held(frozen: bool) -> Self {
        Self {
            acted: false,
            frozen,
            event: None,
        }
    }
}

/// A projection ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectionEvent {
    /// Update number within the phase, from 1.
    pub step: usize,
    /// The budget projected onto.
    pub budget: f64,
    /// Relaxed energy after the projection (`<= budget`).
    pub relaxed_energy: f64,
    /// Nonzero weights kept.
    pub kept: u64,
}

/// An ADMM iteration ran.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmmEvent {
    /// Update number within the phase, from 1.
    pub step: usize,
    /// Live channels per width after the proximal step.
    pub live: Vec<usize>,
    /// Model cost of the live widths (the first budget's model).
    pub cost: f64,
    /// Model cost of the live widths, per budget.
    pub costs: Vec<f64>,
    /// The continuous widths `s`.
    pub s: Vec<f64>,
    /// The width duals `y`.
    pub y: Vec<f64>,
    /// The cost duals `z_k`, per budget.
    pub duals: Vec<f64>,
    /// Whether the live widths meet every budget (the support is frozen from now on).
    pub budget_met: bool,
}

/// A solver's own event, one type per solver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SolverEvent {
    /// From [`WeightProjection`](super::WeightProjection).
    Projection(ProjectionEvent),
    /// From [`AdmmPruning`](super::AdmmPruning).
    Admm(AdmmEvent),
}

/// A step that keeps (or brings) a network within a cost budget, taken after each
/// weight-optimizer update; see the [module docs](self) for the calling sequence.
pub trait ConstrainedOptimizer {
    /// A short name for reports (`"projection"`, `"admm"`, `"magnitude"`, `"uniform"`).
    fn name(&self) -> &'static str;

    /// The target budget, in model units.
    fn target(&self) -> f64;

    /// Prepare for a run on `net`: check that the budget is reachable, and apply
    /// what a one-shot method does at once (magnitude pruning, uniform widths).
    ///
    /// # Errors
    /// [`Error::InfeasibleBudget`](crate::Error::InfeasibleBudget) if the budget
    /// cannot be reached; shape errors if the network does not fit the model.
    fn begin(&mut self, net: &mut dyn NetworkMut, run: &RunInfo) -> Result<()>;

    /// A phase of `steps` updates starts ([`Phase::FineTune`]: freeze the current
    /// support, which [`ConstrainedOptimizer::hold`] then keeps).
    ///
    /// # Errors
    /// Errors of the network and the model.
    fn begin_phase(&mut self, net: &dyn Network, phase: Phase, steps: usize) -> Result<()>;

    /// The constrained step after one update of the constrained phases.
    ///
    /// # Errors
    /// Errors of the network and the model.
    fn step(&mut self, net: &mut dyn NetworkMut, ctx: &StepContext<'_>) -> Result<StepReport>;

    /// Keep the frozen support after a fine-tuning update (pruned weights or
    /// channels back to zero).
    ///
    /// # Errors
    /// Errors of the network.
    fn hold(&mut self, net: &mut dyn NetworkMut) -> Result<()>;

    /// Where `net` stands against the budget now.
    ///
    /// # Errors
    /// Errors of the network and the model.
    fn status(&self, net: &dyn Network) -> Result<ConstraintStatus>;

    /// For costs with a part that no weight can remove but layer input masks can
    /// (the input energy of the systolic model): `Some(floor)` while that part, with
    /// the masks as they are, exceeds the budget. The default has no such part.
    ///
    /// # Errors
    /// Errors of the network and the model.
    fn unreachable_floor(&self, net: &dyn Network) -> Result<Option<f64>> {
        let _ = net;
        Ok(None)
    }

    /// The precision of every layer the solver prices the network at, for solvers
    /// that choose it ([`JointQuantization`](super::joint::JointQuantization));
    /// `None` (the default) for solvers that leave it to the models.
    fn precision(&self) -> Option<&[crate::energy::LayerPrecision]> {
        None
    }
}
