//! Contracts of the small public pieces: names and displays, trait forwarding
//! through references and boxes, default trait methods, per-weight costs, top-k,
//! and the uniform-scaling solver end to end.

use energy_prune::prune::Budget;
use std::sync::Arc;

use energy_prune::arch::zoo;
use energy_prune::energy::{
    LayerCost, LayerType, SystolicArray, SystolicConfig, WeightEnergyModel, WidthCostModel,
};
use energy_prune::network::{Network, NetworkMut, NetworkState, PruningPlan};
use energy_prune::prune::{
    AdmmTraining, ConstrainedOptimizer, Data, EpochEvent, Kept, Observer, Phase, SolverEvent,
    StepContext, UniformScaling, project, project_top_k, train_uniform, weight_costs,
};
use energy_prune::train::Control;
use energy_prune_nn::{Cnn, LayerSpec};

use common::synthetic;
use energy_prune_testing::data as common;

#[test]
fn names_and_displays() {
    let phases = [
        (Phase::Constrained, "constrained"),
        (Phase::InputMasks, "masks"),
        (Phase::MaskWeights, "mask-weights"),
        (Phase::FineTune, "finetune"),
    ];
    for (p, name) in phases {
        assert_eq!(p.as_str(), name);
        assert_eq!(format!("{p:>12}"), format!("{name:>12}"));
    }
    assert_eq!(
        format!("{}|{}", LayerType::Conv, LayerType::Linear),
        "conv|linear"
    );
    let ctx = StepContext::new(3, 10);
    assert_eq!((ctx.step, ctx.steps, ctx.learning_rate), (3, 10, 1.0));
    assert!(format!("{ctx:?}").contains("preconditioner: false"));
    assert_eq!(Kept::Weights { nonzero: 7 }.total(), 7);
    assert_eq!(Kept::Channels { live: vec![2, 3] }.total(), 5);
    let model = SystolicArray::new(&zoo::lenet5().unwrap(), SystolicConfig::default()).unwrap();
    let report = model
        .energy(&NetworkState::dense(model.architecture()))
        .unwrap();
    let table = report.to_string();
    assert!(table.starts_with("layer "), "{table}");
    assert_eq!(table.lines().count(), report.layers.len() + 2);
    assert!(table.lines().last().unwrap().starts_with("total"));
}

/// Counts events; returns `Stop` once `stop_after` epochs were seen.
struct Counter {
    epochs: usize,
    solver: usize,
}

impl Observer for Counter {
    fn on_epoch(&mut self, _: &EpochEvent) -> energy_prune::Result<Control> {
        self.epochs += 1;
        Ok(Control::Continue)
    }
    fn on_solver(&mut self, _: &SolverEvent) -> energy_prune::Result<Control> {
        self.solver += 1;
        Ok(Control::Continue)
    }
}

struct Silent;
impl Observer for Silent {}

#[test]
fn observers_forward_and_default_to_continue() {
    let mut c = Counter {
        epochs: 0,
        solver: 0,
    };
    let net = tiny();
    let model = SystolicArray::new(net.architecture(), SystolicConfig::default()).unwrap();
    let full: Vec<usize> = net
        .architecture()
        .widths()
        .iter()
        .map(|w| w.channels)
        .collect();
    let budget = 0.5 * model.cost_of_widths(&full).unwrap();
    let (train, test) = (synthetic(128, 1), synthetic(64, 2));
    let cfg = AdmmTraining {
        batch_size: 16,
        ..AdmmTraining::default()
    };
    let data = Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    // Through `&mut Counter` (the forwarding impl) and a default-only observer.
    let mut by_ref = &mut c;
    let mut n = net.clone();
    train_uniform(
        &mut n,
        vec![Budget::absolute("cost", &model, budget)],
        data,
        2,
        &cfg,
        &mut by_ref,
    )
    .unwrap();
    assert_eq!(c.epochs, 2, "one event per epoch, `epochs` in all");
    let mut silent = Silent;
    let mut n = net.clone();
    train_uniform(
        &mut n,
        vec![Budget::absolute("cost", &model, budget)],
        data,
        1,
        &cfg,
        &mut silent,
    )
    .unwrap();
}

