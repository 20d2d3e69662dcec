//! Per-layer energy of dense networks on the analytic systolic-array model.
//!
//! ```text
//! energy-prune report [--net lenet5|alexnet|squeezenet|mobilenet|vgg16|resnet18|all]
//!     [--onnx FILE [--input CxHxW]]
//!     [--array 12x14] [--input-buffer N] [--weight-buffer N]
//!     [--e-mac X] [--e-dram X] [--e-buf X] [--e-rf X] [--json]
//! ```
//! Without `--net` every zoo network is reported. `--onnx FILE` reports a model
//! exported from PyTorch (or any supported ONNX file) with its own weights: zeros
//! count as pruned; a quantized (QDQ) file is priced at the precision its
//! `QuantizeLinear`/`DequantizeLinear` nodes give each layer, beside its energy at
//! the 16-bit reference. `--input` gives the sample size when the file's input is
//! symbolic. With `--json` the last line of stdout is one JSON object (for
//! `--net all`: `{"networks": [...]}`).

use energy_prune::arch::{Architecture, zoo};
use energy_prune::energy::precision::LayerPrecision;
use energy_prune::energy::systolic::{COMPUTE, INPUT_MOVEMENT, WEIGHT_MOVEMENT};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkState};
use std::path::PathBuf;

use crate::args::Usage;
use crate::common::check;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network of the zoo (lenet5, alexnet, squeezenet, mobilenet, vgg16, resnet18) or all.
    #[arg(long, default_value = "all")]
    pub net: String,
    /// Report this ONNX model (its own weights; zeros count as pruned) instead of a zoo network.
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// Input shape CxHxW when the ONNX file's input is symbolic, e.g. 3x224x224.
    #[arg(long, value_parser = crate::args::chw)]
    pub input: Option<[usize; 3]>,
    #[command(flatten)]
    pub hw: crate::args::Hardware,
    #[command(flatten)]
    pub print: crate::args::Json,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        self.hw.config()?;
        if let Some(path) = &self.onnx {
            check::readable("--onnx", path)?;
        } else if self.input.is_some() {
            return Err("--input applies to --onnx models only".into());
        } else if self.net != "all" && !zoo::NAMES.contains(&self.net.as_str()) {
            return Err(format!(
                "--net {}: expected all or one of {:?}",
                self.net,
                zoo::NAMES
            )
            .into());
        }
        Ok(())
    }
}

/// Energy of `state` (the dense network, or a model's own weights) on `arch`, at
/// `precision` when the model is quantized.
fn report(
    arch: &Architecture,
    state: &NetworkState,
    cfg: SystolicConfig,
    precision: Option<&[LayerPrecision]>,
) -> energy_prune::Result<serde_json::Value> {
    let model = match precision {
        Some(p) => SystolicArray::with_precision(arch, cfg, p)?,
        None => SystolicArray::new(arch, cfg)?,
    };
    let exact = model.energy(state)?;
    let relaxed = model.relaxed_energy(&state.nonzeros(), model.dense_input_energy())?;
    println!(
        "\n== {} ({} prunable layers, {} weights, {:.1} M MACs)\n",
        arch.name(),
        arch.layers().len(),
        arch.weight_count(),
        arch.macs() as f64 / 1e6
    );
    println!("{exact}");
    println!(
        "\nexact total {:.6e}   relaxed total {:.6e}   all-zero floor {:.6e} = {:.2} % of dense",
        exact.total,
        relaxed.total,
        model.dense_floor(),
        100.0 * model.dense_floor() / exact.total
    );
    let mut reference_total = None;
    if let Some(p) = precision {
        let names: Vec<String> = arch
            .layers()
            .iter()
            .zip(p)
            .map(|(l, p)| format!("{} {p}", l.name))
            .collect();
        println!("precision (weights/activations): {}", names.join(", "));
        let reference = SystolicArray::new(arch, cfg)?.energy(state)?.total;
        println!(
            "at the 16-bit reference precision: {reference:.6e} (quantized = {:.2} % of it)",
            100.0 * exact.total / reference
        );
        reference_total = Some(reference);
    }
    let layers: Vec<serde_json::Value> = exact
        .layers
        .iter()
        .zip(&relaxed.layers)
        .enumerate()
        .map(|(i, (l, r))| {
            serde_json::json!({
                "name": l.name, "kind": l.kind.as_str(), "weights": l.weights, "nonzero": l.nonzero,
                "macs": l.macs, "compute": l.part(COMPUTE), "weight_access": l.part(WEIGHT_MOVEMENT),
                "input_access": l.part(INPUT_MOVEMENT), "total": l.total, "relaxed_total": r.total,
                "precision": precision.map(|p| p[i].to_string()),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "network": arch.name(),
        "layers": layers,
        "total": exact.total,
        "relaxed_total": relaxed.total,
        "floor": model.dense_floor(),
        "reference_total": reference_total,
    }))
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    let cfg = args.hw.raw();
    println!(
        "systolic array {}x{}, input buffer {}, weight buffer {}, e_mac {}, e_dram {}, e_buf {}, e_rf {}",
        cfg.rows,
        cfg.cols,
        cfg.input_buffer,
        cfg.weight_buffer,
        cfg.e_mac,
        cfg.e_dram,
        cfg.e_buf,
        cfg.e_rf
    );
    let mut out = Vec::new();
    if let Some(path) = &args.onnx {
        let mut model = energy_prune_onnx::OnnxModel::load(path, args.input)?;
        if let Some(note) = model.untied_note() {
            println!("note: {note}");
        }
        let [c, h, w] = model.input_shape();
        println!(
            "{}: input {c}x{h}x{w}, {} outputs",
            path.display(),
            model.output_len()
        );
        // The weights move out of the model (no copy: large models).
        let state = model.take_state();
        let precision = model.is_quantized().then(|| model.precision());
        out.push(report(model.architecture(), &state, cfg, precision)?);
    } else {
        let names: Vec<&str> = if args.net == "all" {
            zoo::NAMES.to_vec()
        } else {
            vec![args.net.as_str()]
        };
        for name in names {
            let arch = zoo::by_name(name)?;
            out.push(report(&arch, &NetworkState::dense(&arch), cfg, None)?);
        }
    }
    if args.print.json {
        let value = if out.len() == 1 {
            out.remove(0)
        } else {
            serde_json::json!({ "networks": out })
        };
        println!("{value}");
    }
    Ok(())
}
