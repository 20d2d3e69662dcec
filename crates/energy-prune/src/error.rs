//! The crate's single error type.
//!
//! Every fallible public function returns [`Result<T>`](Result). Variants carry the
//! figures that went wrong so that callers can react programmatically, and their
//! messages say how to fix the problem.

use std::path::PathBuf;

/// Convenient alias for `std::result::Result<T, energy_prune::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in energy-prune.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size, shape or length did not match what was expected.
    #[error(
        "shape mismatch in {what}: expected {expected}, got {got}; check the layer geometry or buffer length"
    )]
    ShapeMismatch {
        /// What was being checked (e.g. `"weights of layer conv1"`).
        what: String,
        /// The expected size.
        expected: usize,
        /// The size that was supplied.
        got: usize,
    },

    /// An architecture or layer description is inconsistent.
    #[error("invalid architecture: {0}")]
    InvalidArchitecture(String),

    /// A configuration or hyper-parameter is outside its valid range.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Name of the parameter.
        name: &'static str,
        /// The rejected value, formatted.
        value: String,
        /// Why it was rejected and what range is allowed.
        reason: String,
    },

    /// A feature the crate does not (yet) support was asked for, e.g. channel
    /// pruning of a grouped (non-depthwise) convolution.
    #[error("unsupported: {feature}: {hint}")]
    Unsupported {
        /// What was asked for.
        feature: String,
        /// What to do instead.
        hint: String,
    },

    /// A weight, gradient, input or cost is NaN or infinite; the advice depends
    /// on where the value came from.
    #[error("non-finite value in {what} at index {index}: {}", origin.advice())]
    NonFinite {
        /// Which buffer contained the value.
        what: String,
        /// Index of the first non-finite element.
        index: usize,
        /// Where the value came from.
        origin: Origin,
    },

    /// A value could not be written in or read from a serialised form (JSON of a
    /// model, plan or profile), outside any file.
    #[error("cannot serialise {what}: {reason}")]
    Serialization {
        /// What was being written or read.
        what: String,
        /// The serialiser's message.
        reason: String,
    },

    /// A message of the sharded projection protocol does not fit the exchange: a
    /// reply of another round or version, counts that do not add up, values out of
    /// range. Nothing has been changed by the message that raised it.
    #[error(
        "sharded protocol, {round}: {reason}; every shard must run the same crate version and answer the request it was sent"
    )]
    Protocol {
        /// The round (`"stats"`, `"keys"`, `"apply"`, ...) or `"request"` for a
        /// request a shard refused.
        round: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// A budget is below the smallest cost the model allows (all weights zero at
    /// the weight level, the narrowest widths at the width level).
    #[error(
        "infeasible budget {budget:.6e}: the cheapest state the model allows costs {min_achievable:.6e} (all weights zero, or the narrowest widths); raise the budget, or at the weight level add input masks so that inputs can be removed too"
    )]
    InfeasibleBudget {
        /// The requested budget.
        budget: f64,
        /// The energy of the cheapest state.
        min_achievable: f64,
    },

    /// A run ended above its budget (for instance channel pruning that did not reach
    /// its target within the epochs given).
    #[error(
        "{what} missed its budget: reached {reached:.6e}, budget {budget:.6e}; train longer (more epochs), raise the step on the widths, or loosen the budget"
    )]
    BudgetMissed {
        /// What missed it.
        what: String,
        /// The cost reached.
        reached: f64,
        /// The budget.
        budget: f64,
    },

    /// Training diverged and the run stopped ([`Termination::Diverged`](crate::prune::Termination)):
    /// a failed run, not a result.
    #[error(
        "{what}: training diverged ({reason}); its result is not reported. Lower the learning rate, train the dense network longer, or loosen the budget"
    )]
    TrainingDiverged {
        /// What was trained.
        what: String,
        /// The driver's account of the divergence.
        reason: String,
    },

    /// Some runs of a series (a sweep) failed: diverged, missed their budget, or
    /// ended at chance accuracy; they are marked failed in the outputs.
    #[error(
        "{what} failed ({reasons}); they are marked failed in the outputs, not reported as results"
    )]
    RunsFailed {
        /// Which runs.
        what: String,
        /// Why each failed.
        reasons: String,
    },

    /// The input buffer of the modelled accelerator cannot hold the rows one output row needs.
    #[error(
        "input buffer of {buffer} elements is too small for layer `{layer}`: it needs at least {needed} elements (R rows of the padded input); raise `input_buffer`"
    )]
    BufferTooSmall {
        /// Layer name.
        layer: String,
        /// Configured input-buffer capacity, in elements.
        buffer: u64,
        /// Smallest capacity that works for this layer.
        needed: u64,
    },

    /// An index (layer, width, channel) is out of range.
    #[error("{what} index {index} out of range (there are {len})")]
    IndexOutOfRange {
        /// What was indexed.
        what: &'static str,
        /// The index given.
        index: usize,
        /// The number of valid entries.
        len: usize,
    },

    /// A data file is malformed, truncated or inconsistent.
    #[error("corrupt data file {path}: {reason}")]
    CorruptData {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An I/O error, with the path involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An error raised inside a user's implementation of a crate trait
    /// (for example a [`Network`](crate::network::Network) backed by another framework).
    #[error("error in user implementation: {0}")]
    External(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Where a non-finite value came from, which decides what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// Values passed in by the caller (weights, masks, inputs, widths).
    Input,
    /// A training step (loss, gradients, optimizer update): training diverged.
    Training,
    /// A file that was read (a model, a plan, a data set).
    File,
    /// A cost model's own coefficients or output.
    Model,
}

impl Origin {
    /// What to do about a non-finite value of this origin.
    pub fn advice(self) -> &'static str {
        match self {
            Origin::Input => {
                "the values passed in hold NaN or infinity; check them (and what computed them) before the call"
            }
            Origin::Training => {
                "training diverged; lower the learning rate, raise the batch size or restore the last good state"
            }
            Origin::File => {
                "the file holds NaN or infinity; re-export it from its source or check the producer"
            }
            Origin::Model => {
                "the cost model produced it; check its coefficients or configuration (refit a calibrated model)"
            }
        }
    }
}

