//! ONNX import, export and compaction on graphs written in Rust the way
//! `torch.onnx.export` writes torchvision's models.

use energy_prune::prune::Budget;
use std::path::Path;

use approx::assert_relative_eq;
use energy_prune::Error;
use energy_prune::arch::{LayerKind, zoo};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkMut, NetworkState, PruningPlan};
use energy_prune::prune::project;
use energy_prune_onnx::OnnxModel;
use energy_prune_testing::onnx::proto::ModelProto;
use energy_prune_testing::onnx::{GraphWriter, torchvision};
use prost::Message;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn load(proto: &ModelProto) -> energy_prune::Result<OnnxModel> {
    OnnxModel::from_bytes(&proto.encode_to_vec(), None, Path::new("test.onnx"))
}

fn energies(net: &impl Network) -> (f64, Vec<f64>) {
    let arch = net.architecture();
    let hw = SystolicArray::new(arch, SystolicConfig::default()).unwrap();
    let report = hw
        .energy(&NetworkState::from_network(net).unwrap())
        .unwrap();
    let mut layers: Vec<f64> = report.layers.iter().map(|l| l.total).collect();
    layers.sort_by(f64::total_cmp);
    (report.total, layers)
}

fn zoo_energies(name: &str) -> (f64, Vec<f64>) {
    let arch = zoo::by_name(name).unwrap();
    let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let report = hw.energy(&NetworkState::dense(&arch)).unwrap();
    let mut layers: Vec<f64> = report.layers.iter().map(|l| l.total).collect();
    layers.sort_by(f64::total_cmp);
    (report.total, layers)
}

#[test]
fn torchvision_alexnet_squeezenet_resnet18_price_as_the_zoo() {
    for (name, proto) in [
        ("alexnet", torchvision::alexnet(1)),
        ("squeezenet", torchvision::squeezenet1_0(2)),
        ("resnet18", torchvision::resnet18(3)),
    ] {
        let model = load(&proto).unwrap();
        let zoo_arch = zoo::by_name(name).unwrap();
        let arch = model.architecture();
        assert_eq!(arch.layers().len(), zoo_arch.layers().len(), "{name}");
        assert_eq!(arch.widths().len(), zoo_arch.widths().len(), "{name}");
        assert_eq!(arch.weight_count(), zoo_arch.weight_count(), "{name}");
        assert_eq!(arch.macs(), zoo_arch.macs(), "{name}");
        let (total, layers) = energies(&model);
        let (zoo_total, zoo_layers) = zoo_energies(name);
        // Same geometry, dense weights: the same numbers, up to summation order.
        assert_relative_eq!(total, zoo_total, max_relative = 1e-12);
        for (a, b) in layers.iter().zip(&zoo_layers) {
            assert_relative_eq!(*a, *b, max_relative = 1e-12);
        }
    }
}

#[test]
fn resnet18_residual_widths_are_shared() {
    let model = load(&torchvision::resnet18(3)).unwrap();
    let arch = model.architecture();
    let of = |n: &str| arch.layers()[arch.layer_index(n).unwrap()].output;
    // layer2: the downsample and both blocks' conv2 write one width.
    let w = of("layer2.0.downsample.0");
    assert_eq!(of("layer2.0.conv2"), w);
    assert_eq!(of("layer2.1.conv2"), w);
    // layer1 shares the stem's width (identity shortcuts).
    assert_eq!(of("layer1.0.conv2"), of("conv1"));
    assert_ne!(of("layer1.0.conv1"), of("conv1"));
}

#[test]
fn mobilenet_v2_loads_with_depthwise_sharing() {
    let model = load(&torchvision::mobilenet_v2(4)).unwrap();
    let arch = model.architecture();
    assert_eq!(arch.layers().len(), 53);
    // torchvision: 3 504 872 parameters, 34 112 of them in batch normalisation.
    assert_eq!(arch.param_count(), 3_504_872 - 34_112);
    let dw = arch.layer_index("features.2.conv.1.0").unwrap();
    let l = &arch.layers()[dw];
    match l.kind {
        LayerKind::Conv2d(g) => assert!(g.is_depthwise()),
        LayerKind::Linear(_) => panic!("features.2.conv.1.0 is a conv"),
    }
    assert_eq!(l.input[0].width, l.output);
    assert_eq!(model.output_len(), 1000);
    assert!(energies(&model).0 > 0.0);
}

