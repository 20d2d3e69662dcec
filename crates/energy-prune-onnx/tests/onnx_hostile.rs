//! Hostile ONNX files, one regression test per way they used to break the
//! guarantees: panics, sizes that wrap, `save` changing a model whose initializers
//! are shared, semantics other than ONNX's (onnxruntime's), and compaction refusing
//! valid models with misleading messages. The structural fuzzer
//! (`energy-prune-testing/tests/fuzz_parsers.rs`) and the differential test against
//! onnxruntime (`energy-prune-testing/tests/onnx_differential.rs`) cover the same
//! rules on random graphs.

use std::path::Path;

use energy_prune::arch::Architecture;
use energy_prune::network::{Network, PruningPlan};
use energy_prune_onnx::OnnxModel;
use energy_prune_testing::onnx::proto::{
    AttributeProto, ModelProto, TensorProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_shape_proto::dimension, type_proto,
};
use energy_prune_testing::onnx::{GraphWriter, from_bytes, set_floats, to_bytes};

fn load(p: &ModelProto) -> energy_prune::Result<OnnxModel> {
    OnnxModel::from_bytes(&to_bytes(p), None, Path::new("case.onnx"))
}

fn refused(p: &ModelProto, says: &str) {
    match load(p) {
        Ok(_) => panic!("accepted a model that should be refused ({says})"),
        Err(e) => assert!(e.to_string().contains(says), "expected `{says}` in: {e}"),
    }
}

fn input(m: &OnnxModel, batch: usize) -> Vec<f32> {
    let n: usize = m.input_shape().iter().product::<usize>() * batch;
    (0..n)
        .map(|i| ((i * 37 % 23) as f32 / 11.0) - 1.0)
        .collect()
}

/// `save` then import: the same outputs, bit for bit.
fn same_after_save(m: &OnnxModel) {
    let x = input(m, 2);
    let before = m.run(&x, 2).unwrap();
    let again = OnnxModel::from_bytes(&m.to_bytes(), None, Path::new("saved.onnx")).unwrap();
    assert_eq!(again.run(&x, 2).unwrap(), before, "save changed the model");
}

/// Keep every other channel of every inner width.
fn halve(arch: &Architecture) -> PruningPlan {
    let kept = arch
        .widths()
        .iter()
        .enumerate()
        .map(|(u, w)| {
            if u == arch.input_width().0 || u == arch.output_width().0 {
                (0..w.channels).collect()
            } else {
                (0..w.channels).step_by(2).collect()
            }
        })
        .collect();
    PruningPlan::new(arch, kept).unwrap()
}

/// Masked and compacted models compute the same; the compacted file re-imports.
fn compacts(m: &OnnxModel) {
    let plan = halve(m.architecture());
    let mut masked = m.clone();
    plan.apply(&mut masked).unwrap();
    let small = masked.compact(&plan).unwrap();
    let x = input(m, 2);
    let (a, b) = (masked.run(&x, 2).unwrap(), small.run(&x, 2).unwrap());
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-5 * (1.0 + p.abs()), "{a:?} vs {b:?}");
    }
    let again = OnnxModel::from_bytes(&small.to_bytes(), None, Path::new("c.onnx")).unwrap();
    assert_eq!(again.run(&x, 2).unwrap(), b);
    same_after_save(&masked);
}

/// Point input `k` of the first node of type `op` at `name`.
fn read(p: &mut ModelProto, op: &str, k: usize, name: &str) {
    let g = p.graph.as_mut().unwrap();
    let node = g.node.iter_mut().find(|n| n.op_type == op).unwrap();
    node.input[k] = name.into();
}

fn set_input_dims(p: &mut ModelProto, dims: &[i64]) {
    let g = p.graph.as_mut().unwrap();
    if let Some(type_proto::Value::TensorType(t)) =
        g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        let shape = t.shape.as_mut().unwrap();
        for (d, &v) in shape.dim.iter_mut().zip(dims) {
            d.value = Some(dimension::Value::DimValue(v));
        }
    }
}

