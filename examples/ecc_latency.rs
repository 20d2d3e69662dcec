//! ECC end to end: prune the channels of a VGG-style MNIST network so that its
//! predicted CPU latency meets a budget, remove the pruned channels physically, and
//! measure the compact network; the same for uniform width scaling.
//!
//! ```text
//! cargo run --release --example ecc_latency -- [--budget 0.5]
//!     [--model latency|systolic] [--cost-model FILE] [--samples N] [--train-size N]
//!     [--dense-epochs N] [--epochs N] [--finetune-epochs N] [--seed N] [--data DIR]
//!     [--dense FILE] [--save-dense FILE] [--json]
//! ```
//! `--budget` is a fraction of the dense network's predicted cost. The latency model
//! is calibrated on this machine first (about 30 s) unless `--cost-model` names a
//! JSON file written by the `calibrate` example.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{DenseTraining, Progress, check, print_dense, train_dense};
use energy_prune::energy::{
    Bilinear, CostOracle, FitOptions, Fitted, ProfileSet, SystolicArray, SystolicConfig,
    WidthCostModel, WidthSampler,
};
use energy_prune::network::{Network, PruningPlan};
use energy_prune::nn::mnist::{Mnist, MnistOptions};
use energy_prune::nn::{Cnn, LatencyOracle, LatencyStats, measure_latency};
use energy_prune::prune::{
    AdmmConfig, AdmmTraining, Data, train_admm, train_uniform, uniform_widths,
};
use energy_prune::train::{Adam, evaluate};
use rand::{SeedableRng, rngs::StdRng};

