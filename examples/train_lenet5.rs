//! Train the paper's LeNet-5 on the full MNIST training set and report test accuracy.
//!
//! ```text
//! cargo run --release --example train_lenet5 -- [--epochs N] [--batch-size N] [--lr X]
//!     [--seed N] [--data DIR] [--save FILE] [--threads N] [--json]
//! ```
//! With `--json` the last line of stdout is one JSON object with the results.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{DenseTraining, check, train_dense};
use energy_prune::nn::Cnn;
use energy_prune::nn::mnist::{Mnist, MnistOptions};
use energy_prune::train::Sgd;
use rand::{SeedableRng, rngs::StdRng};

struct Args {
    epochs: u32,
    batch_size: usize,
    lr: f32,
    seed: u64,
    data: PathBuf,
    save: Option<PathBuf>,
    threads: Option<usize>,
    json: bool,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        epochs: 12,
        batch_size: 64,
        lr: 0.02,
        seed: 1,
        data: PathBuf::from("data/mnist"),
        save: None,
        threads: None,
        json: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("epochs") => a.epochs = p.value()?.parse()?,
            Long("batch-size") => a.batch_size = p.value()?.parse()?,
            Long("lr") => a.lr = p.value()?.parse()?,
            Long("seed") => a.seed = p.value()?.parse()?,
            Long("data") => a.data = p.value()?.into(),
            Long("save") => a.save = Some(p.value()?.into()),
            Long("threads") => a.threads = Some(p.value()?.parse()?),
            Long("json") => a.json = true,
            Long("help") | Short('h') => {
                println!(
                    "train_lenet5 [--epochs N] [--batch-size N] [--lr X] [--seed N] [--data DIR] [--save FILE] [--threads N] [--json]"
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    check::at_least_one("--batch-size", a.batch_size)?;
    check::positive("--lr", f64::from(a.lr))?;
    check::mnist_dir("--data", &a.data)?;
    if let Some(p) = &a.save {
        check::writable("--save", p)?;
    }
    Ok(a)
}

fn main() {
    common::run_main(parse_args, run);
}

fn run(args: &Args) -> energy_prune::Result<()> {
    let total = Instant::now();
    let data = Mnist::load(&args.data, MnistOptions::default())?;
    println!(
        "MNIST: {} training / {} test images, {}x{} (loaded in {:.1} s)",
        data.train.len(),
        data.test.len(),
        data.train.h,
        data.train.w,
        total.elapsed().as_secs_f64()
    );
    let mut net = Cnn::lenet5(args.seed)?;
    if let Some(t) = args.threads {
        net.set_threads(t);
    }
    let mut opt = Sgd::new(args.lr, 0.9, 5e-4)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
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
    if args.json {
        let out = serde_json::json!({
            "test_accuracy": test_acc,
            "epochs": args.epochs,
            "train_seconds": train_secs,
            "images_per_second": ips,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "threads": net.threads(),
        });
        println!("{out}");
    }
    Ok(())
}
