//! The driver and the constrained-optimizer trait on a network that is not the
//! reference CNN: a linear classifier with its own storage, trained through
//! `train_constrained`; observers that stop or fail the run; terminations.

use energy_prune::arch::{ArchBuilder, Architecture};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{
    Network, NetworkMut, NetworkState, ParamKind, ParamVisitor, Trainable,
};
use energy_prune::prune::{Budget, MagnitudeRule};
use energy_prune::prune::{
    ConstrainedOptimizer, EpochEvent, MagnitudePruning, NoObserver, Observer, Phase, SolverEvent,
    Termination, TrainingConfig, WeightProjection, WeightProjectionConfig, train_constrained,
};
use energy_prune::train::{Control, Sgd};
use energy_prune::{Error, Result};

use common::synthetic;
use energy_prune_testing::data as common;

/// Softmax regression on 64 inputs, 4 classes; weights `[out][in]`.
struct Linear {
    arch: Architecture,
    w: Vec<f32>,
    b: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
    x: Vec<f32>,
}

impl Linear {
    fn new() -> Self {
        let mut b = ArchBuilder::new("linear");
        let x = b.input(64, 1, 1).unwrap();
        let y = b.linear("fc", &x, 4, true).unwrap();
        Self {
            arch: b.finish(&y).unwrap(),
            w: (0..256)
                .map(|i| ((i * 7919) % 13) as f32 / 100.0 - 0.06)
                .collect(),
            b: vec![0.0; 4],
            gw: vec![0.0; 256],
            gb: vec![0.0; 4],
            x: Vec::new(),
        }
    }
}

impl Network for Linear {
    fn architecture(&self) -> &Architecture {
        &self.arch
    }
    fn read_weights(&self, _layer: usize, dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(&self.w);
        Ok(())
    }
}

impl NetworkMut for Linear {
    fn write_weights(&mut self, _layer: usize, src: &[f32]) -> Result<()> {
        self.w.copy_from_slice(src);
        Ok(())
    }
}

impl Trainable for Linear {
    fn input_len(&self) -> usize {
        64
    }
    fn num_classes(&self) -> usize {
        4
    }
    fn forward(&mut self, input: &[f32], batch: usize, logits: &mut Vec<f32>) -> Result<()> {
        self.x = input.to_vec();
        logits.clear();
        for n in 0..batch {
            for o in 0..4 {
                let row = &self.w[o * 64..(o + 1) * 64];
                let x = &input[n * 64..(n + 1) * 64];
                logits.push(self.b[o] + row.iter().zip(x).map(|(w, x)| w * x).sum::<f32>());
            }
        }
        Ok(())
    }
    fn backward(&mut self, g: &[f32]) -> Result<()> {
        self.gw.fill(0.0);
        self.gb.fill(0.0);
        for (n, gn) in g.chunks_exact(4).enumerate() {
            for (o, go) in gn.iter().enumerate() {
                self.gb[o] += go;
                for i in 0..64 {
                    self.gw[o * 64 + i] += go * self.x[n * 64 + i];
                }
            }
        }
        Ok(())
    }
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        f(ParamKind::Weight(0), &mut self.w, &self.gw);
        f(ParamKind::Bias(0), &mut self.b, &self.gb);
    }
}

fn setup() -> (Linear, SystolicArray, f64) {
    let net = Linear::new();
    let model = SystolicArray::new(net.architecture(), SystolicConfig::default()).unwrap();
    let dense = model
        .energy(&NetworkState::dense(net.architecture()))
        .unwrap()
        .total;
    let floor = model.dense_floor();
    (net, model, floor + 0.25 * (dense - floor))
}

fn config() -> TrainingConfig {
    TrainingConfig {
        epochs: 3,
        finetune_epochs: 1,
        batch_size: 16,
        distill_weight: Some(0.3),
        ..TrainingConfig::default()
    }
}

#[derive(Default)]
struct Record {
    phases: Vec<Phase>,
    projections: usize,
}

impl Observer for Record {
    fn on_epoch(&mut self, e: &EpochEvent) -> Result<Control> {
        self.phases.push(e.phase);
        Ok(Control::Continue)
    }
    fn on_solver(&mut self, e: &SolverEvent) -> Result<Control> {
        if let SolverEvent::Projection(p) = e {
            assert!(p.relaxed_energy <= p.budget);
            self.projections += 1;
        }
        Ok(Control::Continue)
    }
}

