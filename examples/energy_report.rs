//! Per-layer energy of dense networks on the analytic systolic-array model.
//!
//! ```text
//! cargo run --release --example energy_report -- [--net lenet5|alexnet|squeezenet|mobilenet|vgg16|resnet18|all]
//!     [--array 12x14] [--input-buffer N] [--weight-buffer N]
//!     [--e-mac X] [--e-dram X] [--e-buf X] [--e-rf X] [--json]
//! ```
//! Without `--net` every zoo network is reported. With `--json` the last line of
//! stdout is one JSON object (for `--net all`: `{"networks": [...]}`).

mod common;

use energy_prune::arch::{Architecture, zoo};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::NetworkState;

struct Args {
    net: String,
    cfg: SystolicConfig,
    json: bool,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        net: "all".into(),
        cfg: SystolicConfig::default(),
        json: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("net") => a.net = p.value()?.parse()?,
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
                    "energy_report [--net NAME|all] [--array MxN] [--input-buffer N] [--weight-buffer N] [--e-mac X] [--e-dram X] [--e-buf X] [--e-rf X] [--json]\nnetworks: {:?}",
                    zoo::NAMES
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

fn main() {
    common::run_main(parse_args, run);
}

fn report(arch: &Architecture, cfg: SystolicConfig) -> energy_prune::Result<serde_json::Value> {
    let model = SystolicArray::new(arch, cfg)?;
    let dense = NetworkState::dense(arch);
    let exact = model.energy(&dense)?;
    let relaxed = model.relaxed_energy(&dense.nonzeros(), model.dense_input_energy())?;
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
    let names: Vec<&str> = if args.net == "all" {
        zoo::NAMES.to_vec()
    } else {
        vec![args.net.as_str()]
    };
    let mut out = Vec::new();
    for name in names {
        out.push(report(&zoo::by_name(name)?, args.cfg)?);
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
