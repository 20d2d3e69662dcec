//! A small reference interpreter for the imported graph: enough to check that a
//! compacted model computes what the masked one does, and to evaluate an imported
//! model on a few samples. Straightforward loops, not a fast runtime.

use super::{Constant, OnnxModel, Op, Shape, Window};
use energy_prune::arch::{Conv2dGeometry, LayerKind};
use energy_prune::error::{Error, Result};

impl OnnxModel {
    /// Run the model on `batch` samples (`input.len() == batch * C * H * W`,
    /// row-major `N x C x H x W`) and return the outputs, `batch * output_len()`
    /// values.
    ///
    /// This is a plain reference interpreter of the supported operators (see the
    /// [module docs](crate)); use an ONNX runtime for speed. Samples are computed
    /// independently: a model exported with a fixed batch (a Reshape to `[1, -1]`,
    /// an input of batch 2) gives for each sample what it computes for it at its
    /// own batch size.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong input length; [`Error::NonFinite`] for a
    /// NaN or infinite input.
    pub fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        let per = self.shapes[self.input].len();
        if batch == 0 || input.len() != batch.saturating_mul(per) {
            return Err(Error::shape(
                "ONNX model input (batch x C x H x W)",
                batch.saturating_mul(per),
                input.len(),
            ));
        }
        energy_prune::error::check_finite("model input", input)?;
        let mut values: Vec<Option<Vec<f32>>> = vec![None; self.shapes.len()];
        values[self.input] = Some(input.to_vec());
        for step in &self.steps {
            let arg = |k: usize| -> &[f32] { values[step.inputs[k]].as_deref().unwrap_or(&[]) };
            let x = arg(0);
            let xs = &self.shapes[step.inputs[0]];
            let out = match &step.op {
                Op::Layer(l) => self.layer(*l, x, batch)?,
                Op::Relu => x.iter().map(|v| v.max(0.0)).collect(),
                Op::Clip(lo, hi) => x.iter().map(|v| v.max(*lo).min(*hi)).collect(),
                Op::Identity | Op::Flatten(_) => x.to_vec(),
                Op::Pool {
                    max,
                    window,
                    count_include_pad,
                } => pool(
                    x,
                    xs,
                    &self.shapes[step.output],
                    *window,
                    *max,
                    *count_include_pad,
                    batch,
                ),
                Op::GlobalPool { max } => global_pool(x, xs, *max, batch),
                Op::Add => x.iter().zip(arg(1)).map(|(a, b)| a + b).collect(),
                Op::AddConst(c) => add_const(x, xs, c, batch),
                Op::Concat => {
                    let parts: Vec<&[f32]> = (0..step.inputs.len()).map(arg).collect();
                    let sizes: Vec<usize> =
                        step.inputs.iter().map(|&s| self.shapes[s].len()).collect();
                    let mut out = Vec::with_capacity(sizes.iter().sum::<usize>() * batch);
                    for b in 0..batch {
                        for (p, &n) in parts.iter().zip(&sizes) {
                            out.extend_from_slice(&p[b * n..(b + 1) * n]);
                        }
                    }
                    out
                }
                Op::Quantize {
                    scale,
                    zero,
                    lo,
                    hi,
                } => x
                    .iter()
                    .map(|&v| super::qdq::quantize(v, *scale, *zero, *lo, *hi) as f32)
                    .collect(),
                Op::Dequantize { scale, zero } => {
                    x.iter().map(|&v| (v - *zero as f32) * scale).collect()
                }
                Op::BatchNorm(p, eps) => {
                    let [scale, bias, mean, var] = &**p;
                    let hw = xs.h * xs.w;
                    let mut out = x.to_vec();
                    for (i, v) in out.iter_mut().enumerate() {
                        let c = (i / hw) % xs.channels();
                        let inv = scale.values[c] / (var.values[c] + eps).sqrt();
                        *v = (*v - mean.values[c]) * inv + bias.values[c];
                    }
                    out
                }
            };
            values[step.output] = Some(out);
        }
        values[self.output]
            .take()
            .ok_or_else(|| Error::arch("the graph output was not computed"))
    }

    fn layer(&self, l: usize, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        let layer = &self.arch.layers()[l];
        let w = &self.weights[l];
        let zeros;
        let bias: &[f32] = match &self.bindings[l].bias {
            Some(c) => &c.values,
            None => {
                zeros = vec![0.0; layer.out_channels()];
                &zeros
            }
        };
        Ok(match layer.kind {
            LayerKind::Conv2d(g) => conv(x, w, bias, &g, batch),
            LayerKind::Linear(g) => {
                let (n, m) = (g.in_features, g.out_features);
                let mut out = vec![0.0; batch * m];
                for b in 0..batch {
                    let xi = &x[b * n..(b + 1) * n];
                    for o in 0..m {
                        let row = &w[o * n..(o + 1) * n];
                        out[b * m + o] =
                            bias[o] + row.iter().zip(xi).map(|(a, b)| a * b).sum::<f32>();
                    }
                }
                out
            }
        })
    }
}

