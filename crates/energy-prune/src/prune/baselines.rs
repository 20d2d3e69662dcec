//! The baselines the constrained optimizers are compared with, as constrained
//! optimizers of their own so that they run through the same driver, loss and
//! epochs:
//!
//! * [`MagnitudePruning`]: magnitude pruning to the same exact energy
//!   ([`magnitude_prune_by`]: globally the largest `k` weights by magnitude, or
//!   layer-uniformly the same fraction of every layer ([`MagnitudeRule`]), the
//!   support size found by bisection on the exact energy), then fine-tuning with the
//!   support fixed;
//! * [`UniformScaling`]: every free width scaled by one multiplier, the largest whose
//!   model cost meets the budget ([`uniform_widths`]), the first channels of each
//!   width kept, then fine-tuning.

use super::admm::check_same_architecture;
use super::constraint::{
    ConstrainedOptimizer, ConstraintStatus, Kept, Phase, RunInfo, StepContext, StepReport,
    check_budget,
};
use super::projection::{WeightSupport, weight_status};
use crate::arch::Architecture;
use crate::energy::{EnergyReport, WeightEnergyModel, WidthCostModel};
use crate::error::{Error, Result};
use crate::network::{Network, NetworkMut, NetworkState, PruningPlan};

/// Which weights magnitude pruning keeps for a given size of support.
///
/// Both rules keep nested supports (a larger support contains every smaller one), so
/// the exact energy grows with the support and the largest support that fits the
/// budget is found by bisection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MagnitudeRule {
    /// The `k` largest-magnitude weights of the whole network (ties by layer, then
    /// position): the usual global magnitude pruning.
    #[default]
    Global,
    /// The same fraction `q` of every layer's nonzero weights: in layer `l` with
    /// `n_l` nonzero weights the `round(q n_l)` largest by magnitude (ties by
    /// position). Layer-uniform sparsity, the other classic baseline.
    LayerUniform,
}

impl MagnitudeRule {
    /// The solver name of the rule in reports and observer events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Global => "magnitude",
            Self::LayerUniform => "layer-uniform",
        }
    }
}

/// Global magnitude pruning of `state` to exact energy `<= budget`: keep the `k`
/// largest-magnitude weights (ties by position) for the largest `k` whose exact
/// energy fits, found by bisection (exact energy grows with the support).
/// The same as [`magnitude_prune_by`] with [`MagnitudeRule::Global`].
///
/// # Errors
/// [`Error::InfeasibleBudget`] if even the all-zero state exceeds the budget;
/// [`Error::NonFinite`] for NaN weights; model errors.
pub fn magnitude_prune<M: WeightEnergyModel + ?Sized>(
    model: &M,
    state: &mut NetworkState,
    budget: f64,
) -> Result<EnergyReport> {
    magnitude_prune_by(model, state, budget, MagnitudeRule::Global)
}

