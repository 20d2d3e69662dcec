//! Projection onto several knapsack budgets at once (a multi-dimensional 0/1
//! knapsack): energy, parameters, MACs, bytes, each as per-layer costs with a
//! capacity.
//!
//! ```text
//! maximise  sum_{kept i} w_i^2   subject to   sum_{kept i} c_{k,i} <= B_k   for every budget k
//! ```
//!
//! Lagrangian relaxation: the single-budget greedy runs on the combined cost
//! `sum_k lambda_k c_{k,i} / B_k` with capacity 1 (every budget scaled to unit
//! capacity, `sum_k lambda_k = 1`), and the multipliers move towards the budgets
//! the result overuses (`lambda_k <- lambda_k * usage_k^2`, renormalised) for a
//! bounded number of rounds; the best selection that meets every budget is kept.
//! A repair pass then guarantees feasibility (if no round met every budget, the
//! kept weights with the least value per unit of overused capacity are dropped
//! until all fit) and a fill pass uses the room left (dropped weights are added
//! back by value per unit of combined cost while every budget still fits). Usage
//! is always priced exactly from per-class counts, as in the single-budget
//! projection; with one budget the result is exactly
//! [`greedy_knapsack`]'s.
//!
//! Costs may depend on rank (the `buffered` largest magnitudes of a layer cost
//! less) in at most one budget per layer: the systolic energy model's weight
//! buffer; counting models (parameters, MACs, bytes) are flat.

use super::select::{Classifier, WeightStats, charged_of_classes};
use super::{ProjectionWorkspace, greedy_knapsack};
use crate::energy::{LayerCost, WeightEnergyModel};
use crate::error::{Error, Result};
use crate::network::{Network, NetworkMut, NetworkState};
use crate::prune::budget::Budget;
use crate::prune::constraint::BudgetStatus;

/// One constraint of the multi-dimensional knapsack: per-layer knapsack costs and
/// the capacity they must fit (a [`Budget`] priced by its model; see
/// [`KnapsackConstraint::of_model`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KnapsackConstraint {
    /// A name for reports and errors (`"energy"`, `"parameters"`, ...).
    pub name: String,
    /// Cost of the weights of every layer under this budget.
    pub costs: Vec<LayerCost>,
    /// The capacity (`>= 0`).
    pub capacity: f64,
}

impl KnapsackConstraint {
    /// A budget of `budget` in the model's unit (energy, parameters, MACs, bytes):
    /// the knapsack capacity is the budget minus the model's weight-independent part
    /// with no input masks (the systolic model's input energy; 0 for counting
    /// models), and the costs are the model's knapsack costs.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a budget that is not finite and positive;
    /// [`Error::InfeasibleBudget`] if it is below the weight-independent part.
    pub fn of_model<M: WeightEnergyModel + ?Sized>(
        name: impl Into<String>,
        model: &M,
        budget: f64,
    ) -> Result<Self> {
        let none = vec![None; model.architecture().layers().len()];
        Self::of_model_with_masks(name, model, budget, &none)
    }

    /// [`KnapsackConstraint::of_model`] with the weight-independent part taken with the
    /// given layer input masks.
    ///
    /// # Errors
    /// As [`KnapsackConstraint::of_model`], and mask-length errors of the model.
    pub fn of_model_with_masks<M: WeightEnergyModel + ?Sized>(
        name: impl Into<String>,
        model: &M,
        budget: f64,
        input_masks: &[Option<Vec<f32>>],
    ) -> Result<Self> {
        crate::prune::constraint::check_budget(budget)?;
        let floor = model.floor(input_masks)?;
        if budget < floor {
            return Err(Error::InfeasibleBudget {
                budget,
                min_achievable: floor,
            });
        }
        Ok(Self {
            name: name.into(),
            costs: model.knapsack_costs(),
            capacity: budget - floor,
        })
    }

    /// [`KnapsackConstraint::of_model`] with the budget given as a fraction of the
    /// dense network's cost under the model.
    ///
    /// # Errors
    /// As [`KnapsackConstraint::of_model`]; [`Error::InvalidParameter`] for a fraction
    /// outside (0, 1].
    pub fn fraction_of_dense<M: WeightEnergyModel + ?Sized>(
        name: impl Into<String>,
        model: &M,
        fraction: f64,
    ) -> Result<Self> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::param("fraction", fraction, "must be in (0, 1]"));
        }
        let dense = model.dense_energy()?.total;
        Self::of_model(name, model, fraction * dense)
    }
}

