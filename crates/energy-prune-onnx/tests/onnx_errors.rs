//! Every way the ONNX import refuses a model says what and where: one case per
//! rule, each an error (never a panic) whose message names the problem.

use std::path::Path;

use energy_prune::network::{Network, NetworkMut};
use energy_prune_onnx::OnnxModel;
use energy_prune_testing::onnx::GraphWriter;
use energy_prune_testing::onnx::proto::{
    AttributeProto, ModelProto, NodeProto, TensorProto, attribute_proto::AttributeType,
};
use prost::Message;

fn load(p: &ModelProto) -> energy_prune::Result<OnnxModel> {
    OnnxModel::from_bytes(&p.encode_to_vec(), None, Path::new("case.onnx"))
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..AttributeProto::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..AttributeProto::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..AttributeProto::default()
    }
}

/// conv(1 -> 4, 3x3, pad 1) on 1x8x8, then `tail`, then flatten + linear to 3.
fn net(tail: impl FnOnce(&mut GraphWriter, String) -> String) -> ModelProto {
    let (mut g, x) = GraphWriter::new([1, 8, 8], 1);
    let x = g.conv(&x, "c", 1, 4, 3, 1, 1, 1, true);
    let x = tail(&mut g, x);
    let x = g.flatten(&x);
    let x = g.linear(&x, "fc", 4 * 8 * 8, 3);
    g.finish(&x, 3)
}

fn node_mut<'a>(p: &'a mut ModelProto, op: &str) -> &'a mut NodeProto {
    p.graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == op)
        .unwrap()
}

fn set_attr(p: &mut ModelProto, op: &str, a: AttributeProto) {
    let n = node_mut(p, op);
    n.attribute.retain(|x| x.name != a.name);
    n.attribute.push(a);
}

fn refused(p: &ModelProto, says: &str) {
    match load(p) {
        Ok(_) => panic!("accepted a model that should be refused ({says})"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(says), "expected `{says}` in: {msg}");
        }
    }
}

#[test]
fn the_base_case_loads() {
    let m = load(&net(|_, x| x)).unwrap();
    assert_eq!(m.architecture().layers().len(), 2);
}

#[test]
fn convolution_attributes() {
    let mut p = net(|_, x| x);
    set_attr(&mut p, "Conv", ints("strides", &[1, 1, 1]));
    refused(&p, "strides");
    let mut p = net(|_, x| x);
    set_attr(&mut p, "Conv", ints("strides", &[1, 2]));
    refused(&p, "different strides");
    let mut p = net(|_, x| x);
    set_attr(&mut p, "Conv", ints("kernel_shape", &[5, 5]));
    refused(&p, "kernel_shape");
    let mut p = net(|_, x| x);
    set_attr(
        &mut p,
        "Conv",
        AttributeProto {
            name: "auto_pad".into(),
            r#type: AttributeType::String as i32,
            s: b"SAME_UPPER".to_vec(),
            ..AttributeProto::default()
        },
    );
    refused(&p, "auto_pad");
    let mut p = net(|_, x| x);
    set_attr(&mut p, "Conv", int("group", 0));
    refused(&p, "group");
    let mut p = net(|_, x| x);
    set_attr(&mut p, "Conv", int("group", 2));
    refused(&p, "input channels");
    let mut p = net(|_, x| x);
    set_attr(&mut p, "Conv", ints("pads", &[-1, -1, -1, -1]));
    refused(&p, "negative");
    // 3-D weights, weights that are a tensor, a bias of the wrong length.
    let mut p = net(|_, x| x);
    p.graph.as_mut().unwrap().initializer[0].dims = vec![4, 1, 9];
    refused(&p, "2-D convolutions");
    let mut p = net(|_, x| x);
    node_mut(&mut p, "Conv").input[1] = "input".into();
    refused(&p, "not a constant");
    let mut p = net(|_, x| x);
    let b = &mut p.graph.as_mut().unwrap().initializer[1];
    b.dims = vec![2];
    b.raw_data.truncate(8);
    refused(&p, "a bias of shape [2] for 4 outputs");
}

