//! ECC end to end: prune the channels of a VGG-style MNIST network so that its
//! predicted CPU latency meets a budget, remove the pruned channels physically, and
//! measure the compact network, closing the loop on the measurement; the same for
//! uniform width scaling.
//!
//! ```text
//! energy-prune lab ecc [--budget 0.5 | --budgets 0.25,0.5,0.75]
//!     [--seeds N] [--model latency|energy|systolic] [--counter rapl|nvml]
//!     [--rapl-domains package,dram] [--powercap-root DIR] [--gpu N] [--cost-model FILE] [--samples N]
//!     [--train-size N] [--prune-train-size N] [--dense-epochs N] [--epochs N]
//!     [--finetune-epochs N] [--tolerance F] [--loop-rounds N] [--seed N] [--data DIR]
//!     [--dense FILE] [--save-dense FILE] [--plot FILE] [--json]
//! ```
//! The dense network trains on `--train-size` images (default: all 60 000);
//! pruning and fine-tuning use the first `--prune-train-size` (12 000). `--budget`
//! is a fraction of the dense network's predicted cost; `--budgets` runs ECC and
//! uniform scaling at several, all from the same dense network and cost model;
//! `--seeds N` trains both N times per budget (data orders `seed..seed+N`) and
//! reports means and standard deviations. The latency model is calibrated on this
//! machine first (measurement protocol, bilinear models and the layer table, the
//! best by held-out error; about a minute) unless `--cost-model` names a JSON file
//! written by `energy-prune calibrate`. **Closed loop**: after compaction the
//! network is measured against the dense one (interleaved); while it is more than
//! `--tolerance` (default 3 %) over its budget, the latency target is tightened by
//! the observed ratio and pruning continues from it (at most `--loop-rounds`, 3),
//! for ECC and uniform scaling alike.
//! With `--model energy` the budget is on **measured energy** per inference: the
//! cost model is calibrated on the energy counter (`--counter rapl` on Linux
//! powercap, `nvml` on an NVIDIA GPU with the tool built `--features nvml`; or
//! loaded from a `calibrate --oracle rapl|nvml` file) and the loop closes on the
//! counter's measurements of the compact against the dense network (idle power
//! subtracted). `--plot` (default `ecc-results/accuracy_latency.svg`) receives test accuracy
//! against measured latency (a fraction of the dense network's) for both methods.

use energy_prune::prune::Budget;
use std::path::PathBuf;
use std::time::Instant;

use crate::common::check;
use crate::plot::{Series, accuracy_plot};
use energy_prune::energy::{SystolicArray, SystolicConfig, WidthCostModel};
use energy_prune::network::{Network, PruningPlan};
use energy_prune::prune::{AdmmConfig, AdmmTraining, Data, train_admm, train_uniform};
use energy_prune::train::{DataSource, evaluate};
use energy_prune_nn::mnist::{Mnist, MnistOptions};
use energy_prune_nn::workflow::{
    LoopRound, Progress, calibrate_vgg_latency, closed_loop, closed_loop_with, load_cost_model,
    print_calibration, print_dense, train_dense_vgg,
};
use energy_prune_nn::{Cnn, measure_latency};