/// What a multi-budget selection kept, per budget.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiSelection {
    /// Weights kept.
    pub kept: u64,
    /// Sum of `w^2` kept.
    pub kept_value: f64,
    /// Per budget, the cost of the kept weights (`<= capacity`).
    pub used: Vec<f64>,
    /// Per budget, whether it binds (less than 1 % of its capacity left, or the
    /// multipliers ended concentrated on it).
    pub binding: Vec<bool>,
    /// Lagrangian rounds run.
    pub rounds: usize,
}

/// Rounds of multiplier updates.
const ROUNDS: usize = 24;

/// Project `weights` onto every budget at once, in place; see the
/// [module docs](self).
///
/// # Errors
/// [`Error::InvalidParameter`] for no budget, a negative or NaN capacity (naming
/// the budget) or invalid costs; [`Error::ShapeMismatch`] if a budget has not one
/// cost per layer; [`Error::Unsupported`] if two budgets make the same layer's cost
/// depend on rank; [`Error::NonFinite`] for a NaN or infinite weight. Weights are
/// unchanged on error.
pub fn multi_knapsack<W: AsMut<[f32]> + AsRef<[f32]> + Send + Sync + Clone>(
    weights: &mut [W],
    budgets: &[KnapsackConstraint],
    ws: &mut ProjectionWorkspace,
) -> Result<MultiSelection> {
    let layers = weights.len();
    if budgets.is_empty() {
        return Err(Error::param("budgets", 0, "give at least one budget"));
    }
    for b in budgets {
        if b.costs.len() != layers {
            return Err(Error::shape(
                format!("layer costs of budget `{}`", b.name),
                layers,
                b.costs.len(),
            ));
        }
        if !(b.capacity >= 0.0 && b.capacity.is_finite()) {
            return Err(Error::param(
                "capacity",
                format!("{} for budget `{}`", b.capacity, b.name),
                "must be finite and >= 0",
            ));
        }
        super::select::check_inputs(weights, &b.costs, b.capacity, false)?;
    }
    // The rank-dependent budget of every layer (at most one).
    let mut ranked: Vec<Option<usize>> = vec![None; layers];
    for (k, b) in budgets.iter().enumerate() {
        for (l, c) in b.costs.iter().enumerate() {
            let n = weights[l].as_ref().len();
            if c.surcharge != 0.0 && c.buffered < n {
                if let Some(other) = ranked[l] {
                    return Err(Error::Unsupported {
                        feature: format!(
                            "rank-dependent costs in two budgets (`{}` and `{}`) on layer {l}",
                            budgets[other].name, b.name
                        ),
                        hint: "at most one budget per layer may charge a surcharge beyond a buffer"
                            .into(),
                    });
                }
                ranked[l] = Some(k);
            }
        }
    }
    WeightStats::of(weights, 1)?; // finiteness (and nothing changes on error)
    if budgets.len() == 1 {
        let b = &budgets[0];
        let sel = greedy_knapsack(weights, &b.costs, b.capacity, ws)?;
        return Ok(MultiSelection {
            kept: sel.kept,
            kept_value: sel.kept_value,
            used: vec![sel.charged],
            binding: vec![b.capacity - sel.charged <= 0.01 * b.capacity],
            rounds: 0,
        });
    }
    // Classes of every weight (by the ranks in the original weights): class 0 is
    // base in every budget, class 1 pays the surcharge of the layer's ranked budget.
    let shape: Vec<LayerCost> = (0..layers)
        .map(|l| match ranked[l] {
            Some(k) => budgets[k].costs[l],
            None => LayerCost {
                base: 1.0,
                surcharge: 0.0,
                buffered: weights[l].as_ref().len(),
            },
        })
        .collect();
    let class_costs: Vec<Vec<f64>> = budgets
        .iter()
        .map(|b| {
            b.costs
                .iter()
                .flat_map(|c| [c.base, c.base + c.surcharge])
                .collect()
        })
        .collect();
    let original: Vec<W> = weights.to_vec();
    let classes = classify(&original, &shape);
    let usage = |w: &[W]| -> Vec<f64> {
        let counts = kept_counts(w, &classes, layers);
        class_costs
            .iter()
            .map(|cc| charged_of_classes(&counts, cc))
            .collect()
    };
    let fits = |u: &[f64]| u.iter().zip(budgets).all(|(u, b)| *u <= b.capacity);
    // A state that already fits every budget is left unchanged.
    let now = usage(weights);
    if fits(&now) {
        return Ok(summary(weights, now, budgets, &[], 0));
    }
    // A budget of capacity 0 admits only the empty selection (every cost is > 0).
    if budgets.iter().any(|b| b.capacity == 0.0) {
        for w in weights.iter_mut() {
            w.as_mut().fill(0.0);
        }
        let used = usage(weights);
        return Ok(summary(weights, used, budgets, &[], 0));
    }
    let k = budgets.len();
    let mut lambda = vec![1.0 / k as f64; k];
    let mut best: Option<(f64, Vec<W>)> = None;
    let mut last: Vec<W> = original.clone();
    let mut trial: Vec<W> = original.clone();
    let mut rounds = 0;
    for _ in 0..ROUNDS {
        rounds += 1;
        let combined: Vec<LayerCost> = (0..layers)
            .map(|l| {
                let mut base = 0.0;
                let mut surcharge = 0.0;
                for (j, b) in budgets.iter().enumerate() {
                    let scale = lambda[j] / b.capacity;
                    base += scale * b.costs[l].base;
                    surcharge += scale * b.costs[l].surcharge;
                }
                LayerCost {
                    base: base.max(f64::MIN_POSITIVE),
                    surcharge,
                    buffered: shape[l].buffered,
                }
            })
            .collect();
        // Reuses the buffers of the previous round.
        trial.clone_from(&original);
        greedy_knapsack(&mut trial, &combined, 1.0, ws)?;
        let u = usage(&trial);
        let value = value_of(&trial);
        if fits(&u) && best.as_ref().is_none_or(|(v, _)| value > *v) {
            best = Some((value, trial.clone()));
        }
        // Multipliers move towards the budgets the result overuses.
        let mut sum = 0.0;
        for (j, b) in budgets.iter().enumerate() {
            let frac = if b.capacity > 0.0 {
                u[j] / b.capacity
            } else {
                1.0
            };
            lambda[j] *= frac.clamp(0.05, 20.0).powi(2);
            sum += lambda[j];
        }
        lambda.iter_mut().for_each(|x| *x /= sum);
        last.clone_from(&trial);
    }
    let mut chosen = match best {
        Some((_, w)) => w,
        None => {
            repair(&mut last, &classes, &class_costs, budgets);
            last
        }
    };
    fill(
        &mut chosen,
        &original,
        &classes,
        &class_costs,
        budgets,
        &lambda,
    );
    for (dst, src) in weights.iter_mut().zip(&chosen) {
        dst.as_mut().copy_from_slice(src.as_ref());
    }
    let used = usage(weights);
    Ok(summary(weights, used, budgets, &lambda, rounds))
}