/// Magnitude pruning of `state` under `rule` to exact energy `<= budget`: the
/// largest support of the rule whose exact energy fits, found by bisection over the
/// support size (global: the number `k` of weights kept; layer-uniform: the kept
/// fraction `q`, on the finite set of fractions at which some layer's count
/// changes). Weights outside the support are set to zero; the kept ones keep their
/// values. Input masks are left as they are and priced.
///
/// # Errors
/// [`Error::InfeasibleBudget`] if even the all-zero state exceeds the budget (the
/// state is then unchanged); [`Error::NonFinite`] for NaN or infinite weights;
/// [`Error::InvalidParameter`] for a budget that is not finite; model errors.
pub fn magnitude_prune_by<M: WeightEnergyModel + ?Sized>(
    model: &M,
    state: &mut NetworkState,
    budget: f64,
    rule: MagnitudeRule,
) -> Result<EnergyReport> {
    state.check(model.architecture())?;
    if !budget.is_finite() {
        return Err(Error::param("budget", budget, "must be finite"));
    }
    for (l, w) in state.weights.iter().enumerate() {
        crate::error::check_finite(&format!("weights of layer {l}"), w)?;
    }
    // Per layer, the nonzero positions by decreasing magnitude (ties by position).
    let ranked: Vec<Vec<u32>> = state
        .weights
        .iter()
        .map(|w| {
            let mut idx: Vec<u32> = (0..w.len() as u32)
                .filter(|&i| w[i as usize] != 0.0)
                .collect();
            idx.sort_by(|&a, &b| {
                w[b as usize]
                    .abs()
                    .total_cmp(&w[a as usize].abs())
                    .then(a.cmp(&b))
            });
            idx
        })
        .collect();
    // Candidate supports, indexed by size 0..=steps: `counts(s)` is the number of
    // leading ranked weights kept per layer at step `s`, monotone in `s`.
    let (steps, global): (usize, Vec<(u32, u32)>) = match rule {
        MagnitudeRule::Global => {
            let mut order: Vec<(u32, u32)> = ranked
                .iter()
                .enumerate()
                .flat_map(|(l, r)| r.iter().map(move |&i| (l as u32, i)))
                .collect();
            let w = &state.weights;
            order.sort_by(|a, b| {
                let (va, vb) = (w[a.0 as usize][a.1 as usize], w[b.0 as usize][b.1 as usize]);
                vb.abs().total_cmp(&va.abs()).then(a.cmp(b))
            });
            (order.len(), order)
        }
        MagnitudeRule::LayerUniform => (LAYER_UNIFORM_STEPS, Vec::new()),
    };
    let original = state.weights.clone();
    let keep = |s: usize, st: &mut NetworkState| {
        for w in &mut st.weights {
            w.fill(0.0);
        }
        match rule {
            MagnitudeRule::Global => {
                for &(l, i) in &global[..s] {
                    st.weights[l as usize][i as usize] = original[l as usize][i as usize];
                }
            }
            MagnitudeRule::LayerUniform => {
                let q = s as f64 / steps as f64;
                for (l, r) in ranked.iter().enumerate() {
                    let k = ((q * r.len() as f64).round() as usize).min(r.len());
                    for &i in &r[..k] {
                        st.weights[l][i as usize] = original[l][i as usize];
                    }
                }
            }
        }
    };
    keep(0, state);
    let floor = model.energy(state)?;
    if floor.total > budget {
        state.weights = original;
        return Err(Error::InfeasibleBudget {
            budget,
            min_achievable: floor.total,
        });
    }
    let (mut lo, mut hi) = (0usize, steps); // energy(lo) <= budget
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        keep(mid, state);
        if model.energy(state)?.total <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    keep(lo, state);
    model.energy(state)
}

/// Resolution of the layer-uniform fraction `q` (in steps of `2^-24`): finer than
/// one weight in any layer of up to 16 M weights, so every reachable support is a
/// candidate there.
const LAYER_UNIFORM_STEPS: usize = 1 << 24;

/// Magnitude pruning as a one-shot constrained optimizer: [`magnitude_prune_by`]
/// when the run begins, then the support held fixed.
#[derive(Debug)]
pub struct MagnitudePruning<M> {
    model: M,
    budget: f64,
    rule: MagnitudeRule,
    support: WeightSupport,
}

impl<M: WeightEnergyModel> MagnitudePruning<M> {
    /// Global magnitude pruning to exact energy `<= budget` under `model`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a budget that is not finite and positive.
    pub fn new(model: M, budget: f64) -> Result<Self> {
        Self::with_rule(model, budget, MagnitudeRule::Global)
    }

    /// Magnitude pruning under `rule` to exact energy `<= budget` under `model`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a budget that is not finite and positive.
    pub fn with_rule(model: M, budget: f64, rule: MagnitudeRule) -> Result<Self> {
        check_budget(budget)?;
        Ok(Self {
            model,
            budget,
            rule,
            support: WeightSupport::default(),
        })
    }
}

impl<M: WeightEnergyModel> ConstrainedOptimizer for MagnitudePruning<M> {
    fn name(&self) -> &'static str {
        self.rule.name()
    }

    fn target(&self) -> f64 {
        self.budget
    }

    fn begin(&mut self, net: &mut dyn NetworkMut, _run: &RunInfo) -> Result<()> {
        let mut state = NetworkState::from_network(&*net)?;
        magnitude_prune_by(&self.model, &mut state, self.budget, self.rule)?;
        state.write_weights_to(net)?;
        self.support.freeze(state);
        Ok(())
    }

    fn begin_phase(&mut self, net: &dyn Network, _: Phase, _: usize) -> Result<()> {
        self.support.freeze(NetworkState::from_network(net)?);
        Ok(())
    }

    fn step(&mut self, net: &mut dyn NetworkMut, _: &StepContext<'_>) -> Result<StepReport> {
        self.hold(net)?;
        Ok(StepReport::held(true))
    }

    fn hold(&mut self, net: &mut dyn NetworkMut) -> Result<()> {
        self.support.apply(net)
    }

    fn status(&self, net: &dyn Network) -> Result<ConstraintStatus> {
        weight_status(&self.model, net, self.budget, self.budget)
    }
}

