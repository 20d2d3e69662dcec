//! ADMM channel pruning under a width-level cost model (ECC, Yang, Zhu, Liu,
//! CVPR 2019, section 4).
//!
//! ```text
//! min_{W, s} loss(W)   s.t.   ||W^(u)||_(2,0) <= s_u  (live slots of width u),   f(s) <= B
//! L1(W, s, y) = sum_u (rho_y / 2) [n_u - s_u]_+^2 + y_u (n_u - s_u)
//! L2(s, z)    = (rho_z / 2) [f(s) - B]_+^2 + z (f(s) - B)
//! ```
//! One iteration per training batch, after the Adam step on the weights (rate
//! `alpha`, second moment `v`, `d = sqrt(v) + eps`):
//! 1. **proximal step** per width: slot importance `a_k = sum w^2 d` over the slot;
//!    the slot of rank `r` (1 = most important) is kept iff
//!    `a_k >= rho_y alpha ([r - s]_+^2 - [r - s - 1]_+^2) + 2 alpha y`, with `y`
//!    first capped so that the `floor(s)` best slots survive; at least
//!    `min_channels` slots always survive, and the kept count may be rounded up to a
//!    multiple of `round_to`;
//! 2. the live widths `n` and the model's cost `f(n)`;
//! 3. **s step**: `g1 = dL1/ds + rho_z [f(s) - B]_+ grad f(s)`, `g2 = grad f(s)`;
//!    `z` is raised to `min_u (-min(g1_u, 0) + 1e-3) / g2_u` over widths with
//!    `g2_u > 0` if below it; `s <- s - eta (g1 + z g2)` with the gradient clipped
//!    (only decreases, norm at most `grad_clip`) and `s` kept in `[lower_u, S_u]`;
//! 4. **dual ascent**: `z <- max(0, z + rho_z (f(s) - B))`,
//!    `y_u <- max(0, y_u + rho_y (n_u - floor(s_u)))`.
//!
//! The solver stops when the model's cost of the live widths meets the budget.
//!
//! **Several budgets** (a list of [`Budget`]s, for [`Admm::new`] and [`AdmmPruning::new`]):
//! one cost constraint `f_k(s) <= B_k` per budget, each with its own dual `z_k` and
//! penalty `rho_k` (default `1 / B_k`) in
//! `L2 = sum_k (rho_k / 2) [f_k(s) - B_k]_+^2 + z_k (f_k(s) - B_k)`; the `s` step
//! follows `g1 + sum_k z_k grad f_k(s)`, the raise of step 3 applies to the most
//! violated constraint (largest `f_k(s) / B_k`) given the others' pushes, every
//! `z_k` ascends on its own constraint, and the solver stops when the live widths
//! meet every budget. With one budget this is exactly the iteration above.

use super::budget::{Budget, check_budgets};
use super::constraint::{
    AdmmEvent, BudgetStatus, ConstrainedOptimizer, ConstraintStatus, Kept, Phase, RunInfo,
    SolverEvent, StepContext, StepReport, check_budget,
};
use crate::arch::{Architecture, SlotLayout};
use crate::energy::WidthCostModel;
use crate::error::{Error, Result};
use crate::network::{Network, NetworkMut, ParamKind, PruningPlan};

/// Hyper-parameters of [`Admm`] (defaults for small networks; the paper's ImageNet
/// values are `rho = 10`, Adam rate `1e-5`, `eta_s = 3`).
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `rho_y` | 10 | > 0 | penalty on widths above `s` |
/// | `rho_z` | 1 / B | > 0 | penalty on cost above the budget (None: `1 / B`) |
/// | `eta_s` | 0.5 | > 0 | step on the continuous widths |
/// | `grad_clip` | Some(1.0) | > 0 | bound on the norm of the `s` gradient step direction |
/// | `only_decrease` | true | | widths never grow |
/// | `min_channels` | 1 | >= 1 | slots every width keeps |
/// | `round_to` | None | >= 1 | kept counts rounded up to a multiple |
/// | `frozen` | [] | | widths never pruned |
#[derive(Debug, Clone, PartialEq)]
pub struct AdmmConfig {
    /// Penalty coefficient of the width constraints.
    pub rho_y: f64,
    /// Penalty coefficient of the cost constraint (None: `1 / budget`).
    pub rho_z: Option<f64>,
    /// Step size on `s`.
    pub eta_s: f64,
    /// Clip of the `s` direction's norm.
    pub grad_clip: Option<f64>,
    /// Let `s` only decrease.
    pub only_decrease: bool,
    /// Minimum channels per width.
    pub min_channels: usize,
    /// Round kept channel counts up to a multiple of this.
    pub round_to: Option<usize>,
    /// Widths that are never pruned.
    pub frozen: Vec<usize>,
}

impl Default for AdmmConfig {
    fn default() -> Self {
        Self {
            rho_y: 10.0,
            rho_z: None,
            eta_s: 0.5,
            grad_clip: Some(1.0),
            only_decrease: true,
            min_channels: 1,
            round_to: None,
            frozen: Vec::new(),
        }
    }
}

