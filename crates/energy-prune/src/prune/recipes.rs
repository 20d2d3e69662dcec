//! Ready-made runs of the driver: the settings the papers use, in one call. Each
//! takes a non-empty list of [`Budget`]s.
//!
//! | function | optimizer | solver | schedule |
//! |---|---|---|---|
//! | [`train_projected`] | SGD with momentum | [`WeightProjection`] | cosine per phase, optional input-mask rounds |
//! | [`train_joint`] | SGD with momentum | [`JointQuantization`](super::joint::JointQuantization) (precision and pruning together, quantization-aware) | as `train_projected` |
//! | [`train_magnitude`] | SGD with momentum | [`MagnitudePruning`] (global or layer-uniform) | the same epochs and loss as `train_projected`, all fine-tuning |
//! | [`train_admm`] | Adam | [`AdmmPruning`] (one budget or several) | constant rate, until every budget is met, then fine-tuning |
//! | [`train_uniform`] | Adam | [`UniformScaling`] | the same loss, all fine-tuning |
//!
//! Each builds its optimizer and solver and calls
//! [`train_constrained`]; use that directly for any
//! other combination.

use super::admm::{AdmmConfig, AdmmPruning};
use super::baselines::{MagnitudePruning, MagnitudeRule, UniformScaling};
use super::budget::Budget;
use super::driver::{
    Data, LrSchedule, MaskRounds, TrainingConfig, TrainingReport, train_constrained,
};
use super::observer::Observer;
use super::projection::{WeightProjection, WeightProjectionConfig};
use crate::energy::{WeightEnergyModel, WidthCostModel};
use crate::error::{Result, ensure};
use crate::network::Trainable;
use crate::train::{Adam, Sgd};

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
    /// [`crate::Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        ensure(self.epochs > 0, "epochs", self.epochs, "must be >= 1")?;
        self.projection().validate()?;
        self.training().validate()?;
        Sgd::new(self.lr, self.momentum, self.weight_decay).map(|_| ())
    }

    /// The solver settings.
    pub fn projection(&self) -> WeightProjectionConfig {
        WeightProjectionConfig {
            project_every: self.project_every,
            reach_fraction: self.reach_fraction,
            regrow: self.regrow,
        }
    }

    /// The driver settings.
    pub fn training(&self) -> TrainingConfig {
        TrainingConfig {
            epochs: self.epochs,
            finetune_epochs: self.finetune_epochs,
            batch_size: self.batch_size,
            lr: LrSchedule::Cosine { base: self.lr },
            reset_between_phases: true,
            distill_weight: self.distill_weight,
            input_masks: self.input_masks.clone(),
            seed: self.seed,
            divergence: Some(super::driver::Divergence::default()),
        }
    }
}

/// Train `net` so that its cost under every budget's model ends within the budget:
/// projected SGD, optional input-mask rounds, then fixed-support fine-tuning (ICLR
/// 2019). One budget (energy) is the paper's setting; several (energy and
/// parameters, say) are projected onto together ([`WeightProjection`]).
///
/// # Errors
/// As [`WeightProjection::new`] and [`train_constrained`].
pub fn train_projected<N, M>(
    net: &mut N,
    budgets: Vec<Budget<M>>,
    data: Data<'_>,
    cfg: &ProjectedTraining,
    obs: &mut dyn Observer,
) -> Result<TrainingReport>
where
    N: Trainable,
    M: WeightEnergyModel,
{
    cfg.validate()?;
    let mut opt = Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay)?;
    let mut solver = WeightProjection::new(budgets, cfg.projection())?;
    train_constrained(net, &mut opt, &mut solver, data, &cfg.training(), obs)
}

