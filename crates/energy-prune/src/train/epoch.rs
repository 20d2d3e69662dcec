//! The epoch loop and evaluation, for any [`Trainable`] network, [`DataSource`],
//! [`Loss`] and [`Optimizer`].

use rand::rngs::ChaCha12Rng;
use rand::seq::SliceRandom;

use super::data::DataSource;
use super::loss::{Batch, Loss, argmax_rows};
use super::optim::Optimizer;
use crate::error::{Error, Origin, Result};
use crate::network::Trainable;

/// Whether a run goes on after a hook: returned by step hooks and observers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Control {
    /// Go on.
    #[default]
    Continue,
    /// Stop the run after this step (the run ends with what it has, not an error).
    Stop,
}

/// Figures of one training epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy (on the fly, before each step).
    pub train_accuracy: f64,
    /// Samples processed.
    pub images: usize,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Whether a hook asked to stop before the epoch ended.
    pub stopped: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl EpochStats {
    /// Samples per second.
    pub fn throughput(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
}

/// Train for one epoch over a seeded shuffle of `data` in batches of `batch_size`:
/// forward, `loss`, backward, `opt.step`, then `after_step(net, opt, step)` (e.g. a
/// constrained-optimizer step every k updates). A hook returning
/// [`Control::Stop`] ends the epoch after that step.
///
/// # Errors
/// [`Error::InvalidParameter`] for a zero batch size, [`Error::ShapeMismatch`] if
/// the samples do not fit the network, [`Error::NonFinite`] if the loss diverges,
/// and errors of the network, loss, optimizer, data source and hook.
pub fn train_epoch<N, O, D, L>(
    net: &mut N,
    opt: &mut O,
    data: &D,
    loss: &mut L,
    batch_size: usize,
    rng: &mut ChaCha12Rng,
    after_step: &mut dyn FnMut(&mut N, &O, usize) -> Result<Control>,
) -> Result<EpochStats>
where
    N: Trainable + ?Sized,
    O: Optimizer + ?Sized,
    D: DataSource + ?Sized,
    L: Loss + ?Sized,
{
    if batch_size == 0 {
        return Err(Error::param("batch_size", 0, "must be >= 1"));
    }
    if data.sample_len() != net.input_len() {
        return Err(Error::shape(
            "sample length (network input)",
            net.input_len(),
            data.sample_len(),
        ));
    }
    let k = net.num_classes();
    let start = std::time::Instant::now();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(rng);
    let (mut inputs, mut labels, mut logits, mut grad) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut loss_sum, mut correct, mut seen, mut steps) = (0.0f64, 0usize, 0usize, 0usize);
    let mut stopped = false;
    for (step, idx) in order.chunks(batch_size).enumerate() {
        data.gather(idx, &mut inputs, &mut labels)?;
        net.forward(&inputs, idx.len(), &mut logits)?;
        grad.clear();
        grad.resize(logits.len(), 0.0);
        let batch = Batch {
            indices: idx,
            labels: &labels,
            classes: k,
        };
        let value = loss.accumulate(&logits, &batch, 1.0, &mut grad)?;
        if !value.is_finite() {
            return Err(Error::non_finite("training loss", step, Origin::Training));
        }
        correct += argmax_rows(&logits, k)
            .zip(&labels)
            .filter(|(p, l)| *p == **l as usize)
            .count();
        net.backward(&grad)?;
        opt.step(net)?;
        let control = after_step(net, opt, step)?;
        loss_sum += value * idx.len() as f64;
        seen += idx.len();
        steps += 1;
        if control == Control::Stop {
            stopped = true;
            break;
        }
    }
    Ok(EpochStats {
        loss: loss_sum / seen.max(1) as f64,
        train_accuracy: correct as f64 / seen.max(1) as f64,
        images: seen,
        steps,
        stopped,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Logits of every sample of `data`, `[n][classes]`, in batches of `batch_size`.
///
/// # Errors
/// Shape errors from the network and errors of the data source.
pub fn predict_all<N, D>(net: &mut N, data: &D, batch_size: usize) -> Result<Vec<f32>>
where
    N: Trainable + ?Sized,
    D: DataSource + ?Sized,
{
    let mut out = Vec::with_capacity(data.len() * net.num_classes());
    let (mut inputs, mut labels, mut logits) = (Vec::new(), Vec::new(), Vec::new());
    let all: Vec<usize> = (0..data.len()).collect();
    for idx in all.chunks(batch_size.max(1)) {
        data.gather(idx, &mut inputs, &mut labels)?;
        net.predict(&inputs, idx.len(), &mut logits)?;
        out.extend_from_slice(&logits);
    }
    Ok(out)
}

/// Classification accuracy of `net` on `data`.
///
/// # Errors
/// Shape errors from the network and errors of the data source.
pub fn evaluate<N, D>(net: &mut N, data: &D, batch_size: usize) -> Result<f64>
where
    N: Trainable + ?Sized,
    D: DataSource + ?Sized,
{
    let k = net.num_classes();
    let (mut inputs, mut labels, mut logits) = (Vec::new(), Vec::new(), Vec::new());
    let all: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0usize;
    for idx in all.chunks(batch_size.max(1)) {
        data.gather(idx, &mut inputs, &mut labels)?;
        net.predict(&inputs, idx.len(), &mut logits)?;
        correct += argmax_rows(&logits, k)
            .zip(&labels)
            .filter(|(p, l)| *p == **l as usize)
            .count();
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

/// Cosine learning-rate schedule: `base * (1 + cos(pi * step / total)) / 2`,
/// falling from `base` at step 0 towards 0 at `total`.
pub fn cosine_lr(base: f32, step: usize, total: usize) -> f32 {
    if total == 0 {
        return base;
    }
    let t = (step.min(total) as f64) / total as f64;
    (base as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_falls_from_base_to_zero() {
        assert_eq!(cosine_lr(0.1, 0, 10), 0.1);
        assert!((cosine_lr(0.1, 5, 10) - 0.05).abs() < 1e-7);
        assert!(cosine_lr(0.1, 10, 10).abs() < 1e-9);
        assert_eq!(cosine_lr(0.1, 3, 0), 0.1);
    }
}
