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
//! 2. Optionally, **input-mask rounds** ([`MaskRounds`]): layers that carry a
//!    learnable input mask alternate a mask phase (Adam on the masks only, clamped
//!    to `[0, 1]`, with a small L1 pull towards zero, keeping the top fraction `q` of
//!    each mask every `k` steps; `q` starts at 0.9 and falls by 0.1 per round; at the
//!    end the kept entries become 1 and the others 0)
//!    with a weight phase (projected SGD at the target budget; the masked inputs
//!    lower the weight-independent energy, so weights may regrow). Rounds continue
//!    while validation accuracy improves; a round that lowers it is undone. A
//!    budget below the unmasked all-zero energy is reachable this way: until the
//!    masks bring that energy under the budget, weights are projected onto it plus
//!    30 % of the room the budget leaves above the all-zero-mask floor, and rounds
//!    go on regardless of accuracy (an error if the rounds run out first).
//! 3. **Fine-tuning** for `finetune_epochs` epochs with the support fixed (pruned
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
use super::projection::{ProjectionWorkspace, project_top_k, project_with_workspace};
use super::schedule::BudgetSchedule;
use crate::energy::{EnergyReport, NetworkState, WeightEnergyModel};
use crate::error::{Error, Result, ensure};
use crate::network::Trainable;
use crate::nn::mnist::Dataset;
use crate::nn::optim::{InputMaskAdam, Sgd};
use crate::nn::{TrainConfig, cosine_lr, evaluate, predict_all, train_epoch};

/// The data of a training run.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    /// Training set.
    pub train: &'a Dataset,
    /// Validation set: decides whether input-mask rounds continue.
    pub validation: Option<&'a Dataset>,
    /// Test set: reported after every epoch.
    pub test: Option<&'a Dataset>,
}

/// Input-mask rounds of [`train_projected`] (ICLR 2019, section 4).
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `rounds` | 4 | >= 1 | maximum number of mask/weight rounds |
/// | `mask_epochs` | 1 | >= 1 | epochs of the mask phase per round |
/// | `weight_epochs` | 1 | >= 1 | epochs of projected SGD per round |
/// | `lr` | 0.01 | > 0 | Adam learning rate of the masks |
/// | `keep_start` | 0.9 | (0, 1] | fraction of each mask kept in round 1 |
/// | `keep_step` | 0.1 | [0, 1) | decrease of that fraction per round |
/// | `project_every` | 50 | >= 1 | mask-phase steps between top-fraction projections |
/// | `l1` | 1e-4 | >= 0 | L1 pull of the masks towards zero during the mask phase |
#[derive(Debug, Clone, PartialEq)]
pub struct MaskRounds {
    /// Maximum rounds.
    pub rounds: usize,
    /// Mask-phase epochs per round.
    pub mask_epochs: usize,
    /// Weight-phase epochs per round.
    pub weight_epochs: usize,
    /// Adam learning rate on the masks.
    pub lr: f32,
    /// Fraction of mask entries kept in the first round.
    pub keep_start: f64,
    /// Decrease of the kept fraction per round.
    pub keep_step: f64,
    /// Steps between top-fraction projections of the masks.
    pub project_every: usize,
    /// L1 coefficient on the masks in the mask phase.
    pub l1: f32,
}

impl Default for MaskRounds {
    fn default() -> Self {
        Self {
            rounds: 4,
            mask_epochs: 1,
            weight_epochs: 1,
            lr: 0.01,
            keep_start: 0.9,
            keep_step: 0.1,
            project_every: 50,
            l1: 1e-4,
        }
    }
}

impl MaskRounds {
    /// Check every field against its range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let counts_ok = self.rounds > 0
            && self.mask_epochs > 0
            && self.weight_epochs > 0
            && self.project_every > 0;
        ensure(
            counts_ok,
            "mask rounds",
            format!("{self:?}"),
            "rounds, epochs and project_every must be >= 1",
        )?;
        ensure(
            self.keep_start > 0.0 && self.keep_start <= 1.0,
            "keep_start",
            self.keep_start,
            "must be in (0, 1]",
        )?;
        ensure(
            (0.0..1.0).contains(&self.keep_step),
            "keep_step",
            self.keep_step,
            "must be in [0, 1)",
        )?;
        InputMaskAdam::new(self.lr, self.l1).map(|_| ())
    }
}

