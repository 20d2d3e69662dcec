//! Pruning and quantization under one budget: per layer, the precision (weight and
//! activation formats from a given set) and the kept weights are chosen together.
//!
//! # The problem
//! Layer `l` at option `k` (a [`LayerPrecision`]) costs, under every budget's
//! [`PrecisionModel`], its weight-independent part `F_lk` (the input energy at the
//! option's activation bits) plus a knapsack cost per kept weight. A kept weight `w`
//! of layer `l` at option `k` is worth
//! ```text
//! v = (1 - rho_lk) w^2 - eps_lk
//! ```
//! where `eps_lk` is the mean square rounding error of the layer's weights at the
//! option's weight format ([`weight_noise`](crate::quant::weight_noise)) and `rho_lk` the activations'
//! noise-to-signal ratio at its activation format
//! ([`ActivationStats::noise_ratio`]; 0 without statistics). Maximising the kept
//! value minimises the distortion `sum over pruned w^2 + sum over kept (eps + rho w^2)`
//! under the additive noise model of [`quant`](crate::quant); a lossless option
//! (16 bits or more) has `v = w^2`, the value of the plain projection.
//!
//! # The solver
//! Within a layer at a fixed option the best kept sets are prefixes of the weights
//! ordered by `|w|` (values fall and costs rise along it), so every (layer, option)
//! is a concave curve of value against cost. A Lagrangian multiplier `mu` on the
//! budgets (each weighted by its inverse limit) prices them: every layer takes the
//! option and prefix maximising `value - mu * cost`, one binary search per option.
//! `mu` is bisected to the smallest value whose choice meets every budget. The
//! option assignments met near that `mu` are each completed by the plain projection
//! ([`project`](super::project)) at those options with the values above (by running
//! it on the weights `sign(w) sqrt(max(0, v))`, which keeps the order within a
//! layer), and the best completion is returned. The budgets are therefore met in
//! their relaxed cost, hence in their exact cost, by construction; with one option
//! per layer the result is exactly the plain projection at that precision.

use crate::energy::{LayerCost, LayerPrecision, PrecisionModel, WeightEnergyModel};
use crate::error::{Error, Result};
use crate::network::{Network, NetworkMut, NetworkState};
use crate::prune::budget::{Budget, check_budgets};
use crate::prune::constraint::{
    BudgetStatus, ConstrainedOptimizer, ConstraintStatus, Kept, Phase, ProjectionEvent, RunInfo,
    SolverEvent, StepContext, StepReport,
};
use crate::prune::projection::{
    ProjectionOutcome, ProjectionWorkspace, WeightProjectionConfig, WeightSupport,
    project_with_workspace,
};
use crate::prune::schedule::BudgetSchedule;
use crate::quant::{ActivationStats, WeightScale, weight_noise_with};

/// The options of every layer: the product of the weight and activation formats,
/// the same for each of `layers` layers.
///
/// # Errors
/// [`Error::InvalidParameter`] for an empty set of formats; as
/// [`LayerPrecision::new`].
pub fn precision_options(
    layers: usize,
    weights: &[crate::energy::NumberFormat],
    activations: &[crate::energy::NumberFormat],
) -> Result<Vec<Vec<LayerPrecision>>> {
    if weights.is_empty() || activations.is_empty() {
        return Err(Error::param(
            "precision options",
            "[]",
            "give at least one weight format and one activation format",
        ));
    }
    let mut one = Vec::with_capacity(weights.len() * activations.len());
    for w in weights {
        for a in activations {
            let p = LayerPrecision::new(*w, *a)?;
            if !one.contains(&p) {
                one.push(p);
            }
        }
    }
    Ok(vec![one; layers])
}

/// What [`project_joint`] chose and kept.
#[derive(Debug, Clone, PartialEq)]
pub struct JointOutcome {
    /// The precision chosen for every layer.
    pub precision: Vec<LayerPrecision>,
    /// The projection at that precision (relaxed costs per budget, kept weights);
    /// its `kept_value` and `total_value` are those of the joint values `v`.
    pub projection: ProjectionOutcome,
    /// The kept value `sum over kept v` (the objective).
    pub value: f64,
    /// The distortion `sum w^2 - value` of the [module docs](self).
    pub distortion: f64,
    /// The exact cost of the result under every budget's model at the chosen
    /// precision (each `<=` its limit).
    pub exact: Vec<BudgetStatus>,
}

/// One (layer, option): its value parameters and its costs under every budget.
struct OptionPrice {
    /// `1 - rho`.
    gain: f64,
    /// `eps`.
    noise: f64,
    /// Weight-independent cost per budget.
    floor: Vec<f64>,
    /// Knapsack cost per budget.
    cost: Vec<LayerCost>,
}

