//! Projection onto several budgets at once: every budget holds on random
//! instances, one budget gives exactly the single-budget projection, and on small
//! instances the kept value is compared with the exact optimum of the
//! multi-dimensional knapsack (by enumeration).

use energy_prune::energy::LayerCost;
use energy_prune::prune::Budget;
use energy_prune::prune::{
    KnapsackConstraint, ProjectionWorkspace, greedy_knapsack, multi_knapsack,
};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn flat(base: f64, n: usize) -> LayerCost {
    LayerCost {
        base,
        surcharge: 0.0,
        buffered: n,
    }
}

/// Cost of the kept weights under `costs`, ranked among the original weights.
fn used(orig: &[Vec<f32>], kept: &[Vec<f32>], costs: &[LayerCost]) -> f64 {
    let mut total = 0.0;
    for ((o, k), c) in orig.iter().zip(kept).zip(costs) {
        let mut order: Vec<usize> = (0..o.len()).collect();
        order.sort_by(|&a, &b| o[b].abs().total_cmp(&o[a].abs()).then(a.cmp(&b)));
        let mut rank = vec![0usize; o.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        for (i, v) in k.iter().enumerate() {
            if *v != 0.0 {
                total += c.base
                    + if rank[i] < c.buffered {
                        0.0
                    } else {
                        c.surcharge
                    };
            }
        }
    }
    total
}

fn instance(
    rng: &mut ChaCha12Rng,
    layers: usize,
    n: usize,
) -> (Vec<Vec<f32>>, Vec<KnapsackConstraint>) {
    let w: Vec<Vec<f32>> = (0..layers)
        .map(|_| {
            (0..n)
                .map(|_| match rng.random_range(0..8) {
                    0 => 0.0,
                    1 => 0.5,
                    _ => rng.random_range(-2.0f32..2.0),
                })
                .collect()
        })
        .collect();
    let energy: Vec<LayerCost> = (0..layers)
        .map(|_| LayerCost {
            base: rng.random_range(0.5..4.0),
            surcharge: if rng.random_bool(0.5) {
                rng.random_range(0.5..3.0)
            } else {
                0.0
            },
            buffered: rng.random_range(0..=n),
        })
        .collect();
    let params: Vec<LayerCost> = (0..layers).map(|_| flat(1.0, n)).collect();
    let macs: Vec<LayerCost> = (0..layers)
        .map(|_| flat(rng.random_range(1.0..9.0f64).round(), n))
        .collect();
    let dense = |c: &[LayerCost]| used(&w, &w, c);
    let mut budgets = vec![
        KnapsackConstraint {
            name: "energy".into(),
            capacity: dense(&energy) * rng.random_range(0.1..0.9),
            costs: energy,
        },
        KnapsackConstraint {
            name: "parameters".into(),
            capacity: dense(&params) * rng.random_range(0.1..0.9),
            costs: params,
        },
    ];
    if rng.random_bool(0.5) {
        budgets.push(KnapsackConstraint {
            name: "macs".into(),
            capacity: dense(&macs) * rng.random_range(0.1..0.9),
            costs: macs,
        });
    }
    (w, budgets)
}

#[test]
fn every_budget_holds_on_random_instances() {
    let mut rng = ChaCha12Rng::seed_from_u64(21);
    let mut ws = ProjectionWorkspace::new();
    for case in 0..400 {
        let (layers, n) = (rng.random_range(1..4), rng.random_range(1..60));
        let (w, budgets) = instance(&mut rng, layers, n);
        let mut p = w.clone();
        let sel = multi_knapsack(&mut p, &budgets, &mut ws).unwrap();
        for (k, b) in budgets.iter().enumerate() {
            let u = used(&w, &p, &b.costs);
            assert!(
                u <= b.capacity * (1.0 + 1e-12),
                "case {case}: {} {u} > {}",
                b.name,
                b.capacity
            );
            assert!(
                sel.used[k] <= b.capacity,
                "case {case}: reported {} over",
                b.name
            );
        }
        for (x, y) in p.iter().flatten().zip(w.iter().flatten()) {
            assert!(*x == 0.0 || x == y, "only zeroes weights");
        }
        // Projecting the result again changes nothing.
        let mut again = p.clone();
        multi_knapsack(&mut again, &budgets, &mut ws).unwrap();
        assert_eq!(again, p, "case {case}: a state that fits is unchanged");
    }
}

#[test]
fn one_budget_is_the_single_budget_projection() {
    let mut rng = ChaCha12Rng::seed_from_u64(22);
    let mut ws = ProjectionWorkspace::new();
    for _ in 0..300 {
        let (layers, n) = (rng.random_range(1..4), rng.random_range(1..40));
        let (w, budgets) = instance(&mut rng, layers, n);
        let one = &budgets[..1];
        let (mut a, mut b) = (w.clone(), w.clone());
        multi_knapsack(&mut a, one, &mut ws).unwrap();
        greedy_knapsack(&mut b, &one[0].costs, one[0].capacity, &mut ws).unwrap();
        assert_eq!(a, b);
    }
}

/// Exact optimum of the multi-dimensional knapsack with flat costs, by enumeration.
fn optimum(w: &[Vec<f32>], budgets: &[KnapsackConstraint]) -> f64 {
    let items: Vec<(f64, Vec<f64>)> = w
        .iter()
        .enumerate()
        .flat_map(|(l, wl)| {
            wl.iter().filter(|v| **v != 0.0).map(move |v| {
                let c = budgets.iter().map(|b| b.costs[l].base).collect();
                (f64::from(*v) * f64::from(*v), c)
            })
        })
        .collect();
    let mut best = 0.0f64;
    for mask in 0u32..(1 << items.len()) {
        let mut val = 0.0;
        let mut cost = vec![0.0; budgets.len()];
        for (i, (v, c)) in items.iter().enumerate() {
            if mask >> i & 1 == 1 {
                val += v;
                cost.iter_mut().zip(c).for_each(|(a, b)| *a += b);
            }
        }
        if cost.iter().zip(budgets).all(|(c, b)| *c <= b.capacity) {
            best = best.max(val);
        }
    }
    best
}

#[test]
fn kept_value_against_the_exact_optimum() {
    let mut rng = ChaCha12Rng::seed_from_u64(23);
    let mut ws = ProjectionWorkspace::new();
    let (mut sum, mut worst, mut count) = (0.0, f64::INFINITY, 0);
    for _ in 0..600 {
        let n = rng.random_range(2..7);
        let (w, mut budgets) = instance(&mut rng, 2, n);
        for b in &mut budgets {
            for c in &mut b.costs {
                c.surcharge = 0.0;
            }
        }
        let opt = optimum(&w, &budgets);
        let mut p = w.clone();
        let sel = multi_knapsack(&mut p, &budgets, &mut ws).unwrap();
        if opt > 0.0 {
            let r = sel.kept_value / opt;
            assert!(r <= 1.0 + 1e-9);
            sum += r;
            worst = f64::min(worst, r);
            count += 1;
        }
    }
    let mean = sum / count as f64;
    eprintln!(
        "multi-budget greedy / exact optimum over {count} instances: mean {mean:.4}, worst {worst:.4}"
    );
    assert!(mean > 0.9, "mean {mean}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn budgets_hold_for_any_capacities(seed in 0u64..1_000_000, fa in 0.0f64..1.0, fb in 0.0f64..1.0) {
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let (w, mut budgets) = instance(&mut rng, 2, 20);
        budgets[0].capacity *= fa;
        budgets[1].capacity *= fb;
        let mut p = w.clone();
        multi_knapsack(&mut p, &budgets, &mut ProjectionWorkspace::new()).unwrap();
        for b in &budgets {
            prop_assert!(used(&w, &p, &b.costs) <= b.capacity * (1.0 + 1e-12));
        }
    }
}

#[test]
fn bad_budget_sets_are_errors_naming_the_problem() {
    let mut w = vec![vec![1.0f32, -2.0, 0.5]];
    let before = w.clone();
    let mut ws = ProjectionWorkspace::new();
    let e = multi_knapsack(&mut w, &[], &mut ws).unwrap_err();
    assert!(e.to_string().contains("at least one budget"), "{e}");
    let b = |name: &str, capacity: f64, surcharge: f64| KnapsackConstraint {
        name: name.into(),
        costs: vec![LayerCost {
            base: 1.0,
            surcharge,
            buffered: 1,
        }],
        capacity,
    };
    let e = multi_knapsack(
        &mut w,
        &[b("energy", 1.0, 0.0), b("size", -1.0, 0.0)],
        &mut ws,
    )
    .unwrap_err();
    assert!(e.to_string().contains("budget `size`"), "{e}");
    let e = multi_knapsack(
        &mut w,
        &[b("energy", 1.0, 2.0), b("latency", 1.0, 1.0)],
        &mut ws,
    )
    .unwrap_err();
    assert!(e.to_string().contains("`energy` and `latency`"), "{e}");
    assert_eq!(w, before, "unchanged on error");
    // A zero capacity admits only the empty selection.
    let sel = multi_knapsack(
        &mut w,
        &[b("energy", 5.0, 0.0), b("size", 0.0, 0.0)],
        &mut ws,
    )
    .unwrap();
    assert_eq!(sel.kept, 0);
    assert!(w[0].iter().all(|v| *v == 0.0));
}

/// LeNet-5 with random weights under an energy budget of 0.25 and a parameter
/// budget of 0.03 of dense: both hold on the exact models, and each binds
/// somewhere along the budgets tried.
#[test]
fn lenet5_energy_and_parameters_at_once() {
    use energy_prune::arch::zoo;
    use energy_prune::energy::{
        Count, CountingModel, SystolicArray, SystolicConfig, WeightEnergyModel,
    };
    use energy_prune::network::NetworkState;
    let arch = zoo::lenet5().unwrap();
    let energy = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let params = CountingModel::new(&arch, Count::Parameters).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(24);
    let mut state = NetworkState::dense(&arch);
    for w in &mut state.weights {
        w.iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0f32..1.0));
    }
    let e_dense = energy.energy_total(&NetworkState::dense(&arch)).unwrap();
    let mut binds = [false, false];
    for (fe, fp) in [(0.25, 0.03), (0.25, 0.2), (0.5, 0.03)] {
        let budgets = [
            KnapsackConstraint::fraction_of_dense("energy", &energy, fe).unwrap(),
            KnapsackConstraint::fraction_of_dense("parameters", &params, fp).unwrap(),
        ];
        let mut s = state.clone();
        let sel =
            multi_knapsack(&mut s.weights, &budgets, &mut ProjectionWorkspace::new()).unwrap();
        let e = energy.energy_total(&s).unwrap();
        let p = params.energy_total(&s).unwrap();
        assert!(e <= fe * e_dense, "energy {} > {fe}", e / e_dense);
        assert!(
            p <= fp * params.dense(),
            "parameters {} > {fp}",
            p / params.dense()
        );
        binds[0] |= sel.binding[0];
        binds[1] |= sel.binding[1];
    }
    assert_eq!(binds, [true, true], "each budget binds for some pair");
    let e = KnapsackConstraint::fraction_of_dense("energy", &energy, 0.1).unwrap_err();
    assert!(
        matches!(e, energy_prune::Error::InfeasibleBudget { .. }),
        "{e}"
    );
    assert!(KnapsackConstraint::fraction_of_dense("energy", &energy, 1.5).is_err());
}

