//! The reference CNN: a sequential stack of layers with data-parallel training.

use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

use super::executor::{Op, Params, Shape, Worker};
use super::spec::LayerSpec;
use super::threads::{parallel_for_each, shard_range, sum_into};
use energy_prune::arch::{ArchBuilder, Architecture, Conv, FeatureMap, LayerKind};
use energy_prune::energy::NumberFormat;
use energy_prune::error::{Error, Origin, Result, check_finite, check_finite_from};
use energy_prune::network::{Network, NetworkMut, ParamKind, ParamVisitor, Trainable};
use energy_prune::quant::{ActivationQuantizer, ActivationStats};

/// A small, fast, pure-Rust sequential CNN that implements [`Trainable`].
///
/// Convolutions run as im2col + GEMM over the whole batch; batches are split
/// across threads (data parallel, gradients summed in a fixed order, so results
/// are deterministic for a given thread count).
///
/// # Examples
/// ```
/// use energy_prune_nn::Cnn;
/// use energy_prune::network::{Network, Trainable};
/// # fn main() -> energy_prune::Result<()> {
/// let mut net = Cnn::lenet5(42)?;
/// assert_eq!(net.architecture().weight_count(), 61_470);
/// let mut logits = Vec::new();
/// net.forward(&vec![0.0; 2 * 32 * 32], 2, &mut logits)?;
/// assert_eq!(logits.len(), 2 * 10);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Cnn {
    arch: Architecture,
    specs: Vec<LayerSpec>,
    ops: Vec<Op>,
    /// `shapes[i]` is the per-sample input shape of op `i`; the last is the output.
    shapes: Vec<Shape>,
    weights: Vec<Vec<f32>>,
    biases: Vec<Vec<f32>>,
    wgrad: Vec<Vec<f32>>,
    bgrad: Vec<Vec<f32>>,
    /// Optional input mask per prunable layer, and its gradient.
    masks: Vec<Option<Vec<f32>>>,
    mgrad: Vec<Vec<f32>>,
    /// Activation quantizer of each prunable layer's input (`None`: never set).
    act_quant: Vec<Option<ActivationQuantizer>>,
    /// Per-channel weight scales told by a quantization-aware solver: with an
    /// active input quantizer, the bias is used on its grid `s_x s_w`.
    weight_scales: Vec<Option<Vec<f32>>>,
    /// The biases as used by the forward pass when some are on a grid.
    grid_biases: Vec<Vec<f32>>,
    workers: Vec<Worker>,
    threads: usize,
    pending_backward: bool,
}

/// Smallest shard worth a thread.
const MIN_SHARD: usize = 8;