/// The weights of one layer by decreasing magnitude: squares and prefix sums.
struct LayerCurve {
    squares: Vec<f64>,
    prefix: Vec<f64>,
}

impl LayerCurve {
    fn of(weights: &[f32]) -> Self {
        let mut squares: Vec<f64> = weights
            .iter()
            .filter(|v| **v != 0.0)
            .map(|v| f64::from(*v) * f64::from(*v))
            .collect();
        squares.sort_by(|a, b| b.total_cmp(a));
        let mut prefix = Vec::with_capacity(squares.len() + 1);
        prefix.push(0.0);
        let mut s = 0.0;
        for q in &squares {
            s += q;
            prefix.push(s);
        }
        Self { squares, prefix }
    }
}

/// Cost of the `m` largest weights under one budget's layer cost.
fn prefix_cost(c: &LayerCost, m: usize) -> f64 {
    c.base * m as f64 + c.surcharge * m.saturating_sub(c.buffered) as f64
}

/// The best prefix of `curve` at `price` for multipliers `lambda`: (lagrangian,
/// cost per budget).
fn best_prefix(curve: &LayerCurve, price: &OptionPrice, lambda: &[f64]) -> (f64, usize) {
    let unit = |j: usize| -> f64 {
        price
            .cost
            .iter()
            .zip(lambda)
            .map(|(c, l)| l * (c.base + if j >= c.buffered { c.surcharge } else { 0.0 }))
            .sum()
    };
    // v_j - c_j falls along the curve: keep the ranks where it is positive.
    let (mut lo, mut hi) = (0usize, curve.squares.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if price.gain * curve.squares[mid] - price.noise > unit(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let m = lo;
    let value = price.gain * curve.prefix[m] - price.noise * m as f64;
    let cost: f64 = price
        .cost
        .iter()
        .zip(&price.floor)
        .zip(lambda)
        .map(|((c, f), l)| l * (f + prefix_cost(c, m)))
        .sum();
    (value - cost, m)
}

/// The joint problem of one state: curves, option prices, limits.
struct Problem<'a> {
    curves: Vec<LayerCurve>,
    /// `prices[l][k]` for `options[l][k]`.
    prices: Vec<Vec<OptionPrice>>,
    options: &'a [Vec<LayerPrecision>],
    limits: Vec<f64>,
}

impl Problem<'_> {
    /// The option of every layer at multiplier `mu`, and whether the choice's
    /// costs meet every budget.
    fn choose(&self, mu: f64) -> (Vec<usize>, bool) {
        let lambda: Vec<f64> = self.limits.iter().map(|l| mu / l).collect();
        let mut used = vec![0.0; self.limits.len()];
        let choice = self
            .curves
            .iter()
            .zip(&self.prices)
            .map(|(curve, prices)| {
                let mut best = (f64::NEG_INFINITY, 0usize, 0usize);
                for (k, p) in prices.iter().enumerate() {
                    let (lagr, m) = best_prefix(curve, p, &lambda);
                    if lagr > best.0 {
                        best = (lagr, k, m);
                    }
                }
                let (_, k, m) = best;
                for (b, u) in used.iter_mut().enumerate() {
                    *u += prices[k].floor[b] + prefix_cost(&prices[k].cost[b], m);
                }
                k
            })
            .collect();
        let fits = used.iter().zip(&self.limits).all(|(u, l)| u <= l);
        (choice, fits)
    }

    /// The cheapest floor of every budget over the options (an error if above the
    /// limit: no precision and no pruning can meet it).
    fn check_feasible(&self) -> Result<()> {
        for (b, &limit) in self.limits.iter().enumerate() {
            let floor: f64 = self
                .prices
                .iter()
                .map(|p| p.iter().map(|o| o.floor[b]).fold(f64::INFINITY, f64::min))
                .sum();
            if floor > limit {
                return Err(Error::InfeasibleBudget {
                    budget: limit,
                    min_achievable: floor,
                });
            }
        }
        Ok(())
    }

    /// Assignments to complete: those met while bisecting `mu` down to the smallest
    /// feasible multiplier (at most `keep`, the last ones first).
    fn candidates(&self, keep: usize) -> Vec<Vec<usize>> {
        let mut seen: Vec<Vec<usize>> = Vec::new();
        let mut push = |c: Vec<usize>| {
            if let Some(i) = seen.iter().position(|s| *s == c) {
                seen.remove(i);
            }
            seen.push(c);
        };
        let (c0, fits0) = self.choose(0.0);
        if fits0 {
            return vec![c0];
        }
        push(c0);
        // The smallest power of two that fits (multipliers of any scale: the
        // bisection below also halves towards 0).
        let mut hi = 1.0;
        let mut feasible = false;
        for _ in 0..400 {
            let (c, fits) = self.choose(hi);
            push(c);
            if fits {
                feasible = true;
                break;
            }
            hi *= 2.0;
        }
        if !feasible {
            // Unreachable once check_feasible passed (a large enough multiplier
            // takes the cheapest floors and nothing else); complete what was seen.
            return seen.into_iter().rev().take(keep).collect();
        }
        let mut lo = 0.0;
        for _ in 0..60 {
            let mid = if lo == 0.0 {
                hi / 2.0
            } else {
                (lo * hi).sqrt()
            };
            let (c, fits) = self.choose(mid);
            push(c);
            if fits {
                hi = mid;
            } else {
                lo = mid;
            }
            if hi - lo <= 1e-12 * hi {
                break;
            }
        }
        push(self.choose(hi).0);
        seen.into_iter().rev().take(keep).collect()
    }
}

