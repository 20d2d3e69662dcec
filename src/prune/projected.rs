//! Energy-constrained training by projected SGD (ICLR 2019) and the magnitude
//! pruning baseline.
//!
//! [`train_projected`] runs two phases on any [`Trainable`] network:
//! 1. **Projected SGD** for `epochs` epochs: SGD with momentum, and every
//!    `project_every` batches a [weighted sparse projection](super::project) onto
//!    the current budget. The budget decays exponentially from the network's
//!    energy at the start to the target ([`BudgetSchedule`]), reaching it after
//!    `reach_fraction` of the phase, and a last projection onto the target ends the
//!    phase.
//! 2. **Fine-tuning** for `finetune_epochs` epochs with the support fixed (pruned
//!    weights stay zero), which cannot change the energy.
//!
//! Optionally the loss is `w * MSE(logits, dense teacher logits) + (1 - w) * CE`
//! (knowledge distillation from the network as it was before pruning). The exact
//! energy of the result is verified against the budget in the report.
//!
//! [`train_magnitude`] is the baseline: global magnitude pruning to the same exact
//! energy (bisection on the number of weights kept), then the same number of
//! fine-tuning epochs with the same loss.

use std::time::Instant;

use rand::{SeedableRng, rngs::StdRng};

use super::observer::{EpochEvent, Observer};
use super::projection::{ProjectionWorkspace, project_with_workspace};
use super::schedule::BudgetSchedule;
use crate::energy::{EnergyReport, NetworkState, WeightEnergyModel};
use crate::error::{Error, Result};
use crate::network::Trainable;
use crate::nn::mnist::Dataset;
use crate::nn::optim::Sgd;
use crate::nn::{TrainConfig, cosine_lr, evaluate, predict_all, train_epoch};

/// Why a training driver stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// All configured epochs ran.
    EpochLimit,
}

/// Hyper-parameters of [`train_projected`] and [`train_magnitude`].
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `epochs` | 10 | >= 1 | projected-SGD epochs |
/// | `finetune_epochs` | 4 | >= 0 | fixed-support epochs after the last projection |
/// | `batch_size` | 64 | >= 1 | mini-batch size |
/// | `lr` | 0.01 | > 0 | SGD learning rate (cosine-decayed over each phase) |
/// | `momentum` | 0.9 | [0, 1) | SGD momentum |
/// | `weight_decay` | 0 | >= 0 | L2 on weights |
/// | `project_every` | 50 | >= 1 | batches between projections |
/// | `reach_fraction` | 0.6 | (0, 1] | part of the projected phase after which the budget is at target |
/// | `distill_weight` | Some(0.5) | [0, 1] | weight of distillation from the dense teacher |
/// | `regrow` | false | bool | let pruned weights regrow between projections (else they stay zero) |
/// | `seed` | 0 | any | data-order seed |
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedTraining {
    /// Projected-SGD epochs.
    pub epochs: usize,
    /// Fixed-support fine-tuning epochs.
    pub finetune_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Batches between projections.
    pub project_every: usize,
    /// Fraction of the projected phase after which the budget is at its target.
    pub reach_fraction: f64,
    /// Distillation weight (None: plain cross-entropy).
    pub distill_weight: Option<f32>,
    /// Let weights zeroed by a projection regrow before the next projection.
    pub regrow: bool,
    /// Seed of the data order.
    pub seed: u64,
}

impl Default for ProjectedTraining {
    fn default() -> Self {
        Self {
            epochs: 10,
            finetune_epochs: 4,
            batch_size: 64,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
            project_every: 50,
            reach_fraction: 0.6,
            distill_weight: Some(0.5),
            regrow: false,
            seed: 0,
        }
    }
}

