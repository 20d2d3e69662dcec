//! The candle adapter: a candle LeNet-5 given the reference CNN's weights computes
//! the same logits and the same gradients, and the adapter's contracts hold.

use approx::assert_relative_eq;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Linear, VarBuilder, VarMap};
use energy_prune::arch::zoo;
use energy_prune::network::{Network, NetworkMut, ParamKind, Trainable};
use energy_prune_candle::{ActivationQuant, CandleLayer, CandleNetwork, max_pool2d};
use energy_prune_nn::Cnn;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

struct LeNet5 {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Module for LeNet5 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = max_pool2d(&self.conv1.forward(x)?.relu()?, 2)?;
        let x = max_pool2d(&self.conv2.forward(&x)?.relu()?, 2)?;
        let x = x.flatten_from(1)?;
        let x = self.fc1.forward(&x)?.relu()?;
        let x = self.fc2.forward(&x)?.relu()?;
        self.fc3.forward(&x)
    }
}

/// A candle LeNet-5 and its layers' variables.
fn lenet5_parts() -> (LeNet5, Vec<CandleLayer>) {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let cfg = candle_nn::Conv2dConfig::default();
    let model = LeNet5 {
        conv1: candle_nn::conv2d(1, 6, 5, cfg, vb.pp("conv1")).unwrap(),
        conv2: candle_nn::conv2d(6, 16, 5, cfg, vb.pp("conv2")).unwrap(),
        fc1: candle_nn::linear(400, 120, vb.pp("fc1")).unwrap(),
        fc2: candle_nn::linear(120, 84, vb.pp("fc2")).unwrap(),
        fc3: candle_nn::linear(84, 10, vb.pp("fc3")).unwrap(),
    };
    let layers = ["conv1", "conv2", "fc1", "fc2", "fc3"]
        .iter()
        .map(|p| CandleLayer::from_varmap(&vars, p).unwrap())
        .collect();
    (model, layers)
}

fn candle_lenet5() -> CandleNetwork<LeNet5> {
    let (model, layers) = lenet5_parts();
    CandleNetwork::new(zoo::lenet5().unwrap(), model, layers, vec![], [1, 32, 32]).unwrap()
}

/// Copy every weight and bias of `src` into `dst` through the traits.
fn copy_params(src: &mut Cnn, dst: &mut CandleNetwork<LeNet5>) {
    for l in 0..src.architecture().layers().len() {
        dst.write_weights(l, &src.weights(l).unwrap()).unwrap();
    }
    let mut biases = Vec::new();
    src.visit_params(&mut |kind, values, _| {
        if let ParamKind::Bias(l) = kind {
            biases.push((l, values.to_vec()));
        }
    });
    dst.visit_params(&mut |kind, values, _| {
        if let ParamKind::Bias(l) = kind {
            let b = &biases.iter().find(|(k, _)| *k == l).unwrap().1;
            values.copy_from_slice(b);
        }
    });
}

fn grads(net: &mut impl Trainable) -> Vec<(ParamKind, Vec<f32>)> {
    let mut out = Vec::new();
    net.visit_params(&mut |kind, _, g| out.push((kind, g.to_vec())));
    out.retain(|(k, _)| matches!(k, ParamKind::Weight(_) | ParamKind::Bias(_)));
    out.sort_by_key(|(k, _)| format!("{k:?}"));
    out
}

#[test]
fn candle_lenet5_matches_the_reference_cnn_forward_and_backward() {
    let mut reference = Cnn::lenet5(3).unwrap();
    let mut net = candle_lenet5();
    copy_params(&mut reference, &mut net);
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let batch = 4;
    let x: Vec<f32> = (0..batch * 1024)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    reference.forward(&x, batch, &mut a).unwrap();
    net.forward(&x, batch, &mut b).unwrap();
    assert_eq!(a.len(), batch * 10);
    for (p, q) in a.iter().zip(&b) {
        assert_relative_eq!(*p, *q, epsilon = 1e-4, max_relative = 1e-4);
    }
    let g: Vec<f32> = (0..batch * 10)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    reference.backward(&g).unwrap();
    net.backward(&g).unwrap();
    let (ga, gb) = (grads(&mut reference), grads(&mut net));
    assert_eq!(ga.len(), 10);
    for ((ka, va), (kb, vb)) in ga.iter().zip(&gb) {
        assert_eq!(ka, kb);
        let scale = va.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (p, q) in va.iter().zip(vb) {
            assert!((p - q).abs() <= 1e-3 * scale, "{ka:?}: {p} vs {q}");
        }
    }
}