fn tiny() -> Cnn {
    let specs = [
        LayerSpec::conv("conv", 8, 3),
        LayerSpec::Relu,
        LayerSpec::MaxPool {
            kernel: 2,
            stride: 2,
        },
        LayerSpec::linear("fc1", 12),
        LayerSpec::Relu,
        LayerSpec::linear("fc2", 4),
    ];
    Cnn::new((1, 8, 8), &specs, 3).unwrap()
}

#[test]
fn uniform_scaling_keeps_leading_channels_within_budget() {
    let mut net = tiny();
    let arch = net.architecture().clone();
    let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    let budget = 0.4 * model.cost_of_widths(&full).unwrap();
    let mut u = UniformScaling::new(&arch, vec![Budget::absolute("cost", &model, budget)]).unwrap();
    assert_eq!(u.name(), "uniform");
    assert_eq!(u.target(), budget);
    assert!(model.cost_of_widths(u.widths()).unwrap() <= budget);
    assert_eq!(u.plan(), &PruningPlan::leading(&arch, u.widths()).unwrap());
    u.begin(&mut net, &Default::default()).unwrap();
    u.begin_phase(&net, Phase::FineTune, 1).unwrap();
    // The plan holds after the weights move.
    for l in 0..arch.layers().len() {
        let w = vec![0.5; arch.layers()[l].weight_count()];
        net.write_weights(l, &w).unwrap();
    }
    let r = u.step(&mut net, &StepContext::new(1, 1)).unwrap();
    assert!(!r.acted && r.frozen);
    assert_eq!(
        PruningPlan::from_network(&net).unwrap().widths(),
        u.widths()
    );
    u.hold(&mut net).unwrap();
    let st = u.status(&net).unwrap();
    assert!(st.met && st.cost <= budget);
    assert_eq!(st.kept.total(), u.widths().iter().sum::<usize>() as u64);
    // Another architecture is refused; a budget below the narrowest network too.
    let mut other = Cnn::lenet5(0).unwrap();
    assert!(u.begin(&mut other, &Default::default()).is_err());
    assert!(UniformScaling::new(&arch, vec![Budget::absolute("cost", &model, 1e-9)]).is_err());
    assert!(UniformScaling::new(&arch, vec![Budget::absolute("cost", &model, f64::NAN)]).is_err());
}

#[test]
fn models_forward_through_references_boxes_and_arcs() {
    let arch = zoo::lenet5().unwrap();
    let m = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut s = NetworkState::dense(&arch);
    s.weights[0].iter_mut().step_by(3).for_each(|v| *v = 0.0);
    let want = (
        m.energy_total(&s).unwrap(),
        m.relaxed_energy_of(&s).unwrap(),
        m.floor(&s.input_masks).unwrap(),
    );
    let check = |x: &dyn WeightEnergyModel| {
        let input = x.input_energy(&s.input_masks).unwrap();
        assert_eq!(
            x.relaxed_total(&s.nonzeros(), &input).unwrap(),
            x.relaxed_energy_of(&s).unwrap()
        );
        assert_eq!(x.architecture(), &arch);
        assert_eq!(
            (
                x.energy_total(&s).unwrap(),
                x.relaxed_energy_of(&s).unwrap(),
                x.floor(&s.input_masks).unwrap()
            ),
            want
        );
        assert_eq!(x.knapsack_costs(), m.knapsack_costs());
    };
    check(&&m);
    check(&Box::new(m.clone()));
    check(&Arc::new(m.clone()));
    let w: &dyn WidthCostModel = &Box::new(m.clone());
    let full: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
    assert_eq!(w.cost(&full).unwrap(), m.cost(&full).unwrap());
    assert_eq!(w.num_widths(), arch.widths().len());
}

