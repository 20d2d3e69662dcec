//! Finite-difference checks of every backward pass of the reference CNN, and
//! determinism under a fixed seed.

use energy_prune::network::{Network, NetworkMut, ParamKind, Trainable};
use energy_prune::train::{cross_entropy, mse_distillation};
use energy_prune_nn::{Cnn, LayerSpec};
use energy_prune_testing::check_gradient;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

use common::conv;
use energy_prune_testing::data as common;

/// A small net exercising strided, padded, grouped and pointwise convolutions,
/// both pools, ReLU and a flattening linear layer.
fn small_net(seed: u64) -> Cnn {
    let specs = [
        conv("c1", 4, 3, 1, 1, 1),
        LayerSpec::Relu,
        conv("c2", 6, 3, 2, 1, 2),
        LayerSpec::MaxPool {
            kernel: 2,
            stride: 1,
        },
        conv("c3", 6, 3, 1, 1, 6), // depthwise
        conv("c4", 5, 1, 1, 0, 1), // pointwise
        LayerSpec::AvgPool {
            kernel: 2,
            stride: 2,
        },
        LayerSpec::linear("fc1", 7),
        LayerSpec::Relu,
        LayerSpec::linear("fc2", 3),
    ];
    let mut net = Cnn::new((2, 9, 9), &specs, seed).unwrap();
    net.set_threads(1);
    // Input masks on the first conv, the depthwise conv, the flattening linear layer
    // and a plain linear layer, with values away from 0/1.
    for l in [0, 2, 4, 5] {
        net.enable_input_mask(l).unwrap();
        let n = net.input_mask(l).unwrap().len();
        let m: Vec<f32> = (0..n)
            .map(|i| 0.5 + ((i * 37 + l) % 11) as f32 / 10.0)
            .collect();
        net.write_input_mask(l, &m).unwrap();
    }
    // Nonzero biases so bias gradients are exercised through ReLU.
    for l in 0..net.architecture().layers().len() {
        let n = net.bias(l).unwrap().len();
        let b: Vec<f32> = (0..n).map(|i| 0.05 * (i as f32 - 1.0)).collect();
        net.set_bias(l, &b).unwrap();
    }
    net
}

fn loss_of(
    net: &mut Cnn,
    x: &[f32],
    batch: usize,
    labels: &[u32],
    teacher: &[f32],
    grad: bool,
) -> f64 {
    let mut logits = Vec::new();
    net.forward(x, batch, &mut logits).unwrap();
    let mut g = vec![0.0; logits.len()];
    let ce = cross_entropy(&logits, labels, 3, 0.5, &mut g).unwrap() as f64;
    let mse = mse_distillation(&logits, teacher, 0.5, &mut g).unwrap() as f64;
    if grad {
        net.backward(&g).unwrap();
    }
    0.5 * ce + 0.5 * mse
}

