//! First-order optimizers over the parameters of any [`Trainable`] network.
//!
//! ```text
//! SGD (momentum mu, weight decay lambda):  v <- mu v + (g + lambda w);   w <- w - lr v
//! Adam (beta1, beta2, eps):                m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
//!                                          w <- w - lr * m_hat / (sqrt(v_hat) + eps)
//! ```
//! Weight decay is applied to weights and not to biases or input masks. Every step
//! checks the updated parameters: a NaN or infinite value is reported as
//! [`Error::NonFinite`] naming the parameter, instead of training on garbage.

use std::collections::HashMap;

use crate::error::{Error, Origin, Result};
use crate::network::{ParamKind, Trainable};

/// One optimizer update from the gradients of the last backward pass.
pub trait Optimizer {
    /// Update the parameters of `net`.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if an updated parameter is NaN or infinite (training
    /// diverged), and the optimizer's own errors.
    fn step<N: Trainable + ?Sized>(&mut self, net: &mut N) -> Result<()>;

    /// The current learning rate.
    fn learning_rate(&self) -> f32;

    /// Set the learning rate (schedules call this between epochs).
    fn set_learning_rate(&mut self, lr: f32);

    /// Forget the optimizer's state (momentum, moments), e.g. after pruning.
    fn reset(&mut self) {}

    /// The diagonal preconditioner of the last update, if the optimizer has one
    /// (ADMM's proximal step weighs channels by it).
    fn preconditioner(&self) -> Option<&dyn Preconditioner> {
        None
    }
}

/// A diagonal preconditioner `d` per parameter: the update of an adaptive method is
/// `w <- w - lr * m / d`.
pub trait Preconditioner {
    /// Write `d` of parameter `kind` into `dst` and return `true`, or return `false`
    /// if the optimizer holds no state of that size for it.
    fn diagonal(&self, kind: ParamKind, dst: &mut [f32]) -> bool;
}

impl Optimizer for Sgd {
    fn step<N: Trainable + ?Sized>(&mut self, net: &mut N) -> Result<()> {
        Sgd::step(self, net)
    }
    fn learning_rate(&self) -> f32 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }
    fn reset(&mut self) {
        Sgd::reset(self);
    }
}

impl Optimizer for Adam {
    fn step<N: Trainable + ?Sized>(&mut self, net: &mut N) -> Result<()> {
        Adam::step(self, net)
    }
    fn learning_rate(&self) -> f32 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }
    fn reset(&mut self) {
        self.t = 0;
        self.m.clear();
        self.v.clear();
    }
    fn preconditioner(&self) -> Option<&dyn Preconditioner> {
        Some(self)
    }
}

/// Adam's preconditioner `sqrt(v) + eps` (second moment without bias correction).
impl Preconditioner for Adam {
    fn diagonal(&self, kind: ParamKind, dst: &mut [f32]) -> bool {
        match self.v.get(&kind) {
            Some(v) if v.len() == dst.len() => {
                dst.iter_mut()
                    .zip(v)
                    .for_each(|(d, v)| *d = v.sqrt() + self.eps);
                true
            }
            _ => false,
        }
    }
}

/// Track the first non-finite value written by an update.
#[derive(Default)]
struct FiniteGuard(Option<(ParamKind, usize)>);

impl FiniteGuard {
    #[inline]
    fn check(&mut self, kind: ParamKind, w: &[f32]) {
        if self.0.is_none()
            && let Some(i) = w.iter().position(|v| !v.is_finite())
        {
            self.0 = Some((kind, i));
        }
    }
    fn into_result(self) -> Result<()> {
        match self.0 {
            None => Ok(()),
            Some((kind, index)) => Err(Error::non_finite(
                format!("{kind:?} after the optimizer step"),
                index,
                Origin::Training,
            )),
        }
    }
}

/// Adam on the layer input masks only, with an optional L1 pull towards zero
/// (`l1 * sign(m)` added to the gradient, so entries the loss does not need fade
/// out), each mask clamped to `[0, 1]` after the step: the mask phase of ICLR
/// 2019's input-mask rounds. Weights and biases are left unchanged.
#[derive(Debug, Clone)]
pub struct InputMaskAdam {
    /// The Adam settings and state.
    pub adam: Adam,
    /// L1 coefficient on the masks (>= 0).
    pub l1: f32,
    grad: Vec<f32>,
}