/// Why a training driver stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// All configured epochs ran.
    EpochLimit,
    /// The cost constraint was met (ADMM) during this epoch (from 1).
    BudgetMet {
        /// The epoch in which the live widths first met the budget.
        epoch: usize,
    },
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
/// | `input_masks` | None | [`MaskRounds`] | input-mask rounds for layers that carry masks |
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
    /// Input-mask rounds (None: masks, if any, stay as they are).
    pub input_masks: Option<MaskRounds>,
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
            input_masks: None,
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
        ensure(self.epochs > 0, "epochs", self.epochs, "must be >= 1")?;
        ensure(
            self.batch_size > 0,
            "batch_size",
            self.batch_size,
            "must be >= 1",
        )?;
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
        )?;
        if let Some(w) = self.distill_weight {
            ensure(
                (0.0..=1.0).contains(&w),
                "distill_weight",
                w,
                "must be in [0, 1]",
            )?;
        }
        if let Some(m) = &self.input_masks {
            m.validate()?;
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
    data: Data<'a>,
    cfg: &'a ProjectedTraining,
    budget: f64,
    teacher: Option<Vec<f32>>,
    rng: StdRng,
    opt: Sgd,
    history: Vec<EpochEvent>,
    total_epochs: usize,
    epoch: usize,
    ws: ProjectionWorkspace,
    /// The lowest weight-independent energy reachable (all-zero input masks).
    min_floor: f64,
}

/// Copies of every parameter tensor (weights, biases, masks), in visit order.
fn snapshot<N: Trainable + ?Sized>(net: &mut N) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    net.visit_params(&mut |_, p, _| out.push(p.to_vec()));
    out
}

fn restore<N: Trainable + ?Sized>(net: &mut N, snap: &[Vec<f32>]) {
    let mut i = 0;
    net.visit_params(&mut |_, p, _| {
        p.copy_from_slice(&snap[i]);
        i += 1;
    });
}

