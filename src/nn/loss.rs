//! Loss functions on `[batch][classes]` logits; each returns the mean loss over the
//! batch and writes its gradient with respect to the logits.
//!
//! ```text
//! cross-entropy:  L = -(1/B) sum_b log softmax(z_b)[y_b],   dL/dz_b = (softmax(z_b) - onehot(y_b)) / B
//! distillation:   L = (1/(B K)) sum_b ||z_b - t_b||^2,       dL/dz_b = 2 (z_b - t_b) / (B K)
//! ```

use crate::error::{Error, Result};

/// Softmax cross-entropy. Returns `(mean loss, correct predictions)` and *adds*
/// `scale * dL/dz` to `grad` (resize and zero it first for a plain gradient).
///
/// # Errors
/// [`Error::ShapeMismatch`] if lengths disagree, [`Error::InvalidParameter`] for a
/// label `>= classes`.
pub fn cross_entropy(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    scale: f32,
    grad: &mut [f32],
) -> Result<(f32, usize)> {
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
    let mut correct = 0;
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
        let (arg, max) = z
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(ai, am), (i, &v)| {
                if v > am { (i, v) } else { (ai, am) }
            });
        if arg == y {
            correct += 1;
        }
        let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
        loss += (sum.ln() - (z[y] - max)) as f64;
        let g = &mut grad[b * classes..(b + 1) * classes];
        for (i, (gi, zi)) in g.iter_mut().zip(z).enumerate() {
            let p = (zi - max).exp() / sum;
            *gi += scale * (p - if i == y { 1.0 } else { 0.0 }) * inv_b;
        }
    }
    Ok(((loss / batch as f64) as f32, correct))
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

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let logits = vec![0.3f32, -1.2, 2.0, 0.1, 0.5, 0.5, -0.7, 1.1];
        let labels = [2u8, 3];
        let mut g = vec![0.0; 8];
        let (l0, correct) = cross_entropy(&logits, &labels, 4, 1.0, &mut g).unwrap();
        assert_eq!(correct, 2);
        for i in 0..8 {
            let eps = 1e-3;
            let mut lp = logits.clone();
            lp[i] += eps;
            let mut lm = logits.clone();
            lm[i] -= eps;
            let mut dummy = vec![0.0; 8];
            let fp = cross_entropy(&lp, &labels, 4, 1.0, &mut dummy).unwrap().0;
            let fm = cross_entropy(&lm, &labels, 4, 1.0, &mut dummy).unwrap().0;
            let fd = (fp - fm) / (2.0 * eps);
            assert!((fd - g[i]).abs() < 1e-3, "{i}: {fd} vs {}", g[i]);
        }
        assert!(l0 > 0.0);
    }

    #[test]
    fn distillation_gradient_matches_finite_differences() {
        let z = vec![0.3f32, -1.2, 2.0, 0.1];
        let t = vec![0.0f32, 1.0, 1.5, -0.5];
        let mut g = vec![0.0; 4];
        mse_distillation(&z, &t, 0.5, &mut g).unwrap();
        for i in 0..4 {
            let eps = 1e-3;
            let mut zp = z.clone();
            zp[i] += eps;
            let mut zm = z.clone();
            zm[i] -= eps;
            let mut d = vec![0.0; 4];
            let fd = 0.5
                * (mse_distillation(&zp, &t, 1.0, &mut d).unwrap()
                    - mse_distillation(&zm, &t, 1.0, &mut d).unwrap())
                / (2.0 * eps);
            assert!((fd - g[i]).abs() < 1e-3, "{fd} vs {}", g[i]);
        }
    }

    #[test]
    fn bad_labels_and_shapes_are_errors() {
        let mut g = vec![0.0; 4];
        assert!(cross_entropy(&[0.0; 4], &[7, 0], 2, 1.0, &mut g).is_err());
        assert!(cross_entropy(&[0.0; 3], &[0, 0], 2, 1.0, &mut g).is_err());
        assert!(mse_distillation(&[0.0; 4], &[0.0; 3], 1.0, &mut g).is_err());
    }
}