use crate::args::Usage;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Budgets as fractions of the dense cost, comma-separated (`--budget` for one).
    #[arg(long, alias = "budget", value_delimiter = ',', default_values_t = [0.5])]
    pub budgets: Vec<f64>,
    /// SVG plot of accuracy against cost.
    #[arg(long, default_value = "ecc-results/accuracy_latency.svg")]
    pub plot: PathBuf,
    /// What the budget constrains: latency (measured, calibrated), energy (measured
    /// on `--counter`, calibrated; the loop closes on measured energy) or systolic
    /// (analytic energy).
    #[arg(long, default_value = "latency")]
    pub model: String,
    /// The energy counter of `--model energy`: rapl or nvml.
    #[arg(long, default_value = "rapl")]
    pub counter: String,
    #[command(flatten)]
    pub counter_flags: crate::args::Counter,
    /// Load a calibrated cost model (JSON) instead of calibrating.
    #[arg(long)]
    pub cost_model: Option<PathBuf>,
    /// Random width configurations measured.
    #[arg(long, default_value_t = 150)]
    pub samples: usize,
    /// Training images used for calibration runs.
    #[arg(long, default_value_t = 60_000)]
    pub train_size: usize,
    /// Training images used while pruning.
    #[arg(long, default_value_t = 12_000)]
    pub prune_train_size: usize,
    /// Seeds (repeated runs) per budget.
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// Relative tolerance of the measured cost against the budget.
    #[arg(long, default_value_t = 0.03)]
    pub tolerance: f64,
    /// Rounds of the closed measurement loop.
    #[arg(long, default_value_t = 3)]
    pub loop_rounds: usize,
    /// Epochs of dense training.
    #[arg(long, default_value_t = 8)]
    pub dense_epochs: usize,
    /// Epochs of constrained training.
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// Epochs of fine-tuning with the support frozen.
    #[arg(long, default_value_t = 2)]
    pub finetune_epochs: usize,
    #[command(flatten)]
    pub rng: crate::args::Seed,
    #[command(flatten)]
    pub mnist: crate::args::MnistDir,
    #[command(flatten)]
    pub print: crate::args::Json,
    /// Load the dense network from this file instead of training it.
    #[arg(long)]
    pub dense: Option<PathBuf>,
    /// Save the trained dense network to this file.
    #[arg(long)]
    pub save_dense: Option<PathBuf>,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        let a = self;
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
        if !["latency", "energy", "systolic"].contains(&a.model.as_str()) {
            return Err(
                format!("--model {}: expected latency, energy or systolic", a.model).into(),
            );
        }
        if a.model == "energy" {
            if !["rapl", "nvml"].contains(&a.counter.as_str()) {
                return Err(format!("--counter {}: expected rapl or nvml", a.counter).into());
            }
            a.counter_flags.check(&a.counter)?;
        }
        check::at_least_one("--train-size", a.train_size)?;
        check::at_least_one("--prune-train-size", a.prune_train_size)?;
        check::at_least_one("--seeds", a.seeds)?;
        check::at_least_one("--samples", a.samples)?;
        check::at_least_one("--epochs", a.epochs)?;
        check::at_least_one("--loop-rounds", a.loop_rounds)?;
        check::count("--dense-epochs", a.dense_epochs, 0)?;
        check::count("--finetune-epochs", a.finetune_epochs, 0)?;
        check::within("--tolerance", a.tolerance, 0.0, 1.0)?;
        check::mnist_dir("--data", &a.mnist.data)?;
        for (flag, p) in [("--cost-model", &a.cost_model), ("--dense", &a.dense)] {
            if let Some(p) = p {
                check::readable(flag, p)?;
            }
        }
        let mut outputs = vec![("--plot", a.plot.as_path())];
        if let Some(p) = &a.save_dense {
            check::writable("--save-dense", p)?;
            outputs.push(("--save-dense", p.as_path()));
        }
        let mut inputs = check::mnist_files(&a.mnist.data);
        inputs.extend(a.cost_model.iter().chain(&a.dense).cloned());
        let inputs: Vec<&std::path::Path> = inputs.iter().map(|p| p.as_path()).collect();
        check::outputs_apart(&outputs, &inputs)
    }
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    let start = Instant::now();
    // A given cost model is read and checked against the network before any training.
    let loaded = match &args.cost_model {
        Some(path) => Some(load_cost_model(
            path,
            Cnn::vgg_mnist(args.rng.seed)?.architecture(),
        )?),
        None => None,
    };
    // The energy counter is opened (and the idle power measured) before any training.
    let mut meter = match args.model.as_str() {
        "energy" => {
            let m = energy_prune_nn::meter::EnergyMeter::new(
                args.counter_flags.open(&args.counter)?,
                energy_prune_nn::meter::MeterSettings::default(),
            )?;
            println!(
                "energy counter: {} (idle {:.3} W, subtracted from every measurement)",
                m.describe(),
                m.idle_watts()
            );
            Some(m)
        }
        _ => None,
    };
    let mnist = Mnist::load(
        &args.mnist.data,
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
    let mut dense = Cnn::vgg_mnist(args.rng.seed)?;
    let arch = dense.architecture().clone();
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    if let Some(path) = &args.dense {
        dense.load(path)?;
        println!("loaded dense vgg-mnist from {}", path.display());
    } else {
        let epochs = args.dense_epochs;
        train_dense_vgg(&mut dense, &train, test, epochs, args.rng.seed, &mut |e| {
            print_dense("dense", epochs, e)
        })?;
    }
    if let Some(path) = &args.save_dense {
        dense.save(path)?;
        println!("saved dense vgg-mnist to {}", path.display());
    }

    // 2. Cost model.
    let model: Box<dyn WidthCostModel> = match (args.model.as_str(), loaded) {
        ("latency" | "energy", Some(m)) => {
            let path = args.cost_model.as_ref().expect("loaded from a path");
            println!("cost model: {} (loaded)", path.display());
            Box::new(m)
        }
        ("latency", None) => {
            let c = calibrate_vgg_latency(&arch, args.samples, args.rng.seed)?;
            print_calibration(&c);
            Box::new(c.chosen)
        }
        ("energy", None) => {
            let meter = meter.as_mut().expect("opened for the energy model");
            let c = energy_prune_nn::workflow::calibrate_energy(
                &arch,
                (1, 28, 28),
                &Cnn::vgg_mnist_specs(),
                meter,
                &energy_prune_nn::workflow::CalibrationSettings {
                    samples: args.samples,
                    min_fraction: 0.25,
                    batch: 64,
                    repeats: 5,
                    grid: 5,
                    seed: args.rng.seed,
                    statistic: energy_prune::energy::Statistic::Median,
                },
            )?;
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
    let unit = match args.model.as_str() {
        "latency" => "ms",
        "energy" => "J per inference",
        _ => "energy units",
    };
    let dense_pred = model.cost_of_widths(&full)?;
    let dense_acc = evaluate(&mut dense, test, 1000)?;
    let dense_ms = measure_latency(&mut dense.clone(), 64, 2, 9)?.median_ms;
    println!(
        "dense: {:.2} %, predicted {:.4} {unit}, measured {:.3} ms per batch of 64; budgets {:?} of dense, {} seed(s)\n",
        100.0 * dense_acc,
        dense_pred,
        dense_ms,
        args.budgets,
        args.seeds
    );
    let prune_train = train.take(args.prune_train_size);
    let data = Data {
        train: &prune_train,
        validation: None,
        test: Some(test),
    };
    // The loop closes on measured latency or energy when the model predicts it.
    let (tolerance, rounds) = if args.model != "systolic" {
        (args.tolerance, args.loop_rounds)
    } else {
        (f64::INFINITY, 1)
    };
    let predict = |w: &[usize]| model.cost_of_widths(w);
    let mut results = Vec::new();
    for &fraction in &args.budgets {
        let budget = fraction * dense_pred;
        let mut ecc = Vec::new();
        let mut uniform = Vec::new();
        for k in 0..args.seeds {
            let cfg = AdmmTraining {
                epochs: args.epochs,
                finetune_epochs: args.finetune_epochs,
                seed: args.rng.seed + k as u64,
                admm: AdmmConfig {
                    eta_s: 2.0,
                    ..AdmmConfig::default()
                },
                ..AdmmTraining::default()
            };
            println!(
                "== budget {fraction} of dense = {budget:.4} {unit}, seed {}: ECC\n",
                cfg.seed
            );
            // One closed loop from the dense network per method.
            let mut looped = |prune: &mut dyn FnMut(&mut Cnn, f64) -> energy_prune::Result<()>| {
                let mut net = dense.clone();
                let loops = match meter.as_mut() {
                    Some(m) => closed_loop_with(
                        &mut net,
                        &dense,
                        fraction,
                        budget,
                        tolerance,
                        rounds,
                        &predict,
                        prune,
                        &mut |n, r| energy_prune_nn::workflow::measure_energy_against(m, n, r, 5),
                    )?,
                    None => closed_loop(
                        &mut net, &dense, fraction, budget, tolerance, rounds, &predict, prune,
                    )?,
                };
                finish(&net, loops, test, dense_pred)
            };
            let mut print = Progress {
                reference: 1.0,
                unit,
            };
            ecc.push(looped(&mut |n, target| {
                train_admm(
                    n,
                    vec![Budget::absolute(
                        args.model.as_str(),
                        model.as_ref(),
                        target,
                    )],
                    data,
                    &cfg,
                    &mut print,
                )
                .and_then(|r| r.converged("the ECC network").map(|_| ()))
            })?);
            println!(
                "\n== budget {fraction}, seed {}: uniform width scaling\n",
                cfg.seed
            );
            let epochs = cfg.epochs + cfg.finetune_epochs;
            uniform.push(looped(&mut |n, target| {
                train_uniform(
                    n,
                    vec![Budget::absolute(
                        args.model.as_str(),
                        model.as_ref(),
                        target,
                    )],
                    data,
                    epochs,
                    &cfg,
                    &mut print,
                )
                .and_then(|r| r.converged("the uniformly scaled network").map(|_| ()))
            })?);
        }
        results.push(BudgetRuns {
            fraction,
            ecc,
            uniform,
        });
    }

    for r in &results {
        println!(
            "\nResults at budget {} of the dense predicted cost ({} model; {} seed(s); measured latency of the compact network relative to the dense one, interleaved, batch 64, 2 threads):\n",
            r.fraction, args.model, args.seeds
        );
        println!(
            "| network | seed | test accuracy | predicted / dense | measured / dense | loop rounds | widths |"
        );
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| dense | - | {:.2} % | 1.0000 | 1.0000 | - | {full:?} |",
            100.0 * dense_acc
        );
        for (name, runs) in [("ECC", &r.ecc), ("uniform", &r.uniform)] {
            for (k, p) in runs.iter().enumerate() {
                println!(
                    "| {name} | {} | {:.2} % | {:.4} | {:.4} | {} | {:?} |",
                    args.rng.seed + k as u64,
                    100.0 * p.accuracy,
                    p.predicted,
                    p.measured,
                    p.rounds,
                    p.widths
                );
            }
        }
        let (em, es) = mean_std(&r.ecc);
        let (um, us) = mean_std(&r.uniform);
        println!(
            "\nmean test accuracy: ECC {:.2} % (sd {:.2}), uniform {:.2} % (sd {:.2}); difference {:+.2} pt",
            100.0 * em,
            100.0 * es,
            100.0 * um,
            100.0 * us,
            100.0 * (em - um)
        );
    }
    let series = |name: &str, pick: fn(&BudgetRuns) -> &Vec<Pruned>| Series {
        name: name.to_string(),
        points: results
            .iter()
            .map(|r| {
                let runs = pick(r);
                let m = runs.iter().map(|p| p.measured).sum::<f64>() / runs.len() as f64;
                (m, 100.0 * mean_std(runs).0)
            })
            .collect(),
    };
    accuracy_plot(
        &args.plot,
        &format!(
            "vgg-mnist: test accuracy against measured latency (budgets on the {} model)",
            args.model
        ),
        "measured latency / dense latency (batch 64, 2 threads; mean over seeds)",
        &[series("ECC", |r| &r.ecc), series("uniform", |r| &r.uniform)],
        Some(("dense", 100.0 * dense_acc)),
    )?;
    println!("\nwrote {}", args.plot.display());
    println!("whole run: {:.1} s", start.elapsed().as_secs_f64());
    if args.print.json {
        let method = |runs: &Vec<Pruned>| {
            let (m, sd) = mean_std(runs);
            serde_json::json!({
                "test_accuracy": m,
                "accuracy_sd": sd,
                "accuracies": runs.iter().map(|p| p.accuracy).collect::<Vec<_>>(),
                "predicted": runs[0].predicted * dense_pred,
                "latency_ms": runs.iter().map(|p| p.ms).sum::<f64>() / runs.len() as f64,
                "measured": runs.iter().map(|p| p.measured).collect::<Vec<_>>(),
                "rounds": runs.iter().map(|p| p.rounds).collect::<Vec<_>>(),
                "widths": runs[0].widths,
            })
        };
        let all: Vec<_> = results
            .iter()
            .map(|r| serde_json::json!({"budget": r.fraction, "ecc": method(&r.ecc), "uniform": method(&r.uniform)}))
            .collect();
        let dense_json = serde_json::json!({"test_accuracy": dense_acc, "predicted": dense_pred, "latency_ms": dense_ms, "widths": full});
        let mut out = serde_json::json!({"model": args.model, "unit": unit, "seeds": args.seeds, "dense": dense_json, "runs": all, "svg": [args.plot]});
        if let [r] = results.as_slice() {
            out["budget"] = serde_json::json!(r.fraction);
            out["ecc"] = method(&r.ecc);
            out["uniform"] = method(&r.uniform);
        }
        println!("{out}");
    }
    for r in &results {
        for p in &r.ecc {
            let budget = r.fraction * dense_pred;
            // The last round's own target is what ADMM met; the budget itself holds
            // on the model whenever the loop did not have to tighten.
            energy_prune_nn::workflow::require_budget_met(
                "the ECC network (predicted cost, its last target)",
                p.predicted * dense_pred <= p.target * (1.0 + 1e-9),
                p.predicted * dense_pred,
                budget.min(p.target),
            )?;
        }
    }
    Ok(())
}

/// One pruned network (one seed), with costs as fractions of dense.
struct Pruned {
    accuracy: f64,
    predicted: f64,
    measured: f64,
    ms: f64,
    target: f64,
    rounds: usize,
    widths: Vec<usize>,
}

/// Every seed of both methods at one budget.
struct BudgetRuns {
    fraction: f64,
    ecc: Vec<Pruned>,
    uniform: Vec<Pruned>,
}

/// Mean and sample standard deviation of the accuracies.
fn mean_std(runs: &[Pruned]) -> (f64, f64) {
    let n = runs.len() as f64;
    let m = runs.iter().map(|p| p.accuracy).sum::<f64>() / n;
    let var = if runs.len() > 1 {
        runs.iter().map(|p| (p.accuracy - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// The compact network's accuracy and the closed loop's last round.
fn finish(
    net: &Cnn,
    loops: Vec<LoopRound>,
    test: &dyn DataSource,
    dense_pred: f64,
) -> energy_prune::Result<Pruned> {
    let plan = PruningPlan::from_network(net)?;
    let mut compact = net.compact(&plan)?;
    let last = loops.last().expect("the loop runs at least one round");
    Ok(Pruned {
        accuracy: evaluate(&mut compact, test, 1000)?,
        predicted: last.predicted / dense_pred,
        measured: last.measured,
        ms: last.ms,
        target: last.target,
        rounds: loops.len(),
        widths: last.widths.clone(),
    })
}
