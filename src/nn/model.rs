//! The reference CNN: a sequential stack of layers with data-parallel training.

use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::ops::{self, PoolGeometry};
use crate::arch::{ArchBuilder, Architecture, Conv, Conv2dGeometry, FeatureMap};
use crate::error::{Error, Result, check_finite};
use crate::network::{Network, NetworkMut, ParamKind, ParamVisitor, Trainable};

/// One layer of a [`Cnn`], as given to [`Cnn::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSpec {
    /// 2-D convolution with bias (square kernel, zero padding, groups).
    Conv {
        /// Unique layer name.
        name: String,
        /// Output channels.
        out_channels: usize,
        /// Kernel size R.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
        /// Groups (input and output channels must be divisible by it).
        groups: usize,
    },
    /// Fully-connected layer with bias; flattens a `C x H x W` input.
    Linear {
        /// Unique layer name.
        name: String,
        /// Output features.
        out_features: usize,
    },
    /// Rectified linear unit.
    Relu,
    /// Max-pool (square window, no padding).
    MaxPool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Average-pool (square window, no padding).
    AvgPool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
}

impl LayerSpec {
    /// A convolution with stride 1, no padding, one group.
    pub fn conv(name: &str, out_channels: usize, kernel: usize) -> Self {
        LayerSpec::Conv {
            name: name.into(),
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }
    /// A fully-connected layer.
    pub fn linear(name: &str, out_features: usize) -> Self {
        LayerSpec::Linear {
            name: name.into(),
            out_features,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    c: usize,
    h: usize,
    w: usize,
}

impl Shape {
    fn len(&self) -> usize {
        self.c * self.h * self.w
    }
}

#[derive(Debug, Clone)]
enum Op {
    Conv { geom: Conv2dGeometry, layer: usize },
    Linear { out: usize, layer: usize },
    Relu,
    MaxPool { kernel: usize, stride: usize },
    AvgPool { kernel: usize, stride: usize },
}

/// Per-thread activations and gradients for one shard of a batch.
#[derive(Debug, Clone, Default)]
struct Worker {
    batch: usize,
    /// `acts[i]` is the input of op `i` (`[C][B][H][W]`); the last is the logits.
    acts: Vec<Vec<f32>>,
    /// im2col matrices (conv) or flattened inputs (linear), per op.
    cols: Vec<Vec<f32>>,
    argmax: Vec<Vec<u32>>,
    dcur: Vec<f32>,
    dprev: Vec<f32>,
    dcol: Vec<f32>,
    wgrad: Vec<Vec<f32>>,
    bgrad: Vec<Vec<f32>>,
    /// Masked copies of masked layers' inputs, per op.
    masked: Vec<Vec<f32>>,
    /// Input-mask gradients, per prunable layer (empty when unmasked).
    mgrad: Vec<Vec<f32>>,
}

/// Parameters shared read-only by the workers.
#[derive(Clone, Copy)]
struct Params<'a> {
    weights: &'a [Vec<f32>],
    biases: &'a [Vec<f32>],
    masks: &'a [Option<Vec<f32>>],
}

/// `out = x * m` for activations `[C][B][P]` and a mask `[C][P]`.
fn apply_mask(c: usize, b: usize, p: usize, x: &[f32], m: &[f32], out: &mut [f32]) {
    for ci in 0..c {
        let mrow = &m[ci * p..(ci + 1) * p];
        for n in 0..b {
            let o = (ci * b + n) * p;
            for ((dst, src), mv) in out[o..o + p].iter_mut().zip(&x[o..o + p]).zip(mrow) {
                *dst = src * mv;
            }
        }
    }
}

/// Backward of [`apply_mask`]: `dm += sum_b d * x`, then `d *= m` in place.
fn mask_backward(
    c: usize,
    b: usize,
    p: usize,
    x: &[f32],
    m: &[f32],
    d: &mut [f32],
    dm: &mut [f32],
) {
    dm.fill(0.0);
    for ci in 0..c {
        let (mrow, dmrow) = (&m[ci * p..(ci + 1) * p], &mut dm[ci * p..(ci + 1) * p]);
        for n in 0..b {
            let o = (ci * b + n) * p;
            for (((g, xv), mv), dmv) in d[o..o + p]
                .iter_mut()
                .zip(&x[o..o + p])
                .zip(mrow)
                .zip(dmrow.iter_mut())
            {
                *dmv += *g * xv;
                *g *= mv;
            }
        }
    }
}

/// A small, fast, pure-Rust sequential CNN that implements [`Trainable`].
///
/// Convolutions run as im2col + GEMM over the whole batch; batches are split
/// across threads (data parallel, gradients summed in a fixed order, so results
/// are deterministic for a given thread count).
///
/// # Examples
/// ```
/// use energy_prune::nn::Cnn;
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
        let mut ops = Vec::with_capacity(specs.len());
        let mut shapes = vec![Shape {
            c: input.0,
            h: input.1,
            w: input.2,
        }];
        let mut layer = 0;
        for spec in specs {
            let op = match spec {
                LayerSpec::Conv {
                    name,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    groups,
                } => {
                    let in_fm = fm.clone();
                    let depthwise =
                        *groups > 1 && *groups == in_fm.channels && *out_channels == in_fm.channels;
                    let conv = if depthwise {
                        Conv::depthwise(*kernel)
                    } else {
                        Conv::new(*out_channels, *kernel).groups(*groups)
                    }
                    .stride(*stride)
                    .padding(*padding);
                    fm = b.conv2d(name, &in_fm, conv)?;
                    let geom = Conv2dGeometry {
                        in_channels: in_fm.channels,
                        in_h: in_fm.h,
                        in_w: in_fm.w,
                        out_channels: *out_channels,
                        kernel_h: *kernel,
                        kernel_w: *kernel,
                        stride: *stride,
                        padding: *padding,
                        groups: *groups,
                    };
                    layer += 1;
                    Op::Conv {
                        geom,
                        layer: layer - 1,
                    }
                }
                LayerSpec::Linear { name, out_features } => {
                    fm = b.linear(name, &fm, *out_features, true)?;
                    layer += 1;
                    Op::Linear {
                        out: *out_features,
                        layer: layer - 1,
                    }
                }
                LayerSpec::Relu => Op::Relu,
                LayerSpec::MaxPool { kernel, stride } => {
                    fm = b.pool(&fm, *kernel, *stride, 0, false)?;
                    Op::MaxPool {
                        kernel: *kernel,
                        stride: *stride,
                    }
                }
                LayerSpec::AvgPool { kernel, stride } => {
                    fm = b.pool(&fm, *kernel, *stride, 0, false)?;
                    Op::AvgPool {
                        kernel: *kernel,
                        stride: *stride,
                    }
                }
            };
            ops.push(op);
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

    /// The paper's LeNet-5 for 1x32x32 inputs (ReLU, max-pool), see [`crate::arch::zoo::lenet5`].
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
        let mut rng = StdRng::seed_from_u64(seed);
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
    /// support priced by the energy model. [`Sgd`](super::optim::Sgd) leaves masks
    /// unchanged; train them with [`Adam::step_filtered`](super::optim::Adam::step_filtered).
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
            };
            wk.prepare(&self.ops, &self.shapes, prm, hi - lo);
        }
    }
}