/// What [`train_joint`] chooses from: every layer's precision options, the
/// statistics that price the activations' rounding, the weight-scale rule.
#[derive(Debug, Clone, PartialEq)]
pub struct JointChoice {
    /// Options per layer (see [`precision_options`](super::joint::precision_options)).
    pub options: Vec<Vec<crate::energy::LayerPrecision>>,
    /// Statistics of every layer's input activations (None: activations' rounding
    /// not priced).
    pub activations: Option<Vec<crate::quant::ActivationStats>>,
    /// How the per-channel weight scales are chosen.
    pub weight_scale: crate::quant::WeightScale,
}

/// What [`train_joint`] returns: the training report, the precision chosen per
/// layer and the per-channel scales the network's weights are quantized with
/// (what a QDQ export needs to store them exactly).
#[derive(Debug, Clone, PartialEq)]
pub struct JointTraining {
    /// The training report.
    pub report: TrainingReport,
    /// The chosen precision per layer.
    pub precision: Vec<crate::energy::LayerPrecision>,
    /// The weights' per-output-channel scales per layer (`None` where lossless).
    pub weight_scales: Vec<Option<Vec<f32>>>,
}

/// Train `net` under every budget with each layer's precision chosen among the
/// options together with its pruning ([`JointQuantization`](super::joint::JointQuantization)):
/// the settings of [`train_projected`], the weights trained quantization-aware and
/// the activations quantized by the network where it can. The network ends with
/// its weights on the quantization grid of the returned scales.
///
/// # Errors
/// As [`JointQuantization::new`](super::joint::JointQuantization::new) and
/// [`train_constrained`].
pub fn train_joint<N, M>(
    net: &mut N,
    budgets: Vec<Budget<M>>,
    choice: JointChoice,
    data: Data<'_>,
    cfg: &ProjectedTraining,
    obs: &mut dyn Observer,
) -> Result<JointTraining>
where
    N: Trainable,
    M: crate::energy::PrecisionModel,
{
    cfg.validate()?;
    let mut opt = Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay)?;
    let joint = super::joint::JointConfig {
        projection: cfg.projection(),
        quantize_weights: true,
        weight_scale: choice.weight_scale,
    };
    let mut solver = super::joint::JointQuantization::new(budgets, choice.options, joint)?;
    if let Some(stats) = choice.activations {
        solver = solver.with_activation_stats(stats)?;
    }
    let report = train_constrained(net, &mut opt, &mut solver, data, &cfg.training(), obs)?;
    Ok(JointTraining {
        report,
        precision: solver.precision().to_vec(),
        weight_scales: solver.weight_scales().to_vec(),
    })
}

/// The baseline of [`train_projected`]: magnitude pruning under `rule` (global or
/// layer-uniform) to the same exact cost, within every budget, then fine-tuning
/// with the support fixed for `epochs + finetune_epochs` epochs (the same number of
/// epochs, optimizer and loss).
///
/// # Errors
/// As [`MagnitudePruning::new`] and [`train_constrained`].
pub fn train_magnitude<N, M>(
    net: &mut N,
    budgets: Vec<Budget<M>>,
    rule: MagnitudeRule,
    data: Data<'_>,
    cfg: &ProjectedTraining,
    obs: &mut dyn Observer,
) -> Result<TrainingReport>
where
    N: Trainable,
    M: WeightEnergyModel,
{
    cfg.validate()?;
    let mut opt = Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay)?;
    let mut solver = MagnitudePruning::new(budgets, rule)?;
    let training = TrainingConfig {
        epochs: 0,
        finetune_epochs: cfg.epochs + cfg.finetune_epochs,
        input_masks: None,
        ..cfg.training()
    };
    train_constrained(net, &mut opt, &mut solver, data, &training, obs)
}

