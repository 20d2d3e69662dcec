//! Several budgets at once, at both levels:
//!
//! * **weight level**: LeNet-5 on MNIST with systolic energy <= 0.25 and nonzero
//!   parameters <= 0.03 of the dense network, met together by one projected
//!   training (`WeightProjection` with two budgets);
//! * **width level**: VGG-MNIST with CPU latency <= 0.5 (ECC's bilinear model,
//!   calibrated here, or `--cost-model FILE`) and systolic energy <= 0.4 of the
//!   dense network, met together by one ADMM run with a dual per budget
//!   (`train_admm` with two budgets); the compact network's latency is then measured and
//!   the loop closed on it: while it measures over `--margin` (2 %) below the
//!   budget, the latency target is tightened by the observed ratio and ADMM
//!   continues (at most `--loop-rounds`, 3); the latency budget is judged on a
//!   fresh measurement of the final network.
//!
//! Each against training to each budget alone and against chaining the two
//! single-budget trainings.
//!
//! ```sh
//! energy-prune lab multi-budget            # about 15 minutes on 2 cores
//! energy-prune lab multi-budget --level weight --energy 0.25 --params 0.03 --json
//! energy-prune lab multi-budget --level width --latency 0.5 --width-energy 0.4
//! ```
//!
//! With `--json` the last line is
//! `{"weight_level": {"budgets": [{"name", "budget", "reached", "binding"}...], "test_accuracy",
//! "baselines": {...}}, "width_level": {...same keys...}}` with every `reached` a
//! fraction of dense (at the width level `reached` is the model's prediction, and
//! `measured_latency` the measured ratio); a level not run is null.

use energy_prune::prune::Budget;
use std::path::PathBuf;
use std::time::Instant;

use crate::common::check;
use energy_prune::energy::{
    CalibratedModel, Count, CountingModel, SystolicArray, SystolicConfig, WeightEnergyModel,
    WidthCostModel,
};
use energy_prune::network::{Network, NetworkState, PruningPlan};
use energy_prune::prune::{
    AdmmConfig, AdmmTraining, ConstrainedOptimizer, Data, ProjectedTraining, WeightProjection,
    train_admm, train_constrained, train_projected,
};
use energy_prune::train::{Sgd, evaluate};
use energy_prune_nn::mnist::{Mnist, MnistOptions};
use energy_prune_nn::workflow::{
    Progress, calibrate_vgg_latency, closed_loop, load_cost_model, measure_against,
    print_calibration, print_dense, train_dense_lenet5, train_dense_vgg,
};
use energy_prune_nn::{Cnn, measure_latency};

use crate::args::Usage;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which budgets: weight, width or both.
    #[arg(long, default_value = "both")]
    pub level: String,
    /// Energy budget as a fraction of dense.
    #[arg(long, default_value_t = 0.25)]
    pub energy: f64,
    /// Parameter budget as a fraction of dense.
    #[arg(long, default_value_t = 0.03)]
    pub params: f64,
    /// Latency budget as a fraction of dense.
    #[arg(long, default_value_t = 0.5)]
    pub latency: f64,
    /// Width-level energy budget as a fraction of dense.
    #[arg(long, default_value_t = 0.4)]
    pub width_energy: f64,
    /// Load a calibrated cost model (JSON) instead of calibrating.
    #[arg(long)]
    pub cost_model: Option<PathBuf>,
    /// Random width configurations measured.
    #[arg(long, default_value_t = 150)]
    pub samples: usize,
    /// Training images used for calibration runs.
    #[arg(long, default_value_t = 12_000)]
    pub train_size: usize,
    /// Dense epochs of the VGG network.
    #[arg(long, default_value_t = 3)]
    pub vgg_dense_epochs: usize,
    /// Epochs of ADMM.
    #[arg(long, default_value_t = 4)]
    pub admm_epochs: usize,
    /// Fine-tuning epochs after ADMM.
    #[arg(long, default_value_t = 2)]
    pub admm_finetune_epochs: usize,
    /// Relative tolerance of the measured cost against the budget.
    #[arg(long, default_value_t = 0.0)]
    pub tolerance: f64,
    /// Safety margin under the budget.
    #[arg(long, default_value_t = 0.02)]
    pub margin: f64,
    /// Rounds of the closed measurement loop.
    #[arg(long, default_value_t = 3)]
    pub loop_rounds: usize,
    /// Epochs of dense training.
    #[arg(long, default_value_t = 8)]
    pub dense_epochs: usize,
    /// Epochs of constrained training.
    #[arg(long, default_value_t = ProjectedTraining::default().epochs)]
    pub epochs: usize,
    /// Epochs of fine-tuning with the support frozen.
    #[arg(long, default_value_t = ProjectedTraining::default().finetune_epochs)]
    pub finetune_epochs: usize,
    #[command(flatten)]
    pub rng: crate::args::Seed,
    #[command(flatten)]
    pub mnist: crate::args::MnistDir,
    /// Load the dense network from this file instead of training it.
    #[arg(long)]
    pub dense: Option<PathBuf>,
    #[command(flatten)]
    pub print: crate::args::Json,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        let a = self;
        if !["weight", "width", "both"].contains(&a.level.as_str()) {
            return Err(format!("--level {}: expected weight, width or both", a.level).into());
        }
        check::fraction("--energy", a.energy)?;
        check::fraction("--params", a.params)?;
        check::fraction("--latency", a.latency)?;
        check::fraction("--width-energy", a.width_energy)?;
        check::at_least_one("--samples", a.samples)?;
        check::at_least_one("--train-size", a.train_size)?;
        check::at_least_one("--admm-epochs", a.admm_epochs)?;
        check::at_least_one("--epochs", a.epochs)?;
        check::at_least_one("--loop-rounds", a.loop_rounds)?;
        for (flag, v) in [
            ("--vgg-dense-epochs", a.vgg_dense_epochs),
            ("--admm-finetune-epochs", a.admm_finetune_epochs),
            ("--dense-epochs", a.dense_epochs),
            ("--finetune-epochs", a.finetune_epochs),
        ] {
            check::count(flag, v, 0)?;
        }
        check::within("--tolerance", a.tolerance, 0.0, 1.0)?;
        check::within("--margin", a.margin, 0.0, 0.5)?;
        if let Some(p) = &a.cost_model {
            check::readable("--cost-model", p)?;
        }
        check::mnist_dir("--data", &a.mnist.data)?;
        if let Some(p) = &a.dense {
            check::readable("--dense", p)?;
        }
        Ok(())
    }
}

