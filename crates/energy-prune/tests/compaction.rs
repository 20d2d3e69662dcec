//! Pruning plans and compaction: the compact network computes what the masked one does.

use energy_prune::network::PruningPlan;
use energy_prune::network::{Network, Trainable};
use energy_prune_nn::{Cnn, LayerSpec};
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

use common::conv;
use energy_prune_testing::data as common;

fn net() -> Cnn {
    net_with(8)
}

/// The test network with `c1` filters in its first convolution.
fn net_with(c1: usize) -> Cnn {
    let specs = [
        conv("c1", c1, 3, 1, 1, 1),
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
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let dense = net();
    let arch = dense.architecture().clone();
    for trial in 0..5 {
        let mut kept_all = PruningPlan::full(&arch).kept().to_vec();
        for (u, w) in arch.widths().iter().enumerate() {
            if !w.fixed {
                let kept: Vec<usize> = (0..w.channels).filter(|_| rng.random_bool(0.6)).collect();
                kept_all[u] = if kept.is_empty() {
                    vec![trial % w.channels]
                } else {
                    kept
                };
            }
        }
        let plan = PruningPlan::new(&arch, kept_all).unwrap();
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
    let with = |u: usize, k: Vec<usize>| {
        let mut kept = PruningPlan::full(&arch).kept().to_vec();
        kept[u] = k;
        PruningPlan::new(&arch, kept)
    };
    assert!(with(1, vec![]).is_err());
    let e = with(0, vec![0]).unwrap_err(); // the input is fixed
    assert!(e.to_string().contains("complete for fixed widths"), "{e}");
    assert!(with(2, vec![3, 1]).is_err());
    let mut fewer = PruningPlan::full(&arch).kept().to_vec();
    fewer.pop();
    assert!(PruningPlan::new(&arch, fewer).is_err());
}

/// A plan read off one network refuses a wider network with the same number of
/// widths (it would otherwise zero half of it): applying and compacting both fail,
/// and the network is unchanged.
#[test]
fn a_plan_refuses_another_architecture() {
    let small = net();
    let plan = PruningPlan::from_network(&small).unwrap();
    let mut wide = net_with(16);
    assert_eq!(plan.kept().len(), wide.architecture().widths().len());
    let before = energy_prune::network::NetworkState::from_network(&wide).unwrap();
    let e = plan.apply(&mut wide).unwrap_err();
    assert!(e.to_string().contains("fingerprint"), "{e}");
    assert!(wide.compact(&plan).is_err());
    assert_eq!(
        energy_prune::network::NetworkState::from_network(&wide).unwrap(),
        before
    );
    assert_eq!(plan.fingerprint(), small.architecture().fingerprint());
    assert_ne!(plan.fingerprint(), wide.architecture().fingerprint());
}
