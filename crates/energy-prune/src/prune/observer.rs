//! Progress events of the constrained-training driver, and observers.
//!
//! An [`Observer`] receives one [`EpochEvent`] per epoch and every
//! [`SolverEvent`] (one type per solver: a projection ran, an ADMM iteration ran).
//! Each hook may fail (the run ends with that error) or return
//! [`Control::Stop`] (the run ends after the current step, with a report whose
//! termination says so).

use super::constraint::{ConstraintStatus, Phase, SolverEvent};
use crate::error::Result;
use crate::train::Control;

/// Figures at the end of one epoch of the driver.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochEvent {
    /// The solver's name (`"projection"`, `"admm"`, `"magnitude"`, `"uniform"`).
    pub solver: &'static str,
    /// The phase the epoch belongs to.
    pub phase: Phase,
    /// Epoch number within the run, from 1.
    pub epoch: usize,
    /// Total epochs planned for the run (may shrink when a phase ends early).
    pub epochs: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Test accuracy, if a test set was given.
    pub test_accuracy: Option<f64>,
    /// Where the network stands against the budget at the end of the epoch.
    pub status: ConstraintStatus,
    /// Training samples per second during the epoch.
    pub images_per_second: f64,
}

/// Receives progress events; every hook has a no-op default.
pub trait Observer {
    /// Called after every epoch.
    ///
    /// # Errors
    /// An error ends the run with it.
    fn on_epoch(&mut self, event: &EpochEvent) -> Result<Control> {
        let _ = event;
        Ok(Control::Continue)
    }

    /// Called after every solver step that acted (a projection, an ADMM iteration).
    ///
    /// # Errors
    /// An error ends the run with it.
    fn on_solver(&mut self, event: &SolverEvent) -> Result<Control> {
        let _ = event;
        Ok(Control::Continue)
    }
}

impl<O: Observer + ?Sized> Observer for &mut O {
    fn on_epoch(&mut self, event: &EpochEvent) -> Result<Control> {
        (**self).on_epoch(event)
    }
    fn on_solver(&mut self, event: &SolverEvent) -> Result<Control> {
        (**self).on_solver(event)
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Wraps a closure as an epoch observer that never stops the run.
#[derive(Debug, Clone, Copy)]
pub struct OnEpoch<F>(pub F);

impl<F: FnMut(&EpochEvent)> Observer for OnEpoch<F> {
    fn on_epoch(&mut self, event: &EpochEvent) -> Result<Control> {
        (self.0)(event);
        Ok(Control::Continue)
    }
}