/// A small network with every supported operator: conv + BN + ReLU, max and
/// average pools, a fire-style concat, ReLU6, a depthwise-separable residual
/// block, reshape, Gemm and MatMul.
fn small_net(seed: u64) -> ModelProto {
    let (mut g, x) = GraphWriter::new([3, 12, 12], seed);
    let x = g.conv(&x, "stem", 3, 8, 3, 1, 1, 1, false);
    let x = g.batch_norm(&x, "stem_bn", 8);
    let x = g.relu(&x);
    let x = g.pool(&x, true, 2, 2, 0, false);
    let a = g.conv(&x, "left", 8, 4, 1, 1, 0, 1, true);
    let b = g.conv(&x, "right", 8, 6, 3, 1, 1, 1, true);
    let x = g.concat(&[&a, &b]);
    let x = g.relu6(&x);
    let x = g.conv(&x, "mix", 10, 10, 1, 1, 0, 1, true);
    let h = g.conv(&x, "block.dw", 10, 10, 3, 1, 1, 10, false);
    let h = g.batch_norm(&h, "block.bn", 10);
    let h = g.relu(&h);
    let h = g.conv(&h, "block.pw", 10, 10, 1, 1, 0, 1, true);
    let x = g.add(&h, &x);
    let x = g.pool(&x, false, 3, 2, 1, true);
    // 6x6 -> ceil((6 + 2 - 3) / 2) + 1 = 4x4.
    let x = g.reshape(&x, 10 * 4 * 4);
    let x = g.linear(&x, "fc1", 160, 16);
    let x = g.relu(&x);
    let x = g.dropout(&x);
    let x = g.matmul(&x, "fc2", 16, 5);
    g.finish(&x, 5)
}

