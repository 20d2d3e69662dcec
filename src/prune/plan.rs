//! Channel pruning plans: which channels of every width survive.
//!
//! A channel slot `k` of width `u` is *live* while some layer reading `u` has a
//! nonzero weight on it (its input slice: input channel `k` of a convolution, the
//! `H * W` consecutive features of channel `k` of a linear layer after a flatten,
//! filter `k` of a depthwise convolution). A [`PruningPlan`] lists the live slots of
//! every width; it can be read off a pruned network, applied to a fresh copy (zeroing
//! the dead slots), and used to build a physically smaller network
//! ([`Cnn::compact`](crate::nn::Cnn::compact)).

use crate::arch::{Architecture, LayerKind};
use crate::error::{Error, Result};
use crate::network::{Network, NetworkMut};

/// Kept channel indices per width (fixed widths keep all their channels).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PruningPlan {
    /// For each width, the kept channel indices in increasing order.
    pub kept: Vec<Vec<usize>>,
}

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
pub(crate) struct SlotLayout {
    /// The width whose channels the slots are.
    pub(crate) width: usize,
    channels: usize,
    offset: usize,
    kind: SlotKind,
}

impl SlotLayout {
    /// One layout per input segment of `layer`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for grouped (non-depthwise) convolutions.
    pub(crate) fn of_layer(arch: &Architecture, layer: usize) -> Result<Vec<SlotLayout>> {
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
                    return Err(Error::param(
                        "groups",
                        g.groups,
                        format!(
                            "channel pruning supports ungrouped and depthwise convolutions (layer {})",
                            l.name
                        ),
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

    /// Call `f(k, range)` for every contiguous run of weight indices belonging to
    /// slot `k`, in memory order (so a pass over all slots streams the weights once).
    #[inline]
    pub(crate) fn for_each_run(&self, mut f: impl FnMut(usize, std::ops::Range<usize>)) {
        match self.kind {
            SlotKind::Depthwise { taps } => {
                for k in 0..self.channels {
                    f(k, k * taps..(k + 1) * taps);
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
                        f(k, base..base + taps);
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
                        f(k, base..base + spatial);
                    }
                }
            }
        }
    }
}

impl PruningPlan {
    /// Every channel of every width kept.
    pub fn full(arch: &Architecture) -> Self {
        Self {
            kept: arch
                .widths()
                .iter()
                .map(|w| (0..w.channels).collect())
                .collect(),
        }
    }

    /// The live slots of a network (see the [module docs](self)).
    ///
    /// # Errors
    /// Errors of the network's `read_weights`; [`Error::InvalidParameter`] for grouped
    /// (non-depthwise) convolutions.
    pub fn from_network<N: Network + ?Sized>(net: &N) -> Result<Self> {
        let arch = net.architecture();
        let weights: Vec<Vec<f32>> = (0..arch.layers().len())
            .map(|l| net.weights(l))
            .collect::<Result<_>>()?;
        // A slot is live if any weight reading it is nonzero; a width nobody reads
        // keeps all its channels.
        let mut read = vec![false; arch.widths().len()];
        let mut live: Vec<Vec<bool>> = arch
            .widths()
            .iter()
            .map(|w| vec![w.fixed; w.channels])
            .collect();
        for (l, w) in weights.iter().enumerate() {
            for slots in SlotLayout::of_layer(arch, l)? {
                read[slots.width] = true;
                let lv = &mut live[slots.width];
                slots.for_each_run(|k, r| lv[k] |= w[r].iter().any(|v| *v != 0.0));
            }
        }
        let kept = live
            .iter()
            .zip(&read)
            .map(|(lv, r)| (0..lv.len()).filter(|&k| lv[k] || !r).collect())
            .collect();
        Ok(Self { kept })
    }

    /// Number of kept channels per width.
    pub fn widths(&self) -> Vec<usize> {
        self.kept.iter().map(Vec::len).collect()
    }

    /// Check the plan against an architecture: one entry per width, indices in
    /// range and increasing, fixed widths complete, at least one channel per width.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] describing the first problem.
    pub fn check(&self, arch: &Architecture) -> Result<()> {
        if self.kept.len() != arch.widths().len() {
            return Err(Error::shape(
                "widths in the plan",
                arch.widths().len(),
                self.kept.len(),
            ));
        }
        for (u, (k, w)) in self.kept.iter().zip(arch.widths()).enumerate() {
            let increasing = k.windows(2).all(|p| p[0] < p[1]);
            if k.is_empty()
                || !increasing
                || k.last().is_some_and(|&x| x >= w.channels)
                || (w.fixed && k.len() != w.channels)
            {
                return Err(Error::param(
                    "plan",
                    format!("width {u} ({})", w.name),
                    "kept indices must be increasing, in range, non-empty, and complete for fixed widths",
                ));
            }
        }
        Ok(())
    }

    /// Zero the weights of every dead slot of `net` (for a fresh copy of the network
    /// the plan was read from).
    ///
    /// # Errors
    /// [`PruningPlan::check`] errors and the network's errors.
    pub fn apply<N: NetworkMut + ?Sized>(&self, net: &mut N) -> Result<()> {
        let arch = net.architecture().clone();
        self.check(&arch)?;
        for l in 0..arch.layers().len() {
            let mut w = net.weights(l)?;
            for slots in SlotLayout::of_layer(&arch, l)? {
                let mut keep = vec![false; arch.widths()[slots.width].channels];
                self.kept[slots.width].iter().for_each(|&k| keep[k] = true);
                slots.for_each_run(|k, r| {
                    if !keep[k] {
                        w[r].fill(0.0);
                    }
                });
            }
            net.write_weights(l, &w)?;
        }
        Ok(())
    }
}