impl<N: Trainable + ?Sized, M: WeightEnergyModel + ?Sized> Runner<'_, N, M> {
    fn emit(
        &mut self,
        phase: &'static str,
        st: crate::nn::EpochStats,
        budget: f64,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let state = NetworkState::from_network(&*self.net)?;
        let exact = self.model.energy(&state)?;
        let nz = state.nonzeros();
        let input = self.model.input_energy(&state.input_masks)?;
        let relaxed = self.model.relaxed_energy(&nz, &input)?.total;
        let test_accuracy = match self.data.test {
            Some(t) => Some(evaluate(self.net, t, 1000)?),
            None => None,
        };
        self.epoch += 1;
        let ev = EpochEvent {
            phase,
            epoch: self.epoch,
            epochs: self.total_epochs,
            loss: st.loss,
            train_accuracy: st.train_accuracy,
            test_accuracy,
            energy: exact.total,
            relaxed_energy: relaxed,
            budget,
            nonzero: nz.iter().sum(),
            images_per_second: st.images as f64 / st.seconds.max(1e-9),
        };
        obs.on_epoch(&ev);
        self.history.push(ev);
        Ok(())
    }

    /// One SGD epoch; the learning rate follows a cosine over the current phase
    /// (`phase_epoch` of `phase_epochs`).
    fn sgd_epoch(
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
            self.data.train,
            &tc,
            &mut self.rng,
            hook,
        )
    }

    /// The energy the weights are projected onto now: the budget, or, while the
    /// input masks still keep the weight-independent energy above it, that energy
    /// plus 30 % of the room the budget leaves above the all-zero-mask floor.
    fn weight_target(&self) -> Result<f64> {
        let state = NetworkState::from_network(&*self.net)?;
        let floor: f64 = self.model.input_energy(&state.input_masks)?.iter().sum();
        Ok(if floor <= self.budget {
            self.budget
        } else {
            floor + 0.3 * (self.budget - self.min_floor)
        })
    }

    /// Projected SGD for `epochs` epochs: a projection onto `schedule` every
    /// `project_every` steps and onto its target at the last step.
    fn projected(
        &mut self,
        phase: &'static str,
        epochs: usize,
        schedule: &BudgetSchedule,
        regrow: bool,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let (model, budget, every) = (self.model, schedule.target(), self.cfg.project_every);
        let steps_per_epoch = self.data.train.len().div_ceil(self.cfg.batch_size);
        let phase_steps = epochs * steps_per_epoch;
        let mut state = NetworkState::from_network(&*self.net)?;
        let mut buf = state.clone();
        let mut support: Option<NetworkState> = None;
        let mut current = schedule.at(0);
        let mut ws = std::mem::take(&mut self.ws);
        for epoch in 0..epochs {
            let mut hook = |net: &mut N, step: usize| -> Result<()> {
                let global = epoch * steps_per_epoch + step + 1;
                let last = global == phase_steps;
                if !global.is_multiple_of(every) && !last {
                    return match &support {
                        Some(s) if !regrow => apply_support(net, s, &mut buf),
                        _ => Ok(()),
                    };
                }
                let b = if last { budget } else { schedule.at(global) };
                read_into(net, &mut state)?;
                let out = project_with_workspace(model, &mut state, b, &mut ws)?;
                state.write_weights_to(net)?;
                current = b;
                obs.on_projection(global, b, out.relaxed_energy);
                match &mut support {
                    Some(s) => s.weights.clone_from(&state.weights),
                    None => support = Some(state.clone()),
                }
                Ok(())
            };
            let st = self.sgd_epoch(epoch, epochs, &mut hook)?;
            self.emit(phase, st, current, obs)?;
        }
        self.ws = ws;
        Ok(())
    }

    /// Input-mask rounds; see the module docs. Returns the rounds kept.
    fn mask_rounds(&mut self, mr: &MaskRounds, obs: &mut dyn Observer) -> Result<usize> {
        let val = self.data.validation.ok_or_else(|| {
            Error::param(
                "validation",
                "None",
                "input-mask rounds need a validation set (Data::validation)",
            )
        })?;
        let mut best = evaluate(self.net, val, 1000)?;
        let mut snap = snapshot(self.net);
        let mut kept_rounds = 0;
        for round in 0..mr.rounds {
            let feasible_before = self.weight_target()? == self.budget;
            let q = mr.keep_start - round as f64 * mr.keep_step;
            if q <= 0.0 {
                break;
            }
            // Mask phase: Adam on the masks only, top-q projection every k steps.
            let mut adam = InputMaskAdam::new(mr.lr, mr.l1)?;
            let mut buf = Vec::new();
            let every = mr.project_every;
            for _ in 0..mr.mask_epochs {
                let tc = TrainConfig {
                    batch_size: self.cfg.batch_size,
                    distill: self.teacher.as_deref().zip(self.cfg.distill_weight),
                };
                let mut hook = |net: &mut N, step: usize| -> Result<()> {
                    if (step + 1).is_multiple_of(every) {
                        for_each_mask(net, &mut buf, |m| {
                            project_top_k(m, (q * m.len() as f64).ceil() as usize)
                        })?;
                    }
                    Ok(())
                };
                let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ (round as u64 + 1) << 32);
                let st = train_epoch(
                    self.net,
                    &mut adam,
                    self.data.train,
                    &tc,
                    &mut rng,
                    &mut hook,
                )?;
                for_each_mask(self.net, &mut buf, |m| {
                    project_top_k(m, (q * m.len() as f64).ceil() as usize)?;
                    m.iter_mut()
                        .for_each(|v| *v = if *v >= 0.5 { 1.0 } else { 0.0 });
                    Ok(())
                })?;
                self.emit("mask", st, self.budget, obs)?;
            }
            // Weight phase: projected SGD at the target; weights may regrow into the
            // energy the masks freed.
            self.opt.reset();
            let target = self.weight_target()?;
            let fixed = BudgetSchedule::new(target, target, 0)?;
            self.projected("mask-sgd", mr.weight_epochs, &fixed, true, obs)?;
            let acc = evaluate(self.net, val, 1000)?;
            // Rounds go on while the budget is not yet reachable, then while
            // validation accuracy improves; a round that lowers it is undone.
            if feasible_before && acc < best {
                restore(self.net, &snap);
                break;
            }
            best = acc;
            snap = snapshot(self.net);
            kept_rounds += 1;
        }
        let target = self.weight_target()?;
        if target > self.budget {
            let state = NetworkState::from_network(&*self.net)?;
            return Err(Error::InfeasibleBudget {
                budget: self.budget,
                min_achievable: self.model.input_energy(&state.input_masks)?.iter().sum(),
            });
        }
        Ok(kept_rounds)
    }

    /// Fine-tune with the current support (and masks) fixed for `epochs` epochs.
    fn finetune(
        &mut self,
        phase: &'static str,
        epochs: usize,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let support = NetworkState::from_network(&*self.net)?;
        let mut buf = support.clone();
        self.opt.reset();
        for e in 0..epochs {
            let mut hook = |net: &mut N, _step: usize| apply_support(net, &support, &mut buf);
            let st = self.sgd_epoch(e, epochs, &mut hook)?;
            self.emit(phase, st, self.budget, obs)?;
        }
        Ok(())
    }

    fn report(self, start: Instant) -> Result<PruneReport> {
        let state = NetworkState::from_network(&*self.net)?;
        let energy = self.model.energy(&state)?;
        let input = self.model.input_energy(&state.input_masks)?;
        let relaxed_energy = self.model.relaxed_energy(&state.nonzeros(), &input)?.total;
        let test_accuracy = self.history.last().and_then(|e| e.test_accuracy);
        Ok(PruneReport {
            termination: Termination::EpochLimit,
            budget: self.budget,
            budget_met: energy.total <= self.budget,
            energy,
            relaxed_energy,
            test_accuracy,
            epochs: self.epoch,
            seconds: start.elapsed().as_secs_f64(),
            history: self.history,
        })
    }
}