/// Hyper-parameters of [`train_admm`] and [`train_uniform`].
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `epochs` | 5 | >= 1 | most epochs of ADMM before giving up |
/// | `finetune_epochs` | 2 | >= 0 | epochs with the support fixed after the budget is met |
/// | `batch_size` | 64 | >= 1 | mini-batch size |
/// | `lr` | 1e-3 | > 0 | Adam rate `alpha` (also used by the proximal step) |
/// | `distill_weight` | Some(0.5) | [0, 1] | distillation from the network before pruning |
/// | `seed` | 0 | any | data order |
/// | `admm` | [`AdmmConfig::default`] | | the solver's hyper-parameters |
#[derive(Debug, Clone, PartialEq)]
pub struct AdmmTraining {
    /// Most ADMM epochs.
    pub epochs: usize,
    /// Fixed-support epochs after the budget is met.
    pub finetune_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f32,
    /// Distillation weight.
    pub distill_weight: Option<f32>,
    /// Data-order seed.
    pub seed: u64,
    /// ADMM hyper-parameters.
    pub admm: AdmmConfig,
}

impl Default for AdmmTraining {
    fn default() -> Self {
        Self {
            epochs: 5,
            finetune_epochs: 2,
            batch_size: 64,
            lr: 1e-3,
            distill_weight: Some(0.5),
            seed: 0,
            admm: AdmmConfig::default(),
        }
    }
}

impl AdmmTraining {
    /// The driver settings (constant Adam rate, no optimizer reset between phases).
    pub fn training(&self) -> TrainingConfig {
        TrainingConfig {
            epochs: self.epochs,
            finetune_epochs: self.finetune_epochs,
            batch_size: self.batch_size,
            lr: LrSchedule::Constant,
            reset_between_phases: false,
            distill_weight: self.distill_weight,
            input_masks: None,
            seed: self.seed,
            divergence: Some(super::driver::Divergence::default()),
        }
    }
}

/// Prune the channels of `net` until every budget's model cost of its live widths
/// is within its limit, training all the while with Adam, then fine-tune with the
/// channel support fixed (ECC, CVPR 2019). One cost constraint and dual per budget
/// on the same widths ([`AdmmPruning::new`]); one budget is the paper's setting. The
/// report's [`status`](TrainingReport::status) lists every budget (cost, budget,
/// met, binding). The kept channels are
/// [`PruningPlan::from_network`](crate::network::PruningPlan::from_network) of the
/// result.
///
/// # Errors
/// [`crate::Error::InfeasibleBudget`] if the minimum widths cost more than a
/// budget, [`crate::Error::InvalidParameter`] for a bad configuration or budget
/// list, and errors of the network, the models or the data.
pub fn train_admm<N, M>(
    net: &mut N,
    budgets: Vec<Budget<M>>,
    data: Data<'_>,
    cfg: &AdmmTraining,
    obs: &mut dyn Observer,
) -> Result<TrainingReport>
where
    N: Trainable,
    M: WidthCostModel,
{
    ensure(cfg.epochs > 0, "epochs", cfg.epochs, "must be >= 1")?;
    let arch = net.architecture().clone();
    let mut solver = AdmmPruning::new(&arch, budgets, cfg.admm.clone())?;
    let mut opt = Adam::new(cfg.lr)?;
    train_constrained(net, &mut opt, &mut solver, data, &cfg.training(), obs)
}

/// The baseline of [`train_admm`]: uniform width scaling to the same model cost,
/// then `epochs` epochs of Adam with the same loss. The kept channels are the first
/// of every width ([`UniformScaling::plan`]).
///
/// # Errors
/// As [`train_admm`].
pub fn train_uniform<N, M>(
    net: &mut N,
    budgets: Vec<Budget<M>>,
    data: Data<'_>,
    epochs: usize,
    cfg: &AdmmTraining,
    obs: &mut dyn Observer,
) -> Result<TrainingReport>
where
    N: Trainable,
    M: WidthCostModel,
{
    let arch = net.architecture().clone();
    let mut solver = UniformScaling::new(&arch, budgets)?;
    let mut opt = Adam::new(cfg.lr)?;
    let training = TrainingConfig {
        epochs: 0,
        finetune_epochs: epochs,
        ..cfg.training()
    };
    train_constrained(net, &mut opt, &mut solver, data, &training, obs)
}