use energy_prune_testing::data as common;

/// A multi-budget solver of an energy and a parameter budget, projecting every 5 updates.
fn energy_and_parameters(
    energy: energy_prune::energy::SystolicArray,
    e_budget: f64,
    params: energy_prune::energy::CountingModel,
    p_budget: f64,
) -> energy_prune::prune::WeightProjection<Box<dyn energy_prune::energy::WeightEnergyModel>> {
    use energy_prune::prune::{WeightProjection, WeightProjectionConfig};
    WeightProjection::new(
        vec![
            Budget::absolute("energy", Box::new(energy) as Box<_>, e_budget),
            Budget::absolute("parameters", Box::new(params) as Box<_>, p_budget),
        ],
        WeightProjectionConfig {
            project_every: 5,
            ..WeightProjectionConfig::default()
        },
    )
    .unwrap()
}

/// Projected training under an energy and a parameter budget at once: the trained
/// network meets both on the exact models and still learns.
#[test]
fn training_under_two_budgets_meets_both() {
    use energy_prune::energy::{
        Count, CountingModel, SystolicArray, SystolicConfig, WeightEnergyModel,
    };
    use energy_prune::network::{Network, NetworkState};
    use energy_prune::prune::{
        ConstrainedOptimizer, Data, LrSchedule, TrainingConfig, train_constrained,
    };
    use energy_prune::train::Sgd;
    let (train, test) = (common::synthetic(512, 1), common::synthetic(256, 2));
    let mut net = common::small_cnn(6, 16, 3);
    let arch = net.architecture().clone();
    let energy = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let params = CountingModel::new(&arch, Count::Parameters).unwrap();
    let e_dense = energy.energy_total(&NetworkState::dense(&arch)).unwrap();
    let e_budget = energy.dense_floor() + 0.4 * (e_dense - energy.dense_floor());
    let p_budget = 0.1 * params.dense();
    let mut solver = energy_and_parameters(energy, e_budget, params, p_budget);
    let cfg = TrainingConfig {
        epochs: 3,
        finetune_epochs: 1,
        batch_size: 16,
        lr: LrSchedule::Constant,
        ..TrainingConfig::default()
    };
    let data = Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let mut opt = Sgd::new(0.05, 0.9, 0.0).unwrap();
    // Every epoch event carries every budget.
    let mut seen = Vec::new();
    let mut obs = energy_prune::prune::OnEpoch(|e: &energy_prune::prune::EpochEvent| {
        seen.push(
            e.status
                .budgets
                .iter()
                .map(|b| b.name.clone())
                .collect::<Vec<_>>(),
        );
    });
    let r = train_constrained(&mut net, &mut opt, &mut solver, data, &cfg, &mut obs).unwrap();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter().all(|names| names == &["energy", "parameters"]),
        "{seen:?}"
    );
    assert_eq!(r.status.budgets.len(), 2);
    let all = solver.status(&net).unwrap().budgets;
    assert!(all.iter().all(|b| b.met), "{all:?}");
    assert!(all.iter().any(|b| b.binding), "{all:?}");
    assert!(r.status.met);
    assert!(r.test_accuracy.unwrap() > 0.5, "{:?}", r.test_accuracy);
    assert_eq!(solver.name(), "multi-budget projection");
}

