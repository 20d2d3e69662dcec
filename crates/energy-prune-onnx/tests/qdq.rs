//! Quantized models in QDQ form: the reference CNN exported at mixed precision,
//! read back with its precision, run by the interpreter to what the quantized
//! CNN computes, and checked against the outputs onnxruntime computed for the
//! same files (`tests/data/onnx/qdq.json`, written by
//! `scripts/make_qdq_fixtures.py` from the models this test keeps with
//! `EP_ONNX_KEEP=DIR`).

use std::path::{Path, PathBuf};

use energy_prune::energy::precision::{LayerPrecision, NumberFormat};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::error::Error;
use energy_prune::network::{Network, NetworkMut, NetworkState, PruningPlan, Trainable};
use energy_prune::quant;
use energy_prune_nn::Cnn;
use energy_prune_onnx::{OnnxModel, QdqSpec};
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn int(weights: u8, activations: u8) -> LayerPrecision {
    LayerPrecision::int(weights, activations).unwrap()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx")
}

/// A batch of `n` LeNet-5 inputs drawn from `seed`, image-like (non-negative).
fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    (0..n * 32 * 32)
        .map(|_| {
            let v: f32 = rng.random_range(-1.0..3.0);
            v.max(0.0)
        })
        .collect()
}

/// The largest `|x|` at each prunable layer's input of `net` over `x`.
fn ranges(net: &mut Cnn, x: &[f32], n: usize) -> Vec<Option<f32>> {
    let stats = net.activation_stats(x, n, n).unwrap();
    stats.iter().map(|s| Some(s.max_abs as f32)).collect()
}

/// LeNet-5 and the mixed precision of the `mixed` fixture.
fn mixed_precision() -> Vec<LayerPrecision> {
    vec![
        int(4, 8),
        int(2, 6),
        int(8, 4),
        LayerPrecision {
            weights: NumberFormat::Int(16),
            activations: NumberFormat::Int(8),
        },
        int(6, 16),
    ]
}

/// The QDQ models of the fixtures: (file name, model, the CNN computing the same).
fn models() -> Vec<(&'static str, OnnxModel, Cnn)> {
    let x = inputs(16, 7);
    let mut out = Vec::new();
    for (name, precision) in [
        ("qdq_lenet5_int8.onnx", vec![int(8, 8); 5]),
        ("qdq_lenet5_mixed.onnx", mixed_precision()),
    ] {
        let mut net = Cnn::lenet5(3).unwrap();
        let r = ranges(&mut net, &x, 16);
        let float = OnnxModel::from_cnn(&net).unwrap();
        let spec = QdqSpec::new(precision.clone()).with_activation_ranges(r.clone());
        let q = float.to_qdq(&spec).unwrap();
        // The same quantization in the CNN: weights rounded per channel, inputs
        // fake-quantized at the same ranges, biases on the accumulator's grid.
        for (l, p) in precision.iter().enumerate() {
            let mut w = net.weights_ref(l).unwrap().to_vec();
            let layer = net.architecture().layers()[l].clone();
            let scales = quant::channel_scales(&layer, &w, p.weights).unwrap();
            energy_prune::quant::quantize_weights(&layer, &mut w, p.weights).unwrap();
            net.write_weights(l, &w).unwrap();
            net.set_activation_quantization(l, p.activations).unwrap();
            let aq = net.activation_quantizer_mut(l).unwrap();
            aq.range = r[l].unwrap();
            aq.calibrating = false;
            let sx = aq.scale();
            if let (Some(ws), true) = (scales, sx > 0.0) {
                let mut b = net.bias(l).unwrap().to_vec();
                quant::quantize_bias(
                    &mut b,
                    &quant::bias_scales(sx, &quant::storable_scales(&ws)),
                );
                net.set_bias(l, &b).unwrap();
            }
        }
        out.push((name, q, net));
    }
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()))
}

