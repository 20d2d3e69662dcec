//! Losses on `[batch][classes]` logits.
//!
//! ```text
//! cross-entropy:  L = -(1/B) sum_b log softmax(z_b)[y_b],   dL/dz_b = (softmax(z_b) - onehot(y_b)) / B
//! distillation:   L = (1 - w) L_base + w (1/(B K)) sum_b ||z_b - t_b||^2,   t_b = teacher logits
//! ```
//!
//! A loss is anything implementing [`Loss`]: given the logits of a batch and the
//! batch itself (labels and sample indices, so that per-sample targets such as a
//! teacher's logits can be looked up), it returns the mean loss and adds its
//! gradient with respect to the logits. [`CrossEntropy`] and [`Distillation`] are
//! provided; a user's loss implements the trait (or is a closure wrapped in
//! [`LossFn`]).

use crate::error::{Error, Result};

/// One mini-batch as a loss sees it.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Index of every sample in its data source (to look up per-sample targets).
    pub indices: &'a [usize],
    /// Class label of every sample.
    pub labels: &'a [u32],
    /// Logits per sample.
    pub classes: usize,
}

/// A training objective on the logits of a batch.
pub trait Loss {
    /// Mean loss of `batch` given its `logits` (`[batch][classes]`); *adds*
    /// `scale * dL/dlogits` to `grad` (same length as `logits`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for inconsistent lengths, [`Error::InvalidParameter`]
    /// for a label out of range, and the loss's own errors.
    fn accumulate(
        &mut self,
        logits: &[f32],
        batch: &Batch<'_>,
        scale: f32,
        grad: &mut [f32],
    ) -> Result<f64>;
}

impl<L: Loss + ?Sized> Loss for &mut L {
    fn accumulate(&mut self, z: &[f32], b: &Batch<'_>, s: f32, g: &mut [f32]) -> Result<f64> {
        (**self).accumulate(z, b, s, g)
    }
}

impl<L: Loss + ?Sized> Loss for Box<L> {
    fn accumulate(&mut self, z: &[f32], b: &Batch<'_>, s: f32, g: &mut [f32]) -> Result<f64> {
        (**self).accumulate(z, b, s, g)
    }
}

/// A closure `(logits, batch, scale, grad) -> mean loss` as a [`Loss`].
#[derive(Debug, Clone, Copy)]
pub struct LossFn<F>(pub F);

impl<F> Loss for LossFn<F>
where
    F: FnMut(&[f32], &Batch<'_>, f32, &mut [f32]) -> Result<f64>,
{
    fn accumulate(&mut self, z: &[f32], b: &Batch<'_>, s: f32, g: &mut [f32]) -> Result<f64> {
        (self.0)(z, b, s, g)
    }
}

/// Softmax cross-entropy on the labels (see [`cross_entropy`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CrossEntropy;

impl Loss for CrossEntropy {
    fn accumulate(&mut self, z: &[f32], b: &Batch<'_>, s: f32, g: &mut [f32]) -> Result<f64> {
        Ok(cross_entropy(z, b.labels, b.classes, s, g)? as f64)
    }
}

/// Knowledge distillation: `(1 - w) base + w MSE(logits, teacher logits)`, the
/// teacher's logits stored for every sample of the training source (`[n][classes]`,
/// looked up by [`Batch::indices`]).
#[derive(Debug, Clone)]
pub struct Distillation<L> {
    base: L,
    teacher: Vec<f32>,
    weight: f32,
    gathered: Vec<f32>,
}

impl<L: Loss> Distillation<L> {
    /// Distil from `teacher` logits (`[n][classes]`) with weight `weight` in `[0, 1]`
    /// on top of `base`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a weight outside `[0, 1]`.
    pub fn new(base: L, teacher: Vec<f32>, weight: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&weight) {
            return Err(Error::param("distill weight", weight, "must be in [0, 1]"));
        }
        Ok(Self {
            base,
            teacher,
            weight,
            gathered: Vec::new(),
        })
    }

    /// The distillation weight `w`.
    pub fn weight(&self) -> f32 {
        self.weight
    }
}

