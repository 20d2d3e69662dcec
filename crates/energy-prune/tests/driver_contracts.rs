//! The driver's terminations and their explanations, observers that stop a run,
//! the data a run needs, and the accessors of the weight-level solvers.

use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkState};
use energy_prune::prune::{Budget, MagnitudeRule};
use energy_prune::prune::{
    ConstrainedOptimizer, Data, EpochEvent, MagnitudePruning, MaskRounds, ProjectedTraining,
    StepContext, Termination, WeightProjection, WeightProjectionConfig, train_projected,
};
use energy_prune::train::{Batch, Control, CrossEntropy, Distillation, Loss, cross_entropy};

use common::{small_cnn, synthetic};
use energy_prune_testing::data as common;

#[test]
fn terminations_explain_themselves() {
    let cases = [
        (
            Termination::Completed { epochs: 3 },
            "completed all 3 epochs",
        ),
        (
            Termination::BudgetMet { epoch: 2 },
            "met the budget in epoch 2",
        ),
        (Termination::BudgetNotMet { epochs: 4 }, "raise `epochs`"),
        (
            Termination::Stopped { epoch: 1 },
            "stopped by an observer in epoch 1",
        ),
    ];
    for (t, says) in cases {
        assert!(t.to_string().contains(says), "{t}");
    }
}

#[test]
fn an_observer_can_stop_a_run_and_mask_rounds_need_validation() {
    let (train, test) = (synthetic(128, 1), synthetic(64, 2));
    let mut net = small_cnn(4, 16, 3);
    let model = SystolicArray::new(net.architecture(), SystolicConfig::default()).unwrap();
    let dense = model
        .relaxed_energy_of(&NetworkState::from_network(&net).unwrap())
        .unwrap();
    let data = Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    assert!(format!("{data:?}").contains("train: 128"));
    let cfg = ProjectedTraining {
        epochs: 3,
        finetune_epochs: 1,
        batch_size: 16,
        ..ProjectedTraining::default()
    };
    struct StopAfterFirst;
    impl energy_prune::prune::Observer for StopAfterFirst {
        fn on_epoch(&mut self, _: &EpochEvent) -> energy_prune::Result<Control> {
            Ok(Control::Stop)
        }
    }
    let r = train_projected(
        &mut net,
        vec![Budget::absolute("energy", &model, 0.6 * dense)],
        data,
        &cfg,
        &mut StopAfterFirst,
    )
    .unwrap();
    assert_eq!(r.termination, Termination::Stopped { epoch: 1 });
    let with_masks = ProjectedTraining {
        input_masks: Some(MaskRounds::default()),
        ..cfg
    };
    let e = train_projected(
        &mut net,
        vec![Budget::absolute("energy", &model, 0.6 * dense)],
        data,
        &with_masks,
        &mut energy_prune::prune::NoObserver,
    )
    .unwrap_err();
    assert!(e.to_string().contains("validation"), "{e}");
}

#[test]
fn weight_level_solvers_expose_their_state() {
    let mut net = small_cnn(4, 16, 3);
    let model = SystolicArray::new(net.architecture(), SystolicConfig::default()).unwrap();
    let dense = model
        .relaxed_energy_of(&NetworkState::from_network(&net).unwrap())
        .unwrap();
    let budget = 0.5 * dense;
    let p = WeightProjection::new(
        vec![Budget::absolute("energy", &model, budget)],
        WeightProjectionConfig::default(),
    )
    .unwrap();
    assert_eq!((p.name(), p.target()), ("projection", budget));
    assert_eq!(p.model().architecture(), net.architecture());
    let report = p.energy_report(&net).unwrap();
    assert_eq!(report.layers.len(), net.architecture().layers().len());
    let mut m = MagnitudePruning::new(
        vec![Budget::absolute("energy", &model, budget)],
        MagnitudeRule::Global,
    )
    .unwrap();
    assert_eq!((m.name(), m.target()), ("magnitude", budget));
    m.begin(&mut net, &Default::default()).unwrap();
    let held = m.step(&mut net, &StepContext::new(1, 1)).unwrap();
    assert!(!held.acted && held.frozen);
    assert!(m.status(&net).unwrap().cost <= budget);
    assert!(
        MagnitudePruning::new(
            vec![Budget::absolute("energy", &model, f64::NAN)],
            MagnitudeRule::Global
        )
        .is_err()
    );
}

#[test]
fn losses_forward_and_check_their_inputs() {
    let logits = [1.0f32, 0.0, 0.0, 1.0];
    let labels = [0u32, 1];
    let batch = Batch {
        indices: &[0, 1],
        labels: &labels,
        classes: 2,
    };
    let mut g = [0.0f32; 4];
    let mut ce = CrossEntropy;
    let by_ref: &mut dyn Loss = &mut ce;
    let v = by_ref.accumulate(&logits, &batch, 1.0, &mut g).unwrap();
    assert!(v > 0.0 && v < 1.0);
    let e = cross_entropy(&logits, &labels, 2, 1.0, &mut [0.0; 3]).unwrap_err();
    assert!(e.to_string().contains("gradient"), "{e}");
    let d = Distillation::new(CrossEntropy, vec![0.0; 4], 0.25).unwrap();
    assert_eq!(d.weight(), 0.25);
    assert!(Distillation::new(CrossEntropy, vec![0.0; 4], 1.5).is_err());
}