impl Cnn {
    /// Build a network for inputs of `channels x h x w` from a layer stack, with
    /// seeded He-normal weights and zero biases.
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] if the stack is empty, has no prunable layer,
    /// or a layer does not fit its input.
    pub fn new(input: (usize, usize, usize), specs: &[LayerSpec], seed: u64) -> Result<Self> {
        let mut b = ArchBuilder::new("cnn");
        let mut fm: FeatureMap = b.input(input.0, input.1, input.2)?;
        let mut shapes = vec![Shape {
            c: input.0,
            h: input.1,
            w: input.2,
        }];
        let mut layer = 0;
        for spec in specs {
            match spec {
                LayerSpec::Conv {
                    name,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    groups,
                } => {
                    let depthwise =
                        *groups > 1 && *groups == fm.channels && *out_channels == fm.channels;
                    let conv = if depthwise {
                        Conv::depthwise(*kernel)
                    } else {
                        Conv::new(*out_channels, *kernel).groups(*groups)
                    }
                    .stride(*stride)
                    .padding(*padding);
                    fm = b.conv2d(name, &fm, conv)?;
                    layer += 1;
                }
                LayerSpec::Linear { name, out_features } => {
                    fm = b.linear(name, &fm, *out_features, true)?;
                    layer += 1;
                }
                LayerSpec::Relu => {}
                LayerSpec::MaxPool { kernel, stride } | LayerSpec::AvgPool { kernel, stride } => {
                    fm = b.pool(&fm, *kernel, *stride, 0, false)?;
                }
            }
            shapes.push(Shape {
                c: fm.channels,
                h: fm.h,
                w: fm.w,
            });
        }
        if layer == 0 {
            return Err(Error::arch("a Cnn needs at least one Conv or Linear layer"));
        }
        if fm.widths.len() != 1 || shapes.last().is_some_and(|s| s.h * s.w != 1) {
            return Err(Error::arch(
                "the last prunable layer must be Linear (or produce a 1x1 map)",
            ));
        }
        let arch = b.finish(&fm)?;
        // The executor's ops, with each layer's geometry read from the architecture.
        let mut layers = arch.layers().iter().enumerate();
        let ops: Vec<Op> = specs
            .iter()
            .map(|spec| match spec {
                LayerSpec::Conv { .. } | LayerSpec::Linear { .. } => {
                    let (l, lay) = layers.next().expect("one layer per prunable spec");
                    match lay.kind {
                        LayerKind::Conv2d(geom) => Op::Conv { geom, layer: l },
                        LayerKind::Linear(g) => Op::Linear {
                            out: g.out_features,
                            layer: l,
                        },
                    }
                }
                LayerSpec::Relu => Op::Relu,
                &LayerSpec::MaxPool { kernel, stride } => Op::MaxPool { kernel, stride },
                &LayerSpec::AvgPool { kernel, stride } => Op::AvgPool { kernel, stride },
            })
            .collect();
        let weights: Vec<Vec<f32>> = arch
            .layers()
            .iter()
            .map(|l| vec![0.0; l.weight_count()])
            .collect();
        let biases: Vec<Vec<f32>> = arch
            .layers()
            .iter()
            .map(|l| vec![0.0; l.out_channels()])
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut net = Self {
            wgrad: weights.clone(),
            bgrad: biases.clone(),
            masks: vec![None; weights.len()],
            mgrad: vec![Vec::new(); weights.len()],
            act_quant: vec![None; weights.len()],
            weight_scales: vec![None; weights.len()],
            grid_biases: Vec::new(),
            arch,
            specs: specs.to_vec(),
            ops,
            shapes,
            weights,
            biases,
            workers: Vec::new(),
            threads,
            pending_backward: false,
        };
        net.reinitialize(seed);
        Ok(net)
    }

    /// The paper's LeNet-5 for 1x32x32 inputs (ReLU, max-pool), see [`energy_prune::arch::zoo::lenet5`].
    ///
    /// # Errors
    /// Never in practice.
    pub fn lenet5(seed: u64) -> Result<Self> {
        let mut net = Self::new((1, 32, 32), &Self::lenet5_specs(), seed)?;
        net.arch = net.arch.with_name("lenet5");
        Ok(net)
    }

    /// The layer stack of [`Cnn::lenet5`] (input 1x32x32).
    pub fn lenet5_specs() -> Vec<LayerSpec> {
        use LayerSpec as L;
        let pool = L::MaxPool {
            kernel: 2,
            stride: 2,
        };
        vec![
            L::conv("conv1", 6, 5),
            L::Relu,
            pool.clone(),
            L::conv("conv2", 16, 5),
            L::Relu,
            pool,
            L::linear("fc1", 120),
            L::Relu,
            L::linear("fc2", 84),
            L::Relu,
            L::linear("fc3", 10),
        ]
    }

    /// A VGG-style MNIST network (input 1x28x28), wide enough that its latency is
    /// dominated by convolutions: conv 32-32, pool, conv 64-64, pool, conv 128,
    /// pool, FC 256, FC 10 (3x3 kernels, padding 1, ReLU).
    ///
    /// # Errors
    /// Never in practice.
    pub fn vgg_mnist(seed: u64) -> Result<Self> {
        let mut net = Self::new((1, 28, 28), &Self::vgg_mnist_specs(), seed)?;
        net.arch = net.arch.with_name("vgg-mnist");
        Ok(net)
    }

    /// The layer stack of [`Cnn::vgg_mnist`].
    pub fn vgg_mnist_specs() -> Vec<LayerSpec> {
        use LayerSpec as L;
        let conv = |name: &str, out| L::Conv {
            name: name.into(),
            out_channels: out,
            kernel: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let pool = L::MaxPool {
            kernel: 2,
            stride: 2,
        };
        vec![
            conv("conv1", 32),
            L::Relu,
            conv("conv2", 32),
            L::Relu,
            pool.clone(),
            conv("conv3", 64),
            L::Relu,
            conv("conv4", 64),
            L::Relu,
            pool.clone(),
            conv("conv5", 128),
            L::Relu,
            pool,
            L::linear("fc1", 256),
            L::Relu,
            L::linear("fc2", 10),
        ]
    }

    /// The input shape `(channels, height, width)` of one sample.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        let s = self.shapes[0];
        (s.c, s.h, s.w)
    }

    /// The layer stack this network was built from.
    pub fn specs(&self) -> &[LayerSpec] {
        &self.specs
    }

    /// Re-draw all weights (He-normal, `std = sqrt(2 / fan_in)`) and zero the biases.
    pub fn reinitialize(&mut self, seed: u64) {
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        for (l, layer) in self.arch.layers().iter().enumerate() {
            let fan_in = layer.weight_count() / layer.out_channels();
            let std = (2.0 / fan_in as f64).sqrt();
            for w in &mut self.weights[l] {
                *w = (std * standard_normal(&mut rng)) as f32;
            }
            self.biases[l].fill(0.0);
        }
    }

    /// Number of threads used for a batch (default: all available cores).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Set the number of threads (at least 1). Results are deterministic for a
    /// fixed thread count.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Give prunable layer `layer` a learnable input mask (`C x H x W` for a
    /// convolution, its input features for a linear layer), initialised to ones.
    /// The mask multiplies the layer's input elementwise; its nonzeros are the input
    /// support priced by the energy model. [`Sgd`](energy_prune::train::Sgd) leaves masks
    /// unchanged; train them with [`InputMaskAdam`](energy_prune::train::InputMaskAdam).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for a bad index.
    pub fn enable_input_mask(&mut self, layer: usize) -> Result<()> {
        let n = self.arch.layer(layer)?.in_features();
        if self.masks[layer].is_none() {
            self.masks[layer] = Some(vec![1.0; n]);
            self.mgrad[layer] = vec![0.0; n];
        }
        Ok(())
    }

    /// Remove the input mask of `layer` (the layer sees its whole input again).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for a bad index.
    pub fn disable_input_mask(&mut self, layer: usize) -> Result<()> {
        self.arch.layer(layer)?;
        self.masks[layer] = None;
        self.mgrad[layer].clear();
        Ok(())
    }

    /// The input mask of `layer`, if enabled.
    pub fn input_mask(&self, layer: usize) -> Option<&[f32]> {
        self.masks.get(layer).and_then(|m| m.as_deref())
    }

    /// The bias of prunable layer `layer`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for a bad index.
    pub fn bias(&self, layer: usize) -> Result<&[f32]> {
        self.arch.layer(layer)?;
        Ok(&self.biases[layer])
    }

    /// Overwrite the bias of prunable layer `layer`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`], [`Error::ShapeMismatch`] or [`Error::NonFinite`].
    pub fn set_bias(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        let l = self.arch.layer(layer)?;
        if src.len() != self.biases[layer].len() {
            return Err(Error::shape(
                format!("bias of layer {}", l.name),
                self.biases[layer].len(),
                src.len(),
            ));
        }
        check_finite("bias", src)?;
        self.biases[layer].copy_from_slice(src);
        Ok(())
    }

    /// Direct view of the weights of prunable layer `layer` (canonical layout).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for a bad index.
    pub fn weights_ref(&self, layer: usize) -> Result<&[f32]> {
        self.arch.layer(layer)?;
        Ok(&self.weights[layer])
    }

    pub(crate) fn params(&self) -> (&[Vec<f32>], &[Vec<f32>]) {
        (&self.weights, &self.biases)
    }

    pub(crate) fn params_mut(&mut self) -> (&mut [Vec<f32>], &mut [Vec<f32>]) {
        (&mut self.weights, &mut self.biases)
    }

    /// Quantize the input activations of prunable layer `layer` in `format` in every
    /// pass from now on (see [`energy_prune::quant`]): per tensor, symmetric, with
    /// the range calibrated on the first training batches (their running maximum)
    /// and then tracked by a moving average; the backward pass is straight-through
    /// inside the range. A lossless format stops rounding but keeps tracking the
    /// range, so that a later format starts calibrated. Inference
    /// ([`Trainable::predict`]) uses the range without changing it.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for a bad layer; as [`NumberFormat::validate`].
    pub fn set_activation_quantization(
        &mut self,
        layer: usize,
        format: NumberFormat,
    ) -> Result<()> {
        self.arch.layer(layer)?;
        format.validate()?;
        match &mut self.act_quant[layer] {
            Some(q) => q.format = format,
            slot => *slot = Some(ActivationQuantizer::new(format)),
        }
        Ok(())
    }

    /// The activation quantizer of every prunable layer (`None` where never set).
    pub fn activation_quantizers(&self) -> &[Option<ActivationQuantizer>] {
        &self.act_quant
    }

    /// The activation quantizer of `layer`, to set its range or momentum by hand
    /// (`None` where never set).
    pub fn activation_quantizer_mut(&mut self, layer: usize) -> Option<&mut ActivationQuantizer> {
        self.act_quant.get_mut(layer).and_then(Option::as_mut)
    }

    /// Statistics of every prunable layer's input activations (before masks and
    /// quantization) over `inputs`, `n` samples in batches of `batch`: what the
    /// joint solver prices the activations' rounding with.
    ///
    /// # Errors
    /// Shape errors for an input that is not `n` samples; [`Error::InvalidParameter`]
    /// for no samples or a zero batch.
    pub fn activation_stats(
        &mut self,
        inputs: &[f32],
        n: usize,
        batch: usize,
    ) -> Result<Vec<ActivationStats>> {
        let per = self.input_len();
        if n == 0 || batch == 0 {
            return Err(Error::param(
                "activation statistics",
                format!("{n} samples in batches of {batch}"),
                "give at least one sample and a batch of at least one",
            ));
        }
        if inputs.len() != n * per {
            return Err(Error::shape(
                "inputs (n * input_len)",
                n * per,
                inputs.len(),
            ));
        }
        let first_op: Vec<usize> = (0..self.weights.len())
            .map(|l| {
                self.ops
                    .iter()
                    .position(|op| matches!(op, Op::Conv { layer, .. } | Op::Linear { layer, .. } if *layer == l))
                    .expect("every prunable layer has an op")
            })
            .collect();
        let mut acc: Vec<(ActivationStats, usize)> = vec![
            (
                ActivationStats {
                    max_abs: 0.0,
                    mean_square: 0.0,
                },
                0
            );
            self.weights.len()
        ];
        let mut logits = Vec::new();
        for lo in (0..n).step_by(batch) {
            let hi = (lo + batch).min(n);
            self.run_forward(&inputs[lo * per..hi * per], hi - lo, &mut logits, false)?;
            for (l, &op) in first_op.iter().enumerate() {
                for wk in &self.workers {
                    let x = &wk.acts[op];
                    let st = ActivationStats::of(x)?;
                    acc[l] = (acc[l].0.merge(acc[l].1, &st, x.len()), acc[l].1 + x.len());
                }
            }
        }
        self.pending_backward = false;
        Ok(acc.into_iter().map(|(s, _)| s).collect())
    }

    /// Round into `grid_biases` the bias of every layer with weight scales and an
    /// active input quantizer (straight through: the gradient reaches the float
    /// bias unchanged); whether any layer is on a grid.
    fn update_grid_biases(&mut self) -> bool {
        let mut any = false;
        for (l, (ws, q)) in self.weight_scales.iter().zip(&self.act_quant).enumerate() {
            let sx = q
                .filter(ActivationQuantizer::is_active)
                .map_or(0.0, |q| q.scale());
            let Some(ws) = ws.as_ref().filter(|_| sx > 0.0) else {
                continue;
            };
            if !any {
                self.grid_biases.clone_from(&self.biases);
                any = true;
            }
            let scales =
                energy_prune::quant::bias_scales(sx, &energy_prune::quant::storable_scales(ws));
            energy_prune::quant::quantize_bias(&mut self.grid_biases[l], &scales);
        }
        any
    }

    fn shard_count(&self, batch: usize) -> usize {
        self.threads.min(batch / MIN_SHARD).max(1)
    }

    fn prepare_workers(&mut self, batch: usize) {
        let shards = self.shard_count(batch);
        self.workers.resize_with(shards, Worker::default);
        for (i, wk) in self.workers.iter_mut().enumerate() {
            let (lo, hi) = shard_range(batch, shards, i);
            let prm = Params {
                weights: &self.weights,
                biases: &self.biases,
                masks: &self.masks,
                quant: &self.act_quant,
            };
            wk.prepare(&self.ops, &self.shapes, prm, hi - lo);
        }
    }
}