/// Apply `f` to every input mask of the network (read, modify, write back).
fn for_each_mask<N: Trainable + ?Sized>(
    net: &mut N,
    buf: &mut Vec<f32>,
    mut f: impl FnMut(&mut [f32]) -> Result<()>,
) -> Result<()> {
    let layers: Vec<usize> = net
        .architecture()
        .layers()
        .iter()
        .map(|l| l.in_features())
        .collect();
    for (l, n) in layers.into_iter().enumerate() {
        buf.resize(n, 0.0);
        if net.read_input_mask(l, buf)? {
            f(buf)?;
            net.write_input_mask(l, buf)?;
        }
    }
    Ok(())
}

fn runner<'a, N: Trainable + ?Sized, M: WeightEnergyModel + ?Sized>(
    net: &'a mut N,
    model: &'a M,
    budget: f64,
    data: Data<'a>,
    cfg: &'a ProjectedTraining,
    total_epochs: usize,
) -> Result<Runner<'a, N, M>> {
    cfg.validate()?;
    if !(budget.is_finite() && budget > 0.0) {
        return Err(Error::param("budget", budget, "must be finite and > 0"));
    }
    let state = NetworkState::from_network(&*net)?;
    state.check(model.architecture())?;
    // With input-mask rounds the reachable floor is that of all-zero masks.
    let mut floor_state = state.clone();
    if cfg.input_masks.is_some() {
        for m in floor_state.input_masks.iter_mut().flatten() {
            m.fill(0.0);
        }
    }
    let floor: f64 = model.input_energy(&floor_state.input_masks)?.iter().sum();
    if budget < floor {
        return Err(Error::InfeasibleBudget {
            budget,
            min_achievable: floor,
        });
    }
    let teacher = match cfg.distill_weight {
        Some(w) if w > 0.0 => Some(predict_all(net, data.train, 1000)?),
        _ => None,
    };
    Ok(Runner {
        net,
        model,
        data,
        cfg,
        budget,
        teacher,
        rng: StdRng::seed_from_u64(cfg.seed),
        opt: Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay)?,
        history: Vec::new(),
        total_epochs,
        epoch: 0,
        ws: ProjectionWorkspace::new(),
        min_floor: floor,
    })
}

/// Train `net` so that its energy under `model` ends at most `budget` (absolute, in
/// the model's units): projected SGD, optional input-mask rounds, then
/// fixed-support fine-tuning. See the [module docs](self).
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad configuration (or input-mask rounds
/// without a validation set), [`Error::InfeasibleBudget`] if the budget is below
/// the all-zero energy, and errors of the network, model or data.
pub fn train_projected<N: Trainable + ?Sized, M: WeightEnergyModel + ?Sized>(
    net: &mut N,
    model: &M,
    budget: f64,
    data: Data<'_>,
    cfg: &ProjectedTraining,
    obs: &mut dyn Observer,
) -> Result<PruneReport> {
    let start = Instant::now();
    let mask_epochs = cfg
        .input_masks
        .as_ref()
        .map_or(0, |m| m.rounds * (m.mask_epochs + m.weight_epochs));
    let total = cfg.epochs + mask_epochs + cfg.finetune_epochs;
    let mut r = runner(net, model, budget, data, cfg, total)?;
    let state = NetworkState::from_network(&*r.net)?;
    let input = model.input_energy(&state.input_masks)?;
    let e0 = model.relaxed_energy(&state.nonzeros(), &input)?.total;
    let steps = cfg.epochs * data.train.len().div_ceil(cfg.batch_size);
    let reach = ((steps as f64 * cfg.reach_fraction) as usize).min(steps.saturating_sub(1));
    let schedule = BudgetSchedule::new(e0, r.weight_target()?, reach)?;
    r.projected("projected", cfg.epochs, &schedule, cfg.regrow, obs)?;
    if let Some(mr) = &cfg.input_masks {
        r.mask_rounds(mr, obs)?;
    }
    r.total_epochs = r.epoch + cfg.finetune_epochs;
    r.finetune("finetune", cfg.finetune_epochs, obs)?;
    r.report(start)
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
    data: Data<'_>,
    cfg: &ProjectedTraining,
    obs: &mut dyn Observer,
) -> Result<PruneReport> {
    let start = Instant::now();
    let total = cfg.epochs + cfg.finetune_epochs;
    let mut r = runner(net, model, budget, data, cfg, total)?;
    let mut state = NetworkState::from_network(&*r.net)?;
    magnitude_prune(model, &mut state, budget)?;
    state.write_weights_to(r.net)?;
    r.finetune("magnitude", total, obs)?;
    r.report(start)
}