/// The class (0 base, 1 surcharged) of every weight, by its rank in its layer.
fn classify<W: AsRef<[f32]>>(w: &[W], shape: &[LayerCost]) -> Vec<Vec<u8>> {
    let mut mags = Vec::new();
    w.iter()
        .zip(shape)
        .map(|(w, c)| {
            let mut cls = Classifier::new(w.as_ref(), c, &mut mags);
            w.as_ref()
                .iter()
                .map(|&v| u8::from(cls.surcharged(v)))
                .collect()
        })
        .collect()
}

/// Kept (nonzero) weights per class (two per layer).
fn kept_counts<W: AsRef<[f32]>>(w: &[W], classes: &[Vec<u8>], layers: usize) -> Vec<u64> {
    let mut counts = vec![0u64; 2 * layers];
    for (l, (w, cl)) in w.iter().zip(classes).enumerate() {
        for (&v, &c) in w.as_ref().iter().zip(cl) {
            if v != 0.0 {
                counts[2 * l + c as usize] += 1;
            }
        }
    }
    counts
}

fn value_of<W: AsRef<[f32]>>(w: &[W]) -> f64 {
    w.iter()
        .flat_map(|w| w.as_ref().iter())
        .map(|v| f64::from(*v) * f64::from(*v))
        .sum()
}

