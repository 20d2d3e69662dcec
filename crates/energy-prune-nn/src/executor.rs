//! The executor of the reference CNN: the per-op forward and backward passes of one
//! shard of a batch (activations `[C][B][H][W]`), with the scratch buffers a worker
//! thread keeps between batches.

use super::ops::{self, PoolGeometry};
use energy_prune::arch::Conv2dGeometry;
use energy_prune::quant::{ActivationQuantizer, quantize_value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
}

impl Shape {
    pub(super) fn len(&self) -> usize {
        self.c * self.h * self.w
    }
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Conv { geom: Conv2dGeometry, layer: usize },
    Linear { out: usize, layer: usize },
    Relu,
    MaxPool { kernel: usize, stride: usize },
    AvgPool { kernel: usize, stride: usize },
}

/// Per-thread activations and gradients for one shard of a batch.
#[derive(Debug, Clone, Default)]
pub(super) struct Worker {
    pub(super) batch: usize,
    /// `acts[i]` is the input of op `i` (`[C][B][H][W]`); the last is the logits.
    pub(super) acts: Vec<Vec<f32>>,
    /// im2col matrices (conv) or flattened inputs (linear), per op.
    cols: Vec<Vec<f32>>,
    argmax: Vec<Vec<u32>>,
    pub(super) dcur: Vec<f32>,
    dprev: Vec<f32>,
    dcol: Vec<f32>,
    pub(super) wgrad: Vec<Vec<f32>>,
    pub(super) bgrad: Vec<Vec<f32>>,
    /// Masked copies of masked layers' inputs, per op.
    masked: Vec<Vec<f32>>,
    /// Input-mask gradients, per prunable layer (empty when unmasked).
    pub(super) mgrad: Vec<Vec<f32>>,
    /// Quantized copies of prunable layers' inputs, per op, and whether the
    /// last forward pass used them.
    quantized: Vec<Vec<f32>>,
    quant_used: Vec<bool>,
    /// Largest `|x|` of each prunable layer's (masked) input in the last forward
    /// pass, where its activations are quantized.
    pub(super) in_max: Vec<f32>,
}

/// Parameters shared read-only by the workers.
#[derive(Clone, Copy)]
pub(super) struct Params<'a> {
    pub(super) weights: &'a [Vec<f32>],
    pub(super) biases: &'a [Vec<f32>],
    pub(super) masks: &'a [Option<Vec<f32>>],
    pub(super) quant: &'a [Option<ActivationQuantizer>],
}

/// Quantize the layer input `x` into `out` if `q` rounds (returning whether it
/// did), recording its largest magnitude in `max` when a quantizer is set.
fn quantize_input(
    q: Option<&ActivationQuantizer>,
    x: &[f32],
    out: &mut Vec<f32>,
    max: &mut f32,
) -> bool {
    let Some(q) = q else {
        return false;
    };
    *max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (Some(levels), scale) = (q.format.levels(), q.scale()) else {
        return false;
    };
    if scale <= 0.0 {
        return false;
    }
    out.clear();
    out.extend(x.iter().map(|v| quantize_value(*v, scale, levels)));
    true
}

/// The straight-through gradient of the input quantizer: zero outside its range.
fn quantize_backward(q: &ActivationQuantizer, x: &[f32], d: &mut [f32]) {
    q.backward(x, d);
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

impl Worker {
    pub(super) fn prepare(&mut self, ops: &[Op], shapes: &[Shape], prm: Params<'_>, batch: usize) {
        let (weights, biases) = (prm.weights, prm.biases);
        self.batch = batch;
        self.masked.resize_with(ops.len(), Vec::new);
        self.mgrad.resize_with(prm.masks.len(), Vec::new);
        self.quantized.resize_with(ops.len(), Vec::new);
        self.quant_used.resize(ops.len(), false);
        self.in_max.resize(prm.masks.len(), 0.0);
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
    pub(super) fn forward(&mut self, ops: &[Op], shapes: &[Shape], prm: Params<'_>, input: &[f32]) {
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
                    let mut xin: &[f32] = match &prm.masks[*layer] {
                        Some(m) => {
                            apply_mask(si.c, b, si.h * si.w, x, m, &mut self.masked[i]);
                            &self.masked[i]
                        }
                        None => x,
                    };
                    self.quant_used[i] = quantize_input(
                        prm.quant[*layer].as_ref(),
                        xin,
                        &mut self.quantized[i],
                        &mut self.in_max[*layer],
                    );
                    if self.quant_used[i] {
                        xin = &self.quantized[i];
                    }
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
                    self.quant_used[i] = quantize_input(
                        prm.quant[*layer].as_ref(),
                        xin,
                        &mut self.quantized[i],
                        &mut self.in_max[*layer],
                    );
                    if self.quant_used[i] {
                        xin = &self.quantized[i];
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
    pub(super) fn backward(&mut self, ops: &[Op], shapes: &[Shape], prm: Params<'_>) {
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
                    let pre: &[f32] = if mask.is_some() { &self.masked[i] } else { x };
                    let quant = self.quant_used[i]
                        .then(|| prm.quant[*layer].as_ref())
                        .flatten();
                    let xin: &[f32] = if quant.is_some() {
                        &self.quantized[i]
                    } else {
                        pre
                    };
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
                    if let (Some(q), true) = (quant, want_dx) {
                        quantize_backward(q, pre, dx);
                    }
                    if let Some(m) = mask {
                        mask_backward(si.c, b, si.h * si.w, x, m, dx, &mut self.mgrad[*layer]);
                    }
                }
                Op::Linear { out, layer } => {
                    let f = si.len();
                    let flat = si.h * si.w > 1;
                    let mask = prm.masks[*layer].as_deref();
                    let unmasked: &[f32] = if flat { &self.cols[i] } else { x };
                    let pre: &[f32] = if mask.is_some() {
                        &self.masked[i]
                    } else {
                        unmasked
                    };
                    let quant = self.quant_used[i]
                        .then(|| prm.quant[*layer].as_ref())
                        .flatten();
                    let xin: &[f32] = if quant.is_some() {
                        &self.quantized[i]
                    } else {
                        pre
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
                    if let (Some(q), true) = (quant, want_dx) {
                        quantize_backward(q, pre, dbuf);
                    }
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
