//! Progress events of the training drivers.

/// Figures at the end of one epoch of a training driver.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochEvent {
    /// Which run and phase (`"projected"`, `"finetune"`, `"magnitude"` ...).
    pub phase: &'static str,
    /// Epoch number within the run, from 1.
    pub epoch: usize,
    /// Total epochs of the run.
    pub epochs: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Test accuracy, if a test set was given.
    pub test_accuracy: Option<f64>,
    /// Exact energy of the current weights (model units).
    pub energy: f64,
    /// Relaxed energy of the current weights.
    pub relaxed_energy: f64,
    /// The budget in force at the end of the epoch.
    pub budget: f64,
    /// Nonzero weights.
    pub nonzero: u64,
    /// Training images per second during the epoch.
    pub images_per_second: f64,
}

/// Receives progress events; every hook has a no-op default.
pub trait Observer {
    /// Called after every epoch.
    fn on_epoch(&mut self, event: &EpochEvent) {
        let _ = event;
    }
    /// Called after every projection with the budget used and the relaxed energy reached.
    fn on_projection(&mut self, step: usize, budget: f64, relaxed_energy: f64) {
        let _ = (step, budget, relaxed_energy);
    }
    /// Called after every ADMM epoch with the live channels per width, the
    /// continuous widths `s`, the width duals `y` and the cost dual `z`.
    fn on_admm(&mut self, epoch: usize, live: &[usize], s: &[f64], y: &[f64], z: f64) {
        let _ = (epoch, live, s, y, z);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Wraps a closure as an epoch observer.
#[derive(Debug, Clone, Copy)]
pub struct OnEpoch<F>(pub F);

impl<F: FnMut(&EpochEvent)> Observer for OnEpoch<F> {
    fn on_epoch(&mut self, event: &EpochEvent) {
        (self.0)(event);
    }
}