impl AdmmConfig {
    /// Check every field against its range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let pos = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::param(name, v, "must be finite and > 0"))
            }
        };
        pos("rho_y", self.rho_y)?;
        if let Some(r) = self.rho_z {
            pos("rho_z", r)?;
        }
        pos("eta_s", self.eta_s)?;
        if let Some(c) = self.grad_clip {
            pos("grad_clip", c)?;
        }
        if self.min_channels == 0 {
            return Err(Error::param(
                "min_channels",
                0,
                "every width keeps at least one channel",
            ));
        }
        if self.round_to == Some(0) {
            return Err(Error::param("round_to", 0, "must be >= 1"));
        }
        Ok(())
    }
}

/// What one ADMM step saw and did.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmmStep {
    /// Live channels per width after the proximal step.
    pub live: Vec<usize>,
    /// Model cost of the live widths (the first budget's model).
    pub cost: f64,
    /// Model cost of the live widths, per budget.
    pub costs: Vec<f64>,
    /// Whether the live widths meet every budget.
    pub budget_met: bool,
    /// The continuous widths after the step.
    pub s: Vec<f64>,
    /// The cost duals `z_k` after the step, per budget.
    pub duals: Vec<f64>,
}

/// The ADMM state `(s, y, z)` for one architecture and one or several (model,
/// budget) pairs.
#[derive(Debug, Clone)]
pub struct Admm {
    arch: Architecture,
    cfg: AdmmConfig,
    /// Budget per cost constraint.
    budgets: Vec<f64>,
    /// Penalty per cost constraint.
    rho_z: Vec<f64>,
    /// Continuous widths.
    s: Vec<f64>,
    /// Width duals.
    y: Vec<f64>,
    /// Cost duals, per constraint.
    z: Vec<f64>,
    lower: Vec<f64>,
    free: Vec<bool>,
}

/// The `s`-dependent part of the augmented Lagrangian: its value, `g1` (gradient
/// without the `z` terms) and `g2[k] = grad f_k(s)`.
pub(crate) struct SLagrangian {
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) value: f64,
    pub(crate) g1: Vec<f64>,
    pub(crate) g2: Vec<Vec<f64>>,
}

/// The cost models of the constraints, by index: one model (for the
/// Lagrangian of one constraint) or the solver's budgets.
trait Costs {
    fn count(&self) -> usize;
    fn num_widths(&self, k: usize) -> usize;
    fn cost(&self, k: usize, s: &[f64]) -> Result<f64>;
    fn cost_and_gradient(&self, k: usize, s: &[f64], g: &mut [f64]) -> Result<f64>;
}

/// One model of any (possibly unsized) type.
#[cfg(test)]
struct One<'a, M: ?Sized>(&'a M);

#[cfg(test)]
impl<M: WidthCostModel + ?Sized> Costs for One<'_, M> {
    fn count(&self) -> usize {
        1
    }
    fn num_widths(&self, _: usize) -> usize {
        self.0.num_widths()
    }
    fn cost(&self, _: usize, s: &[f64]) -> Result<f64> {
        self.0.cost(s)
    }
    fn cost_and_gradient(&self, _: usize, s: &[f64], g: &mut [f64]) -> Result<f64> {
        self.0.cost_and_gradient(s, g)
    }
}

impl<M: WidthCostModel> Costs for [Budget<M>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn num_widths(&self, k: usize) -> usize {
        self[k].model.num_widths()
    }
    fn cost(&self, k: usize, s: &[f64]) -> Result<f64> {
        self[k].model.cost(s)
    }
    fn cost_and_gradient(&self, k: usize, s: &[f64], g: &mut [f64]) -> Result<f64> {
        self[k].model.cost_and_gradient(s, g)
    }
}

/// Per-slot importance and its index.
fn rank_slots(a: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..a.len()).collect();
    idx.sort_by(|&i, &j| a[j].total_cmp(&a[i]).then(i.cmp(&j)));
    idx
}

/// Marginal penalty of keeping the slot of rank `r` (from 1) when the target is `s`.
fn marginal(rho_y: f64, alpha: f64, r: usize, s: f64) -> f64 {
    let pos = |v: f64| v.max(0.0);
    let r = r as f64;
    rho_y * alpha * (pos(r - s).powi(2) - pos(r - s - 1.0).powi(2))
}

/// The proximal step for one width: which slots to keep given their importances
/// `a` (Adam-preconditioned squared norms), target `s`, dual `y` (capped in place)
/// and Adam rate `alpha`. Returns a keep flag per slot.
pub(crate) fn prox_keep(
    a: &[f64],
    s: f64,
    y: &mut f64,
    rho_y: f64,
    alpha: f64,
    min_keep: usize,
    round_to: Option<usize>,
) -> Vec<bool> {
    let order = rank_slots(a);
    let floor_s = (s.floor() as usize).clamp(1, a.len().max(1));
    if *y > 0.0 && floor_s <= order.len() {
        let k = order[floor_s - 1];
        let cap = (a[k] - marginal(rho_y, alpha, floor_s, s)) / (2.0 * alpha);
        *y = y.min(cap.max(0.0));
    }
    let mut keep = vec![false; a.len()];
    let mut n = 0;
    for (rank0, &k) in order.iter().enumerate() {
        if a[k] >= marginal(rho_y, alpha, rank0 + 1, s) + 2.0 * alpha * *y {
            keep[k] = true;
            n += 1;
        }
    }
    let mut target = n.max(min_keep.min(a.len()));
    if let Some(m) = round_to {
        target = (target.div_ceil(m) * m).min(a.len());
    }
    for &k in order.iter().take(target) {
        keep[k] = true;
    }
    keep
}

