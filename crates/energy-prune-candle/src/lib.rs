#![warn(missing_docs)]
//! # energy-prune-candle
//!
//! A [candle](https://github.com/huggingface/candle) model as a
//! [`Network`]/[`NetworkMut`]/[`Trainable`], so that the crate's energy models,
//! projections and training driver work on it unchanged.
//!
//! The model stays a candle model: its forward pass is candle's, gradients come
//! from candle's autograd, and its weights stay in its own [`Var`]s. The adapter
//! only needs to know which `Var`s hold each prunable layer of the
//! [`Architecture`] that describes the model to the cost models (candle's
//! convolution weights `[out][in / groups][kh][kw]` and linear weights
//! `[out][in]` are already the crate's canonical layout).
//!
//! ```no_run
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use energy_prune::arch::zoo;
//! use energy_prune_candle::{CandleLayer, CandleNetwork};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
//! let fc = candle_nn::linear(4, 3, vb.pp("fc"))?;
//! let arch = {
//!     let mut b = energy_prune::arch::ArchBuilder::new("tiny");
//!     let x = b.input(4, 1, 1)?;
//!     let y = b.linear("fc", &x, 3, true)?;
//!     b.finish(&y)?
//! };
//! let layers = vec![CandleLayer::from_varmap(&vars, "fc")?];
//! // Inputs arrive as N x C x H x W: the module flattens them for its linear layer.
//! let model = move |x: &Tensor| fc.forward(&x.flatten_from(1)?);
//! let net = CandleNetwork::new(arch, model, layers, vec![], [4, 1, 1])?;
//! # Ok(()) }
//! ```
//!
//! **Activation quantization.** A candle model is the user's code, so the adapter
//! cannot reach into its layers; the model calls an [`ActivationQuant`] on the
//! input of each layer whose activations are quantized (`q.forward(&x)?` before the
//! layer), and [`CandleNetwork::with_activation_quantizers`] hands the same handles
//! to the adapter. The joint solver then sets their formats through
//! [`NetworkMut::set_activation_format`], training passes track their ranges
//! (calibrated on the first batches, then a moving average, as
//! [`ActivationQuantizer`] does) and gradients are straight-through inside the range.
//!
//! Each optimizer step copies every parameter out of and back into its `Var`
//! (the traits exchange plain slices); for the small and mid-sized models this
//! adapter targets the copies cost far less than the forward and backward passes.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, Tensor, Var};

use std::sync::{Arc, Mutex};

use energy_prune::arch::Architecture;
use energy_prune::energy::NumberFormat;
use energy_prune::error::{Error, Result};
use energy_prune::network::{Network, NetworkMut, ParamKind, ParamVisitor, Trainable};
use energy_prune::quant::ActivationQuantizer;

/// `k x k` max pooling with stride `k` (floor mode) whose gradient is exact:
/// a reshape and two max reductions.
///
/// candle 0.9's own `Tensor::max_pool2d` scales its gradient by `1 / k²` (its
/// backward multiplies by the window's mean of the max mask where it should
/// divide by the number of maxima), which weakens every layer before a pool; use
/// this one in models trained through [`CandleNetwork`]. The forward result is
/// the same.
///
/// # Errors
/// candle's errors: an input that is not 4-D, a kernel of 0 or larger than the map.
pub fn max_pool2d(x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if k == 0 || k > h || k > w {
        candle_core::bail!("max_pool2d: kernel {k} does not fit a {h}x{w} map");
    }
    let (oh, ow) = (h / k, w / k);
    let x = if oh * k != h || ow * k != w {
        x.narrow(2, 0, oh * k)?.narrow(3, 0, ow * k)?.contiguous()?
    } else {
        x.contiguous()?
    };
    x.reshape((n, c, oh, k, ow, k))?.max(5)?.max(3)
}

/// The state an [`ActivationQuant`] shares with the adapter.
#[derive(Debug)]
struct QuantState {
    quantizer: ActivationQuantizer,
    /// Whether the current pass is a training pass (ranges tracked).
    training: bool,
}

/// A fake-quantizer of one layer's input activations, called by the model's
/// forward pass and shared with the [`CandleNetwork`] (clones are one handle):
/// `q(x) = s clamp(round(x / s), -L, L)` with `s = range / L`, the straight-through
/// gradient inside `[-range, range]` and zero outside; a lossless format (the
/// default, 16 bits) passes `x` through while still tracking the range. candle
/// rounds ties away from zero (the reference CNN and ONNX to even: the two differ
/// only on exact ties).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use energy_prune::energy::NumberFormat;
/// use energy_prune_candle::ActivationQuant;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = ActivationQuant::new();
/// q.set_format(NumberFormat::Int(4))?;
/// q.set_range(7.0)?; // s = 1
/// let x = Tensor::new(&[0.4f32, 1.6, -9.0], &Device::Cpu)?;
/// assert_eq!(q.forward(&x)?.to_vec1::<f32>()?, vec![0.0, 2.0, -7.0]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ActivationQuant {
    state: Arc<Mutex<QuantState>>,
}