/// The uniform baseline: every free width scaled by the largest multiplier `m`
/// (widths `max(1, floor(m S_u))`) whose model cost is at most `budget`.
///
/// # Errors
/// [`Error::InfeasibleBudget`] if widths of 1 already cost more; model errors.
pub fn uniform_widths<M: WidthCostModel + ?Sized>(
    arch: &Architecture,
    model: &M,
    budget: f64,
) -> Result<Vec<usize>> {
    let at = |m: f64| -> Vec<usize> {
        arch.widths()
            .iter()
            .map(|w| {
                if w.fixed {
                    w.channels
                } else {
                    ((m * w.channels as f64).floor() as usize).clamp(1, w.channels)
                }
            })
            .collect()
    };
    let cost = |w: &[usize]| model.cost_of_widths(w);
    let lowest = cost(&at(0.0))?;
    if lowest > budget {
        return Err(Error::InfeasibleBudget {
            budget,
            min_achievable: lowest,
        });
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    if cost(&at(1.0))? <= budget {
        return Ok(at(1.0));
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if cost(&at(mid))? <= budget {
            lo = mid
        } else {
            hi = mid
        }
    }
    Ok(at(lo))
}

/// Uniform width scaling as a one-shot constrained optimizer: the widths of
/// [`uniform_widths`], keeping the first channels of every width, applied when the
/// run begins and after every update.
#[derive(Debug)]
pub struct UniformScaling<M> {
    model: M,
    arch: Architecture,
    budget: f64,
    widths: Vec<usize>,
    plan: PruningPlan,
}

impl<M: WidthCostModel> UniformScaling<M> {
    /// Uniform widths for `arch` under `model` with budget `budget` (model units).
    ///
    /// # Errors
    /// As [`uniform_widths`].
    pub fn new(arch: &Architecture, model: M, budget: f64) -> Result<Self> {
        check_budget(budget)?;
        let widths = uniform_widths(arch, &model, budget)?;
        let plan = PruningPlan::leading(arch, &widths)?;
        Ok(Self {
            model,
            arch: arch.clone(),
            budget,
            widths,
            plan,
        })
    }

    /// The widths kept.
    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    /// The channels kept (the first of every width), for compaction.
    pub fn plan(&self) -> &PruningPlan {
        &self.plan
    }
}

impl<M: WidthCostModel> ConstrainedOptimizer for UniformScaling<M> {
    fn name(&self) -> &'static str {
        "uniform"
    }

    fn target(&self) -> f64 {
        self.budget
    }

    fn begin(&mut self, net: &mut dyn NetworkMut, _run: &RunInfo) -> Result<()> {
        check_same_architecture(net.architecture(), &self.arch)?;
        self.plan.apply(net)
    }

    fn begin_phase(&mut self, _: &dyn Network, _: Phase, _: usize) -> Result<()> {
        Ok(())
    }

    fn step(&mut self, net: &mut dyn NetworkMut, _: &StepContext<'_>) -> Result<StepReport> {
        self.plan.apply(net)?;
        Ok(StepReport::held(true))
    }

    fn hold(&mut self, net: &mut dyn NetworkMut) -> Result<()> {
        self.plan.apply(net)
    }

    fn status(&self, _net: &dyn Network) -> Result<ConstraintStatus> {
        let cost = self.model.cost_of_widths(&self.widths)?;
        Ok(ConstraintStatus {
            cost,
            relaxed_cost: cost,
            budget: self.budget,
            target: self.budget,
            met: cost <= self.budget,
            kept: Kept::Channels {
                live: self.widths.clone(),
            },
            budgets: Vec::new(),
        })
    }
}
