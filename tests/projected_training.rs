//! The training drivers on a tiny synthetic task: budgets are met (verified on the
//! exact model), bad inputs are errors, input-mask rounds leave 0/1 masks.

use energy_prune::Error;

mod common;
use common::synthetic;
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::Network;
use energy_prune::network::NetworkState;
use energy_prune::nn::Cnn;
use energy_prune::prune::{
    Data, MaskRounds, NoObserver, OnEpoch, ProjectedTraining, magnitude_prune, train_magnitude,
    train_projected,
};

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
    let r = train_projected(&mut n, &model, budget, data, &cfg(), &mut obs).unwrap();
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
    let rm = train_magnitude(&mut m, &model, budget, data, &cfg(), &mut NoObserver).unwrap();
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
    let r = magnitude_prune(&model, &mut s, budget).unwrap();
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
        magnitude_prune(&model, &mut s, 0.5 * model.dense_floor()),
        Err(Error::InfeasibleBudget { .. })
    ));
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
        &model,
        0.5 * model.dense_floor(),
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
            &model,
            2.0 * model.dense_floor(),
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
        &model,
        2.0 * model.dense_floor(),
        data,
        &masks,
        &mut NoObserver,
    )
    .unwrap_err();
    assert!(err.to_string().contains("validation"), "{err}");
    assert!(train_projected(&mut n, &model, f64::NAN, data, &cfg(), &mut NoObserver).is_err());
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
    let r = train_projected(&mut n, &model, budget, data, &c, &mut NoObserver).unwrap();
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
    let r = train_projected(&mut n, &model, budget, data, &c, &mut NoObserver).unwrap();
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
    let err =
        train_projected(&mut plain, &model, budget, data, &cfg(), &mut NoObserver).unwrap_err();
    assert!(matches!(err, Error::InfeasibleBudget { .. }));
}
