//! The one training driver for every constrained optimizer.
//!
//! [`train_constrained`] owns the epochs, the phases, the teacher, the learning-rate
//! schedule and the observers; the [`ConstrainedOptimizer`] owns the math. A run
//! goes through:
//! 1. **Constrained training** ([`Phase::Constrained`], `epochs` epochs): after
//!    every optimizer update, the solver's step (a projection every k updates on a
//!    budget schedule, an ADMM iteration). A solver that reports its support frozen
//!    (ADMM: the budget is met) ends the phase at the end of that epoch.
//! 2. Optionally, **input-mask rounds** ([`MaskRounds`], ICLR 2019 section 4):
//!    layers that carry a learnable input mask alternate a mask phase (Adam on the
//!    masks only, clamped to `[0, 1]`, with a small L1 pull towards zero, keeping
//!    the top fraction `q` of each mask every `k` steps; `q` starts at `keep_start`
//!    and falls by `keep_step` per round; at the end the kept entries become 1 and
//!    the others 0) with a weight phase (constrained training at the target; the
//!    masked inputs lower the weight-independent energy, so weights may regrow).
//!    Rounds continue while validation accuracy improves; a round that lowers it is
//!    undone. While the masks have not yet brought the weight-independent cost under
//!    the budget, rounds go on regardless of accuracy (an error if they run out
//!    first).
//! 3. **Fine-tuning** ([`Phase::FineTune`], `finetune_epochs` epochs) with the
//!    support frozen, if the budget is met; which cannot change the cost.
//!
//! Every epoch is checked for **divergence** ([`Divergence`]): a non-finite loss,
//! a loss that exploded (a thousand times the previous epoch's), or training
//! accuracy collapsed (to chance after having been well above it, or below a third
//! of the best epoch's; measured on the validation split when one is given, else
//! the epoch's training accuracy). The driver then restores the network
//! as it was after the last good epoch and lowers the learning rate (of the
//! weights and of the masks) for the rest of the run; when that happened
//! `max_restarts` times already, the run stops with [`Termination::Diverged`],
//! which callers must treat as a failed run, not a result.
//!
//! The loss is the user's (cross-entropy by default), optionally distilled from the
//! network as it was before the run:
//! `(1 - w) loss + w MSE(logits, teacher logits)`. The report's
//! [`Termination`] says why the run ended, and its status is verified on the model,
//! never assumed.

use std::fmt;
use std::time::Instant;

use rand::{SeedableRng, rngs::ChaCha12Rng};

use super::constraint::{ConstrainedOptimizer, ConstraintStatus, Phase, RunInfo, StepContext};
use super::observer::{EpochEvent, Observer};
use super::projection::project_top_k;
use crate::error::{Error, Result, ensure};
use crate::network::Trainable;
use crate::train::{
    Control, CrossEntropy, DataSource, Distillation, EpochStats, InputMaskAdam, Loss, Optimizer,
    cosine_lr, evaluate, predict_all, train_epoch,
};

/// Batch size of evaluation passes (test accuracy, teacher logits).
const EVAL_BATCH: usize = 1000;

/// The data of a training run.
#[derive(Clone, Copy)]
pub struct Data<'a> {
    /// Training set.
    pub train: &'a dyn DataSource,
    /// Validation set: decides whether input-mask rounds continue.
    pub validation: Option<&'a dyn DataSource>,
    /// Test set: reported after every epoch.
    pub test: Option<&'a dyn DataSource>,
}

impl fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("train", &self.train.len())
            .field("validation", &self.validation.map(|d| d.len()))
            .field("test", &self.test.map(|d| d.len()))
            .finish()
    }
}

impl<'a> Data<'a> {
    /// Training data only.
    pub fn train(train: &'a dyn DataSource) -> Self {
        Self {
            train,
            validation: None,
            test: None,
        }
    }