impl ProjectedTraining {
    /// Check every field against its range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::param("epochs", self.epochs, "must be >= 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::param("batch_size", self.batch_size, "must be >= 1"));
        }
        if self.project_every == 0 {
            return Err(Error::param(
                "project_every",
                self.project_every,
                "must be >= 1",
            ));
        }
        if !(self.reach_fraction > 0.0 && self.reach_fraction <= 1.0) {
            return Err(Error::param(
                "reach_fraction",
                self.reach_fraction,
                "must be in (0, 1]",
            ));
        }
        if let Some(w) = self.distill_weight
            && !(0.0..=1.0).contains(&w)
        {
            return Err(Error::param("distill_weight", w, "must be in [0, 1]"));
        }
        Sgd::new(self.lr, self.momentum, self.weight_decay).map(|_| ())
    }
}

/// The result of a pruning run.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneReport {
    /// Why the run stopped.
    pub termination: Termination,
    /// The target budget.
    pub budget: f64,
    /// Exact energy of the final weights, per layer.
    pub energy: EnergyReport,
    /// Relaxed energy of the final weights.
    pub relaxed_energy: f64,
    /// Whether the exact energy is within the budget (verified, not assumed).
    pub budget_met: bool,
    /// Final test accuracy, if a test set was given.
    pub test_accuracy: Option<f64>,
    /// Epochs run (all phases).
    pub epochs: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// One event per epoch.
    pub history: Vec<EpochEvent>,
}

/// Copy every layer's weights from the network into `state` (reusing its buffers).
fn read_into<N: Trainable + ?Sized>(net: &N, state: &mut NetworkState) -> Result<()> {
    for (l, w) in state.weights.iter_mut().enumerate() {
        net.read_weights(l, w)?;
    }
    Ok(())
}

/// Zero the weights of `net` wherever `support` is zero (`buf` is scratch).
fn apply_support<N: Trainable + ?Sized>(
    net: &mut N,
    support: &NetworkState,
    buf: &mut NetworkState,
) -> Result<()> {
    for (l, (w, s)) in buf.weights.iter_mut().zip(&support.weights).enumerate() {
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

struct Runner<'a, N: ?Sized, M: ?Sized> {
    net: &'a mut N,
    model: &'a M,
    train: &'a Dataset,
    test: Option<&'a Dataset>,
    cfg: &'a ProjectedTraining,
    teacher: Option<Vec<f32>>,
    input_energy: Vec<f64>,
    rng: StdRng,
    opt: Sgd,
    history: Vec<EpochEvent>,
    total_epochs: usize,
}

impl<N: Trainable + ?Sized, M: WeightEnergyModel + ?Sized> Runner<'_, N, M> {
    fn epoch_event(
        &mut self,
        phase: &'static str,
        epoch: usize,
        st: crate::nn::EpochStats,
        budget: f64,
    ) -> Result<EpochEvent> {
        let state = NetworkState::from_network(&*self.net)?;
        let exact = self.model.energy(&state)?;
        let nz = state.nonzeros();
        let relaxed = self.model.relaxed_energy(&nz, &self.input_energy)?.total;
        let test_accuracy = match self.test {
            Some(t) => Some(evaluate(self.net, t, 1000)?),
            None => None,
        };
        Ok(EpochEvent {
            phase,
            epoch,
            epochs: self.total_epochs,
            loss: st.loss,
            train_accuracy: st.train_accuracy,
            test_accuracy,
            energy: exact.total,
            relaxed_energy: relaxed,
            budget,
            nonzero: nz.iter().sum(),
            images_per_second: st.images as f64 / st.seconds.max(1e-9),
        })
    }

    /// One epoch; the learning rate follows a cosine over the current phase
    /// (`phase_epoch` of `phase_epochs`).
    fn run_epoch(
        &mut self,
        phase_epoch: usize,
        phase_epochs: usize,
        hook: &mut dyn FnMut(&mut N, usize) -> Result<()>,
    ) -> Result<crate::nn::EpochStats> {
        self.opt.lr = cosine_lr(self.cfg.lr, phase_epoch, phase_epochs);
        let tc = TrainConfig {
            batch_size: self.cfg.batch_size,
            distill: self.teacher.as_deref().zip(self.cfg.distill_weight),
        };
        train_epoch(
            self.net,
            &mut self.opt,
            self.train,
            &tc,
            &mut self.rng,
            hook,
        )
    }

    /// Fine-tune with the current support fixed for `epochs` epochs, starting at `first_epoch`.
    fn finetune(
        &mut self,
        phase: &'static str,
        first_epoch: usize,
        epochs: usize,
        budget: f64,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let support = NetworkState::from_network(&*self.net)?;
        let mut buf = support.clone();
        self.opt.reset();
        for e in 0..epochs {
            let epoch = first_epoch + e;
            let mut hook = |net: &mut N, _step: usize| apply_support(net, &support, &mut buf);
            let st = self.run_epoch(e, epochs, &mut hook)?;
            let ev = self.epoch_event(phase, epoch + 1, st, budget)?;
            obs.on_epoch(&ev);
            self.history.push(ev);
        }
        Ok(())
    }

    fn report(self, budget: f64, start: Instant) -> Result<PruneReport> {
        let state = NetworkState::from_network(&*self.net)?;
        let energy = self.model.energy(&state)?;
        let relaxed_energy = self
            .model
            .relaxed_energy(&state.nonzeros(), &self.input_energy)?
            .total;
        let test_accuracy = self.history.last().and_then(|e| e.test_accuracy);
        Ok(PruneReport {
            termination: Termination::EpochLimit,
            budget,
            budget_met: energy.total <= budget,
            energy,
            relaxed_energy,
            test_accuracy,
            epochs: self.total_epochs,
            seconds: start.elapsed().as_secs_f64(),
            history: self.history,
        })
    }
}

