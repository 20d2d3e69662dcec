//! Per-layer energy of dense networks on the analytic systolic-array model.
//!
//! ```text
//! cargo run --release --example energy_report -- [--net lenet5|alexnet|squeezenet|mobilenet|vgg16|resnet18|all]
//!     [--onnx FILE [--input CxHxW]]
//!     [--array 12x14] [--input-buffer N] [--weight-buffer N]
//!     [--e-mac X] [--e-dram X] [--e-buf X] [--e-rf X] [--json]
//! ```
//! Without `--net` every zoo network is reported. `--onnx FILE` reports a model
//! exported from PyTorch (or any supported ONNX file) with its own weights: zeros
//! count as pruned. `--input` gives the sample size when the file's input is
//! symbolic. With `--json` the last line of stdout is one JSON object (for
//! `--net all`: `{"networks": [...]}`).

mod common;

use energy_prune::arch::{Architecture, zoo};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkState};
use std::path::PathBuf;

struct Args {
    net: String,
    onnx: Option<PathBuf>,
    input: Option<[usize; 3]>,
    cfg: SystolicConfig,
    json: bool,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        net: "all".into(),
        onnx: None,
        input: None,
        cfg: SystolicConfig::default(),
        json: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("net") => a.net = p.value()?.parse()?,
            Long("onnx") => a.onnx = Some(p.value()?.into()),
            Long("input") => a.input = Some(common::parse_chw(&p.value()?.string()?)?),
            Long("array") => {
                let v: String = p.value()?.parse()?;
                let (m, n) = v
                    .split_once('x')
                    .ok_or("--array takes ROWSxCOLS, e.g. 12x14")?;
                let bad = |_| {
                    lexopt::Error::from("--array takes ROWSxCOLS with whole numbers, e.g. 12x14")
                };
                a.cfg.rows = m.parse().map_err(bad)?;
                a.cfg.cols = n.parse().map_err(bad)?;
            }
            Long("input-buffer") => a.cfg.input_buffer = p.value()?.parse()?,
            Long("weight-buffer") => a.cfg.weight_buffer = p.value()?.parse()?,
            Long("e-mac") => a.cfg.e_mac = p.value()?.parse()?,
            Long("e-dram") => a.cfg.e_dram = p.value()?.parse()?,
            Long("e-buf") => a.cfg.e_buf = p.value()?.parse()?,
            Long("e-rf") => a.cfg.e_rf = p.value()?.parse()?,
            Long("json") => a.json = true,
            Long("help") | Short('h') => {
                println!(
                    "energy_report [--net NAME|all] [--onnx FILE [--input CxHxW]] [--array MxN] [--input-buffer N] [--weight-buffer N] [--e-mac X] [--e-dram X] [--e-buf X] [--e-rf X] [--json]\nnetworks: {:?}",
                    zoo::NAMES
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if let Some(path) = &a.onnx {
        common::check::readable("--onnx", path)?;
    } else if a.input.is_some() {
        return Err("--input applies to --onnx models only".into());
    }
    Ok(a)
}

fn main() {
    common::run_main(parse_args, run);
}

/// Energy of `state` (the dense network, or a model's own weights) on `arch`.
fn report(
    arch: &Architecture,
    state: &NetworkState,
    cfg: SystolicConfig,
) -> energy_prune::Result<serde_json::Value> {
    let model = SystolicArray::new(arch, cfg)?;
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
    let layers: Vec<serde_json::Value> = exact
        .layers
        .iter()
        .zip(&relaxed.layers)
        .map(|(l, r)| {
            serde_json::json!({
                "name": l.name, "kind": l.kind.as_str(), "weights": l.weights, "nonzero": l.nonzero,
                "macs": l.macs, "compute": l.compute, "weight_access": l.weight_access,
                "input_access": l.input_access, "total": l.total, "relaxed_total": r.total,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "network": arch.name(),
        "layers": layers,
        "total": exact.total,
        "relaxed_total": relaxed.total,
        "floor": model.dense_floor(),
    }))
}

fn run(args: &Args) -> energy_prune::Result<()> {
    args.cfg.validate()?;
    println!(
        "systolic array {}x{}, input buffer {}, weight buffer {}, e_mac {}, e_dram {}, e_buf {}, e_rf {}",
        args.cfg.rows,
        args.cfg.cols,
        args.cfg.input_buffer,
        args.cfg.weight_buffer,
        args.cfg.e_mac,
        args.cfg.e_dram,
        args.cfg.e_buf,
        args.cfg.e_rf
    );
    let mut out = Vec::new();
    if let Some(path) = &args.onnx {
        let model = energy_prune::onnx::OnnxModel::load(path, args.input)?;
        let [c, h, w] = model.input_shape();
        println!(
            "{}: input {c}x{h}x{w}, {} outputs",
            path.display(),
            model.output_len()
        );
        let state = NetworkState::from_network(&model)?;
        out.push(report(model.architecture(), &state, args.cfg)?);
    } else {
        let names: Vec<&str> = if args.net == "all" {
            zoo::NAMES.to_vec()
        } else {
            vec![args.net.as_str()]
        };
        for name in names {
            let arch = zoo::by_name(name)?;
            out.push(report(&arch, &NetworkState::dense(&arch), args.cfg)?);
        }
    }
    if args.json {
        let value = if out.len() == 1 {
            out.remove(0)
        } else {
            serde_json::json!({ "networks": out })
        };
        println!("{value}");
    }
    Ok(())
}