#[test]
fn grouped_depthwise_and_tied_weights() {
    // A depthwise conv over a concatenation.
    let p = net(|g, x| {
        let a = g.conv(&x, "a", 4, 2, 1, 1, 0, 1, true);
        let b = g.conv(&x, "b", 4, 2, 1, 1, 0, 1, true);
        let c = g.concat(&[&a, &b]);
        g.conv(&c, "dw", 4, 4, 3, 1, 1, 4, false)
    });
    refused(&p, "depthwise convolution of concatenated");
    // Two convs reading one weight initializer: untied on import, each its own copy.
    let mut p = net(|g, x| g.conv(&x, "c2", 4, 4, 1, 1, 0, 1, false));
    let w2 = p.graph.as_ref().unwrap().initializer[2].name.clone();
    let g = p.graph.as_mut().unwrap();
    let convs: Vec<usize> = (0..g.node.len())
        .filter(|&i| g.node[i].op_type == "Conv")
        .collect();
    g.node.push(NodeProto {
        op_type: "Conv".into(),
        name: "tied".into(),
        input: vec![g.node[convs[1]].output[0].clone(), w2],
        output: vec!["tied_out".into()],
        ..NodeProto::default()
    });
    let mut m = load(&p).unwrap();
    let n = m.architecture().layers().len();
    let tied = m.architecture().layers()[n - 1].weight_count();
    m.write_weights(n - 1, &vec![0.0; tied]).unwrap();
    let mut c2 = vec![0.0; tied];
    m.read_weights(1, &mut c2).unwrap();
    assert!(
        c2.iter().all(|&v| v != 0.0),
        "pruning the copy changed `c2`"
    );
    // Weights held by a Constant node.
    let (mut g, x) = GraphWriter::new([1, 4, 4], 1);
    let w = g.raw(
        "Constant",
        &[],
        vec![AttributeProto {
            name: "value".into(),
            r#type: AttributeType::Tensor as i32,
            t: Some(TensorProto {
                dims: vec![2, 1, 1, 1],
                data_type: 1,
                float_data: vec![1.0, 2.0],
                ..TensorProto::default()
            }),
            ..AttributeProto::default()
        }],
    );
    let y = g.raw("Conv", &[&x, &w], vec![]);
    let y = g.flatten(&y);
    let y = g.linear(&y, "fc", 32, 2);
    refused(&g.finish(&y, 2), "Constant node");
}

#[test]
fn linear_layers() {
    let mut p = net(|_, x| x);
    set_attr(&mut p, "Gemm", int("transA", 1));
    refused(&p, "transA");
    let mut p = net(|_, x| x);
    set_attr(&mut p, "Gemm", float("alpha", 2.0));
    refused(&p, "alpha");
    let mut p = net(|_, x| x);
    let fc = p.graph.as_ref().unwrap().initializer.len() - 2;
    p.graph.as_mut().unwrap().initializer[fc].dims = vec![3, 16, 16];
    refused(&p, "2-D expected");
    let mut p = net(|_, x| x);
    p.graph.as_mut().unwrap().initializer[fc].dims = vec![3, 128];
    p.graph.as_mut().unwrap().initializer[fc]
        .raw_data
        .truncate(3 * 128 * 4);
    refused(&p, "expect 128 inputs");
    // A Gemm on a 4-D map (no flatten).
    let (mut g, x) = GraphWriter::new([1, 4, 4], 1);
    let x = g.conv(&x, "c", 1, 2, 1, 1, 0, 1, true);
    let x = g.linear(&x, "fc", 32, 2);
    refused(&g.finish(&x, 2), "flatten it first");
    // MatMul + Add(bias) runs and has the right shape.
    let (mut g, x) = GraphWriter::new([2, 1, 1], 1);
    let x = g.flatten(&x);
    let y = g.matmul(&x, "fc", 2, 3);
    let m = load(&g.finish(&y, 3)).unwrap();
    assert_eq!(m.run(&[1.0, -1.0], 1).unwrap().len(), 3);
}