/// Drop kept weights, least value per unit of overused capacity first, until every
/// budget fits (the empty set always does: capacities are `>= 0`).
fn repair<W: AsMut<[f32]> + AsRef<[f32]>>(
    w: &mut [W],
    classes: &[Vec<u8>],
    class_costs: &[Vec<f64>],
    budgets: &[KnapsackConstraint],
) {
    let layers = w.len();
    let mut counts = kept_counts(w, classes, layers);
    let used = |counts: &[u64]| -> Vec<f64> {
        class_costs
            .iter()
            .map(|cc| charged_of_classes(counts, cc))
            .collect()
    };
    let u = used(&counts);
    let over: Vec<bool> = u
        .iter()
        .zip(budgets)
        .map(|(u, b)| *u > b.capacity)
        .collect();
    let price = |c: usize| -> f64 {
        class_costs
            .iter()
            .zip(budgets)
            .zip(&over)
            .filter(|(_, o)| **o)
            .map(|((cc, b), _)| cc[c] / b.capacity.max(f64::MIN_POSITIVE))
            .sum::<f64>()
            .max(f64::MIN_POSITIVE)
    };
    let mut order: Vec<(f64, usize, usize)> = Vec::new();
    for (l, (wl, cl)) in w.iter().zip(classes).enumerate() {
        for (i, (&v, &c)) in wl.as_ref().iter().zip(cl).enumerate() {
            if v != 0.0 {
                let class = 2 * l + c as usize;
                order.push((f64::from(v) * f64::from(v) / price(class), l, i));
            }
        }
    }
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    for (_, l, i) in order {
        if used(&counts)
            .iter()
            .zip(budgets)
            .all(|(u, b)| *u <= b.capacity)
        {
            break;
        }
        counts[2 * l + classes[l][i] as usize] -= 1;
        w[l].as_mut()[i] = 0.0;
    }
}

/// Add dropped weights back, most value per unit of combined cost first, while
/// every budget still fits.
fn fill<W: AsMut<[f32]> + AsRef<[f32]>>(
    w: &mut [W],
    original: &[W],
    classes: &[Vec<u8>],
    class_costs: &[Vec<f64>],
    budgets: &[KnapsackConstraint],
    lambda: &[f64],
) {
    let layers = w.len();
    let mut counts = kept_counts(w, classes, layers);
    let combined = |c: usize| -> f64 {
        class_costs
            .iter()
            .zip(budgets)
            .zip(lambda)
            .map(|((cc, b), l)| l * cc[c] / b.capacity.max(f64::MIN_POSITIVE))
            .sum::<f64>()
            .max(f64::MIN_POSITIVE)
    };
    let mut order: Vec<(f64, usize, usize)> = Vec::new();
    for l in 0..layers {
        for (i, (&now, &was)) in w[l].as_ref().iter().zip(original[l].as_ref()).enumerate() {
            if now == 0.0 && was != 0.0 {
                let class = 2 * l + classes[l][i] as usize;
                order.push((f64::from(was) * f64::from(was) / combined(class), l, i));
            }
        }
    }
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    for (_, l, i) in order {
        let c = 2 * l + classes[l][i] as usize;
        counts[c] += 1;
        let ok = class_costs
            .iter()
            .zip(budgets)
            .all(|(cc, b)| charged_of_classes(&counts, cc) <= b.capacity);
        if ok {
            w[l].as_mut()[i] = original[l].as_ref()[i];
        } else {
            counts[c] -= 1;
        }
    }
}

fn summary<W: AsRef<[f32]>>(
    w: &[W],
    used: Vec<f64>,
    budgets: &[KnapsackConstraint],
    lambda: &[f64],
    rounds: usize,
) -> MultiSelection {
    let binding = budgets
        .iter()
        .enumerate()
        .map(|(k, b)| {
            b.capacity - used[k] <= 0.01 * b.capacity || lambda.get(k).is_some_and(|l| *l > 0.9)
        })
        .collect();
    MultiSelection {
        kept: w
            .iter()
            .map(|w| w.as_ref().iter().filter(|v| **v != 0.0).count() as u64)
            .sum(),
        kept_value: value_of(w),
        used,
        binding,
        rounds,
    }
}

