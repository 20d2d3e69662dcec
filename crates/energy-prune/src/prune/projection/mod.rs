//! Weighted sparse projection onto an energy budget (ICLR 2019, section 3).
//!
//! Given weights `w` and a weight-level energy model whose relaxed energy is
//! `E(w) = E_const + sum over nonzero i of c_i`, the projection
//! ```text
//! maximise  sum_{kept i} w_i^2    subject to    sum_{kept i} c_i <= B - E_const
//! ```
//! is a 0/1 knapsack. It is solved greedily: order the weights by `w_i^2 / c_i`
//! (largest first, ties by index; weights whose own cost exceeds the capacity are
//! left out), keep the longest prefix whose cost fits, zero the rest; if the single most valuable weight that fits is worth more than that
//! prefix, keep it alone instead (which guarantees at least half the optimum).
//!
//! The cut is found in expected `O(n)` instead of the `O(n log n)` of sorting,
//! with one counting pass over the weights and one keep pass: a strided sample
//! estimates a narrow band of ratios around the cut; the counting pass compares
//! the bits of `|w|` against magnitude bounds of the band (a ratio never
//! decreases with `|w|` within a cost class), counts the weights above it, lists
//! the few inside it and checks finiteness; the cut is selected among the listed
//! ones (bucketed counts, then a weighted quickselect in one bucket); the keep pass
//! zeroes what falls below. The loops are vectorised (explicit AVX2 where the CPU
//! has it, with identical results). A reusable [`ProjectionWorkspace`] keeps
//! repeated projections from reallocating their large buffers. A sort-based
//! reference implementation ([`project_sorted`]) checks it in the tests and is the baseline
//! of the benches.
//!
//! Per-weight costs depend on the weight's rank in its layer: the `buffered`
//! largest magnitudes cost `base`, the others `base + surcharge` (see
//! [`LayerCost`]). Because the kept set's cost is never below its relaxed energy,
//! the result always meets the budget.
//!
//! Costs of sets are always priced the same way, from per-class counts
//! (`sum_c n_c * cost_c` in class order), so the result does not depend on the
//! order in which weights are met: [`greedy_knapsack_parallel`] splits every pass
//! across threads and returns exactly what [`greedy_knapsack`] returns, and the
//! [`sharded`] protocol projects weights spread over processes, machines or files
//! with a few rounds of small messages, to the same result.

mod kernels;
pub mod multi;
mod reference;
mod select;
pub mod sharded;
pub mod solver;

pub use reference::project_sorted;
pub use select::greedy_knapsack_on_threads;
pub use select::{
    ProjectionWorkspace, Selection, WEIGHTS_PER_THREAD, greedy_knapsack, greedy_knapsack_parallel,
};
pub use solver::{WeightProjection, WeightProjectionConfig};
pub(crate) use solver::{WeightSupport, weight_status};

use crate::energy::{LayerCost, WeightEnergyModel};
use crate::error::{Error, Result};
use crate::network::NetworkState;
use crate::prune::budget::{Budget, check_budgets};
use crate::prune::constraint::BudgetStatus;
use multi::{KnapsackConstraint, multi_knapsack};
use select::{Classifier, WeightStats, check_inputs};

/// What a projection did. With several budgets, `budget`, `constant` and
/// `relaxed_energy` are those of the tightest budget (largest relaxed cost
/// relative to its limit) and `budgets` lists every one.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionOutcome {
    /// The budget projected onto (model units).
    pub budget: f64,
    /// The weight-independent energy (`E_const`).
    pub constant: f64,
    /// Relaxed energy of the projected weights, evaluated by the model (`<= budget`).
    pub relaxed_energy: f64,
    /// Every budget in the order given: its relaxed cost after the projection
    /// (`cost`), its limit, whether it is met (always) and whether it binds.
    pub budgets: Vec<BudgetStatus>,
    /// Nonzero weights kept.
    pub kept: u64,
    /// Nonzero weights before the projection.
    pub nonzero_before: u64,
    /// Sum of `w^2` kept.
    pub kept_value: f64,
    /// Sum of `w^2` before the projection.
    pub total_value: f64,
    /// True when the single-best-weight fallback beat the greedy prefix.
    pub single_item: bool,
}