#[test]
fn normalisation_pooling_and_shapes() {
    let mut p = net(|g, x| g.batch_norm(&x, "bn", 4));
    set_attr(&mut p, "BatchNormalization", int("training_mode", 1));
    refused(&p, "eval mode");
    let mut p = net(|g, x| g.batch_norm(&x, "bn", 4));
    let bn = p
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == "bn.weight")
        .unwrap();
    bn.dims = vec![3];
    bn.raw_data.truncate(12);
    refused(&p, "has shape [3] for 4 channels");
    let mut p = net(|g, x| g.pool(&x, true, 2, 2, 0, false));
    set_attr(&mut p, "MaxPool", ints("kernel_shape", &[2]));
    refused(&p, "2-D pooling");
    let p = net(|g, x| g.pool(&x, true, 9, 1, 0, false));
    refused(&p, "does not fit");
    let mut p = net(|g, x| g.pool(&x, true, 2, 2, 0, false));
    set_attr(&mut p, "MaxPool", ints("pads", &[1, 0, 0, 0]));
    refused(&p, "asymmetric pads");
    let mut p = net(|g, x| g.pool(&x, true, 2, 2, 0, false));
    set_attr(&mut p, "MaxPool", ints("dilations", &[2, 2]));
    refused(&p, "dilations");
    // Pooling a flattened tensor.
    let (mut g, x) = GraphWriter::new([1, 4, 4], 1);
    let x = g.conv(&x, "c", 1, 2, 1, 1, 0, 1, true);
    let x = g.flatten(&x);
    let x = g.pool(&x, true, 2, 2, 0, false);
    refused(&g.finish(&x, 2), "flattened tensor");
    let mut p = net(|_, x| x);
    set_attr(&mut p, "Flatten", int("axis", 2));
    refused(&p, "axis != 1");
    // Reshape to something else than [batch, features].
    let (mut g, x) = GraphWriter::new([1, 4, 4], 1);
    let x = g.conv(&x, "c", 1, 2, 1, 1, 0, 1, true);
    let x = g.reshape(&x, 7);
    let x = g.linear(&x, "fc", 32, 2);
    refused(&g.finish(&x, 2), "Reshape to");
    // ReduceMean: spatial axes only; keepdims 0 flattens.
    let (mut g, x) = GraphWriter::new([1, 4, 4], 1);
    let x = g.conv(&x, "c", 1, 2, 1, 1, 0, 1, true);
    let y = g.raw(
        "ReduceMean",
        &[&x],
        vec![ints("axes", &[2, 3]), int("keepdims", 0)],
    );
    let y = g.linear(&y, "fc", 2, 3);
    let m = load(&g.finish(&y, 3)).unwrap();
    assert_eq!(m.architecture().layers()[1].input[0].spatial, 1);
    assert_eq!(m.run(&[0.5; 16], 1).unwrap().len(), 3);
    let (mut g, x) = GraphWriter::new([1, 4, 4], 1);
    let x = g.conv(&x, "c", 1, 2, 1, 1, 0, 1, true);
    let y = g.raw("ReduceMean", &[&x], vec![ints("axes", &[1])]);
    refused(&g.finish(&y, 2), "spatial axes");
    // GlobalMaxPool and opset-6 Clip attributes run; under opset 17 Clip takes
    // inputs, and attributes are refused (as onnxruntime does).
    let clip_attrs = |opset: i64| {
        let (mut g, x) = GraphWriter::new([1, 4, 4], 1);
        g.opset = opset;
        let x = g.conv(&x, "c", 1, 2, 1, 1, 0, 1, true);
        let x = g.raw("Clip", &[&x], vec![float("min", 0.0), float("max", 0.5)]);
        let x = g.raw("GlobalMaxPool", &[&x], vec![]);
        let x = g.flatten(&x);
        let x = g.linear(&x, "fc", 2, 3);
        g.finish(&x, 3)
    };
    let m = load(&clip_attrs(6)).unwrap();
    assert!(m.run(&[1.0; 16], 1).unwrap().iter().all(|v| v.is_finite()));
    refused(
        &clip_attrs(17),
        "Clip bounds given as attributes under opset 17",
    );
}

#[test]
fn additions_and_concatenations() {
    // Residual of different layouts.
    let p = net(|g, x| {
        let a = g.conv(&x, "a", 4, 2, 1, 1, 0, 1, true);
        let b = g.conv(&x, "b", 4, 2, 1, 1, 0, 1, true);
        let c = g.concat(&[&a, &b]);
        g.add(&c, &x)
    });
    refused(&p, "different layouts");
    // A constant of the wrong shape.
    let p = net(|g, x| {
        let k = g.tensor("k", &[3], &[1.0, 2.0, 3.0]);
        g.add(&x, &k)
    });
    refused(&p, "one value per channel");
    // A per-channel constant ([C, 1, 1]) is accepted and runs.
    let p = net(|g, x| {
        let k = g.tensor("k", &[4, 1, 1], &[1.0, 2.0, 3.0, 4.0]);
        g.add(&k, &x)
    });
    assert_eq!(load(&p).unwrap().run(&[0.0; 64], 1).unwrap().len(), 3);
    let mut p = net(|g, x| g.add(&x, &x));
    node_mut(&mut p, "Add").input.push("extra".into());
    refused(&p, "two inputs");
    let mut p = net(|g, x| g.concat(&[&x, &x]));
    set_attr(&mut p, "Concat", int("axis", 2));
    refused(&p, "Concat on axis 2");
}

