//! [`WeightProjection`]: the weighted sparse projection as a constrained optimizer
//! (ICLR 2019, projected SGD).
//!
//! In a constrained phase of `T` updates, every `project_every` updates (and at the
//! last one) the weights are projected onto the budget in force,
//! ```text
//! B(t) = E0 * (B_target / E0)^min(1, t / (reach_fraction * T))
//! ```
//! decaying exponentially from the network's relaxed energy `E0` at the start of the
//! phase to the target; the last update of the phase projects onto the target itself.
//! Between projections the pruned weights are held at zero unless `regrow` is set.
//! While layer input masks still keep the weight-independent energy above the budget
//! (input-mask rounds), the weights are projected onto that energy plus 30 % of the
//! room the budget leaves above the all-zero-mask floor.

use super::multi::Multi;
use super::{ProjectionWorkspace, project_one};
use crate::energy::{EnergyReport, WeightEnergyModel};
use crate::error::{Error, Result, ensure};
use crate::network::{Network, NetworkMut, NetworkState};
use crate::prune::budget::{Budget, check_budgets};
use crate::prune::constraint::{
    BudgetStatus, ConstrainedOptimizer, ConstraintStatus, Kept, Phase, ProjectionEvent, RunInfo,
    SolverEvent, StepContext, StepReport,
};
use crate::prune::schedule::BudgetSchedule;

/// Settings of [`WeightProjection`].
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `project_every` | 50 | >= 1 | updates between projections |
/// | `reach_fraction` | 0.6 | (0, 1] | part of the constrained phase after which the budget is at target |
/// | `regrow` | false | | let pruned weights regrow between projections (else they stay zero) |
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightProjectionConfig {
    /// Updates between projections.
    pub project_every: usize,
    /// Fraction of the constrained phase after which the budget is at its target.
    pub reach_fraction: f64,
    /// Let weights zeroed by a projection regrow before the next projection.
    pub regrow: bool,
}

impl Default for WeightProjectionConfig {
    fn default() -> Self {
        Self {
            project_every: 50,
            reach_fraction: 0.6,
            regrow: false,
        }
    }
}

impl WeightProjectionConfig {
    /// Check every field against its range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.project_every > 0,
            "project_every",
            self.project_every,
            "must be >= 1",
        )?;
        let reach = self.reach_fraction;
        ensure(
            reach > 0.0 && reach <= 1.0,
            "reach_fraction",
            reach,
            "must be in (0, 1]",
        )
    }
}

/// The engine of [`WeightProjection`] for one budget: projected training onto
/// `{energy <= budget}` under one weight-level model.
#[derive(Debug)]
pub(crate) struct Single<M> {
    name: String,
    model: M,
    budget: f64,
    cfg: WeightProjectionConfig,
    schedule: BudgetSchedule,
    regrow: bool,
    /// The budget of the last projection (the one in force).
    current: f64,
    /// The lowest weight-independent energy reachable (all-zero input masks when
    /// input-mask rounds run).
    min_floor: f64,
    support: WeightSupport,
    state: NetworkState,
    ws: ProjectionWorkspace,
}

impl<M: WeightEnergyModel> Single<M> {
    /// Projection onto `budget` (absolute, model units, checked) under `model`.
    fn new(name: String, model: M, budget: f64, cfg: WeightProjectionConfig) -> Result<Self> {
        Ok(Self {
            name,
            model,
            budget,
            cfg,
            schedule: BudgetSchedule::new(budget, budget, 0)?,
            regrow: cfg.regrow,
            current: budget,
            min_floor: 0.0,
            support: WeightSupport::default(),
            state: NetworkState::default(),
            ws: ProjectionWorkspace::new(),
        })
    }

    fn input_floor(&self, state: &NetworkState) -> Result<f64> {
        self.model.floor(&state.input_masks)
    }