impl Default for ActivationQuant {
    fn default() -> Self {
        Self::new()
    }
}

impl ActivationQuant {
    /// A quantizer at 16 bits (lossless), calibrating.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(QuantState {
                quantizer: ActivationQuantizer::new(NumberFormat::INT16),
                training: false,
            })),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, QuantState>> {
        self.state
            .lock()
            .map_err(|_| Error::external("an activation quantizer's lock is poisoned"))
    }

    /// Set the format (as the joint solver does through the adapter).
    ///
    /// # Errors
    /// As [`NumberFormat::validate`].
    pub fn set_format(&self, format: NumberFormat) -> Result<()> {
        format.validate()?;
        self.lock()?.quantizer.format = format;
        Ok(())
    }

    /// Fix the clipping range by hand (ends the calibration).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a range that is not finite and positive.
    pub fn set_range(&self, range: f32) -> Result<()> {
        if !(range.is_finite() && range > 0.0) {
            return Err(Error::param(
                "activation range",
                range,
                "a finite positive clipping range",
            ));
        }
        let mut st = self.lock()?;
        st.quantizer.range = range;
        st.quantizer.calibrating = false;
        Ok(())
    }

    /// Replace the quantizer's whole state (format, range, momentum, calibration).
    ///
    /// # Errors
    /// As [`NumberFormat::validate`].
    pub fn set_quantizer(&self, quantizer: ActivationQuantizer) -> Result<()> {
        quantizer.format.validate()?;
        self.lock()?.quantizer = quantizer;
        Ok(())
    }

    /// The quantizer's state (format, range, calibration).
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn quantizer(&self) -> Result<ActivationQuantizer> {
        Ok(self.lock()?.quantizer)
    }

    fn set_training(&self, training: bool) -> Result<()> {
        self.lock()?.training = training;
        Ok(())
    }

    /// Fake-quantize `x` (see the type's docs); in a training pass the range is
    /// first updated from `max |x|`.
    ///
    /// # Errors
    /// candle's errors.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| candle_core::Error::Msg("activation quantizer lock poisoned".into()))?;
        if st.training {
            let max = x.abs()?.max_all()?.to_scalar::<f32>()?;
            st.quantizer.observe_max(max);
        }
        let q = st.quantizer;
        drop(st);
        let (Some(levels), scale) = (q.format.levels(), q.scale()) else {
            return Ok(x.clone());
        };
        if scale <= 0.0 {
            return Ok(x.clone());
        }
        let (s, r) = (f64::from(scale), f64::from(q.range));
        // Straight through inside the range: the clamped input carries the gradient,
        // the rounding is added without one.
        let clamped = x.clamp(-r, r)?;
        let rounded = (clamped
            .affine(1.0 / s, 0.0)?
            .round()?
            .clamp(-f64::from(levels), f64::from(levels))?
            * s)?;
        clamped.clone() + (rounded - clamped)?.detach()
    }
}

fn candle<T>(r: candle_core::Result<T>) -> Result<T> {
    r.map_err(Error::external)
}

/// The `Var`s of one prunable layer: its weight and optional bias.
#[derive(Debug, Clone)]
pub struct CandleLayer {
    /// Weights, `[out][in / groups][kh][kw]` or `[out][in]`.
    pub weight: Var,
    /// Bias, `[out]`.
    pub bias: Option<Var>,
}

impl CandleLayer {
    /// The layer whose variables `candle_nn` named `{prefix}.weight` and
    /// `{prefix}.bias` (the bias is optional) in `vars`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `{prefix}.weight` is not in `vars`.
    pub fn from_varmap(vars: &candle_nn::VarMap, prefix: &str) -> Result<Self> {
        let data = vars
            .data()
            .lock()
            .map_err(|_| Error::external("the VarMap lock is poisoned"))?;
        let weight = data.get(&format!("{prefix}.weight")).cloned().ok_or_else(|| {
            Error::param(
                "layer prefix",
                prefix,
                "no `{prefix}.weight` variable in the VarMap; use the prefix given to vb.pp(...)",
            )
        })?;
        let bias = data.get(&format!("{prefix}.bias")).cloned();
        Ok(Self { weight, bias })
    }
}