impl Error {
    /// [`Error::NonFinite`] for element `index` of `what`, of the given origin.
    #[cold]
    pub fn non_finite(what: impl Into<String>, index: usize, origin: Origin) -> Self {
        Error::NonFinite {
            what: what.into(),
            index,
            origin,
        }
    }

    /// [`Error::Serialization`] of `what` with the serialiser's message.
    #[cold]
    pub fn serialization(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Serialization {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// [`Error::Protocol`] in `round`.
    #[cold]
    pub fn protocol(round: &'static str, reason: impl Into<String>) -> Self {
        Error::Protocol {
            round,
            reason: reason.into(),
        }
    }

    /// Wrap an arbitrary error raised by user code.
    pub fn external<E>(err: E) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        Error::External(err.into())
    }

    /// [`Error::ShapeMismatch`]: `what` should hold `expected` values and holds `got`.
    #[cold]
    pub fn shape(what: impl Into<String>, expected: usize, got: usize) -> Self {
        Error::ShapeMismatch {
            what: what.into(),
            expected,
            got,
        }
    }

    /// [`Error::InvalidParameter`]: parameter `name` has `value`, which is wrong for `reason`.
    #[cold]
    pub fn param(
        name: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// [`Error::Unsupported`]: `feature` is not supported; `hint` says what to do instead.
    #[cold]
    pub fn unsupported(feature: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Unsupported {
            feature: feature.into(),
            hint: hint.into(),
        }
    }

    /// [`Error::InvalidArchitecture`] with a message saying what does not chain.
    #[cold]
    pub fn arch(msg: impl Into<String>) -> Self {
        Error::InvalidArchitecture(msg.into())
    }

    /// [`Error::Io`]: reading or writing `path` failed.
    #[cold]
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Ok(())` if `ok`, else [`Error::InvalidParameter`] for `name = value` with `reason`:
/// the one-line form of a range check in `validate` methods.
pub fn ensure(
    ok: bool,
    name: &'static str,
    value: impl std::fmt::Display,
    reason: &str,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::param(name, value, reason))
    }
}

/// Return an error if `values` (passed in by the caller) holds a NaN or infinity.
pub fn check_finite<F: num_traits::Float>(what: &str, values: &[F]) -> Result<()> {
    check_finite_from(Origin::Input, what, values)
}

/// [`check_finite`] for values of the given origin (a file, a training step, a
/// model), so that the error's advice fits.
pub fn check_finite_from<F: num_traits::Float>(
    origin: Origin,
    what: &str,
    values: &[F],
) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::non_finite(what, index, origin)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<T: Send + Sync + 'static + std::error::Error>() {}
        assert_bounds::<Error>();
    }

    #[test]
    fn messages_name_the_problem() {
        let e = Error::InfeasibleBudget {
            budget: 1.0,
            min_achievable: 2.0,
        };
        let msg = e.to_string();
        assert!(msg.contains("raise the budget"), "{msg}");
        assert!(check_finite("w", &[1.0, f32::NAN]).is_err());
        assert!(check_finite("w", &[1.0, 2.0]).is_ok());
        // The advice follows the origin.
        let e = check_finite_from(Origin::Training, "gradients", &[f32::INFINITY]).unwrap_err();
        assert!(e.to_string().contains("lower the learning rate"), "{e}");
        let e = check_finite_from(Origin::File, "weights", &[f64::NAN]).unwrap_err();
        assert!(e.to_string().contains("re-export"), "{e}");
        let e = check_finite("weights", &[0.0, f64::NAN]).unwrap_err();
        assert!(
            e.to_string().contains("index 1") && e.to_string().contains("passed in"),
            "{e}"
        );
        let e = Error::protocol("keys", "one histogram per layer asked, 3 sent");
        assert!(e.to_string().contains("sharded protocol, keys"), "{e}");
        let e = Error::serialization("the calibrated model", "key must be a string");
        assert!(
            e.to_string()
                .contains("cannot serialise the calibrated model"),
            "{e}"
        );
    }
}
