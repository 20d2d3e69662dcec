//! Several budgets at once: LeNet-5 on MNIST with systolic energy <= 0.25 and
//! nonzero parameters <= 0.03 of the dense network, met together by one
//! projected training (`MultiBudgetProjection`), against training to each budget
//! alone and against chaining the two single-budget trainings.
//!
//! ```sh
//! cargo run --release --example multi_budget            # about 4 minutes on 2 cores
//! cargo run --release --example multi_budget -- --energy 0.25 --params 0.03 --json
//! ```
//!
//! With `--json` the last line is
//! `{"weight_level": {"budgets": [{"name", "budget", "reached", "binding"}...], "test_accuracy",
//! "baselines": {...}}, "width_level": null}` with every `reached` a fraction of dense
//! (`width_level` is null: several budgets at the width level are not built yet).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{Progress, check, print_dense, train_dense_lenet5};
use energy_prune::energy::{
    Count, CountingModel, SystolicArray, SystolicConfig, WeightEnergyModel,
};
use energy_prune::network::{Network, NetworkState};
use energy_prune::nn::Cnn;
use energy_prune::nn::mnist::{Mnist, MnistOptions};
use energy_prune::prune::{
    Data, ModelBudget, MultiBudgetProjection, ProjectedTraining, train_constrained, train_projected,
};
use energy_prune::train::{Sgd, evaluate};

struct Args {
    energy: f64,
    params: f64,
    dense_epochs: usize,
    epochs: usize,
    finetune_epochs: usize,
    seed: u64,
    data: PathBuf,
    dense: Option<PathBuf>,
    json: bool,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let d = ProjectedTraining::default();
    let mut a = Args {
        energy: 0.25,
        params: 0.03,
        dense_epochs: 8,
        epochs: d.epochs,
        finetune_epochs: d.finetune_epochs,
        seed: 1,
        data: PathBuf::from("data/mnist"),
        dense: None,
        json: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("energy") => a.energy = p.value()?.parse()?,
            Long("params") => a.params = p.value()?.parse()?,
            Long("dense-epochs") => a.dense_epochs = p.value()?.parse()?,
            Long("epochs") => a.epochs = p.value()?.parse()?,
            Long("finetune-epochs") => a.finetune_epochs = p.value()?.parse()?,
            Long("seed") => a.seed = p.value()?.parse()?,
            Long("data") => a.data = p.value()?.into(),
            Long("dense") => a.dense = Some(p.value()?.into()),
            Long("json") => a.json = true,
            Long("help") | Short('h') => {
                println!(
                    "multi_budget [--energy F] [--params F] [--dense-epochs N] [--epochs N] [--finetune-epochs N] [--seed N] [--data DIR] [--dense FILE] [--json]"
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    check::fraction("--energy", a.energy)?;
    check::fraction("--params", a.params)?;
    check::mnist_dir("--data", &a.data)?;
    if let Some(p) = &a.dense {
        check::readable("--dense", p)?;
    }
    Ok(a)
}

fn main() {
    common::run_main(parse_args, run);
}

/// One trained network's figures.
struct Row {
    name: &'static str,
    energy: f64,
    params: f64,
    accuracy: f64,
}

fn run(args: &Args) -> energy_prune::Result<()> {
    let start = Instant::now();
    let data = Mnist::load(&args.data, MnistOptions::default())?;
    let mut dense = Cnn::lenet5(args.seed)?;
    match &args.dense {
        Some(path) => dense.load(path)?,
        None => train_dense_lenet5(
            &mut dense,
            &data.train,
            &data.test,
            args.dense_epochs,
            args.seed,
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
        seed: args.seed,
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
    let mut solver = MultiBudgetProjection::new(
        vec![
            ModelBudget {
                name: "energy".into(),
                model: Box::new(energy.clone()),
                budget: e_budget,
            },
            ModelBudget {
                name: "parameters".into(),
                model: Box::new(params.clone()),
                budget: p_budget,
            },
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
    )?;
    let status = solver.budget_status(&both)?;
    let row_both = measure(
        &both,
        "both budgets at once",
        r.test_accuracy.unwrap_or(f64::NAN),
    )?;

    // 2. Each budget alone.
    println!("\nenergy budget alone:");
    let mut only_e = dense.clone();
    let mut p = progress(e_dense, "of dense energy");
    let re = train_projected(&mut only_e, &energy, e_budget, split, &cfg, &mut p)?;
    let row_e = measure(
        &only_e,
        "energy alone",
        re.test_accuracy.unwrap_or(f64::NAN),
    )?;
    println!("\nparameter budget alone:");
    let mut only_p = dense.clone();
    let mut p = progress(p_dense, "of dense parameters");
    let rp = train_projected(&mut only_p, &params, p_budget, split, &cfg, &mut p)?;
    let row_p = measure(
        &only_p,
        "parameters alone",
        rp.test_accuracy.unwrap_or(f64::NAN),
    )?;

    // 3. Chained: the energy-constrained network trained again to the parameter budget.
    println!("\nchained (energy, then parameters):");
    let mut chained = only_e.clone();
    let mut p = progress(p_dense, "of dense parameters");
    let rc = train_projected(&mut chained, &params, p_budget, split, &cfg, &mut p)?;
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
        "\nbinding: {}; whole run {:.0} s",
        status
            .iter()
            .filter(|b| b.binding)
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        start.elapsed().as_secs_f64()
    );
    if args.json {
        let row = |r: &Row| serde_json::json!({"energy": r.energy, "parameters": r.params, "both_met": met(r), "test_accuracy": r.accuracy});
        let budgets: Vec<serde_json::Value> = status
            .iter()
            .zip([e_dense, p_dense])
            .map(|(b, d)| {
                serde_json::json!({"name": b.name, "budget": b.budget / d, "reached": b.cost / d, "binding": b.binding})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "weight_level": {
                    "budgets": budgets,
                    "test_accuracy": row_both.accuracy,
                    "baselines": {
                        "energy_alone": row(&row_e),
                        "parameters_alone": row(&row_p),
                        "chained": row(&row_c),
                    },
                },
                "width_level": null,
            })
        );
    }
    common::require_budget_met(
        "the network trained under both budgets",
        met(&row_both),
        row_both.energy.max(row_both.params),
        args.energy.max(args.params),
    )
}