/// The weights `sign(w) sqrt(max(0, v))` of layer weights `w` at an option: the
/// plain projection on them maximises the joint value (exactly `w` when lossless).
fn value_weights(weights: &[f32], price: &OptionPrice, out: &mut Vec<f32>) {
    out.clear();
    out.extend(weights.iter().map(|&w| {
        if price.gain == 1.0 && price.noise == 0.0 {
            return w;
        }
        let w64 = f64::from(w);
        let v = price.gain * w64 * w64 - price.noise;
        if w == 0.0 || v <= 0.0 {
            0.0
        } else {
            (v.sqrt() as f32).copysign(w)
        }
    }));
}

/// Options for every layer of `arch`: one non-empty list per layer, every format valid.
fn check_options(arch: &crate::arch::Architecture, options: &[Vec<LayerPrecision>]) -> Result<()> {
    let n = arch.layers().len();
    if options.len() != n {
        return Err(Error::shape(
            "precision options (one list per layer)",
            n,
            options.len(),
        ));
    }
    if let Some(i) = options.iter().position(Vec::is_empty) {
        return Err(Error::param(
            "precision options",
            &arch.layers()[i].name,
            "every layer needs at least one option",
        ));
    }
    options
        .iter()
        .flatten()
        .try_for_each(LayerPrecision::validate)
}

/// Choose every layer's precision among `options` and project the weights of
/// `state` onto every budget at that precision, in place (see the
/// [module docs](self)). `activations`, one entry per layer, prices the rounding of
/// the activations; without it only the weights' rounding is priced. The budgets'
/// limits are resolved at the models' own precision (a fraction of the dense 16-bit
/// energy for a reference model).
///
/// # Examples
/// ```
/// use energy_prune::arch::zoo;
/// use energy_prune::energy::{NumberFormat, SystolicArray, SystolicConfig, WeightEnergyModel};
/// use energy_prune::network::NetworkState;
/// use energy_prune::prune::{Budget, joint::{precision_options, project_joint}};
/// # fn main() -> energy_prune::Result<()> {
/// let arch = zoo::lenet5()?;
/// let hw = SystolicArray::new(&arch, SystolicConfig::default())?;
/// let mut state = NetworkState::dense(&arch);
/// let formats = [NumberFormat::Int(4), NumberFormat::INT8, NumberFormat::INT16];
/// let options = precision_options(arch.layers().len(), &formats, &formats)?;
/// // 10 % of the dense 16-bit energy: below what pruning alone can reach.
/// assert!(hw.dense_floor() > 0.1 * hw.energy_total(&state)?);
/// let out = project_joint(&mut state, &[Budget::fraction("energy", &hw, 0.1)], &options, None)?;
/// assert!(out.exact.iter().all(|b| b.met));
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`project`](super::project); [`Error::ShapeMismatch`] for options or
/// statistics not one per layer; [`Error::InvalidParameter`] for a layer without
/// options; [`Error::InfeasibleBudget`] if even the cheapest options with every
/// weight pruned exceed a budget. The state is unchanged on error.
pub fn project_joint<M: PrecisionModel>(
    state: &mut NetworkState,
    budgets: &[Budget<M>],
    options: &[Vec<LayerPrecision>],
    activations: Option<&[ActivationStats]>,
) -> Result<JointOutcome> {
    project_joint_with_workspace(
        state,
        budgets,
        options,
        activations,
        WeightScale::Max,
        &mut ProjectionWorkspace::new(),
    )
}

