//! Pruning plans and compaction: the compact network computes what the masked one does.

use energy_prune::network::PruningPlan;
use energy_prune::network::{Network, Trainable};
use energy_prune::nn::{Cnn, LayerSpec};
use rand::{RngExt, SeedableRng, rngs::StdRng};

mod common;
use common::conv;

fn net() -> Cnn {
    let specs = [
        conv("c1", 8, 3, 1, 1, 1),
        LayerSpec::Relu,
        LayerSpec::MaxPool {
            kernel: 2,
            stride: 2,
        },
        conv("c2", 12, 3, 1, 1, 1),
        LayerSpec::Relu,
        conv("dw", 12, 3, 2, 1, 12),
        conv("pw", 10, 1, 1, 0, 1),
        LayerSpec::Relu,
        LayerSpec::linear("fc1", 16),
        LayerSpec::Relu,
        LayerSpec::linear("fc2", 4),
    ];
    let mut n = Cnn::new((2, 12, 12), &specs, 5).unwrap();
    for l in 0..n.architecture().layers().len() {
        let b: Vec<f32> = (0..n.bias(l).unwrap().len())
            .map(|i| 0.1 * (i as f32 % 3.0) - 0.05)
            .collect();
        n.set_bias(l, &b).unwrap();
    }
    n
}

#[test]
fn compact_network_equals_masked_network() {
    let mut rng = StdRng::seed_from_u64(1);
    let dense = net();
    let arch = dense.architecture().clone();
    for trial in 0..5 {
        let mut plan = PruningPlan::full(&arch);
        for (u, w) in arch.widths().iter().enumerate() {
            if !w.fixed {
                let kept: Vec<usize> = (0..w.channels).filter(|_| rng.random_bool(0.6)).collect();
                plan.kept[u] = if kept.is_empty() {
                    vec![trial % w.channels]
                } else {
                    kept
                };
            }
        }
        let mut masked = dense.clone();
        plan.apply(&mut masked).unwrap();
        assert_eq!(
            PruningPlan::from_network(&masked).unwrap(),
            plan,
            "the plan is read back from the masked network"
        );
        let mut compact = dense.compact(&plan).unwrap();
        assert_eq!(
            compact
                .architecture()
                .widths()
                .iter()
                .map(|w| w.channels)
                .collect::<Vec<_>>(),
            plan.widths()
        );
        assert!(compact.architecture().weight_count() < arch.weight_count());
        let batch = 5;
        let x: Vec<f32> = (0..batch * masked.input_len())
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        masked.forward(&x, batch, &mut a).unwrap();
        compact.forward(&x, batch, &mut b).unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!(
                (p - q).abs() <= 1e-4 * (1.0 + p.abs()),
                "trial {trial}: {p} vs {q}"
            );
        }
    }
}

#[test]
fn bad_plans_are_errors() {
    let dense = net();
    let arch = dense.architecture().clone();
    let mut plan = PruningPlan::full(&arch);
    plan.kept[1] = vec![];
    assert!(dense.compact(&plan).is_err());
    let mut plan = PruningPlan::full(&arch);
    plan.kept[0] = vec![0]; // the input is fixed
    assert!(dense.compact(&plan).is_err());
    let mut plan = PruningPlan::full(&arch);
    plan.kept[2] = vec![3, 1];
    assert!(plan.check(&arch).is_err());
    plan.kept.pop();
    assert!(dense.compact(&plan).is_err());
}