/// Input-mask rounds under two budgets: an energy budget below the floor of the
/// unmasked network is reached by masking inputs, the parameter budget holds too.
#[test]
fn input_mask_rounds_under_two_budgets() {
    use energy_prune::energy::{
        Count, CountingModel, SystolicArray, SystolicConfig, WeightEnergyModel,
    };
    use energy_prune::network::{Network, NetworkState};
    use energy_prune::prune::{
        Data, LrSchedule, MaskRounds, NoObserver, TrainingConfig, train_constrained,
    };
    use energy_prune::train::Sgd;
    let (train, validation, test) = (
        common::synthetic(512, 1),
        common::synthetic(128, 3),
        common::synthetic(256, 2),
    );
    let mut net = common::small_cnn(6, 16, 3);
    for l in 0..2 {
        net.enable_input_mask(l).unwrap();
    }
    let arch = net.architecture().clone();
    let energy = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let params = CountingModel::new(&arch, Count::Parameters).unwrap();
    let floor = energy.dense_floor();
    let e_budget = 0.92 * floor; // below the unmasked floor: only masks reach it
    let p_budget = 0.2 * params.dense();
    let mut solver = energy_and_parameters(energy.clone(), e_budget, params, p_budget);
    let cfg = TrainingConfig {
        epochs: 2,
        finetune_epochs: 1,
        batch_size: 16,
        lr: LrSchedule::Constant,
        input_masks: Some(MaskRounds {
            rounds: 4,
            ..MaskRounds::default()
        }),
        ..TrainingConfig::default()
    };
    let data = Data {
        train: &train,
        validation: Some(&validation),
        test: Some(&test),
    };
    let mut opt = Sgd::new(0.05, 0.9, 0.0).unwrap();
    let r = train_constrained(&mut net, &mut opt, &mut solver, data, &cfg, &mut NoObserver);
    let all = energy_prune::prune::ConstrainedOptimizer::status(&solver, &net)
        .unwrap()
        .budgets;
    let state = NetworkState::from_network(&net).unwrap();
    let e = energy.energy_total(&state).unwrap();
    let r = r.unwrap();
    assert!(all.iter().all(|b| b.met), "{all:?}");
    assert!(e <= e_budget && r.status.met);
    assert!(r.mask_rounds >= 1, "the masks were needed");
}

