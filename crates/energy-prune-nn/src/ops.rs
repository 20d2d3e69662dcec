//! Numerical kernels of the reference CNN, on plain slices.
//!
//! Activations use the **channel-major batch layout** `[C][B][H][W]` ("CNHW"): the
//! im2col matrix of a whole batch is then `[C/G * R * R] x [B * H' * W']`, and the
//! GEMM `W (D x K) * col (K x N)` writes the next layer's `[D][B][H'][W']` activation
//! directly, with no transposition. A linear layer's activation is the same layout
//! with `H = W = 1`, i.e. a `[features][B]` matrix.
//!
//! GEMMs run on `matrixmultiply` (the packed-panel kernels nalgebra uses underneath),
//! called with explicit strides so that transposed operands are never copied.

use energy_prune::arch::Conv2dGeometry;

/// `C (m x n) = alpha * A (m x k) * B (k x n) + beta * C`, with row/column strides.
///
/// Strides are in elements: element `(i, j)` of `A` is `a[i * rsa + j * csa]`.
/// Slices are checked to cover the largest index addressed.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |r: usize, cdim: usize, rs: usize, cs: usize| (r - 1) * rs + (cdim - 1) * cs;
    assert!(k == 0 || (a.len() > last(m, k, rsa, csa) && b.len() > last(k, n, rsb, csb)));
    assert!(c.len() > last(m, n, rsc, csc));
    // SAFETY: the assertions above guarantee every addressed element lies inside the
    // slices; `c` is borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// Rows of the im2col matrix of one group: `(C / G) * R_h * R_w`.
pub fn col_rows(g: &Conv2dGeometry) -> usize {
    g.filter_len()
}

/// Whether a convolution can read its input directly as the im2col matrix
/// (1x1 kernel, stride 1, no padding, one group).
pub fn is_pointwise(g: &Conv2dGeometry) -> bool {
    g.kernel_h == 1 && g.kernel_w == 1 && g.stride == 1 && g.padding == 0 && g.groups == 1
}

use energy_prune::arch::valid_range;

/// Unfold the input `x` (`[C][B][H][W]`) of group `group` into `col`
/// (`[(C/G) * R_h * R_w][B * H' * W']`).
pub fn im2col(g: &Conv2dGeometry, batch: usize, group: usize, x: &[f32], col: &mut [f32]) {
    let (h, w, oh, ow) = (g.in_h, g.in_w, g.out_h(), g.out_w());
    let (plane, oplane) = (h * w, oh * ow);
    let n = batch * oplane;
    let cg = g.in_per_group();
    let (s, p) = (g.stride, g.padding);
    for ci in 0..cg {
        let c = group * cg + ci;
        for ki in 0..g.kernel_h {
            let (ylo, yhi) = valid_range(ki, p, s, h, oh);
            for kj in 0..g.kernel_w {
                let (xlo, xhi) = valid_range(kj, p, s, w, ow);
                let row = (ci * g.kernel_h + ki) * g.kernel_w + kj;
                let dst_row = &mut col[row * n..(row + 1) * n];
                for b in 0..batch {
                    let src = &x[(c * batch + b) * plane..(c * batch + b + 1) * plane];
                    let dst = &mut dst_row[b * oplane..(b + 1) * oplane];
                    dst[..ylo * ow].fill(0.0);
                    for oy in ylo..yhi {
                        let iy = oy * s + ki - p;
                        let d = &mut dst[oy * ow..(oy + 1) * ow];
                        d[..xlo].fill(0.0);
                        let srow = &src[iy * w..(iy + 1) * w];
                        if s == 1 {
                            let start = xlo + kj - p;
                            d[xlo..xhi].copy_from_slice(&srow[start..start + (xhi - xlo)]);
                        } else {
                            for (ox, v) in d[xlo..xhi].iter_mut().enumerate() {
                                *v = srow[(ox + xlo) * s + kj - p];
                            }
                        }
                        d[xhi..].fill(0.0);
                    }
                    dst[yhi * ow..].fill(0.0);
                }
            }
        }
    }
}