/// A standard normal draw (Box-Muller).
pub(crate) fn standard_normal(rng: &mut ChaCha12Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Network for Cnn {
    fn architecture(&self) -> &Architecture {
        &self.arch
    }

    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()> {
        let l = self.arch.layer(layer)?;
        let w = &self.weights[layer];
        if dst.len() != w.len() {
            return Err(Error::shape(
                format!("weights of layer {}", l.name),
                w.len(),
                dst.len(),
            ));
        }
        dst.copy_from_slice(w);
        Ok(())
    }

    fn read_input_mask(&self, layer: usize, dst: &mut [f32]) -> Result<bool> {
        let l = self.arch.layer(layer)?;
        match &self.masks[layer] {
            None => Ok(false),
            Some(m) if m.len() != dst.len() => Err(Error::shape(
                format!("input mask of layer {}", l.name),
                m.len(),
                dst.len(),
            )),
            Some(m) => {
                dst.copy_from_slice(m);
                Ok(true)
            }
        }
    }
}

impl NetworkMut for Cnn {
    fn write_input_mask(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        let l = self.arch.layer(layer)?;
        let name = format!("input mask of layer {}", l.name);
        match &mut self.masks[layer] {
            None => Err(Error::unsupported(
                format!("an input mask on layer {}", l.name),
                "this layer has no input mask; call Cnn::enable_input_mask first",
            )),
            Some(m) if m.len() != src.len() => Err(Error::shape(name, m.len(), src.len())),
            Some(m) => {
                check_finite(&name, src)?;
                m.copy_from_slice(src);
                Ok(())
            }
        }
    }

    fn write_weights(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        let l = self.arch.layer(layer)?;
        if src.len() != self.weights[layer].len() {
            return Err(Error::shape(
                format!("weights of layer {}", l.name),
                self.weights[layer].len(),
                src.len(),
            ));
        }
        check_finite(&format!("weights of layer {}", l.name), src)?;
        self.weights[layer].copy_from_slice(src);
        Ok(())
    }

    /// [`Cnn::set_activation_quantization`]; always `true`.
    fn set_activation_format(&mut self, layer: usize, format: NumberFormat) -> Result<bool> {
        self.set_activation_quantization(layer, format)?;
        Ok(true)
    }

    /// Forward passes use the layer's bias on the grid `s_x s_w[c]` while its input
    /// quantizer is active (the stored bias stays float and takes the gradient);
    /// always `true`.
    fn set_weight_scales(&mut self, layer: usize, scales: Option<&[f32]>) -> Result<bool> {
        let l = self.arch.layer(layer)?;
        if let Some(s) = scales
            && s.len() != l.out_channels()
        {
            return Err(Error::shape(
                format!("weight scales of layer {}", l.name),
                l.out_channels(),
                s.len(),
            ));
        }
        self.weight_scales[layer] = scales.map(<[f32]>::to_vec);
        Ok(true)
    }
}

impl Trainable for Cnn {
    fn input_len(&self) -> usize {
        self.shapes[0].len()
    }

    fn num_classes(&self) -> usize {
        self.shapes.last().map_or(0, Shape::len)
    }

    fn forward(&mut self, input: &[f32], batch: usize, logits: &mut Vec<f32>) -> Result<()> {
        self.run_forward(input, batch, logits, true)
    }

    /// Inference: as `forward`, without tracking the activation ranges.
    fn predict(&mut self, input: &[f32], batch: usize, logits: &mut Vec<f32>) -> Result<()> {
        self.run_forward(input, batch, logits, false)
    }

    fn backward(&mut self, grad_logits: &[f32]) -> Result<()> {
        self.run_backward(grad_logits)
    }

    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        for l in 0..self.weights.len() {
            f(ParamKind::Weight(l), &mut self.weights[l], &self.wgrad[l]);
            f(ParamKind::Bias(l), &mut self.biases[l], &self.bgrad[l]);
            if let Some(m) = &mut self.masks[l] {
                f(ParamKind::InputMask(l), m, &self.mgrad[l]);
            }
        }
    }
}

