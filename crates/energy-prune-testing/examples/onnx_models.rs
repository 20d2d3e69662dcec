//! Write ONNX files shaped as `torch.onnx.export` writes torchvision's AlexNet,
//! SqueezeNet 1.0, ResNet-18 and MobileNet v2 (random weights), to try
//! `energy-prune report --onnx` and `energy-prune prune` without Python.
//!
//! ```text
//! cargo run --release -p energy-prune-testing --example onnx_models -- [DIR] [SEED]
//! ```
//! DIR defaults to `target/onnx-models`, SEED to 0.

use std::path::PathBuf;

use energy_prune_testing::onnx::proto::ModelProto;
use energy_prune_testing::onnx::{to_bytes, torchvision};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "target/onnx-models".into()));
    let seed: u64 = match args.next() {
        Some(s) => s.parse().map_err(|e| format!("SEED {s}: {e}"))?,
        None => 0,
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    type Build = fn(u64) -> ModelProto;
    let models: [(&str, Build); 4] = [
        ("alexnet", torchvision::alexnet),
        ("squeezenet1_0", torchvision::squeezenet1_0),
        ("resnet18", torchvision::resnet18),
        ("mobilenet_v2", torchvision::mobilenet_v2),
    ];
    for (name, build) in models {
        let path = out.join(format!("{name}.onnx"));
        let bytes = to_bytes(&build(seed));
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "wrote {} ({:.1} MB)",
            path.display(),
            bytes.len() as f64 / 1e6
        );
    }
    Ok(())
}