fn runner<'a, N: Trainable + ?Sized, M: WeightEnergyModel + ?Sized>(
    net: &'a mut N,
    model: &'a M,
    budget: f64,
    train: &'a Dataset,
    test: Option<&'a Dataset>,
    cfg: &'a ProjectedTraining,
    total_epochs: usize,
) -> Result<Runner<'a, N, M>> {
    cfg.validate()?;
    if !(budget.is_finite() && budget > 0.0) {
        return Err(Error::param("budget", budget, "must be finite and > 0"));
    }
    let state = NetworkState::from_network(&*net)?;
    state.check(model.architecture())?;
    let input_energy = model.input_energy(&state.input_masks)?;
    let floor: f64 = input_energy.iter().sum();
    if budget < floor {
        return Err(Error::InfeasibleBudget {
            budget,
            min_achievable: floor,
        });
    }
    let teacher = match cfg.distill_weight {
        Some(w) if w > 0.0 => Some(predict_all(net, train, 1000)?),
        _ => None,
    };
    Ok(Runner {
        net,
        model,
        train,
        test,
        cfg,
        teacher,
        input_energy,
        rng: StdRng::seed_from_u64(cfg.seed),
        opt: Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay)?,
        history: Vec::new(),
        total_epochs,
    })
}

/// Train `net` so that its energy under `model` ends at most `budget` (absolute, in
/// the model's units), by projected SGD then fixed-support fine-tuning. See the
/// [module docs](self).
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad configuration, [`Error::InfeasibleBudget`]
/// if the budget is below the all-zero energy, and errors of the network, model or data.
pub fn train_projected<N: Trainable + ?Sized, M: WeightEnergyModel + ?Sized>(
    net: &mut N,
    model: &M,
    budget: f64,
    train: &Dataset,
    test: Option<&Dataset>,
    cfg: &ProjectedTraining,
    obs: &mut dyn Observer,
) -> Result<PruneReport> {
    let start = Instant::now();
    let total = cfg.epochs + cfg.finetune_epochs;
    let mut r = runner(net, model, budget, train, test, cfg, total)?;
    let mut state = NetworkState::from_network(&*r.net)?;
    let e0 = model
        .relaxed_energy(&state.nonzeros(), &r.input_energy)?
        .total;
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let phase_steps = cfg.epochs * steps_per_epoch;
    let reach =
        ((phase_steps as f64 * cfg.reach_fraction) as usize).min(phase_steps.saturating_sub(1));
    let schedule = BudgetSchedule::new(e0, budget, reach)?;
    let mut ws = ProjectionWorkspace::new();
    let mut current_budget = schedule.at(0);
    let mut support: Option<NetworkState> = None;
    let mut buf = state.clone();
    for epoch in 0..cfg.epochs {
        let mut hook = |net: &mut N, step: usize| -> Result<()> {
            let global = epoch * steps_per_epoch + step + 1;
            let last = global == phase_steps;
            if !global.is_multiple_of(cfg.project_every) && !last {
                return match &support {
                    Some(s) if !cfg.regrow => apply_support(net, s, &mut buf),
                    _ => Ok(()),
                };
            }
            let b = if last { budget } else { schedule.at(global) };
            read_into(net, &mut state)?;
            let out = project_with_workspace(model, &mut state, b, &mut ws)?;
            state.write_weights_to(net)?;
            current_budget = b;
            obs.on_projection(global, b, out.relaxed_energy);
            match &mut support {
                Some(s) => s.weights.clone_from(&state.weights),
                None => support = Some(state.clone()),
            }
            Ok(())
        };
        let st = r.run_epoch(epoch, cfg.epochs, &mut hook)?;
        let ev = r.epoch_event("projected", epoch + 1, st, current_budget)?;
        obs.on_epoch(&ev);
        r.history.push(ev);
    }
    r.finetune("finetune", cfg.epochs, cfg.finetune_epochs, budget, obs)?;
    r.report(budget, start)
}