#[test]
fn every_parameter_gradient_matches_finite_differences() {
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let mut net = small_net(3);
    let batch = 4;
    let x_in: Vec<f32> = (0..batch * net.input_len())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let labels = [0u32, 2, 1, 2];
    let teacher: Vec<f32> = (0..batch * 3)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    loss_of(&mut net, &x_in, batch, &labels, &teacher, true);
    let mut grads: Vec<(ParamKind, Vec<f32>)> = Vec::new();
    net.visit_params(&mut |k, _, g| grads.push((k, g.to_vec())));
    // Small steps: max-pool and ReLU are piecewise linear, and a larger step can
    // cross a kink (a change of the winning element) and corrupt the difference.
    let eps = 1e-3;
    let mut checked = 0;
    for (kind, g) in &grads {
        for idx in (0..g.len()).step_by(1 + g.len() / 25) {
            let set = |net: &mut Cnn, value: f32| match *kind {
                ParamKind::Weight(l) => {
                    let mut w = net.weights(l).unwrap();
                    w[idx] = value;
                    net.write_weights(l, &w).unwrap();
                }
                ParamKind::Bias(l) => {
                    let mut b = net.bias(l).unwrap().to_vec();
                    b[idx] = value;
                    net.set_bias(l, &b).unwrap();
                }
                ParamKind::InputMask(l) => {
                    let mut m = net.input_mask(l).unwrap().to_vec();
                    m[idx] = value;
                    net.write_input_mask(l, &m).unwrap();
                }
                _ => unreachable!(),
            };
            let v0 = match *kind {
                ParamKind::Weight(l) => net.weights(l).unwrap()[idx],
                ParamKind::Bias(l) => net.bias(l).unwrap()[idx],
                ParamKind::InputMask(l) => net.input_mask(l).unwrap()[idx],
                _ => unreachable!(),
            };
            let an = [g[idx] as f64];
            let mut loss_at = |x: &[f64]| {
                set(&mut net, x[0] as f32);
                loss_of(&mut net, &x_in, batch, &labels, &teacher, false)
            };
            // A step can cross a kink of ReLU or max-pool; a kink is not crossed by
            // both step sizes, a wrong gradient fails both.
            let first = check_gradient(&[v0 as f64], &an, eps, 2e-3, 2e-2, &mut loss_at);
            let second = check_gradient(&[v0 as f64], &an, eps / 4.0, 2e-3, 2e-2, &mut loss_at);
            set(&mut net, v0);
            assert!(
                first.is_ok() || second.is_ok(),
                "{kind:?}[{idx}]: {first:?} / {second:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "checked only {checked} entries");
    let masks = grads
        .iter()
        .filter(|(k, _)| matches!(k, ParamKind::InputMask(_)))
        .count();
    assert_eq!(masks, 4, "every enabled input mask is visited");
}

/// Quantized activations: with the input of `fc1` quantized to 4 bits, every
/// gradient of the layers from `fc1` on matches finite differences of the
/// fake-quantized forward pass (the quantized input does not depend on them); the
/// straight-through gradient upstream is zero where the input is clipped.
#[test]
fn gradients_through_quantized_activations() {
    use energy_prune::energy::NumberFormat;
    let mut rng = ChaCha12Rng::seed_from_u64(17);
    let mut net = small_net(5);
    let batch = 4;
    let x_in: Vec<f32> = (0..batch * net.input_len())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let labels = [1u32, 0, 2, 2];
    let teacher: Vec<f32> = (0..batch * 3)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    net.set_activation_quantization(4, NumberFormat::Int(4))
        .unwrap();
    // Calibrate on the batch itself (running maximum), then keep the range.
    loss_of(&mut net, &x_in, batch, &labels, &teacher, false);
    let range = net.activation_quantizers()[4].unwrap().range;
    assert!(range > 0.0);
    loss_of(&mut net, &x_in, batch, &labels, &teacher, true);
    assert_eq!(net.activation_quantizers()[4].unwrap().range, range);
    let mut grads: Vec<(ParamKind, Vec<f32>)> = Vec::new();
    net.visit_params(&mut |k, _, g| grads.push((k, g.to_vec())));
    let predict_loss = |net: &mut Cnn| {
        let mut logits = Vec::new();
        net.predict(&x_in, batch, &mut logits).unwrap();
        let mut g = vec![0.0; logits.len()];
        let ce = cross_entropy(&logits, &labels, 3, 0.5, &mut g).unwrap() as f64;
        let mse = mse_distillation(&logits, &teacher, 0.5, &mut g).unwrap() as f64;
        0.5 * ce + 0.5 * mse
    };
    let mut checked = 0;
    for (kind, g) in &grads {
        let ParamKind::Weight(l) = *kind else {
            continue;
        };
        if l < 4 {
            continue;
        }
        for idx in (0..g.len()).step_by(1 + g.len() / 20) {
            let w0 = net.weights(l).unwrap();
            let mut loss_at = |x: &[f64]| {
                let mut w = w0.clone();
                w[idx] = x[0] as f32;
                net.write_weights(l, &w).unwrap();
                predict_loss(&mut net)
            };
            let r = check_gradient(
                &[w0[idx] as f64],
                &[g[idx] as f64],
                1e-3,
                2e-3,
                2e-2,
                &mut loss_at,
            );
            net.write_weights(l, &w0).unwrap();
            assert!(r.is_ok(), "{kind:?}[{idx}]: {r:?}");
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked}");
    // Quantization changes the forward pass.
    let quantized = predict_loss(&mut net);
    net.set_activation_quantization(4, NumberFormat::INT16)
        .unwrap();
    assert_ne!(predict_loss(&mut net), quantized);
    // A range below every input clips everything: nothing flows upstream.
    net.set_activation_quantization(4, NumberFormat::Int(4))
        .unwrap();
    let q = net.activation_quantizer_mut(4).unwrap();
    q.range = 1e-7;
    q.calibrating = false;
    q.momentum = 0.0;
    loss_of(&mut net, &x_in, batch, &labels, &teacher, true);
    net.visit_params(&mut |k, _, g| match k {
        ParamKind::Weight(l) if l < 4 => assert!(g.iter().all(|v| *v == 0.0), "{k:?}"),
        ParamKind::Weight(4) => assert!(g.iter().any(|v| *v != 0.0)),
        _ => {}
    });
    assert!(
        net.set_activation_quantization(99, NumberFormat::INT8)
            .is_err()
    );
}

#[test]
fn training_is_deterministic_and_thread_count_only_reorders_sums() {
    let run = |threads: usize| {
        let mut net = small_net(11);
        net.set_threads(threads);
        let mut opt = energy_prune::train::Sgd::new(0.05, 0.9, 1e-4).unwrap();
        let mut rng = ChaCha12Rng::seed_from_u64(5);
        let batch = 32;
        let mut logits = Vec::new();
        for _ in 0..5 {
            let x: Vec<f32> = (0..batch * net.input_len())
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let labels: Vec<u32> = (0..batch).map(|_| rng.random_range(0..3u32)).collect();
            net.forward(&x, batch, &mut logits).unwrap();
            let mut g = vec![0.0; logits.len()];
            cross_entropy(&logits, &labels, 3, 1.0, &mut g).unwrap();
            net.backward(&g).unwrap();
            opt.step(&mut net).unwrap();
        }
        net.weights(0).unwrap()
    };
    let a = run(2);
    let b = run(2);
    assert_eq!(
        a, b,
        "same seed and threads must give bit-identical weights"
    );
    let c = run(1);
    for (x, y) in a.iter().zip(&c) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut net = small_net(1);
    let mut logits = Vec::new();
    assert!(net.forward(&[0.0; 5], 1, &mut logits).is_err());
    assert!(net.forward(&[], 0, &mut logits).is_err());
    assert!(net.backward(&[0.0; 3]).is_err(), "backward before forward");
    net.forward(&vec![0.0; net.input_len()], 1, &mut logits)
        .unwrap();
    assert!(net.backward(&[0.0; 2]).is_err());
    assert!(net.backward(&[f32::NAN, 0.0, 0.0]).is_err());
    assert!(net.write_weights(0, &[0.0; 3]).is_err());
    let mut w = net.weights(0).unwrap();
    w[0] = f32::INFINITY;
    assert!(net.write_weights(0, &w).is_err());
    assert!(net.weights(99).is_err());
    assert!(
        net.write_input_mask(1, &[1.0; 3]).is_err(),
        "no mask enabled on layer 1"
    );
    net.enable_input_mask(1).unwrap();
    assert!(
        net.write_input_mask(1, &[1.0; 3]).is_err(),
        "wrong mask length"
    );
    assert!(Cnn::new((1, 4, 4), &[LayerSpec::Relu], 0).is_err());
    assert!(
        Cnn::new(
            (1, 4, 4),
            &[conv("c", 2, 5, 1, 0, 1), LayerSpec::linear("f", 2)],
            0
        )
        .is_err()
    );
    assert!(
        Cnn::new(
            (3, 4, 4),
            &[conv("c", 4, 3, 1, 0, 2), LayerSpec::linear("f", 2)],
            0
        )
        .is_err()
    );
}

#[test]
fn save_and_load_round_trip_and_reject_other_files() {
    let dir = std::env::temp_dir().join(format!("ep-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("net.bin");
    let a = small_net(1);
    a.save(&path).unwrap();
    let mut b = small_net(2);
    assert_ne!(a.weights(0).unwrap(), b.weights(0).unwrap());
    b.load(&path).unwrap();
    for l in 0..a.architecture().layers().len() {
        assert_eq!(a.weights(l).unwrap(), b.weights(l).unwrap());
        assert_eq!(a.bias(l).unwrap(), b.bias(l).unwrap());
    }
    // A different architecture and a truncated file are rejected without changes.
    let mut lenet = Cnn::lenet5(0).unwrap();
    let before = lenet.weights(0).unwrap();
    assert!(lenet.load(&path).is_err());
    assert_eq!(lenet.weights(0).unwrap(), before);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = b.load(&path).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