#[test]
fn networks_forward_through_references_and_boxes() {
    let mut net = tiny();
    let want = net.weights(0).unwrap();
    {
        let by_ref: &mut Cnn = &mut net;
        let boxed: Box<&mut Cnn> = Box::new(by_ref);
        assert_eq!(boxed.weights(0).unwrap(), want);
        let zeros = vec![0.0; want.len()];
        boxed.write_weights(0, &zeros).unwrap();
        assert!(boxed.read_input_mask(0, &mut vec![0.0; 64]).is_ok());
    }
    assert!(net.weights(0).unwrap().iter().all(|v| *v == 0.0));
    // A network without input masks says so.
    let e = NoMasks(tiny()).write_input_mask(0, &[1.0; 64]).unwrap_err();
    assert!(e.to_string().contains("input mask"), "{e}");
}

/// A network that forwards weights but keeps the trait's default for masks.
struct NoMasks(Cnn);
impl Network for NoMasks {
    fn architecture(&self) -> &energy_prune::arch::Architecture {
        self.0.architecture()
    }
    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> energy_prune::Result<()> {
        self.0.read_weights(layer, dst)
    }
}
impl NetworkMut for NoMasks {
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> energy_prune::Result<()> {
        self.0.write_weights(layer, src)
    }
}

#[test]
fn per_weight_costs_and_top_k() {
    let w = [vec![0.1f32, -3.0, 2.0, 0.5], vec![1.0, 0.0]];
    let c = [
        LayerCost {
            base: 1.0,
            surcharge: 2.0,
            buffered: 2,
        },
        LayerCost {
            base: 5.0,
            surcharge: 0.0,
            buffered: 0,
        },
    ];
    let mut out = Vec::new();
    weight_costs(&w, &c, &mut out).unwrap();
    assert_eq!(out, vec![3.0, 1.0, 1.0, 3.0, 5.0, 5.0]);
    assert!(weight_costs(&w, &c[..1], &mut out).is_err());
    assert!(weight_costs(&[vec![f32::NAN]], &c[..1], &mut out).is_err());
    let mut v = vec![0.1, -3.0, 2.0, 0.5, -2.0];
    project_top_k(&mut v, 2).unwrap();
    assert_eq!(v, vec![0.0, -3.0, 2.0, 0.0, 0.0]);
    let mut v = vec![1.0, 2.0];
    project_top_k(&mut v, 5).unwrap();
    assert_eq!(v, vec![1.0, 2.0]);
}

#[test]
fn projection_errors_leave_the_state_unchanged() {
    let arch = zoo::lenet5().unwrap();
    let m = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut s = NetworkState::dense(&arch);
    let before = s.clone();
    for budget in [f64::NAN, f64::INFINITY, -1.0, 0.5 * m.dense_floor()] {
        assert!(
            project(&mut s, &[Budget::absolute("energy", &m, budget)]).is_err(),
            "{budget}"
        );
        assert_eq!(s, before);
    }
    // Already within budget: unchanged, and a NaN weight is still reported.
    let dense = m.relaxed_energy_of(&s).unwrap();
    let out = project(&mut s, &[Budget::absolute("energy", &m, dense)]).unwrap();
    assert_eq!((out.kept, s.clone()), (out.nonzero_before, before.clone()));
    s.weights[1][0] = f32::NAN;
    assert!(project(&mut s, &[Budget::absolute("energy", &m, 2.0 * dense)]).is_err());
    let mut short = before.clone();
    short.weights[0].pop();
    assert!(project(&mut short, &[Budget::absolute("energy", &m, dense)]).is_err());
}

/// The blanket impls for `&N` and `&mut N` forward every method; a network without
/// masks reports none by default.
#[test]
fn references_are_networks() {
    fn read<N: Network>(n: N, l: usize) -> (Vec<f32>, bool) {
        let w = n.weights(l).unwrap();
        let len = n.architecture().layers()[l].in_features();
        let has = n.read_input_mask(l, &mut vec![0.0; len]).unwrap();
        (w, has)
    }
    fn write<N: NetworkMut>(mut n: N, l: usize, v: f32) {
        let len = n.architecture().layers()[l].weight_count();
        n.write_weights(l, &vec![v; len]).unwrap();
        let in_len = n.architecture().layers()[l].in_features();
        n.write_input_mask(l, &vec![1.0; in_len]).unwrap();
    }
    let mut net = tiny();
    net.enable_input_mask(0).unwrap();
    write(&mut net, 0, 0.25);
    let (w, has) = read(&net, 0);
    assert!(has && w.iter().all(|v| *v == 0.25));
    let (w2, _) = read(&mut net, 0);
    assert_eq!(w, w2);
    let plain = NoMasks(tiny());
    assert!(!plain.read_input_mask(0, &mut vec![0.0; 64]).unwrap());
}

