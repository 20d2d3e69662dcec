//! ECC end to end: prune the channels of a VGG-style MNIST network so that its
//! predicted CPU latency meets a budget, remove the pruned channels physically, and
//! measure the compact network; the same for uniform width scaling.
//!
//! ```text
//! cargo run --release --example ecc_latency -- [--budget 0.5 | --budgets 0.25,0.5,0.75]
//!     [--model latency|systolic] [--cost-model FILE] [--samples N] [--train-size N]
//!     [--dense-epochs N] [--epochs N] [--finetune-epochs N] [--seed N] [--data DIR]
//!     [--dense FILE] [--save-dense FILE] [--plot FILE] [--json]
//! ```
//! `--budget` is a fraction of the dense network's predicted cost; `--budgets`
//! runs ECC and uniform scaling at several, all from the same dense network and
//! cost model. The latency model is calibrated on this machine first (about 30 s)
//! unless `--cost-model` names a JSON file written by the `calibrate` example.
//! `--plot` (default `ecc-results/accuracy_latency.svg`) receives test accuracy
//! against measured latency (a fraction of the dense network's) for both methods.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::plot::{Series, accuracy_plot};
use common::{
    Progress, calibrate_vgg_latency, check, print_calibration, print_dense, train_dense_vgg,
};
use energy_prune::energy::{CalibratedModel, SystolicArray, SystolicConfig, WidthCostModel};
use energy_prune::network::{Network, PruningPlan};
use energy_prune::nn::mnist::{Mnist, MnistOptions};
use energy_prune::nn::{Cnn, LatencyStats, measure_latency};
use energy_prune::prune::{
    AdmmConfig, AdmmTraining, Data, train_admm, train_uniform, uniform_widths,
};
use energy_prune::train::{DataSource, evaluate};