/// One trained network's figures.
struct Row {
    name: &'static str,
    energy: f64,
    params: f64,
    accuracy: f64,
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    let start = Instant::now();
    // A given cost model is checked against the width level's network before the
    // weight level trains anything.
    if let (Some(path), true) = (&args.cost_model, args.level != "weight") {
        load_cost_model(path, Cnn::vgg_mnist(args.rng.seed)?.architecture())?;
    }
    let weight = if args.level != "width" {
        Some(weight_level(args)?)
    } else {
        None
    };
    let width = if args.level != "weight" {
        Some(width_level(args)?)
    } else {
        None
    };
    println!("\nwhole run {:.0} s", start.elapsed().as_secs_f64());
    if args.print.json {
        println!(
            "{}",
            serde_json::json!({
                "weight_level": weight.as_ref().map(|w| &w.0),
                "width_level": width.as_ref().map(|w| &w.0),
            })
        );
    }
    for (what, outcome) in [
        (
            "the network trained under both weight-level budgets",
            &weight,
        ),
        ("the network pruned under both width-level budgets", &width),
    ] {
        if let Some((_, Some(miss))) = outcome {
            energy_prune_nn::workflow::require_budget_met(
                &format!("{what} ({})", miss.name),
                false,
                miss.reached,
                miss.budget,
            )?;
        }
    }
    Ok(())
}

/// A budget the network trained under all budgets missed (fractions of dense).
struct Miss {
    name: &'static str,
    reached: f64,
    budget: f64,
}

