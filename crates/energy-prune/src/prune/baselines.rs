//! The baselines the constrained optimizers are compared with, as constrained
//! optimizers of their own so that they run through the same driver, loss and
//! epochs:
//!
//! * [`MagnitudePruning`]: magnitude pruning to the same exact energy
//!   ([`magnitude_prune`]: globally the largest `k` weights by magnitude, or
//!   layer-uniformly the same fraction of every layer ([`MagnitudeRule`]), the
//!   support size found by bisection on the exact energy), then fine-tuning with the
//!   support fixed;
//! * [`UniformScaling`]: every free width scaled by one multiplier, the largest whose
//!   model cost meets the budget ([`uniform_widths`]), the first channels of each
//!   width kept, then fine-tuning.

use super::admm::check_same_architecture;
use super::budget::{Budget, check_budgets};
use super::constraint::{
    BudgetStatus, ConstrainedOptimizer, ConstraintStatus, Kept, Phase, RunInfo, StepContext,
    StepReport,
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

/// Magnitude pruning of `state` under `rule` to exact cost `<=` every budget's
/// limit: the largest support of the rule whose exact cost fits every budget,
/// found by bisection over the support size (global: the number `k` of weights
/// kept, the usual global magnitude pruning; layer-uniform: the kept fraction `q`,
/// on the finite set of fractions at which some layer's count changes). Supports
/// are nested, so each cost grows with the support and so does "fits every
/// budget". Weights outside the support are set to zero; the kept ones keep their
/// values. Input masks are left as they are and priced. Returns each budget's exact
/// per-layer report of the result, in order.
///
/// # Errors
/// [`Error::InfeasibleBudget`] if even the all-zero state exceeds a budget (the
/// state is then unchanged); [`Error::NonFinite`] for NaN or infinite weights;
/// [`Error::InvalidParameter`] for no budget or a bad limit; model errors.
pub fn magnitude_prune<M: WeightEnergyModel>(
    state: &mut NetworkState,
    budgets: &[Budget<M>],
    rule: MagnitudeRule,
) -> Result<Vec<EnergyReport>> {
    check_budgets(budgets)?;
    let limits = budgets
        .iter()
        .map(Budget::weight_limit)
        .collect::<Result<Vec<f64>>>()?;
    for b in budgets {
        state.check(b.model.architecture())?;
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
    for (b, &limit) in budgets.iter().zip(&limits) {
        let floor = b.model.energy(state)?;
        if floor.total > limit {
            state.weights = original;
            return Err(Error::InfeasibleBudget {
                budget: limit,
                min_achievable: floor.total,
            });
        }
    }
    let fits = |st: &NetworkState| -> Result<bool> {
        for (b, &limit) in budgets.iter().zip(&limits) {
            if b.model.energy(st)?.total > limit {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let (mut lo, mut hi) = (0usize, steps); // fits(lo)
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        keep(mid, state);
        if fits(state)? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    keep(lo, state);
    budgets.iter().map(|b| b.model.energy(state)).collect()
}

/// Resolution of the layer-uniform fraction `q` (in steps of `2^-24`): finer than
/// one weight in any layer of up to 16 M weights, so every reachable support is a
/// candidate there.
const LAYER_UNIFORM_STEPS: usize = 1 << 24;

/// Magnitude pruning as a one-shot constrained optimizer: [`magnitude_prune`]
/// when the run begins, then the support held fixed.
#[derive(Debug)]
pub struct MagnitudePruning<M> {
    budgets: Vec<Budget<M>>,
    limits: Vec<f64>,
    rule: MagnitudeRule,
    support: WeightSupport,
}

impl<M: WeightEnergyModel> MagnitudePruning<M> {
    /// Magnitude pruning under `rule` to exact cost within every budget.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for no budget, two of one name, or a limit that
    /// is not finite and positive; model errors of a fraction's dense cost.
    pub fn new(budgets: Vec<Budget<M>>, rule: MagnitudeRule) -> Result<Self> {
        check_budgets(&budgets)?;
        let limits = budgets
            .iter()
            .map(Budget::weight_limit)
            .collect::<Result<Vec<f64>>>()?;
        Ok(Self {
            budgets,
            limits,
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
        self.limits[0]
    }

    fn begin(&mut self, net: &mut dyn NetworkMut, _run: &RunInfo) -> Result<()> {
        let mut state = NetworkState::from_network(&*net)?;
        magnitude_prune(&mut state, &self.budgets, self.rule)?;
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
        let state = NetworkState::from_network(net)?;
        let all = self
            .budgets
            .iter()
            .zip(&self.limits)
            .map(|(b, &limit)| {
                Ok(BudgetStatus::of(
                    &b.name,
                    b.model.energy_total(&state)?,
                    limit,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let k = tightest(&all);
        let mut st = weight_status(&self.budgets[k].model, net, self.limits[k], self.limits[k])?;
        st.met = all.iter().all(|b| b.met);
        st.budgets = all;
        Ok(st)
    }
}

/// The budget with the largest cost relative to its limit (the first of equals).
pub(crate) fn tightest(all: &[BudgetStatus]) -> usize {
    (0..all.len())
        .max_by(|&i, &j| {
            (all[i].cost / all[i].budget)
                .total_cmp(&(all[j].cost / all[j].budget))
                .then(j.cmp(&i))
        })
        .unwrap_or(0)
}

/// The uniform baseline: every free width scaled by the largest multiplier `m`
/// (widths `max(1, floor(m S_u))`) whose cost under every budget's model is within
/// its limit (each cost grows with `m`).
///
/// # Errors
/// [`Error::InfeasibleBudget`] if widths of 1 already cost more than a budget;
/// [`Error::InvalidParameter`] for no budget or a bad limit; model errors.
pub fn uniform_widths<M: WidthCostModel>(
    arch: &Architecture,
    budgets: &[Budget<M>],
) -> Result<Vec<usize>> {
    check_budgets(budgets)?;
    let limits = budgets
        .iter()
        .map(|b| b.width_limit(arch))
        .collect::<Result<Vec<f64>>>()?;
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
    for (b, &limit) in budgets.iter().zip(&limits) {
        let lowest = b.model.cost_of_widths(&at(0.0))?;
        if lowest > limit {
            return Err(Error::InfeasibleBudget {
                budget: limit,
                min_achievable: lowest,
            });
        }
    }
    let fits = |w: &[usize]| -> Result<bool> {
        for (b, &limit) in budgets.iter().zip(&limits) {
            if b.model.cost_of_widths(w)? > limit {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    if fits(&at(1.0))? {
        return Ok(at(1.0));
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if fits(&at(mid))? { lo = mid } else { hi = mid }
    }
    Ok(at(lo))
}

/// Uniform width scaling as a one-shot constrained optimizer: the widths of
/// [`uniform_widths`], keeping the first channels of every width, applied when the
/// run begins and after every update.
#[derive(Debug)]
pub struct UniformScaling<M> {
    budgets: Vec<Budget<M>>,
    limits: Vec<f64>,
    arch: Architecture,
    widths: Vec<usize>,
    plan: PruningPlan,
}

impl<M: WidthCostModel> UniformScaling<M> {
    /// Uniform widths for `arch` within every budget.
    ///
    /// # Errors
    /// As [`uniform_widths`].
    pub fn new(arch: &Architecture, budgets: Vec<Budget<M>>) -> Result<Self> {
        let widths = uniform_widths(arch, &budgets)?;
        let limits = budgets
            .iter()
            .map(|b| b.width_limit(arch))
            .collect::<Result<Vec<f64>>>()?;
        let plan = PruningPlan::leading(arch, &widths)?;
        Ok(Self {
            budgets,
            limits,
            arch: arch.clone(),
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
        self.limits[0]
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
        let all = self
            .budgets
            .iter()
            .zip(&self.limits)
            .map(|(b, &limit)| {
                Ok(BudgetStatus::of(
                    &b.name,
                    b.model.cost_of_widths(&self.widths)?,
                    limit,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let k = tightest(&all);
        Ok(ConstraintStatus {
            cost: all[k].cost,
            relaxed_cost: all[k].cost,
            budget: all[k].budget,
            target: all[k].budget,
            met: all.iter().all(|b| b.met),
            kept: Kept::Channels {
                live: self.widths.clone(),
            },
            budgets: all,
        })
    }
}