#[test]
fn panics_huge_global_pool_input_and_weight_read_by_batch_norm() {
    // [1, 2, 2^32, 2^32] then a global average pool: refused at import (the
    // interpreter used to panic on a zero chunk size).
    let (mut g, x) = GraphWriter::new([2, 1, 1], 1);
    let y = g.global_avg_pool(&x);
    let y = g.flatten(&y);
    let y = g.linear(&y, "fc", 2, 2);
    let mut p = g.finish(&y, 2);
    set_input_dims(&mut p, &[1, 2, 1 << 32, 1 << 32]);
    refused(&p, "exceeds");
    // A conv weight also read by a batch normalisation: a clean error, not an
    // out-of-bounds panic in compaction (the 4-D weight is not a [C] parameter).
    let (mut g, x) = GraphWriter::new([1, 6, 6], 2);
    let y = g.conv(&x, "c", 1, 4, 1, 1, 0, 1, true);
    let y = g.batch_norm(&y, "bn", 4);
    let y = g.flatten(&y);
    let y = g.linear(&y, "fc", 144, 3);
    let mut p = g.finish(&y, 3);
    read(&mut p, "BatchNormalization", 1, "c.weight");
    refused(&p, "parameter 1 has shape [4, 1, 1, 1]");
    // The conv's bias read as the normalisation's scale (an exporter merging equal
    // tensors): imports, compacts and saves.
    read(&mut p, "BatchNormalization", 1, "c.bias");
    let m = load(&p).unwrap();
    compacts(&m);
}

#[test]
fn sizes_that_wrap_are_refused() {
    // C * H * W = 16777232 * 1099510579201 wraps to 16 in 64 bits.
    let (mut g, x) = GraphWriter::new([1, 1, 16], 1);
    let y = g.flatten(&x);
    let y = g.linear(&y, "fc", 16, 2);
    let mut p = g.finish(&y, 2);
    set_input_dims(&mut p, &[1, 1, 16_777_232, 1_099_510_579_201]);
    refused(&p, "exceeds");
    // Given explicitly: refused too.
    let e = OnnxModel::from_bytes(
        &to_bytes(&p),
        Some([16_777_232, 1_099_510_579_201, 1]),
        Path::new("x.onnx"),
    );
    assert!(e.is_err());
    // A weight whose dims wrap.
    let (mut g, x) = GraphWriter::new([1, 4, 4], 1);
    let y = g.conv(&x, "c", 1, 2, 1, 1, 0, 1, false);
    let y = g.flatten(&y);
    let y = g.linear(&y, "fc", 32, 2);
    let mut p = g.finish(&y, 2);
    p.graph.as_mut().unwrap().initializer[0].dims = vec![1 << 33, 1 << 33, 1, 1];
    assert!(load(&p).is_err());
}

