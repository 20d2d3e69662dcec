//! Channel slots: where the channels of one width sit inside a layer's canonical
//! weights. The one source of truth for channel layout, used by pruning plans,
//! the ADMM step and compaction.
//!
//! A channel slot `k` of width `u` read by a layer is: input channel `offset + k` of
//! every filter of an ungrouped convolution, filter `k` of a depthwise convolution,
//! or the `H * W` consecutive features `offset + k * H * W ..` of every output of a
//! linear layer after a flatten.

use super::{Architecture, LayerKind};
use crate::error::{Error, Result};

/// How the channel slots of one input width sit in a layer's canonical weights.
#[derive(Debug, Clone, Copy)]
enum SlotKind {
    /// Filter `k` (`taps` weights) of a depthwise convolution.
    Depthwise { taps: usize },
    /// Input channel `offset + k` of every filter of an ungrouped convolution.
    Conv {
        in_channels: usize,
        out: usize,
        taps: usize,
    },
    /// Features `offset + k * spatial ..` of every output of a linear layer.
    Linear {
        in_features: usize,
        out: usize,
        spatial: usize,
    },
}

/// The slots of one width inside one layer's weights; see [`SlotLayout::for_each_run`].
#[derive(Debug, Clone, Copy)]
pub struct SlotLayout {
    /// The width whose channels the slots are.
    pub width: usize,
    channels: usize,
    offset: usize,
    kind: SlotKind,
}

impl SlotLayout {
    /// One layout per input segment of `layer`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for grouped (non-depthwise) convolutions.
    pub fn of_layer(arch: &Architecture, layer: usize) -> Result<Vec<SlotLayout>> {
        let l = &arch.layers()[layer];
        let mut offset = 0;
        let mut out = Vec::with_capacity(l.input.len());
        for seg in &l.input {
            let channels = arch.widths()[seg.width.0].channels;
            let kind = match l.kind {
                LayerKind::Conv2d(g) if g.is_depthwise() => SlotKind::Depthwise {
                    taps: g.kernel_h * g.kernel_w,
                },
                LayerKind::Conv2d(g) if g.groups == 1 => SlotKind::Conv {
                    in_channels: g.in_channels,
                    out: g.out_channels,
                    taps: g.kernel_h * g.kernel_w,
                },
                LayerKind::Conv2d(g) => {
                    return Err(Error::unsupported(
                        format!(
                            "channel pruning of the grouped convolution `{}` ({} groups)",
                            l.name, g.groups
                        ),
                        "channel pruning handles ungrouped and depthwise convolutions; freeze the widths this layer reads",
                    ));
                }
                LayerKind::Linear(g) => SlotKind::Linear {
                    in_features: g.in_features,
                    out: g.out_features,
                    spatial: seg.spatial,
                },
            };
            out.push(SlotLayout {
                width: seg.width.0,
                channels,
                offset,
                kind,
            });
            offset += channels * if l.is_conv() { 1 } else { seg.spatial };
        }
        Ok(out)
    }

    /// Channels of the width (slots).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Call `f(k, range)` for every contiguous run of weight indices belonging to
    /// slot `k`, in memory order (so a pass over all slots streams the weights once).
    #[inline]
    pub fn for_each_run(&self, mut f: impl FnMut(usize, std::ops::Range<usize>)) {
        self.for_each_run_with_output(|_, k, r| f(k, r));
    }

    /// As [`SlotLayout::for_each_run`], also naming the layer's output channel `o`
    /// the run belongs to: `f(o, k, range)`. Runs come in memory order, output-major,
    /// so copying the runs of kept `(o, k)` pairs in order yields the canonical
    /// layout of the narrowed layer (what compaction does).
    #[inline]
    pub fn for_each_run_with_output(
        &self,
        mut f: impl FnMut(usize, usize, std::ops::Range<usize>),
    ) {
        match self.kind {
            SlotKind::Depthwise { taps } => {
                for k in 0..self.channels {
                    f(k, k, k * taps..(k + 1) * taps);
                }
            }
            SlotKind::Conv {
                in_channels,
                out,
                taps,
            } => {
                for o in 0..out {
                    for k in 0..self.channels {
                        let base = (o * in_channels + self.offset + k) * taps;
                        f(o, k, base..base + taps);
                    }
                }
            }
            SlotKind::Linear {
                in_features,
                out,
                spatial,
            } => {
                for o in 0..out {
                    for k in 0..self.channels {
                        let base = o * in_features + self.offset + k * spatial;
                        f(o, k, base..base + spatial);
                    }
                }
            }
        }
    }
}