fn conv(x: &[f32], w: &[f32], bias: &[f32], g: &Conv2dGeometry, batch: usize) -> Vec<f32> {
    let (c, h, wd) = (g.in_channels, g.in_h, g.in_w);
    let (d, oh, ow) = (g.out_channels, g.out_h(), g.out_w());
    let (cg, dg) = (g.in_per_group(), g.out_per_group());
    let (kh, kw, s, p) = (g.kernel_h, g.kernel_w, g.stride, g.padding);
    let mut out = vec![0.0; batch * d * oh * ow];
    for b in 0..batch {
        let xb = &x[b * c * h * wd..(b + 1) * c * h * wd];
        for o in 0..d {
            let group = o / dg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias[o];
                    for i in 0..cg {
                        let ic = group * cg + i;
                        for ky in 0..kh {
                            let iy = (oy * s + ky) as isize - p as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * s + kx) as isize - p as isize;
                                if ix < 0 || ix >= wd as isize {
                                    continue;
                                }
                                acc += w[((o * cg + i) * kh + ky) * kw + kx]
                                    * xb[(ic * h + iy as usize) * wd + ix as usize];
                            }
                        }
                    }
                    out[((b * d + o) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    out
}

fn pool(
    x: &[f32],
    xs: &Shape,
    ys: &Shape,
    win: Window,
    max: bool,
    count_include_pad: bool,
    batch: usize,
) -> Vec<f32> {
    let (c, h, w) = (xs.channels(), xs.h, xs.w);
    let (oh, ow) = (ys.h, ys.w);
    let mut out = vec![0.0; batch * c * oh * ow];
    let range = |o: usize, axis: usize, n: usize| {
        let start = (o * win.stride[axis]) as isize - win.pad[axis] as isize;
        let end = start + win.kernel[axis] as isize;
        // Positions counted with padding: inside [-pad, n + pad).
        let padded = (end.min((n + win.pad[axis]) as isize) - start) as usize;
        (start.max(0) as usize, end.min(n as isize) as usize, padded)
    };
    for bc in 0..batch * c {
        let plane = &x[bc * h * w..(bc + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1, py) = range(oy, 0, h);
            for ox in 0..ow {
                let (x0, x1, px) = range(ox, 1, w);
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let v = plane[iy * w + ix];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                if !max {
                    let n = if count_include_pad {
                        py * px
                    } else {
                        (y1 - y0) * (x1 - x0)
                    };
                    acc /= n.max(1) as f32;
                }
                out[(bc * oh + oy) * ow + ox] = acc;
            }
        }
    }
    out
}

fn global_pool(x: &[f32], xs: &Shape, max: bool, batch: usize) -> Vec<f32> {
    let hw = xs.h * xs.w;
    x.chunks(hw)
        .take(batch * xs.channels())
        .map(|p| {
            if max {
                p.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                p.iter().sum::<f32>() / hw as f32
            }
        })
        .collect()
}

fn add_const(x: &[f32], xs: &Shape, c: &Constant, batch: usize) -> Vec<f32> {
    let per = xs.len();
    let n = c.values.len();
    let div = if n == 1 {
        per
    } else if xs.flat {
        1
    } else {
        xs.h * xs.w
    };
    let mut out = x.to_vec();
    for b in 0..batch {
        for (i, v) in out[b * per..(b + 1) * per].iter_mut().enumerate() {
            *v += c.values[(i / div) % n];
        }
    }
    out
}