fn shard_range(batch: usize, shards: usize, i: usize) -> (usize, usize) {
    (batch * i / shards, batch * (i + 1) / shards)
}

/// A standard normal draw (Box-Muller).
pub(crate) fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Worker {
    fn prepare(&mut self, ops: &[Op], shapes: &[Shape], prm: Params<'_>, batch: usize) {
        let (weights, biases) = (prm.weights, prm.biases);
        self.batch = batch;
        self.masked.resize_with(ops.len(), Vec::new);
        self.mgrad.resize_with(prm.masks.len(), Vec::new);
        for (i, op) in ops.iter().enumerate() {
            if let Op::Conv { layer, .. } | Op::Linear { layer, .. } = op {
                match &prm.masks[*layer] {
                    Some(m) => {
                        self.masked[i].resize(shapes[i].len() * batch, 0.0);
                        self.mgrad[*layer].resize(m.len(), 0.0);
                    }
                    None => self.mgrad[*layer].clear(),
                }
            }
        }
        self.acts.resize_with(shapes.len(), Vec::new);
        self.cols.resize_with(ops.len(), Vec::new);
        self.argmax.resize_with(ops.len(), Vec::new);
        let mut max_act = 0;
        let mut max_dcol = 0;
        for (i, s) in shapes.iter().enumerate() {
            self.acts[i].resize(s.len() * batch, 0.0);
            max_act = max_act.max(s.len() * batch);
        }
        for (i, op) in ops.iter().enumerate() {
            let out = shapes[i + 1].len() * batch;
            match op {
                Op::Conv { geom, .. } => {
                    let per_group = geom.filter_len() * batch * geom.out_positions();
                    if !ops::is_pointwise(geom) {
                        self.cols[i].resize(geom.groups * per_group, 0.0);
                    }
                    max_dcol = max_dcol.max(per_group);
                }
                Op::Linear { .. } if shapes[i].h * shapes[i].w > 1 => {
                    self.cols[i].resize(shapes[i].len() * batch, 0.0);
                    max_dcol = max_dcol.max(shapes[i].len() * batch);
                }
                Op::MaxPool { .. } => self.argmax[i].resize(out, 0),
                _ => {}
            }
        }
        self.dcur.resize(max_act, 0.0);
        self.dprev.resize(max_act, 0.0);
        self.dcol.resize(max_dcol, 0.0);
        self.wgrad.resize_with(weights.len(), Vec::new);
        self.bgrad.resize_with(biases.len(), Vec::new);
        for (g, w) in self.wgrad.iter_mut().zip(weights) {
            g.resize(w.len(), 0.0);
        }
        for (g, b) in self.bgrad.iter_mut().zip(biases) {
            g.resize(b.len(), 0.0);
        }
    }

    /// Load `input` (`[B][C][H][W]`) into `acts[0]` (`[C][B][H][W]`) and run all ops.
    fn forward(&mut self, ops: &[Op], shapes: &[Shape], prm: Params<'_>, input: &[f32]) {
        let (weights, biases) = (prm.weights, prm.biases);
        let b = self.batch;
        let s0 = shapes[0];
        let hw = s0.h * s0.w;
        if s0.c == 1 {
            self.acts[0].copy_from_slice(input);
        } else {
            for n in 0..b {
                for c in 0..s0.c {
                    let src = &input[(n * s0.c + c) * hw..(n * s0.c + c + 1) * hw];
                    self.acts[0][(c * b + n) * hw..(c * b + n + 1) * hw].copy_from_slice(src);
                }
            }
        }
        for (i, op) in ops.iter().enumerate() {
            let (head, tail) = self.acts.split_at_mut(i + 1);
            let (x, y) = (&head[i], &mut tail[0]);
            let (si, so) = (shapes[i], shapes[i + 1]);
            match op {
                Op::Conv { geom, layer } => {
                    let xin: &[f32] = match &prm.masks[*layer] {
                        Some(m) => {
                            apply_mask(si.c, b, si.h * si.w, x, m, &mut self.masked[i]);
                            &self.masked[i]
                        }
                        None => x,
                    };
                    let (w, bias) = (&weights[*layer], Some(&biases[*layer][..]));
                    ops::conv2d_forward(geom, b, xin, w, bias, &mut self.cols[i], y);
                }
                Op::Linear { out, layer } => {
                    let f = si.len();
                    let mut xin: &[f32] = if si.h * si.w > 1 {
                        ops::flatten(si.c, b, si.h * si.w, x, &mut self.cols[i]);
                        &self.cols[i]
                    } else {
                        x
                    };
                    if let Some(m) = &prm.masks[*layer] {
                        apply_mask(f, b, 1, xin, m, &mut self.masked[i]);
                        xin = &self.masked[i];
                    }
                    let (w, bias) = (&weights[*layer], Some(&biases[*layer][..]));
                    ops::linear_forward(*out, f, b, xin, w, bias, y);
                }
                Op::Relu => {
                    for (o, v) in y.iter_mut().zip(x.iter()) {
                        *o = v.max(0.0);
                    }
                }
                Op::MaxPool { kernel, stride } => {
                    let p = pool_geom(si, b, *kernel, *stride);
                    ops::maxpool_forward(&p, x, y, &mut self.argmax[i]);
                }
                Op::AvgPool { kernel, stride } => {
                    let p = pool_geom(si, b, *kernel, *stride);
                    ops::avgpool_forward(&p, x, y);
                }
            }
            debug_assert_eq!(y.len(), so.len() * b);
        }
    }

    /// Back-propagate the gradient in `dcur` (`[K][B]` layout) through all ops.
    fn backward(&mut self, ops: &[Op], shapes: &[Shape], prm: Params<'_>) {
        let weights = prm.weights;
        let b = self.batch;
        for (i, op) in ops.iter().enumerate().rev() {
            let si = shapes[i];
            let nin = si.len() * b;
            let x = &self.acts[i];
            let dy = &self.dcur[..shapes[i + 1].len() * b];
            let dx = &mut self.dprev[..nin];
            match op {
                Op::Conv { geom, layer } => {
                    let mask = prm.masks[*layer].as_deref();
                    let xin: &[f32] = if mask.is_some() { &self.masked[i] } else { x };
                    // The input gradient is needed below, or for the mask gradient.
                    let want_dx = i > 0 || mask.is_some();
                    ops::conv2d_backward(
                        geom,
                        b,
                        xin,
                        &weights[*layer],
                        &self.cols[i],
                        dy,
                        &mut self.wgrad[*layer],
                        Some(&mut self.bgrad[*layer]),
                        want_dx.then_some(&mut *dx),
                        &mut self.dcol,
                    );
                    if let Some(m) = mask {
                        mask_backward(si.c, b, si.h * si.w, x, m, dx, &mut self.mgrad[*layer]);
                    }
                }
                Op::Linear { out, layer } => {
                    let f = si.len();
                    let flat = si.h * si.w > 1;
                    let mask = prm.masks[*layer].as_deref();
                    let unmasked: &[f32] = if flat { &self.cols[i] } else { x };
                    let xin: &[f32] = if mask.is_some() {
                        &self.masked[i]
                    } else {
                        unmasked
                    };
                    let want_dx = i > 0 || mask.is_some();
                    // The gradient of the (flattened) input goes to dcol when it must be
                    // unflattened afterwards, else straight to dx.
                    let dbuf: &mut [f32] = if flat {
                        &mut self.dcol[..nin]
                    } else {
                        &mut *dx
                    };
                    ops::linear_backward(
                        *out,
                        f,
                        b,
                        xin,
                        &weights[*layer],
                        dy,
                        &mut self.wgrad[*layer],
                        Some(&mut self.bgrad[*layer][..]),
                        want_dx.then_some(&mut *dbuf),
                    );
                    if let Some(m) = mask {
                        mask_backward(f, b, 1, unmasked, m, dbuf, &mut self.mgrad[*layer]);
                    }
                    if flat && i > 0 {
                        ops::unflatten(si.c, b, si.h * si.w, &self.dcol[..nin], dx);
                    }
                }
                Op::Relu => {
                    let y = &self.acts[i + 1];
                    for ((d, g), o) in dx.iter_mut().zip(dy).zip(y) {
                        *d = if *o > 0.0 { *g } else { 0.0 };
                    }
                }
                Op::MaxPool { kernel, stride } => {
                    let p = pool_geom(si, b, *kernel, *stride);
                    ops::maxpool_backward(&p, dy, &self.argmax[i], dx);
                }
                Op::AvgPool { kernel, stride } => {
                    let p = pool_geom(si, b, *kernel, *stride);
                    ops::avgpool_backward(&p, dy, dx);
                }
            }
            std::mem::swap(&mut self.dcur, &mut self.dprev);
        }
    }
}

