//! The training drivers on a tiny synthetic task: budgets are met (verified on the
//! exact model), bad inputs are errors, input-mask rounds leave 0/1 masks.

use energy_prune::Error;
use energy_prune::prune::Budget;

use common::synthetic;
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::Network;
use energy_prune::network::NetworkState;
use energy_prune::prune::{
    Data, MagnitudeRule, MaskRounds, NoObserver, OnEpoch, ProjectedTraining, magnitude_prune,
    train_magnitude, train_projected,
};
use energy_prune_nn::Cnn;
use energy_prune_testing::data as common;

fn net() -> Cnn {
    common::small_cnn(4, 16, 3)
}

fn cfg() -> ProjectedTraining {
    ProjectedTraining {
        epochs: 3,
        finetune_epochs: 1,
        batch_size: 16,
        lr: 0.05,
        project_every: 5,
        ..Default::default()
    }
}

#[test]
fn projected_training_meets_the_budget_and_learns() {
    let (train, test) = (synthetic(512, 1), synthetic(256, 2));
    let mut n = net();
    let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
    let dense = model
        .energy(&NetworkState::from_network(&n).unwrap())
        .unwrap()
        .total;
    let budget = model.dense_floor() + 0.3 * (dense - model.dense_floor());
    let mut epochs_seen = 0;
    let mut obs = OnEpoch(|_: &energy_prune::prune::EpochEvent| epochs_seen += 1);
    let data = Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let r = train_projected(
        &mut n,
        vec![Budget::absolute("energy", &model, budget)],
        data,
        &cfg(),
        &mut obs,
    )
    .unwrap();
    assert!(
        r.budget_met() && r.status.cost <= budget,
        "{} > {budget}",
        r.status.cost
    );
    assert!(r.status.relaxed_cost >= r.status.cost);
    assert_eq!(r.history.len(), 4);
    assert_eq!(epochs_seen, 4);
    // Energy measured independently from the network's weights.
    let again = model
        .energy(&NetworkState::from_network(&n).unwrap())
        .unwrap()
        .total;
    assert_eq!(again, r.status.cost);
    assert!(
        r.test_accuracy.unwrap() > 0.5,
        "accuracy {:?}",
        r.test_accuracy
    );

    let mut m = net();
    let data = Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let rm = train_magnitude(
        &mut m,
        vec![Budget::absolute("energy", &model, budget)],
        MagnitudeRule::Global,
        data,
        &cfg(),
        &mut NoObserver,
    )
    .unwrap();
    assert!(rm.budget_met() && rm.status.cost <= budget);
}

#[test]
fn magnitude_prune_keeps_the_most_weights_that_fit() {
    let n = net();
    let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
    let dense = NetworkState::from_network(&n).unwrap();
    let full = model.energy(&dense).unwrap().total;
    let budget = model.dense_floor() + 0.4 * (full - model.dense_floor());
    let mut s = dense.clone();
    let r = magnitude_prune(
        &mut s,
        &[Budget::absolute("energy", &model, budget)],
        MagnitudeRule::Global,
    )
    .unwrap()
    .remove(0);
    assert!(r.total <= budget);
    // Restoring the largest pruned weight would exceed the budget.
    let (mut best, mut at) = (0.0f32, (0, 0));
    for (l, (w, d)) in s.weights.iter().zip(&dense.weights).enumerate() {
        for (i, (a, b)) in w.iter().zip(d).enumerate() {
            if *a == 0.0 && b.abs() > best {
                best = b.abs();
                at = (l, i);
            }
        }
    }
    s.weights[at.0][at.1] = dense.weights[at.0][at.1];
    assert!(model.energy(&s).unwrap().total > budget);
    let mut s = dense.clone();
    assert!(matches!(
        magnitude_prune(
            &mut s,
            &[Budget::absolute(
                "energy",
                &model,
                0.5 * model.dense_floor()
            )],
            MagnitudeRule::Global
        ),
        Err(Error::InfeasibleBudget { .. })
    ));
}

/// The kept weights of layer `l`: (count, smallest kept magnitude, largest pruned).
fn kept_stats(w: &[f32], d: &[f32]) -> (usize, f32, f32) {
    let mut kept = (0, f32::INFINITY, 0.0f32);
    for (a, b) in w.iter().zip(d) {
        if *a != 0.0 {
            assert_eq!(a, b, "a kept weight keeps its value");
            kept.0 += 1;
            kept.1 = kept.1.min(b.abs());
        } else {
            kept.2 = kept.2.max(b.abs());
        }
    }
    kept
}

