//! Channel pruning plans: which channels of every width survive.
//!
//! A channel slot `k` of width `u` is *live* while some layer reading `u` has a
//! nonzero weight on it (its input slice: input channel `k` of a convolution, the
//! `H * W` consecutive features of channel `k` of a linear layer after a flatten,
//! filter `k` of a depthwise convolution). A [`PruningPlan`] lists the live slots of
//! every width; it can be read off a pruned network, applied to a fresh copy (zeroing
//! the dead slots), and used to build a physically smaller network
//! (for the reference CNN, [`Cnn::compact`](crate::nn::Cnn::compact)); the slot
//! geometry is [`SlotLayout`]'s.

use super::{Network, NetworkMut};
use crate::arch::{Architecture, SlotLayout};
use crate::error::{Error, Result};

/// Kept channel indices per width (fixed widths keep all their channels), tied to
/// the architecture it was made for.
///
/// A plan records its architecture's name and [`Architecture::fingerprint`];
/// [`PruningPlan::check`] (run before every use) refuses any other architecture,
/// so a plan read off LeNet-5 cannot silently zero half of a wider LeNet-5.
/// A deserialised plan is checked for what can be checked without an
/// architecture (schema version, every width keeps at least one channel, indices
/// increase).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "PlanFields")
)]
pub struct PruningPlan {
    /// Version of the serialised form ([`PruningPlan::SCHEMA`]).
    schema: u32,
    /// Name of the architecture the plan was made for (for messages).
    architecture: String,
    /// [`Architecture::fingerprint`] of that architecture.
    fingerprint: u64,
    /// For each width, the kept channel indices in increasing order.
    kept: Vec<Vec<usize>>,
}

/// The serialised form of a [`PruningPlan`].
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct PlanFields {
    schema: Option<u32>,
    architecture: Option<String>,
    fingerprint: Option<u64>,
    kept: Vec<Vec<usize>>,
}

#[cfg(feature = "serde")]
impl TryFrom<PlanFields> for PruningPlan {
    type Error = Error;
    fn try_from(f: PlanFields) -> Result<Self> {
        let (Some(schema), Some(architecture), Some(fingerprint)) =
            (f.schema, f.architecture, f.fingerprint)
        else {
            return Err(Error::param(
                "plan",
                "no schema / architecture / fingerprint",
                "this plan does not say which architecture it was made for (an older format?): \
                 re-create it with PruningPlan::from_network",
            ));
        };
        if schema != PruningPlan::SCHEMA {
            return Err(Error::param(
                "plan schema",
                schema,
                format!(
                    "this version reads schema {}; re-create the plan with this version",
                    PruningPlan::SCHEMA
                ),
            ));
        }
        check_indices(&f.kept)?;
        Ok(PruningPlan {
            schema,
            architecture,
            fingerprint,
            kept: f.kept,
        })
    }
}

/// Every width keeps at least one channel, in increasing order.
fn check_indices(kept: &[Vec<usize>]) -> Result<()> {
    for (u, k) in kept.iter().enumerate() {
        if k.is_empty() || !k.windows(2).all(|p| p[0] < p[1]) {
            return Err(Error::param(
                "plan",
                format!("width {u}"),
                "kept indices must be non-empty and increasing",
            ));
        }
    }
    Ok(())
}

impl PruningPlan {
    /// Version of the serialised form.
    pub const SCHEMA: u32 = 1;

    /// A plan for `arch` keeping the channels `kept[u]` of every width `u`.
    ///
    /// # Errors
    /// As [`PruningPlan::check`].
    pub fn new(arch: &Architecture, kept: Vec<Vec<usize>>) -> Result<Self> {
        let plan = Self {
            schema: Self::SCHEMA,
            architecture: arch.name().to_string(),
            fingerprint: arch.fingerprint(),
            kept,
        };
        plan.check(arch)?;
        Ok(plan)
    }

    /// Every channel of every width kept.
    pub fn full(arch: &Architecture) -> Self {
        Self {
            schema: Self::SCHEMA,
            architecture: arch.name().to_string(),
            fingerprint: arch.fingerprint(),
            kept: arch
                .widths()
                .iter()
                .map(|w| (0..w.channels).collect())
                .collect(),
        }
    }

    /// Keep the first `widths[u]` channels of every width `u` (uniform scaling).
    ///
    /// # Errors
    /// As [`PruningPlan::check`] (one entry per width, each in `1..=channels`, fixed
    /// widths complete).
    pub fn leading(arch: &Architecture, widths: &[usize]) -> Result<Self> {
        Self::new(arch, widths.iter().map(|&w| (0..w).collect()).collect())
    }

    /// The kept channel indices of every width.
    pub fn kept(&self) -> &[Vec<usize>] {
        &self.kept
    }

    /// Name of the architecture the plan was made for.
    pub fn architecture_name(&self) -> &str {
        &self.architecture
    }

    /// [`Architecture::fingerprint`] of the architecture the plan was made for.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The live slots of a network (see the [module docs](crate::network)).
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
        Self::new(arch, kept)
    }

    /// Number of kept channels per width.
    pub fn widths(&self) -> Vec<usize> {
        self.kept.iter().map(Vec::len).collect()
    }

    /// Check the plan against an architecture: made for it (same fingerprint), one
    /// entry per width, indices in range and increasing, fixed widths complete, at
    /// least one channel per width.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] describing the first problem.
    pub fn check(&self, arch: &Architecture) -> Result<()> {
        if self.fingerprint != arch.fingerprint() {
            return Err(Error::param(
                "plan",
                format!(
                    "made for `{}` (fingerprint {:016x})",
                    self.architecture, self.fingerprint
                ),
                format!(
                    "it does not fit `{}` (fingerprint {:016x}): a plan applies only to the \
                     architecture it was read from",
                    arch.name(),
                    arch.fingerprint()
                ),
            ));
        }
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
        // All layers are computed first, then written: nothing changes on error.
        let mut pruned = Vec::with_capacity(arch.layers().len());
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
            pruned.push(w);
        }
        super::NetworkState {
            weights: pruned,
            input_masks: vec![None; arch.layers().len()],
        }
        .write_weights_to(net)
    }
}
