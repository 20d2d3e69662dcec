//! Channel pruning plans: which channels of every width survive.
//!
//! A channel slot `k` of width `u` is *live* while some layer reading `u` has a
//! nonzero weight on it (its input slice: input channel `k` of a convolution, the
//! `H * W` consecutive features of channel `k` of a linear layer after a flatten,
//! filter `k` of a depthwise convolution). A [`PruningPlan`] lists the live slots of
//! every width; it can be read off a pruned network, applied to a fresh copy (zeroing
//! the dead slots), and used to build a physically smaller network
//! (for the reference CNN, `Cnn::compact` of the `energy-prune-nn` crate); the slot
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
///
/// A plan may carry its [`Provenance`] (crate version, cost model, budget,
/// predicted cost), saved with it by [`PruningPlan::save_json`].
#[derive(Debug, Clone, PartialEq)]
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
    /// How the plan was made.
    provenance: Provenance,
}

/// How a [`PruningPlan`] was made: the crate version that wrote it and, when the
/// maker says so, the cost model, the budget and the cost predicted for the plan.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Provenance {
    /// Version of energy-prune that made the plan.
    pub crate_version: String,
    /// The cost model the budget was expressed in.
    pub cost_model: Option<CostModelRecord>,
    /// The budget (in the cost model's units, or a fraction of dense; see `budget_unit`).
    pub budget: Option<f64>,
    /// What `budget` and `predicted_cost` measure (e.g. `"fraction of dense energy"`).
    pub budget_unit: Option<String>,
    /// The cost the model predicts for the plan (same unit as `budget`).
    pub predicted_cost: Option<f64>,
    /// The precision of every layer the cost was predicted at, when it was chosen
    /// with the pruning ([`JointQuantization`](crate::prune::JointQuantization));
    /// `None` for the cost model's own precision.
    #[cfg_attr(feature = "serde", serde(default))]
    pub precision: Option<Vec<crate::energy::LayerPrecision>>,
}

/// The cost model a plan was made with: its kind and its parameters (as JSON
/// text, e.g. a serialised [`SystolicConfig`](crate::energy::SystolicConfig) or
/// [`CalibratedModel`](crate::energy::CalibratedModel)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CostModelRecord {
    /// Model kind, e.g. `"systolic"`, `"bilinear"`, `"layer_table"`, `"counting"`.
    pub kind: String,
    /// The model's parameters as JSON text.
    pub parameters: String,
}

impl Provenance {
    /// The provenance of a plan made now by this crate version, with nothing else known.
    pub fn this_version() -> Self {
        Self {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            ..Self::default()
        }
    }
}

/// The serialised form of a [`PruningPlan`].
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct PlanFields {
    schema: Option<u32>,
    architecture: Option<String>,
    fingerprint: Option<u64>,
    kept: Option<Vec<Vec<usize>>>,
    provenance: Option<Provenance>,
}

#[cfg(feature = "serde")]
impl TryFrom<PlanFields> for PruningPlan {
    type Error = Error;
    fn try_from(f: PlanFields) -> Result<Self> {
        let (Some(schema), Some(architecture), Some(fingerprint), Some(kept)) =
            (f.schema, f.architecture, f.fingerprint, f.kept)
        else {
            return Err(Error::param(
                "plan",
                "no schema / architecture / fingerprint / kept",
                "this is not a pruning plan written by energy-prune, or one from a version \
                 before plans named their architecture: re-create it with PruningPlan::from_network",
            ));
        };
        if schema != PruningPlan::SCHEMA {
            let why = if schema < PruningPlan::SCHEMA {
                "it was written by an earlier version (schema 1 plans record no provenance: \
                 cost model, budget, crate version)"
            } else {
                "it was written by a newer version of energy-prune"
            };
            return Err(Error::param(
                "plan schema",
                schema,
                format!(
                    "{why}; this version reads schema {}: re-create the plan with this version",
                    PruningPlan::SCHEMA
                ),
            ));
        }
        let provenance = f.provenance.ok_or_else(|| {
            Error::param(
                "plan",
                "no provenance",
                "a schema 2 plan records its provenance; the file was edited or truncated",
            )
        })?;
        check_indices(&kept)?;
        Ok(PruningPlan {
            schema,
            architecture,
            fingerprint,
            kept,
            provenance,
        })
    }
}

/// Every width keeps at least one channel, in increasing order.
#[cfg(feature = "serde")]
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
    /// Version of the serialised form (2: with [`Provenance`]).
    pub const SCHEMA: u32 = 2;

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
            provenance: Provenance::this_version(),
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
            provenance: Provenance::this_version(),
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

    /// How the plan was made.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// The same plan recording how it was made (the crate version is always this one's).
    pub fn with_provenance(mut self, provenance: Provenance) -> Self {
        self.provenance = Provenance {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            ..provenance
        };
        self
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
        // A slot is live if any weight reading it is nonzero; a width nobody reads
        // keeps all its channels.
        let mut read = vec![false; arch.widths().len()];
        let mut live: Vec<Vec<bool>> = arch
            .widths()
            .iter()
            .map(|w| vec![w.fixed; w.channels])
            .collect();
        // One layer's weights at a time (a large model's are not copied whole).
        let mut w = Vec::new();
        for (l, layer) in arch.layers().iter().enumerate() {
            w.resize(layer.weight_count(), 0.0);
            net.read_weights(l, &mut w)?;
            for slots in SlotLayout::of_layer(arch, l)? {
                read[slots.width] = true;
                let lv = &mut live[slots.width];
                slots.for_each_run(|k, r| lv[k] |= w[r].iter().any(|v| *v != 0.0));
            }
        }
        // A width whose every slot is dead still keeps one channel (an architecture
        // has no empty widths); its weights are zero, so the network is unchanged.
        let kept = live
            .iter()
            .zip(&read)
            .map(|(lv, r)| {
                let k: Vec<usize> = (0..lv.len()).filter(|&k| lv[k] || !r).collect();
                if k.is_empty() { vec![0] } else { k }
            })
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
        if let Some(p) = &self.provenance.precision {
            crate::energy::check_precision(arch, p)?;
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

#[cfg(feature = "serde")]
impl PruningPlan {
    /// Write the plan with its provenance as JSON (through a temporary file).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written.
    pub fn save_json(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::serialization("the pruning plan", e))?;
        crate::files::write_atomic(path.as_ref(), text.as_bytes())
    }

    /// Read a plan written by [`PruningPlan::save_json`]. Check it against the
    /// architecture at hand with [`PruningPlan::check`] (every use does).
    ///
    /// # Errors
    /// [`Error::Io`] if unreadable; [`Error::CorruptData`] saying why the file cannot
    /// be used: not JSON, not a plan, an older or newer schema, bad indices.
    pub fn load_json(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = crate::files::read_text(path)?;
        serde_json::from_str(&text).map_err(|e| Error::CorruptData {
            path: path.to_path_buf(),
            reason: format!("not a usable pruning plan: {e}"),
        })
    }
}