/// [`project_joint`] with the weights' rounding priced at the scales of
/// `weight_scale` and a reusable projection workspace.
///
/// # Errors
/// As [`project_joint`].
pub fn project_joint_with_workspace<M: PrecisionModel>(
    state: &mut NetworkState,
    budgets: &[Budget<M>],
    options: &[Vec<LayerPrecision>],
    activations: Option<&[ActivationStats]>,
    weight_scale: WeightScale,
    ws: &mut ProjectionWorkspace,
) -> Result<JointOutcome> {
    check_budgets(budgets)?;
    let arch = budgets[0].model.architecture().clone();
    state.check(&arch)?;
    state.check_finite()?;
    let n = arch.layers().len();
    check_options(&arch, options)?;
    if let Some(a) = activations
        && a.len() != n
    {
        return Err(Error::shape(
            "activation statistics (one per layer)",
            n,
            a.len(),
        ));
    }
    let limits = budgets
        .iter()
        .map(Budget::weight_limit)
        .collect::<Result<Vec<f64>>>()?;

    // Price every distinct precision once per budget, with the layers all at it.
    let mut distinct: Vec<LayerPrecision> = Vec::new();
    for p in options.iter().flatten() {
        p.validate()?;
        if !distinct.contains(p) {
            distinct.push(*p);
        }
    }
    let mut priced = Vec::with_capacity(distinct.len());
    for p in &distinct {
        let mut per_budget = Vec::with_capacity(budgets.len());
        for b in budgets {
            let m = b.model.at_precision(&vec![*p; n])?;
            per_budget.push((m.input_energy(&state.input_masks)?, m.knapsack_costs()));
        }
        priced.push(per_budget);
    }
    let mut prices = Vec::with_capacity(n);
    for (l, layer) in arch.layers().iter().enumerate() {
        let mut layer_prices = Vec::with_capacity(options[l].len());
        for p in &options[l] {
            let d = distinct.iter().position(|q| q == p).expect("listed");
            let rho = activations.map_or(0.0, |a| a[l].noise_ratio(p.activations));
            layer_prices.push(OptionPrice {
                gain: (1.0 - rho).max(0.0),
                noise: weight_noise_with(layer, &state.weights[l], p.weights, weight_scale)?,
                floor: priced[d].iter().map(|(f, _)| f[l]).collect(),
                cost: priced[d].iter().map(|(_, c)| c[l]).collect(),
            });
        }
        prices.push(layer_prices);
    }
    let problem = Problem {
        curves: state.weights.iter().map(|w| LayerCurve::of(w)).collect(),
        prices,
        options,
        limits,
    };
    problem.check_feasible()?;

    let total_sq: f64 = problem
        .curves
        .iter()
        .map(|c| c.prefix[c.prefix.len() - 1])
        .sum();
    let mut best: Option<(f64, Vec<usize>, NetworkState, ProjectionOutcome)> = None;
    let mut scratch = state.clone();
    let mut buf = Vec::new();
    for choice in problem.candidates(8) {
        let precision: Vec<LayerPrecision> = choice
            .iter()
            .enumerate()
            .map(|(l, &k)| problem.options[l][k])
            .collect();
        for (l, &k) in choice.iter().enumerate() {
            value_weights(&state.weights[l], &problem.prices[l][k], &mut buf);
            scratch.weights[l].copy_from_slice(&buf);
        }
        let at: Vec<Budget<Box<dyn PrecisionModel>>> = budgets
            .iter()
            .zip(&problem.limits)
            .map(|(b, &limit)| {
                Ok(Budget::absolute(
                    b.name.clone(),
                    b.model.at_precision(&precision)?,
                    limit,
                ))
            })
            .collect::<Result<_>>()?;
        let out = match project_with_workspace(&mut scratch, &at, ws) {
            Ok(out) => out,
            // These options' floors exceed a budget: not a candidate.
            Err(Error::InfeasibleBudget { .. }) => continue,
            Err(e) => return Err(e),
        };
        if best.as_ref().is_none_or(|b| out.kept_value > b.0) {
            best = Some((out.kept_value, choice, scratch.clone(), out));
        }
    }
    let Some((value, choice, kept, projection)) = best else {
        return Err(Error::InfeasibleBudget {
            budget: problem.limits[0],
            min_achievable: f64::NAN,
        });
    };
    let precision: Vec<LayerPrecision> = choice
        .iter()
        .enumerate()
        .map(|(l, &k)| options[l][k])
        .collect();
    for (w, k) in state.weights.iter_mut().zip(&kept.weights) {
        for (wi, ki) in w.iter_mut().zip(k) {
            if *ki == 0.0 {
                *wi = 0.0;
            }
        }
    }
    let mut exact = Vec::with_capacity(budgets.len());
    for (b, &limit) in budgets.iter().zip(&problem.limits) {
        let cost = b.model.at_precision(&precision)?.energy_total(state)?;
        exact.push(BudgetStatus::of(&b.name, cost, limit));
    }
    debug_assert!(exact.iter().all(|b| b.met), "{exact:?}");
    Ok(JointOutcome {
        precision,
        projection,
        value,
        distortion: total_sq - value,
        exact,
    })
}