impl Admm {
    /// A solver for `arch` with one cost constraint per budget: each budget's
    /// model's cost of the widths must end at most its limit (a fraction is taken of
    /// the model's cost of the full widths). `cfg.rho_z`, if set, is the penalty of
    /// every constraint; otherwise each gets `1 / B_k`. One budget is the classic
    /// ECC solver.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for no budget, two budgets of one name, a bad
    /// configuration or limit; [`Error::ShapeMismatch`] if a model has another
    /// number of widths; [`Error::InfeasibleBudget`] (naming the first such budget's
    /// figures) if the minimum widths cost more than a budget.
    pub fn new<M: WidthCostModel>(
        arch: &Architecture,
        budgets: &[Budget<M>],
        cfg: AdmmConfig,
    ) -> Result<Self> {
        check_budgets(budgets)?;
        let limits = budgets
            .iter()
            .map(|b| b.width_limit(arch))
            .collect::<Result<Vec<f64>>>()?;
        Self::build(arch, budgets, &limits, cfg)
    }

    fn build<C: Costs + ?Sized>(
        arch: &Architecture,
        models: &C,
        budgets: &[f64],
        cfg: AdmmConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        if budgets.is_empty() {
            return Err(Error::param(
                "budgets",
                "[]",
                "give at least one (model, budget) pair",
            ));
        }
        for &b in budgets {
            check_budget(b)?;
        }
        let n = arch.widths().len();
        for k in 0..models.count() {
            if models.num_widths(k) != n {
                let which = if models.count() == 1 {
                    String::new()
                } else {
                    format!(" of budget {k}")
                };
                return Err(Error::shape(
                    format!("widths of the cost model{which} (the architecture's widths)"),
                    n,
                    models.num_widths(k),
                ));
            }
        }
        if let Some(&u) = cfg.frozen.iter().find(|&&u| u >= n) {
            return Err(Error::IndexOutOfRange {
                what: "frozen width",
                index: u,
                len: n,
            });
        }
        let free: Vec<bool> = arch
            .widths()
            .iter()
            .enumerate()
            .map(|(u, w)| !w.fixed && !cfg.frozen.contains(&u))
            .collect();
        let s: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
        let lower: Vec<f64> = arch
            .widths()
            .iter()
            .zip(&free)
            .map(|(w, f)| {
                if *f {
                    cfg.min_channels.min(w.channels) as f64
                } else {
                    w.channels as f64
                }
            })
            .collect();
        for (k, &budget) in budgets.iter().enumerate() {
            let min_cost = models.cost(k, &lower)?;
            if min_cost > budget {
                return Err(Error::InfeasibleBudget {
                    budget,
                    min_achievable: min_cost,
                });
            }
        }
        Ok(Self {
            arch: arch.clone(),
            rho_z: budgets
                .iter()
                .map(|b| cfg.rho_z.unwrap_or(1.0 / b))
                .collect(),
            cfg,
            budgets: budgets.to_vec(),
            s,
            y: vec![0.0; n],
            z: vec![0.0; budgets.len()],
            lower,
            free,
        })
    }

    /// The continuous widths `s`.
    pub fn s(&self) -> &[f64] {
        &self.s
    }
    /// The width duals `y`.
    pub fn y(&self) -> &[f64] {
        &self.y
    }
    /// The cost duals `z_k`, one per budget.
    pub fn duals(&self) -> &[f64] {
        &self.z
    }
    /// The budgets `B_k`, in their models' units.
    pub fn budgets(&self) -> &[f64] {
        &self.budgets
    }

    /// Slot importances `a_k = sum w^2 d` of every width from the weights and the
    /// preconditioner `d` of each prunable layer (same layout as the weights).
    fn importances(&self, weights: &[Vec<f32>], precond: &[Vec<f32>]) -> Result<Vec<Vec<f64>>> {
        let mut a: Vec<Vec<f64>> = self
            .arch
            .widths()
            .iter()
            .map(|w| vec![0.0; w.channels])
            .collect();
        for (l, layer) in self.arch.layers().iter().enumerate() {
            let (w, d) = (&weights[l], &precond[l]);
            if w.len() != layer.weight_count() || d.len() != w.len() {
                return Err(Error::shape(
                    format!("weights / preconditioner of layer {}", layer.name),
                    layer.weight_count(),
                    w.len().min(d.len()),
                ));
            }
            crate::error::check_finite(&format!("weights of layer {}", layer.name), w)?;
            crate::error::check_finite(&format!("preconditioner of layer {}", layer.name), d)?;
            for slots in SlotLayout::of_layer(&self.arch, l)? {
                let au = &mut a[slots.width];
                slots.for_each_run(|k, r| {
                    au[k] += r.map(|i| (w[i] as f64).powi(2) * d[i] as f64).sum::<f64>();
                });
            }
        }
        Ok(a)
    }

    /// One ADMM iteration on the weights of every prunable layer (canonical
    /// layout), after an Adam step with rate `alpha` whose preconditioner is
    /// `precond` (`sqrt(v) + eps` per weight). Zeroes pruned slots in place.
    /// `budgets` are the solver's, in its order.
    ///
    /// # Errors
    /// Shape errors (also when `budgets` has another length than the solver's),
    /// model errors, [`Error::InvalidParameter`] for a bad `alpha`.
    pub fn step<M: WidthCostModel>(
        &mut self,
        weights: &mut [Vec<f32>],
        precond: &[Vec<f32>],
        alpha: f64,
        budgets: &[Budget<M>],
    ) -> Result<AdmmStep> {
        self.step_with(weights, precond, alpha, budgets)
    }