/// LeNet-5 under energy and parameter budgets: the JSON of the level and the
/// budget the network trained under both missed, if any.
fn weight_level(args: &Args) -> energy_prune::Result<(serde_json::Value, Option<Miss>)> {
    let start = Instant::now();
    let data = Mnist::load(&args.mnist.data, MnistOptions::default())?;
    let mut dense = Cnn::lenet5(args.rng.seed)?;
    match &args.dense {
        Some(path) => dense.load(path)?,
        None => train_dense_lenet5(
            &mut dense,
            &data.train,
            &data.test,
            args.dense_epochs,
            args.rng.seed,
            &mut |e| print_dense("dense", args.dense_epochs, e),
        )?,
    }
    let arch = dense.architecture().clone();
    let energy = SystolicArray::new(&arch, SystolicConfig::default())?;
    let params = CountingModel::new(&arch, Count::Parameters)?;
    let e_dense = energy.energy_total(&NetworkState::dense(&arch))?;
    let p_dense = params.dense();
    let (e_budget, p_budget) = (args.energy * e_dense, args.params * p_dense);
    let dense_acc = evaluate(&mut dense, &data.test, 1000)?;
    println!(
        "\ndense: {:.2} %; budgets: energy {:.2} of dense (floor {:.4}), nonzero parameters {:.2} of dense\n",
        100.0 * dense_acc,
        args.energy,
        energy.dense_floor() / e_dense,
        args.params
    );
    let cfg = ProjectedTraining {
        epochs: args.epochs,
        finetune_epochs: args.finetune_epochs,
        seed: args.rng.seed,
        ..ProjectedTraining::default()
    };
    let split = Data {
        train: &data.train,
        validation: None,
        test: Some(&data.test),
    };
    let measure = |net: &Cnn, name: &'static str, acc: f64| -> energy_prune::Result<Row> {
        let s = NetworkState::from_network(net)?;
        Ok(Row {
            name,
            energy: energy.energy_total(&s)? / e_dense,
            params: params.energy_total(&s)? / p_dense,
            accuracy: acc,
        })
    };
    let progress = |reference: f64, unit: &'static str| Progress { reference, unit };

    // 1. Both budgets in one training.
    let mut both = dense.clone();
    let mut solver = WeightProjection::new(
        vec![
            Budget::absolute(
                "energy",
                Box::new(energy.clone()) as Box<dyn WeightEnergyModel>,
                e_budget,
            ),
            Budget::absolute("parameters", Box::new(params.clone()) as Box<_>, p_budget),
        ],
        cfg.projection(),
    )?;
    let mut opt = Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay)?;
    println!("both budgets in one training:");
    let mut p = progress(1.0, "(budget closest to its limit, own unit)");
    let r = train_constrained(
        &mut both,
        &mut opt,
        &mut solver,
        split,
        &cfg.training(),
        &mut p,
    )?
    .converged("the network under both budgets")?;
    let status = solver.status(&both)?.budgets;
    let row_both = measure(
        &both,
        "both budgets at once",
        r.test_accuracy.unwrap_or(f64::NAN),
    )?;

    // 2. Each budget alone.
    println!("\nenergy budget alone:");
    let mut only_e = dense.clone();
    let mut p = progress(e_dense, "of dense energy");
    let re = train_projected(
        &mut only_e,
        vec![Budget::absolute("energy", &energy, e_budget)],
        split,
        &cfg,
        &mut p,
    )?
    .converged("the projected network")?;
    let row_e = measure(
        &only_e,
        "energy alone",
        re.test_accuracy.unwrap_or(f64::NAN),
    )?;
    println!("\nparameter budget alone:");
    let mut only_p = dense.clone();
    let mut p = progress(p_dense, "of dense parameters");
    let rp = train_projected(
        &mut only_p,
        vec![Budget::absolute("energy", &params, p_budget)],
        split,
        &cfg,
        &mut p,
    )?
    .converged("the projected network")?;
    let row_p = measure(
        &only_p,
        "parameters alone",
        rp.test_accuracy.unwrap_or(f64::NAN),
    )?;

    // 3. Chained: the energy-constrained network trained again to the parameter budget.
    println!("\nchained (energy, then parameters):");
    let mut chained = only_e.clone();
    let mut p = progress(p_dense, "of dense parameters");
    let rc = train_projected(
        &mut chained,
        vec![Budget::absolute("energy", &params, p_budget)],
        split,
        &cfg,
        &mut p,
    )?
    .converged("the projected network")?;
    let row_c = measure(
        &chained,
        "chained: energy, then parameters",
        rc.test_accuracy.unwrap_or(f64::NAN),
    )?;

    let rows = [&row_both, &row_e, &row_p, &row_c];
    println!(
        "\nResults (energy <= {:.2}, nonzero parameters <= {:.2} of dense; exact models):\n",
        args.energy, args.params
    );
    println!(
        "| training | energy (of dense) | parameters (of dense) | both budgets met | test accuracy |"
    );
    println!("|---|---|---|---|---|");
    let met = |r: &Row| r.energy <= args.energy && r.params <= args.params;
    println!(
        "| dense | 1.0000 | 1.0000 | - | {:.2} % |",
        100.0 * dense_acc
    );
    for r in rows {
        println!(
            "| {} | {:.4} | {:.4} | {} | {:.2} % |",
            r.name,
            r.energy,
            r.params,
            if met(r) { "yes" } else { "NO" },
            100.0 * r.accuracy
        );
    }
    println!(
        "\nbinding: {}; weight level {:.0} s",
        status
            .iter()
            .filter(|b| b.binding)
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        start.elapsed().as_secs_f64()
    );
    let row = |r: &Row| serde_json::json!({"energy": r.energy, "parameters": r.params, "both_met": met(r), "test_accuracy": r.accuracy});
    let (budgets, miss) = verdict(&[
        ("energy", args.energy, row_both.energy),
        ("parameters", args.params, row_both.params),
    ]);
    let json = serde_json::json!({
        "budgets": budgets,
        "test_accuracy": row_both.accuracy,
        "baselines": {
            "energy_alone": row(&row_e),
            "parameters_alone": row(&row_p),
            "chained": row(&row_c),
        },
    });
    Ok((json, miss))
}