struct Args {
    budgets: Vec<f64>,
    plot: PathBuf,
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
        budgets: vec![0.5],
        plot: PathBuf::from("ecc-results/accuracy_latency.svg"),
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
            Long("budget") => a.budgets = vec![p.value()?.parse()?],
            Long("budgets") => {
                let v = p.value()?.string()?;
                a.budgets = v
                    .split(',')
                    .map(|x| x.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--budgets {v}: {e}"))?;
            }
            Long("plot") => a.plot = p.value()?.into(),
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
                    "ecc_latency [--budget F | --budgets F,F,...] [--plot FILE] [--model latency|systolic] [--cost-model FILE] [--samples N] [--train-size N] [--dense-epochs N] [--epochs N] [--finetune-epochs N] [--seed N] [--data DIR] [--json]"
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    check::fractions("--budget", &a.budgets)?;
    a.budgets.sort_by(|x, y| y.total_cmp(x));
    a.budgets.dedup();
    if let Some(dir) = a.plot.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "--plot {}: cannot create its directory ({e})",
                a.plot.display()
            )
        })?;
    }
    check::writable("--plot", &a.plot)?;
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
            let m = CalibratedModel::load_json(path)?;
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
    if let Some(path) = &args.dense {
        dense.load(path)?;
        println!("loaded dense vgg-mnist from {}", path.display());
    } else {
        let epochs = args.dense_epochs;
        train_dense_vgg(&mut dense, &train, test, epochs, args.seed, &mut |e| {
            print_dense("dense", epochs, e)
        })?;
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
            let c = calibrate_vgg_latency(&arch, args.samples, args.seed)?;
            print_calibration(&c);
            Box::new(c.chosen)
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
    let dense_row = Row {
        accuracy: evaluate(&mut dense, test, 1000)?,
        predicted: dense_pred,
        latency: measure_latency(&mut dense.clone(), 64, 2, 9)?,
        widths: full.clone(),
    };
    println!(
        "dense: predicted {:.4} {unit}, measured {:.3} ms per batch of 64; budgets {:?} of dense\n",
        dense_pred, dense_row.latency.median_ms, args.budgets
    );
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
    let data = Data {
        train: &train,
        validation: None,
        test: Some(test),
    };
    let mut runs = Vec::new();
    for &fraction in &args.budgets {
        let budget = fraction * dense_pred;
        println!("== budget {fraction} of dense = {budget:.4} {unit}\n");
        let (ecc, uniform) = prune_at(&dense, model.as_ref(), budget, data, test, &cfg, unit)?;
        runs.push((fraction, ecc, uniform));
    }

    for (fraction, ecc, uniform) in &runs {
        println!(
            "\nResults at budget {fraction} of the dense predicted cost ({} model):\n",
            args.model
        );
        println!(
            "| network | test accuracy | predicted ({unit}) | measured latency, batch 64 (median [min, max]) | ratio to dense | widths |"
        );
        println!("|---|---|---|---|---|---|");
        for (name, r) in [("dense", &dense_row), ("ECC", ecc), ("uniform", uniform)] {
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
    }
    let dense_ms = dense_row.latency.median_ms;
    let series = |name: &str, pick: fn(&(f64, Row, Row)) -> &Row| Series {
        name: name.to_string(),
        points: runs
            .iter()
            .map(|run| {
                let r = pick(run);
                (r.latency.median_ms / dense_ms, 100.0 * r.accuracy)
            })
            .collect(),
    };
    accuracy_plot(
        &args.plot,
        &format!(
            "vgg-mnist: test accuracy against measured latency (budgets on the {} model)",
            args.model
        ),
        "measured latency / dense latency (batch 64, 2 threads, median of 9)",
        &[series("ECC", |r| &r.1), series("uniform", |r| &r.2)],
        Some(("dense", 100.0 * dense_row.accuracy)),
    )?;
    println!("\nwrote {}", args.plot.display());
    println!("whole run: {:.1} s", start.elapsed().as_secs_f64());
    if args.json {
        let r = |r: &Row| serde_json::json!({"test_accuracy": r.accuracy, "predicted": r.predicted, "latency_ms": r.latency.median_ms, "widths": r.widths});
        let all: Vec<_> = runs
            .iter()
            .map(|(b, e, u)| serde_json::json!({"budget": b, "ecc": r(e), "uniform": r(u)}))
            .collect();
        let mut out = serde_json::json!({"model": args.model, "dense": r(&dense_row), "runs": all, "svg": [args.plot]});
        if let [(b, e, u)] = runs.as_slice() {
            out["budget"] = serde_json::json!(b);
            out["ecc"] = r(e);
            out["uniform"] = r(u);
        }
        println!("{out}");
    }
    for (fraction, ecc, _) in &runs {
        let budget = fraction * dense_pred;
        common::require_budget_met(
            "the ECC network (predicted cost)",
            ecc.predicted <= budget,
            ecc.predicted,
            budget,
        )?;
    }
    Ok(())
}

/// ECC (ADMM channel pruning, fine-tuning, compaction) and uniform width scaling to
/// the same predicted cost (trained through the same driver for the same epochs,
/// loss and data order, then compacted), both from `dense`, both measured.
fn prune_at(
    dense: &Cnn,
    model: &dyn WidthCostModel,
    budget: f64,
    data: Data<'_>,
    test: &dyn DataSource,
    cfg: &AdmmTraining,
    unit: &'static str,
) -> energy_prune::Result<(Row, Row)> {
    let arch = dense.architecture().clone();
    let mut print = Progress {
        reference: 1.0,
        unit,
    };
    let mut ecc = dense.clone();
    let report = train_admm(&mut ecc, model, budget, data, cfg, &mut print)?;
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

    let mut uniform = dense.clone();
    let epochs_run = report.history.len();
    let uniform_report = train_uniform(
        &mut uniform,
        model,
        budget,
        data,
        epochs_run,
        cfg,
        &mut print,
    )?;
    println!("uniform: {}\n", uniform_report.termination);
    let widths = uniform_widths(&arch, model, budget)?;
    let mut uniform = uniform.compact(&PruningPlan::leading(&arch, &widths)?)?;
    let uniform_row = Row {
        accuracy: evaluate(&mut uniform, test, 1000)?,
        predicted: model.cost_of_widths(&widths)?,
        latency: measure_latency(&mut uniform, 64, 2, 9)?,
        widths,
    };
    Ok((ecc_row, uniform_row))
}