impl InputMaskAdam {
    /// Adam with learning rate `lr` on the masks, L1 coefficient `l1`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a bad rate or a negative / non-finite `l1`.
    pub fn new(lr: f32, l1: f32) -> Result<Self> {
        if !(l1.is_finite() && l1 >= 0.0) {
            return Err(Error::param("l1", l1, "must be finite and >= 0"));
        }
        Ok(Self {
            adam: Adam::new(lr)?,
            l1,
            grad: Vec::new(),
        })
    }
}

impl Optimizer for InputMaskAdam {
    fn learning_rate(&self) -> f32 {
        self.adam.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.adam.lr = lr;
    }
    fn reset(&mut self) {
        Optimizer::reset(&mut self.adam);
    }

    fn step<N: Trainable + ?Sized>(&mut self, net: &mut N) -> Result<()> {
        let mut guard = FiniteGuard::default();
        let a = &mut self.adam;
        a.t += 1;
        let (b1, b2, eps, lr) = (a.beta1, a.beta2, a.eps, a.lr);
        let c1 = 1.0 - b1.powi(a.t);
        let c2 = 1.0 - b2.powi(a.t);
        let (ms, vs, l1, grad) = (&mut a.m, &mut a.v, self.l1, &mut self.grad);
        net.visit_params(&mut |kind, w, g| {
            if !matches!(kind, ParamKind::InputMask(_)) {
                return;
            }
            grad.clear();
            grad.extend(
                g.iter()
                    .zip(w.iter())
                    .map(|(gi, wi)| gi + if *wi > 0.0 { l1 } else { 0.0 }),
            );
            let m = state_for(ms, kind, w.len());
            let v = state_for(vs, kind, w.len());
            for (((wi, gi), mi), vi) in w
                .iter_mut()
                .zip(grad.iter())
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                *mi = b1 * *mi + (1.0 - b1) * gi;
                *vi = b2 * *vi + (1.0 - b2) * gi * gi;
                *wi = (*wi - lr * (*mi / c1) / ((*vi / c2).sqrt() + eps)).clamp(0.0, 1.0);
            }
            guard.check(kind, w);
        });
        guard.into_result()
    }
}

fn check_rate(name: &'static str, v: f32) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::param(name, v, "must be finite and > 0"));
    }
    Ok(())
}

fn check_unit(name: &'static str, v: f32) -> Result<()> {
    if !(0.0..1.0).contains(&v) {
        return Err(Error::param(name, v, "must be in [0, 1)"));
    }
    Ok(())
}

/// Stochastic gradient descent with momentum and decoupled-from-bias weight decay.
///
/// | field | default | range |
/// |---|---|---|
/// | `lr` | 0.05 | > 0 |
/// | `momentum` | 0.9 | [0, 1) |
/// | `weight_decay` | 5e-4 | >= 0 |
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum coefficient.
    pub momentum: f32,
    /// L2 weight decay on weights.
    pub weight_decay: f32,
    velocity: HashMap<ParamKind, Vec<f32>>,
}

impl Sgd {
    /// A validated SGD optimizer.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if a value is out of range.
    pub fn new(lr: f32, momentum: f32, weight_decay: f32) -> Result<Self> {
        check_rate("lr", lr)?;
        check_unit("momentum", momentum)?;
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(Error::param(
                "weight_decay",
                weight_decay,
                "must be finite and >= 0",
            ));
        }
        Ok(Self {
            lr,
            momentum,
            weight_decay,
            velocity: HashMap::new(),
        })
    }

    /// Apply one update from the gradients of the last backward pass to weights,
    /// biases and other parameters (input masks are left unchanged: they are trained
    /// in their own rounds).
    ///
    /// # Errors
    /// [`Error::NonFinite`] if an updated parameter is NaN or infinite.
    pub fn step<N: Trainable + ?Sized>(&mut self, net: &mut N) -> Result<()> {
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        let vel = &mut self.velocity;
        let mut guard = FiniteGuard::default();
        net.visit_params(&mut |kind, w, g| {
            if matches!(kind, ParamKind::InputMask(_)) {
                return;
            }
            let v = state_for(vel, kind, w.len());
            let decay = if matches!(kind, ParamKind::Weight(_)) {
                wd
            } else {
                0.0
            };
            for ((wi, gi), vi) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                *vi = mu * *vi + gi + decay * *wi;
                *wi -= lr * *vi;
            }
            guard.check(kind, w);
        });
        guard.into_result()
    }

    /// Forget the momentum (e.g. after pruning).
    pub fn reset(&mut self) {
        self.velocity.clear();
    }
}