fn pool_geom(s: Shape, batch: usize, kernel: usize, stride: usize) -> PoolGeometry {
    PoolGeometry {
        planes: s.c * batch,
        h: s.h,
        w: s.w,
        kernel,
        stride,
    }
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
            None => Err(Error::param(
                "input_mask",
                layer,
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
}

impl Trainable for Cnn {
    fn input_len(&self) -> usize {
        self.shapes[0].len()
    }

    fn num_classes(&self) -> usize {
        self.shapes.last().map_or(0, Shape::len)
    }

    fn forward(&mut self, input: &[f32], batch: usize, logits: &mut Vec<f32>) -> Result<()> {
        let per = self.input_len();
        if batch == 0 || input.len() != batch * per {
            return Err(Error::shape(
                "forward input (batch * input_len)",
                batch.max(1) * per,
                input.len(),
            ));
        }
        self.prepare_workers(batch);
        let k = self.num_classes();
        let shards = self.workers.len();
        let (ops, shapes) = (&self.ops, &self.shapes);
        let prm = Params {
            weights: &self.weights,
            biases: &self.biases,
            masks: &self.masks,
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
        self.pending_backward = true;
        Ok(())
    }

    fn backward(&mut self, grad_logits: &[f32]) -> Result<()> {
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
        check_finite("grad_logits", grad_logits)?;
        let shards = self.workers.len();
        let (ops, shapes) = (&self.ops, &self.shapes);
        let prm = Params {
            weights: &self.weights,
            biases: &self.biases,
            masks: &self.masks,
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

fn sum_into<'a>(dst: &mut [f32], first: &[f32], rest: impl Iterator<Item = &'a [f32]>) {
    dst.copy_from_slice(first);
    for src in rest {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    }
}

/// Run `f` on every worker, one thread each (the first on the calling thread).
fn parallel_for_each<F>(workers: &mut [Worker], f: F)
where
    F: Fn((usize, &mut Worker)) + Sync,
{
    if workers.len() == 1 {
        f((0, &mut workers[0]));
        return;
    }
    std::thread::scope(|s| {
        let (first, rest) = workers.split_at_mut(1);
        let f = &f;
        for (i, wk) in rest.iter_mut().enumerate() {
            s.spawn(move || f((i + 1, wk)));
        }
        f((0, &mut first[0]));
    });
}