/// Settings of [`JointQuantization`].
///
/// | field | default | purpose |
/// |---|---|---|
/// | `projection` | [`WeightProjectionConfig::default`] | projection interval, budget schedule, regrowth |
/// | `quantize_weights` | true | quantization-aware training of the weights (see [`JointQuantization`]) |
/// | `weight_scale` | [`WeightScale::Max`] | how the per-channel weight scales are chosen (refreshed at every projection) |
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointConfig {
    /// When to project and how the budget falls (as for [`WeightProjection`](super::WeightProjection)).
    pub projection: WeightProjectionConfig,
    /// Train with the weights quantized at the chosen precision in every forward pass.
    pub quantize_weights: bool,
    /// The rule of the weights' per-channel scales.
    pub weight_scale: WeightScale,
}

impl Default for JointConfig {
    fn default() -> Self {
        Self {
            projection: WeightProjectionConfig::default(),
            quantize_weights: true,
            weight_scale: WeightScale::Max,
        }
    }
}

/// Pruning and quantization trained together under one or several budgets: a
/// [`ConstrainedOptimizer`] whose projections are [`project_joint`].
///
/// On the budget schedule of [`WeightProjection`](super::WeightProjection) (each
/// budget falling from the network's cost at the models' precision to its limit),
/// every projection chooses each layer's precision again and the kept weights; at
/// fine-tuning the support and the precision are frozen.
///
/// With `quantize_weights` the solver trains the weights quantization-aware through
/// the network traits alone: it keeps the full-precision weights itself, writes
/// their quantization at the current precision into the network for every forward
/// pass, and after each update adds the change the optimizer made to the quantized
/// weights to the full-precision copy (the straight-through estimator, for any
/// optimizer). Projections and the frozen support apply to the full-precision
/// weights; the network always holds quantized ones, so its status is that of the
/// deployed model. Activations are quantized by the network itself: the solver
/// tells it each layer's activation format through
/// [`NetworkMut::set_activation_format`] whenever the precision changes (the
/// reference CNN quantizes them; a network that cannot is priced, not trained, at
/// that format).
///
/// # Examples
/// ```
/// use energy_prune::arch::zoo;
/// use energy_prune::energy::{NumberFormat, SystolicArray, SystolicConfig};
/// use energy_prune::prune::{Budget, ConstrainedOptimizer};
/// use energy_prune::prune::joint::{JointConfig, JointQuantization, precision_options};
/// # fn main() -> energy_prune::Result<()> {
/// let arch = zoo::lenet5()?;
/// let hw = SystolicArray::new(&arch, SystolicConfig::default())?;
/// let bits = [NumberFormat::Int(4), NumberFormat::INT8, NumberFormat::INT16];
/// let solver = JointQuantization::new(
///     vec![Budget::fraction("energy", &hw, 0.1)],
///     precision_options(arch.layers().len(), &bits, &bits)?,
///     JointConfig::default(),
/// )?;
/// assert_eq!(solver.name(), "joint");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JointQuantization<M> {
    budgets: Vec<Budget<M>>,
    limits: Vec<f64>,
    options: Vec<Vec<LayerPrecision>>,
    activations: Option<Vec<ActivationStats>>,
    cfg: JointConfig,
    schedules: Vec<BudgetSchedule>,
    /// The budgets of the last projection (the ones in force).
    current: Vec<f64>,
    regrow: bool,
    precision: Vec<LayerPrecision>,
    /// Full-precision weights (the network holds their quantization).
    master: NetworkState,
    /// What was last written into the network.
    written: Vec<Vec<f32>>,
    buf: Vec<f32>,
    /// The precision whose activation formats the network was last told.
    told: Option<Vec<LayerPrecision>>,
    /// Per-channel weight scales of every layer (`None`: lossless), refreshed at
    /// every projection; empty until the first write.
    scales: Vec<Option<Vec<f32>>>,
    support: WeightSupport,
    ws: ProjectionWorkspace,
}