/// Adam (Kingma & Ba, 2015).
///
/// | field | default | range |
/// |---|---|---|
/// | `lr` | 1e-3 | > 0 |
/// | `beta1` | 0.9 | [0, 1) |
/// | `beta2` | 0.999 | [0, 1) |
/// | `eps` | 1e-8 | > 0 |
#[derive(Debug, Clone)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator stabiliser.
    pub eps: f32,
    t: i32,
    m: HashMap<ParamKind, Vec<f32>>,
    v: HashMap<ParamKind, Vec<f32>>,
}

impl Adam {
    /// A validated Adam optimizer with the default betas and eps.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `lr` is not finite and positive.
    pub fn new(lr: f32) -> Result<Self> {
        Self::with_betas(lr, 0.9, 0.999, 1e-8)
    }

    /// A validated Adam optimizer.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if a value is out of range.
    pub fn with_betas(lr: f32, beta1: f32, beta2: f32, eps: f32) -> Result<Self> {
        check_rate("lr", lr)?;
        check_unit("beta1", beta1)?;
        check_unit("beta2", beta2)?;
        check_rate("eps", eps)?;
        Ok(Self {
            lr,
            beta1,
            beta2,
            eps,
            t: 0,
            m: HashMap::new(),
            v: HashMap::new(),
        })
    }

    /// Apply one update to the parameters accepted by `filter`, in the order of
    /// [`Trainable::visit_params`].
    ///
    /// # Errors
    /// [`Error::NonFinite`] if an updated parameter is NaN or infinite.
    pub fn step_filtered<N: Trainable + ?Sized>(
        &mut self,
        net: &mut N,
        filter: impl Fn(ParamKind) -> bool,
    ) -> Result<()> {
        let mut guard = FiniteGuard::default();
        self.t += 1;
        let (b1, b2, eps, lr) = (self.beta1, self.beta2, self.eps, self.lr);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        let (ms, vs) = (&mut self.m, &mut self.v);
        net.visit_params(&mut |kind, w, g| {
            if !filter(kind) {
                return;
            }
            let m = state_for(ms, kind, w.len());
            let v = state_for(vs, kind, w.len());
            for (((wi, gi), mi), vi) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *mi = b1 * *mi + (1.0 - b1) * gi;
                *vi = b2 * *vi + (1.0 - b2) * gi * gi;
                *wi -= lr * (*mi / c1) / ((*vi / c2).sqrt() + eps);
            }
            guard.check(kind, w);
        });
        guard.into_result()
    }

    /// Apply one update to all parameters.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if an updated parameter is NaN or infinite.
    pub fn step<N: Trainable + ?Sized>(&mut self, net: &mut N) -> Result<()> {
        self.step_filtered(net, |_| true)
    }

    /// Second-moment estimate of parameter `kind`, if it has been updated.
    pub fn second_moment(&self, kind: ParamKind) -> Option<&[f32]> {
        self.v.get(&kind).map(Vec::as_slice)
    }
}

/// The optimizer state of parameter `kind`, (re)created as zeros when missing or
/// when the parameter changed size.
fn state_for(map: &mut HashMap<ParamKind, Vec<f32>>, kind: ParamKind, len: usize) -> &mut Vec<f32> {
    let s = map.entry(kind).or_default();
    if s.len() != len {
        s.clear();
        s.resize(len, 0.0);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_hyper_parameters_are_rejected() {
        assert!(Sgd::new(0.0, 0.9, 0.0).is_err());
        assert!(Sgd::new(0.1, 1.0, 0.0).is_err());
        assert!(Sgd::new(0.1, 0.9, -1.0).is_err());
        assert!(Adam::new(f32::NAN).is_err());
        assert!(Adam::with_betas(0.1, 0.9, 1.5, 1e-8).is_err());
    }
}