#[test]
fn save_keeps_shared_initializers() {
    // A layer's weight initializer also read by a Clip bound and by an Add constant,
    // its bias by a batch-norm scale: pruning the layer must not change them, in
    // memory or in the saved file.
    let (mut g, x) = GraphWriter::new([1, 5, 5], 3);
    let y = g.conv(&x, "c", 1, 3, 1, 1, 0, 1, true);
    let y = g.batch_norm(&y, "bn", 3);
    let lo = g.tensor("lo", &[], &[-0.5]);
    let hi = g.tensor("hi", &[], &[0.75]);
    let y = g.raw("Clip", &[&y, &lo, &hi], vec![]);
    let shift = g.tensor("shift", &[3, 1, 1], &[0.1, 0.2, 0.3]);
    let y = g.raw("Add", &[&y, &shift], vec![]);
    let y = g.flatten(&y);
    let y = g.linear(&y, "fc", 75, 2);
    let mut p = g.finish(&y, 2);
    // The deduplication: bn.weight := c.bias, and the Clip's upper bound and the
    // Add constant read other layers' tensors of the same shape.
    read(&mut p, "BatchNormalization", 1, "c.bias");
    let g = p.graph.as_mut().unwrap();
    let one = g
        .initializer
        .iter()
        .position(|t| t.name == "c.weight")
        .unwrap();
    // c.weight is [3, 1, 1, 1]: give the Add a [3, 1, 1] view of the same values.
    let mut w = g.initializer[one].clone();
    w.dims = vec![3, 1, 1];
    w.name = "c.weight.view".into();
    g.initializer.push(w);
    read(&mut p, "Add", 1, "c.weight.view");
    read(&mut p, "Clip", 2, "fc.bias");
    // fc.bias is [2], a Clip bound must be a scalar: refused cleanly.
    refused(&p, "a Clip bound of shape [2]");
    read(&mut p, "Clip", 2, "hi");
    let mut m = load(&p).unwrap();
    // The import says what it copied: `c.bias` (conv bias and batch-norm scale).
    let untied: Vec<(&str, usize)> = m
        .untied()
        .iter()
        .map(|u| (u.name.as_str(), u.uses))
        .collect();
    assert!(untied.contains(&("c.bias", 2)), "{untied:?}");
    assert!(m.untied_note().unwrap().contains("`c.bias` (2 uses)"));
    same_after_save(&m);
    // Prune everything prunable: the shared tensors keep their values.
    let x = input(&m, 2);
    let mut zero = m.clone();
    for l in 0..m.architecture().layers().len() {
        let n = m.architecture().layers()[l].weight_count();
        energy_prune::network::NetworkMut::write_weights(&mut zero, l, &vec![0.0; n]).unwrap();
    }
    let saved = OnnxModel::from_bytes(&zero.to_bytes(), None, Path::new("z.onnx")).unwrap();
    assert_eq!(saved.run(&x, 2).unwrap(), zero.run(&x, 2).unwrap());
    compacts(&m);
    m = zero;
    same_after_save(&m);
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut v = from_bytes(&to_bytes(
        &GraphWriter::new([1, 1, 1], 0).0.finish("input", 1),
    ))
    .unwrap()
    .graph
    .unwrap()
    .input
    .remove(0);
    v.name = name.into();
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape.as_mut().unwrap().dim = dims
            .iter()
            .map(
                |&d| energy_prune_testing::onnx::proto::tensor_shape_proto::Dimension {
                    value: Some(dimension::Value::DimValue(d)),
                    ..Default::default()
                },
            )
            .collect();
    }
    v
}

