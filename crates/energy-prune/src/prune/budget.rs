//! Budgets: what every solver of this module constrains.
//!
//! A [`Budget`] is a name, the model that prices the network (a weight-level
//! [`WeightEnergyModel`] for the projection, a width-level [`WidthCostModel`] for
//! ADMM and the baselines), and a [`Limit`], absolute in the model's unit or a
//! fraction of the dense network's cost under that model. Every solver takes a
//! non-empty list of budgets; one budget is a list of one, and gives exactly the
//! result of the single-budget algorithm.
//!
//! ```
//! use energy_prune::arch::zoo;
//! use energy_prune::energy::{Count, CountingModel, SystolicArray, SystolicConfig};
//! use energy_prune::prune::{Budget, Limit};
//! # fn main() -> energy_prune::Result<()> {
//! let arch = zoo::lenet5()?;
//! let energy = Budget::fraction("energy", SystolicArray::new(&arch, SystolicConfig::default())?, 0.3);
//! let params = Budget::absolute("parameters", CountingModel::new(&arch, Count::Parameters)?, 5_000.0);
//! assert_eq!(params.limit, Limit::Absolute(5_000.0));
//! // 0.3 times the dense network's exact energy on the array:
//! assert!(energy.weight_limit()? > 0.0);
//! # let _ = params;
//! # Ok(()) }
//! ```

use crate::arch::Architecture;
use crate::energy::{WeightEnergyModel, WidthCostModel};
use crate::error::{Error, Result};

/// How a budget's limit is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// In the model's unit (energy, seconds, parameters, bytes); finite and > 0.
    Absolute(f64),
    /// A fraction in (0, 1] of the dense network's cost under the model.
    FractionOfDense(f64),
}

/// One budget: a name for reports and errors, the model pricing the network, and
/// its limit.
#[derive(Debug, Clone)]
pub struct Budget<M> {
    /// A name for reports (`"energy"`, `"latency"`, `"parameters"`, ...); the names
    /// of one solver's budgets are distinct.
    pub name: String,
    /// The model pricing the network under this budget.
    pub model: M,
    /// The limit the model's cost must meet.
    pub limit: Limit,
}

impl<M> Budget<M> {
    /// A budget of `value` in the model's unit.
    pub fn absolute(name: impl Into<String>, model: M, value: f64) -> Self {
        Self {
            name: name.into(),
            model,
            limit: Limit::Absolute(value),
        }
    }

    /// A budget of `fraction` (in (0, 1]) of the dense network's cost.
    pub fn fraction(name: impl Into<String>, model: M, fraction: f64) -> Self {
        Self {
            name: name.into(),
            model,
            limit: Limit::FractionOfDense(fraction),
        }
    }

    /// The limit in the model's unit, given the dense cost (called only for a
    /// fraction).
    fn resolve(&self, dense: impl FnOnce() -> Result<f64>) -> Result<f64> {
        let value = match self.limit {
            Limit::Absolute(v) => v,
            Limit::FractionOfDense(f) => {
                if !(f > 0.0 && f <= 1.0) {
                    return Err(Error::param(
                        "fraction",
                        f,
                        format!(
                            "budget `{}`: must be in (0, 1] of the dense cost",
                            self.name
                        ),
                    ));
                }
                f * dense()?
            }
        };
        crate::prune::constraint::check_budget(value)?;
        Ok(value)
    }
}

impl<M: WeightEnergyModel> Budget<M> {
    /// The limit in the model's unit; a fraction is taken of the model's exact cost
    /// of the dense network.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a limit that is not finite and positive or a
    /// fraction outside (0, 1]; model errors.
    pub fn weight_limit(&self) -> Result<f64> {
        self.resolve(|| Ok(self.model.dense_energy()?.total))
    }
}

impl<M: WidthCostModel> Budget<M> {
    /// The limit in the model's unit; a fraction is taken of the model's cost of the
    /// full widths of `arch`.
    ///
    /// # Errors
    /// As [`Budget::weight_limit`]; [`Error::ShapeMismatch`] if the model has
    /// another number of widths than `arch`.
    pub fn width_limit(&self, arch: &Architecture) -> Result<f64> {
        self.resolve(|| {
            let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
            if self.model.num_widths() != full.len() {
                return Err(Error::shape(
                    format!("widths of the cost model of budget `{}`", self.name),
                    full.len(),
                    self.model.num_widths(),
                ));
            }
            self.model.cost_of_widths(&full)
        })
    }
}

/// Check a solver's budget list: not empty, distinct names.
pub(crate) fn check_budgets<M>(budgets: &[Budget<M>]) -> Result<()> {
    if budgets.is_empty() {
        return Err(Error::param(
            "budgets",
            "[]",
            "give at least one budget (a single budget is a list of one)",
        ));
    }
    for (i, b) in budgets.iter().enumerate() {
        if budgets[..i].iter().any(|o| o.name == b.name) {
            return Err(Error::param(
                "budget name",
                &b.name,
                "names must be distinct",
            ));
        }
    }
    Ok(())
}