/// Solver events reach an observer through `&mut`, and conversions work for `f32`
/// frameworks too.
#[test]
fn solver_events_reach_observers_by_reference() {
    use energy_prune::network::{from_canonical, to_canonical};
    use energy_prune::prune::{ProjectedTraining, train_projected};
    let mut c = Counter {
        epochs: 0,
        solver: 0,
    };
    let mut net = tiny();
    let model = SystolicArray::new(net.architecture(), SystolicConfig::default()).unwrap();
    let dense = model
        .relaxed_energy_of(&NetworkState::from_network(&net).unwrap())
        .unwrap();
    let (train, test) = (synthetic(128, 1), synthetic(64, 2));
    let cfg = ProjectedTraining {
        epochs: 1,
        finetune_epochs: 0,
        batch_size: 16,
        project_every: 2,
        ..ProjectedTraining::default()
    };
    let data = Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let mut by_ref = &mut c;
    train_projected(
        &mut net,
        vec![Budget::absolute("energy", &model, 0.5 * dense)],
        data,
        &cfg,
        &mut by_ref,
    )
    .unwrap();
    assert!(c.solver >= 1, "projections reported");
    let mut dst = [0.0f32; 2];
    to_canonical(&[1.5f32, -2.0], &mut dst).unwrap();
    let mut back = [0.0f32; 2];
    from_canonical(&dst, &mut back).unwrap();
    assert_eq!(back, [1.5, -2.0]);
    assert!(from_canonical(&[f32::NAN, 0.0], &mut back).is_err());
    assert!(from_canonical(&[0.0], &mut back).is_err());
}

/// Profile sets through files (CSV and JSON), element access, oracles through
/// references and boxes, and the default `unreachable_floor` of a solver.
#[test]
fn profiles_oracles_and_solver_defaults() {
    use energy_prune::energy::{CostOracle, ModelOracle, ProfileSet, WidthSampler};
    let arch = zoo::lenet5().unwrap();
    let truth = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut oracle = ModelOracle(&truth);
    let mut sampler = WidthSampler::new(&arch, 4);
    let mut set = ProfileSet::new(arch.widths().len());
    {
        let by_ref: &mut dyn CostOracle = &mut oracle;
        let mut boxed: Box<&mut dyn CostOracle> = Box::new(by_ref);
        for _ in 0..5 {
            let w = sampler.sample();
            let c = boxed.measure(&w).unwrap();
            set.push(w, c).unwrap();
        }
    }
    let (w0, c0) = set.get(0).unwrap();
    assert_eq!(w0.len(), arch.widths().len());
    assert!(c0 > 0.0);
    assert!(set.get(5).is_none());
    let dir = std::env::temp_dir().join(format!("ep-profiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("p.csv");
    set.save_csv(&csv).unwrap();
    assert_eq!(ProfileSet::load_csv(&csv).unwrap(), set);
    set.save_json(dir.join("p.json")).unwrap();
    assert_eq!(ProfileSet::load_json(dir.join("p.json")).unwrap(), set);
    std::fs::write(&csv, [0xffu8, 0xfe, b'\n']).unwrap();
    let e = ProfileSet::load_csv(&csv).unwrap_err();
    assert!(matches!(e, energy_prune::Error::CorruptData { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    let net = tiny();
    let model = SystolicArray::new(net.architecture(), SystolicConfig::default()).unwrap();
    let full: Vec<usize> = net
        .architecture()
        .widths()
        .iter()
        .map(|w| w.channels)
        .collect();
    let u = UniformScaling::new(
        net.architecture(),
        vec![Budget::absolute(
            "cost",
            &model,
            model.cost_of_widths(&full).unwrap(),
        )],
    )
    .unwrap();
    assert_eq!(u.unreachable_floor(&net).unwrap(), None);
}