    /// The validation set, which input-mask rounds need.
    fn validation_set(&self) -> Result<&'a dyn DataSource> {
        self.validation.ok_or_else(|| {
            Error::param(
                "validation",
                "None",
                "input-mask rounds need a validation set (Data::validation)",
            )
        })
    }
}

/// Input-mask rounds of the driver (ICLR 2019, section 4).
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `rounds` | 4 | >= 1 | maximum number of mask/weight rounds |
/// | `mask_epochs` | 1 | >= 1 | epochs of the mask phase per round |
/// | `weight_epochs` | 1 | >= 1 | epochs of constrained training per round |
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

/// When an epoch counts as diverged, and what the driver does about it (see the
/// [module docs](self)).
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `loss_factor` | 1000 | > 1 | an epoch's loss above this multiple of the previous epoch's diverged (an explosion: tightening the budget legitimately raises the loss tens of times) |
/// | `chance_factor` | 1.5 | >= 1 | training accuracy below `chance_factor / classes`, after having been above twice that, is a collapse |
/// | `collapse_fraction` | 1/3 | [0, 1) | so is training accuracy below this fraction of the best epoch's |
/// | `max_restarts` | 2 | any | restores (each with a lower learning rate) before the run stops as diverged |
/// | `lr_factor` | 0.5 | (0, 1) | learning-rate multiplier at each restore |
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    /// Loss jump that counts as divergence.
    pub loss_factor: f64,
    /// Accuracy, in multiples of chance, that counts as a collapse.
    pub chance_factor: f64,
    /// Fraction of the best training accuracy below which an epoch collapsed.
    pub collapse_fraction: f64,
    /// Restores before giving up.
    pub max_restarts: usize,
    /// Learning-rate multiplier at each restore.
    pub lr_factor: f32,
}

impl Default for Divergence {
    fn default() -> Self {
        Self {
            loss_factor: 1000.0,
            chance_factor: 1.5,
            collapse_fraction: 1.0 / 3.0,
            max_restarts: 2,
            lr_factor: 0.5,
        }
    }
}

impl Divergence {
    /// Check every field against its range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.loss_factor.is_finite() && self.loss_factor > 1.0,
            "loss_factor",
            self.loss_factor,
            "must be finite and > 1",
        )?;
        ensure(
            self.chance_factor.is_finite() && self.chance_factor >= 1.0,
            "chance_factor",
            self.chance_factor,
            "must be finite and >= 1",
        )?;
        ensure(
            (0.0..1.0).contains(&self.collapse_fraction),
            "collapse_fraction",
            self.collapse_fraction,
            "must be in [0, 1)",
        )?;
        ensure(
            self.lr_factor > 0.0 && self.lr_factor < 1.0,
            "lr_factor",
            self.lr_factor,
            "must be in (0, 1)",
        )
    }
}

/// What made an epoch count as diverged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DivergenceCause {
    /// The epoch's loss is NaN or infinite.
    NonFiniteLoss,
    /// The epoch's loss is many times the previous epoch's.
    LossJump,
    /// Training accuracy collapsed: to chance, or far below the best epoch's.
    AccuracyCollapse,
}

impl fmt::Display for DivergenceCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DivergenceCause::NonFiniteLoss => "a non-finite loss",
            DivergenceCause::LossJump => "a loss that exploded from the previous epoch's",
            DivergenceCause::AccuracyCollapse => {
                "training accuracy collapsed (to chance, or far below its best)"
            }
        })
    }
}

/// How the learning rate moves over a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// Leave the optimizer's learning rate as it is.
    Constant,
    /// Cosine from `base` towards 0 over each phase, set at every epoch
    /// ([`cosine_lr`]).
    Cosine {
        /// Rate at the start of each phase.
        base: f32,
    },
}

