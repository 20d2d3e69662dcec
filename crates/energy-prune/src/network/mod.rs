//! Capability traits that a network implements so that energy models and optimizers
//! can work on it.
//!
//! The traits are split by capability, and every algorithm asks only for what it
//! uses, so that a missing capability is a compile error rather than a run-time one:
//!
//! | trait | gives | used by |
//! |---|---|---|
//! | [`Network`] | the [`Architecture`] and a copy of each prunable layer's weights (and input mask) | energy evaluation |
//! | [`NetworkMut`] | writing weights back | projection, pruning |
//! | [`Trainable`] | one forward/backward pass on a batch, all parameters with their gradients | training drivers |
//!
//! Weights are exchanged in one canonical layout, `[out][in / groups][kh][kw]`
//! row-major (`[out][in]` for linear layers), by *copying*. A network whose tensors
//! live in another framework (or another layout) implements the traits by converting
//! on the way in and out:
//!
//! ```
//! use energy_prune::arch::{ArchBuilder, Architecture};
//! use energy_prune::network::{Network, NetworkMut};
//! use energy_prune::{Error, Result};
//!
//! /// A one-layer model storing its weights transposed (`[in][out]`), as some
//! /// frameworks do.
//! struct Transposed { arch: Architecture, w_io: Vec<f32> }
//!
//! impl Network for Transposed {
//!     fn architecture(&self) -> &Architecture { &self.arch }
//!     fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()> {
//!         if layer != 0 { return Err(Error::external("only one layer")); }
//!         let (i, o) = (4, 3);
//!         for r in 0..o { for c in 0..i { dst[r * i + c] = self.w_io[c * o + r]; } }
//!         Ok(())
//!     }
//! }
//! impl NetworkMut for Transposed {
//!     fn write_weights(&mut self, _layer: usize, src: &[f32]) -> Result<()> {
//!         let (i, o) = (4, 3);
//!         for r in 0..o { for c in 0..i { self.w_io[c * o + r] = src[r * i + c]; } }
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! let mut b = ArchBuilder::new("toy");
//! let x = b.input(4, 1, 1)?;
//! let y = b.linear("fc", &x, 3, false)?;
//! let mut net = Transposed { arch: b.finish(&y)?, w_io: (0..12).map(|v| v as f32).collect() };
//! let w = net.weights(0)?;            // canonical [out][in]
//! assert_eq!(&w[..4], &[0.0, 3.0, 6.0, 9.0]);
//! net.write_weights(0, &w)?;          // round trip
//! assert_eq!(net.w_io[1], 1.0);
//! # Ok(()) }
//! ```

mod convert;
mod plan;
mod state;

pub use convert::{from_canonical, to_canonical};
pub use plan::{CostModelRecord, Provenance, PruningPlan};
pub use state::NetworkState;
pub(crate) use state::check_mask_len;

use crate::arch::Architecture;
use crate::error::{Error, Result};

/// Read access: the architecture and a copy of each prunable layer's weights.
pub trait Network {
    /// The network's architecture (its prunable layers and widths).
    fn architecture(&self) -> &Architecture;

    /// Copy the weights of prunable layer `layer` into `dst` in the canonical
    /// `[out][in / groups][kh][kw]` layout. `dst.len()` equals the layer's weight count.
    ///
    /// # Errors
    /// Implementations return an error for an out-of-range layer or a wrong length.
    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()>;

    /// Copy layer `layer`'s input mask (`C x H x W` for a convolution, `C` for a
    /// linear layer) into `dst` and return `true`, or return `false` if the layer has
    /// no input mask. The default has none.
    ///
    /// # Errors
    /// Implementations return an error for a wrong length.
    fn read_input_mask(&self, layer: usize, dst: &mut [f32]) -> Result<bool> {
        let _ = (layer, dst);
        Ok(false)
    }

    /// The weights of `layer` as a new vector (canonical layout).
    ///
    /// # Errors
    /// As [`Network::read_weights`], plus [`Error::IndexOutOfRange`].
    fn weights(&self, layer: usize) -> Result<Vec<f32>> {
        let n = self.architecture().layer(layer)?.weight_count();
        let mut v = vec![0.0; n];
        self.read_weights(layer, &mut v)?;
        Ok(v)
    }
}

/// Write access to the weights of the prunable layers.
pub trait NetworkMut: Network {
    /// Overwrite the weights of prunable layer `layer` from `src` (canonical layout).
    ///
    /// # Errors
    /// Implementations return an error for an out-of-range layer or a wrong length,
    /// and must leave the layer unchanged in that case.
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> Result<()>;

    /// Overwrite layer `layer`'s input mask. The default reports that the network
    /// has no input masks.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the network has no input masks.
    fn write_input_mask(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        let _ = src;
        Err(Error::unsupported(
            format!("an input mask on layer {layer}"),
            "this network does not implement layer input masks; train without them",
        ))
    }