#[test]
fn candle_gradient_matches_finite_differences() {
    // d/dw of sum(logits * g) for fc3's weights, by central differences in f64.
    let mut net = candle_lenet5();
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    let x: Vec<f32> = (0..2 * 1024).map(|_| rng.random_range(-1.0..1.0)).collect();
    let g: Vec<f32> = (0..20).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut logits = Vec::new();
    net.forward(&x, 2, &mut logits).unwrap();
    net.backward(&g).unwrap();
    let analytic: Vec<f64> = grads(&mut net)
        .into_iter()
        .find(|(k, _)| *k == ParamKind::Weight(4))
        .unwrap()
        .1
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let w0: Vec<f64> = net
        .weights(4)
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    // 40 coordinates keep the test quick; fc3 is linear in its weights.
    let (x0, a0) = (&w0[..40], &analytic[..40]);
    energy_prune_testing::check_gradient(x0, a0, 1e-2, 1e-3, 1e-2, |w| {
        let mut full: Vec<f32> = w0.iter().map(|&v| v as f32).collect();
        for (d, s) in full.iter_mut().zip(w) {
            *d = *s as f32;
        }
        net.write_weights(4, &full).unwrap();
        let mut y = Vec::new();
        net.predict(&x, 2, &mut y).unwrap();
        y.iter()
            .zip(&g)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    })
    .unwrap();
}

#[test]
fn exact_max_pool_matches_candles_forward() {
    let x = Tensor::arange(0f32, 2.0 * 3.0 * 7.0 * 6.0, &Device::Cpu)
        .unwrap()
        .reshape((2, 3, 7, 6))
        .unwrap()
        .sin()
        .unwrap();
    let a = max_pool2d(&x, 2).unwrap();
    let b = x.max_pool2d(2).unwrap();
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(a, b);
    assert!(max_pool2d(&x, 0).is_err());
    assert!(max_pool2d(&x, 8).is_err());
}

#[test]
fn contracts_of_the_adapter() {
    let mut net = candle_lenet5();
    assert_eq!(net.input_len(), 1024);
    assert_eq!(net.num_classes(), 10);
    let before = net.weights(0).unwrap();
    let mut bad = before.clone();
    bad[0] = f32::NAN;
    assert!(net.write_weights(0, &bad).is_err());
    assert!(net.write_weights(0, &bad[1..]).is_err());
    assert!(net.write_weights(9, &before).is_err());
    assert_eq!(net.weights(0).unwrap(), before);
    let mut y = Vec::new();
    assert!(net.forward(&[0.0; 10], 1, &mut y).is_err());
    assert!(net.backward(&[0.0; 10]).is_err());
    // Binding the wrong number of layers, or a layer of the wrong size, is refused.
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let fc = candle_nn::linear(4, 3, vb.pp("fc")).unwrap();
    let layer = CandleLayer::from_varmap(&vars, "fc").unwrap();
    assert!(CandleLayer::from_varmap(&vars, "nope").is_err());
    let lenet = zoo::lenet5().unwrap();
    assert!(
        CandleNetwork::new(
            lenet.clone(),
            fc.clone(),
            vec![layer.clone()],
            vec![],
            [1, 32, 32]
        )
        .is_err()
    );
    let five = vec![layer; 5];
    assert!(CandleNetwork::new(lenet, fc, five, vec![], [1, 32, 32]).is_err());
}