impl Cnn {
    fn run_forward(
        &mut self,
        input: &[f32],
        batch: usize,
        logits: &mut Vec<f32>,
        track: bool,
    ) -> Result<()> {
        let per = self.input_len();
        if batch == 0 || input.len() != batch * per {
            return Err(Error::shape(
                "forward input (batch * input_len)",
                batch.max(1) * per,
                input.len(),
            ));
        }
        self.prepare_workers(batch);
        let on_grid = self.update_grid_biases();
        let k = self.num_classes();
        let shards = self.workers.len();
        let (ops, shapes) = (&self.ops, &self.shapes);
        let prm = Params {
            weights: &self.weights,
            biases: if on_grid {
                &self.grid_biases
            } else {
                &self.biases
            },
            masks: &self.masks,
            quant: &self.act_quant,
        };
        let run = |(i, wk): (usize, &mut Worker)| {
            let (lo, hi) = shard_range(batch, shards, i);
            wk.forward(ops, shapes, prm, &input[lo * per..hi * per]);
        };
        parallel_for_each(&mut self.workers, run);
        logits.resize(batch * k, 0.0);
        for (i, wk) in self.workers.iter().enumerate() {
            let (lo, hi) = shard_range(batch, shards, i);
            let out = wk.acts.last().expect("at least one activation");
            let nb = hi - lo;
            for j in 0..nb {
                for c in 0..k {
                    logits[(lo + j) * k + c] = out[c * nb + j];
                }
            }
        }
        if track {
            for (l, q) in self.act_quant.iter_mut().enumerate() {
                if let Some(q) = q {
                    let max = self.workers.iter().fold(0.0f32, |m, w| m.max(w.in_max[l]));
                    q.observe_max(max);
                }
            }
        }
        self.pending_backward = true;
        Ok(())
    }