    /// Quantize the input activations of layer `layer` in `format` in every
    /// training and inference pass from now on (a lossless format turns it off;
    /// see [`quant`](crate::quant)), returning `true`; or return `false` if the
    /// network does not quantize activations (the default): the precision is then
    /// priced but not trained.
    ///
    /// # Errors
    /// Implementations return an error for an out-of-range layer.
    fn set_activation_format(
        &mut self,
        layer: usize,
        format: crate::energy::NumberFormat,
    ) -> Result<bool> {
        let _ = (layer, format);
        Ok(false)
    }

    /// The per-output-channel scales layer `layer`'s weights are quantized with
    /// (`None`: not quantized), so that a network quantizing that layer's input
    /// activations at scale `s_x` can train with its bias on the accumulator's
    /// grid `s_x s_w[c]`, as an integer kernel holds it (see
    /// [`quant::quantize_bias`](crate::quant::quantize_bias)); returns whether it
    /// does. The default ignores the scales and returns `false`.
    ///
    /// # Errors
    /// Implementations return an error for an out-of-range layer or scales not
    /// one per output channel.
    fn set_weight_scales(&mut self, layer: usize, scales: Option<&[f32]>) -> Result<bool> {
        let _ = (layer, scales);
        Ok(false)
    }
}

/// What a parameter tensor is, as seen by optimizers and pruning drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// The weights of prunable layer `.0` (canonical layout).
    Weight(usize),
    /// The bias of prunable layer `.0`.
    Bias(usize),
    /// The learnable input mask of prunable layer `.0`.
    InputMask(usize),
    /// Any other parameter (normalisation, embeddings ...), numbered by the network.
    Other(usize),
}

/// The visitor of [`Trainable::visit_params`]: receives each parameter tensor's
/// kind, values (mutable) and gradient.
pub type ParamVisitor<'a> = dyn FnMut(ParamKind, &mut [f32], &[f32]) + 'a;

/// Training capability: one forward/backward pass on a batch and all parameters
/// with their gradients.
pub trait Trainable: NetworkMut {
    /// Elements of one input sample (e.g. `1 * 32 * 32`).
    fn input_len(&self) -> usize;

    /// Number of output logits per sample.
    fn num_classes(&self) -> usize;

    /// Forward `batch` samples (`input.len() == batch * input_len()`), writing the
    /// logits `[batch][classes]` into `logits` (resized as needed) and keeping what
    /// the backward pass needs.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] on a wrong input length.
    fn forward(&mut self, input: &[f32], batch: usize, logits: &mut Vec<f32>) -> Result<()>;

    /// Back-propagate `grad_logits` (`[batch][classes]`, the gradient of the loss with
    /// respect to the logits of the last forward pass) and store the gradients of
    /// all parameters (overwriting previous ones).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] on a wrong length or if no forward pass preceded.
    fn backward(&mut self, grad_logits: &[f32]) -> Result<()>;

    /// Visit every trainable parameter with its gradient, always in the same order.
    /// Each [`ParamKind`] must appear at most once (optimizers key their state by it).
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>);

    /// Inference-only forward pass (no state kept for backward). Defaults to
    /// [`Trainable::forward`].
    ///
    /// # Errors
    /// As [`Trainable::forward`].
    fn predict(&mut self, input: &[f32], batch: usize, logits: &mut Vec<f32>) -> Result<()> {
        self.forward(input, batch, logits)
    }
}

impl<T: Network + ?Sized> Network for &T {
    fn architecture(&self) -> &Architecture {
        (**self).architecture()
    }
    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()> {
        (**self).read_weights(layer, dst)
    }
    fn read_input_mask(&self, layer: usize, dst: &mut [f32]) -> Result<bool> {
        (**self).read_input_mask(layer, dst)
    }
}

impl<T: Network + ?Sized> Network for &mut T {
    fn architecture(&self) -> &Architecture {
        (**self).architecture()
    }
    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()> {
        (**self).read_weights(layer, dst)
    }
    fn read_input_mask(&self, layer: usize, dst: &mut [f32]) -> Result<bool> {
        (**self).read_input_mask(layer, dst)
    }
}

impl<T: NetworkMut + ?Sized> NetworkMut for &mut T {
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        (**self).write_weights(layer, src)
    }
    fn write_input_mask(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        (**self).write_input_mask(layer, src)
    }
    fn set_activation_format(
        &mut self,
        layer: usize,
        format: crate::energy::NumberFormat,
    ) -> Result<bool> {
        (**self).set_activation_format(layer, format)
    }
    fn set_weight_scales(&mut self, layer: usize, scales: Option<&[f32]>) -> Result<bool> {
        (**self).set_weight_scales(layer, scales)
    }
}