#[test]
fn onnx_semantics_follow_onnxruntime() {
    let base = |shift_dims: &[usize], flat: bool| {
        let (mut g, x) = GraphWriter::new([1, 4, 4], 4);
        let mut y = g.conv(&x, "c", 1, 4, 1, 1, 0, 1, true);
        if flat {
            y = g.flatten(&y);
        }
        let n: usize = shift_dims.iter().product();
        let k = g.tensor("k", shift_dims, &vec![0.5; n]);
        let y = g.raw("Add", &[&y, &k], vec![]);
        let y = if flat { y } else { g.flatten(&y) };
        let y = g.linear(&y, "fc", 64, 5);
        g.finish(&y, 5)
    };
    // [C,1,1,1] + [1,C,H,W] broadcasts to [C,C,H,W]; [F,1] + [1,F] to [F,F].
    refused(
        &base(&[4, 1, 1, 1], false),
        "adding a constant of shape [4, 1, 1, 1]",
    );
    refused(&base(&[64, 1], true), "adding a constant of shape [64, 1]");
    refused(&base(&[4], false), "adding a constant of shape [4]");
    for ok in [&[4, 1, 1][..], &[1, 4, 1, 1], &[], &[1]] {
        compacts(&load(&base(ok, false)).unwrap());
    }
    compacts(&load(&base(&[64], true)).unwrap());
    compacts(&load(&base(&[1, 64], true)).unwrap());
    // Duplicate initializer names: refused (ONNX names are unique).
    let mut p = base(&[4, 1, 1], false);
    let g = p.graph.as_mut().unwrap();
    let mut dup = g.initializer[0].clone();
    set_floats(&mut dup, &[4, 1, 1, 1], &[9.0; 4]);
    g.initializer.push(dup);
    refused(&p, "defined twice");
    // Initializers listed as graph inputs (keep_initializers_as_inputs): the
    // compacted file declares the compacted shapes.
    let mut p = base(&[4, 1, 1], false);
    let g = p.graph.as_mut().unwrap();
    let listed: Vec<ValueInfoProto> = g
        .initializer
        .iter()
        .map(|t| value_info(&t.name, &t.dims))
        .collect();
    g.input.extend(listed);
    let m = load(&p).unwrap();
    compacts(&m);
    let plan = halve(m.architecture());
    let small = from_bytes(&m.compact(&plan).unwrap().to_bytes()).unwrap();
    let g = small.graph.unwrap();
    for t in &g.initializer {
        let v = g.input.iter().find(|v| v.name == t.name).unwrap();
        let Some(type_proto::Value::TensorType(tt)) =
            v.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            panic!()
        };
        let dims: Vec<i64> = tt
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value {
                Some(dimension::Value::DimValue(v)) => v,
                _ => -1,
            })
            .collect();
        assert_eq!(dims, t.dims, "declared shape of `{}`", t.name);
    }
    // Files onnxruntime refuses.
    let mut p = base(&[4, 1, 1], false);
    p.opset_import.clear();
    refused(&p, "declares no opset");
    let mut p = base(&[4, 1, 1], false);
    let conv = p
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Conv")
        .unwrap();
    conv.input.push("c.bias".into());
    refused(&p, "has 4 inputs");
    let mut p = base(&[4, 1, 1], false);
    let conv = p
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Conv")
        .unwrap();
    conv.attribute.push(AttributeProto {
        name: "auto_pad".into(),
        r#type: AttributeType::String as i32,
        s: b"VALID".to_vec(),
        ..AttributeProto::default()
    });
    refused(&p, "auto_pad = VALID together with explicit pads");
    // MatMul and Gemm on a 4-D map.
    let (mut g, x) = GraphWriter::new([3, 1, 1], 1);
    let y = g.matmul(&x, "fc", 3, 2);
    refused(&g.finish(&y, 2), "flatten it first");
    let (mut g, x) = GraphWriter::new([3, 1, 1], 1);
    let y = g.linear(&x, "fc", 3, 2);
    refused(&g.finish(&y, 2), "flatten it first");
    // Reshapes that do not keep the batch.
    let reshape = |target: &[i64], batch: Option<i64>| {
        let (mut g, x) = GraphWriter::new([2, 2, 2], 1);
        let mut t = TensorProto {
            name: "shape".into(),
            ..TensorProto::default()
        };
        energy_prune_testing::onnx::set_ints(&mut t, &[target.len()], target);
        let s = g.tensor("unused", &[1], &[0.0]);
        let _ = s;
        let mut p = {
            let y = g.raw("Reshape", &[&x, "shape"], vec![]);
            let y = g.linear(&y, "fc", 8, 2);
            g.finish(&y, 2)
        };
        let gr = p.graph.as_mut().unwrap();
        gr.initializer.retain(|t| t.name != "unused");
        gr.initializer.push(t);
        if let Some(b) = batch {
            set_input_dims(&mut p, &[b, 2, 2, 2]);
        }
        p
    };
    refused(&reshape(&[2, -1], None), "Reshape to [2, -1]");
    refused(&reshape(&[-1, -1], None), "Reshape to [-1, -1]");
    refused(&reshape(&[1, -1], Some(2)), "Reshape to [1, -1]");
    refused(&reshape(&[4, 2], None), "Reshape to [4, 2]");
    for ok in [[0, -1], [-1, 8], [1, -1], [0, 8]] {
        assert!(load(&reshape(&ok, None)).is_ok(), "{ok:?}");
    }
    assert!(load(&reshape(&[2, -1], Some(2))).is_ok());
}