impl<M: PrecisionModel> JointQuantization<M> {
    /// The solver of `budgets` over the per-layer `options` (see
    /// [`precision_options`]).
    ///
    /// # Errors
    /// As [`WeightProjection::new`](super::WeightProjection::new); shape errors for
    /// options not one list per layer, [`Error::InvalidParameter`] for a layer
    /// without options.
    pub fn new(
        budgets: Vec<Budget<M>>,
        options: Vec<Vec<LayerPrecision>>,
        cfg: JointConfig,
    ) -> Result<Self> {
        cfg.projection.validate()?;
        check_budgets(&budgets)?;
        let arch = budgets[0].model.architecture();
        for b in &budgets {
            if b.model.architecture().fingerprint() != arch.fingerprint() {
                return Err(Error::param(
                    "budgets",
                    b.name.clone(),
                    "every model must price the same architecture",
                ));
            }
        }
        check_options(arch, &options)?;
        let limits = budgets
            .iter()
            .map(Budget::weight_limit)
            .collect::<Result<Vec<f64>>>()?;
        let precision = budgets[0].model.precision().to_vec();
        Ok(Self {
            schedules: limits
                .iter()
                .map(|&l| BudgetSchedule::new(l, l, 0))
                .collect::<Result<_>>()?,
            current: limits.clone(),
            budgets,
            limits,
            options,
            activations: None,
            regrow: cfg.projection.regrow,
            cfg,
            precision,
            master: NetworkState::default(),
            written: Vec::new(),
            buf: Vec::new(),
            told: None,
            scales: Vec::new(),
            support: WeightSupport::default(),
            ws: ProjectionWorkspace::new(),
        })
    }

    /// Price the rounding of each layer's input activations with these statistics
    /// (one per layer; see [`ActivationStats`]).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for another number of entries.
    pub fn with_activation_stats(mut self, stats: Vec<ActivationStats>) -> Result<Self> {
        let n = self.options.len();
        if stats.len() != n {
            return Err(Error::shape(
                "activation statistics (one per layer)",
                n,
                stats.len(),
            ));
        }
        self.activations = Some(stats);
        Ok(self)
    }

    /// The precision chosen by the last projection (the models' own before any).
    pub fn precision(&self) -> &[LayerPrecision] {
        &self.precision
    }

    /// The per-channel weight scales the network's weights are quantized with, per
    /// layer (`None` for a lossless format); refreshed at every projection.
    pub fn weight_scales(&self) -> &[Option<Vec<f32>>] {
        &self.scales
    }

    /// The full-precision weights the solver trains (empty before
    /// [`ConstrainedOptimizer::begin`]).
    pub fn full_precision(&self) -> &NetworkState {
        &self.master
    }

    /// Add to the full-precision weights what the optimizer changed in the network
    /// since the last write.
    fn sync(&mut self, net: &dyn NetworkMut) -> Result<()> {
        if !self.cfg.quantize_weights || self.written.is_empty() {
            for (l, w) in self.master.weights.iter_mut().enumerate() {
                net.read_weights(l, w)?;
            }
            return Ok(());
        }
        for (l, (m, wr)) in self
            .master
            .weights
            .iter_mut()
            .zip(&self.written)
            .enumerate()
        {
            self.buf.resize(m.len(), 0.0);
            net.read_weights(l, &mut self.buf)?;
            for ((mi, now), before) in m.iter_mut().zip(&self.buf).zip(wr) {
                *mi += now - before;
            }
        }
        Ok(())
    }

    /// A step without projection in one pass per layer: add the optimizer's change
    /// to the full-precision weights, re-apply the frozen support, quantize (one
    /// multiplication by the inverse scale per weight) and write. `false` (nothing
    /// done) where the plain path is needed: before the first write, after a
    /// change of precision, without weight quantization.
    fn absorb_and_write(&mut self, net: &mut dyn NetworkMut) -> Result<bool> {
        let n = self.master.weights.len();
        if !self.cfg.quantize_weights
            || self.written.len() != n
            || self.scales.len() != n
            || self.told.as_deref() != Some(&self.precision[..])
        {
            return Ok(false);
        }
        for l in 0..n {
            let (m, wr) = (&mut self.master.weights[l], &mut self.written[l]);
            if wr.len() != m.len() {
                return Ok(false);
            }
            self.buf.resize(m.len(), 0.0);
            net.read_weights(l, &mut self.buf)?;
            let support = if self.regrow {
                None
            } else {
                self.support.layer(l)
            };
            let levels = self.precision[l].weights.levels();
            let scales = self.scales[l].as_deref().filter(|_| levels.is_some());
            let per = scales.map_or(m.len(), |s| m.len() / s.len().max(1)).max(1);
            let levels = levels.unwrap_or(0.0);
            for (c, ((mc, wc), nc)) in m
                .chunks_mut(per)
                .zip(wr.chunks_mut(per))
                .zip(self.buf.chunks(per))
                .enumerate()
            {
                let s = scales.map(|s| s[c]);
                let inv = s.filter(|s| *s > 0.0).map_or(0.0, |s| 1.0 / s);
                let sc = support.map(|sp| &sp[c * per..c * per + mc.len()]);
                for i in 0..mc.len() {
                    let mut v = mc[i] + (nc[i] - wc[i]);
                    if sc.is_some_and(|sp| sp[i] == 0.0) {
                        v = 0.0;
                    }
                    mc[i] = v;
                    wc[i] = match s {
                        Some(s) => s * crate::quant::round_even((v * inv).clamp(-levels, levels)),
                        None => v,
                    };
                }
            }
            net.write_weights(l, wr)?;
        }
        Ok(true)
    }