/// Width level: ADMM channel pruning under an energy and a parameter budget at
/// once (one dual per budget) ends with live widths that meet both, on the exact
/// counts of the compacted channels; the solver events carry every budget's cost
/// and dual; bad budget sets are errors.
#[test]
fn admm_under_two_width_budgets_meets_both() {
    use energy_prune::energy::{
        Count, CountingModel, SystolicArray, SystolicConfig, WidthCostModel,
    };
    use energy_prune::network::{Network, PruningPlan};
    use energy_prune::prune::{
        AdmmConfig, AdmmPruning, AdmmTraining, Data, Limit, OnEpoch, SolverEvent, train_admm,
    };
    use energy_prune::train::Control;
    let (train, test) = (common::synthetic(512, 1), common::synthetic(256, 2));
    let mut net = common::small_cnn(8, 24, 3);
    let arch = net.architecture().clone();
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    let energy = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let params = CountingModel::new(&arch, Count::Parameters).unwrap();
    let (e_dense, p_dense) = (
        energy.cost_of_widths(&full).unwrap(),
        params.cost_of_widths(&full).unwrap(),
    );
    let budgets = || -> Vec<Budget<Box<dyn WidthCostModel>>> {
        vec![
            Budget::absolute("energy", Box::new(energy.clone()) as Box<_>, 0.6 * e_dense),
            Budget::absolute(
                "parameters",
                Box::new(params.clone()) as Box<_>,
                0.3 * p_dense,
            ),
        ]
    };
    let cfg = AdmmTraining {
        epochs: 6,
        finetune_epochs: 1,
        batch_size: 16,
        lr: 3e-3,
        admm: AdmmConfig {
            eta_s: 2.0,
            ..AdmmConfig::default()
        },
        ..AdmmTraining::default()
    };
    let data = Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let mut names = Vec::new();
    let mut obs = OnEpoch(|e: &energy_prune::prune::EpochEvent| {
        names.push(
            e.status
                .budgets
                .iter()
                .map(|b| b.name.clone())
                .collect::<Vec<_>>(),
        );
    });
    let r = train_admm(&mut net, budgets(), data, &cfg, &mut obs).unwrap();
    assert!(r.status.met, "{:?}", r.status);
    assert!(
        names.iter().all(|n| n == &["energy", "parameters"]),
        "{names:?}"
    );
    let widths = PruningPlan::from_network(&net).unwrap().widths();
    let (e, p) = (
        energy.cost_of_widths(&widths).unwrap(),
        params.cost_of_widths(&widths).unwrap(),
    );
    assert!(
        e <= 0.6 * e_dense && p <= 0.3 * p_dense,
        "{widths:?}: {e} {p}"
    );
    assert_eq!(r.status.budgets.len(), 2);
    assert!(r.status.budgets.iter().all(|b| b.met));
    // Events of the ADMM phase carry both budgets' costs and duals.
    let mut solver = AdmmPruning::new(&arch, budgets(), cfg.admm.clone()).unwrap();
    let mut net2 = common::small_cnn(8, 24, 3);
    struct Events(usize);
    impl energy_prune::prune::Observer for Events {
        fn on_solver(&mut self, ev: &SolverEvent) -> energy_prune::Result<Control> {
            if let SolverEvent::Admm(a) = ev {
                assert_eq!(a.costs.len(), 2);
                assert_eq!(a.duals.len(), 2);
                assert_eq!(a.costs[0], a.cost);
                self.0 += 1;
            }
            Ok(Control::Continue)
        }
    }
    let mut obs = Events(0);
    let mut opt = energy_prune::train::Adam::new(3e-3).unwrap();
    energy_prune::prune::train_constrained(
        &mut net2,
        &mut opt,
        &mut solver,
        data,
        &cfg.training(),
        &mut obs,
    )
    .unwrap();
    assert!(obs.0 > 0);
    // Errors: a budget below what the narrowest widths cost, and duplicate names.
    let mut low = budgets();
    low[1].limit = Limit::Absolute(1.0);
    assert!(matches!(
        AdmmPruning::new(&arch, low, AdmmConfig::default()),
        Err(energy_prune::Error::InfeasibleBudget { .. })
    ));
    let mut same = budgets();
    same[1].name = "energy".into();
    assert!(AdmmPruning::new(&arch, same, AdmmConfig::default()).is_err());
    // Budgets as fractions of dense.
    let b = Budget::fraction("parameters", params.clone(), 0.3);
    assert_eq!(b.width_limit(&arch).unwrap(), 0.3 * p_dense);
    assert!(
        Budget::fraction("p", params.clone(), 0.0)
            .width_limit(&arch)
            .is_err()
    );
    assert!(
        Budget::fraction("p", params.clone(), f64::NAN)
            .width_limit(&arch)
            .is_err()
    );
    let other = energy_prune::arch::zoo::lenet5().unwrap();
    assert!(
        Budget::fraction("p", params, 0.5)
            .width_limit(&other)
            .is_err()
    );
}