    fn run_backward(&mut self, grad_logits: &[f32]) -> Result<()> {
        let batch = self.workers.iter().map(|w| w.batch).sum::<usize>();
        let k = self.num_classes();
        if !self.pending_backward {
            return Err(Error::param(
                "backward",
                "called",
                "call forward() on a batch first",
            ));
        }
        if grad_logits.len() != batch * k {
            return Err(Error::shape(
                "grad_logits (batch * classes)",
                batch * k,
                grad_logits.len(),
            ));
        }
        check_finite_from(Origin::Training, "grad_logits", grad_logits)?;
        let shards = self.workers.len();
        let (ops, shapes) = (&self.ops, &self.shapes);
        let prm = Params {
            weights: &self.weights,
            biases: &self.biases,
            masks: &self.masks,
            quant: &self.act_quant,
        };
        let run = |(i, wk): (usize, &mut Worker)| {
            let (lo, hi) = shard_range(batch, shards, i);
            let nb = hi - lo;
            for j in 0..nb {
                for c in 0..k {
                    wk.dcur[c * nb + j] = grad_logits[(lo + j) * k + c];
                }
            }
            wk.backward(ops, shapes, prm);
        };
        parallel_for_each(&mut self.workers, run);
        let (first, rest) = self
            .workers
            .split_first()
            .expect("forward prepared a worker");
        for l in 0..self.weights.len() {
            sum_into(
                &mut self.wgrad[l],
                &first.wgrad[l],
                rest.iter().map(|w| &w.wgrad[l][..]),
            );
            if self.masks[l].is_some() {
                sum_into(
                    &mut self.mgrad[l],
                    &first.mgrad[l],
                    rest.iter().map(|w| &w.mgrad[l][..]),
                );
            }
            sum_into(
                &mut self.bgrad[l],
                &first.bgrad[l],
                rest.iter().map(|w| &w.bgrad[l][..]),
            );
        }
        self.pending_backward = false;
        Ok(())
    }
}
