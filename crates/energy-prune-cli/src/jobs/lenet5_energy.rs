//! The main job: compress LeNet-5 on MNIST to an energy budget on the analytic
//! systolic-array model, and compare with magnitude pruning at the same energy.
//!
//! ```text
//! energy-prune lab lenet5 [--budget 0.2] [--epochs N]
//!     [--finetune-epochs N] [--dense FILE] [--save-dense FILE] [--dense-epochs N]
//!     [--project-every N] [--lr X] [--seed N] [--data DIR] [--json]
//! ```
//! `--budget` is a fraction of the dense network's exact energy. With `--json` the
//! last line of stdout is one JSON object with the results.

use energy_prune::prune::{Budget, MagnitudeRule};
use std::path::PathBuf;
use std::time::Instant;

use crate::common::check;
use energy_prune::Error;
use energy_prune::energy::{EnergyReport, SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkState};
use energy_prune::prune::{
    Data, MaskRounds, ProjectedTraining, TrainingReport, train_magnitude, train_projected,
};
use energy_prune::train::evaluate;
use energy_prune_nn::Cnn;
use energy_prune_nn::mnist::{Mnist, MnistOptions};
use energy_prune_nn::workflow::{Progress, held_out, print_dense, train_dense_lenet5};

use crate::args::Usage;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Budget as a fraction of the dense network's cost, in (0, 1].
    #[arg(long, default_value_t = 0.2)]
    pub budget: f64,
    /// Epochs of constrained training.
    #[arg(long, default_value_t = ProjectedTraining::default().epochs)]
    pub epochs: usize,
    /// Epochs of fine-tuning with the support frozen.
    #[arg(long, default_value_t = ProjectedTraining::default().finetune_epochs)]
    pub finetune_epochs: usize,
    /// Load the dense network from this file instead of training it.
    #[arg(long)]
    pub dense: Option<PathBuf>,
    /// Save the trained dense network to this file.
    #[arg(long)]
    pub save_dense: Option<PathBuf>,
    /// Epochs of dense training.
    #[arg(long, default_value_t = 12)]
    pub dense_epochs: usize,
    /// Project onto the budget every N weight updates.
    #[arg(long, default_value_t = ProjectedTraining::default().project_every)]
    pub project_every: usize,
    /// Learning rate.
    #[arg(long, default_value_t = ProjectedTraining::default().lr)]
    pub lr: f32,
    #[command(flatten)]
    pub rng: crate::args::Seed,
    #[command(flatten)]
    pub mnist: crate::args::MnistDir,
    #[command(flatten)]
    pub print: crate::args::Json,
    /// Let pruned weights grow back between projections.
    #[arg(long)]
    pub regrow: bool,
    /// Weight of the distillation loss from the dense teacher, in [0, 1].
    #[arg(long, default_value_t = 0.2)]
    pub distill: f32,
    /// Skip the magnitude-pruning baseline.
    #[arg(long)]
    pub skip_baseline: bool,
    /// Learn layer input masks (rounds after the weight projection).
    #[arg(long)]
    pub input_mask: bool,
    /// Rounds of input-mask training.
    #[arg(long, default_value_t = MaskRounds::default().rounds)]
    pub mask_rounds: usize,
    /// Learning rate of the input masks.
    #[arg(long, default_value_t = MaskRounds::default().lr)]
    pub mask_lr: f32,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        let a = self;
        check::fraction("--budget", a.budget)?;
        check::positive("--lr", f64::from(a.lr))?;
        check::positive("--mask-lr", f64::from(a.mask_lr))?;
        check::within("--distill", f64::from(a.distill), 0.0, 1.0)?;
        check::at_least_one("--project-every", a.project_every)?;
        check::at_least_one("--epochs", a.epochs)?;
        check::count("--dense-epochs", a.dense_epochs, 0)?;
        check::count("--finetune-epochs", a.finetune_epochs, 0)?;
        check::count("--mask-rounds", a.mask_rounds, 0)?;
        if a.input_mask {
            check::at_least_one("--mask-rounds", a.mask_rounds)?;
        }
        check::mnist_dir("--data", &a.mnist.data)?;
        if let Some(p) = &a.dense {
            check::readable("--dense", p)?;
        }
        if let Some(p) = &a.save_dense {
            check::writable("--save-dense", p)?;
            let mut inputs = check::mnist_files(&a.mnist.data);
            inputs.extend(a.dense.iter().cloned());
            let inputs: Vec<&std::path::Path> = inputs.iter().map(|p| p.as_path()).collect();
            check::outputs_apart(&[("--save-dense", p)], &inputs)?;
        }
        Ok(())
    }
}

fn layers_json(r: &EnergyReport) -> serde_json::Value {
    r.layers
        .iter()
        .map(|l| serde_json::json!({"name": l.name, "nonzero": l.nonzero, "total": l.total}))
        .collect()
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    let start = Instant::now();
    let data = Mnist::load(&args.mnist.data, MnistOptions::default())?;
    let mut dense = Cnn::lenet5(args.rng.seed)?;
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
            args.rng.seed,
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
        seed: args.rng.seed,
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
    // Input-mask rounds decide on a validation hold-out sized to the data set.
    let (train_part, validation) = data
        .train
        .split(data.train.len() - held_out(data.train.len()));
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
        vec![Budget::absolute("energy", &model, budget)],
        data_c,
        &cfg,
        &mut progress,
    )?
    .converged("the energy-constrained network")?;
    let ec_energy = model.energy(&NetworkState::from_network(&constrained)?)?;
    println!("energy-constrained: {}\n", ec.termination);
    if args.skip_baseline {
        println!(
            "constrained: {:.2} % at {:.4} of dense",
            100.0 * ec.test_accuracy.unwrap_or(0.0),
            ec_energy.total / e_dense
        );
        return energy_prune_nn::workflow::require_budget_met(
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
    let em = match train_magnitude(
        &mut magnitude,
        vec![Budget::absolute("energy", &model, budget)],
        MagnitudeRule::Global,
        data_m,
        &cfg,
        &mut progress,
    ) {
        Ok(r) => Some((
            r.converged("the magnitude-pruned network")?,
            model.energy(&NetworkState::from_network(&magnitude)?)?,
        )),
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
    if args.print.json {
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
    energy_prune_nn::workflow::require_budget_met(
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