#[test]
fn layer_uniform_magnitude_keeps_the_same_fraction_of_every_layer() {
    let n = net();
    let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
    let dense = NetworkState::from_network(&n).unwrap();
    let full = model.energy(&dense).unwrap().total;
    for share in [0.15, 0.4, 0.8] {
        let budget = model.dense_floor() + share * (full - model.dense_floor());
        let mut s = dense.clone();
        let r = magnitude_prune(
            &mut s,
            &[Budget::absolute("energy", &model, budget)],
            MagnitudeRule::LayerUniform,
        )
        .unwrap()
        .remove(0);
        assert!(r.total <= budget);
        assert_eq!(r.total, model.energy(&s).unwrap().total);
        let fractions: Vec<f64> = s
            .weights
            .iter()
            .zip(&dense.weights)
            .map(|(w, d)| {
                let (k, smallest_kept, largest_pruned) = kept_stats(w, d);
                // Within a layer the kept weights are the largest ones.
                assert!(k == 0 || smallest_kept >= largest_pruned, "share {share}");
                k as f64 / d.iter().filter(|v| **v != 0.0).count() as f64
            })
            .collect();
        // round(q n_l) / n_l differs from q by at most 1 / (2 n_l) in every layer.
        let q = fractions.iter().sum::<f64>() / fractions.len() as f64;
        for (l, f) in fractions.iter().enumerate() {
            let n_l = dense.weights[l].len() as f64;
            assert!((f - q).abs() <= 1.0 / n_l + 1e-12, "layer {l}: {f} vs {q}");
        }
        // The next larger uniform fraction (one more weight in the smallest layer's
        // count step) no longer fits: keep every layer at least one weight more.
        let mut more = dense.clone();
        for (w, kept) in more.weights.iter_mut().zip(&s.weights) {
            let k = kept.iter().filter(|v| **v != 0.0).count();
            let mut idx: Vec<usize> = (0..w.len()).collect();
            idx.sort_by(|&a, &b| w[b].abs().total_cmp(&w[a].abs()).then(a.cmp(&b)));
            let keep: std::collections::HashSet<usize> =
                idx[..(k + 1).min(w.len())].iter().copied().collect();
            for (i, v) in w.iter_mut().enumerate() {
                if !keep.contains(&i) {
                    *v = 0.0;
                }
            }
        }
        assert!(model.energy(&more).unwrap().total > budget, "share {share}");
    }
    // Below the all-zero energy: an error, and the state is unchanged.
    let mut s = dense.clone();
    assert!(matches!(
        magnitude_prune(
            &mut s,
            &[Budget::absolute(
                "energy",
                &model,
                0.5 * model.dense_floor()
            )],
            MagnitudeRule::LayerUniform
        ),
        Err(Error::InfeasibleBudget { .. })
    ));
    assert_eq!(s, dense);
    // Global is the default rule and the one of magnitude_prune.
    let budget = model.dense_floor() + 0.3 * (full - model.dense_floor());
    let (mut a, mut b) = (dense.clone(), dense.clone());
    magnitude_prune(
        &mut a,
        &[Budget::absolute("energy", &model, budget)],
        MagnitudeRule::Global,
    )
    .unwrap();
    magnitude_prune(
        &mut b,
        &[Budget::absolute("energy", &model, budget)],
        MagnitudeRule::default(),
    )
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn layer_uniform_baseline_trains_within_the_budget() {
    let (train, test) = (synthetic(256, 1), synthetic(128, 2));
    let mut n = net();
    let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
    let full = model
        .energy(&NetworkState::from_network(&n).unwrap())
        .unwrap()
        .total;
    let budget = model.dense_floor() + 0.3 * (full - model.dense_floor());
    let data = Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let r = train_magnitude(
        &mut n,
        vec![Budget::absolute("energy", &model, budget)],
        MagnitudeRule::LayerUniform,
        data,
        &cfg(),
        &mut NoObserver,
    )
    .unwrap();
    assert_eq!(r.solver, "layer-uniform");
    assert!(r.budget_met());
    let e = model
        .energy(&NetworkState::from_network(&n).unwrap())
        .unwrap();
    assert!(e.total <= budget);
    assert_eq!(r.status.cost, e.total);
}

#[test]
fn bad_budgets_and_configs_are_errors() {
    let train = synthetic(64, 1);
    let mut n = net();
    let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
    let data = Data {
        train: &train,
        validation: None,
        test: None,
    };
    let err = train_projected(
        &mut n,
        vec![Budget::absolute(
            "energy",
            &model,
            0.5 * model.dense_floor(),
        )],
        data,
        &cfg(),
        &mut NoObserver,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InfeasibleBudget { .. }), "{err}");
    let bad = ProjectedTraining {
        project_every: 0,
        ..cfg()
    };
    assert!(
        train_projected(
            &mut n,
            vec![Budget::absolute(
                "energy",
                &model,
                2.0 * model.dense_floor()
            )],
            data,
            &bad,
            &mut NoObserver
        )
        .is_err()
    );
    let masks = ProjectedTraining {
        input_masks: Some(MaskRounds::default()),
        ..cfg()
    };
    let err = train_projected(
        &mut n,
        vec![Budget::absolute(
            "energy",
            &model,
            2.0 * model.dense_floor(),
        )],
        data,
        &masks,
        &mut NoObserver,
    )
    .unwrap_err();
    assert!(err.to_string().contains("validation"), "{err}");
    assert!(
        train_projected(
            &mut n,
            vec![Budget::absolute("energy", &model, f64::NAN)],
            data,
            &cfg(),
            &mut NoObserver
        )
        .is_err()
    );
}

