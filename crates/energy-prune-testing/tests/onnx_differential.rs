//! The ONNX rule against onnxruntime, in CI without Python: the structurally random
//! models of `energy_prune_testing::onnx::cases` (seeds 0..800) with the outputs
//! onnxruntime computed for them, for the files the crate writes too
//! (`tests/data/onnx_differential.json`, written by
//! `scripts/check_onnx_differential.py --fixtures`, which also runs the check live
//! on any number of seeds).
//!
//! For every model the crate accepts, onnxruntime accepted it and computed the
//! crate's outputs; it loaded the file `save` writes and the compacted file, and
//! computed the crate's outputs for them.

use std::path::Path;

use energy_prune_testing::onnx::cases::{case, evaluate, fingerprint, max_rel_diff};
use energy_prune_testing::onnx::to_bytes;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixtures {
    onnxruntime: String,
    cases: Vec<Fixture>,
}

#[derive(Deserialize)]
struct Fixture {
    seed: u64,
    fingerprint: String,
    /// onnxruntime's outputs on the original model (`None`: it refused the model).
    ort: Option<Vec<Option<f32>>>,
    ort_refused: Option<String>,
    ort_saved: Option<Vec<Option<f32>>>,
    ort_compact: Option<Vec<Option<f32>>>,
}

fn nan_as_none(v: &[f32]) -> Vec<Option<f32>> {
    v.iter().map(|&x| (!x.is_nan()).then_some(x)).collect()
}

fn close(crate_out: &[f32], ort: &[Option<f32>]) -> bool {
    let ours = nan_as_none(crate_out);
    ours.len() == ort.len()
        && ours.iter().zip(ort).all(|(a, b)| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => max_rel_diff(&[*a], &[*b]) <= 1e-4,
            _ => false,
        })
}

#[test]
fn accepted_models_compute_what_onnxruntime_computes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx_differential.json");
    let fixtures: Fixtures =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (mut accepted, mut ort_only) = (0usize, 0usize);
    for f in &fixtures.cases {
        let c = case(f.seed);
        assert_eq!(
            fingerprint(&to_bytes(&c.model)).to_string(),
            f.fingerprint,
            "seed {}: the generator changed; regenerate the fixtures (see the script's docs)",
            f.seed
        );
        let e = evaluate(&c).unwrap_or_else(|m| panic!("seed {}: {m}", f.seed));
        if e.refused.is_some() {
            ort_only += usize::from(f.ort.is_some());
            continue;
        }
        accepted += 1;
        let ort = f.ort.as_ref().unwrap_or_else(|| {
            panic!(
                "seed {} {:?}: the crate accepts a model onnxruntime {} refuses: {:?}",
                f.seed, c.twists, fixtures.onnxruntime, f.ort_refused
            )
        });
        assert!(
            close(&e.output, ort),
            "seed {} {:?}: {:?} vs onnxruntime {ort:?}",
            f.seed,
            c.twists,
            e.output
        );
        let saved = f
            .ort_saved
            .as_ref()
            .expect("onnxruntime ran the saved file");
        assert!(close(&e.output, saved), "seed {}: saved file", f.seed);
        let compact = f
            .ort_compact
            .as_ref()
            .expect("onnxruntime ran the compacted file");
        assert!(
            close(&e.compact_output, compact),
            "seed {}: compacted file {:?} vs onnxruntime {compact:?}",
            f.seed,
            e.compact_output
        );
    }
    eprintln!(
        "{} models: {accepted} accepted and equal to onnxruntime {}, {ort_only} refused by the \
         crate only",
        fixtures.cases.len(),
        fixtures.onnxruntime
    );
    assert!(accepted > fixtures.cases.len() / 2);
}