/// Per budget `(name, budget, reached)` (fractions of dense): the JSON entries
/// `{"name", "budget", "reached", "binding"}` (binding: less than 1 % of the budget
/// left) and the first budget missed, if any.
fn verdict(checks: &[(&'static str, f64, f64)]) -> (Vec<serde_json::Value>, Option<Miss>) {
    let json = checks
        .iter()
        .map(|&(name, budget, reached)| {
            serde_json::json!({"name": name, "budget": budget, "reached": reached,
                "binding": budget - reached <= 0.01 * budget})
        })
        .collect();
    let miss = checks
        .iter()
        .find(|c| c.2 > c.1)
        .map(|&(name, budget, reached)| Miss {
            name,
            reached,
            budget,
        });
    (json, miss)
}

/// One pruned VGG-MNIST's figures (costs as fractions of dense).
struct WidthRow {
    name: &'static str,
    widths: Vec<usize>,
    predicted_latency: f64,
    measured_latency: f64,
    energy: f64,
    accuracy: f64,
    /// Closed-loop rounds run.
    rounds: usize,
}

/// VGG-MNIST under a latency and an energy budget by ADMM: the JSON of the level
/// and the budget the network pruned under both missed (on the models), if any.
fn width_level(args: &Args) -> energy_prune::Result<(serde_json::Value, Option<Miss>)> {
    let start = Instant::now();
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
        "\n== width level: vgg-mnist on {} training images\n",
        train.len()
    );
    let mut dense = Cnn::vgg_mnist(args.rng.seed)?;
    let arch = dense.architecture().clone();
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    // A given cost model is read and checked against the network before training.
    let loaded = match &args.cost_model {
        Some(path) => Some(load_cost_model(path, &arch)?),
        None => None,
    };
    train_dense_vgg(
        &mut dense,
        &train,
        test,
        args.vgg_dense_epochs,
        args.rng.seed,
        &mut |e| print_dense("dense vgg-mnist", args.vgg_dense_epochs, e),
    )?;
    let latency: CalibratedModel = match loaded {
        Some(m) => m,
        None => {
            let c = calibrate_vgg_latency(&arch, args.samples, args.rng.seed)?;
            print_calibration(&c);
            c.chosen
        }
    };
    let energy = SystolicArray::new(&arch, SystolicConfig::default())?;
    let (l_dense, e_dense) = (
        latency.cost_of_widths(&full)?,
        energy.cost_of_widths(&full)?,
    );
    let (l_budget, e_budget) = (args.latency * l_dense, args.width_energy * e_dense);
    let dense_ms = measure_latency(&mut dense.clone(), 64, 2, 9)?.median_ms;
    let dense_acc = evaluate(&mut dense, test, 1000)?;
    println!(
        "dense: {:.2} %, predicted {:.3} ms, measured {:.3} ms per batch of 64; budgets: latency {} and energy {} of dense\n",
        100.0 * dense_acc,
        l_dense,
        dense_ms,
        args.latency,
        args.width_energy
    );
    let cfg = AdmmTraining {
        epochs: args.admm_epochs,
        finetune_epochs: args.admm_finetune_epochs,
        seed: args.rng.seed,
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
    let mut reference = dense.clone();
    let mut finish =
        |net: &Cnn, name: &'static str, rounds: usize| -> energy_prune::Result<WidthRow> {
            let plan = PruningPlan::from_network(net)?;
            let widths = plan.widths();
            let mut compact = net.compact(&plan)?;
            let (ms, dense_ms) = measure_against(&mut compact, &mut reference, 9)?;
            Ok(WidthRow {
                name,
                predicted_latency: latency.cost_of_widths(&widths)? / l_dense,
                measured_latency: ms / dense_ms,
                energy: energy.cost_of_widths(&widths)? / e_dense,
                accuracy: evaluate(&mut compact, test, 1000)?,
                widths,
                rounds,
            })
        };
    let predict = |w: &[usize]| -> energy_prune::Result<f64> { latency.cost_of_widths(w) };

    // 1. Both budgets in one ADMM run, closed on the measured latency: while the
    // compact network measures over its latency budget, the latency target is
    // tightened by the observed ratio and ADMM continues.
    println!("both budgets in one ADMM run:");
    let mut both = dense.clone();
    // The loop aims `--margin` below the latency budget, so that a fresh
    // measurement of the result (timing noise of 1-2 % here) still meets it.
    let aim = args.latency * (1.0 - args.margin);
    let rounds = closed_loop(
        &mut both,
        &dense,
        aim,
        l_budget,
        args.tolerance,
        args.loop_rounds,
        &predict,
        &mut |net, target| {
            let budgets: Vec<Budget<Box<dyn WidthCostModel>>> = vec![
                Budget::absolute("latency", Box::new(latency.clone()) as Box<_>, target),
                Budget::absolute("energy", Box::new(energy.clone()) as Box<_>, e_budget),
            ];
            let mut p = Progress {
                reference: 1.0,
                unit: "(budget closest to its limit, own unit)",
            };
            train_admm(net, budgets, data, &cfg, &mut p).map(|_| ())
        },
    )?;
    let row_both = finish(&both, "both budgets at once", rounds.len())?;

    // 2. Each budget alone (latency closed-loop as well); 3. chained: the
    // latency-pruned network pruned again to the energy budget.
    println!("\nlatency budget alone:");
    let mut only_l = dense.clone();
    let rounds = closed_loop(
        &mut only_l,
        &dense,
        aim,
        l_budget,
        args.tolerance,
        args.loop_rounds,
        &predict,
        &mut |net, target| {
            let mut p = Progress {
                reference: l_dense,
                unit: "of dense latency (predicted)",
            };
            train_admm(
                net,
                vec![Budget::absolute("latency", &latency, target)],
                data,
                &cfg,
                &mut p,
            )
            .map(|_| ())
        },
    )?;
    let row_l = finish(&only_l, "latency alone", rounds.len())?;
    println!("\nenergy budget alone:");
    let mut only_e = dense.clone();
    let mut p = Progress {
        reference: e_dense,
        unit: "of dense energy",
    };
    train_admm(
        &mut only_e,
        vec![Budget::absolute("energy", &energy, e_budget)],
        data,
        &cfg,
        &mut p,
    )?;
    let row_e = finish(&only_e, "energy alone", 1)?;
    println!("\nchained (latency, then energy):");
    let mut chained = only_l.clone();
    train_admm(
        &mut chained,
        vec![Budget::absolute("energy", &energy, e_budget)],
        data,
        &cfg,
        &mut p,
    )?;
    let row_c = finish(&chained, "chained: latency, then energy", 1)?;

    println!(
        "\nResults at the width level (latency <= {} and energy <= {} of dense; latency predicted by the model and measured on the compact network, batch 64, 2 threads, median of 9):\n",
        args.latency, args.width_energy
    );
    println!(
        "| pruning | predicted latency | measured latency | energy | both met (measured latency, exact energy) | test accuracy | ADMM rounds | widths |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| dense | 1.0000 | 1.0000 | 1.0000 | - | {:.2} % | - | {full:?} |",
        100.0 * dense_acc
    );
    let met = |r: &WidthRow| r.measured_latency <= args.latency && r.energy <= args.width_energy;
    for r in [&row_both, &row_l, &row_e, &row_c] {
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {} | {:.2} % | {} | {:?} |",
            r.name,
            r.predicted_latency,
            r.measured_latency,
            r.energy,
            if met(r) { "yes" } else { "NO" },
            100.0 * r.accuracy,
            r.rounds,
            r.widths
        );
    }
    let row = |r: &WidthRow| serde_json::json!({"latency": r.predicted_latency, "measured_latency": r.measured_latency, "energy": r.energy, "both_met": met(r), "test_accuracy": r.accuracy, "widths": r.widths, "rounds": r.rounds});
    // Latency is judged on the measured compact network, energy on the model.
    let (budgets, miss) = verdict(&[
        ("latency", args.latency, row_both.measured_latency),
        ("energy", args.width_energy, row_both.energy),
    ]);
    println!(
        "\nbinding (less than 1 % left): {}; width level {:.0} s",
        budgets
            .iter()
            .filter(|b| b["binding"] == true)
            .map(|b| b["name"].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(", "),
        start.elapsed().as_secs_f64()
    );
    let json = serde_json::json!({
        "budgets": budgets,
        "measured_latency": row_both.measured_latency,
        "rounds": row_both.rounds,
        "test_accuracy": row_both.accuracy,
        "widths": row_both.widths,
        "baselines": {
            "latency_alone": row(&row_l),
            "energy_alone": row(&row_e),
            "chained": row(&row_c),
        },
    });
    Ok((json, miss))
}