#[test]
fn a_foreign_network_trains_within_budget_through_the_driver() {
    let (train, test) = (synthetic(256, 1), synthetic(128, 2));
    let (mut net, model, budget) = setup();
    let cfg = WeightProjectionConfig {
        project_every: 4,
        ..WeightProjectionConfig::default()
    };
    let mut solver =
        WeightProjection::new(vec![Budget::absolute("energy", &model, budget)], cfg).unwrap();
    let mut opt = Sgd::new(0.05, 0.9, 0.0).unwrap();
    let data = energy_prune::prune::Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let mut rec = Record::default();
    let r = train_constrained(&mut net, &mut opt, &mut solver, data, &config(), &mut rec).unwrap();
    assert_eq!(r.termination, Termination::Completed { epochs: 4 });
    assert_eq!(
        rec.phases,
        vec![
            Phase::Constrained,
            Phase::Constrained,
            Phase::Constrained,
            Phase::FineTune
        ]
    );
    assert_eq!(rec.projections, 3 * 16 / 4);
    let exact = model
        .energy(&NetworkState::from_network(&net).unwrap())
        .unwrap()
        .total;
    assert!(r.budget_met() && exact <= budget, "{exact} > {budget}");
    assert_eq!(r.status.cost, exact);
    // Chance is 0.25; the pruned linear model keeps well above it.
    assert!(r.test_accuracy.unwrap() > 0.4, "{:?}", r.test_accuracy);
    assert!(r.termination.to_string().contains("within the budget"));
}

/// The joint solver trains a foreign network quantization-aware through the traits:
/// below the 16-bit floor of pruning alone, the network ends holding quantized
/// weights (per output channel, on the grid of the chosen format) whose exact
/// energy at the chosen precision meets the budget, and the full-precision copy
/// has kept learning.
#[test]
fn the_joint_solver_trains_a_foreign_network_quantization_aware() {
    use energy_prune::energy::{NumberFormat, PrecisionModel};
    use energy_prune::prune::{JointConfig, JointQuantization, precision_options};
    let (train, test) = (synthetic(256, 1), synthetic(128, 2));
    let (mut net, model, _) = setup();
    let dense = model
        .energy(&NetworkState::dense(net.architecture()))
        .unwrap()
        .total;
    let budget = 0.6 * model.dense_floor();
    let bits = [
        NumberFormat::Int(4),
        NumberFormat::INT8,
        NumberFormat::INT16,
    ];
    let cfg = JointConfig {
        projection: WeightProjectionConfig {
            project_every: 4,
            ..WeightProjectionConfig::default()
        },
        ..JointConfig::default()
    };
    let mut solver = JointQuantization::new(
        vec![Budget::absolute("energy", &model, budget)],
        precision_options(1, &bits, &bits).unwrap(),
        cfg,
    )
    .unwrap();
    let mut opt = Sgd::new(0.05, 0.9, 0.0).unwrap();
    let data = energy_prune::prune::Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let r = train_constrained(
        &mut net,
        &mut opt,
        &mut solver,
        data,
        &config(),
        &mut NoObserver,
    )
    .unwrap();
    let precision = solver.precision().to_vec();
    assert!(!precision[0].is_reference(), "{precision:?}");
    let at = model.at_precision(&precision).unwrap();
    let state = NetworkState::from_network(&net).unwrap();
    let exact = at.energy(&state).unwrap().total;
    assert!(exact <= budget && budget < dense, "{exact} > {budget}");
    assert!(r.budget_met() && r.status.cost == exact);
    // The network holds quantized weights, on each channel's grid within its
    // levels; the solver the full-precision ones.
    let levels = precision[0].weights.levels().unwrap();
    let scales = solver.weight_scales()[0].as_ref().unwrap();
    for (channel, s) in state.weights[0].chunks(64).zip(scales) {
        for v in channel {
            let k = v / s;
            assert!(
                (k - k.round()).abs() < 1e-3 && k.abs() <= levels + 1e-3,
                "{v} is off the grid of {s}"
            );
        }
    }
    assert_ne!(solver.full_precision().weights, state.weights);
    assert!(r.test_accuracy.unwrap() > 0.4, "{:?}", r.test_accuracy);
}