#[test]
fn qdq_export_reads_back_at_its_precision_and_runs_as_the_quantized_cnn() {
    let x = inputs(4, 11);
    for (name, q, mut net) in models() {
        let expect: Vec<LayerPrecision> = if name.contains("mixed") {
            // 16-bit weights stay float (the reference precision), as do 16-bit
            // activations.
            let mut p = mixed_precision();
            p[3].weights = LayerPrecision::REFERENCE.weights;
            p[4].activations = LayerPrecision::REFERENCE.activations;
            p
        } else {
            vec![int(8, 8); 5]
        };
        assert!(q.is_quantized(), "{name}");
        assert_eq!(q.precision(), expect.as_slice(), "{name}");
        let mut logits = Vec::new();
        net.predict(&x, 4, &mut logits).unwrap();
        let got = q.run(&x, 4).unwrap();
        let scale = logits.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // Same grid, same rounding (ties to even): only the order of float
        // additions differs, which can move a value across a rounding boundary.
        let d = max_diff(&got, &logits);
        assert!(d <= 2e-3 * scale.max(1.0), "{name}: {d} (scale {scale})");
        // Saved and read back: the same model, bit for bit.
        let back = OnnxModel::from_bytes(&q.to_bytes(), None, Path::new(name)).unwrap();
        assert_eq!(back.precision(), q.precision());
        assert_eq!(back.run(&x, 4).unwrap(), got, "{name}");
    }
}

#[test]
fn narrow_weights_are_stored_as_int4_at_opset_21_and_int8_below() {
    let (_, q, _) = models().remove(1);
    let bytes = q.to_bytes();
    let proto = energy_prune_testing::onnx::from_bytes(&bytes).unwrap();
    let graph = proto.graph.unwrap();
    let ty = |n: &str| {
        graph
            .initializer
            .iter()
            .find(|t| t.name == n)
            .unwrap()
            .data_type
    };
    assert_eq!(
        ty("conv1.weight_quantized"),
        22,
        "4-bit weights packed as INT4"
    );
    assert_eq!(
        ty("conv2.weight_quantized"),
        22,
        "2-bit weights packed as INT4"
    );
    assert_eq!(ty("fc1.weight_quantized"), 3, "8-bit weights as INT8");
    assert_eq!(ty("fc3.weight_quantized"), 3, "6-bit weights as INT8");
    assert!(
        graph
            .initializer
            .iter()
            .any(|t| t.name == "fc2.weight" && t.data_type == 1)
    );
    // Below opset 21 a 4-bit layer is stored in int8 and still read as 4 bits.
    let torch = OnnxModel::load(fixtures().join("lenet5.onnx"), None).unwrap();
    let spec = QdqSpec::new(vec![int(4, 8); 5]).with_activation_ranges(vec![Some(4.0); 5]);
    let q17 = torch.to_qdq(&spec).unwrap();
    assert_eq!(q17.precision(), vec![int(4, 8); 5].as_slice());
    // 12 bits need int16, which QuantizeLinear takes from opset 21 only.
    let spec = QdqSpec::new(vec![int(12, 8); 5]).with_activation_ranges(vec![Some(4.0); 5]);
    assert!(matches!(
        torch.to_qdq(&spec),
        Err(Error::Unsupported { .. })
    ));
}

#[test]
fn quantized_models_are_priced_at_their_precision() {
    let (_, q, _) = models().remove(0);
    let state = NetworkState::from_network(&q).unwrap();
    let cfg = SystolicConfig::default();
    let float = SystolicArray::new(q.architecture(), cfg).unwrap();
    let int8 = SystolicArray::with_precision(q.architecture(), cfg, q.precision()).unwrap();
    let (e16, e8) = (
        float.energy(&state).unwrap().total,
        int8.energy(&state).unwrap().total,
    );
    assert!(e8 < 0.7 * e16, "int8 {e8} vs 16-bit {e16}");
}

