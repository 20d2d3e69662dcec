//! Helpers for this crate's tests and benches: not part of the public API, may
//! change without notice.

use crate::energy::LayerCost;
use crate::error::Result;
use crate::prune::Selection;

/// The sort-based reference of the greedy knapsack (`O(n log n)`), the baseline of
/// the projection benches.
///
/// # Errors
/// As [`greedy_knapsack`](crate::prune::greedy_knapsack).
pub fn project_sorted<W: AsMut<[f32]> + AsRef<[f32]> + Sync>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
) -> Result<Selection> {
    crate::prune::project_sorted(weights, costs, capacity)
}

/// Central finite-difference check of a gradient: for every coordinate `i` of `x`,
/// `(f(x + h_i e_i) - f(x - h_i e_i)) / 2 h_i` with the relative step
/// `h_i = h * max(|x_i|, 1)`, against `grad[i]`, with tolerance
/// `abs_tol + rel_tol * max(|fd|, |grad|)`.
///
/// # Errors
/// A message naming the first coordinate whose difference is out of tolerance.
pub fn check_gradient(
    x: &[f64],
    grad: &[f64],
    h: f64,
    abs_tol: f64,
    rel_tol: f64,
    mut f: impl FnMut(&[f64]) -> f64,
) -> std::result::Result<(), String> {
    if grad.len() != x.len() {
        return Err(format!(
            "gradient has {} entries, x has {}",
            grad.len(),
            x.len()
        ));
    }
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        let hi = h * x[i].abs().max(1.0);
        xp[i] = x[i] + hi;
        let fp = f(&xp);
        xp[i] = x[i] - hi;
        let fm = f(&xp);
        xp[i] = x[i];
        let fd = (fp - fm) / (2.0 * hi);
        let tol = abs_tol + rel_tol * fd.abs().max(grad[i].abs());
        if (fd - grad[i]).abs() > tol || !fd.is_finite() {
            return Err(format!(
                "coordinate {i}: finite difference {fd:.6e} vs gradient {:.6e} (tolerance {tol:.2e})",
                grad[i]
            ));
        }
    }
    Ok(())
}

/// Length-checked entry points to the reference CNN's convolution kernels, for the
/// benches (the kernels themselves are internal and trust their callers).
pub mod kernels {
    use crate::arch::Conv2dGeometry;
    use crate::error::{Error, Result};
    use crate::nn::ops;

    fn need(what: &str, have: usize, want: usize) -> Result<()> {
        if have < want {
            return Err(Error::shape(what, want, have));
        }
        Ok(())
    }

    /// Validate `g` and the lengths of the buffers every kernel reads or writes.
    fn check(g: &Conv2dGeometry, batch: usize, x: usize, w: usize, y: usize) -> Result<()> {
        g.validate()?;
        let n = batch
            .checked_mul(g.out_positions())
            .ok_or_else(|| Error::param("batch", batch, "too large"))?;
        need("input", x, g.in_channels * batch * g.in_h * g.in_w)?;
        need("weights", w, g.out_channels * g.filter_len())?;
        need("output", y, g.out_channels * n)
    }

    fn col_len(g: &Conv2dGeometry, batch: usize) -> usize {
        g.groups * ops::col_rows(g) * batch * g.out_positions()
    }

    /// im2col + GEMM convolution forward.
    ///
    /// # Errors
    /// An invalid geometry or a buffer shorter than the geometry needs.
    pub fn conv2d_forward(
        g: &Conv2dGeometry,
        batch: usize,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        col: &mut [f32],
        y: &mut [f32],
    ) -> Result<()> {
        check(g, batch, x.len(), w.len(), y.len())?;
        need("im2col buffer", col.len(), col_len(g, batch))?;
        if let Some(b) = bias {
            need("bias", b.len(), g.out_channels)?;
        }
        ops::conv2d_forward(g, batch, x, w, bias, col, y);
        Ok(())
    }

    /// Direct (loop) convolution forward, the baseline of the im2col + GEMM kernel.
    ///
    /// # Errors
    /// As [`conv2d_forward`].
    pub fn conv2d_direct(
        g: &Conv2dGeometry,
        batch: usize,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<()> {
        check(g, batch, x.len(), w.len(), y.len())?;
        if let Some(b) = bias {
            need("bias", b.len(), g.out_channels)?;
        }
        ops::conv2d_direct(g, batch, x, w, bias, y);
        Ok(())
    }

    /// im2col + GEMM convolution backward (`col` from the forward pass).
    ///
    /// # Errors
    /// As [`conv2d_forward`], for every buffer.
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
    ) -> Result<()> {
        check(g, batch, x.len(), w.len(), dy.len())?;
        need("weight gradient", dw.len(), w.len())?;
        need("im2col buffer", col.len(), col_len(g, batch))?;
        need("im2col gradient buffer", dcol.len(), col_len(g, batch))?;
        if let Some(db) = &db {
            need("bias gradient", db.len(), g.out_channels)?;
        }
        if let Some(dx) = &dx {
            need("input gradient", dx.len(), x.len())?;
        }
        ops::conv2d_backward(g, batch, x, w, col, dy, dw, db, dx, dcol);
        Ok(())
    }
}

/// Decode a gzip-compressed IDX image file and label file from memory, as
/// [`Mnist::load`](crate::nn::mnist::Mnist::load) does from disk (for the parser
/// fuzz tests).
///
/// # Errors
/// As [`Mnist::load`](crate::nn::mnist::Mnist::load).
pub fn read_mnist_pair(
    images_gz: &[u8],
    labels_gz: &[u8],
    opts: crate::nn::mnist::MnistOptions,
) -> Result<crate::train::Dataset> {
    crate::nn::mnist::read_pair(
        std::path::Path::new("<images>"),
        images_gz,
        std::path::Path::new("<labels>"),
        labels_gz,
        opts,
    )
}

/// [`Cnn::load`](crate::nn::Cnn::load) from the bytes of a saved file (for the
/// parser fuzz tests).
///
/// # Errors
/// As [`Cnn::load`](crate::nn::Cnn::load).
pub fn load_cnn_bytes(net: &mut crate::nn::Cnn, bytes: &[u8]) -> Result<()> {
    net.load_bytes(std::path::Path::new("<bytes>"), bytes)
}

/// Peak resident memory of this process in MB, from `/proc/self/status` (`VmHWM`);
/// 0 where that file does not exist (not Linux). For the out-of-core example and
/// the bounded-memory checks of the fuzz tests.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
