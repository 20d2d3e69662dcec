//! A plain mini-batch training loop and evaluation, for any [`Trainable`] network.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::loss::{argmax_rows, cross_entropy, mse_distillation};
use super::mnist::Dataset;
use super::optim::Optimizer;
use crate::error::{Error, Result};
use crate::network::Trainable;

/// Settings of one training epoch.
#[derive(Debug, Clone, Copy)]
pub struct TrainConfig<'a> {
    /// Mini-batch size (default 64).
    pub batch_size: usize,
    /// Distillation: the teacher's logits for every training sample (`[n][classes]`)
    /// and the weight `w` of the distillation term:
    /// `loss = w * MSE(z, teacher) + (1 - w) * cross-entropy`.
    pub distill: Option<(&'a [f32], f32)>,
}

impl Default for TrainConfig<'_> {
    fn default() -> Self {
        Self {
            batch_size: 64,
            distill: None,
        }
    }
}

/// Figures of one training epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy (on the fly, before each step).
    pub train_accuracy: f64,
    /// Images processed.
    pub images: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Train for one epoch over a seeded shuffle of `data`, calling `after_step` after
/// every optimizer step (e.g. a projection every k steps).
///
/// # Errors
/// Shape errors from the network, [`Error::NonFinite`] if the loss diverges, and any
/// error returned by `after_step`.
pub fn train_epoch<N: Trainable + ?Sized, O: Optimizer>(
    net: &mut N,
    opt: &mut O,
    data: &Dataset,
    cfg: &TrainConfig<'_>,
    rng: &mut StdRng,
    after_step: &mut dyn FnMut(&mut N, usize) -> Result<()>,
) -> Result<EpochStats> {
    if cfg.batch_size == 0 {
        return Err(Error::param("batch_size", 0, "must be >= 1"));
    }
    if data.image_len() != net.input_len() {
        return Err(Error::shape(
            "image size",
            net.input_len(),
            data.image_len(),
        ));
    }
    let k = net.num_classes();
    if let Some((t, w)) = cfg.distill {
        if t.len() != data.len() * k {
            return Err(Error::shape("teacher logits", data.len() * k, t.len()));
        }
        if !(0.0..=1.0).contains(&w) {
            return Err(Error::param("distill weight", w, "must be in [0, 1]"));
        }
    }
    let start = std::time::Instant::now();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(rng);
    let (mut images, mut labels, mut logits, mut grad, mut teacher) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
    for (step, idx) in order.chunks(cfg.batch_size).enumerate() {
        data.gather(idx, &mut images, &mut labels);
        net.forward(&images, idx.len(), &mut logits)?;
        grad.clear();
        grad.resize(logits.len(), 0.0);
        let ce_weight = cfg.distill.map_or(1.0, |(_, w)| 1.0 - w);
        let (ce, c) = cross_entropy(&logits, &labels, k, ce_weight, &mut grad)?;
        let mut loss = ce_weight as f64 * ce as f64;
        if let Some((t, w)) = cfg.distill {
            teacher.clear();
            for &i in idx {
                teacher.extend_from_slice(&t[i * k..(i + 1) * k]);
            }
            loss += w as f64 * mse_distillation(&logits, &teacher, w, &mut grad)? as f64;
        }
        if !loss.is_finite() {
            return Err(Error::NonFinite {
                what: "training loss".into(),
                index: step,
            });
        }
        net.backward(&grad)?;
        opt.step(net);
        after_step(net, step)?;
        loss_sum += loss * idx.len() as f64;
        correct += c;
        seen += idx.len();
    }
    Ok(EpochStats {
        loss: loss_sum / seen.max(1) as f64,
        train_accuracy: correct as f64 / seen.max(1) as f64,
        images: seen,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Logits of every sample of `data`, `[n][classes]`.
///
/// # Errors
/// Shape errors from the network.
pub fn predict_all<N: Trainable + ?Sized>(
    net: &mut N,
    data: &Dataset,
    batch_size: usize,
) -> Result<Vec<f32>> {
    let il = data.image_len();
    let mut out = Vec::with_capacity(data.len() * net.num_classes());
    let mut logits = Vec::new();
    for (imgs, _) in data
        .images
        .chunks(batch_size.max(1) * il)
        .zip(data.labels.chunks(batch_size.max(1)))
    {
        net.predict(imgs, imgs.len() / il, &mut logits)?;
        out.extend_from_slice(&logits);
    }
    Ok(out)
}

/// Classification accuracy of `net` on `data`.
///
/// # Errors
/// Shape errors from the network.
pub fn evaluate<N: Trainable + ?Sized>(
    net: &mut N,
    data: &Dataset,
    batch_size: usize,
) -> Result<f64> {
    let logits = predict_all(net, data, batch_size)?;
    let k = net.num_classes();
    let correct = argmax_rows(&logits, k)
        .zip(&data.labels)
        .filter(|(p, l)| *p == **l as usize)
        .count();
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