#[test]
fn observers_can_stop_or_fail_a_run() {
    let train = synthetic(128, 1);
    let (net0, model, budget) = setup();
    struct StopAfterOne;
    impl Observer for StopAfterOne {
        fn on_epoch(&mut self, _: &EpochEvent) -> Result<Control> {
            Ok(Control::Stop)
        }
    }
    struct Fail;
    impl Observer for Fail {
        fn on_solver(&mut self, _: &SolverEvent) -> Result<Control> {
            Err(Error::external("observer refused"))
        }
    }
    let data = energy_prune::prune::Data::train(&train);
    let run = |obs: &mut dyn Observer| {
        let mut net = net0_clone(&net0);
        let mut solver = WeightProjection::new(
            vec![Budget::absolute("energy", &model, budget)],
            WeightProjectionConfig::default(),
        )
        .unwrap();
        let mut opt = Sgd::new(0.05, 0.9, 0.0).unwrap();
        train_constrained(&mut net, &mut opt, &mut solver, data, &config(), obs)
    };
    let r = run(&mut StopAfterOne).unwrap();
    assert_eq!(r.termination, Termination::Stopped { epoch: 1 });
    assert_eq!(r.history.len(), 1);
    let err = run(&mut Fail).unwrap_err();
    assert!(err.to_string().contains("observer refused"), "{err}");
    // Configurations are validated before anything runs.
    let bad = TrainingConfig {
        batch_size: 0,
        ..config()
    };
    let mut net = net0_clone(&net0);
    let mut solver = WeightProjection::new(
        vec![Budget::absolute("energy", &model, budget)],
        WeightProjectionConfig::default(),
    )
    .unwrap();
    let mut opt = Sgd::new(0.05, 0.9, 0.0).unwrap();
    let err = train_constrained(&mut net, &mut opt, &mut solver, data, &bad, &mut NoObserver)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    // A network without input masks says so in the error type.
    let err = net.write_input_mask(0, &[1.0; 64]).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

fn net0_clone(n: &Linear) -> Linear {
    Linear {
        arch: n.arch.clone(),
        w: n.w.clone(),
        b: n.b.clone(),
        gw: n.gw.clone(),
        gb: n.gb.clone(),
        x: Vec::new(),
    }
}

/// The solver is a trait object chosen at run time (from a name, as a command line
/// would): the driver runs each through `&mut dyn ConstrainedOptimizer`, and every
/// one ends within the budget.
#[test]
fn solvers_chosen_at_run_time_as_trait_objects() {
    let (train, test) = (synthetic(256, 1), synthetic(128, 2));
    let (net0, model, budget) = setup();
    let choose = |name: &str| -> Box<dyn ConstrainedOptimizer + '_> {
        match name {
            "projection" => Box::new(
                WeightProjection::new(
                    vec![Budget::absolute("energy", &model, budget)],
                    WeightProjectionConfig::default(),
                )
                .unwrap(),
            ),
            "magnitude" => Box::new(
                MagnitudePruning::new(
                    vec![Budget::absolute("energy", &model, budget)],
                    MagnitudeRule::Global,
                )
                .unwrap(),
            ),
            other => panic!("no solver {other}"),
        }
    };
    for name in ["projection", "magnitude"] {
        let mut solver = choose(name);
        let mut net = net0_clone(&net0);
        let mut opt = Sgd::new(0.05, 0.9, 0.0).unwrap();
        let data = energy_prune::prune::Data {
            train: &train,
            validation: None,
            test: Some(&test),
        };
        let r = train_constrained(
            &mut net,
            &mut opt,
            &mut *solver,
            data,
            &config(),
            &mut NoObserver,
        )
        .unwrap();
        assert_eq!(r.solver, name);
        assert!(
            r.status.met && r.status.cost <= budget,
            "{name}: {:?}",
            r.status
        );
        let exact = model
            .relaxed_energy_of(&NetworkState::from_network(&net).unwrap())
            .unwrap();
        assert!(exact <= budget, "{name}: {exact} > {budget}");
    }
}