/// The engine of [`WeightProjection`](super::WeightProjection) for several
/// budgets: every projection made by [`multi_knapsack`] onto per-budget schedules
/// that decay from the network's cost at the start of the constrained phase to
/// each target. Input-mask rounds run as for one budget: while the masks keep a
/// budget's weight-independent cost above it, the weights are projected onto that
/// cost plus 30 % of the room the budget leaves above its all-zero-mask floor.
#[derive(Debug)]
pub(crate) struct Multi<M> {
    budgets: Vec<Budget<M>>,
    /// Per budget, its limit in the model's unit.
    limits: Vec<f64>,
    /// Per budget, the weight-independent cost with all input masks at zero (the
    /// lowest reachable; the plain floor without input-mask rounds).
    min_floor: Vec<f64>,
    cfg: super::WeightProjectionConfig,
    schedules: Vec<crate::prune::schedule::BudgetSchedule>,
    support: super::WeightSupport,
    state: NetworkState,
    ws: ProjectionWorkspace,
}

impl<M: WeightEnergyModel> Multi<M> {
    /// Projection onto every budget (checked by the caller: at least two, distinct
    /// names, one architecture, `limits` resolved).
    pub(crate) fn new(
        budgets: Vec<Budget<M>>,
        limits: Vec<f64>,
        cfg: super::WeightProjectionConfig,
    ) -> Self {
        Self {
            min_floor: vec![0.0; budgets.len()],
            budgets,
            limits,
            cfg,
            schedules: Vec::new(),
            support: super::WeightSupport::default(),
            state: NetworkState::default(),
            ws: ProjectionWorkspace::new(),
        }
    }

    /// The model of budget `k`.
    pub(crate) fn model(&self, k: usize) -> &M {
        &self.budgets[k].model
    }

    /// Every budget's exact cost on `net`.
    fn budget_status(&self, net: &dyn Network) -> Result<Vec<BudgetStatus>> {
        let state = NetworkState::from_network(net)?;
        self.budgets
            .iter()
            .zip(&self.limits)
            .map(|(b, &limit)| {
                let cost = b.model.energy_total(&state)?;
                Ok(BudgetStatus {
                    name: b.name.clone(),
                    cost,
                    budget: limit,
                    met: cost <= limit,
                    binding: limit - cost <= 0.01 * limit,
                })
            })
            .collect()
    }

    /// The knapsack budgets in force at `step` (`None`: the targets), with each
    /// model's weight-independent cost taken with the network's current masks.
    fn knapsack(&self, step: Option<usize>) -> Result<Vec<KnapsackConstraint>> {
        self.budgets
            .iter()
            .zip(&self.schedules)
            .map(|(b, s)| {
                let target = step.map_or(s.target(), |t| s.at(t));
                KnapsackConstraint::of_model_with_masks(
                    b.name.clone(),
                    &b.model,
                    target,
                    &self.state.input_masks,
                )
            })
            .collect()
    }

    /// What budget `k` projects the weights onto now: the budget, or, while the
    /// input masks keep its weight-independent cost above it, that cost plus 30 %
    /// of the room the budget leaves above its all-zero-mask floor.
    fn weight_target(&self, k: usize, state: &NetworkState) -> Result<f64> {
        let (b, limit) = (&self.budgets[k], self.limits[k]);
        let floor = b.model.floor(&state.input_masks)?;
        Ok(if floor <= limit {
            limit
        } else {
            floor + 0.3 * (limit - self.min_floor[k])
        })
    }
}

