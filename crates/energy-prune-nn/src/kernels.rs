//! Length-checked entry points to the reference CNN's convolution kernels
//! (im2col + GEMM forward and backward, and a direct convolution as the
//! reference): every buffer length and the geometry are checked before the
//! kernel runs, so a wrong size is an error, never a panic. The layers of
//! [`Cnn`](crate::Cnn) call the kernels directly.

use crate::ops;
use energy_prune::arch::Conv2dGeometry;
use energy_prune::error::{Error, Result};

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
