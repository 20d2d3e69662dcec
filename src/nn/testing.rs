//! Helpers of the reference CNN for this crate's tests and benches: not part of the
//! public API, may change without notice (the crate-wide ones are in
//! `energy_prune::testing`).

use crate::error::Result;

/// Length-checked entry points to the reference CNN's convolution kernels, for the
/// benches (the kernels themselves are internal and trust their callers).
pub mod kernels {
    use super::super::ops;
    use crate::arch::Conv2dGeometry;
    use crate::error::{Error, Result};

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
/// [`Mnist::load`](super::mnist::Mnist::load) does from disk (for the parser
/// fuzz tests).
///
/// # Errors
/// As [`Mnist::load`](super::mnist::Mnist::load).
pub fn read_mnist_pair(
    images_gz: &[u8],
    labels_gz: &[u8],
    opts: super::mnist::MnistOptions,
) -> Result<crate::train::Dataset> {
    super::mnist::read_pair(
        std::path::Path::new("<images>"),
        images_gz,
        std::path::Path::new("<labels>"),
        labels_gz,
        opts,
    )
}

/// [`Cnn::load`](super::Cnn::load) from the bytes of a saved file (for the
/// parser fuzz tests).
///
/// # Errors
/// As [`Cnn::load`](super::Cnn::load).
pub fn load_cnn_bytes(net: &mut super::Cnn, bytes: &[u8]) -> Result<()> {
    net.load_bytes(std::path::Path::new("<bytes>"), bytes)
}
