//! Project an ONNX model's weights onto a fraction of its dense energy on the
//! systolic-array model, one shot (no training: retrain in your framework), and
//! write the pruned model.
//!
//! ```text
//! energy-prune prune --budget 0.5 IN.onnx OUT.onnx
//!     [--input CxHxW] [--compact] [--plan PLAN.json] [--external-data] [--json]
//! ```
//! `--external-data` writes the weights into the side file `OUT.onnx.data` (ONNX
//! external data, the form of models above 2 GiB); a model read from external
//! data is written so without it.
//! `--compact` also removes every channel left without weights (the file then
//! holds a physically smaller model); `--plan` saves the pruning plan with its
//! provenance. The output file is re-imported and its energy checked against the
//! projected one. With `--json` the last line is
//! `{"budget", "dense_energy", "energy", "energy_ratio", "reimported_energy", "layers": [...]}`.

use energy_prune::prune::Budget;
use std::path::PathBuf;

use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{CostModelRecord, Network, Provenance, PruningPlan};
use energy_prune::prune::project;
use energy_prune_onnx::OnnxModel;

use crate::args::Usage;
use crate::common::check;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// ONNX model to read.
    #[arg(value_name = "IN.onnx")]
    pub input_file: PathBuf,
    /// ONNX model to write (never one of the inputs).
    #[arg(value_name = "OUT.onnx")]
    pub output_file: PathBuf,
    /// Budget as a fraction of the dense model's energy, in (0, 1].
    #[arg(long)]
    pub budget: f64,
    /// Input shape CxHxW for models without a fixed one, e.g. 3x224x224.
    #[arg(long, value_parser = crate::args::chw)]
    pub input: Option<[usize; 3]>,
    /// Also remove every channel left without weights (a physically smaller model).
    #[arg(long)]
    pub compact: bool,
    /// Write the pruning plan (JSON, with provenance) to this file.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Write the tensors of 1 KiB and more into the side file OUT.onnx.data
    /// (ONNX external data; implied when the input has external data).
    #[arg(long)]
    pub external_data: bool,
    #[command(flatten)]
    pub print: crate::args::Json,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        check::fraction("--budget", self.budget)?;
        check::readable("IN.onnx", &self.input_file)?;
        check::writable("OUT.onnx", &self.output_file)?;
        let mut outputs = vec![("OUT.onnx", self.output_file.as_path())];
        if let Some(plan) = &self.plan {
            check::writable("--plan", plan)?;
            outputs.push(("--plan", plan.as_path()));
        }
        check::outputs_apart(&outputs, &[&self.input_file])
    }
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    let mut model = OnnxModel::load(&args.input_file, args.input)?;
    let side_files = model.external_files().to_vec();
    let mut outputs = vec![("OUT.onnx", args.output_file.as_path())];
    if let Some(plan) = &args.plan {
        outputs.push(("--plan", plan.as_path()));
    }
    crate::common::refuse_side_files(&outputs, &side_files)?;
    if let Some(note) = model.untied_note() {
        println!("note: {note}");
    }
    let arch = model.architecture().clone();
    let hw = SystolicArray::new(&arch, SystolicConfig::default())?;
    let dense = hw.dense_energy()?;
    // The weights move out of the model for the projection and back (no copy).
    let mut state = model.take_state();
    let before = hw.energy(&state)?;
    let budget = args.budget * dense.total;
    println!(
        "{}: {} prunable layers, {} weights; dense energy {:.4e}, as loaded {:.4e}, budget {:.4e} ({})",
        args.input_file.display(),
        arch.layers().len(),
        arch.weight_count(),
        dense.total,
        before.total,
        budget,
        args.budget
    );
    let outcome = project(&mut state, &[Budget::absolute("energy", &hw, budget)])?;
    let after = hw.energy(&state)?;
    model.put_state(state)?;
    println!(
        "\n{:<32} {:>11} {:>11} {:>11} {:>12} {:>12}",
        "layer", "weights", "nonzero", "kept", "E before", "E after"
    );
    let mut layers = Vec::new();
    for (b, a) in before.layers.iter().zip(&after.layers) {
        println!(
            "{:<32} {:>11} {:>11} {:>11} {:>12.4e} {:>12.4e}",
            b.name, b.weights, b.nonzero, a.nonzero, b.total, a.total
        );
        layers.push(serde_json::json!({
            "name": b.name, "weights": b.weights, "nonzero_before": b.nonzero,
            "nonzero": a.nonzero, "energy_before": b.total, "energy": a.total,
        }));
    }
    println!(
        "\nkept {} of {} weights; energy {:.4e} = {:.4} of dense (budget {})",
        outcome.kept,
        outcome.nonzero_before,
        after.total,
        after.total / dense.total,
        args.budget
    );
    energy_prune_nn::workflow::require_budget_met(
        "projected energy",
        after.total <= budget * (1.0 + 1e-9),
        after.total / dense.total,
        args.budget,
    )?;

    let plan = PruningPlan::from_network(&model)?.with_provenance(Provenance {
        cost_model: Some(CostModelRecord {
            kind: "systolic".into(),
            parameters: serde_json::to_string(&SystolicConfig::default())
                .map_err(|e| energy_prune::Error::serialization("the systolic config", e))?,
        }),
        budget: Some(args.budget),
        budget_unit: Some("fraction of dense energy".into()),
        predicted_cost: Some(after.total / dense.total),
        ..Provenance::this_version()
    });
    let written = if args.compact {
        let compact = model.compact(&plan)?;
        let removed: usize = plan
            .widths()
            .iter()
            .zip(arch.widths())
            .map(|(k, w)| w.channels - k)
            .sum();
        println!("compacted: {removed} channels without weights removed");
        compact
    } else {
        model
    };
    // On models small enough for the reference interpreter, the outputs of one
    // sample are compared after re-import too, not only the energy.
    let probe: Option<(Vec<f32>, Vec<f32>)> = if written.architecture().macs() < 50_000_000 {
        let n: usize = written.input_shape().iter().product();
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
        let y = written.run(&x, 1)?;
        Some((x, y))
    } else {
        None
    };
    crate::common::save_onnx(&written, &args.output_file, args.external_data, &side_files)?;
    drop(written);
    if let Some(path) = &args.plan {
        plan.save_json(path)?;
        println!("plan written to {}", path.display());
    }
    // Read the file back: the energy a user will see when they load it.
    let mut back = OnnxModel::load(&args.output_file, args.input)?;
    let back_hw = SystolicArray::new(back.architecture(), SystolicConfig::default())?;
    // Priced on the model's own weights (moved out and back: no copy).
    let back_state = back.take_state();
    let reimported = back_hw.energy(&back_state)?.total;
    back.put_state(back_state)?;
    let back_arch = back.architecture();
    let outputs_checked = match &probe {
        Some((x, y)) => {
            if back.run(x, 1)? != *y {
                return Err(energy_prune::Error::CorruptData {
                    path: args.output_file.clone(),
                    reason: "the written model computes other outputs than the pruned model \
                             in memory after re-import; please report this with the input file"
                        .into(),
                });
            }
            true
        }
        None => false,
    };
    println!(
        "wrote {} ({} layers, {} weights); re-imported energy {:.4e} = {:.4} of dense{}",
        args.output_file.display(),
        back_arch.layers().len(),
        back_arch.weight_count(),
        reimported,
        reimported / dense.total,
        match (reimported == after.total, outputs_checked) {
            (true, true) => " (same energy, same outputs on a probe input)",
            (true, false) => " (same energy)",
            _ => "",
        }
    );
    if args.print.json {
        println!(
            "{}",
            serde_json::json!({
                "budget": args.budget,
                "dense_energy": dense.total,
                "energy": after.total,
                "energy_ratio": after.total / dense.total,
                "reimported_energy": reimported,
                "compact": args.compact,
                "layers": layers,
            })
        );
    }
    Ok(())
}