#[test]
fn compaction_of_shared_constants() {
    // Two Reshapes reading one shape constant (an exporter's deduplication).
    let (mut g, x) = GraphWriter::new([1, 6, 6], 5);
    let a = g.conv(&x, "a", 1, 4, 3, 1, 0, 1, true);
    let b = g.conv(&x, "b", 1, 2, 3, 1, 0, 1, true);
    let fa = g.reshape(&a, 64);
    let fb = g.reshape(&b, 32);
    let ya = g.linear(&fa, "fa", 64, 3);
    let yb = g.linear(&fb, "fb", 32, 3);
    let y = g.add(&ya, &yb);
    let mut p = g.finish(&y, 3);
    // Both reshape to [-1, -1]? No: point both at one [0, -1] constant.
    let gr = p.graph.as_mut().unwrap();
    let mut t = TensorProto {
        name: "flat".into(),
        ..TensorProto::default()
    };
    energy_prune_testing::onnx::set_ints(&mut t, &[2], &[0, -1]);
    gr.initializer.push(t);
    for n in gr.node.iter_mut().filter(|n| n.op_type == "Reshape") {
        n.input[1] = "flat".into();
    }
    compacts(&load(&p).unwrap());
    // With an explicit feature count shared: refused by the second Reshape
    // (36 features are not 64), the message names the real sizes.
    let gr = p.graph.as_mut().unwrap();
    let t = gr
        .initializer
        .iter_mut()
        .find(|t| t.name == "flat")
        .unwrap();
    energy_prune_testing::onnx::set_ints(t, &[2], &[-1, 64]);
    refused(&p, "Reshape to [-1, 64]");
    // A weight reused as an Add constant (a [C] bias equal to a [C] shift).
    let (mut g, x) = GraphWriter::new([1, 4, 4], 6);
    let y = g.conv(&x, "c", 1, 3, 1, 1, 0, 1, true);
    let y = g.flatten(&y);
    let y = g.linear(&y, "fc", 48, 4);
    let k = g.tensor("k", &[4], &[0.1, 0.2, 0.3, 0.4]);
    let y = g.raw("Add", &[&y, &k], vec![]);
    let y = g.linear(&y, "fc2", 4, 4);
    let mut p = g.finish(&y, 4);
    read(&mut p, "Add", 1, "fc2.bias");
    compacts(&load(&p).unwrap());
    // Raw data of a length that is not a whole number of floats: the message says
    // bytes, not a rounded count equal to the expected one.
    let (mut g, x) = GraphWriter::new([1, 4, 4], 7);
    let y = g.conv(&x, "c", 1, 3, 1, 1, 0, 1, true);
    let y = g.flatten(&y);
    let y = g.linear(&y, "fc", 48, 4);
    let mut p = g.finish(&y, 4);
    let w = &mut p.graph.as_mut().unwrap().initializer[0];
    w.raw_data.push(0);
    refused(
        &p,
        "holds 13 bytes of raw data but its dims say 3 values (12 bytes)",
    );
}

/// `save` streams the weights into the file; what it writes decodes to the same
/// model as `to_bytes` (random structures, transposed MatMul weights, pruned
/// weights, a torchvision-shaped network).
#[test]
fn save_streams_the_model_to_bytes_describes() {
    let dir = std::env::temp_dir().join(format!("ep-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.onnx");
    let mut checked = 0;
    let mut models: Vec<ModelProto> = (0..300)
        .map(|s| energy_prune_testing::onnx::cases::case(s).model)
        .collect();
    models.push(energy_prune_testing::onnx::torchvision::resnet18(1));
    for p in &models {
        let Ok(mut m) = load(p) else { continue };
        // Prune half of the first layer to make the weights differ from the file's.
        let n = m.architecture().layers()[0].weight_count();
        let mut w = vec![0.0; n];
        m.read_weights(0, &mut w).unwrap();
        w.iter_mut().step_by(2).for_each(|v| *v = 0.0);
        energy_prune::network::NetworkMut::write_weights(&mut m, 0, &w).unwrap();
        m.save(&path).unwrap();
        let streamed = from_bytes(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(streamed, from_bytes(&m.to_bytes()).unwrap());
        checked += 1;
    }
    assert!(checked > 150, "{checked}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The weights move out for an in-place projection and back, checked.
#[test]
fn weights_move_out_and_back_without_a_copy() {
    let mut m = (0..50)
        .find_map(|s| load(&energy_prune_testing::onnx::cases::case(s).model).ok())
        .expect("one of the first 50 generated models imports");
    let x = input(&m, 2);
    let before = m.run(&x, 2).unwrap();
    let state = m.take_state();
    assert!(
        m.read_weights(0, &mut [0.0; 1]).is_err(),
        "no weights while taken"
    );
    let mut wrong = energy_prune::network::NetworkState {
        weights: state.weights.clone(),
        input_masks: state.input_masks.clone(),
    };
    wrong.weights[0].pop();
    assert!(m.put_state(wrong).is_err());
    let mut nan = energy_prune::network::NetworkState {
        weights: state.weights.clone(),
        input_masks: state.input_masks.clone(),
    };
    nan.weights[0][0] = f32::NAN;
    assert!(matches!(
        m.put_state(nan),
        Err(energy_prune::Error::NonFinite { .. })
    ));
    m.put_state(state).unwrap();
    assert_eq!(m.run(&x, 2).unwrap(), before);
}