/// `project` with several budgets: a state that already meets every budget is
/// returned unchanged (also with unit energies scaled far from 1, where rounding
/// of the knapsack's cost accounting and the model's own sum differ), a state over
/// budget ends within every budget on the models' own relaxed cost, and the outcome
/// lists every budget.
#[test]
fn project_onto_several_budgets_keeps_states_that_fit() {
    use energy_prune::arch::zoo;
    use energy_prune::energy::{
        Count, CountingModel, SystolicArray, SystolicConfig, WeightEnergyModel,
    };
    use energy_prune::network::NetworkState;
    use energy_prune::prune::project;
    let arch = zoo::lenet5().unwrap();
    for scale in [1.0, 123.456, 1e-13] {
        let d = SystolicConfig::default();
        let cfg = SystolicConfig {
            e_mac: d.e_mac * scale,
            e_dram: d.e_dram * scale,
            e_buf: d.e_buf * scale,
            e_rf: d.e_rf * scale,
            ..d
        };
        let energy = SystolicArray::new(&arch, cfg).unwrap();
        let params = CountingModel::new(&arch, Count::Parameters).unwrap();
        for seed in 0..5 {
            let mut rng = ChaCha12Rng::seed_from_u64(seed);
            let mut state = NetworkState::dense(&arch);
            for w in &mut state.weights {
                w.iter_mut().for_each(|v| {
                    *v = if rng.random_range(0.0..1.0) < 0.3 {
                        rng.random_range(-1.0f32..1.0)
                    } else {
                        0.0
                    }
                });
            }
            let own: Vec<Budget<&dyn WeightEnergyModel>> = vec![
                Budget::absolute("energy", &energy, energy.relaxed_energy_of(&state).unwrap()),
                Budget::absolute(
                    "parameters",
                    &params,
                    params.relaxed_energy_of(&state).unwrap(),
                ),
            ];
            let mut same = state.clone();
            let out = project(&mut same, &own).unwrap();
            assert_eq!(
                same, state,
                "scale {scale} seed {seed}: a state that fits is kept"
            );
            assert_eq!(out.kept, out.nonzero_before);
            assert_eq!(out.budgets.len(), 2);
            let tight: Vec<Budget<&dyn WeightEnergyModel>> = vec![
                Budget::fraction("energy", &energy, 0.3),
                Budget::fraction("parameters", &params, 0.05),
            ];
            let mut s = state.clone();
            let out = project(&mut s, &tight).unwrap();
            for (b, st) in tight.iter().zip(&out.budgets) {
                let cost = b.model.relaxed_energy_of(&s).unwrap();
                assert_eq!(st.name, b.name);
                assert!(cost <= b.weight_limit().unwrap(), "{}: {cost}", b.name);
                assert!(st.met);
            }
        }
    }
}