/// A candle model with the prunable layers of its [`Architecture`] bound to its
/// `Var`s. The model receives its input as an `N x C x H x W` tensor. See the
/// [module docs](self).
pub struct CandleNetwork<M> {
    arch: Architecture,
    model: M,
    layers: Vec<CandleLayer>,
    others: Vec<Var>,
    input: [usize; 3],
    classes: usize,
    device: Device,
    logits: Option<Tensor>,
    grads: Option<GradStore>,
    /// The input quantizer of each prunable layer, where the model calls one.
    quant: Vec<Option<ActivationQuant>>,
    /// A failure inside `visit_params` (which cannot return one), reported by the
    /// next forward pass.
    deferred: Option<Error>,
}

impl<M> std::fmt::Debug for CandleNetwork<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleNetwork")
            .field("architecture", &self.arch.name())
            .field("layers", &self.layers.len())
            .field("others", &self.others.len())
            .field("input", &self.input)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl<M: Module> CandleNetwork<M> {
    /// Bind `model` to `arch`: `layers[l]` holds the variables of prunable layer
    /// `l`, `others` any further trainable variables (normalisation, embeddings),
    /// `input` the `[C, H, W]` of one sample.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the number of layers or a variable's size
    /// disagrees with the architecture; [`Error::Unsupported`] for a variable that
    /// is not `f32`.
    pub fn new(
        arch: Architecture,
        model: M,
        layers: Vec<CandleLayer>,
        others: Vec<Var>,
        input: [usize; 3],
    ) -> Result<Self> {
        if layers.len() != arch.layers().len() {
            return Err(Error::shape(
                "candle layers bound to the architecture",
                arch.layers().len(),
                layers.len(),
            ));
        }
        for (l, (spec, vars)) in arch.layers().iter().zip(&layers).enumerate() {
            let w = &vars.weight;
            if w.dtype() != DType::F32 {
                return Err(Error::unsupported(
                    format!("a {:?} weight in layer `{}`", w.dtype(), spec.name),
                    "convert the model to f32 (VarBuilder with DType::F32)",
                ));
            }
            if w.elem_count() != spec.weight_count() {
                return Err(Error::shape(
                    format!("weights of layer {l} (`{}`)", spec.name),
                    spec.weight_count(),
                    w.elem_count(),
                ));
            }
            if let Some(b) = &vars.bias
                && b.elem_count() != spec.out_channels()
            {
                return Err(Error::shape(
                    format!("bias of layer {l} (`{}`)", spec.name),
                    spec.out_channels(),
                    b.elem_count(),
                ));
            }
        }
        if input.contains(&0) {
            return Err(Error::param(
                "input",
                format!("{input:?}"),
                "every input dimension must be >= 1",
            ));
        }
        let classes = arch.widths()[arch.output_width().0].channels;
        let device = layers
            .first()
            .map_or(Device::Cpu, |l| l.weight.device().clone());
        Ok(Self {
            arch,
            model,
            layers,
            others,
            input,
            classes,
            device,
            logits: None,
            grads: None,
            quant: Vec::new(),
            deferred: None,
        })
    }

    /// Register the [`ActivationQuant`]s the model calls on each prunable layer's
    /// input (`None` where it calls none), so that
    /// [`NetworkMut::set_activation_format`] sets them and training passes track
    /// their ranges.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for another number of layers.
    pub fn with_activation_quantizers(
        mut self,
        quant: Vec<Option<ActivationQuant>>,
    ) -> Result<Self> {
        if quant.len() != self.arch.layers().len() {
            return Err(Error::shape(
                "activation quantizers (one per prunable layer)",
                self.arch.layers().len(),
                quant.len(),
            ));
        }
        self.quant = quant;
        Ok(self)
    }

    /// The registered activation quantizers.
    pub fn activation_quantizers(&self) -> &[Option<ActivationQuant>] {
        &self.quant
    }

    fn set_training(&self, training: bool) -> Result<()> {
        for q in self.quant.iter().flatten() {
            q.set_training(training)?;
        }
        Ok(())
    }

    /// The candle model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model's outputs for `batch` samples as a candle tensor (no gradient kept).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong input length; candle's errors.
    pub fn forward_tensor(&self, input: &[f32], batch: usize) -> Result<Tensor> {
        let x = self.input_tensor(input, batch)?;
        candle(self.model.forward(&x))
    }

    fn input_tensor(&self, input: &[f32], batch: usize) -> Result<Tensor> {
        let [c, h, w] = self.input;
        if input.len() != batch * c * h * w {
            return Err(Error::shape(
                "candle model input (batch x C x H x W)",
                batch * c * h * w,
                input.len(),
            ));
        }
        candle(Tensor::from_slice(input, (batch, c, h, w), &self.device))
    }

    fn var(&self, layer: usize) -> Result<&CandleLayer> {
        self.layers.get(layer).ok_or(Error::IndexOutOfRange {
            what: "layer",
            index: layer,
            len: self.layers.len(),
        })
    }
}