/// Settings of [`train_constrained`].
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `epochs` | 10 | >= 0 | constrained-training epochs (most, for solvers that stop when the budget is met; 0 for one-shot methods) |
/// | `finetune_epochs` | 4 | >= 0 | fixed-support epochs once the budget is met |
/// | `batch_size` | 64 | >= 1 | mini-batch size |
/// | `lr` | `Cosine { base: 0.01 }` | base > 0 | learning-rate schedule |
/// | `reset_between_phases` | true | | forget the optimizer's state when a phase starts |
/// | `distill_weight` | Some(0.5) | [0, 1] | distillation from the network before the run |
/// | `input_masks` | None | [`MaskRounds`] | input-mask rounds for layers that carry masks |
/// | `seed` | 0 | any | data-order seed |
/// | `divergence` | `Some(Divergence::default())` | [`Divergence`] | divergence detection (None: off) |
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingConfig {
    /// Constrained-training epochs.
    pub epochs: usize,
    /// Fixed-support fine-tuning epochs.
    pub finetune_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Learning-rate schedule.
    pub lr: LrSchedule,
    /// Reset the optimizer when the mask-weight and fine-tuning phases start.
    pub reset_between_phases: bool,
    /// Distillation weight (None: the plain loss).
    pub distill_weight: Option<f32>,
    /// Input-mask rounds (None: masks, if any, stay as they are).
    pub input_masks: Option<MaskRounds>,
    /// Seed of the data order.
    pub seed: u64,
    /// Divergence detection and recovery (None: off).
    pub divergence: Option<Divergence>,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            finetune_epochs: 4,
            batch_size: 64,
            lr: LrSchedule::Cosine { base: 0.01 },
            reset_between_phases: true,
            distill_weight: Some(0.5),
            input_masks: None,
            seed: 0,
            divergence: Some(Divergence::default()),
        }
    }
}

impl TrainingConfig {
    /// Check every field against its range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.batch_size > 0,
            "batch_size",
            self.batch_size,
            "must be >= 1",
        )?;
        ensure(
            self.epochs > 0 || self.finetune_epochs > 0,
            "epochs",
            self.epochs,
            "epochs and finetune_epochs cannot both be 0",
        )?;
        if let LrSchedule::Cosine { base } = self.lr {
            ensure(
                base.is_finite() && base > 0.0,
                "lr",
                base,
                "must be finite and > 0",
            )?;
        }
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
        if let Some(d) = &self.divergence {
            d.validate()?;
        }
        Ok(())
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Every planned epoch ran and the budget is met.
    Completed {
        /// Epochs run.
        epochs: usize,
    },
    /// The solver met the budget during this constrained epoch (from 1) and froze
    /// the support; fine-tuning followed.
    BudgetMet {
        /// The epoch in which the budget was first met.
        epoch: usize,
    },
    /// The constrained epochs ran out before the budget was met; no fine-tuning.
    BudgetNotMet {
        /// Epochs run.
        epochs: usize,
    },
    /// An observer asked to stop.
    Stopped {
        /// The epoch during which it asked.
        epoch: usize,
    },
    /// Training diverged again after the allowed restores: a failed run; the
    /// network is as it was after the last good epoch.
    Diverged {
        /// The epoch that diverged last.
        epoch: usize,
        /// Why it counted as diverged.
        cause: DivergenceCause,
    },
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Completed { epochs } => {
                write!(f, "completed all {epochs} epochs within the budget")
            }
            Termination::BudgetMet { epoch } => write!(
                f,
                "met the budget in epoch {epoch}, then fine-tuned with the support fixed"
            ),
            Termination::BudgetNotMet { epochs } => write!(
                f,
                "did not meet the budget in {epochs} epochs; raise `epochs` or the solver's step sizes"
            ),
            Termination::Stopped { epoch } => write!(f, "stopped by an observer in epoch {epoch}"),
            Termination::Diverged { epoch, cause } => write!(
                f,
                "diverged in epoch {epoch} ({cause}) after the allowed restores at lower \
                 learning rates; the network is the last good one; lower the learning rate \
                 or loosen the budget schedule"
            ),
        }
    }
}

