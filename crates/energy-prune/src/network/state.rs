//! [`NetworkState`]: a snapshot of the weights and input masks of every prunable
//! layer, the *sparsity state* that weight-level cost models price.

use super::{Network, NetworkMut};
use crate::arch::Architecture;
use crate::error::{Error, Result};

/// The weights and input masks of every prunable layer: the *sparsity state* that a
/// weight-level model prices. A weight is "in the support" when it is nonzero; an
/// input element is present when its mask entry is nonzero (no mask: all present).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkState {
    /// Weights per prunable layer, canonical layout.
    pub weights: Vec<Vec<f32>>,
    /// Optional input mask per prunable layer (`C x H x W` for conv, `C` for linear).
    pub input_masks: Vec<Option<Vec<f32>>>,
}

impl NetworkState {
    /// Copy the weights and input masks out of a network.
    ///
    /// # Errors
    /// Errors of the network's `read_weights` / `read_input_mask`.
    pub fn from_network<N: Network + ?Sized>(net: &N) -> Result<Self> {
        let arch = net.architecture();
        let mut weights = Vec::with_capacity(arch.layers().len());
        let mut input_masks = Vec::with_capacity(arch.layers().len());
        for (l, layer) in arch.layers().iter().enumerate() {
            weights.push(net.weights(l)?);
            let mut m = vec![0.0; layer.in_features()];
            input_masks.push(net.read_input_mask(l, &mut m)?.then_some(m));
        }
        Ok(Self {
            weights,
            input_masks,
        })
    }

    /// All weights equal to one, no input masks: the dense network.
    pub fn dense(arch: &Architecture) -> Self {
        Self {
            weights: arch
                .layers()
                .iter()
                .map(|l| vec![1.0; l.weight_count()])
                .collect(),
            input_masks: vec![None; arch.layers().len()],
        }
    }

    /// Write the weights back into a network (masks are not written).
    ///
    /// Everything is checked before the first write (shapes against the network's
    /// architecture, finiteness); if the network itself then refuses a layer, the
    /// layers already written are restored, so the network is unchanged on error.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the state does not fit the network,
    /// [`Error::NonFinite`] for a NaN or infinite weight, and errors of the
    /// network's `write_weights`.
    pub fn write_weights_to<N: NetworkMut + ?Sized>(&self, net: &mut N) -> Result<()> {
        self.check(net.architecture())?;
        for (l, w) in self.weights.iter().enumerate() {
            crate::error::check_finite(&format!("weights of layer {l}"), w)?;
        }
        let mut previous = Vec::with_capacity(self.weights.len());
        for (l, w) in self.weights.iter().enumerate() {
            previous.push(net.weights(l)?);
            if let Err(e) = net.write_weights(l, w) {
                for (k, old) in previous.iter().enumerate().take(l) {
                    // Best effort: these layers accepted a write of this shape before.
                    let _ = net.write_weights(k, old);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Check that every weight and every input-mask value is finite.
    ///
    /// # Errors
    /// [`Error::NonFinite`](crate::Error::NonFinite) naming the layer and index of
    /// the first NaN or infinity.
    pub fn check_finite(&self) -> crate::Result<()> {
        for (l, w) in self.weights.iter().enumerate() {
            crate::error::check_finite(&format!("weights of layer {l}"), w)?;
        }
        for (l, m) in self.input_masks.iter().enumerate() {
            if let Some(m) = m {
                crate::error::check_finite(&format!("input mask of layer {l}"), m)?;
            }
        }
        Ok(())
    }

    /// Number of nonzero weights per layer.
    pub fn nonzeros(&self) -> Vec<u64> {
        self.weights
            .iter()
            .map(|w| w.iter().filter(|v| **v != 0.0).count() as u64)
            .collect()
    }

    /// Check that the state fits `arch` (one entry per layer, right lengths).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming the first layer that does not fit.
    pub fn check(&self, arch: &Architecture) -> Result<()> {
        let n = arch.layers().len();
        if self.weights.len() != n || self.input_masks.len() != n {
            return Err(Error::shape(
                "layers in the network state",
                n,
                self.weights.len().min(self.input_masks.len()),
            ));
        }
        for (layer, (w, m)) in arch
            .layers()
            .iter()
            .zip(self.weights.iter().zip(&self.input_masks))
        {
            if w.len() != layer.weight_count() {
                return Err(Error::shape(
                    format!("weights of layer {}", layer.name),
                    layer.weight_count(),
                    w.len(),
                ));
            }
            check_mask_len(layer, m.as_deref())?;
        }
        Ok(())
    }
}

/// An input mask, if present, must have one entry per input element of `layer`.
pub(crate) fn check_mask_len(layer: &crate::arch::Layer, mask: Option<&[f32]>) -> Result<()> {
    match mask {
        Some(m) if m.len() != layer.in_features() => Err(Error::shape(
            format!("input mask of layer {}", layer.name),
            layer.in_features(),
            m.len(),
        )),
        _ => Ok(()),
    }
}