struct Args {
    budget: f64,
    model: String,
    cost_model: Option<PathBuf>,
    samples: usize,
    train_size: usize,
    dense_epochs: usize,
    epochs: usize,
    finetune_epochs: usize,
    seed: u64,
    data: PathBuf,
    json: bool,
    dense: Option<PathBuf>,
    save_dense: Option<PathBuf>,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        budget: 0.5,
        model: "latency".into(),
        cost_model: None,
        samples: 150,
        train_size: 12_000,
        dense_epochs: 3,
        epochs: 4,
        finetune_epochs: 2,
        seed: 1,
        data: PathBuf::from("data/mnist"),
        json: false,
        dense: None,
        save_dense: None,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("budget") => a.budget = p.value()?.parse()?,
            Long("model") => a.model = p.value()?.parse()?,
            Long("cost-model") => a.cost_model = Some(p.value()?.into()),
            Long("samples") => a.samples = p.value()?.parse()?,
            Long("train-size") => a.train_size = p.value()?.parse()?,
            Long("dense-epochs") => a.dense_epochs = p.value()?.parse()?,
            Long("epochs") => a.epochs = p.value()?.parse()?,
            Long("finetune-epochs") => a.finetune_epochs = p.value()?.parse()?,
            Long("seed") => a.seed = p.value()?.parse()?,
            Long("data") => a.data = p.value()?.into(),
            Long("json") => a.json = true,
            Long("dense") => a.dense = Some(p.value()?.into()),
            Long("save-dense") => a.save_dense = Some(p.value()?.into()),
            Long("help") | Short('h') => {
                println!(
                    "ecc_latency [--budget F] [--model latency|systolic] [--cost-model FILE] [--samples N] [--train-size N] [--dense-epochs N] [--epochs N] [--finetune-epochs N] [--seed N] [--data DIR] [--json]"
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    check::fraction("--budget", a.budget)?;
    if !["latency", "systolic"].contains(&a.model.as_str()) {
        return Err(format!("--model {}: expected latency or systolic", a.model).into());
    }
    check::at_least_one("--train-size", a.train_size)?;
    check::mnist_dir("--data", &a.data)?;
    for (flag, p) in [("--cost-model", &a.cost_model), ("--dense", &a.dense)] {
        if let Some(p) = p {
            check::readable(flag, p)?;
        }
    }
    if let Some(p) = &a.save_dense {
        check::writable("--save-dense", p)?;
    }
    Ok(a)
}

fn main() {
    common::run_main(parse_args, run);
}

/// What the final table reports for one network.
struct Row {
    accuracy: f64,
    predicted: f64,
    latency: LatencyStats,
    widths: Vec<usize>,
}

fn run(args: &Args) -> energy_prune::Result<()> {
    let start = Instant::now();
    // A given cost model is read and checked against the network before any training.
    let loaded = match &args.cost_model {
        Some(path) => {
            let m = Bilinear::load_json(path)?;
            let widths = Cnn::vgg_mnist(args.seed)?.architecture().widths().len();
            if m.num_widths() != widths {
                return Err(energy_prune::Error::ShapeMismatch {
                    what: format!("widths of the cost model {}", path.display()),
                    expected: widths,
                    got: m.num_widths(),
                });
            }
            Some(m)
        }
        None => None,
    };
    let mnist = Mnist::load(
        &args.data,
        MnistOptions {
            pad: 0,
            ..MnistOptions::default()
        },
    )?;
    let train = mnist.train.take(args.train_size);
    let test = &mnist.test;
    println!(
        "vgg-mnist on {} training / {} test images",
        train.len(),
        test.len()
    );

    // 1. Dense network.
    let mut dense = Cnn::vgg_mnist(args.seed)?;
    let arch = dense.architecture().clone();
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    let mut rng = StdRng::seed_from_u64(args.seed);
    if let Some(path) = &args.dense {
        dense.load(path)?;
        println!("loaded dense vgg-mnist from {}", path.display());
    } else {
        // Adam: this deeper network without normalisation diverges under plain SGD
        // at LeNet-5's learning rate.
        let mut dense_opt = Adam::new(1e-3)?;
        let cfg = DenseTraining {
            epochs: args.dense_epochs,
            lr: 1e-3,
            schedule_epochs: args.dense_epochs + 1,
            batch_size: 64,
        };
        let epochs = args.dense_epochs;
        train_dense(
            &mut dense,
            &mut dense_opt,
            &train,
            test,
            &cfg,
            &mut rng,
            &mut |e| print_dense("dense", epochs, e),
        )?;
    }
    if let Some(path) = &args.save_dense {
        dense.save(path)?;
        println!("saved dense vgg-mnist to {}", path.display());
    }

    // 2. Cost model.
    let model: Box<dyn WidthCostModel> = match (args.model.as_str(), loaded) {
        ("latency", Some(m)) => {
            let path = args.cost_model.as_ref().expect("loaded from a path");
            println!("cost model: {} (loaded)", path.display());
            Box::new(m)
        }
        ("latency", None) => {
            let mut oracle = LatencyOracle::new((1, 28, 28), &Cnn::vgg_mnist_specs())?;
            let mut sampler = WidthSampler::new(&arch, args.seed);
            for (u, w) in arch.widths().iter().enumerate() {
                if !w.fixed {
                    sampler = sampler.with_bounds(u, w.channels.div_ceil(4), w.channels)?;
                }
            }
            let mut data = ProfileSet::new(full.len());
            for _ in 0..args.samples {
                let s = sampler.sample();
                let c = oracle.measure(&s)?;
                data.push(s, c)?;
            }
            let opts = FitOptions {
                linear_terms: true,
                relative: true,
                seed: args.seed,
                ..FitOptions::default()
            };
            let Fitted {
                model: m,
                report: rep,
            } = Bilinear::fit(&arch, &data, &opts)?;
            println!(
                "cost model: bilinear latency model calibrated on {} configurations, validation MRAE {:.2} %, {:.0} % within +-10 %",
                args.samples,
                100.0 * rep.validation.mrae,
                100.0 * rep.validation.within_10pct
            );
            Box::new(m)
        }
        ("systolic", _) => {
            println!("cost model: systolic-array energy, width form");
            Box::new(SystolicArray::new(&arch, SystolicConfig::default())?)
        }
        (other, _) => {
            return Err(energy_prune::Error::InvalidParameter {
                name: "model",
                value: other.into(),
                reason: "choose latency or systolic".into(),
            });
        }
    };
    let unit = if args.model == "latency" {
        "ms"
    } else {
        "energy units"
    };
    let dense_pred = model.cost_of_widths(&full)?;
    let budget = args.budget * dense_pred;
    let dense_row = Row {
        accuracy: evaluate(&mut dense, test, 1000)?,
        predicted: dense_pred,
        latency: measure_latency(&mut dense.clone(), 64, 2, 9)?,
        widths: full.clone(),
    };
    println!(
        "dense: predicted {:.4} {unit}, measured {:.3} ms per batch of 64; budget {:.2} of dense = {:.4} {unit}\n",
        dense_pred, dense_row.latency.median_ms, args.budget, budget
    );

    // 3. ECC: ADMM channel pruning, fine-tuning, compaction.
    let cfg = AdmmTraining {
        epochs: args.epochs,
        finetune_epochs: args.finetune_epochs,
        seed: args.seed,
        admm: AdmmConfig {
            eta_s: 2.0,
            ..AdmmConfig::default()
        },
        ..AdmmTraining::default()
    };
    let mut print = Progress {
        reference: 1.0,
        unit,
    };
    let mut ecc = dense.clone();
    let data = Data {
        train: &train,
        validation: None,
        test: Some(test),
    };
    let report = train_admm(&mut ecc, model.as_ref(), budget, data, &cfg, &mut print)?;
    let ecc_plan = PruningPlan::from_network(&ecc)?;
    let ecc_widths = ecc_plan.widths();
    let mut ecc_compact = ecc.compact(&ecc_plan)?;
    let ecc_row = Row {
        accuracy: evaluate(&mut ecc_compact, test, 1000)?,
        predicted: model.cost_of_widths(&ecc_widths)?,
        latency: measure_latency(&mut ecc_compact, 64, 2, 9)?,
        widths: ecc_widths.clone(),
    };
    println!("ECC: {}, widths {:?}\n", report.termination, ecc_widths);

    // 4. Uniform width scaling to the same predicted cost, trained through the same
    // driver for the same epochs with the same loss and data order, then compacted.
    let mut uniform = dense.clone();
    let epochs_run = report.history.len();
    let uniform_report = train_uniform(
        &mut uniform,
        model.as_ref(),
        budget,
        data,
        epochs_run,
        &cfg,
        &mut print,
    )?;
    println!("uniform: {}\n", uniform_report.termination);
    let widths = uniform_widths(&arch, model.as_ref(), budget)?;
    let mut uniform = uniform.compact(&PruningPlan::leading(&arch, &widths)?)?;
    let uniform_row = Row {
        accuracy: evaluate(&mut uniform, test, 1000)?,
        predicted: model.cost_of_widths(&widths)?,
        latency: measure_latency(&mut uniform, 64, 2, 9)?,
        widths,
    };

    println!(
        "\nResults at budget {} of the dense predicted cost ({} model):\n",
        args.budget, args.model
    );
    println!(
        "| network | test accuracy | predicted ({unit}) | measured latency, batch 64 (median [min, max]) | ratio to dense | widths |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, r) in [
        ("dense", &dense_row),
        ("ECC", &ecc_row),
        ("uniform", &uniform_row),
    ] {
        println!(
            "| {name} | {:.2} % | {:.4} | {:.3} ms [{:.3}, {:.3}] | {:.3} | {:?} |",
            100.0 * r.accuracy,
            r.predicted,
            r.latency.median_ms,
            r.latency.min_ms,
            r.latency.max_ms,
            r.latency.median_ms / dense_row.latency.median_ms,
            r.widths
        );
    }
    println!("\nwhole run: {:.1} s", start.elapsed().as_secs_f64());
    if args.json {
        let r = |r: &Row| serde_json::json!({"test_accuracy": r.accuracy, "predicted": r.predicted, "latency_ms": r.latency.median_ms, "widths": r.widths});
        println!(
            "{}",
            serde_json::json!({"budget": args.budget, "model": args.model, "dense": r(&dense_row), "ecc": r(&ecc_row), "uniform": r(&uniform_row)})
        );
    }
    common::require_budget_met(
        "the ECC network (predicted cost)",
        ecc_row.predicted <= budget,
        ecc_row.predicted,
        budget,
    )
}