fn read(var: &Var, dst: &mut [f32]) -> Result<()> {
    let v = candle(
        var.as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>()),
    )?;
    if v.len() != dst.len() {
        return Err(Error::shape("candle variable", v.len(), dst.len()));
    }
    dst.copy_from_slice(&v);
    Ok(())
}

fn write(var: &Var, src: &[f32]) -> Result<()> {
    let t = candle(Tensor::from_slice(src, var.shape(), var.device()))?;
    candle(var.set(&t))
}

impl<M: Module> Network for CandleNetwork<M> {
    fn architecture(&self) -> &Architecture {
        &self.arch
    }

    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()> {
        read(&self.var(layer)?.weight, dst)
    }
}

impl<M: Module> NetworkMut for CandleNetwork<M> {
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        let var = &self.var(layer)?.weight;
        if src.len() != var.elem_count() {
            return Err(Error::shape(
                format!("weights of layer `{}`", self.arch.layers()[layer].name),
                var.elem_count(),
                src.len(),
            ));
        }
        energy_prune::error::check_finite("weights written to a candle model", src)?;
        write(var, src)
    }

    /// Sets the layer's registered [`ActivationQuant`] and returns `true`; `false`
    /// for a layer without one (priced, not trained).
    fn set_activation_format(&mut self, layer: usize, format: NumberFormat) -> Result<bool> {
        self.var(layer)?;
        match self.quant.get(layer).and_then(Option::as_ref) {
            Some(q) => {
                q.set_format(format)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl<M: Module> Trainable for CandleNetwork<M> {
    fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn forward(&mut self, input: &[f32], batch: usize, logits: &mut Vec<f32>) -> Result<()> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let x = self.input_tensor(input, batch)?;
        self.set_training(true)?;
        let y = self.model.forward(&x);
        self.set_training(false)?;
        let y = candle(y)?;
        let flat = candle(y.flatten_all().and_then(|t| t.to_vec1::<f32>()))?;
        if flat.len() != batch * self.classes {
            return Err(Error::shape(
                "candle model output (batch x classes)",
                batch * self.classes,
                flat.len(),
            ));
        }
        logits.clear();
        logits.extend_from_slice(&flat);
        self.logits = Some(y);
        self.grads = None;
        Ok(())
    }

    fn backward(&mut self, grad_logits: &[f32]) -> Result<()> {
        let y = self
            .logits
            .as_ref()
            .ok_or_else(|| Error::shape("backward without a forward pass (logits kept)", 1, 0))?;
        if grad_logits.len() != y.elem_count() {
            return Err(Error::shape(
                "gradient of the logits",
                y.elem_count(),
                grad_logits.len(),
            ));
        }
        // d/dθ sum(logits * g) = (dlogits/dθ)^T g: the chain rule through candle.
        let g = candle(Tensor::from_slice(grad_logits, y.shape(), &self.device))?;
        let surrogate = candle((y * g).and_then(|t| t.sum_all()))?;
        self.grads = Some(candle(surrogate.backward())?);
        Ok(())
    }

    /// Visits every variable with its gradient from the last backward pass (zeros
    /// for a variable the loss does not reach). The trait's visitor cannot fail;
    /// a candle error while copying is kept and returned by the next
    /// [`Trainable::forward`].
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        let mut failed: Option<Error> = None;
        let mut visit = |kind: ParamKind, var: &Var, grads: Option<&GradStore>| {
            let values = var
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>());
            let mut values = match values {
                Ok(v) => v,
                Err(e) => {
                    failed.get_or_insert(Error::external(e));
                    return;
                }
            };
            let grad = match grads.and_then(|g| g.get(var.as_tensor())) {
                Some(t) => match t.flatten_all().and_then(|t| t.to_vec1::<f32>()) {
                    Ok(g) => g,
                    Err(e) => {
                        failed.get_or_insert(Error::external(e));
                        return;
                    }
                },
                None => vec![0.0; values.len()],
            };
            f(kind, &mut values, &grad);
            if let Err(e) = write(var, &values) {
                failed.get_or_insert(e);
            }
        };
        let grads = self.grads.as_ref();
        for (l, layer) in self.layers.iter().enumerate() {
            visit(ParamKind::Weight(l), &layer.weight, grads);
            if let Some(b) = &layer.bias {
                visit(ParamKind::Bias(l), b, grads);
            }
        }
        for (i, v) in self.others.iter().enumerate() {
            visit(ParamKind::Other(i), v, grads);
        }
        if let Some(e) = failed {
            self.deferred.get_or_insert(e);
        }
    }

    fn predict(&mut self, input: &[f32], batch: usize, logits: &mut Vec<f32>) -> Result<()> {
        let y = self.forward_tensor(input, batch)?.detach();
        let flat = candle(y.flatten_all().and_then(|t| t.to_vec1::<f32>()))?;
        logits.clear();
        logits.extend_from_slice(&flat);
        Ok(())
    }
}