impl<L: Loss> Loss for Distillation<L> {
    fn accumulate(
        &mut self,
        logits: &[f32],
        batch: &Batch<'_>,
        scale: f32,
        grad: &mut [f32],
    ) -> Result<f64> {
        let (w, k) = (self.weight, batch.classes);
        let base = self
            .base
            .accumulate(logits, batch, scale * (1.0 - w), grad)?;
        self.gathered.clear();
        for &i in batch.indices {
            let row = self.teacher.get(i * k..(i + 1) * k).ok_or_else(|| {
                Error::shape(
                    "teacher logits (samples * classes)",
                    (i + 1) * k,
                    self.teacher.len(),
                )
            })?;
            self.gathered.extend_from_slice(row);
        }
        let mse = mse_distillation(logits, &self.gathered, scale * w, grad)?;
        Ok((1.0 - w) as f64 * base + w as f64 * mse as f64)
    }
}

/// Softmax cross-entropy of a batch: returns the mean loss and *adds*
/// `scale * dL/dz` to `grad` (resize and zero it first for a plain gradient).
///
/// # Errors
/// [`Error::ShapeMismatch`] if lengths disagree, [`Error::InvalidParameter`] for a
/// label `>= classes`.
pub fn cross_entropy(
    logits: &[f32],
    labels: &[u32],
    classes: usize,
    scale: f32,
    grad: &mut [f32],
) -> Result<f32> {
    let batch = labels.len();
    if classes == 0 || logits.len() != batch * classes {
        return Err(Error::shape(
            "logits (batch * classes)",
            batch * classes,
            logits.len(),
        ));
    }
    if grad.len() != logits.len() {
        return Err(Error::shape("loss gradient", logits.len(), grad.len()));
    }
    let mut loss = 0.0f64;
    let inv_b = 1.0 / batch as f32;
    for (b, &y) in labels.iter().enumerate() {
        let y = y as usize;
        if y >= classes {
            return Err(Error::param(
                "label",
                y,
                format!("labels must be < {classes}"),
            ));
        }
        let z = &logits[b * classes..(b + 1) * classes];
        let max = z
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
        loss += (sum.ln() - (z[y] - max)) as f64;
        let g = &mut grad[b * classes..(b + 1) * classes];
        for (i, (gi, zi)) in g.iter_mut().zip(z).enumerate() {
            let p = (zi - max).exp() / sum;
            *gi += scale * (p - if i == y { 1.0 } else { 0.0 }) * inv_b;
        }
    }
    Ok((loss / batch as f64) as f32)
}

/// Mean squared error to a teacher's logits (knowledge distillation). Returns the
/// mean loss and *adds* `scale * dL/dz` to `grad`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if lengths disagree.
pub fn mse_distillation(
    logits: &[f32],
    teacher: &[f32],
    scale: f32,
    grad: &mut [f32],
) -> Result<f32> {
    if teacher.len() != logits.len() || grad.len() != logits.len() {
        return Err(Error::shape(
            "teacher logits / gradient",
            logits.len(),
            teacher.len().min(grad.len()),
        ));
    }
    if logits.is_empty() {
        return Ok(0.0);
    }
    let inv = 1.0 / logits.len() as f32;
    let mut loss = 0.0f64;
    for ((g, z), t) in grad.iter_mut().zip(logits).zip(teacher) {
        let d = z - t;
        loss += (d * d) as f64;
        *g += scale * 2.0 * d * inv;
    }
    Ok((loss * inv as f64) as f32)
}