    fn step_with<C: Costs + ?Sized>(
        &mut self,
        weights: &mut [Vec<f32>],
        precond: &[Vec<f32>],
        alpha: f64,
        models: &C,
    ) -> Result<AdmmStep> {
        if models.count() != self.budgets.len() {
            return Err(Error::shape(
                "cost models (one per budget of the solver)",
                self.budgets.len(),
                models.count(),
            ));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(Error::param(
                "alpha",
                alpha,
                "the Adam rate must be finite and > 0",
            ));
        }
        if weights.len() != self.arch.layers().len() || precond.len() != weights.len() {
            return Err(Error::shape(
                "layers",
                self.arch.layers().len(),
                weights.len().min(precond.len()),
            ));
        }
        // 1. Proximal step.
        let a = self.importances(weights, precond)?;
        let mut keep: Vec<Vec<bool>> = Vec::with_capacity(a.len());
        for (u, au) in a.iter().enumerate() {
            if !self.free[u] {
                keep.push(vec![true; au.len()]);
                continue;
            }
            keep.push(prox_keep(
                au,
                self.s[u],
                &mut self.y[u],
                self.cfg.rho_y,
                alpha,
                self.cfg.min_channels,
                self.cfg.round_to,
            ));
        }
        self.zero_slots(weights, &keep)?;
        // 2. Live widths and their costs.
        let live: Vec<usize> = keep
            .iter()
            .map(|k| k.iter().filter(|v| **v).count())
            .collect();
        let live_f: Vec<f64> = live.iter().map(|v| *v as f64).collect();
        let costs = (0..self.budgets.len())
            .map(|k| models.cost(k, &live_f))
            .collect::<Result<Vec<f64>>>()?;
        // 3. s step: the most violated constraint's dual is raised until every free
        // width moves down, given the other duals' pushes.
        let SLagrangian { mut g1, g2, .. } = self.s_lagrangian_with(&live_f, &self.s, models)?;
        let worst = if self.budgets.len() == 1 {
            0
        } else {
            let at_s = (0..self.budgets.len())
                .map(|k| models.cost(k, &self.s))
                .collect::<Result<Vec<f64>>>()?;
            (0..self.budgets.len())
                .max_by(|&i, &j| {
                    (at_s[i] / self.budgets[i])
                        .total_cmp(&(at_s[j] / self.budgets[j]))
                        .then(j.cmp(&i))
                })
                .unwrap_or(0)
        };
        for (k, gk) in g2.iter().enumerate() {
            if k != worst {
                for (g, d) in g1.iter_mut().zip(gk) {
                    *g += self.z[k] * d;
                }
            }
        }
        let gw = &g2[worst];
        let z_min = (0..self.s.len())
            .filter(|&u| self.free[u] && gw[u] > 0.0)
            .map(|u| (-g1[u].min(0.0) + 1e-3) / gw[u])
            .fold(f64::INFINITY, f64::min);
        if z_min.is_finite() && self.z[worst] < z_min {
            self.z[worst] = z_min;
        }
        for u in 0..self.s.len() {
            if self.free[u] {
                g1[u] += self.z[worst] * gw[u];
                if self.cfg.only_decrease {
                    g1[u] = g1[u].max(0.0);
                }
            }
        }
        let norm = g1.iter().map(|g| g * g).sum::<f64>().sqrt();
        let scale = match self.cfg.grad_clip {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        let step = self.cfg.eta_s * scale;
        for (u, (su, g)) in self.s.iter_mut().zip(&g1).enumerate() {
            if self.free[u] {
                *su = (*su - step * g).clamp(self.lower[u], self.arch.widths()[u].channels as f64);
            }
        }
        // 4. Dual ascent.
        for k in 0..self.budgets.len() {
            let fs = models.cost(k, &self.s)?;
            self.z[k] = (self.z[k] + self.rho_z[k] * (fs - self.budgets[k])).max(0.0);
        }
        for (u, (yu, n)) in self.y.iter_mut().zip(&live_f).enumerate() {
            if self.free[u] {
                *yu = (*yu + self.cfg.rho_y * (n - self.s[u].floor())).max(0.0);
            }
        }
        Ok(AdmmStep {
            live,
            cost: costs[0],
            budget_met: costs.iter().zip(&self.budgets).all(|(c, b)| c <= b),
            costs,
            s: self.s.clone(),
            duals: self.z.clone(),
        })
    }

    /// The part of the augmented Lagrangian that depends on `s`, for live widths
    /// `live` and one model: its value at the current duals, `g1` (its gradient
    /// without the `z` term) and `g2 = grad f(s)`, so that the full gradient is
    /// `g1 + z g2`. Fixed and frozen widths get zero gradient.
    ///
    /// # Errors
    /// Model errors and shape errors.
    #[cfg(test)]
    pub(crate) fn s_lagrangian<M: WidthCostModel + ?Sized>(
        &self,
        live: &[f64],
        s: &[f64],
        model: &M,
    ) -> Result<SLagrangian> {
        self.s_lagrangian_with(live, s, &One(model))
    }

    fn s_lagrangian_with<C: Costs + ?Sized>(
        &self,
        live: &[f64],
        s: &[f64],
        models: &C,
    ) -> Result<SLagrangian> {
        if live.len() != self.s.len() || s.len() != self.s.len() {
            return Err(Error::shape(
                "widths",
                self.s.len(),
                live.len().min(s.len()),
            ));
        }
        let mut value = 0.0;
        let mut g1 = vec![0.0; s.len()];
        let mut g2 = Vec::with_capacity(self.budgets.len());
        for k in 0..self.budgets.len() {
            let mut gk = vec![0.0; s.len()];
            let fs = models.cost_and_gradient(k, s, &mut gk)?;
            let over = (fs - self.budgets[k]).max(0.0);
            value += self.rho_z[k] / 2.0 * over * over + self.z[k] * (fs - self.budgets[k]);
            for u in 0..s.len() {
                if self.free[u] {
                    g1[u] += self.rho_z[k] * over * gk[u];
                } else {
                    gk[u] = 0.0;
                }
            }
            g2.push(gk);
        }
        for u in 0..s.len() {
            if self.free[u] {
                let excess = (live[u] - s[u]).max(0.0);
                value += self.cfg.rho_y / 2.0 * excess * excess + self.y[u] * (live[u] - s[u]);
                g1[u] += -self.cfg.rho_y * excess - self.y[u];
            }
        }
        Ok(SLagrangian { value, g1, g2 })
    }

    fn zero_slots(&self, weights: &mut [Vec<f32>], keep: &[Vec<bool>]) -> Result<()> {
        for (l, w) in weights.iter_mut().enumerate() {
            for slots in SlotLayout::of_layer(&self.arch, l)? {
                let kept = &keep[slots.width];
                slots.for_each_run(|k, r| {
                    if !kept[k] {
                        w[r].fill(0.0);
                    }
                });
            }
        }
        Ok(())
    }
}

/// ADMM channel pruning as a constrained optimizer: after each update of an
/// adaptive optimizer (Adam: its preconditioner and rate enter the proximal step),
/// one [`Admm::step`] on the weights, until the model's cost of the live widths
/// meets every budget; from then
/// on the support is frozen (a [`PruningPlan`] applied after every update) and the
/// driver moves on to fine-tuning.
#[derive(Debug)]
pub struct AdmmPruning<M> {
    admm: Admm,
    budgets: Vec<Budget<M>>,
    weights: Vec<Vec<f32>>,
    precond: Vec<Vec<f32>>,
    last: Option<AdmmStep>,
    frozen: Option<PruningPlan>,
}

impl<M: WidthCostModel> AdmmPruning<M> {
    /// ADMM on `arch` under `budgets`: one cost constraint and dual per budget on
    /// the same widths ([`Admm::new`]); the support freezes when the live widths
    /// meet every budget. [`ConstraintStatus::budgets`] reports each one (cost,
    /// budget, met, binding); the top-level cost and budget are those of the budget
    /// closest to (or furthest over) its limit.
    ///
    /// # Errors
    /// As [`Admm::new`].
    pub fn new(arch: &Architecture, budgets: Vec<Budget<M>>, cfg: AdmmConfig) -> Result<Self> {
        let admm = Admm::new(arch, &budgets, cfg)?;
        let weights: Vec<Vec<f32>> = arch
            .layers()
            .iter()
            .map(|l| vec![0.0; l.weight_count()])
            .collect();
        Ok(Self {
            admm,
            budgets,
            precond: weights.clone(),
            weights,
            last: None,
            frozen: None,
        })
    }

