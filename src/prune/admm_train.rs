//! The ADMM training driver and the uniform width-scaling baseline.
//!
//! [`train_admm`] runs Adam on all parameters and, after every Adam step, one
//! [`Admm::step`] on the weights, until the model's cost of the live widths meets
//! the budget; the rest of that epoch and `finetune_epochs` more train with the
//! channel support fixed. Distillation from the network as it was before pruning
//! is optional. The result is a [`PruningPlan`] ready for compaction.
//!
//! [`uniform_widths`] is the baseline: every free width scaled by one multiplier,
//! the largest whose model cost meets the budget (bisection).

use std::time::Instant;

use rand::{SeedableRng, rngs::StdRng};

use super::admm::{Admm, AdmmConfig, AdmmStep};
use super::observer::{EpochEvent, Observer};
use super::plan::PruningPlan;
use super::projected::{Data, Termination};
use crate::arch::Architecture;
use crate::energy::WidthEnergyModel;
use crate::error::{Error, Result};
use crate::network::{ParamKind, Trainable};
use crate::nn::optim::{Adam, Optimizer};
use crate::nn::{TrainConfig, evaluate, predict_all, train_epoch};

/// Hyper-parameters of [`train_admm`].
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

/// The result of [`train_admm`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdmmReport {
    /// Why the run stopped pruning.
    pub termination: Termination,
    /// The cost budget.
    pub budget: f64,
    /// Model cost of the final live widths.
    pub cost: f64,
    /// Whether `cost <= budget`.
    pub budget_met: bool,
    /// Live channels per width.
    pub widths: Vec<usize>,
    /// The kept channels, for compaction.
    pub plan: PruningPlan,
    /// Final test accuracy, if a test set was given.
    pub test_accuracy: Option<f64>,
    /// One event per epoch.
    pub history: Vec<EpochEvent>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Adam followed by an ADMM step (until the budget is met), then Adam with the
/// channel support fixed.
struct AdmmOptimizer<'a, M: ?Sized> {
    adam: Adam,
    admm: &'a mut Admm,
    model: &'a M,
    weights: Vec<Vec<f32>>,
    precond: Vec<Vec<f32>>,
    last: Option<AdmmStep>,
    frozen: Option<PruningPlan>,
    error: Option<Error>,
}

impl<M: WidthEnergyModel + ?Sized> AdmmOptimizer<'_, M> {
    fn admm_step<N: Trainable + ?Sized>(&mut self, net: &mut N) -> Result<()> {
        if let Some(plan) = &self.frozen {
            return plan.apply(net);
        }
        let eps = self.adam.eps;
        for l in 0..self.weights.len() {
            net.read_weights(l, &mut self.weights[l])?;
            let p = &mut self.precond[l];
            match self.adam.second_moment(ParamKind::Weight(l)) {
                Some(v) if v.len() == p.len() => {
                    p.iter_mut().zip(v).for_each(|(d, v)| *d = v.sqrt() + eps)
                }
                _ => p.fill(1.0),
            }
        }
        let st = self.admm.step(
            &mut self.weights,
            &self.precond,
            self.adam.lr as f64,
            self.model,
        )?;
        for (l, w) in self.weights.iter().enumerate() {
            net.write_weights(l, w)?;
        }
        if st.budget_met {
            self.frozen = Some(PruningPlan::from_network(&*net)?);
        }
        self.last = Some(st);
        Ok(())
    }
}

impl<M: WidthEnergyModel + ?Sized> Optimizer for AdmmOptimizer<'_, M> {
    fn step<N: Trainable + ?Sized>(&mut self, net: &mut N) {
        self.adam.step(net);
        if self.error.is_none()
            && let Err(e) = self.admm_step(net)
        {
            self.error = Some(e);
        }
    }
}