#[test]
fn bindings_are_checked() {
    use energy_prune::arch::ArchBuilder;
    let arch = {
        let mut b = ArchBuilder::new("tiny");
        let x = b.input(4, 1, 1).unwrap();
        let y = b.linear("fc", &x, 3, true).unwrap();
        b.finish(&y).unwrap()
    };
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let fc = candle_nn::linear(4, 3, vb.pp("fc")).unwrap();
    let good = CandleLayer::from_varmap(&vars, "fc").unwrap();
    // A bias of the wrong size, a zero input size, an f64 weight.
    let other = VarMap::new();
    let vb2 = VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu);
    let _ = candle_nn::linear(4, 2, vb2.pp("x")).unwrap();
    let wrong_bias = CandleLayer {
        weight: good.weight.clone(),
        bias: CandleLayer::from_varmap(&other, "x").unwrap().bias,
    };
    assert!(
        CandleNetwork::new(
            arch.clone(),
            fc.clone(),
            vec![wrong_bias],
            vec![],
            [4, 1, 1]
        )
        .is_err()
    );
    assert!(
        CandleNetwork::new(
            arch.clone(),
            fc.clone(),
            vec![good.clone()],
            vec![],
            [4, 0, 1]
        )
        .is_err()
    );
    let f64_vars = VarMap::new();
    let vb3 = VarBuilder::from_varmap(&f64_vars, DType::F64, &Device::Cpu);
    let _ = candle_nn::linear(4, 3, vb3.pp("d")).unwrap();
    let d = CandleLayer::from_varmap(&f64_vars, "d").unwrap();
    let e = CandleNetwork::new(arch.clone(), fc.clone(), vec![d], vec![], [4, 1, 1]).unwrap_err();
    assert!(e.to_string().contains("f32"), "{e}");
    // The bound network predicts through the candle module (inputs arrive as
    // N x C x H x W: the module flattens them for its linear layer).
    let model = move |x: &Tensor| fc.forward(&x.flatten_from(1)?);
    let mut net = CandleNetwork::new(arch, model, vec![good], vec![], [4, 1, 1]).unwrap();
    let t = net.forward_tensor(&[1.0, 2.0, 3.0, 4.0], 1).unwrap();
    let mut y = Vec::new();
    net.predict(&[1.0, 2.0, 3.0, 4.0], 1, &mut y).unwrap();
    assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), y);
    assert!(net.predict(&[1.0], 1, &mut y).is_err());
    let _ = net.model();
}

/// LeNet-5 quantizing every prunable layer's input.
struct QuantLeNet5 {
    net: LeNet5,
    q: Vec<ActivationQuant>,
}

impl Module for QuantLeNet5 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let m = &self.net;
        let x = self.q[0].forward(x)?;
        let x = max_pool2d(&m.conv1.forward(&x)?.relu()?, 2)?;
        let x = self.q[1].forward(&x)?;
        let x = max_pool2d(&m.conv2.forward(&x)?.relu()?, 2)?;
        let x = self.q[2].forward(&x.flatten_from(1)?)?;
        let x = self.q[3].forward(&m.fc1.forward(&x)?.relu()?)?;
        let x = self.q[4].forward(&m.fc2.forward(&x)?.relu()?)?;
        m.fc3.forward(&x)
    }
}

fn candle_quant_lenet5() -> CandleNetwork<QuantLeNet5> {
    let (net, layers) = lenet5_parts();
    let q: Vec<ActivationQuant> = (0..5).map(|_| ActivationQuant::new()).collect();
    let model = QuantLeNet5 { net, q: q.clone() };
    CandleNetwork::new(zoo::lenet5().unwrap(), model, layers, vec![], [1, 32, 32])
        .unwrap()
        .with_activation_quantizers(q.into_iter().map(Some).collect())
        .unwrap()
}