#[test]
fn graph_level_problems() {
    let mut p = net(|_, x| x);
    p.graph = None;
    refused(&p, "no graph");
    let mut p = net(|_, x| x);
    let extra = p.graph.as_ref().unwrap().input[0].clone();
    let mut second = extra;
    second.name = "second".into();
    p.graph.as_mut().unwrap().input.push(second);
    refused(&p, "2 data inputs");
    let mut p = net(|_, x| x);
    let o = p.graph.as_ref().unwrap().output[0].clone();
    p.graph.as_mut().unwrap().output.push(o);
    refused(&p, "2 outputs");
    let mut p = net(|_, x| x);
    p.graph.as_mut().unwrap().output[0].name = "nowhere".into();
    refused(&p, "produced by no node");
    let mut p = net(|_, x| x);
    node_mut(&mut p, "Flatten").input[0] = "missing".into();
    refused(&p, "no earlier node produces");
    let mut p = net(|_, x| x);
    node_mut(&mut p, "Flatten").domain = "com.example".into();
    refused(&p, "domain");
    let mut p = net(|_, x| x);
    node_mut(&mut p, "Flatten").output.clear();
    refused(&p, "has no output");
    let mut p = net(|_, x| x);
    node_mut(&mut p, "Conv").input[0] = String::new();
    refused(&p, "lacks input 0");
    // The output is a concatenation of two layers.
    let (mut g, x) = GraphWriter::new([1, 4, 4], 1);
    let a = g.conv(&x, "a", 1, 2, 1, 1, 0, 1, true);
    let b = g.conv(&x, "b", 1, 2, 1, 1, 0, 1, true);
    let c = g.concat(&[&a, &b]);
    refused(&g.finish(&c, 4), "concatenates");
    // An input of zero size given by the caller.
    let e = OnnxModel::from_bytes(
        &net(|_, x| x).encode_to_vec(),
        Some([1, 0, 8]),
        Path::new("x.onnx"),
    );
    assert!(e.is_err());
    // A Constant without a value.
    let mut p = net(|_, x| x);
    p.graph.as_mut().unwrap().node.insert(
        0,
        NodeProto {
            op_type: "Constant".into(),
            output: vec!["k".into()],
            ..NodeProto::default()
        },
    );
    refused(&p, "without a `value`");
}

#[test]
fn compaction_of_grouped_convolutions_and_per_channel_constants() {
    use energy_prune::network::PruningPlan;
    let full = |arch: &energy_prune::arch::Architecture| -> Vec<Vec<usize>> {
        arch.widths()
            .iter()
            .map(|w| (0..w.channels).collect())
            .collect()
    };
    // conv 1 -> 4, grouped conv 4 -> 4 (2 groups), linear: removing channels on
    // either side of the grouped convolution is refused.
    let (mut g, x) = GraphWriter::new([1, 6, 6], 3);
    let x = g.conv(&x, "c", 1, 4, 3, 1, 1, 1, true);
    let x = g.conv(&x, "grouped", 4, 4, 3, 1, 1, 2, true);
    let x = g.flatten(&x);
    let x = g.linear(&x, "fc", 4 * 36, 2);
    let m = load(&g.finish(&x, 2)).unwrap();
    let arch = m.architecture().clone();
    for layer in [0, 1] {
        let mut kept = full(&arch);
        kept[arch.layers()[layer].output.0] = vec![0, 2];
        let plan = PruningPlan::new(&arch, kept).unwrap();
        let e = m.compact(&plan).unwrap_err().to_string();
        assert!(e.contains("grouped convolution"), "{e}");
    }
    // conv 1 -> 4, a per-channel constant, linear: the constant is sliced with
    // the conv's channels and the compact model computes the same.
    let (mut g, x) = GraphWriter::new([1, 6, 6], 3);
    let x = g.conv(&x, "c", 1, 4, 3, 1, 1, 1, true);
    let k = g.tensor("k", &[1, 4, 1, 1], &[0.1, 0.2, 0.3, 0.4]);
    let x = g.add(&x, &k);
    let x = g.relu(&x);
    let x = g.flatten(&x);
    let x = g.linear(&x, "fc", 4 * 36, 2);
    let mut m = load(&g.finish(&x, 2)).unwrap();
    let arch = m.architecture().clone();
    let mut kept = full(&arch);
    kept[arch.layers()[0].output.0] = vec![1, 3];
    let plan = PruningPlan::new(&arch, kept).unwrap();
    plan.apply(&mut m).unwrap();
    let compact = m.compact(&plan).unwrap();
    let x: Vec<f32> = (0..36).map(|i| (i as f32 * 0.37).sin()).collect();
    let (a, b) = (m.run(&x, 1).unwrap(), compact.run(&x, 1).unwrap());
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 1e-5, "{p} vs {q}");
    }
    assert_eq!(compact.architecture().weight_count(), 2 * 9 + 2 * 2 * 36);
}
