//! Models exported by PyTorch itself (`scripts/make_onnx_fixtures.py`: a LeNet-5
//! and a small network with batch norm, a concat, a strided residual shortcut, an
//! inverted residual block with ReLU6 and depthwise convolution, ceil-mode and
//! average pools; TorchScript and torch.export exporters), checked against the
//! outputs onnxruntime computed for them.

use energy_prune::prune::Budget;
use std::path::{Path, PathBuf};

use energy_prune::arch::{Architecture, zoo};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkState, PruningPlan};
use energy_prune::prune::project;
use energy_prune_onnx::OnnxModel;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx")
}

struct Record {
    batch: usize,
    input: Vec<f32>,
    outputs: Vec<(String, Vec<f32>)>,
}

fn record(name: &str) -> Record {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    Record {
        batch: v["batch"].as_u64().unwrap() as usize,
        input: floats(&v["input"]),
        outputs: v["outputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, o)| (k.clone(), floats(o)))
            .collect(),
    }
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
    for (i, (p, q)) in a.iter().zip(b).enumerate() {
        assert!((p - q).abs() <= 1e-4 * scale, "{what}[{i}]: {p} vs {q}");
    }
}

/// Keep the channels of parity `parity` (and channel 0) of every prunable width.
fn every_other_channel(arch: &Architecture, parity: usize) -> PruningPlan {
    let kept = arch
        .widths()
        .iter()
        .map(|w| {
            (0..w.channels)
                .filter(|k| w.fixed || k % 2 == parity || *k == 0)
                .collect()
        })
        .collect();
    PruningPlan::new(arch, kept).unwrap()
}

fn energy(net: &impl Network) -> f64 {
    let hw = SystolicArray::new(net.architecture(), SystolicConfig::default()).unwrap();
    hw.energy(&NetworkState::from_network(net).unwrap())
        .unwrap()
        .total
}

#[test]
fn pytorch_exports_compute_what_onnxruntime_computes() {
    for name in ["lenet5", "tinynet"] {
        let rec = record(name);
        for (file, expected) in &rec.outputs {
            let model = OnnxModel::load(fixtures().join(file), None).unwrap();
            let got = model.run(&rec.input, rec.batch).unwrap();
            close(&got, expected, file);
        }
    }
}

#[test]
fn pytorch_lenet5_prices_as_the_zoo_lenet5() {
    let zoo_arch = zoo::lenet5().unwrap();
    let hw = SystolicArray::new(&zoo_arch, SystolicConfig::default()).unwrap();
    let dense = hw.energy(&NetworkState::dense(&zoo_arch)).unwrap().total;
    for file in ["lenet5.onnx", "lenet5_dynamo.onnx"] {
        let model = OnnxModel::load(fixtures().join(file), None).unwrap();
        // Same layer names (PyTorch's module names), geometry and widths.
        assert_eq!(
            model.architecture().fingerprint(),
            zoo_arch.fingerprint(),
            "{file}"
        );
        assert_eq!(energy(&model), dense, "{file}");
    }
}

#[test]
fn pytorch_exports_prune_compact_and_round_trip() {
    let dir = std::env::temp_dir().join(format!("ep-onnx-pt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["lenet5", "tinynet"] {
        let rec = record(name);
        for (file, _) in &rec.outputs {
            let mut model = OnnxModel::load(fixtures().join(file), None).unwrap();
            let arch = model.architecture().clone();
            let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
            let dense = hw.energy(&NetworkState::dense(&arch)).unwrap().total;
            let floor = hw.dense_floor();
            let budget = floor + 0.3 * (dense - floor);
            let mut state = NetworkState::from_network(&model).unwrap();
            project(&mut state, &[Budget::absolute("energy", &hw, budget)]).unwrap();
            state.write_weights_to(&mut model).unwrap();
            assert!(energy(&model) <= budget * (1.0 + 1e-9), "{file}");
            // Saved and read back: the same weights and energy.
            let path = dir.join(file);
            model.save(&path).unwrap();
            let back = OnnxModel::load(&path, None).unwrap();
            assert_eq!(back.architecture().fingerprint(), arch.fingerprint());
            assert_eq!(energy(&back), energy(&model), "{file}");
            // Compacted: channels without weights removed, same outputs.
            let plan = PruningPlan::from_network(&model).unwrap();
            let compact = model.compact(&plan).unwrap();
            assert_eq!(
                compact
                    .architecture()
                    .widths()
                    .iter()
                    .map(|w| w.channels)
                    .collect::<Vec<_>>(),
                plan.widths()
            );
            let a = model.run(&rec.input, rec.batch).unwrap();
            let b = compact.run(&rec.input, rec.batch).unwrap();
            close(&b, &a, file);

            // A channel plan that removes about half of every width.
            let plan = every_other_channel(&arch, 1);
            plan.apply(&mut model).unwrap();
            let compact = model.compact(&plan).unwrap();
            let a = model.run(&rec.input, rec.batch).unwrap();
            let b = compact.run(&rec.input, rec.batch).unwrap();
            close(&b, &a, file);
            // EP_ONNX_KEEP=DIR keeps both files, to run them in another runtime.
            if let Ok(keep) = std::env::var("EP_ONNX_KEEP") {
                model
                    .save(Path::new(&keep).join(format!("masked_{file}")))
                    .unwrap();
                compact
                    .save(Path::new(&keep).join(format!("compact_{file}")))
                    .unwrap();
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// torchvision's AlexNet, SqueezeNet 1.0, ResNet-18 and MobileNet v2 as exported
/// by `scripts/export_torchvision.py DIR [--dynamo]` (needs PyTorch, so not in
/// CI): run with `EP_TORCHVISION_ONNX=DIR cargo test --release --test onnx_pytorch
/// -- --ignored`. The first three price exactly as the zoo's networks.
#[test]
#[ignore = "needs ONNX files exported by PyTorch in $EP_TORCHVISION_ONNX"]
fn torchvision_exports_load_and_price_as_the_zoo() {
    let dir = PathBuf::from(std::env::var("EP_TORCHVISION_ONNX").expect("EP_TORCHVISION_ONNX"));
    for (file, zoo_name) in [
        ("alexnet", Some("alexnet")),
        ("squeezenet1_0", Some("squeezenet")),
        ("resnet18", Some("resnet18")),
        ("mobilenet_v2", None),
    ] {
        for suffix in ["", "_dynamo"] {
            let path = dir.join(format!("{file}{suffix}.onnx"));
            if !path.is_file() {
                continue;
            }
            let model = OnnxModel::load(&path, None).unwrap();
            let arch = model.architecture();
            let hw = SystolicArray::new(arch, SystolicConfig::default()).unwrap();
            let e = hw.energy(&NetworkState::dense(arch)).unwrap().total;
            println!(
                "{}: {} layers, dense energy {e}",
                path.display(),
                arch.layers().len()
            );
            if let Some(z) = zoo_name {
                let za = zoo::by_name(z).unwrap();
                let zh = SystolicArray::new(&za, SystolicConfig::default()).unwrap();
                let ze = zh.energy(&NetworkState::dense(&za)).unwrap().total;
                assert_eq!(e, ze, "{}", path.display());
                assert_eq!(arch.layers().len(), za.layers().len());
            }
            if file == "alexnet" {
                continue; // the reference interpreter is too slow for its 61 M weights
            }
            // Half of every width removed: the compact model computes the same.
            let mut model = model;
            let arch = model.architecture().clone();
            let plan = every_other_channel(&arch, 0);
            plan.apply(&mut model).unwrap();
            let compact = model.compact(&plan).unwrap();
            let x: Vec<f32> = (0..3 * 224 * 224)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let (a, b) = (model.run(&x, 1).unwrap(), compact.run(&x, 1).unwrap());
            close(&b, &a, file);
            println!(
                "  compacted to {} weights, outputs equal",
                compact.architecture().weight_count()
            );
        }
    }
}