/// Project the weights of `state` onto `{relaxed cost <= limit}` of every budget,
/// in place. With one budget this is the greedy 0/1 knapsack of the
/// [module docs](self); with several, the multi-dimensional knapsack of
/// [`multi_knapsack`] (Lagrangian relaxation, repair and fill), with each model's
/// relaxed cost checked and the capacity tightened where rounding left it a few ulps
/// over. A state that already meets every budget is returned unchanged.
///
/// # Examples
/// ```
/// use energy_prune::arch::zoo;
/// use energy_prune::energy::{Count, CountingModel, SystolicArray, SystolicConfig, WeightEnergyModel};
/// use energy_prune::network::NetworkState;
/// use energy_prune::prune::{Budget, project};
/// # fn main() -> energy_prune::Result<()> {
/// let arch = zoo::lenet5()?;
/// let hw = SystolicArray::new(&arch, SystolicConfig::default())?;
/// let mut state = NetworkState::dense(&arch);
/// let out = project(&mut state, &[Budget::fraction("energy", &hw, 0.3)])?;
/// assert!(out.relaxed_energy <= out.budget);
///
/// // Energy and parameters at once.
/// let params = CountingModel::new(&arch, Count::Parameters)?;
/// let mut state = NetworkState::dense(&arch);
/// let both: Vec<Budget<&dyn WeightEnergyModel>> = vec![
///     Budget::fraction("energy", &hw, 0.3),
///     Budget::absolute("parameters", &params, 2_000.0),
/// ];
/// let out = project(&mut state, &both)?;
/// assert!(out.budgets.iter().all(|b| b.met));
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] for no budget, two of one name or a limit that is
/// not finite and positive; [`Error::InfeasibleBudget`] if a limit is below its
/// model's all-zero cost; [`Error::NonFinite`] for NaN or infinite weights; shape
/// errors if the state does not fit a model. The state is unchanged on error.
pub fn project<M: WeightEnergyModel>(
    state: &mut NetworkState,
    budgets: &[Budget<M>],
) -> Result<ProjectionOutcome> {
    project_with_workspace(state, budgets, &mut ProjectionWorkspace::new())
}

/// [`project`] with a reusable workspace: no allocation after the first call of a
/// given size (besides the models' own per-layer vectors).
///
/// # Errors
/// As [`project`].
pub fn project_with_workspace<M: WeightEnergyModel>(
    state: &mut NetworkState,
    budgets: &[Budget<M>],
    ws: &mut ProjectionWorkspace,
) -> Result<ProjectionOutcome> {
    check_budgets(budgets)?;
    let limits = budgets
        .iter()
        .map(Budget::weight_limit)
        .collect::<Result<Vec<f64>>>()?;
    if let [one] = budgets {
        let mut out = project_one(&one.model, state, limits[0], ws)?;
        out.budgets = vec![BudgetStatus::of(&one.name, out.relaxed_energy, limits[0])];
        return Ok(out);
    }
    project_several(state, budgets, &limits, ws)
}

/// The projection onto one budget of `model` (the single-budget engine).
pub(crate) fn project_one<M: WeightEnergyModel + ?Sized>(
    model: &M,
    state: &mut NetworkState,
    budget: f64,
    ws: &mut ProjectionWorkspace,
) -> Result<ProjectionOutcome> {
    state.check(model.architecture())?;
    project_one_on(model, &mut state.weights, &state.input_masks, budget, ws)
}

