#![warn(missing_docs)]
//! `energy-prune`: compress neural networks to an energy budget from the command
//! line.
//!
//! ```text
//! energy-prune report --net lenet5            # per-layer energy of a zoo network
//! energy-prune report --onnx model.onnx       # ... or of an ONNX file
//! energy-prune prune model.onnx small.onnx --budget 0.3 --compact --plan plan.json
//! energy-prune compact model.onnx plan.json small.onnx
//! energy-prune plan show plan.json
//! energy-prune calibrate --net lenet5 --out model.json
//! energy-prune lab lenet5 --input-mask        # the papers' experiments on MNIST
//! ```
//! Every command checks its flags and files before any work: a usage error exits
//! with code 2, a failed run with code 1. `--json` makes the last line of standard
//! output one JSON object with the results.

mod args;
mod common;
mod jobs;
mod plot;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Energy-constrained compression of deep neural networks.
#[derive(Parser, Debug)]
#[command(name = "energy-prune", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Per-layer energy of a zoo network or an ONNX model on the systolic-array model.
    Report(jobs::energy_report::Args),
    /// Prune an ONNX model to an energy budget (ONNX in, ONNX out, plan with provenance).
    Prune(jobs::prune_onnx::Args),
    /// Apply a saved pruning plan to an ONNX model: the pruned channels removed.
    Compact(jobs::compact::Args),
    /// Pruning plans: show what a plan keeps and where it came from.
    Plan {
        #[command(subcommand)]
        command: jobs::plan::Command,
    },
    /// Fit latency models (bilinear and layer table) of a zoo network on this CPU.
    Calibrate(jobs::calibrate::Args),
    /// The papers' experiments on MNIST with the reference CNN.
    Lab {
        #[command(subcommand)]
        job: Lab,
    },
}

#[derive(Subcommand, Debug)]
enum Lab {
    /// LeNet-5 at an energy budget by projected training (ICLR 2019), against magnitude pruning.
    Lenet5(jobs::lenet5_energy::Args),
    /// Accuracy against energy over a range of budgets and methods, with CSV, JSON and SVG.
    Sweep(jobs::sweep::Args),
    /// Pruning and quantization under one energy budget: 16-bit pruning, uniform int8, joint bits.
    Quantize(jobs::quantize::Args),
    /// ECC (CVPR 2019): calibrated latency model, ADMM channel pruning, compaction, measured latency.
    Ecc(jobs::ecc_latency::Args),
    /// Several budgets at once (energy, parameters, latency) on one network.
    MultiBudget(jobs::multi_budget::Args),
    /// The sharded projection protocol on weights spread over files, against the in-memory result.
    Sharded(jobs::project_sharded::Args),
    /// Train a dense LeNet-5 on MNIST and save it.
    TrainLenet5(jobs::train_lenet5::Args),
}

/// Check the flags, then run; a usage error exits with 2, a failed run with 1.
fn dispatch<A>(
    mut args: A,
    check: fn(&mut A) -> Result<(), args::Usage>,
    run: fn(&A) -> energy_prune::Result<()>,
) -> std::process::ExitCode {
    if let Err(e) = check(&mut args) {
        eprintln!("error: {e} (see --help)");
        return std::process::ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Negative values reach the checks (`--budget -1` is out of range, not an
/// unknown flag) in every command.
fn allow_negative_numbers(cmd: clap::Command) -> clap::Command {
    cmd.allow_negative_numbers(true)
        .mut_subcommands(allow_negative_numbers)
}

fn main() -> std::process::ExitCode {
    use jobs::*;
    let matches = allow_negative_numbers(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Report(a) => dispatch(a, energy_report::Args::check, energy_report::run),
        Command::Prune(a) => dispatch(a, prune_onnx::Args::check, prune_onnx::run),
        Command::Compact(a) => dispatch(a, compact::Args::check, compact::run),
        Command::Plan { command } => match command {
            plan::Command::Show(a) => dispatch(a, plan::Show::check, plan::show),
        },
        Command::Calibrate(a) => dispatch(a, calibrate::Args::check, calibrate::run),
        Command::Lab { job } => match job {
            Lab::Lenet5(a) => dispatch(a, lenet5_energy::Args::check, lenet5_energy::run),
            Lab::Sweep(a) => dispatch(a, sweep::Args::check, sweep::run),
            Lab::Quantize(a) => dispatch(a, quantize::Args::check, quantize::run),
            Lab::Ecc(a) => dispatch(a, ecc_latency::Args::check, ecc_latency::run),
            Lab::MultiBudget(a) => dispatch(a, multi_budget::Args::check, multi_budget::run),
            Lab::Sharded(a) => dispatch(a, project_sharded::Args::check, project_sharded::run),
            Lab::TrainLenet5(a) => dispatch(a, train_lenet5::Args::check, train_lenet5::run),
        },
    }
}