fn input(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

#[test]
fn small_net_structure() {
    let model = load(&small_net(7)).unwrap();
    let arch = model.architecture();
    assert_eq!(model.input_shape(), [3, 12, 12]);
    assert_eq!(arch.layers().len(), 8);
    let layer = |n: &str| &arch.layers()[arch.layer_index(n).unwrap()];
    // `mix` reads the concatenation of two widths.
    assert_eq!(layer("mix").input.len(), 2);
    // The depthwise conv and the residual add put mix, dw and pw on one width.
    assert_eq!(layer("block.dw").output, layer("mix").output);
    assert_eq!(layer("block.pw").output, layer("mix").output);
    // fc1 reads the 4x4 map flattened: 16 features per channel.
    assert_eq!(layer("fc1").input[0].spatial, 16);
    let out = model.run(&input(2 * 3 * 144, 1), 2).unwrap();
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn save_and_reload_keep_architecture_and_weights() {
    let mut model = load(&torchvision::resnet18(5)).unwrap();
    // Prune: zero the first half of conv1's filters.
    let mut w = model.weights(0).unwrap();
    let half = w.len() / 2;
    w[..half].fill(0.0);
    model.write_weights(0, &w).unwrap();
    let dir = std::env::temp_dir().join(format!("ep-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("r18.onnx");
    model.save(&path).unwrap();
    let back = OnnxModel::load(&path, None).unwrap();
    assert_eq!(
        back.architecture().fingerprint(),
        model.architecture().fingerprint()
    );
    for l in 0..model.architecture().layers().len() {
        assert_eq!(back.weights(l).unwrap(), model.weights(l).unwrap());
    }
    assert_relative_eq!(energies(&back).0, energies(&model).0, max_relative = 1e-12);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn projected_export_reimports_to_the_same_energy() {
    let mut model = load(&torchvision::squeezenet1_0(6)).unwrap();
    let dense = energies(&model).0;
    let arch = model.architecture().clone();
    let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut state = NetworkState::from_network(&model).unwrap();
    let out = project(&mut state, &[Budget::absolute("energy", &hw, 0.4 * dense)]).unwrap();
    assert!(out.relaxed_energy <= 0.4 * dense * (1.0 + 1e-9));
    assert!(out.kept < out.nonzero_before);
    state.write_weights_to(&mut model).unwrap();
    let bytes = model.to_bytes();
    let back = OnnxModel::from_bytes(&bytes, None, Path::new("pruned.onnx")).unwrap();
    let (e, _) = energies(&back);
    assert_relative_eq!(e, energies(&model).0, max_relative = 1e-12);
    assert!(e <= 0.4 * dense * (1.0 + 1e-9), "{e} vs {dense}");
}

#[test]
fn compacted_model_computes_what_the_masked_one_does() {
    let mut model = load(&small_net(11)).unwrap();
    let arch = model.architecture().clone();
    let mut rng = ChaCha12Rng::seed_from_u64(3);
    let kept: Vec<Vec<usize>> = arch
        .widths()
        .iter()
        .map(|w| {
            if w.fixed {
                return (0..w.channels).collect();
            }
            let mut k: Vec<usize> = (0..w.channels).filter(|_| rng.random_bool(0.6)).collect();
            if k.is_empty() {
                k.push(w.channels - 1);
            }
            k
        })
        .collect();
    let plan = PruningPlan::new(&arch, kept.clone()).unwrap();
    plan.apply(&mut model).unwrap();
    let compact = model.compact(&plan).unwrap();
    let widths: Vec<usize> = compact
        .architecture()
        .widths()
        .iter()
        .map(|w| w.channels)
        .collect();
    assert_eq!(widths, plan.widths());
    let x = input(3 * 3 * 144, 9);
    let a = model.run(&x, 3).unwrap();
    let b = compact.run(&x, 3).unwrap();
    for (p, q) in a.iter().zip(&b) {
        assert_relative_eq!(*p, *q, epsilon = 1e-5, max_relative = 1e-4);
    }
    // The compacted file re-imports to the same architecture and weights.
    let back = OnnxModel::from_bytes(&compact.to_bytes(), None, Path::new("test.onnx")).unwrap();
    assert_eq!(
        back.architecture().fingerprint(),
        compact.architecture().fingerprint()
    );
    for l in 0..arch.layers().len() {
        assert_eq!(back.weights(l).unwrap(), compact.weights(l).unwrap());
    }
    // A plan for another architecture is refused.
    let other = load(&torchvision::resnet18(1)).unwrap();
    assert!(other.compact(&plan).is_err());
}

#[test]
fn unsupported_and_corrupt_models_are_clear_errors() {
    // An operator outside the list names the node and the operator.
    let (mut g, x) = GraphWriter::new([1, 8, 8], 1);
    let x = g.conv(&x, "c", 1, 2, 3, 1, 1, 1, true);
    let x = g.raw("Sigmoid", &[&x], vec![]);
    let x = g.flatten(&x);
    let x = g.linear(&x, "fc", 72, 3);
    let err = load(&g.finish(&x, 3)).unwrap_err().to_string();
    assert!(
        err.contains("Sigmoid") && err.contains("/Sigmoid_"),
        "{err}"
    );

    // Not protobuf at all.
    let e = OnnxModel::from_bytes(b"\xff\xff\xff\xff garbage", None, Path::new("x.onnx"));
    assert!(matches!(e, Err(Error::CorruptData { .. })), "{e:?}");

    // NaN weights.
    let mut p = small_net(1);
    let t = &mut p.graph.as_mut().unwrap().initializer[0];
    t.raw_data[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(load(&p), Err(Error::NonFinite { .. })));

    // Dilations and asymmetric pads.
    for (attr, vals) in [("dilations", vec![2, 2]), ("pads", vec![1, 1, 0, 0])] {
        let mut p = small_net(1);
        let node = &mut p.graph.as_mut().unwrap().node[0];
        node.attribute
            .iter_mut()
            .find(|a| a.name == attr)
            .unwrap()
            .ints = vals;
        let err = load(&p).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    }

    // A symbolic input size needs the caller's shape.
    let mut p = small_net(1);
    p.graph.as_mut().unwrap().input[0].r#type = None;
    let err = load(&p).unwrap_err().to_string();
    assert!(err.contains("--input"), "{err}");
    let ok = OnnxModel::from_bytes(&p.encode_to_vec(), Some([3, 12, 12]), Path::new("t.onnx"));
    assert!(ok.is_ok());
    // A wrong caller shape fails where the sizes stop chaining (here the reshape).
    let bad = OnnxModel::from_bytes(&p.encode_to_vec(), Some([3, 16, 16]), Path::new("t.onnx"))
        .unwrap_err()
        .to_string();
    assert!(bad.contains("[-1, 160]") && bad.contains("250"), "{bad}");

    // Truncated weights.
    let mut p = small_net(1);
    p.graph.as_mut().unwrap().initializer[0].raw_data.pop();
    assert!(matches!(load(&p), Err(Error::CorruptData { .. })));

    // A missing file.
    assert!(matches!(
        OnnxModel::load("/no/such/model.onnx", None),
        Err(Error::Io { .. })
    ));
}

#[test]
fn writes_are_checked_and_leave_weights_unchanged() {
    let mut model = load(&small_net(2)).unwrap();
    let before = model.weights(0).unwrap();
    let mut bad = before.clone();
    bad[3] = f32::INFINITY;
    assert!(model.write_weights(0, &bad).is_err());
    assert!(model.write_weights(0, &bad[1..]).is_err());
    assert!(model.write_weights(99, &bad).is_err());
    assert_eq!(model.weights(0).unwrap(), before);
    assert!(model.run(&[0.0; 5], 1).is_err());
}

/// A width none of whose channels is read any more still keeps one channel in
/// the plan read off the network, and the compacted model computes the same.
#[test]
fn a_fully_dead_width_keeps_one_channel() {
    let mut model = load(&small_net(21)).unwrap();
    let arch = model.architecture().clone();
    let mix = arch.layer_index("mix").unwrap();
    // `mix` reads left (4 channels) then right (6): zero its weights on `left`.
    let mut w = model.weights(mix).unwrap();
    for o in 0..10 {
        w[o * 10..o * 10 + 4].fill(0.0);
    }
    model.write_weights(mix, &w).unwrap();
    let plan = PruningPlan::from_network(&model).unwrap();
    let left = arch.layers()[arch.layer_index("left").unwrap()].output;
    assert_eq!(plan.kept()[left.0], vec![0]);
    let compact = model.compact(&plan).unwrap();
    let x = input(2 * 3 * 144, 5);
    let (a, b) = (model.run(&x, 2).unwrap(), compact.run(&x, 2).unwrap());
    for (p, q) in a.iter().zip(&b) {
        assert_relative_eq!(*p, *q, epsilon = 1e-5, max_relative = 1e-4);
    }
}

/// A depthwise convolution compacted down to one channel keeps sharing its
/// input's width, so the compact model's widths are the plan's.
#[test]
fn depthwise_compacted_to_one_channel_keeps_its_coupling() {
    let mut model = load(&small_net(31)).unwrap();
    let arch = model.architecture().clone();
    let mix = arch.layers()[arch.layer_index("mix").unwrap()].output.0;
    let mut kept: Vec<Vec<usize>> = arch
        .widths()
        .iter()
        .map(|w| (0..w.channels).collect())
        .collect();
    kept[mix] = vec![7];
    let plan = PruningPlan::new(&arch, kept).unwrap();
    plan.apply(&mut model).unwrap();
    let compact = model.compact(&plan).unwrap();
    let widths: Vec<usize> = compact
        .architecture()
        .widths()
        .iter()
        .map(|w| w.channels)
        .collect();
    assert_eq!(widths, plan.widths());
    let x = input(3 * 144, 2);
    let (a, b) = (model.run(&x, 1).unwrap(), compact.run(&x, 1).unwrap());
    for (p, q) in a.iter().zip(&b) {
        assert_relative_eq!(*p, *q, epsilon = 1e-5, max_relative = 1e-4);
    }
    // The compact model compacts again (a full plan leaves it as it is).
    let again = compact
        .compact(&PruningPlan::full(compact.architecture()))
        .unwrap();
    assert_eq!(
        again.architecture().fingerprint(),
        compact.architecture().fingerprint()
    );
}