    /// The solver state `(s, y, z)`.
    pub fn admm(&self) -> &Admm {
        &self.admm
    }

    /// The frozen plan, once the budget is met.
    pub fn plan(&self) -> Option<&PruningPlan> {
        self.frozen.as_ref()
    }

    fn live(&self) -> Vec<usize> {
        match &self.last {
            Some(l) => l.live.clone(),
            None => self.admm.arch.widths().iter().map(|w| w.channels).collect(),
        }
    }

    /// Per budget: the cost of `live` widths, the budget, whether it is met and
    /// whether it binds (less than 1 % of it left).
    fn budget_status(&self, live: &[usize]) -> Result<Vec<BudgetStatus>> {
        self.budgets
            .iter()
            .zip(self.admm.budgets())
            .map(|(b, &budget)| {
                let cost = b.model.cost_of_widths(live)?;
                Ok(BudgetStatus {
                    name: b.name.clone(),
                    cost,
                    budget,
                    met: cost <= budget,
                    binding: budget - cost <= 0.01 * budget,
                })
            })
            .collect()
    }
}

impl<M: WidthCostModel> ConstrainedOptimizer for AdmmPruning<M> {
    fn name(&self) -> &'static str {
        "admm"
    }

    fn target(&self) -> f64 {
        self.admm.budgets[0]
    }

    fn begin(&mut self, net: &mut dyn NetworkMut, _run: &RunInfo) -> Result<()> {
        check_same_architecture(net.architecture(), &self.admm.arch)
    }

    fn begin_phase(&mut self, net: &dyn Network, phase: Phase, _: usize) -> Result<()> {
        if phase == Phase::FineTune && self.frozen.is_none() {
            self.frozen = Some(PruningPlan::from_network(net)?);
        }
        Ok(())
    }