/// The result of [`train_constrained`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingReport {
    /// The solver's name.
    pub solver: &'static str,
    /// Why the run ended.
    pub termination: Termination,
    /// Where the final network stands against the budget (verified on the model).
    pub status: ConstraintStatus,
    /// Final test accuracy, if a test set was given.
    pub test_accuracy: Option<f64>,
    /// Epochs run (all phases).
    pub epochs: usize,
    /// Input-mask rounds kept.
    pub mask_rounds: usize,
    /// Diverged epochs undone by restoring the last good state.
    pub restarts: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// One event per epoch.
    pub history: Vec<EpochEvent>,
}

impl TrainingReport {
    /// Whether the final cost is within the budget.
    pub fn budget_met(&self) -> bool {
        self.status.met
    }

    /// Whether the run ended diverged (a failed run, not a result).
    pub fn diverged(&self) -> bool {
        matches!(self.termination, Termination::Diverged { .. })
    }

    /// The report, or [`Error::TrainingDiverged`] naming `what` when the run
    /// diverged: for callers that must not treat a failed run as a result.
    ///
    /// # Errors
    /// [`Error::TrainingDiverged`].
    pub fn converged(self, what: &str) -> Result<Self> {
        if self.diverged() {
            return Err(Error::TrainingDiverged {
                what: what.to_string(),
                reason: self.termination.to_string(),
            });
        }
        Ok(self)
    }
}

/// Train `net` with `opt`, keeping it within budget by `solver`, with
/// cross-entropy as the loss; see the [module docs](self).
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad configuration (or input-mask rounds
/// without a validation set), [`Error::InfeasibleBudget`] if the budget cannot be
/// reached, and errors of the network, solver, optimizer, data and observer.
pub fn train_constrained<N, O, C>(
    net: &mut N,
    opt: &mut O,
    solver: &mut C,
    data: Data<'_>,
    cfg: &TrainingConfig,
    obs: &mut dyn Observer,
) -> Result<TrainingReport>
where
    N: Trainable,
    O: Optimizer + ?Sized,
    C: ConstrainedOptimizer + ?Sized,
{
    train_constrained_with_loss(net, opt, solver, data, cfg, &mut CrossEntropy, obs)
}

/// [`train_constrained`] with the user's own `loss` (distillation, if configured,
/// is added on top of it).
///
/// # Errors
/// As [`train_constrained`], plus the loss's errors.
pub fn train_constrained_with_loss<N, O, C>(
    net: &mut N,
    opt: &mut O,
    solver: &mut C,
    data: Data<'_>,
    cfg: &TrainingConfig,
    loss: &mut dyn Loss,
    obs: &mut dyn Observer,
) -> Result<TrainingReport>
where
    N: Trainable,
    O: Optimizer + ?Sized,
    C: ConstrainedOptimizer + ?Sized,
{
    let start = Instant::now();
    cfg.validate()?;
    if cfg.input_masks.is_some() {
        data.validation_set()?;
    }
    let mut loss: Box<dyn Loss + '_> = match cfg.distill_weight {
        Some(w) if w > 0.0 => Box::new(Distillation::new(
            loss,
            predict_all(net, data.train, EVAL_BATCH)?,
            w,
        )?),
        _ => Box::new(loss),
    };
    solver.begin(
        net,
        &RunInfo {
            input_mask_rounds: cfg.input_masks.is_some(),
        },
    )?;
    let mask_epochs = cfg
        .input_masks
        .as_ref()
        .map_or(0, |m| m.rounds * (m.mask_epochs + m.weight_epochs));
    let mut run = Run {
        net,
        opt,
        solver,
        data,
        cfg,
        loss: &mut *loss,
        obs,
        rng: ChaCha12Rng::seed_from_u64(cfg.seed),
        history: Vec::new(),
        epoch: 0,
        total_epochs: cfg.epochs + mask_epochs + cfg.finetune_epochs,
        guard: None,
        restored_last: false,
    };
    if let Some(d) = cfg.divergence {
        let arch = run.net.architecture();
        run.guard = Some(Guard {
            cfg: d,
            classes: arch.widths()[arch.output_width().0].channels,
            good: snapshot(run.net),
            last_loss: None,
            best_accuracy: 0.0,
            lr_scale: 1.0,
            restarts: 0,
            gave_up: None,
        });
    }
    let mut mask_rounds = 0;
    let mut termination = match run.run(&mut mask_rounds)? {
        Some(t) => t,
        None => Termination::Completed { epochs: run.epoch },
    };
    let restarts = run.guard.as_ref().map_or(0, |g| g.restarts);
    if let Some((epoch, cause)) = run.guard.as_ref().and_then(|g| g.gave_up) {
        termination = Termination::Diverged { epoch, cause };
    }
    let status = run.solver.status(&*run.net)?;
    // After an undone last epoch, the accuracy is that of the restored network.
    let test_accuracy = match (run.restored_last, data.test) {
        (true, Some(t)) => Some(evaluate(run.net, t, EVAL_BATCH)?),
        _ => run.history.last().and_then(|e| e.test_accuracy),
    };
    Ok(TrainingReport {
        solver: run.solver.name(),
        termination,
        status,
        test_accuracy,
        epochs: run.epoch,
        mask_rounds,
        restarts,
        seconds: start.elapsed().as_secs_f64(),
        history: run.history,
    })
}