/// [`project`] onto one budget of weights held anywhere (slices of another
/// program's arrays, memory maps, a framework's tensors), in place and without a
/// copy, with no input masks: the same weights kept as [`project`] on a
/// [`NetworkState`] holding them, bit for bit.
///
/// ```
/// # use energy_prune::{arch::zoo, energy::{SystolicArray, SystolicConfig, WeightEnergyModel}};
/// # use energy_prune::prune::{Budget, ProjectionWorkspace, project_weights};
/// # fn main() -> energy_prune::Result<()> {
/// let arch = zoo::lenet5()?;
/// let hw = SystolicArray::new(&arch, SystolicConfig::default())?;
/// let mut weights: Vec<Vec<f32>> = arch.layers().iter()
///     .map(|l| (0..l.weight_count()).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect())
///     .collect();
/// let mut views: Vec<&mut [f32]> = weights.iter_mut().map(|w| w.as_mut_slice()).collect();
/// let budget = Budget::fraction("energy", &hw, 0.3);
/// let out = project_weights(&mut views, &budget, &mut ProjectionWorkspace::new())?;
/// assert!(out.budgets[0].met);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`project`]; [`Error::ShapeMismatch`] for another number of layers or a
/// wrong length. The weights are unchanged on error.
pub fn project_weights<M: WeightEnergyModel, W: AsMut<[f32]> + AsRef<[f32]> + Send + Sync>(
    weights: &mut [W],
    budget: &Budget<M>,
    ws: &mut ProjectionWorkspace,
) -> Result<ProjectionOutcome> {
    check_budgets(std::slice::from_ref(budget))?;
    let arch = budget.model.architecture();
    let n = arch.layers().len();
    if weights.len() != n {
        return Err(Error::shape(
            "weight tensors (one per layer)",
            n,
            weights.len(),
        ));
    }
    for (layer, w) in arch.layers().iter().zip(weights.iter()) {
        if w.as_ref().len() != layer.weight_count() {
            return Err(Error::shape(
                format!("weights of layer {}", layer.name),
                layer.weight_count(),
                w.as_ref().len(),
            ));
        }
    }
    let limit = budget.weight_limit()?;
    let mut out = project_one_on(&budget.model, weights, &vec![None; n], limit, ws)?;
    out.budgets = vec![BudgetStatus::of(&budget.name, out.relaxed_energy, limit)];
    Ok(out)
}

/// Nonzero weights per layer.
fn nonzeros_of<W: AsRef<[f32]>>(weights: &[W]) -> Vec<u64> {
    weights
        .iter()
        .map(|w| w.as_ref().iter().filter(|v| **v != 0.0).count() as u64)
        .collect()
}

/// [`project_one`] on weights of any storage, checked against the model.
fn project_one_on<M: WeightEnergyModel + ?Sized, W: AsMut<[f32]> + AsRef<[f32]> + Send + Sync>(
    model: &M,
    weights: &mut [W],
    input_masks: &[Option<Vec<f32>>],
    budget: f64,
    ws: &mut ProjectionWorkspace,
) -> Result<ProjectionOutcome> {
    if !budget.is_finite() {
        return Err(Error::param("budget", budget, "must be finite"));
    }
    let input = model.input_energy(input_masks)?;
    let constant: f64 = input.iter().sum();
    let zeros = vec![0u64; input.len()];
    let floor = model.relaxed_energy(&zeros, &input)?.total.max(constant);
    if budget < floor {
        return Err(Error::InfeasibleBudget {
            budget,
            min_achievable: floor,
        });
    }
    let nonzeros = nonzeros_of(weights);
    let nonzero_before = nonzeros.iter().sum();
    let relaxed_before = model.relaxed_energy(&nonzeros, &input)?.total;
    if relaxed_before <= budget {
        // Already within the budget (as the model itself sums it): the identity.
        // The statistics pass checks finiteness and sums the value.
        let value = WeightStats::of(weights, 1)?.total_value;
        return Ok(ProjectionOutcome {
            budget,
            constant,
            relaxed_energy: relaxed_before,
            kept: nonzero_before,
            nonzero_before,
            kept_value: value,
            total_value: value,
            single_item: false,
            budgets: Vec::new(),
        });
    }
    let costs = model.knapsack_costs();
    // The knapsack's cost accounting and the model's own sum of the relaxed energy
    // may round differently: if the model finds the result a few ulps over, select
    // again from the result with the capacity tightened by the overshoot.
    let mut capacity = budget - constant;
    let mut total_value = None;
    loop {
        let sel = greedy_knapsack(weights, &costs, capacity, ws)?;
        let total = *total_value.get_or_insert(sel.total_value);
        let relaxed_energy = model.relaxed_energy(&nonzeros_of(weights), &input)?.total;
        if relaxed_energy <= budget {
            return Ok(ProjectionOutcome {
                budget,
                constant,
                relaxed_energy,
                kept: sel.kept,
                nonzero_before,
                kept_value: sel.kept_value,
                total_value: total,
                single_item: sel.single_item,
                budgets: Vec::new(),
            });
        }
        // Terminates: the capacity falls by at least the overshoot each round, and at
        // capacity 0 the all-zero state costs `floor <= budget`.
        let over = 2.0 * (relaxed_energy - budget) + capacity * f64::EPSILON;
        capacity = if capacity > over {
            capacity - over
        } else {
            0.0
        };
    }
}

