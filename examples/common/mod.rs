//! Shared plumbing of the examples: argument errors, dense training, progress lines.
#![allow(dead_code)] // not every example uses every helper

use energy_prune::network::Trainable;
use energy_prune::prune::{EpochEvent, Observer};
use energy_prune::train::{
    Control, CrossEntropy, DataSource, Optimizer, cosine_lr, evaluate, train_epoch,
};
use rand::rngs::StdRng;

/// Parse the arguments and run, turning errors into a message and an exit code
/// (2 for bad arguments, 1 for a failed run).
pub fn run_main<A>(
    parse: fn() -> Result<A, lexopt::Error>,
    run: fn(&A) -> energy_prune::Result<()>,
) {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// How the dense network is trained.
pub struct DenseTraining {
    /// Epochs.
    pub epochs: usize,
    /// Base learning rate of the cosine schedule.
    pub lr: f32,
    /// The cosine runs over this many epochs (>= `epochs`).
    pub schedule_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
}

/// Per-epoch figures of the dense run.
pub struct DenseEpoch {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f32,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f64,
    /// Samples per second.
    pub images_per_second: f64,
    /// Seconds of training.
    pub seconds: f64,
    /// Samples trained on.
    pub images: usize,
}

/// Train a dense network with cross-entropy and a cosine learning rate, calling
/// `each` after every epoch.
pub fn train_dense<N, O>(
    net: &mut N,
    opt: &mut O,
    train: &dyn DataSource,
    test: &dyn DataSource,
    cfg: &DenseTraining,
    rng: &mut StdRng,
    each: &mut dyn FnMut(&DenseEpoch),
) -> energy_prune::Result<()>
where
    N: Trainable,
    O: Optimizer,
{
    for e in 0..cfg.epochs {
        let lr = cosine_lr(cfg.lr, e, cfg.schedule_epochs);
        opt.set_learning_rate(lr);
        let st = train_epoch(
            net,
            opt,
            train,
            &mut CrossEntropy,
            cfg.batch_size,
            rng,
            &mut |_, _, _| Ok(Control::Continue),
        )?;
        each(&DenseEpoch {
            epoch: e + 1,
            lr,
            loss: st.loss,
            train_accuracy: st.train_accuracy,
            test_accuracy: evaluate(net, test, 1000)?,
            images_per_second: st.throughput(),
            seconds: st.seconds,
            images: st.images,
        });
    }
    Ok(())
}

/// The dense progress line of the examples.
pub fn print_dense(label: &str, epochs: usize, e: &DenseEpoch) {
    println!(
        "{label:<24} {:>3}/{:<3} loss {:.4}  train {:6.2} %  test {:6.2} %  {:>6.0} img/s",
        e.epoch,
        epochs,
        e.loss,
        100.0 * e.train_accuracy,
        100.0 * e.test_accuracy,
        e.images_per_second
    );
}

/// Prints one progress line per epoch: cost against budget, as a fraction of a
/// reference (the dense cost) or in the model's unit.
pub struct Progress {
    /// Divide costs by this (1.0 to print model units).
    pub reference: f64,
    /// What the printed cost is ("of dense", "ms", ...).
    pub unit: &'static str,
}

impl Observer for Progress {
    fn on_epoch(&mut self, e: &EpochEvent) -> energy_prune::Result<Control> {
        let s = &e.status;
        let r = self.reference;
        println!(
            "{:<24} {:>3}/{:<3} loss {:.4}  train {:6.2} %  test {:6.2} %  cost {:.4} (relaxed {:.4}) vs budget {:.4} {}  kept {:>6}  {:>6.0} img/s",
            format!("{}/{}", e.solver, e.phase),
            e.epoch,
            e.epochs,
            e.loss,
            100.0 * e.train_accuracy,
            100.0 * e.test_accuracy.unwrap_or(f64::NAN),
            s.cost / r,
            s.relaxed_cost / r,
            s.budget / r,
            self.unit,
            s.kept.total(),
            e.images_per_second
        );
        Ok(Control::Continue)
    }
}