    fn step(&mut self, net: &mut dyn NetworkMut, ctx: &StepContext<'_>) -> Result<StepReport> {
        if let Some(plan) = &self.frozen {
            plan.apply(net)?;
            return Ok(StepReport::held(true));
        }
        for l in 0..self.weights.len() {
            net.read_weights(l, &mut self.weights[l])?;
            let p = &mut self.precond[l];
            let found = ctx
                .preconditioner
                .is_some_and(|d| d.diagonal(ParamKind::Weight(l), p));
            if !found {
                p.fill(1.0);
            }
        }
        let st = self.admm.step_with(
            &mut self.weights,
            &self.precond,
            ctx.learning_rate,
            self.budgets.as_slice(),
        )?;
        for (l, w) in self.weights.iter().enumerate() {
            net.write_weights(l, w)?;
        }
        if st.budget_met {
            self.frozen = Some(PruningPlan::from_network(&*net)?);
        }
        let event = AdmmEvent {
            step: ctx.step,
            live: st.live.clone(),
            cost: st.cost,
            costs: st.costs.clone(),
            s: st.s.clone(),
            y: self.admm.y.clone(),
            duals: st.duals.clone(),
            budget_met: st.budget_met,
        };
        let frozen = st.budget_met;
        self.last = Some(st);
        Ok(StepReport {
            acted: true,
            frozen,
            event: Some(SolverEvent::Admm(event)),
        })
    }

    fn hold(&mut self, net: &mut dyn NetworkMut) -> Result<()> {
        match &self.frozen {
            Some(plan) => plan.apply(net),
            None => Ok(()),
        }
    }

    fn status(&self, _net: &dyn Network) -> Result<ConstraintStatus> {
        let live = self.live();
        let all = self.budget_status(&live)?;
        // The tightest budget (largest cost / budget) speaks for the set.
        let k = (0..all.len())
            .max_by(|&i, &j| {
                (all[i].cost / all[i].budget)
                    .total_cmp(&(all[j].cost / all[j].budget))
                    .then(j.cmp(&i))
            })
            .unwrap_or(0);
        Ok(ConstraintStatus {
            cost: all[k].cost,
            relaxed_cost: self.budgets[k].model.cost(self.admm.s())?,
            budget: all[k].budget,
            target: all[k].budget,
            met: all.iter().all(|b| b.met),
            kept: Kept::Channels { live },
            budgets: all,
        })
    }
}

