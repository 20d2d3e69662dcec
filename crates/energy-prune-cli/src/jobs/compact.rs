//! Apply a saved pruning plan to an ONNX model: the channels the plan drops are
//! removed from every layer that reads or writes them (and from normalisation
//! nodes that follow them), so the written model is physically smaller.
//!
//! ```text
//! energy-prune compact IN.onnx PLAN.json OUT.onnx [--input CxHxW] [--external-data] [--json]
//! ```
//! `--external-data` writes the weights into the side file `OUT.onnx.data` (ONNX
//! external data); a model read from external data is written so without it.
//! The plan must have been made for the same architecture (`energy-prune prune
//! --plan` writes one); its fingerprint is checked. With `--json` the last line is
//! `{"weights_before", "weights_after", "widths": [...]}`.

use std::path::PathBuf;

use energy_prune::network::{Network, PruningPlan};
use energy_prune_onnx::OnnxModel;

use crate::args::Usage;
use crate::common::check;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// ONNX model to read.
    #[arg(value_name = "IN.onnx")]
    pub input_file: PathBuf,
    /// Pruning plan (JSON) made for this model.
    #[arg(value_name = "PLAN.json")]
    pub plan: PathBuf,
    /// Compacted ONNX model to write (never one of the inputs).
    #[arg(value_name = "OUT.onnx")]
    pub output_file: PathBuf,
    /// Input shape CxHxW when the file's input is symbolic, e.g. 3x224x224.
    #[arg(long, value_parser = crate::args::chw)]
    pub input: Option<[usize; 3]>,
    /// Write the tensors of 1 KiB and more into the side file OUT.onnx.data
    /// (ONNX external data; implied when the input has external data).
    #[arg(long)]
    pub external_data: bool,
    #[command(flatten)]
    pub print: crate::args::Json,
}

impl Args {
    /// Checks of files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        check::readable("IN.onnx", &self.input_file)?;
        check::readable("PLAN.json", &self.plan)?;
        check::writable("OUT.onnx", &self.output_file)?;
        check::outputs_apart(
            &[("OUT.onnx", &self.output_file)],
            &[&self.input_file, &self.plan],
        )
    }
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    let model = OnnxModel::load(&args.input_file, args.input)?;
    crate::common::refuse_side_files(
        &[("OUT.onnx", args.output_file.as_path())],
        model.external_files(),
    )?;
    let plan = PruningPlan::load_json(&args.plan)?;
    plan.check(model.architecture())?;
    let small = model.compact(&plan)?;
    crate::common::save_onnx(
        &small,
        &args.output_file,
        args.external_data,
        model.external_files(),
    )?;
    let before = model.architecture().weight_count();
    let after = small.architecture().weight_count();
    println!(
        "{} -> {}: {before} -> {after} weights ({:.1} %), widths {:?}",
        args.input_file.display(),
        args.output_file.display(),
        100.0 * after as f64 / before.max(1) as f64,
        plan.widths()
    );
    if args.print.json {
        println!(
            "{}",
            serde_json::json!({
                "weights_before": before,
                "weights_after": after,
                "widths": plan.widths(),
            })
        );
    }
    Ok(())
}