    /// The energy the weights are projected onto now: the budget, or, while the
    /// input masks keep the weight-independent energy above it, that energy plus
    /// 30 % of the room the budget leaves above the all-zero-mask floor.
    fn weight_target(&self, state: &NetworkState) -> Result<f64> {
        let floor = self.input_floor(state)?;
        Ok(if floor <= self.budget {
            self.budget
        } else {
            floor + 0.3 * (self.budget - self.min_floor)
        })
    }
}

/// A frozen weight-level support: the zero pattern of a state, re-applied to the
/// network after updates so that pruned weights stay zero.
#[derive(Debug, Default)]
pub(crate) struct WeightSupport {
    support: Option<NetworkState>,
    /// Scratch for reading the network's weights.
    buf: NetworkState,
}

impl WeightSupport {
    /// Nothing frozen: [`WeightSupport::apply`] does nothing.
    pub(crate) fn clear(&mut self) {
        self.support = None;
    }

    /// Freeze the zero pattern of `state`.
    pub(crate) fn freeze(&mut self, state: NetworkState) {
        self.support = Some(state);
    }

    /// Freeze the zero pattern of `state`'s weights, reusing the buffers.
    pub(crate) fn update(&mut self, state: &NetworkState) {
        match &mut self.support {
            Some(s) => s.weights.clone_from(&state.weights),
            None => self.support = Some(state.clone()),
        }
    }

    /// The frozen weights of layer `l` (zero where pruned), if a support is frozen.
    pub(crate) fn layer(&self, l: usize) -> Option<&[f32]> {
        self.support
            .as_ref()
            .and_then(|s| s.weights.get(l))
            .map(Vec::as_slice)
    }

    /// Zero the weights of `state` wherever the frozen support is zero.
    pub(crate) fn apply_to_state(&self, state: &mut NetworkState) {
        let Some(support) = &self.support else {
            return;
        };
        for (w, s) in state.weights.iter_mut().zip(&support.weights) {
            for (wi, si) in w.iter_mut().zip(s) {
                if *si == 0.0 {
                    *wi = 0.0;
                }
            }
        }
    }

    /// Zero the weights of `net` wherever the frozen support is zero.
    pub(crate) fn apply<N: NetworkMut + ?Sized>(&mut self, net: &mut N) -> Result<()> {
        let Some(support) = &self.support else {
            return Ok(());
        };
        if self.buf.weights.len() != support.weights.len() {
            self.buf = support.clone();
        }
        for (l, (w, s)) in self
            .buf
            .weights
            .iter_mut()
            .zip(&support.weights)
            .enumerate()
        {
            net.read_weights(l, w)?;
            for (wi, si) in w.iter_mut().zip(s) {
                if *si == 0.0 {
                    *wi = 0.0;
                }
            }
            net.write_weights(l, w)?;
        }
        Ok(())
    }
}

/// The exact and relaxed energy of `net` as a status against `budget` / `target`.
pub(crate) fn weight_status<M: WeightEnergyModel + ?Sized, N: Network + ?Sized>(
    model: &M,
    net: &N,
    budget: f64,
    target: f64,
) -> Result<ConstraintStatus> {
    let state = NetworkState::from_network(net)?;
    let exact = model.energy(&state)?;
    let relaxed = model.relaxed_energy_of(&state)?;
    Ok(ConstraintStatus {
        cost: exact.total,
        relaxed_cost: relaxed,
        budget,
        target,
        met: exact.total <= target,
        kept: Kept::Weights {
            nonzero: state.nonzeros().iter().sum(),
        },
        budgets: Vec::new(),
    })
}