#[test]
fn input_mask_rounds_leave_binary_masks_within_budget() {
    let (train, val) = (synthetic(256, 3), synthetic(128, 4));
    let mut n = net();
    n.enable_input_mask(0).unwrap();
    n.enable_input_mask(1).unwrap();
    let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
    let dense = model
        .energy(&NetworkState::from_network(&n).unwrap())
        .unwrap()
        .total;
    let budget = model.dense_floor() + 0.5 * (dense - model.dense_floor());
    let c = ProjectedTraining {
        input_masks: Some(MaskRounds {
            rounds: 2,
            project_every: 4,
            ..Default::default()
        }),
        ..cfg()
    };
    let data = Data {
        train: &train,
        validation: Some(&val),
        test: Some(&val),
    };
    let r = train_projected(
        &mut n,
        vec![Budget::absolute("energy", &model, budget)],
        data,
        &c,
        &mut NoObserver,
    )
    .unwrap();
    assert!(r.budget_met() && r.status.cost <= budget);
    for l in 0..2 {
        let m = n.input_mask(l).unwrap();
        assert!(
            m.iter().all(|v| *v == 0.0 || *v == 1.0),
            "mask of layer {l} is not binary"
        );
    }
}

#[test]
fn input_masks_reach_budgets_below_the_unmasked_floor() {
    let (train, val) = (synthetic(256, 5), synthetic(128, 6));
    let mut n = net();
    n.enable_input_mask(0).unwrap();
    n.enable_input_mask(1).unwrap();
    let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
    let state = NetworkState::from_network(&n).unwrap();
    let floor: f64 = model.input_energy(&state.input_masks).unwrap().iter().sum();
    let mut zero = state.clone();
    zero.input_masks
        .iter_mut()
        .flatten()
        .for_each(|m| m.fill(0.0));
    let min_floor: f64 = model.input_energy(&zero.input_masks).unwrap().iter().sum();
    assert!(min_floor < floor);
    let budget = floor - 0.02 * (floor - min_floor);
    let c = ProjectedTraining {
        input_masks: Some(MaskRounds {
            rounds: 3,
            project_every: 4,
            ..Default::default()
        }),
        ..cfg()
    };
    let data = Data {
        train: &train,
        validation: Some(&val),
        test: None,
    };
    let r = train_projected(
        &mut n,
        vec![Budget::absolute("energy", &model, budget)],
        data,
        &c,
        &mut NoObserver,
    )
    .unwrap();
    assert!(
        r.budget_met() && r.status.cost <= budget,
        "{} > {budget}",
        r.status.cost
    );
    // Without masks the same budget is infeasible.
    let mut plain = net();
    let data = Data {
        train: &train,
        validation: None,
        test: None,
    };
    let err = train_projected(
        &mut plain,
        vec![Budget::absolute("energy", &model, budget)],
        data,
        &cfg(),
        &mut NoObserver,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InfeasibleBudget { .. }));
}