/// Fold `col` back into `dx` (accumulating), the adjoint of [`im2col`].
pub fn col2im(g: &Conv2dGeometry, batch: usize, group: usize, col: &[f32], dx: &mut [f32]) {
    let (h, w, oh, ow) = (g.in_h, g.in_w, g.out_h(), g.out_w());
    let (plane, oplane) = (h * w, oh * ow);
    let n = batch * oplane;
    let cg = g.in_per_group();
    let (s, p) = (g.stride, g.padding);
    for ci in 0..cg {
        let c = group * cg + ci;
        for ki in 0..g.kernel_h {
            let (ylo, yhi) = valid_range(ki, p, s, h, oh);
            for kj in 0..g.kernel_w {
                let (xlo, xhi) = valid_range(kj, p, s, w, ow);
                let row = (ci * g.kernel_h + ki) * g.kernel_w + kj;
                let src_row = &col[row * n..(row + 1) * n];
                for b in 0..batch {
                    let dst = &mut dx[(c * batch + b) * plane..(c * batch + b + 1) * plane];
                    let src = &src_row[b * oplane..(b + 1) * oplane];
                    for oy in ylo..yhi {
                        let iy = oy * s + ki - p;
                        let srow = &src[oy * ow..(oy + 1) * ow];
                        let drow = &mut dst[iy * w..(iy + 1) * w];
                        if s == 1 {
                            let start = xlo + kj - p;
                            for (d, v) in drow[start..start + (xhi - xlo)]
                                .iter_mut()
                                .zip(&srow[xlo..xhi])
                            {
                                *d += v;
                            }
                        } else {
                            for ox in xlo..xhi {
                                drow[ox * s + kj - p] += srow[ox];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Convolution forward over a batch: `y = conv(x, w) + bias`.
///
/// `x`: `[C][B][H][W]`; `w`: `[D][C/G][R][R]`; `y`: `[D][B][H'][W']`;
/// `col` is scratch of at least `G * (C/G) R R * B H' W'` elements (unused for
/// pointwise convolutions) and holds the unfolded input afterwards, for backward.
pub fn conv2d_forward(
    g: &Conv2dGeometry,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    col: &mut [f32],
    y: &mut [f32],
) {
    let n = batch * g.out_positions();
    let (k, dg) = (col_rows(g), g.out_per_group());
    for grp in 0..g.groups {
        let cols: &[f32] = if is_pointwise(g) {
            x
        } else {
            let c = &mut col[grp * k * n..(grp + 1) * k * n];
            im2col(g, batch, grp, x, c);
            c
        };
        gemm(
            dg,
            k,
            n,
            1.0,
            &w[grp * dg * k..],
            (k, 1),
            cols,
            (n, 1),
            0.0,
            &mut y[grp * dg * n..],
            (n, 1),
        );
    }
    if let Some(b) = bias {
        for (d, row) in y[..g.out_channels * n].chunks_exact_mut(n).enumerate() {
            let bd = b[d];
            row.iter_mut().for_each(|v| *v += bd);
        }
    }
}

/// Convolution backward. Given `dy` (`[D][B][H'][W']`) and the `col` left by
/// [`conv2d_forward`] (or `x` itself for pointwise convolutions), writes `dw`,
/// `db` and, if requested, `dx` (overwritten). `dcol` is scratch of
/// `(C/G) R R * B H' W'` elements.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    g: &Conv2dGeometry,
    batch: usize,
    x: &[f32],
    w: &[f32],
    col: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
    dcol: &mut [f32],
) {
    let n = batch * g.out_positions();
    let (k, dg) = (col_rows(g), g.out_per_group());
    let pointwise = is_pointwise(g);
    for grp in 0..g.groups {
        let cols = if pointwise {
            x
        } else {
            &col[grp * k * n..(grp + 1) * k * n]
        };
        // dW_g (dg x k) = dY_g (dg x n) * col_g^T (n x k)
        gemm(
            dg,
            n,
            k,
            1.0,
            &dy[grp * dg * n..],
            (n, 1),
            cols,
            (1, n),
            0.0,
            &mut dw[grp * dg * k..],
            (k, 1),
        );
    }
    if let Some(db) = db {
        for (d, row) in dy[..g.out_channels * n].chunks_exact(n).enumerate() {
            db[d] = row.iter().sum();
        }
    }
    if let Some(dx) = dx {
        if pointwise {
            // dX (k x n) = W^T (k x D) * dY (D x n)
            gemm(k, dg, n, 1.0, w, (1, k), dy, (n, 1), 0.0, dx, (n, 1));
            return;
        }
        dx[..g.in_channels * batch * g.in_h * g.in_w].fill(0.0);
        for grp in 0..g.groups {
            let dc = &mut dcol[..k * n];
            gemm(
                k,
                dg,
                n,
                1.0,
                &w[grp * dg * k..],
                (1, k),
                &dy[grp * dg * n..],
                (n, 1),
                0.0,
                dc,
                (n, 1),
            );
            col2im(g, batch, grp, dc, dx);
        }
    }
}

/// Direct (naive loop) convolution on the same layouts as [`conv2d_forward`];
/// the baseline of the benches and the reference of the tests.
pub fn conv2d_direct(
    g: &Conv2dGeometry,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (h, wd, oh, ow) = (g.in_h as isize, g.in_w as isize, g.out_h(), g.out_w());
    let (cg, dg) = (g.in_per_group(), g.out_per_group());
    for d in 0..g.out_channels {
        let grp = d / dg;
        for b in 0..batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |bb| bb[d]);
                    for ci in 0..cg {
                        let c = grp * cg + ci;
                        for ki in 0..g.kernel_h {
                            let iy = (oy * g.stride + ki) as isize - g.padding as isize;
                            if iy < 0 || iy >= h {
                                continue;
                            }
                            for kj in 0..g.kernel_w {
                                let ix = (ox * g.stride + kj) as isize - g.padding as isize;
                                if ix < 0 || ix >= wd {
                                    continue;
                                }
                                let xv =
                                    x[((c * batch + b) as isize * h * wd + iy * wd + ix) as usize];
                                let wv = w[((d * cg + ci) * g.kernel_h + ki) * g.kernel_w + kj];
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((d * batch + b) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
}

/// Linear forward on `[F][B]` activations: `y (D x B) = W (D x F) x (F x B) + bias`.
pub fn linear_forward(
    d: usize,
    f: usize,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    gemm(
        d,
        f,
        batch,
        1.0,
        w,
        (f, 1),
        x,
        (batch, 1),
        0.0,
        y,
        (batch, 1),
    );
    if let Some(b) = bias {
        for (row, bd) in y[..d * batch].chunks_exact_mut(batch).zip(b) {
            row.iter_mut().for_each(|v| *v += bd);
        }
    }
}

/// Linear backward: `dW = dY X^T`, `db = dY 1`, `dX = W^T dY` (if requested).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    d: usize,
    f: usize,
    batch: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
) {
    gemm(
        d,
        batch,
        f,
        1.0,
        dy,
        (batch, 1),
        x,
        (1, batch),
        0.0,
        dw,
        (f, 1),
    );
    if let Some(db) = db {
        for (row, g) in dy[..d * batch].chunks_exact(batch).zip(db.iter_mut()) {
            *g = row.iter().sum();
        }
    }
    if let Some(dx) = dx {
        gemm(
            f,
            d,
            batch,
            1.0,
            w,
            (1, f),
            dy,
            (batch, 1),
            0.0,
            dx,
            (batch, 1),
        );
    }
}

/// Flatten `[C][B][HW]` into `[C * HW][B]` (PyTorch's flatten order per sample).
pub fn flatten(c: usize, batch: usize, hw: usize, x: &[f32], out: &mut [f32]) {
    for ci in 0..c {
        for b in 0..batch {
            let src = &x[(ci * batch + b) * hw..(ci * batch + b + 1) * hw];
            for (k, v) in src.iter().enumerate() {
                out[(ci * hw + k) * batch + b] = *v;
            }
        }
    }
}

/// Adjoint of [`flatten`].
pub fn unflatten(c: usize, batch: usize, hw: usize, dout: &[f32], dx: &mut [f32]) {
    for ci in 0..c {
        for b in 0..batch {
            let dst = &mut dx[(ci * batch + b) * hw..(ci * batch + b + 1) * hw];
            for (k, v) in dst.iter_mut().enumerate() {
                *v = dout[(ci * hw + k) * batch + b];
            }
        }
    }
}

/// Geometry of a pooling window (square, no padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Planes (channels x batch).
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
}

impl PoolGeometry {
    /// Output height.
    pub fn out_h(&self) -> usize {
        energy_prune::arch::out_size(self.h, self.kernel, self.stride, 0)
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        energy_prune::arch::out_size(self.w, self.kernel, self.stride, 0)
    }
}

/// Max-pool forward; `argmax` receives, per output, the index of the winner within its plane.
pub fn maxpool_forward(p: &PoolGeometry, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    let (oh, ow) = (p.out_h(), p.out_w());
    for pl in 0..p.planes {
        let src = &x[pl * p.h * p.w..(pl + 1) * p.h * p.w];
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut best, mut arg) = (f32::NEG_INFINITY, 0usize);
                for ki in 0..p.kernel {
                    let row = (oy * p.stride + ki) * p.w;
                    for kj in 0..p.kernel {
                        let idx = row + ox * p.stride + kj;
                        if src[idx] > best {
                            best = src[idx];
                            arg = idx;
                        }
                    }
                }
                let o = (pl * oh + oy) * ow + ox;
                y[o] = best;
                argmax[o] = arg as u32;
            }
        }
    }
}

/// Max-pool backward: route each output gradient to its winner (`dx` overwritten).
pub fn maxpool_backward(p: &PoolGeometry, dy: &[f32], argmax: &[u32], dx: &mut [f32]) {
    let (plane, oplane) = (p.h * p.w, p.out_h() * p.out_w());
    dx[..p.planes * plane].fill(0.0);
    for pl in 0..p.planes {
        let d = &mut dx[pl * plane..(pl + 1) * plane];
        for o in 0..oplane {
            d[argmax[pl * oplane + o] as usize] += dy[pl * oplane + o];
        }
    }
}

/// Average-pool forward.
pub fn avgpool_forward(p: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    let (oh, ow) = (p.out_h(), p.out_w());
    let scale = 1.0 / (p.kernel * p.kernel) as f32;
    for pl in 0..p.planes {
        let src = &x[pl * p.h * p.w..(pl + 1) * p.h * p.w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = 0.0;
                for ki in 0..p.kernel {
                    let row = (oy * p.stride + ki) * p.w + ox * p.stride;
                    acc += src[row..row + p.kernel].iter().sum::<f32>();
                }
                y[(pl * oh + oy) * ow + ox] = acc * scale;
            }
        }
    }
}

/// Average-pool backward (`dx` overwritten).
pub fn avgpool_backward(p: &PoolGeometry, dy: &[f32], dx: &mut [f32]) {
    let (oh, ow) = (p.out_h(), p.out_w());
    let scale = 1.0 / (p.kernel * p.kernel) as f32;
    dx[..p.planes * p.h * p.w].fill(0.0);
    for pl in 0..p.planes {
        let d = &mut dx[pl * p.h * p.w..(pl + 1) * p.h * p.w];
        for oy in 0..oh {
            for ox in 0..ow {
                let g = dy[(pl * oh + oy) * ow + ox] * scale;
                for ki in 0..p.kernel {
                    let row = (oy * p.stride + ki) * p.w + ox * p.stride;
                    d[row..row + p.kernel].iter_mut().for_each(|v| *v += g);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

    fn geom(
        c: usize,
        h: usize,
        d: usize,
        k: usize,
        s: usize,
        p: usize,
        g: usize,
    ) -> Conv2dGeometry {
        Conv2dGeometry {
            in_channels: c,
            in_h: h,
            in_w: h + 1,
            out_channels: d,
            kernel_h: k,
            kernel_w: k,
            stride: s,
            padding: p,
            groups: g,
        }
    }

    fn rand_vec(rng: &mut ChaCha12Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn gemm_forward_matches_direct_convolution() {
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        for g in [
            geom(3, 9, 4, 3, 1, 0, 1),
            geom(3, 9, 4, 3, 2, 1, 1),
            geom(4, 7, 6, 3, 1, 2, 2),
            geom(4, 8, 4, 3, 2, 1, 4),
            geom(5, 6, 3, 1, 1, 0, 1),
            geom(2, 11, 3, 5, 3, 2, 1),
        ] {
            let batch = 3;
            let x = rand_vec(&mut rng, g.in_channels * batch * g.in_h * g.in_w);
            let w = rand_vec(&mut rng, g.out_channels * g.filter_len());
            let b = rand_vec(&mut rng, g.out_channels);
            let ny = g.out_channels * batch * g.out_positions();
            let (mut y1, mut y2) = (vec![0.0; ny], vec![0.0; ny]);
            let mut col = vec![0.0; g.groups * g.filter_len() * batch * g.out_positions()];
            conv2d_forward(&g, batch, &x, &w, Some(&b), &mut col, &mut y1);
            conv2d_direct(&g, batch, &x, &w, Some(&b), &mut y2);
            for (a, b) in y1.iter().zip(&y2) {
                assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for random x, c.
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        for g in [
            geom(2, 7, 2, 3, 2, 1, 1),
            geom(4, 6, 4, 3, 1, 1, 2),
            geom(1, 10, 1, 4, 3, 2, 1),
        ] {
            let batch = 2;
            let x = rand_vec(&mut rng, g.in_channels * batch * g.in_h * g.in_w);
            let n = batch * g.out_positions();
            for grp in 0..g.groups {
                let c = rand_vec(&mut rng, g.filter_len() * n);
                let mut col = vec![0.0; c.len()];
                im2col(&g, batch, grp, &x, &mut col);
                let mut dx = vec![0.0; x.len()];
                col2im(&g, batch, grp, &c, &mut dx);
                let lhs: f64 = col
                    .iter()
                    .zip(&c)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum();
                let rhs: f64 = x
                    .iter()
                    .zip(&dx)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum();
                assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
            }
        }
    }

    #[test]
    fn pool_output_sizes() {
        let p = PoolGeometry {
            planes: 1,
            h: 28,
            w: 28,
            kernel: 2,
            stride: 2,
        };
        assert_eq!((p.out_h(), p.out_w()), (14, 14));
    }
}
