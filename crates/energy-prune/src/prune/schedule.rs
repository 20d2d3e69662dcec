//! Budget schedules for projected training.

use crate::error::{Error, Result};

/// Exponential decay of the budget from the starting energy to the target:
/// ```text
/// B(t) = E0 * (B_target / E0)^min(1, t / T)
/// ```
/// so the target is reached at step `T` and held afterwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSchedule {
    start: f64,
    target: f64,
    reach_step: usize,
}

impl BudgetSchedule {
    /// A schedule from `start` (usually the current energy) to `target`, reached at step `reach_step`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if a budget is not finite and positive.
    pub fn new(start: f64, target: f64, reach_step: usize) -> Result<Self> {
        for (name, v) in [("start", start), ("target", target)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::param(name, v, "budgets must be finite and > 0"));
            }
        }
        Ok(Self {
            start: start.max(target),
            target,
            reach_step,
        })
    }

    /// The budget at step `step`.
    pub fn at(&self, step: usize) -> f64 {
        if step >= self.reach_step || self.reach_step == 0 {
            return self.target;
        }
        let t = step as f64 / self.reach_step as f64;
        self.start * (self.target / self.start).powf(t)
    }

    /// The final budget.
    pub fn target(&self) -> f64 {
        self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decays_exponentially_and_holds_the_target() {
        let s = BudgetSchedule::new(100.0, 25.0, 10).unwrap();
        assert_eq!(s.at(0), 100.0);
        assert!((s.at(5) - 50.0).abs() < 1e-9);
        assert_eq!(s.at(10), 25.0);
        assert_eq!(s.at(1000), 25.0);
        assert!(BudgetSchedule::new(f64::NAN, 1.0, 1).is_err());
        // A start below the target is lifted to the target.
        assert_eq!(BudgetSchedule::new(10.0, 20.0, 5).unwrap().at(0), 20.0);
    }
}
