//! The main job: compress LeNet-5 on MNIST to an energy budget on the analytic
//! systolic-array model, and compare with magnitude pruning at the same energy.
//!
//! ```text
//! cargo run --release --example lenet5_energy -- [--budget 0.2] [--epochs N]
//!     [--finetune-epochs N] [--dense FILE] [--save-dense FILE] [--dense-epochs N]
//!     [--project-every N] [--lr X] [--seed N] [--data DIR] [--json]
//! ```
//! `--budget` is a fraction of the dense network's exact energy. With `--json` the
//! last line of stdout is one JSON object with the results.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{Progress, check, print_dense, train_dense_lenet5};
use energy_prune::Error;
use energy_prune::energy::{EnergyReport, SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkState};
use energy_prune::nn::Cnn;
use energy_prune::nn::mnist::{Mnist, MnistOptions};
use energy_prune::prune::{
    Data, MaskRounds, ProjectedTraining, TrainingReport, train_magnitude, train_projected,
};
use energy_prune::train::evaluate;

struct Args {
    budget: f64,
    epochs: usize,
    finetune_epochs: usize,
    dense: Option<PathBuf>,
    save_dense: Option<PathBuf>,
    dense_epochs: usize,
    project_every: usize,
    lr: f32,
    seed: u64,
    data: PathBuf,
    json: bool,
    regrow: bool,
    distill: f32,
    skip_baseline: bool,
    input_mask: bool,
    mask_rounds: usize,
    mask_lr: f32,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let d = ProjectedTraining::default();
    let mut a = Args {
        budget: 0.2,
        epochs: d.epochs,
        finetune_epochs: d.finetune_epochs,
        dense: None,
        save_dense: None,
        dense_epochs: 12,
        project_every: d.project_every,
        lr: d.lr,
        seed: 1,
        data: PathBuf::from("data/mnist"),
        json: false,
        regrow: false,
        distill: 0.2,
        skip_baseline: false,
        input_mask: false,
        mask_rounds: MaskRounds::default().rounds,
        mask_lr: MaskRounds::default().lr,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("budget") => a.budget = p.value()?.parse()?,
            Long("epochs") => a.epochs = p.value()?.parse()?,
            Long("finetune-epochs") => a.finetune_epochs = p.value()?.parse()?,
            Long("dense") => a.dense = Some(p.value()?.into()),
            Long("save-dense") => a.save_dense = Some(p.value()?.into()),
            Long("dense-epochs") => a.dense_epochs = p.value()?.parse()?,
            Long("project-every") => a.project_every = p.value()?.parse()?,
            Long("lr") => a.lr = p.value()?.parse()?,
            Long("seed") => a.seed = p.value()?.parse()?,
            Long("data") => a.data = p.value()?.into(),
            Long("json") => a.json = true,
            Long("regrow") => a.regrow = true,
            Long("distill") => a.distill = p.value()?.parse()?,
            Long("skip-baseline") => a.skip_baseline = true,
            Long("input-mask") => a.input_mask = true,
            Long("mask-rounds") => a.mask_rounds = p.value()?.parse()?,
            Long("mask-lr") => a.mask_lr = p.value()?.parse()?,
            Long("help") | Short('h') => {
                println!(
                    "lenet5_energy [--budget FRACTION] [--epochs N] [--finetune-epochs N] [--dense FILE] [--save-dense FILE]\n              [--dense-epochs N] [--project-every N] [--lr X] [--seed N] [--data DIR] [--input-mask] [--mask-rounds N] [--mask-lr X] [--json]"
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    check::fraction("--budget", a.budget)?;
    check::positive("--lr", f64::from(a.lr))?;
    check::positive("--mask-lr", f64::from(a.mask_lr))?;
    check::within("--distill", f64::from(a.distill), 0.0, 1.0)?;
    check::at_least_one("--project-every", a.project_every)?;
    check::mnist_dir("--data", &a.data)?;
    if let Some(p) = &a.dense {
        check::readable("--dense", p)?;
    }
    if let Some(p) = &a.save_dense {
        check::writable("--save-dense", p)?;
    }
    Ok(a)
}

fn main() {
    common::run_main(parse_args, run);
}

fn layers_json(r: &EnergyReport) -> serde_json::Value {
    r.layers
        .iter()
        .map(|l| serde_json::json!({"name": l.name, "nonzero": l.nonzero, "total": l.total}))
        .collect()
}

fn run(args: &Args) -> energy_prune::Result<()> {
    let start = Instant::now();
    let data = Mnist::load(&args.data, MnistOptions::default())?;
    let mut dense = Cnn::lenet5(args.seed)?;
    match &args.dense {
        Some(path) => {
            dense.load(path)?;
            println!("loaded dense LeNet-5 from {}", path.display());
        }
        None => train_dense_lenet5(
            &mut dense,
            &data.train,
            &data.test,
            args.dense_epochs,
            args.seed,
            &mut |e| print_dense("dense", args.dense_epochs, e),
        )?,
    }
    if let Some(path) = &args.save_dense {
        dense.save(path)?;
        println!("saved dense LeNet-5 to {}", path.display());
    }
    let dense_acc = evaluate(&mut dense, &data.test, 1000)?;
    let model = SystolicArray::new(dense.architecture(), SystolicConfig::default())?;
    let dense_report = model.energy(&NetworkState::from_network(&dense)?)?;
    let e_dense = dense_report.total;
    let budget = args.budget * e_dense;
    println!(
        "\ndense: test accuracy {:.2} %, energy {:.6e}; budget {:.3} of dense = {:.6e} (all-zero floor {:.4} of dense)\n",
        100.0 * dense_acc,
        e_dense,
        args.budget,
        budget,
        model.dense_floor() / e_dense
    );
    let cfg = ProjectedTraining {
        epochs: args.epochs,
        finetune_epochs: args.finetune_epochs,
        project_every: args.project_every,
        lr: args.lr,
        seed: args.seed,
        regrow: args.regrow,
        input_masks: args.input_mask.then(|| MaskRounds {
            rounds: args.mask_rounds,
            lr: args.mask_lr,
            ..MaskRounds::default()
        }),
        distill_weight: (args.distill > 0.0).then_some(args.distill),
        ..ProjectedTraining::default()
    };
    let mut progress = Progress {
        reference: e_dense,
        unit: "of dense",
    };
    // Input-mask rounds decide on a validation hold-out (the last 5 000 training images).
    let (train_part, validation) = data.train.split(data.train.len() - 5_000);
    let mut constrained = dense.clone();
    let data_c = if args.input_mask {
        for l in 0..3 {
            constrained.enable_input_mask(l)?; // conv1, conv2, fc1: the costly inputs
        }
        Data {
            train: &train_part,
            validation: Some(&validation),
            test: Some(&data.test),
        }
    } else {
        Data {
            train: &data.train,
            validation: None,
            test: Some(&data.test),
        }
    };
    let ec = train_projected(
        &mut constrained,
        &model,
        budget,
        data_c,
        &cfg,
        &mut progress,
    )?;
    let ec_energy = model.energy(&NetworkState::from_network(&constrained)?)?;
    println!("energy-constrained: {}\n", ec.termination);
    if args.skip_baseline {
        println!(
            "constrained: {:.2} % at {:.4} of dense",
            100.0 * ec.test_accuracy.unwrap_or(0.0),
            ec_energy.total / e_dense
        );
        return common::require_budget_met(
            "the energy-constrained network",
            ec_energy.total <= budget,
            ec_energy.total,
            budget,
        );
    }
    let mut magnitude = dense.clone();
    let data_m = Data {
        train: &data.train,
        validation: None,
        test: Some(&data.test),
    };
    // Magnitude pruning cannot mask inputs: below the all-zero energy it has no answer.
    let em = match train_magnitude(&mut magnitude, &model, budget, data_m, &cfg, &mut progress) {
        Ok(r) => Some((r, model.energy(&NetworkState::from_network(&magnitude)?)?)),
        Err(Error::InfeasibleBudget { min_achievable, .. }) => {
            println!(
                "magnitude baseline: infeasible, its smallest energy is {:.4} of dense",
                min_achievable / e_dense
            );
            None
        }
        Err(e) => return Err(e),
    };

    let ec = (ec, ec_energy);
    print_table(
        dense_acc,
        &dense_report,
        &ec,
        em.as_ref(),
        e_dense,
        args.budget,
    );
    println!("\nwhole run: {:.1} s", start.elapsed().as_secs_f64());
    if args.json {
        let r = |(p, energy): &(TrainingReport, EnergyReport)| {
            serde_json::json!({
                "test_accuracy": p.test_accuracy.unwrap_or(f64::NAN),
                "energy": energy.total,
                "energy_ratio": energy.total / e_dense,
                "budget_met": energy.total <= budget,
                "layers": layers_json(energy),
            })
        };
        let out = serde_json::json!({
            "budget": args.budget,
            "dense": {"test_accuracy": dense_acc, "energy": e_dense, "layers": layers_json(&dense_report)},
            "constrained": r(&ec),
            "magnitude": em.as_ref().map_or(serde_json::json!({"infeasible": true}), r),
            "seconds": start.elapsed().as_secs_f64(),
        });
        println!("{out}");
    }
    common::require_budget_met(
        "the energy-constrained network",
        ec.1.total <= budget,
        ec.1.total,
        budget,
    )
}

fn print_table(
    dense_acc: f64,
    dense: &EnergyReport,
    ec: &(TrainingReport, EnergyReport),
    em: Option<&(TrainingReport, EnergyReport)>,
    e_dense: f64,
    budget: f64,
) {
    println!("\nResults at budget {budget} of the dense energy (exact energy, systolic model):\n");
    let names: Vec<&str> = dense.layers.iter().map(|l| l.name.as_str()).collect();
    print!("| network | test accuracy | energy | ratio to dense | budget met |");
    for n in &names {
        print!(" nonzero {n} |");
    }
    println!();
    println!("|---|---|---|---|---|{}", "---|".repeat(names.len()));
    let row = |name: &str, acc: f64, r: &EnergyReport, met: &str| {
        print!(
            "| {name} | {:.2} % | {:.4e} | {:.4} | {met} |",
            100.0 * acc,
            r.total,
            r.total / e_dense
        );
        for l in &r.layers {
            print!(" {} |", l.nonzero);
        }
        println!();
    };
    row("dense", dense_acc, dense, "-");
    let yes = |b: bool| if b { "yes" } else { "NO" };
    row(
        "energy-constrained",
        ec.0.test_accuracy.unwrap_or(f64::NAN),
        &ec.1,
        yes(ec.0.budget_met()),
    );
    match em {
        Some((em, energy)) => row(
            "magnitude baseline",
            em.test_accuracy.unwrap_or(f64::NAN),
            energy,
            yes(em.budget_met()),
        ),
        None => println!("| magnitude baseline | infeasible (below its all-zero energy) | | | |"),
    }
}