/// Prune the channels of `net` until `model`'s cost of its live widths is at most
/// `budget` (model units), training all the while; see the [module docs](self).
///
/// # Errors
/// [`Error::InfeasibleBudget`] if the minimum widths cost more than the budget,
/// [`Error::InvalidParameter`] for a bad configuration, and errors of the network,
/// the model or the data.
pub fn train_admm<N: Trainable + ?Sized, M: WidthEnergyModel + ?Sized>(
    net: &mut N,
    model: &M,
    budget: f64,
    data: Data<'_>,
    cfg: &AdmmTraining,
    obs: &mut dyn Observer,
) -> Result<AdmmReport> {
    let start = Instant::now();
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::param(
            "epochs / batch_size",
            format!("{} / {}", cfg.epochs, cfg.batch_size),
            "must be >= 1",
        ));
    }
    let arch = net.architecture().clone();
    let mut admm = Admm::new(&arch, model, budget, cfg.admm.clone())?;
    let teacher = match cfg.distill_weight {
        Some(w) if w > 0.0 => Some(predict_all(net, data.train, 1000)?),
        _ => None,
    };
    let tc = TrainConfig {
        batch_size: cfg.batch_size,
        distill: teacher.as_deref().zip(cfg.distill_weight),
    };
    let weights: Vec<Vec<f32>> = arch
        .layers()
        .iter()
        .map(|l| vec![0.0; l.weight_count()])
        .collect();
    let mut opt = AdmmOptimizer {
        adam: Adam::new(cfg.lr)?,
        admm: &mut admm,
        model,
        precond: weights.clone(),
        weights,
        last: None,
        frozen: None,
        error: None,
    };
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut history = Vec::new();
    let mut termination = Termination::EpochLimit;
    let mut epoch = 0;
    let mut finetune_left = None;
    while epoch < cfg.epochs + cfg.finetune_epochs {
        if finetune_left == Some(0) || (finetune_left.is_none() && epoch >= cfg.epochs) {
            break;
        }
        let st = train_epoch(net, &mut opt, data.train, &tc, &mut rng, &mut |_, _| Ok(()))?;
        if let Some(e) = opt.error.take() {
            return Err(e);
        }
        epoch += 1;
        match finetune_left.as_mut() {
            Some(left) => *left -= 1,
            None if opt.frozen.is_some() => {
                termination = Termination::BudgetMet { epoch };
                finetune_left = Some(cfg.finetune_epochs);
            }
            None => {}
        }
        let last = opt.last.clone();
        let live: Vec<f64> = last.as_ref().map_or_else(
            || arch.widths().iter().map(|w| w.channels as f64).collect(),
            |l| l.live.iter().map(|v| *v as f64).collect(),
        );
        let cost = model.width_energy(&live)?;
        let test_accuracy = match data.test {
            Some(t) => Some(evaluate(net, t, 1000)?),
            None => None,
        };
        let ev = EpochEvent {
            phase: if matches!(termination, Termination::BudgetMet { epoch: e } if e < epoch) {
                "admm-finetune"
            } else {
                "admm"
            },
            epoch,
            epochs: cfg.epochs + cfg.finetune_epochs,
            loss: st.loss,
            train_accuracy: st.train_accuracy,
            test_accuracy,
            energy: cost,
            relaxed_energy: model.width_energy(opt.admm.s())?,
            budget,
            nonzero: live.iter().sum::<f64>() as u64,
            images_per_second: st.images as f64 / st.seconds.max(1e-9),
        };
        obs.on_epoch(&ev);
        let live_n: Vec<usize> = live.iter().map(|v| *v as usize).collect();
        obs.on_admm(epoch, &live_n, opt.admm.s(), opt.admm.y(), opt.admm.z());
        history.push(ev);
    }
    let plan = PruningPlan::from_network(&*net)?;
    let widths = plan.widths();
    let cost = model.width_energy(&widths.iter().map(|v| *v as f64).collect::<Vec<_>>())?;
    Ok(AdmmReport {
        termination,
        budget,
        cost,
        budget_met: cost <= budget,
        widths,
        plan,
        test_accuracy: history.last().and_then(|e| e.test_accuracy),
        history,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The uniform baseline: every free width scaled by the largest multiplier `m`
/// (widths `max(1, floor(m S_u))`) whose model cost is at most `budget`.
///
/// # Errors
/// [`Error::InfeasibleBudget`] if widths of 1 already cost more; model errors.
pub fn uniform_widths<M: WidthEnergyModel + ?Sized>(
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
    let cost = |w: &[usize]| model.width_energy(&w.iter().map(|v| *v as f64).collect::<Vec<_>>());
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