/// Index of the largest logit of each sample.
pub fn argmax_rows(logits: &[f32], classes: usize) -> impl Iterator<Item = usize> + '_ {
    logits.chunks_exact(classes.max(1)).map(|z| {
        z.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(ai, am), (i, &v)| {
                if v > am { (i, v) } else { (ai, am) }
            })
            .0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use energy_prune_testing::check_gradient;

    fn f32s(x: &[f64]) -> Vec<f32> {
        x.iter().map(|v| *v as f32).collect()
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let logits = [0.3, -1.2, 2.0, 0.1, 0.5, 0.5, -0.7, 1.1];
        let labels = [2u32, 3];
        let mut g = vec![0.0; 8];
        let l0 = cross_entropy(&f32s(&logits), &labels, 4, 1.0, &mut g).unwrap();
        assert!(l0 > 0.0);
        assert_eq!(
            argmax_rows(&f32s(&logits), 4).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let g: Vec<f64> = g.iter().map(|v| *v as f64).collect();
        check_gradient(&logits, &g, 1e-3, 1e-3, 1e-2, |z| {
            cross_entropy(&f32s(z), &labels, 4, 1.0, &mut [0.0; 8]).unwrap() as f64
        })
        .unwrap();
    }

    #[test]
    fn distillation_gradient_matches_finite_differences() {
        let z = [0.3, -1.2, 2.0, 0.1, 0.4, -0.1, 0.0, 1.0];
        let t = vec![0.0f32, 1.0, 1.5, -0.5, 0.2, 0.2, 0.3, -1.0];
        let labels = [1u32, 3];
        let (w, scale) = (0.25f32, 0.5f32);
        let mut loss = Distillation::new(CrossEntropy, t, w).unwrap();
        let batch = Batch {
            indices: &[0, 1],
            labels: &labels,
            classes: 4,
        };
        let mut g = vec![0.0; 8];
        loss.accumulate(&f32s(&z), &batch, scale, &mut g).unwrap();
        let g: Vec<f64> = g.iter().map(|v| *v as f64).collect();
        check_gradient(&z, &g, 1e-3, 1e-3, 1e-2, |z| {
            scale as f64
                * loss
                    .accumulate(&f32s(z), &batch, 1.0, &mut [0.0; 8])
                    .unwrap()
        })
        .unwrap();
    }

    #[test]
    fn a_closure_is_a_loss() {
        let mut half_ce = LossFn(|z: &[f32], b: &Batch<'_>, s: f32, g: &mut [f32]| {
            Ok(0.5 * cross_entropy(z, b.labels, b.classes, 0.5 * s, g)? as f64)
        });
        let batch = Batch {
            indices: &[0],
            labels: &[1],
            classes: 2,
        };
        let (mut g1, mut g2) = (vec![0.0; 2], vec![0.0; 2]);
        let a = half_ce
            .accumulate(&[0.2, 0.7], &batch, 1.0, &mut g1)
            .unwrap();
        let b = CrossEntropy
            .accumulate(&[0.2, 0.7], &batch, 1.0, &mut g2)
            .unwrap();
        assert!((a - 0.5 * b).abs() < 1e-12);
        assert!((g1[0] - 0.5 * g2[0]).abs() < 1e-7);
    }

    #[test]
    fn bad_labels_shapes_and_teachers_are_errors() {
        let mut g = vec![0.0; 4];
        assert!(cross_entropy(&[0.0; 4], &[7, 0], 2, 1.0, &mut g).is_err());
        assert!(cross_entropy(&[0.0; 3], &[0, 0], 2, 1.0, &mut g).is_err());
        assert!(mse_distillation(&[0.0; 4], &[0.0; 3], 1.0, &mut g).is_err());
        assert!(Distillation::new(CrossEntropy, vec![], 1.5).is_err());
        let mut short = Distillation::new(CrossEntropy, vec![0.0; 2], 0.5).unwrap();
        let batch = Batch {
            indices: &[0, 1],
            labels: &[0, 1],
            classes: 2,
        };
        assert!(short.accumulate(&[0.0; 4], &batch, 1.0, &mut g).is_err());
    }
}