impl<M: WeightEnergyModel> crate::prune::ConstrainedOptimizer for Multi<M> {
    fn name(&self) -> &'static str {
        "multi-budget projection"
    }

    /// The first budget's target (reports; every budget is checked by `status`).
    fn target(&self) -> f64 {
        self.limits[0]
    }

    fn begin(
        &mut self,
        net: &mut dyn NetworkMut,
        run: &crate::prune::constraint::RunInfo,
    ) -> Result<()> {
        let state = NetworkState::from_network(&*net)?;
        let mut masks = state.input_masks.clone();
        if run.input_mask_rounds {
            for m in masks.iter_mut().flatten() {
                m.fill(0.0);
            }
        }
        for (k, (b, &limit)) in self.budgets.iter().zip(&self.limits).enumerate() {
            state.check(b.model.architecture())?;
            let floor = b.model.floor(&masks)?;
            if limit < floor {
                return Err(Error::InfeasibleBudget {
                    budget: limit,
                    min_achievable: floor,
                });
            }
            self.min_floor[k] = floor;
        }
        self.state = state;
        self.support.clear();
        Ok(())
    }

    fn begin_phase(
        &mut self,
        net: &dyn Network,
        phase: crate::prune::Phase,
        steps: usize,
    ) -> Result<()> {
        use crate::prune::Phase;
        use crate::prune::schedule::BudgetSchedule;
        let state = NetworkState::from_network(net)?;
        match phase {
            Phase::FineTune => {
                self.support.freeze(state);
                return Ok(());
            }
            Phase::InputMasks => return Ok(()),
            Phase::Constrained => {
                let reach = ((steps as f64 * self.cfg.reach_fraction) as usize)
                    .min(steps.saturating_sub(1));
                self.schedules = (0..self.budgets.len())
                    .map(|k| {
                        let target = self.weight_target(k, &state)?;
                        let e0 = self.budgets[k].model.relaxed_energy_of(&state)?.max(target);
                        BudgetSchedule::new(e0, target, reach)
                    })
                    .collect::<Result<_>>()?;
            }
            Phase::MaskWeights => {
                self.schedules = (0..self.budgets.len())
                    .map(|k| {
                        let target = self.weight_target(k, &state)?;
                        BudgetSchedule::new(target, target, 0)
                    })
                    .collect::<Result<_>>()?;
            }
        }
        self.support.clear();
        self.state = state;
        Ok(())
    }

    fn step(
        &mut self,
        net: &mut dyn NetworkMut,
        ctx: &crate::prune::StepContext<'_>,
    ) -> Result<crate::prune::StepReport> {
        let last = ctx.is_last();
        if !ctx.step.is_multiple_of(self.cfg.project_every) && !last {
            if !self.cfg.regrow {
                self.support.apply(net)?;
            }
            return Ok(crate::prune::StepReport::held(false));
        }
        if self.state.weights.len() != net.architecture().layers().len() {
            self.state = NetworkState::from_network(&*net)?;
        }
        for (l, w) in self.state.weights.iter_mut().enumerate() {
            net.read_weights(l, w)?;
        }
        for (l, m) in self.state.input_masks.iter_mut().enumerate() {
            if let Some(m) = m {
                net.read_input_mask(l, m)?;
            }
        }
        let budgets = self.knapsack(if last { None } else { Some(ctx.step) })?;
        multi_knapsack(&mut self.state.weights, &budgets, &mut self.ws)?;
        self.state.write_weights_to(net)?;
        self.support.update(&self.state);
        Ok(crate::prune::StepReport {
            acted: true,
            frozen: false,
            event: None,
        })
    }

    fn hold(&mut self, net: &mut dyn NetworkMut) -> Result<()> {
        self.support.apply(net)
    }

    fn status(&self, net: &dyn Network) -> Result<crate::prune::ConstraintStatus> {
        let all = self.budget_status(net)?;
        let state = NetworkState::from_network(net)?;
        // Report the budget with the largest cost relative to its limit.
        let (k, worst) = all
            .iter()
            .enumerate()
            .max_by(|a, b| (a.1.cost / a.1.budget).total_cmp(&(b.1.cost / b.1.budget)))
            .expect("at least one budget");
        Ok(crate::prune::ConstraintStatus {
            cost: worst.cost,
            relaxed_cost: self.budgets[k].model.relaxed_energy_of(&state)?,
            budget: worst.budget,
            target: worst.budget,
            met: all.iter().all(|b| b.met),
            kept: crate::prune::Kept::Weights {
                nonzero: state.nonzeros().iter().sum(),
            },
            budgets: all.clone(),
        })
    }

    fn unreachable_floor(&self, net: &dyn Network) -> Result<Option<f64>> {
        let state = NetworkState::from_network(net)?;
        let mut worst: Option<f64> = None;
        for (b, &limit) in self.budgets.iter().zip(&self.limits) {
            let floor = b.model.floor(&state.input_masks)?;
            if floor > limit {
                worst = Some(worst.map_or(floor, |w: f64| w.max(floor)));
            }
        }
        Ok(worst)
    }
}