    /// Write the full-precision weights, quantized at the current precision, into
    /// the network.
    fn write(&mut self, net: &mut dyn NetworkMut) -> Result<()> {
        if self.told.as_deref() != Some(&self.precision[..]) {
            for (l, p) in self.precision.iter().enumerate() {
                net.set_activation_format(l, p.activations)?;
            }
            self.told = Some(self.precision.clone());
        }
        if !self.cfg.quantize_weights {
            return self.master.write_weights_to(net);
        }
        if self.scales.is_empty() {
            self.refresh_scales()?;
        }
        self.tell_scales(net)?;
        self.written.resize(self.master.weights.len(), Vec::new());
        for (l, (m, wr)) in self
            .master
            .weights
            .iter()
            .zip(&mut self.written)
            .enumerate()
        {
            wr.clear();
            wr.extend_from_slice(m);
            if let Some(s) = &self.scales[l] {
                crate::quant::quantize_with_scales(wr, s, self.precision[l].weights);
            }
            net.write_weights(l, wr)?;
        }
        Ok(())
    }

    /// Tell the network the weight scales (for biases on the accumulator grid).
    fn tell_scales(&self, net: &mut dyn NetworkMut) -> Result<()> {
        for (l, s) in self.scales.iter().enumerate() {
            net.set_weight_scales(l, s.as_deref())?;
        }
        Ok(())
    }