struct Run<'a, 'l, N, O: ?Sized, C: ?Sized> {
    net: &'a mut N,
    opt: &'a mut O,
    solver: &'a mut C,
    data: Data<'a>,
    cfg: &'a TrainingConfig,
    loss: &'a mut (dyn Loss + 'l),
    obs: &'a mut dyn Observer,
    rng: ChaCha12Rng,
    history: Vec<EpochEvent>,
    epoch: usize,
    total_epochs: usize,
    guard: Option<Guard>,
    /// The network was restored after its last epoch event (that event's test
    /// accuracy is not the network's).
    restored_last: bool,
}

/// The divergence guard's state.
struct Guard {
    cfg: Divergence,
    classes: usize,
    /// The parameters after the last good epoch.
    good: Vec<Vec<f32>>,
    last_loss: Option<f64>,
    best_accuracy: f64,
    /// Product of the learning-rate cuts so far.
    lr_scale: f32,
    restarts: usize,
    /// Set when the run stopped as diverged.
    gave_up: Option<(usize, DivergenceCause)>,
}

impl Guard {
    /// Why the epoch with `loss` and training accuracy `acc` diverged, if it did.
    fn cause(&self, loss: f64, acc: f64) -> Option<DivergenceCause> {
        if !loss.is_finite() {
            return Some(DivergenceCause::NonFiniteLoss);
        }
        if self
            .last_loss
            .is_some_and(|prev| prev > 0.0 && loss > self.cfg.loss_factor * prev)
        {
            return Some(DivergenceCause::LossJump);
        }
        let chance = 1.0 / self.classes.max(1) as f64;
        let floor =
            (self.cfg.chance_factor * chance).max(self.cfg.collapse_fraction * self.best_accuracy);
        if self.classes >= 2
            && self.best_accuracy > 2.0 * self.cfg.chance_factor * chance
            && acc < floor
        {
            return Some(DivergenceCause::AccuracyCollapse);
        }
        None
    }
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

/// Apply `f` to every input mask of the network (read, modify, write back).
fn for_each_mask<N: Trainable + ?Sized>(
    net: &mut N,
    buf: &mut Vec<f32>,
    mut f: impl FnMut(&mut [f32]) -> Result<()>,
) -> Result<()> {
    for l in 0..net.architecture().layers().len() {
        let n = net.architecture().layers()[l].in_features();
        buf.resize(n, 0.0);
        if net.read_input_mask(l, buf)? {
            f(buf)?;
            net.write_input_mask(l, buf)?;
        }
    }
    Ok(())
}

impl<N, O, C> Run<'_, '_, N, O, C>
where
    N: Trainable,
    O: Optimizer + ?Sized,
    C: ConstrainedOptimizer + ?Sized,
{
    fn steps_per_epoch(&self) -> usize {
        self.data.train.len().div_ceil(self.cfg.batch_size)
    }

    /// All phases; `Some(termination)` when a phase decided how the run ends.
    fn run(&mut self, mask_rounds: &mut usize) -> Result<Option<Termination>> {
        let mut met_in = None;
        if self.cfg.epochs > 0 {
            match self.constrained(Phase::Constrained, self.cfg.epochs)? {
                PhaseEnd::Stopped => return Ok(Some(Termination::Stopped { epoch: self.epoch })),
                PhaseEnd::Frozen => met_in = Some(self.epoch),
                PhaseEnd::Done => {}
            }
        }
        if let Some(mr) = self.cfg.input_masks.clone() {
            match self.mask_rounds(&mr)? {
                Some(kept) => *mask_rounds = kept,
                None => return Ok(Some(Termination::Stopped { epoch: self.epoch })),
            }
        }
        if !self.solver.status(&*self.net)?.met {
            return Ok(Some(Termination::BudgetNotMet { epochs: self.epoch }));
        }
        self.total_epochs = self.epoch + self.cfg.finetune_epochs;
        if self.finetune()? {
            return Ok(Some(Termination::Stopped { epoch: self.epoch }));
        }
        Ok(met_in.map(|epoch| Termination::BudgetMet { epoch }))
    }

    fn set_lr(&mut self, phase_epoch: usize, phase_epochs: usize) {
        if let LrSchedule::Cosine { base } = self.cfg.lr {
            let scale = self.guard.as_ref().map_or(1.0, |g| g.lr_scale);
            self.opt
                .set_learning_rate(scale * cosine_lr(base, phase_epoch, phase_epochs));
        }
    }

    /// The learning-rate multiplier of the divergence guard (1 without one).
    fn lr_scale(&self) -> f32 {
        self.guard.as_ref().map_or(1.0, |g| g.lr_scale)
    }

    /// After an epoch: keep it as the last good state, or undo it. `true` when
    /// the run must stop as diverged.
    fn guard_epoch(&mut self, st: &EpochStats) -> Result<bool> {
        if self.guard.is_none() {
            return Ok(false);
        }
        // The network at the end of the epoch, on the validation split when there
        // is one (the training accuracy is averaged over the epoch's updates).
        let accuracy = match self.data.validation {
            Some(v) => evaluate(self.net, v, EVAL_BATCH)?,
            None => st.train_accuracy,
        };
        let Some(g) = self.guard.as_mut() else {
            return Ok(false);
        };
        match g.cause(st.loss, accuracy) {
            None => {
                g.last_loss = Some(st.loss);
                g.best_accuracy = g.best_accuracy.max(accuracy);
                g.good = snapshot(self.net);
                self.restored_last = false;
                Ok(false)
            }
            Some(cause) => Ok(self.undo(cause)),
        }
    }

    /// Restore the last good state and lower the learning rate; `true` (and the
    /// run marked diverged) when the restores are used up.
    fn undo(&mut self, cause: DivergenceCause) -> bool {
        let Some(g) = self.guard.as_mut() else {
            return false;
        };
        restore(self.net, &g.good);
        self.restored_last = true;
        if g.restarts >= g.cfg.max_restarts {
            g.gave_up = Some((self.epoch, cause));
            return true;
        }
        g.restarts += 1;
        g.lr_scale *= g.cfg.lr_factor;
        let lr = self.opt.learning_rate() * g.cfg.lr_factor;
        self.opt.set_learning_rate(lr);
        self.opt.reset();
        false
    }

    /// The stats of a finished epoch, or `None` when it failed on a non-finite
    /// value (training diverged mid-epoch) and was undone by the guard; other
    /// errors, and any error without a guard, are returned.
    fn guarded(&mut self, epoch: Result<EpochStats>) -> Result<Option<EpochStats>> {
        match epoch {
            Ok(st) => Ok(Some(st)),
            Err(Error::NonFinite {
                origin: crate::error::Origin::Training,
                ..
            }) if self.guard.is_some() => {
                self.undo(DivergenceCause::NonFiniteLoss);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the guard stopped the run.
    fn gave_up(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.gave_up.is_some())
    }

    /// Emit an epoch event; `true` if the observer asked to stop.
    fn emit(&mut self, phase: Phase, st: &EpochStats) -> Result<bool> {
        let status = self.solver.status(&*self.net)?;
        let test_accuracy = match self.data.test {
            Some(t) => Some(evaluate(self.net, t, EVAL_BATCH)?),
            None => None,
        };
        self.epoch += 1;
        let ev = EpochEvent {
            solver: self.solver.name(),
            phase,
            epoch: self.epoch,
            epochs: self.total_epochs,
            loss: st.loss,
            train_accuracy: st.train_accuracy,
            test_accuracy,
            status,
            images_per_second: st.throughput(),
        };
        let control = self.obs.on_epoch(&ev)?;
        self.history.push(ev);
        let diverged = self.guard_epoch(st)?;
        Ok(control == Control::Stop || st.stopped || diverged)
    }

    /// Constrained training for `epochs` epochs with the solver's step after every
    /// update.
    fn constrained(&mut self, phase: Phase, epochs: usize) -> Result<PhaseEnd> {
        let spe = self.steps_per_epoch();
        let phase_steps = epochs * spe;
        self.solver.begin_phase(&*self.net, phase, phase_steps)?;
        for epoch in 0..epochs {
            self.set_lr(epoch, epochs);
            let mut frozen = false;
            let (solver, obs) = (&mut *self.solver, &mut *self.obs);
            let mut hook = |net: &mut N, opt: &O, step: usize| -> Result<Control> {
                let ctx = StepContext {
                    step: epoch * spe + step + 1,
                    steps: phase_steps,
                    learning_rate: opt.learning_rate() as f64,
                    preconditioner: opt.preconditioner(),
                };
                let report = solver.step(net, &ctx)?;
                frozen = report.frozen;
                match &report.event {
                    Some(ev) => obs.on_solver(ev),
                    None => Ok(Control::Continue),
                }
            };
            let epoch_result = train_epoch(
                self.net,
                self.opt,
                self.data.train,
                self.loss,
                self.cfg.batch_size,
                &mut self.rng,
                &mut hook,
            );
            let Some(st) = self.guarded(epoch_result)? else {
                if self.gave_up() {
                    return Ok(PhaseEnd::Stopped);
                }
                continue;
            };
            if self.emit(phase, &st)? {
                return Ok(PhaseEnd::Stopped);
            }
            if frozen {
                return Ok(PhaseEnd::Frozen);
            }
        }
        Ok(PhaseEnd::Done)
    }

    /// Input-mask rounds; see the module docs. Returns the rounds kept, or `None`
    /// if an observer stopped the run.
    fn mask_rounds(&mut self, mr: &MaskRounds) -> Result<Option<usize>> {
        let val = self.data.validation_set()?;
        let mut best = evaluate(self.net, val, EVAL_BATCH)?;
        let mut snap = snapshot(self.net);
        let mut kept_rounds = 0;
        for round in 0..mr.rounds {
            let feasible_before = self.solver.unreachable_floor(&*self.net)?.is_none();
            let q = mr.keep_start - round as f64 * mr.keep_step;
            if q <= 0.0 {
                break;
            }
            // Mask phase: Adam on the masks only, top-q projection every k steps.
            self.solver.begin_phase(&*self.net, Phase::InputMasks, 0)?;
            let mut adam = InputMaskAdam::new(mr.lr * self.lr_scale(), mr.l1)?;
            let mut buf = Vec::new();
            let every = mr.project_every;
            let keep = |m: &mut [f32]| project_top_k(m, (q * m.len() as f64).ceil() as usize);
            for _ in 0..mr.mask_epochs {
                let mut hook = |net: &mut N, _: &InputMaskAdam, step: usize| -> Result<Control> {
                    if (step + 1).is_multiple_of(every) {
                        for_each_mask(net, &mut buf, keep)?;
                    }
                    Ok(Control::Continue)
                };
                let mut rng = ChaCha12Rng::seed_from_u64(self.cfg.seed ^ (round as u64 + 1) << 32);
                let epoch_result = train_epoch(
                    self.net,
                    &mut adam,
                    self.data.train,
                    self.loss,
                    self.cfg.batch_size,
                    &mut rng,
                    &mut hook,
                );
                let Some(st) = self.guarded(epoch_result)? else {
                    if self.gave_up() {
                        return Ok(None);
                    }
                    continue;
                };
                for_each_mask(self.net, &mut buf, |m| {
                    keep(m)?;
                    m.iter_mut()
                        .for_each(|v| *v = if *v >= 0.5 { 1.0 } else { 0.0 });
                    Ok(())
                })?;
                if self.emit(Phase::InputMasks, &st)? {
                    return Ok(None);
                }
            }
            // Weight phase: constrained training at the target; weights may regrow
            // into the energy the masks freed.
            if self.cfg.reset_between_phases {
                self.opt.reset();
            }
            if self.constrained(Phase::MaskWeights, mr.weight_epochs)? == PhaseEnd::Stopped {
                return Ok(None);
            }
            let acc = evaluate(self.net, val, EVAL_BATCH)?;
            // Rounds go on while the budget is not yet reachable, then while
            // validation accuracy improves; a round that lowers it is undone.
            if feasible_before && acc < best {
                restore(self.net, &snap);
                if let Some(g) = self.guard.as_mut() {
                    g.good = snap;
                }
                self.restored_last = true;
                break;
            }
            best = acc;
            snap = snapshot(self.net);
            kept_rounds += 1;
        }
        if let Some(floor) = self.solver.unreachable_floor(&*self.net)? {
            return Err(Error::InfeasibleBudget {
                budget: self.solver.target(),
                min_achievable: floor,
            });
        }
        Ok(Some(kept_rounds))
    }

    /// Fine-tune with the support frozen; `true` if an observer stopped the run.
    fn finetune(&mut self) -> Result<bool> {
        let epochs = self.cfg.finetune_epochs;
        if self.cfg.reset_between_phases {
            self.opt.reset();
        }
        let steps = epochs * self.steps_per_epoch();
        self.solver
            .begin_phase(&*self.net, Phase::FineTune, steps)?;
        for e in 0..epochs {
            self.set_lr(e, epochs);
            let solver = &mut *self.solver;
            let mut hook = |net: &mut N, _: &O, _: usize| -> Result<Control> {
                solver.hold(net)?;
                Ok(Control::Continue)
            };
            let epoch_result = train_epoch(
                self.net,
                self.opt,
                self.data.train,
                self.loss,
                self.cfg.batch_size,
                &mut self.rng,
                &mut hook,
            );
            let Some(st) = self.guarded(epoch_result)? else {
                if self.gave_up() {
                    return Ok(true);
                }
                continue;
            };
            if self.emit(Phase::FineTune, &st)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhaseEnd {
    Done,
    Frozen,
    Stopped,
}
