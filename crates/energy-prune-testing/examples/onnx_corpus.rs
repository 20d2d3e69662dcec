//! Write structurally random ONNX models ([`energy_prune_testing::onnx::cases`])
//! with what the crate computes for them, for `scripts/check_onnx_differential.py`
//! to compare against onnxruntime:
//!
//! ```text
//! cargo run --release -p energy-prune-testing --example onnx_corpus -- DIR [COUNT] [FIRST_SEED]
//! ```
//! For each seed: `DIR/SEED.onnx`; when the crate accepts the model also the file
//! `save` writes (`SEED.saved.onnx`) and the compacted one (`SEED.compact.onnx`);
//! `DIR/cases.json` lists every case with its input and the crate's outputs (or
//! its refusal). COUNT defaults to 500, FIRST_SEED to 0.

use std::path::PathBuf;

use energy_prune_testing::onnx::cases::{case, evaluate, fingerprint};
use energy_prune_testing::onnx::to_bytes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: onnx_corpus DIR [COUNT] [FIRST_SEED]")?,
    );
    let count: u64 = args.next().map_or(Ok(500), |s| s.parse())?;
    let first: u64 = args.next().map_or(Ok(0), |s| s.parse())?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: String, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut cases = Vec::new();
    let mut accepted = 0;
    for seed in first..first + count {
        let c = case(seed);
        let bytes = to_bytes(&c.model);
        write(format!("{seed}.onnx"), &bytes)?;
        let e = evaluate(&c).map_err(|m| format!("seed {seed}: {m}"))?;
        if e.refused.is_none() {
            accepted += 1;
            write(format!("{seed}.saved.onnx"), &e.saved)?;
            write(format!("{seed}.compact.onnx"), &e.compact)?;
        }
        cases.push(serde_json::json!({
            "seed": seed,
            "fingerprint": fingerprint(&bytes).to_string(),
            "input_shape": c.input_shape,
            "batch": c.batch,
            "input": c.input,
            "twists": c.twists,
            "refused": e.refused,
            "output": e.output,
            "compact_output": e.compact_output,
        }));
    }
    write(
        "cases.json".into(),
        serde_json::to_string(&cases)?.as_bytes(),
    )?;
    println!(
        "wrote {count} models to {} ({accepted} accepted by the crate)",
        dir.display()
    );
    Ok(())
}