/// Global magnitude pruning of `state` to exact energy `<= budget`: keep the `k`
/// largest-magnitude weights (ties by position) for the largest `k` whose exact
/// energy fits, found by bisection (exact energy grows with the support).
///
/// # Errors
/// [`Error::InfeasibleBudget`] if even the all-zero state exceeds the budget;
/// [`Error::NonFinite`] for NaN weights; model errors.
pub fn magnitude_prune<M: WeightEnergyModel + ?Sized>(
    model: &M,
    state: &mut NetworkState,
    budget: f64,
) -> Result<EnergyReport> {
    state.check(model.architecture())?;
    for (l, w) in state.weights.iter().enumerate() {
        crate::error::check_finite(&format!("weights of layer {l}"), w)?;
    }
    let mut order: Vec<(f32, u32, u32)> = state
        .weights
        .iter()
        .enumerate()
        .flat_map(|(l, w)| {
            w.iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(move |(i, v)| (v.abs(), l as u32, i as u32))
        })
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let original = state.weights.clone();
    let keep_top = |k: usize, st: &mut NetworkState| {
        for w in &mut st.weights {
            w.fill(0.0);
        }
        for &(_, l, i) in &order[..k] {
            st.weights[l as usize][i as usize] = original[l as usize][i as usize];
        }
    };
    keep_top(0, state);
    let floor = model.energy(state)?;
    if floor.total > budget {
        state.weights = original;
        return Err(Error::InfeasibleBudget {
            budget,
            min_achievable: floor.total,
        });
    }
    let (mut lo, mut hi) = (0usize, order.len()); // energy(lo) <= budget
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        keep_top(mid, state);
        if model.energy(state)?.total <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    keep_top(lo, state);
    model.energy(state)
}

/// The baseline: [`magnitude_prune`] the network to `budget`, then fine-tune with
/// the support fixed for `cfg.epochs + cfg.finetune_epochs` epochs (the same number
/// of epochs and the same loss as [`train_projected`]).
///
/// # Errors
/// As [`train_projected`].
pub fn train_magnitude<N: Trainable + ?Sized, M: WeightEnergyModel + ?Sized>(
    net: &mut N,
    model: &M,
    budget: f64,
    train: &Dataset,
    test: Option<&Dataset>,
    cfg: &ProjectedTraining,
    obs: &mut dyn Observer,
) -> Result<PruneReport> {
    let start = Instant::now();
    let total = cfg.epochs + cfg.finetune_epochs;
    let mut r = runner(net, model, budget, train, test, cfg, total)?;
    let mut state = NetworkState::from_network(&*r.net)?;
    magnitude_prune(model, &mut state, budget)?;
    state.write_weights_to(r.net)?;
    r.finetune("magnitude", 0, total, budget, obs)?;
    r.report(budget, start)
}
