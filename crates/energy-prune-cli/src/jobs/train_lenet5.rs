//! Train the paper's LeNet-5 on the full MNIST training set and report test accuracy.
//!
//! ```text
//! energy-prune lab train-lenet5 [--epochs N] [--batch-size N] [--lr X]
//!     [--seed N] [--data DIR] [--save FILE] [--threads N] [--json]
//! ```
//! With `--json` the last line of stdout is one JSON object with the results.

use std::path::PathBuf;
use std::time::Instant;

use crate::common::check;
use energy_prune::train::Sgd;
use energy_prune_nn::Cnn;
use energy_prune_nn::mnist::{Mnist, MnistOptions};
use energy_prune_nn::workflow::{DenseTraining, train_dense};
use rand::{SeedableRng, rngs::ChaCha12Rng};

use crate::args::Usage;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Epochs of constrained training.
    #[arg(long, default_value_t = 12)]
    pub epochs: u32,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.02)]
    pub lr: f32,
    #[command(flatten)]
    pub rng: crate::args::Seed,
    #[command(flatten)]
    pub mnist: crate::args::MnistDir,
    /// Save the trained network to this file.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub print: crate::args::Json,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        let a = self;
        check::at_least_one("--batch-size", a.batch_size)?;
        check::at_least_one("--epochs", a.epochs as usize)?;
        check::positive("--lr", f64::from(a.lr))?;
        check::mnist_dir("--data", &a.mnist.data)?;
        if let Some(p) = &a.save {
            check::writable("--save", p)?;
            let inputs = check::mnist_files(&a.mnist.data);
            let inputs: Vec<&std::path::Path> = inputs.iter().map(|p| p.as_path()).collect();
            check::outputs_apart(&[("--save", p)], &inputs)?;
        }
        Ok(())
    }
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    let total = Instant::now();
    let data = Mnist::load(&args.mnist.data, MnistOptions::default())?;
    println!(
        "MNIST: {} training / {} test images, {}x{} (loaded in {:.1} s)",
        data.train.len(),
        data.test.len(),
        data.train.h,
        data.train.w,
        total.elapsed().as_secs_f64()
    );
    let mut net = Cnn::lenet5(args.rng.seed)?;
    if let Some(t) = args.threads {
        net.set_threads(t);
    }
    let mut opt = Sgd::new(args.lr, 0.9, 5e-4)?;
    let mut rng = ChaCha12Rng::seed_from_u64(args.rng.seed);
    let cfg = DenseTraining {
        epochs: args.epochs as usize,
        lr: args.lr,
        schedule_epochs: args.epochs as usize,
        batch_size: args.batch_size,
    };
    println!("epoch   lr       loss     train acc  test acc   images/s");
    let (mut train_secs, mut images, mut test_acc) = (0.0f64, 0usize, 0.0);
    train_dense(
        &mut net,
        &mut opt,
        &data.train,
        &data.test,
        &cfg,
        &mut rng,
        &mut |e| {
            train_secs += e.seconds;
            images += e.images;
            test_acc = e.test_accuracy;
            println!(
                "{:>5}   {:<7.4}  {:<7.4}  {:>8.2} %  {:>7.2} %  {:>8.0}",
                e.epoch,
                e.lr,
                e.loss,
                100.0 * e.train_accuracy,
                100.0 * e.test_accuracy,
                e.images_per_second
            );
        },
    )?;
    if let Some(path) = &args.save {
        net.save(path)?;
        println!("saved weights to {}", path.display());
    }
    let ips = images as f64 / train_secs.max(1e-9);
    println!();
    println!("| metric | value |");
    println!("|---|---|");
    println!("| test accuracy | {:.2} % |", 100.0 * test_acc);
    println!("| epochs | {} |", args.epochs);
    println!("| training time | {train_secs:.1} s |");
    println!(
        "| throughput | {ips:.0} images/s ({} threads) |",
        net.threads()
    );
    println!("| whole run | {:.1} s |", total.elapsed().as_secs_f64());
    if args.print.json {
        let out = serde_json::json!({
            "test_accuracy": test_acc,
            "epochs": args.epochs,
            "train_seconds": train_secs,
            "images_per_second": ips,
            "batch_size": args.batch_size,
            "seed": args.rng.seed,
            "threads": net.threads(),
        });
        println!("{out}");
    }
    Ok(())
}