impl<M: WeightEnergyModel> ConstrainedOptimizer for Single<M> {
    fn name(&self) -> &'static str {
        "projection"
    }

    fn target(&self) -> f64 {
        self.budget
    }

    fn begin(&mut self, net: &mut dyn NetworkMut, run: &RunInfo) -> Result<()> {
        let state = NetworkState::from_network(&*net)?;
        state.check(self.model.architecture())?;
        // With input-mask rounds the reachable floor is that of all-zero masks.
        let mut masks = state.input_masks.clone();
        if run.input_mask_rounds {
            for m in masks.iter_mut().flatten() {
                m.fill(0.0);
            }
        }
        let floor = self.model.floor(&masks)?;
        if self.budget < floor {
            return Err(Error::InfeasibleBudget {
                budget: self.budget,
                min_achievable: floor,
            });
        }
        self.min_floor = floor;
        self.state = state;
        self.support.clear();
        Ok(())
    }

    fn begin_phase(&mut self, net: &dyn Network, phase: Phase, steps: usize) -> Result<()> {
        let state = NetworkState::from_network(net)?;
        match phase {
            Phase::Constrained => {
                let e0 = self.model.relaxed_energy_of(&state)?;
                let reach = ((steps as f64 * self.cfg.reach_fraction) as usize)
                    .min(steps.saturating_sub(1));
                self.schedule = BudgetSchedule::new(e0, self.weight_target(&state)?, reach)?;
                self.regrow = self.cfg.regrow;
                self.support.clear();
                self.current = self.schedule.at(0);
            }
            Phase::MaskWeights => {
                let target = self.weight_target(&state)?;
                self.schedule = BudgetSchedule::new(target, target, 0)?;
                self.regrow = true;
                self.support.clear();
                self.current = target;
            }
            Phase::InputMasks => self.current = self.budget,
            Phase::FineTune => {
                self.current = self.budget;
                self.support.freeze(state);
                return Ok(());
            }
        }
        self.state = state;
        Ok(())
    }

    fn step(&mut self, net: &mut dyn NetworkMut, ctx: &StepContext<'_>) -> Result<StepReport> {
        let last = ctx.is_last();
        if !ctx.step.is_multiple_of(self.cfg.project_every) && !last {
            if !self.regrow {
                self.support.apply(net)?;
            }
            return Ok(StepReport::held(false));
        }
        let b = if last {
            self.schedule.target()
        } else {
            self.schedule.at(ctx.step)
        };
        if self.state.weights.len() != net.architecture().layers().len() {
            self.state = NetworkState::from_network(&*net)?;
        }
        for (l, w) in self.state.weights.iter_mut().enumerate() {
            net.read_weights(l, w)?;
        }
        let out = project_one(&self.model, &mut self.state, b, &mut self.ws)?;
        self.state.write_weights_to(net)?;
        self.current = b;
        self.support.update(&self.state);
        Ok(StepReport {
            acted: true,
            frozen: false,
            event: Some(SolverEvent::Projection(ProjectionEvent {
                step: ctx.step,
                budget: b,
                relaxed_energy: out.relaxed_energy,
                kept: out.kept,
            })),
        })
    }

    fn hold(&mut self, net: &mut dyn NetworkMut) -> Result<()> {
        self.support.apply(net)
    }

    fn status(&self, net: &dyn Network) -> Result<ConstraintStatus> {
        let mut st = weight_status(&self.model, net, self.current, self.budget)?;
        st.budgets = vec![BudgetStatus {
            name: self.name.clone(),
            cost: st.cost,
            budget: self.budget,
            met: st.met,
            binding: self.budget - st.cost <= 0.01 * self.budget,
        }];
        Ok(st)
    }

    fn unreachable_floor(&self, net: &dyn Network) -> Result<Option<f64>> {
        let mut masks = Vec::with_capacity(net.architecture().layers().len());
        for (l, layer) in net.architecture().layers().iter().enumerate() {
            let mut m = vec![0.0; layer.in_features()];
            masks.push(net.read_input_mask(l, &mut m)?.then_some(m));
        }
        let floor = self.model.floor(&masks)?;
        Ok((floor > self.budget).then_some(floor))
    }
}