/// The projection onto several budgets: [`multi_knapsack`] on the budgets'
/// knapsack constraints, then each model's own relaxed cost checked; a budget left
/// a few ulps over by rounding gets its capacity tightened and the selection runs
/// again from the result.
fn project_several<M: WeightEnergyModel>(
    state: &mut NetworkState,
    budgets: &[Budget<M>],
    limits: &[f64],
    ws: &mut ProjectionWorkspace,
) -> Result<ProjectionOutcome> {
    for b in budgets {
        state.check(b.model.architecture())?;
    }
    let total_value = WeightStats::of(&state.weights, 1)?.total_value;
    let mut constraints = Vec::with_capacity(budgets.len());
    let mut constants = Vec::with_capacity(budgets.len());
    for (b, &limit) in budgets.iter().zip(limits) {
        let c = KnapsackConstraint::of_model_with_masks(
            b.name.clone(),
            &b.model,
            limit,
            &state.input_masks,
        )?;
        constants.push(limit - c.capacity);
        constraints.push(c);
    }
    let relaxed = |state: &NetworkState| -> Result<Vec<f64>> {
        budgets
            .iter()
            .map(|b| b.model.relaxed_energy_of(state))
            .collect()
    };
    let nonzero_before: u64 = state.nonzeros().iter().sum();
    let outcome = |used: Vec<f64>, kept: u64, kept_value: f64| {
        let k = (0..used.len())
            .max_by(|&i, &j| (used[i] / limits[i]).total_cmp(&(used[j] / limits[j])))
            .unwrap_or(0);
        ProjectionOutcome {
            budget: limits[k],
            constant: constants[k],
            relaxed_energy: used[k],
            kept,
            nonzero_before,
            kept_value,
            total_value,
            single_item: false,
            budgets: budgets
                .iter()
                .zip(limits)
                .zip(&used)
                .map(|((b, &limit), &cost)| BudgetStatus::of(&b.name, cost, limit))
                .collect(),
        }
    };
    let before = relaxed(state)?;
    if before.iter().zip(limits).all(|(c, l)| c <= l) {
        // Already within every budget: the identity.
        return Ok(outcome(before, nonzero_before, total_value));
    }
    loop {
        let sel = multi_knapsack(&mut state.weights, &constraints, ws)?;
        let used = relaxed(state)?;
        if used.iter().zip(limits).all(|(c, l)| c <= l) {
            return Ok(outcome(used, sel.kept, sel.kept_value));
        }
        // Terminates as in the single-budget case: each over budget loses at least
        // its overshoot of capacity per round, and at capacity 0 its cost is the
        // floor, which meets the limit.
        for ((c, &u), &limit) in constraints.iter_mut().zip(&used).zip(limits) {
            if u > limit {
                let over = 2.0 * (u - limit) + c.capacity * f64::EPSILON;
                c.capacity = if c.capacity > over {
                    c.capacity - over
                } else {
                    0.0
                };
            }
        }
    }
}

/// The knapsack cost of every weight (canonical order, all layers concatenated
/// into `out`): `base` for the `buffered` largest magnitudes of a layer (ties by
/// index), `base + surcharge` for the others.
///
/// # Errors
/// As [`greedy_knapsack`] (shapes, non-finite weights, invalid costs).
pub fn weight_costs<W: AsRef<[f32]>>(
    weights: &[W],
    costs: &[LayerCost],
    out: &mut Vec<f64>,
) -> Result<()> {
    check_inputs(weights, costs, 0.0, true)?;
    out.clear();
    let mut mags = Vec::new();
    for (w, c) in weights.iter().zip(costs) {
        let mut cls = Classifier::new(w.as_ref(), c, &mut mags);
        out.extend(w.as_ref().iter().map(|&v| {
            if cls.surcharged(v) {
                c.base + c.surcharge
            } else {
                c.base
            }
        }));
    }
    Ok(())
}

/// Keep the `k` entries of largest magnitude (ties by index), zero the others:
/// the plain top-k projection used for input masks.
///
/// # Errors
/// [`Error::NonFinite`] for a NaN or infinite value.
pub fn project_top_k(values: &mut [f32], k: usize) -> Result<()> {
    crate::error::check_finite("values", values)?;
    if k >= values.len() {
        return Ok(());
    }
    let mut mags = Vec::new();
    let cost = LayerCost {
        base: 1.0,
        surcharge: 1.0,
        buffered: k,
    };
    let mut cls = Classifier::new(values, &cost, &mut mags);
    for v in values.iter_mut() {
        if cls.surcharged(*v) {
            *v = 0.0;
        }
    }
    Ok(())
}
