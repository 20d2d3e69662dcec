//! Write ONNX files shaped as `torch.onnx.export` writes torchvision's AlexNet,
//! SqueezeNet 1.0, ResNet-18 and MobileNet v2 (random weights), to try
//! `energy_report --onnx` and `prune_onnx` without Python.
//!
//! ```text
//! cargo run --release --example onnx_models -- [--out DIR] [--seed N] [--json]
//! ```
//! With `--json` the last line is `{"files": [...]}`.

mod common;

use std::path::PathBuf;

use energy_prune::onnx::graph::torchvision;
use energy_prune::onnx::proto::ModelProto;
use prost::Message;

struct Args {
    out: PathBuf,
    seed: u64,
    json: bool,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        out: PathBuf::from("target/onnx-models"),
        seed: 0,
        json: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("out") => a.out = p.value()?.into(),
            Long("seed") => a.seed = p.value()?.parse()?,
            Long("json") => a.json = true,
            Long("help") | Short('h') => {
                println!("onnx_models [--out DIR] [--seed N] [--json]");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    std::fs::create_dir_all(&a.out).map_err(|e| {
        lexopt::Error::from(format!(
            "--out {}: cannot be created ({e})",
            a.out.display()
        ))
    })?;
    Ok(a)
}

fn main() {
    common::run_main(parse_args, run);
}

fn run(args: &Args) -> energy_prune::Result<()> {
    type Build = fn(u64) -> ModelProto;
    let models: [(&str, Build); 4] = [
        ("alexnet", torchvision::alexnet),
        ("squeezenet1_0", torchvision::squeezenet1_0),
        ("resnet18", torchvision::resnet18),
        ("mobilenet_v2", torchvision::mobilenet_v2),
    ];
    let mut files = Vec::new();
    for (name, build) in models {
        let path = args.out.join(format!("{name}.onnx"));
        let bytes = build(args.seed).encode_to_vec();
        std::fs::write(&path, &bytes).map_err(|e| energy_prune::Error::Io {
            path: path.clone(),
            source: e,
        })?;
        println!(
            "wrote {} ({:.1} MB)",
            path.display(),
            bytes.len() as f64 / 1e6
        );
        files.push(path.display().to_string());
    }
    if args.json {
        println!("{}", serde_json::json!({ "files": files }));
    }
    Ok(())
}