#[test]
fn pruned_qdq_models_save_exact_zeros_and_keep_their_scales() {
    let (_, mut q, _) = models().remove(0);
    let x = inputs(2, 5);
    let before = q.run(&x, 2).unwrap();
    let n = q.architecture().layers()[2].weight_count();
    let mut fc1 = vec![0.0; n];
    q.read_weights(2, &mut fc1).unwrap();
    let kept = fc1.iter().filter(|v| **v != 0.0).count();
    for v in fc1.iter_mut().step_by(2) {
        *v = 0.0;
    }
    q.write_weights(2, &fc1).unwrap();
    let back = OnnxModel::from_bytes(&q.to_bytes(), None, Path::new("pruned.onnx")).unwrap();
    let mut read = vec![0.0; fc1.len()];
    back.read_weights(2, &mut read).unwrap();
    assert_eq!(
        read, fc1,
        "kept weights on their grid, pruned ones exactly zero"
    );
    assert!(kept > fc1.iter().filter(|v| **v != 0.0).count());
    assert_eq!(back.precision(), q.precision());
    assert_ne!(back.run(&x, 2).unwrap(), before);
    // The file written by `save` (streamed) is the same model as `to_bytes`.
    let dir = std::env::temp_dir().join(format!("ep-qdq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pruned.onnx");
    q.save(&path).unwrap();
    let saved = OnnxModel::load(&path, None).unwrap();
    assert_eq!(saved.run(&x, 2).unwrap(), back.run(&x, 2).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn what_qdq_export_refuses() {
    let (_, q, _) = models().remove(0);
    let spec = QdqSpec::new(vec![int(8, 8); 5]).with_activation_ranges(vec![Some(1.0); 5]);
    // Already quantized; compaction of a quantized model.
    assert!(matches!(q.to_qdq(&spec), Err(Error::Unsupported { .. })));
    let plan = PruningPlan::full(q.architecture());
    assert!(matches!(q.compact(&plan), Err(Error::Unsupported { .. })));
    let float = OnnxModel::from_cnn(&Cnn::lenet5(1).unwrap()).unwrap();
    // Missing or bad activation ranges, wrong lengths.
    let no_ranges = QdqSpec::new(vec![int(8, 8); 5]);
    assert!(matches!(
        float.to_qdq(&no_ranges),
        Err(Error::InvalidParameter { .. })
    ));
    let nan = spec.clone().with_activation_ranges(vec![Some(f32::NAN); 5]);
    assert!(matches!(
        float.to_qdq(&nan),
        Err(Error::InvalidParameter { .. })
    ));
    let short = QdqSpec::new(vec![int(8, 8); 4]);
    assert!(matches!(
        float.to_qdq(&short),
        Err(Error::ShapeMismatch { .. })
    ));
    let scales = spec
        .clone()
        .with_weight_scales(vec![Some(vec![0.1; 3]), None, None, None, None]);
    assert!(matches!(
        float.to_qdq(&scales),
        Err(Error::ShapeMismatch { .. })
    ));
    // Weights-only quantization needs no ranges.
    let w_only = QdqSpec::new(vec![int(8, 16); 5]);
    let q = float.to_qdq(&w_only).unwrap();
    assert_eq!(
        q.precision()[0].activations,
        LayerPrecision::REFERENCE.activations
    );
    // An opset without per-channel scales.
    let (mut w, x) = energy_prune_testing::onnx::GraphWriter::new([1, 8, 8], 1);
    w.opset = 11;
    let x = w.conv(&x, "c", 1, 4, 3, 1, 0, 1, true);
    let x = w.flatten(&x);
    let x = w.linear(&x, "fc", 4 * 36, 3);
    let m = w.finish(&x, 3);
    let old = OnnxModel::from_bytes(
        &energy_prune_testing::onnx::to_bytes(&m),
        None,
        Path::new("old.onnx"),
    )
    .unwrap();
    let spec2 = QdqSpec::new(vec![int(8, 16); 2]);
    assert!(matches!(old.to_qdq(&spec2), Err(Error::Unsupported { .. })));
}

#[test]
fn the_reference_cnn_exports_to_what_it_computes() {
    let x = inputs(3, 2);
    let mut net = Cnn::lenet5(9).unwrap();
    let model = OnnxModel::from_cnn(&net).unwrap();
    let mut logits = Vec::new();
    net.predict(&x, 3, &mut logits).unwrap();
    let got = model.run(&x, 3).unwrap();
    assert!(max_diff(&got, &logits) < 1e-4);
    assert_eq!(
        model.precision(),
        vec![LayerPrecision::REFERENCE; 5].as_slice()
    );
    assert!(!model.is_quantized());
    net.enable_input_mask(1).unwrap();
    assert!(matches!(
        OnnxModel::from_cnn(&net),
        Err(Error::Unsupported { .. })
    ));
}

/// The outputs onnxruntime computed for the committed QDQ files.
/// Named outputs of several models.
type Outputs = Vec<(String, Vec<f32>)>;

fn ort_record() -> (usize, Vec<f32>, Outputs) {
    let text = std::fs::read_to_string(fixtures().join("qdq.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let outputs = v["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, o)| (k.clone(), floats(o)))
        .collect();
    (
        v["batch"].as_u64().unwrap() as usize,
        floats(&v["input"]),
        outputs,
    )
}

#[test]
fn qdq_models_compute_what_onnxruntime_computes() {
    let keep = std::env::var_os("EP_ONNX_KEEP").map(PathBuf::from);
    let fresh = models();
    if let Some(dir) = &keep {
        std::fs::create_dir_all(dir).unwrap();
        for (name, q, _) in &fresh {
            q.save(dir.join(name)).unwrap();
        }
        let x = inputs(8, 21);
        let json = serde_json::json!({"batch": 8, "input_shape": [1, 32, 32], "input": x});
        std::fs::write(dir.join("qdq_input.json"), json.to_string()).unwrap();
    }
    let (batch, x, outputs) = ort_record();
    assert_eq!(
        x,
        inputs(batch, 21),
        "the fixture's input is the one drawn here"
    );
    assert_eq!(outputs.len(), fresh.len());
    for (name, ort) in &outputs {
        let scale = ort.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        // The committed file, as imported.
        let file = OnnxModel::load(fixtures().join(name), None).unwrap();
        let d = max_diff(&file.run(&x, batch).unwrap(), ort);
        assert!(d <= 1e-4 * scale, "{name} (committed) vs onnxruntime: {d}");
        // The exporter today writes a model computing the same.
        let (_, q, _) = fresh.iter().find(|m| m.0 == name).unwrap();
        let d = max_diff(&q.run(&x, batch).unwrap(), ort);
        assert!(
            d <= 1e-4 * scale,
            "{name} (exported now) vs onnxruntime: {d}"
        );
    }
}

#[test]
fn onnxruntime_static_int8_models_are_read_at_8_bits_and_run_as_onnxruntime_runs_them() {
    let text = std::fs::read_to_string(fixtures().join("qdq.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |key: &str| -> Vec<f32> {
        v["ort_static"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let (fused, unfused) = (floats("outputs"), floats("outputs_unfused"));
    let torch = std::fs::read_to_string(fixtures().join("lenet5.json")).unwrap();
    let t: serde_json::Value = serde_json::from_str(&torch).unwrap();
    let x: Vec<f32> = t["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let m = OnnxModel::load(fixtures().join("qdq_ort_lenet5.onnx"), None).unwrap();
    assert!(m.is_quantized());
    assert_eq!(m.precision(), vec![int(8, 8); 5].as_slice());
    let names: Vec<&str> = m
        .architecture()
        .layers()
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["conv1", "conv2", "fc1", "fc2", "fc3"]);
    let got = m.run(&x, 2).unwrap();
    let scale = unfused.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    // Node by node as ONNX defines it: the same numbers.
    let d = max_diff(&got, &unfused);
    assert!(
        d <= 1e-5 * scale,
        "interpreter vs onnxruntime (unfused): {d} (scale {scale})"
    );
    // onnxruntime's fused integer kernels round their requantization their own
    // way: within a few steps of the output's 8-bit grid.
    let d = max_diff(&got, &fused);
    assert!(
        d <= 0.02 * scale,
        "interpreter vs onnxruntime (fused): {d} (scale {scale})"
    );
}

#[test]
fn hostile_qdq_files_are_errors_that_say_what() {
    use energy_prune_testing::onnx::{from_bytes, to_bytes};
    let (_, q, _) = models().remove(1);
    let good = from_bytes(&q.to_bytes()).unwrap();
    let load = |m: &energy_prune_testing::onnx::proto::ModelProto| {
        OnnxModel::from_bytes(&to_bytes(m), None, Path::new("hostile.onnx"))
    };
    assert!(load(&good).is_ok());
    let edit = |f: &dyn Fn(&mut energy_prune_testing::onnx::proto::GraphProto)| {
        let mut m = good.clone();
        f(m.graph.as_mut().unwrap());
        load(&m)
    };
    let init = |g: &mut energy_prune_testing::onnx::proto::GraphProto, name: &str| {
        g.initializer.iter().position(|t| t.name == name).unwrap()
    };
    // A zero scale.
    let e = edit(&|g| {
        let i = init(g, "conv1.weight_scale");
        g.initializer[i].raw_data[..4].copy_from_slice(&0f32.to_le_bytes());
    });
    assert!(matches!(e, Err(Error::CorruptData { .. })), "{e:?}");
    // Packed int4 data one byte short.
    let e = edit(&|g| {
        let i = init(g, "conv1.weight_quantized");
        g.initializer[i].raw_data.pop();
    });
    assert!(matches!(e, Err(Error::CorruptData { .. })), "{e:?}");
    // A zero point of another type than the data.
    let e = edit(&|g| {
        let i = init(g, "fc1.weight_zero_point");
        let n = g.initializer[i].raw_data.len();
        g.initializer[i].data_type = 5; // int16: two bytes each
        g.initializer[i].raw_data = vec![0; 2 * n];
    });
    assert!(matches!(e, Err(Error::CorruptData { .. })), "{e:?}");
    // An int8 value outside int4 (data typed int4 but stored as int32_data).
    let e = edit(&|g| {
        let i = init(g, "conv1.weight_quantized");
        let n = g.initializer[i].dims.iter().product::<i64>() as usize;
        g.initializer[i].raw_data.clear();
        g.initializer[i].int32_data = vec![9; n];
    });
    assert!(matches!(e, Err(Error::CorruptData { .. })), "{e:?}");
    // Blocked quantization and per-axis activation scales are refused.
    let e = edit(&|g| {
        let n = g
            .node
            .iter()
            .position(|n| n.op_type == "DequantizeLinear" && !n.attribute.is_empty())
            .unwrap();
        let mut a = g.node[n].attribute[0].clone();
        a.name = "block_size".into();
        a.i = 2;
        g.node[n].attribute.push(a);
    });
    assert!(matches!(e, Err(Error::Unsupported { .. })), "{e:?}");
    let e = edit(&|g| {
        let i = init(g, "conv2.input_quant.scale");
        g.initializer[i].dims = vec![2];
        let v = g.initializer[i].raw_data.clone();
        g.initializer[i].raw_data.extend_from_slice(&v);
    });
    assert!(
        matches!(
            e,
            Err(Error::Unsupported { .. } | Error::CorruptData { .. })
        ),
        "{e:?}"
    );
    // A scale that is not a constant.
    let e = edit(&|g| {
        let n = g
            .node
            .iter()
            .position(|n| n.op_type == "QuantizeLinear")
            .unwrap();
        g.node[n].input[1] = "input".into();
    });
    assert!(e.is_err(), "{e:?}");
}

#[test]
fn a_cnn_told_its_weight_scales_trains_with_biases_on_the_accumulator_grid() {
    // One quantized CNN with its biases rounded by hand, one told its weight scales
    // (float biases kept, used on the grid).
    let x16 = inputs(16, 7);
    let mut nets = [Cnn::lenet5(3).unwrap(), Cnn::lenet5(3).unwrap()];
    let r = ranges(&mut nets[0], &x16, 16);
    for (k, net) in nets.iter_mut().enumerate() {
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        for (l, range) in r.iter().enumerate() {
            let layer = net.architecture().layers()[l].clone();
            let b: Vec<f32> = (0..layer.out_channels())
                .map(|_| rng.random_range(-0.5..0.5))
                .collect();
            net.set_bias(l, &b).unwrap();
            let mut w = net.weights_ref(l).unwrap().to_vec();
            let scales = quant::channel_scales(&layer, &w, NumberFormat::INT8)
                .unwrap()
                .unwrap();
            quant::quantize_weights(&layer, &mut w, NumberFormat::INT8).unwrap();
            net.write_weights(l, &w).unwrap();
            net.set_activation_quantization(l, NumberFormat::INT8)
                .unwrap();
            let aq = net.activation_quantizer_mut(l).unwrap();
            aq.range = range.unwrap();
            aq.calibrating = false;
            let sx = aq.scale();
            if k == 0 {
                let mut b = b.clone();
                quant::quantize_bias(
                    &mut b,
                    &quant::bias_scales(sx, &quant::storable_scales(&scales)),
                );
                net.set_bias(l, &b).unwrap();
            } else {
                assert!(net.set_weight_scales(l, Some(&scales)).unwrap());
            }
        }
    }
    let [mut rounded, mut told] = nets;
    let x = inputs(4, 11);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    rounded.predict(&x, 4, &mut a).unwrap();
    told.predict(&x, 4, &mut b).unwrap();
    assert_eq!(a, b, "the grid biases are the hand-rounded ones");
    assert_ne!(
        told.bias(0).unwrap(),
        rounded.bias(0).unwrap(),
        "the stored bias stays float"
    );
    // Without the scales the float biases are used.
    told.set_weight_scales(0, None).unwrap();
    told.predict(&x, 4, &mut b).unwrap();
    assert_ne!(a, b);
    assert!(told.set_weight_scales(0, Some(&[1.0; 3])).is_err());
}
