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

/// Where width `u`'s slot `k` sits in a layer's canonical weights: visits every
/// weight index of the slot.
fn for_each_slot_index(
    arch: &Architecture,
    layer: usize,
    width: usize,
    k: usize,
    f: &mut dyn FnMut(usize),
) -> Result<()> {
    let l = &arch.layers()[layer];
    let mut offset = 0;
    for seg in &l.input {
        let channels = arch.widths()[seg.width.0].channels;
        if seg.width.0 == width {
            match l.kind {
                LayerKind::Conv2d(g) => {
                    let taps = g.kernel_h * g.kernel_w;
                    if g.is_depthwise() {
                        (k * taps..(k + 1) * taps).for_each(&mut *f);
                    } else if g.groups == 1 {
                        let c = offset + k;
                        for o in 0..g.out_channels {
                            let base = (o * g.in_channels + c) * taps;
                            (base..base + taps).for_each(&mut *f);
                        }
                    } else {
                        return Err(Error::param(
                            "groups",
                            g.groups,
                            format!(
                                "channel plans support ungrouped and depthwise convolutions (layer {})",
                                l.name
                            ),
                        ));
                    }
                }
                LayerKind::Linear(g) => {
                    let start = offset + k * seg.spatial;
                    for o in 0..g.out_features {
                        let base = o * g.in_features + start;
                        (base..base + seg.spatial).for_each(&mut *f);
                    }
                }
            }
        }
        offset += channels * if l.is_conv() { 1 } else { seg.spatial };
    }
    Ok(())
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
        let mut kept = Vec::with_capacity(arch.widths().len());
        for (u, w) in arch.widths().iter().enumerate() {
            if w.fixed {
                kept.push((0..w.channels).collect());
                continue;
            }
            let readers: Vec<usize> = (0..arch.layers().len())
                .filter(|&l| arch.layers()[l].input.iter().any(|s| s.width.0 == u))
                .collect();
            let mut live = Vec::new();
            for k in 0..w.channels {
                let mut nonzero = readers.is_empty();
                for &l in &readers {
                    for_each_slot_index(arch, l, u, k, &mut |i| nonzero |= weights[l][i] != 0.0)?;
                }
                if nonzero {
                    live.push(k);
                }
            }
            kept.push(live);
        }
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
            for seg in &arch.layers()[l].input {
                let u = seg.width.0;
                let mut keep = vec![false; arch.widths()[u].channels];
                self.kept[u].iter().for_each(|&k| keep[k] = true);
                for (k, kept) in keep.iter().enumerate() {
                    if !kept {
                        for_each_slot_index(&arch, l, u, k, &mut |i| w[i] = 0.0)?;
                    }
                }
            }
            net.write_weights(l, &w)?;
        }
        Ok(())
    }
}