/// Cross-entropy, bent on the steps in `bad` (counted over the whole run): a
/// NaN loss, or a loss reported ten thousand times too large.
struct Sabotage {
    step: usize,
    bad: std::ops::Range<usize>,
    nan: bool,
}

impl energy_prune::train::Loss for Sabotage {
    fn accumulate(
        &mut self,
        logits: &[f32],
        batch: &energy_prune::train::Batch<'_>,
        scale: f32,
        grad: &mut [f32],
    ) -> Result<f64> {
        let v = energy_prune::train::CrossEntropy.accumulate(logits, batch, scale, grad)?;
        let hit = self.bad.contains(&self.step);
        self.step += 1;
        Ok(match (hit, self.nan) {
            (true, true) => f64::NAN,
            (true, false) => 1e4 * v + 1e4,
            _ => v,
        })
    }
}

fn run_with(
    loss: &mut dyn energy_prune::train::Loss,
    lr: f32,
    divergence: Option<energy_prune::prune::Divergence>,
) -> (Result<energy_prune::prune::TrainingReport>, Linear) {
    let (train, test) = (synthetic(256, 1), synthetic(128, 2));
    let (mut net, model, budget) = setup();
    let mut solver = WeightProjection::new(
        vec![Budget::absolute("energy", &model, budget)],
        WeightProjectionConfig::default(),
    )
    .unwrap();
    let mut opt = Sgd::new(lr, 0.9, 0.0).unwrap();
    let data = energy_prune::prune::Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let cfg = TrainingConfig {
        epochs: 4,
        distill_weight: None,
        divergence,
        ..config()
    };
    let r = energy_prune::prune::train_constrained_with_loss(
        &mut net,
        &mut opt,
        &mut solver,
        data,
        &cfg,
        loss,
        &mut NoObserver,
    );
    (r, net)
}

/// Training that diverges is undone (last good state, lower step) and goes on,
/// or stops as diverged: never a collapsed network reported as a result.
#[test]
fn training_that_collapses_is_undone_or_reported_diverged() {
    use energy_prune::prune::{Divergence, DivergenceCause};
    // 16 steps per epoch: a NaN loss in the second epoch.
    let mut nan = Sabotage {
        step: 0,
        bad: 20..21,
        nan: true,
    };
    let (r, net) = run_with(&mut nan, 0.05, Some(Divergence::default()));
    let r = r.unwrap();
    assert_eq!(r.restarts, 1);
    assert!(!r.diverged() && r.budget_met(), "{}", r.termination);
    assert!(net.w.iter().all(|v| v.is_finite()));
    assert!(r.test_accuracy.unwrap() > 0.4, "{:?}", r.test_accuracy);
    // Without the guard the same run is an error.
    let mut nan = Sabotage {
        step: 0,
        bad: 20..21,
        nan: true,
    };
    assert!(matches!(
        run_with(&mut nan, 0.05, None).0,
        Err(Error::NonFinite { .. })
    ));
    // A loss ten thousand times the previous epoch's (the third epoch): undone.
    let mut jump = Sabotage {
        step: 0,
        bad: 32..48,
        nan: false,
    };
    let (r, _) = run_with(&mut jump, 0.05, Some(Divergence::default()));
    let r = r.unwrap();
    assert_eq!(
        r.restarts,
        1,
        "{:?}",
        r.history.iter().map(|e| e.loss).collect::<Vec<_>>()
    );
    // A loss that stays broken: after the allowed restores the run stops as
    // diverged, with the last good network (finite weights).
    let mut broken = Sabotage {
        step: 0,
        bad: 16..usize::MAX,
        nan: true,
    };
    let (r, net) = run_with(&mut broken, 0.05, Some(Divergence::default()));
    let r = r.unwrap();
    assert!(r.diverged(), "{}", r.termination);
    assert!(matches!(
        r.termination,
        Termination::Diverged {
            cause: DivergenceCause::NonFiniteLoss,
            ..
        }
    ));
    assert_eq!(r.restarts, 2);
    assert!(r.termination.to_string().contains("diverged"));
    assert!(net.w.iter().all(|v| v.is_finite()));
    // Settings are checked.
    let bad = TrainingConfig {
        divergence: Some(Divergence {
            loss_factor: 0.5,
            ..Divergence::default()
        }),
        ..config()
    };
    assert!(bad.validate().is_err());
}