/// One budget through `project` is exactly the single-budget projection, whether
/// the limit is given absolute or as a fraction of the dense energy.
#[test]
fn project_with_one_budget_is_the_single_budget_projection() {
    use energy_prune::arch::zoo;
    use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
    use energy_prune::network::NetworkState;
    use energy_prune::prune::project;
    let arch = zoo::lenet5().unwrap();
    let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    let mut state = NetworkState::dense(&arch);
    for w in &mut state.weights {
        w.iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0f32..1.0));
    }
    let dense = hw.energy_total(&NetworkState::dense(&arch)).unwrap();
    let (mut a, mut b) = (state.clone(), state.clone());
    let oa = project(&mut a, &[Budget::absolute("energy", &hw, 0.3 * dense)]).unwrap();
    let ob = project(&mut b, &[Budget::fraction("energy", &hw, 0.3)]).unwrap();
    assert_eq!(a, b);
    assert_eq!(oa, ob);
    let costs = hw.knapsack_costs();
    let mut c = state.clone();
    let sel = greedy_knapsack(
        &mut c.weights,
        &costs,
        0.3 * dense - oa.constant,
        &mut ProjectionWorkspace::new(),
    )
    .unwrap();
    assert_eq!(c, a, "the same selection as the greedy knapsack");
    assert_eq!(sel.kept, oa.kept);
}