/// Projected training under one or several weight-level budgets (ICLR 2019,
/// projected SGD); see the [module docs](self). With one budget every projection
/// is the single-budget greedy knapsack ([`project`](super::project)); with several
/// (energy and parameters, say) each projection solves the multi-dimensional
/// knapsack of [`multi_knapsack`](super::multi::multi_knapsack) on per-budget
/// schedules. [`ConstraintStatus`] reports the tightest budget and lists every one.
///
/// # Examples
/// ```
/// use energy_prune::arch::zoo;
/// use energy_prune::energy::{SystolicArray, SystolicConfig};
/// use energy_prune::prune::{Budget, ConstrainedOptimizer, WeightProjection, WeightProjectionConfig};
/// # fn main() -> energy_prune::Result<()> {
/// let arch = zoo::lenet5()?;
/// let hw = SystolicArray::new(&arch, SystolicConfig::default())?;
/// let solver = WeightProjection::new(
///     vec![Budget::fraction("energy", &hw, 0.2)],
///     WeightProjectionConfig::default(),
/// )?;
/// assert_eq!(solver.name(), "projection");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WeightProjection<M> {
    engine: Engine<M>,
}

#[derive(Debug)]
enum Engine<M> {
    One(Single<M>),
    Many(Multi<M>),
}

impl<M: WeightEnergyModel> WeightProjection<M> {
    /// Projection onto every budget of `budgets` (a fraction is taken of the
    /// model's exact cost of the dense network).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for no budget, two budgets of one name, a limit
    /// that is not finite and positive, models of different architectures, or a
    /// bad configuration.
    pub fn new(budgets: Vec<Budget<M>>, cfg: WeightProjectionConfig) -> Result<Self> {
        cfg.validate()?;
        check_budgets(&budgets)?;
        let first = budgets[0].model.architecture().fingerprint();
        let mut limits = Vec::with_capacity(budgets.len());
        for b in &budgets {
            if b.model.architecture().fingerprint() != first {
                return Err(Error::param(
                    "budgets",
                    b.name.clone(),
                    "every model must price the same architecture",
                ));
            }
            limits.push(b.weight_limit()?);
        }
        let engine = if budgets.len() == 1 {
            let b = budgets.into_iter().next().expect("one budget");
            Engine::One(Single::new(b.name, b.model, limits[0], cfg)?)
        } else {
            Engine::Many(Multi::new(budgets, limits, cfg))
        };
        Ok(Self { engine })
    }

    /// The model of the first budget.
    pub fn model(&self) -> &M {
        match &self.engine {
            Engine::One(s) => &s.model,
            Engine::Many(m) => m.model(0),
        }
    }

    /// The exact per-layer energy of `net` under the first budget's model.
    ///
    /// # Errors
    /// Errors of the network and the model.
    pub fn energy_report<N: Network + ?Sized>(&self, net: &N) -> Result<EnergyReport> {
        self.model().energy(&NetworkState::from_network(net)?)
    }

    fn solver(&self) -> &dyn ConstrainedOptimizer {
        match &self.engine {
            Engine::One(s) => s,
            Engine::Many(m) => m,
        }
    }

    fn solver_mut(&mut self) -> &mut dyn ConstrainedOptimizer {
        match &mut self.engine {
            Engine::One(s) => s,
            Engine::Many(m) => m,
        }
    }
}

impl<M: WeightEnergyModel> ConstrainedOptimizer for WeightProjection<M> {
    fn name(&self) -> &'static str {
        self.solver().name()
    }

    fn target(&self) -> f64 {
        self.solver().target()
    }

    fn begin(&mut self, net: &mut dyn NetworkMut, run: &RunInfo) -> Result<()> {
        self.solver_mut().begin(net, run)
    }

    fn begin_phase(&mut self, net: &dyn Network, phase: Phase, steps: usize) -> Result<()> {
        self.solver_mut().begin_phase(net, phase, steps)
    }

    fn step(&mut self, net: &mut dyn NetworkMut, ctx: &StepContext<'_>) -> Result<StepReport> {
        self.solver_mut().step(net, ctx)
    }

    fn hold(&mut self, net: &mut dyn NetworkMut) -> Result<()> {
        self.solver_mut().hold(net)
    }

    fn status(&self, net: &dyn Network) -> Result<ConstraintStatus> {
        self.solver().status(net)
    }

    fn unreachable_floor(&self, net: &dyn Network) -> Result<Option<f64>> {
        self.solver().unreachable_floor(net)
    }
}