    /// The weight scales of the full-precision weights at the current precision.
    fn refresh_scales(&mut self) -> Result<()> {
        let arch = self.budgets[0].model.architecture();
        self.scales = arch
            .layers()
            .iter()
            .zip(&self.master.weights)
            .zip(&self.precision)
            .map(|((layer, w), p)| {
                crate::quant::channel_scales_with(layer, w, p.weights, self.cfg.weight_scale)
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// The cheapest weight-independent cost of every budget over the options, with
    /// `masks`.
    fn floors(&self, masks: &[Option<Vec<f32>>]) -> Result<Vec<f64>> {
        let n = self.options.len();
        let mut floors = Vec::with_capacity(self.budgets.len());
        for b in &self.budgets {
            let mut best = vec![f64::INFINITY; n];
            let mut distinct: Vec<LayerPrecision> = Vec::new();
            for p in self.options.iter().flatten() {
                if distinct.contains(p) {
                    continue;
                }
                distinct.push(*p);
                let input = b.model.at_precision(&vec![*p; n])?.input_energy(masks)?;
                for (l, opts) in self.options.iter().enumerate() {
                    if opts.contains(p) {
                        best[l] = best[l].min(input[l]);
                    }
                }
            }
            floors.push(best.iter().sum());
        }
        Ok(floors)
    }
}

impl<M: PrecisionModel> ConstrainedOptimizer for JointQuantization<M> {
    fn name(&self) -> &'static str {
        "joint"
    }

    fn target(&self) -> f64 {
        self.limits[0]
    }

    fn begin(&mut self, net: &mut dyn NetworkMut, run: &RunInfo) -> Result<()> {
        let state = NetworkState::from_network(&*net)?;
        state.check(self.budgets[0].model.architecture())?;
        let mut masks = state.input_masks.clone();
        if run.input_mask_rounds {
            for m in masks.iter_mut().flatten() {
                m.fill(0.0);
            }
        }
        for (floor, &limit) in self.floors(&masks)?.iter().zip(&self.limits) {
            if *floor > limit {
                return Err(Error::InfeasibleBudget {
                    budget: limit,
                    min_achievable: *floor,
                });
            }
        }
        self.master = state;
        self.written.clear();
        self.told = None;
        self.scales.clear();
        self.support.clear();
        Ok(())
    }

    fn begin_phase(&mut self, net: &dyn Network, phase: Phase, steps: usize) -> Result<()> {
        let masks = NetworkState::from_network(net)?.input_masks;
        for (m, n) in self.master.input_masks.iter_mut().zip(masks) {
            *m = n;
        }
        match phase {
            Phase::Constrained | Phase::MaskWeights => {
                let reach = if phase == Phase::Constrained {
                    ((steps as f64 * self.cfg.projection.reach_fraction) as usize)
                        .min(steps.saturating_sub(1))
                } else {
                    0
                };
                let floors = self.floors(&self.master.input_masks)?;
                self.schedules.clear();
                for ((b, &limit), floor) in self.budgets.iter().zip(&self.limits).zip(floors) {
                    let at = b.model.at_precision(&self.precision)?;
                    let e0 = at.relaxed_energy_of(&self.master)?.max(limit);
                    // While masks keep the floor above the limit, aim 30 % above it.
                    let target = if floor <= limit {
                        limit
                    } else {
                        floor + 0.3 * limit
                    };
                    let start = if phase == Phase::Constrained {
                        e0
                    } else {
                        target
                    };
                    self.schedules
                        .push(BudgetSchedule::new(start, target, reach)?);
                }
                self.regrow = self.cfg.projection.regrow || phase == Phase::MaskWeights;
                self.support.clear();
            }
            Phase::InputMasks => {}
            Phase::FineTune => {
                self.current.clone_from(&self.limits);
                self.support.freeze(self.master.clone());
            }
        }
        Ok(())
    }

    fn step(&mut self, net: &mut dyn NetworkMut, ctx: &StepContext<'_>) -> Result<StepReport> {
        if self.master.weights.len() != net.architecture().layers().len() {
            self.master = NetworkState::from_network(&*net)?;
        }
        let last = ctx.is_last();
        let due = ctx.step.is_multiple_of(self.cfg.projection.project_every) || last;
        if !due && self.absorb_and_write(net)? {
            return Ok(StepReport::held(false));
        }
        self.sync(&*net)?;
        if !due {
            if !self.regrow {
                self.support.apply_to_state(&mut self.master);
            }
            self.write(net)?;
            return Ok(StepReport::held(false));
        }
        let budgets: Vec<Budget<&M>> = self
            .budgets
            .iter()
            .zip(&self.schedules)
            .map(|(b, s)| {
                let limit = if last { s.target() } else { s.at(ctx.step) };
                Budget::absolute(b.name.clone(), &b.model, limit)
            })
            .collect();
        let out = project_joint_with_workspace(
            &mut self.master,
            &budgets,
            &self.options,
            self.activations.as_deref(),
            self.cfg.weight_scale,
            &mut self.ws,
        )?;
        for (c, b) in self.current.iter_mut().zip(&budgets) {
            if let crate::prune::Limit::Absolute(v) = b.limit {
                *c = v;
            }
        }
        drop(budgets);
        self.precision.clone_from(&out.precision);
        self.refresh_scales()?;
        self.support.update(&self.master);
        self.write(net)?;
        Ok(StepReport {
            acted: true,
            frozen: false,
            event: Some(SolverEvent::Projection(ProjectionEvent {
                step: ctx.step,
                budget: out.projection.budget,
                relaxed_energy: out.projection.relaxed_energy,
                kept: out.projection.kept,
            })),
        })
    }

    fn hold(&mut self, net: &mut dyn NetworkMut) -> Result<()> {
        if self.master.weights.len() != net.architecture().layers().len() {
            self.master = NetworkState::from_network(&*net)?;
        }
        self.sync(&*net)?;
        self.support.apply_to_state(&mut self.master);
        self.write(net)
    }

    fn status(&self, net: &dyn Network) -> Result<ConstraintStatus> {
        let state = NetworkState::from_network(net)?;
        let mut budgets = Vec::with_capacity(self.budgets.len());
        let mut relaxed = Vec::with_capacity(self.budgets.len());
        for (b, &limit) in self.budgets.iter().zip(&self.limits) {
            let at = b.model.at_precision(&self.precision)?;
            budgets.push(BudgetStatus::of(&b.name, at.energy_total(&state)?, limit));
            relaxed.push(at.relaxed_energy_of(&state)?);
        }
        let k = (0..budgets.len())
            .max_by(|&i, &j| {
                (budgets[i].cost / budgets[i].budget)
                    .total_cmp(&(budgets[j].cost / budgets[j].budget))
            })
            .unwrap_or(0);
        Ok(ConstraintStatus {
            cost: budgets[k].cost,
            relaxed_cost: relaxed[k],
            budget: self.current[k],
            target: self.limits[k],
            met: budgets.iter().all(|b| b.met),
            kept: Kept::Weights {
                nonzero: state.nonzeros().iter().sum(),
            },
            budgets,
        })
    }

    fn unreachable_floor(&self, net: &dyn Network) -> Result<Option<f64>> {
        let masks = NetworkState::from_network(net)?.input_masks;
        let floors = self.floors(&masks)?;
        Ok(floors
            .iter()
            .zip(&self.limits)
            .find(|(f, l)| f > l)
            .map(|(f, _)| *f))
    }

    fn precision(&self) -> Option<&[LayerPrecision]> {
        Some(&self.precision)
    }
}