#[test]
fn candle_activation_quantizers_match_the_reference_cnn_forward_and_backward() {
    use energy_prune::energy::NumberFormat;
    let mut reference = Cnn::lenet5(5).unwrap();
    let mut net = candle_quant_lenet5();
    let mut rng = ChaCha12Rng::seed_from_u64(4);
    let batch = 4;
    let x: Vec<f32> = (0..batch * 1024)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let formats = [4u8, 6, 8, 4, 8];
    let ranges = [0.8f32, 1.5, 2.0, 1.2, 1.0];
    for (l, (&b, &r)) in formats.iter().zip(&ranges).enumerate() {
        assert!(net.set_activation_format(l, NumberFormat::Int(b)).unwrap());
        reference
            .set_activation_quantization(l, NumberFormat::Int(b))
            .unwrap();
        let q = reference.activation_quantizer_mut(l).unwrap();
        q.range = r;
        q.calibrating = false;
        q.momentum = 0.0; // keep the range fixed through the training pass below
        let q = *q;
        net.activation_quantizers()[l]
            .as_ref()
            .unwrap()
            .set_quantizer(q)
            .unwrap();
    }
    for l in 0..5 {
        let w = reference.weights(l).unwrap();
        net.write_weights(l, &w).unwrap();
    }
    let mut biases = Vec::new();
    reference.visit_params(&mut |kind, values, _| {
        if let ParamKind::Bias(l) = kind {
            biases.push((l, values.to_vec()));
        }
    });
    net.visit_params(&mut |kind, values, _| {
        if let ParamKind::Bias(l) = kind {
            values.copy_from_slice(&biases.iter().find(|(k, _)| *k == l).unwrap().1);
        }
    });
    let (mut a, mut b) = (Vec::new(), Vec::new());
    reference.predict(&x, batch, &mut a).unwrap();
    net.predict(&x, batch, &mut b).unwrap();
    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .zip(&b)
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(d <= 1e-3 * scale.max(1.0), "quantized logits differ by {d}");
    // And the quantization is real: the float network computes something else.
    let mut float = candle_lenet5();
    for l in 0..5 {
        float
            .write_weights(l, &reference.weights(l).unwrap())
            .unwrap();
    }
    let mut c = Vec::new();
    float.predict(&x, batch, &mut c).unwrap();
    let e = c
        .iter()
        .zip(&b)
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(e > 10.0 * d.max(1e-6), "quantization changes nothing ({e})");
    // Straight-through gradients agree (training passes, ranges held fixed).
    let g: Vec<f32> = (0..batch * 10)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    reference.forward(&x, batch, &mut a).unwrap();
    net.forward(&x, batch, &mut b).unwrap();
    reference.backward(&g).unwrap();
    net.backward(&g).unwrap();
    let (ga, gb) = (grads(&mut reference), grads(&mut net));
    for ((ka, va), (kb, vb)) in ga.iter().zip(&gb) {
        assert_eq!(ka, kb);
        let scale = va.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
        let d = va
            .iter()
            .zip(vb)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            d <= 2e-3 * scale,
            "{ka:?}: gradients differ by {d} (scale {scale})"
        );
    }
}

#[test]
fn candle_activation_quantizers_track_ranges_in_training_only() {
    use energy_prune::energy::NumberFormat;
    let mut net = candle_quant_lenet5();
    let x = vec![0.5f32; 2 * 1024];
    let mut y = Vec::new();
    net.predict(&x, 2, &mut y).unwrap();
    let q0 = net.activation_quantizers()[0].as_ref().unwrap().clone();
    assert_eq!(
        q0.quantizer().unwrap().range,
        0.0,
        "inference moves no range"
    );
    net.forward(&x, 2, &mut y).unwrap();
    assert_eq!(
        q0.quantizer().unwrap().range,
        0.5,
        "calibrated on the training batch"
    );
    assert!(net.set_activation_format(0, NumberFormat::Int(4)).unwrap());
    assert_eq!(q0.quantizer().unwrap().format, NumberFormat::Int(4));
    assert!(net.set_activation_format(0, NumberFormat::Int(1)).is_err());
    assert!(net.set_activation_format(7, NumberFormat::INT8).is_err());
    // Without registered quantizers the format is priced, not trained.
    let mut plain = candle_lenet5();
    assert!(!plain.set_activation_format(0, NumberFormat::INT8).unwrap());
    assert!(
        candle_quant_lenet5()
            .with_activation_quantizers(vec![None; 3])
            .is_err()
    );
    assert!(ActivationQuant::new().set_range(f32::NAN).is_err());
}