/// An error unless `net` and `expected` have the same layers and widths.
pub(crate) fn check_same_architecture(net: &Architecture, expected: &Architecture) -> Result<()> {
    if net.layers().len() != expected.layers().len()
        || net.widths().len() != expected.widths().len()
    {
        return Err(Error::shape(
            "layers of the network (the solver was built for another architecture)",
            expected.layers().len(),
            net.layers().len(),
        ));
    }
    for (a, b) in net.layers().iter().zip(expected.layers()) {
        if a.weight_count() != b.weight_count() {
            return Err(Error::shape(
                format!(
                    "weights of layer {} (the solver was built for another architecture)",
                    a.name
                ),
                b.weight_count(),
                a.weight_count(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::zoo;
    use crate::energy::{SystolicArray, SystolicConfig, WidthCostModel};
    use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

    /// The prox subproblem's objective for a kept set.
    fn objective(a: &[f64], keep: &[bool], s: f64, y: f64, rho_y: f64, alpha: f64) -> f64 {
        let n = keep.iter().filter(|k| **k).count() as f64;
        let dropped: f64 = a
            .iter()
            .zip(keep)
            .filter(|(_, k)| !**k)
            .map(|(v, _)| v / (2.0 * alpha))
            .sum();
        dropped + rho_y / 2.0 * (n - s).max(0.0).powi(2) + y * (n - s)
    }

    #[test]
    fn prox_matches_brute_force_minimisation() {
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        for _ in 0..2_000 {
            let c = rng.random_range(1..8usize);
            let a: Vec<f64> = (0..c).map(|_| rng.random_range(0.0..2.0)).collect();
            let s = rng.random_range(1.0..c as f64 + 0.99);
            let (rho_y, alpha) = (rng.random_range(0.1..5.0), rng.random_range(0.01..1.0));
            let mut y = if rng.random_bool(0.5) {
                0.0
            } else {
                rng.random_range(0.0..3.0)
            };
            let keep = prox_keep(&a, s, &mut y, rho_y, alpha, 0, None);
            let got = objective(&a, &keep, s, y, rho_y, alpha);
            let best = (0..1u32 << c)
                .map(|m| {
                    let k: Vec<bool> = (0..c).map(|i| m >> i & 1 == 1).collect();
                    objective(&a, &k, s, y, rho_y, alpha)
                })
                .fold(f64::INFINITY, f64::min);
            assert!(
                got <= best + 1e-9,
                "prox {got} vs optimum {best} (a {a:?}, s {s}, y {y})"
            );
        }
    }

    #[test]
    fn s_gradient_matches_finite_differences() {
        let arch = zoo::lenet5().unwrap();
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let full: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
        let budget = 0.3 * model.cost(&full).unwrap();
        let one = [Budget::absolute("energy", &model, budget)];
        let mut admm = Admm::new(&arch, &one, AdmmConfig::default()).unwrap();
        admm.y = vec![0.3, 1.5, 0.0, 2.0, 0.7, 0.0];
        admm.z = vec![0.25 / budget];
        let live = vec![1.0, 6.0, 12.0, 100.0, 50.0, 10.0];
        let s = vec![1.0, 4.3, 9.7, 80.2, 60.1, 10.0];
        let SLagrangian { g1, g2, .. } = admm.s_lagrangian(&live, &s, &model).unwrap();
        // The free widths 1..5: the gradient g1 + z g2 against finite differences.
        let grad: Vec<f64> = (1..5).map(|u| g1[u] + admm.z[0] * g2[0][u]).collect();
        energy_prune_testing::check_gradient(&s[1..5], &grad, 1e-4, 1e-6, 1e-6, |free| {
            let mut x = s.clone();
            x[1..5].copy_from_slice(free);
            admm.s_lagrangian(&live, &x, &model).unwrap().value
        })
        .unwrap();
        assert_eq!(g1[0], 0.0, "fixed widths get no gradient");
    }

    #[test]
    fn two_budget_s_gradient_matches_finite_differences() {
        use crate::energy::{Count, CountingModel};
        let arch = zoo::lenet5().unwrap();
        let models: Vec<Box<dyn WidthCostModel>> = vec![
            Box::new(SystolicArray::new(&arch, SystolicConfig::default()).unwrap()),
            Box::new(CountingModel::new(&arch, Count::Parameters).unwrap()),
        ];
        let full: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
        let budgets = [
            0.3 * models[0].cost(&full).unwrap(),
            0.2 * models[1].cost(&full).unwrap(),
        ];
        let list: Vec<Budget<&dyn WidthCostModel>> = vec![
            Budget::absolute("energy", models[0].as_ref(), budgets[0]),
            Budget::absolute("parameters", models[1].as_ref(), budgets[1]),
        ];
        let mut admm = Admm::new(&arch, &list, AdmmConfig::default()).unwrap();
        admm.y = vec![0.3, 1.5, 0.0, 2.0, 0.7, 0.0];
        admm.z = vec![0.25 / budgets[0], 0.5 / budgets[1]];
        let live = vec![1.0, 6.0, 12.0, 100.0, 50.0, 10.0];
        let s = vec![1.0, 4.3, 9.7, 80.2, 60.1, 10.0];
        let SLagrangian { g1, g2, .. } =
            admm.s_lagrangian_with(&live, &s, list.as_slice()).unwrap();
        assert_eq!(g2.len(), 2);
        let grad: Vec<f64> = (1..5)
            .map(|u| g1[u] + admm.z[0] * g2[0][u] + admm.z[1] * g2[1][u])
            .collect();
        energy_prune_testing::check_gradient(&s[1..5], &grad, 1e-4, 1e-6, 1e-6, |free| {
            let mut x = s.clone();
            x[1..5].copy_from_slice(free);
            admm.s_lagrangian_with(&live, &x, list.as_slice())
                .unwrap()
                .value
        })
        .unwrap();
    }

    /// One budget given as a fraction or as the same absolute value runs the same
    /// iterations; a solver refuses another number of budgets in `step`, and an
    /// empty or duplicated list at construction.
    #[test]
    fn one_budget_as_fraction_or_absolute_is_the_same_iteration() {
        let arch = zoo::lenet5().unwrap();
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let full: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
        let budget = 0.3 * model.cost(&full).unwrap();
        let abs = [Budget::absolute("energy", model.clone(), budget)];
        let frac = [Budget::fraction("energy", model.clone(), 0.3)];
        let mut a = Admm::new(&arch, &abs, AdmmConfig::default()).unwrap();
        let mut b = Admm::new(&arch, &frac, AdmmConfig::default()).unwrap();
        assert_eq!(a.budgets(), b.budgets());
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let mut w: Vec<Vec<f32>> = arch
            .layers()
            .iter()
            .map(|l| {
                (0..l.weight_count())
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect()
            })
            .collect();
        let d: Vec<Vec<f32>> = w.iter().map(|l| vec![1.0; l.len()]).collect();
        let mut w2 = w.clone();
        for _ in 0..40 {
            let sa = a.step(&mut w, &d, 0.01, &abs).unwrap();
            let sb = b.step(&mut w2, &d, 0.01, &frac).unwrap();
            assert_eq!(sa, sb);
            assert_eq!(sa.costs, vec![sa.cost]);
            assert_eq!(sa.duals.len(), 1);
        }
        assert_eq!(w, w2);
        let two = [
            Budget::absolute("a", model.clone(), budget),
            Budget::absolute("b", model.clone(), budget),
        ];
        assert!(a.step(&mut w, &d, 0.01, &two).is_err());
        let none: [Budget<SystolicArray>; 0] = [];
        assert!(Admm::new(&arch, &none, AdmmConfig::default()).is_err());
        let same = [
            Budget::absolute("a", model.clone(), budget),
            Budget::absolute("a", model.clone(), budget),
        ];
        let e = Admm::new(&arch, &same, AdmmConfig::default()).unwrap_err();
        assert!(e.to_string().contains("distinct"), "{e}");
        let bad = [Budget::fraction("energy", model, 1.5)];
        assert!(Admm::new(&arch, &bad, AdmmConfig::default()).is_err());
    }

    #[test]
    fn prox_respects_min_channels_and_rounding() {
        let a = [0.0, 0.0, 5.0, 0.0, 0.0, 0.0];
        let mut y = 0.0;
        let keep = prox_keep(&a, 1.0, &mut y, 1.0, 0.1, 2, Some(4));
        assert_eq!(keep.iter().filter(|k| **k).count(), 4);
        assert!(keep[2]);
    }

    /// Two budgets (systolic energy and parameters) at random fractions: ADMM on
    /// random weights ends with live widths that meet both, and each budget is the
    /// one that drives the widths in some cases.
    #[test]
    fn admm_meets_two_random_budgets_on_random_weights() {
        use crate::energy::{Count, CountingModel};
        let arch = zoo::lenet5().unwrap();
        let models: Vec<Box<dyn WidthCostModel>> = vec![
            Box::new(SystolicArray::new(&arch, SystolicConfig::default()).unwrap()),
            Box::new(CountingModel::new(&arch, Count::Parameters).unwrap()),
        ];
        let full: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
        let mut rng = ChaCha12Rng::seed_from_u64(11);
        let mut tighter = [false; 2];
        for case in 0..12 {
            let fractions = [rng.random_range(0.2..0.9), rng.random_range(0.05..1.0)];
            let budgets: Vec<f64> = (0..2)
                .map(|k| fractions[k] * models[k].cost(&full).unwrap())
                .collect();
            let mut weights: Vec<Vec<f32>> = arch
                .layers()
                .iter()
                .map(|l| {
                    (0..l.weight_count())
                        .map(|_| rng.random_range(-1.0f32..1.0))
                        .collect()
                })
                .collect();
            let precond: Vec<Vec<f32>> = weights.iter().map(|w| vec![1e-3; w.len()]).collect();
            let cfg = AdmmConfig {
                eta_s: 2.0,
                ..AdmmConfig::default()
            };
            let list: Vec<Budget<&dyn WidthCostModel>> = (0..2)
                .map(|k| Budget::absolute(format!("b{k}"), models[k].as_ref(), budgets[k]))
                .collect();
            let mut admm = Admm::new(&arch, &list, cfg).unwrap();
            let st = (0..2000)
                .map(|_| admm.step(&mut weights, &precond, 1e-3, &list).unwrap())
                .find(|st| st.budget_met)
                .unwrap_or_else(|| panic!("case {case} {fractions:?}: budgets not reached"));
            let live: Vec<f64> = st.live.iter().map(|v| *v as f64).collect();
            let mut ratio = [0.0; 2];
            for k in 0..2 {
                let c = models[k].cost(&live).unwrap();
                assert!(
                    c <= budgets[k],
                    "case {case} budget {k}: {c} > {}",
                    budgets[k]
                );
                assert_eq!(c, st.costs[k]);
                ratio[k] = c / budgets[k];
            }
            // ADMM stops soon after the last budget is met: the tighter budget is
            // mostly used; across cases each budget is the tighter one.
            let tight = usize::from(ratio[1] > ratio[0]);
            assert!(ratio[tight] >= 0.6, "case {case}: {ratio:?}");
            tighter[tight] = true;
        }
        assert_eq!(
            tighter,
            [true, true],
            "each budget drives the widths in some case"
        );
    }

    #[test]
    fn admm_on_random_weights_reaches_the_budget_and_errors_when_infeasible() {
        let arch = zoo::lenet5().unwrap();
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let full: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
        let dense = model.cost(&full).unwrap();
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        let mut weights: Vec<Vec<f32>> = arch
            .layers()
            .iter()
            .map(|l| {
                (0..l.weight_count())
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect()
            })
            .collect();
        // Adam-sized preconditioner (sqrt(v) ~ gradient magnitudes).
        let precond: Vec<Vec<f32>> = weights.iter().map(|w| vec![1e-3; w.len()]).collect();
        let budget = 0.5 * dense;
        let one = [Budget::absolute("energy", &model, budget)];
        let mut admm = Admm::new(
            &arch,
            &one,
            AdmmConfig {
                eta_s: 2.0,
                ..AdmmConfig::default()
            },
        )
        .unwrap();
        let mut met = None;
        for it in 0..500 {
            let st = admm.step(&mut weights, &precond, 1e-3, &one).unwrap();
            assert!(
                st.live
                    .iter()
                    .zip(arch.widths())
                    .all(|(n, w)| *n >= 1 && *n <= w.channels)
            );
            if st.budget_met {
                met = Some((it, st));
                break;
            }
        }
        let (_, st) = met.expect("ADMM reaches the budget");
        assert!(st.cost <= budget);
        let live: Vec<f64> = st.live.iter().map(|v| *v as f64).collect();
        assert!(
            model.cost(&live).unwrap() <= budget,
            "reported success means the live widths meet the budget"
        );
        // The live widths are what the weights say.
        let net_plan: Vec<usize> = {
            let conv2 = &weights[1];
            vec![
                (0..6)
                    .filter(|c| {
                        (0..16).any(|o| {
                            conv2[(o * 6 + c) * 25..(o * 6 + c + 1) * 25]
                                .iter()
                                .any(|v| *v != 0.0)
                        })
                    })
                    .count(),
            ]
        };
        assert_eq!(net_plan[0], st.live[1]);
        let floor = model
            .cost(
                &arch
                    .widths()
                    .iter()
                    .map(|w| if w.fixed { w.channels as f64 } else { 1.0 })
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        assert!(matches!(
            Admm::new(
                &arch,
                &[Budget::absolute("energy", &model, 0.5 * floor)],
                AdmmConfig::default()
            ),
            Err(Error::InfeasibleBudget { .. })
        ));
        assert!(
            Admm::new(
                &arch,
                &one,
                AdmmConfig {
                    min_channels: 0,
                    ..AdmmConfig::default()
                }
            )
            .is_err()
        );
    }
}
