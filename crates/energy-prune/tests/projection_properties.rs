//! Properties of the weighted sparse projection that must hold on every input:
//! the result never exceeds the budget, a state that already fits is left
//! unchanged, projecting twice equals projecting once, the selection agrees with
//! the sort-based reference, and the greedy keeps at least half of the exact
//! optimum, at every finite scale of weights and costs.

use energy_prune::arch::zoo;
use energy_prune::energy::{LayerCost, SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::NetworkState;
use energy_prune::prune::Budget;
use energy_prune::prune::{ProjectionWorkspace, greedy_knapsack, project};
use energy_prune_testing::project_sorted;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

/// A weight: zero, an exact tie value, an ordinary value, or an extreme magnitude.
fn weight(extreme: bool) -> impl Strategy<Value = f32> {
    let ordinary = (-2.0f32..2.0).boxed();
    let wild = if extreme {
        (-44i32..38, 1.0f32..9.99, any::<bool>())
            .prop_map(|(e, m, neg)| {
                let v = (m as f64 * 10f64.powi(e)) as f32;
                if neg { -v } else { v }
            })
            .boxed()
    } else {
        ordinary.clone()
    };
    prop_oneof![1 => Just(0.0f32), 1 => Just(0.5f32), 4 => ordinary, 4 => wild]
}

/// A positive finite cost, ordinary or (if `extreme`) anywhere in 1e-45..1e46.
fn cost(extreme: bool) -> BoxedStrategy<f64> {
    if extreme {
        (-45i32..46, 1.0f64..9.99)
            .prop_map(|(e, m)| m * 10f64.powi(e))
            .boxed()
    } else {
        (0.5f64..5.0).boxed()
    }
}

/// Layers of weights with their costs (`surcharges`: rank-dependent costs allowed).
fn instance(
    extreme: bool,
    surcharges: bool,
) -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<LayerCost>)> {
    prop::collection::vec(
        (1usize..6).prop_flat_map(move |n| {
            (
                prop::collection::vec(weight(extreme), n),
                cost(extreme),
                prop_oneof![Just(0.0), 0.0f64..3.0],
                0..=n,
            )
        }),
        1..4,
    )
    .prop_map(move |layers| {
        let mut w = Vec::new();
        let mut c = Vec::new();
        for (wl, base, s, buffered) in layers {
            w.push(wl);
            c.push(LayerCost {
                base,
                surcharge: if surcharges { s * base } else { 0.0 },
                buffered,
            });
        }
        (w, c)
    })
}

/// The cost of the nonzeros ranked among themselves, summed per class in class
/// order: the definition of "fits".
fn own_cost(w: &[Vec<f32>], c: &[LayerCost]) -> f64 {
    w.iter()
        .zip(c)
        .flat_map(|(wl, cl)| {
            let n = wl.iter().filter(|v| **v != 0.0).count() as u64;
            let base = if cl.surcharge == 0.0 {
                n
            } else {
                n.min(cl.buffered as u64)
            };
            [
                base as f64 * cl.base,
                (n - base) as f64 * (cl.base + cl.surcharge),
            ]
        })
        .sum()
}

fn value(w: &[Vec<f32>]) -> f64 {
    w.iter()
        .flatten()
        .map(|v| f64::from(*v) * f64::from(*v))
        .sum()
}

/// Exact 0/1 knapsack optimum by enumeration (no surcharges).
fn optimum(w: &[Vec<f32>], c: &[LayerCost], capacity: f64) -> f64 {
    let items: Vec<(f64, f64)> = w
        .iter()
        .zip(c)
        .flat_map(|(wl, cl)| {
            wl.iter()
                .map(move |v| (f64::from(*v) * f64::from(*v), cl.base))
        })
        .filter(|(v, _)| *v > 0.0)
        .collect();
    let mut best = 0.0f64;
    for mask in 0u32..(1 << items.len()) {
        let (mut val, mut cost) = (0.0, 0.0);
        for (i, (v, c)) in items.iter().enumerate() {
            if mask >> i & 1 == 1 {
                val += v;
                cost += c;
            }
        }
        if cost <= capacity {
            best = best.max(val);
        }
    }
    best
}

fn check_selection(
    w: Vec<Vec<f32>>,
    c: Vec<LayerCost>,
    fraction: f64,
) -> Result<(), TestCaseError> {
    let mut ws = ProjectionWorkspace::new();
    let dense = own_cost(&w, &c);
    let capacity = dense * fraction;
    let mut a = w.clone();
    let sel = greedy_knapsack(&mut a, &c, capacity, &mut ws).unwrap();
    prop_assert!(
        sel.charged <= capacity,
        "charged {} > capacity {capacity}",
        sel.charged
    );
    let recount = own_cost(&a, &c);
    prop_assert!(
        recount <= capacity,
        "kept weights cost {recount} > capacity {capacity}"
    );
    // Only weights are zeroed, none changed.
    for (x, y) in a.iter().flatten().zip(w.iter().flatten()) {
        prop_assert!(*x == 0.0 || x == y);
    }
    // Agrees with the sort-based reference.
    let mut b = w.clone();
    project_sorted(&mut b, &c, capacity).unwrap();
    prop_assert_eq!(&a, &b);
    // Idempotent.
    let mut again = a.clone();
    greedy_knapsack(&mut again, &c, capacity, &mut ws).unwrap();
    prop_assert_eq!(&again, &a);
    // A state that already fits is unchanged, at its own cost exactly.
    let own = own_cost(&w, &c);
    let mut same = w.clone();
    greedy_knapsack(&mut same, &c, own, &mut ws).unwrap();
    prop_assert_eq!(&same, &w);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn selection_holds_its_guarantees((w, c) in instance(false, true), f in 0.0f64..1.2) {
        check_selection(w, c, f)?;
    }

    #[test]
    fn selection_holds_its_guarantees_at_extreme_scales((w, c) in instance(true, true), f in 0.0f64..1.2) {
        check_selection(w, c, f)?;
    }

    #[test]
    fn greedy_keeps_half_the_exact_optimum(
        (w, c) in instance(false, false),
        f in 0.0f64..1.0,
    ) {
        half_optimum(w, c, f)?;
    }

    #[test]
    fn greedy_keeps_half_the_exact_optimum_at_extreme_scales(
        (w, c) in instance(true, false),
        f in 0.0f64..1.0,
    ) {
        half_optimum(w, c, f)?;
    }
}

fn half_optimum(w: Vec<Vec<f32>>, c: Vec<LayerCost>, fraction: f64) -> Result<(), TestCaseError> {
    let capacity = own_cost(&w, &c) * fraction;
    let opt = optimum(&w, &c, capacity);
    let mut a = w.clone();
    let sel = greedy_knapsack(&mut a, &c, capacity, &mut ProjectionWorkspace::new()).unwrap();
    // Keys are rounded to f32 (or to f32 logarithms at extreme scales): the order of
    // ratios equal to 1e-5 may differ from the exact one, hence the small slack.
    prop_assert!(
        sel.kept_value >= 0.5 * opt * (1.0 - 1e-4),
        "kept {} < half of the optimum {opt}",
        sel.kept_value
    );
    prop_assert!((sel.kept_value - value(&a)).abs() <= 1e-9 * value(&w));
    Ok(())
}

#[test]
fn regression_feasible_state_at_its_own_cost_is_unchanged() {
    // Three weights of non-integer unit cost; the capacity is exactly their cost.
    let mut w = [vec![-1.898607f32, -1.5174484, 0.49869013]];
    let before = w.clone();
    let c = [LayerCost {
        base: 4.595081891182114,
        surcharge: 0.0,
        buffered: 4,
    }];
    let sel = greedy_knapsack(
        &mut w,
        &c,
        13.785245673546342,
        &mut ProjectionWorkspace::new(),
    )
    .unwrap();
    assert_eq!(w, before);
    assert_eq!(sel.kept, 3);
}

#[test]
fn regression_extreme_scales_never_exceed_the_budget() {
    // A subnormal-range weight and a cost near 1e-42: f32 keys would overflow.
    let mut w = [vec![1.1754944e-38f32, -0.3107538]];
    let c = [LayerCost {
        base: 4.699755121306937e-42,
        surcharge: 0.0,
        buffered: 2,
    }];
    let cap = 9.133297480580654e-42;
    let sel = greedy_knapsack(&mut w, &c, cap, &mut ProjectionWorkspace::new()).unwrap();
    assert!(sel.charged <= cap);
    assert_eq!(w, [vec![0.0, -0.3107538]], "keeps the more valuable weight");
}

#[test]
fn negative_or_nan_capacity_is_an_error_and_changes_nothing() {
    let mut w = [vec![1.0f32, 2.0]];
    let c = [LayerCost {
        base: 1.0,
        surcharge: 0.0,
        buffered: 2,
    }];
    for cap in [-1.0, f64::NAN] {
        let e = greedy_knapsack(&mut w, &c, cap, &mut ProjectionWorkspace::new()).unwrap_err();
        assert!(e.to_string().contains("capacity"), "{e}");
        assert_eq!(w, [vec![1.0, 2.0]]);
    }
}

/// LeNet-5 with non-integer unit energies: random sparse states projected onto
/// their own relaxed energy are unchanged; projected onto lower budgets they meet
/// them exactly (relaxed and exact energy), and projecting again changes nothing.
#[test]
fn systolic_projection_is_identity_on_feasible_states_and_idempotent() {
    let arch = zoo::lenet5().unwrap();
    let cfg = SystolicConfig {
        e_rf: 1.1,
        ..SystolicConfig::default()
    };
    let model = SystolicArray::new(&arch, cfg).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(11);
    for case in 0..20 {
        let mut s = NetworkState::dense(&arch);
        let density = rng.random_range(0.01..0.9);
        for w in &mut s.weights {
            for v in w.iter_mut() {
                *v = if rng.random_bool(density) {
                    rng.random_range(-1.0f32..1.0)
                } else {
                    0.0
                };
            }
        }
        let own = model.relaxed_energy_of(&s).unwrap();
        let mut same = s.clone();
        project(&mut same, &[Budget::absolute("energy", &model, own)]).unwrap();
        assert_eq!(
            same, s,
            "case {case}: a state at its own energy must not change"
        );
        for fraction in [0.3, 0.7, 0.95] {
            let budget = model.dense_floor().max(own * fraction);
            let mut p = s.clone();
            let out = project(&mut p, &[Budget::absolute("energy", &model, budget)]).unwrap();
            assert!(out.relaxed_energy <= budget);
            assert!(model.relaxed_energy_of(&p).unwrap() <= budget);
            assert!(model.energy(&p).unwrap().total <= budget);
            let mut again = p.clone();
            project(&mut again, &[Budget::absolute("energy", &model, budget)]).unwrap();
            assert_eq!(again, p, "case {case}: projecting twice equals once");
        }
    }
}

/// Layer lengths at the edges of the selection's blocks (64), chunks (4096) and
/// units (65 536), layers whose costs depend on rank with a small `buffered` (the
/// sampled filter) or a large one, quantised weights (ties at the threshold and at
/// the cut), zeros of both signs: on 1 and 3 threads the selection keeps exactly
/// what the sort-based reference keeps, and never exceeds the budget.
#[test]
fn medium_instances_at_block_and_unit_edges_match_the_reference() {
    let mut rng = ChaCha12Rng::seed_from_u64(31);
    let lens = [
        0usize, 1, 63, 64, 65, 4095, 4097, 20_000, 65_535, 65_537, 140_001,
    ];
    let mut ws = ProjectionWorkspace::new();
    for case in 0..150 {
        let layers = rng.random_range(1..4);
        let mut w = Vec::new();
        let mut c = Vec::new();
        for _ in 0..layers {
            let n = lens[rng.random_range(0..lens.len())];
            let levels = [7, 300, 1 << 22][rng.random_range(0..3)];
            w.push(
                (0..n)
                    .map(|_| match rng.random_range(0..12) {
                        0 => 0.0,
                        1 => -0.0,
                        _ => (rng.random_range(0..levels) as f32 - levels as f32 / 2.0) / 97.0,
                    })
                    .collect::<Vec<f32>>(),
            );
            let buffered = match rng.random_range(0..3) {
                0 => rng.random_range(0..=n.min(300)),
                1 => n / 2,
                _ => n,
            };
            let surcharge = if rng.random_bool(0.7) {
                rng.random_range(0.5..4.0)
            } else {
                0.0
            };
            c.push(LayerCost {
                base: rng.random_range(0.5..3.0),
                surcharge,
                buffered,
            });
        }
        let dense: f64 = w
            .iter()
            .zip(&c)
            .map(|(l, k)| l.len() as f64 * (k.base + k.surcharge))
            .sum();
        for f in [0.0, 0.003, 0.05, 0.3, 0.8, 1.1] {
            let cap = dense * f;
            let mut want = w.clone();
            let sel = project_sorted(&mut want, &c, cap).unwrap();
            for threads in [1, 3] {
                let mut got = w.clone();
                let out = energy_prune_testing::greedy_knapsack_on_threads(
                    &mut got, &c, cap, &mut ws, threads,
                )
                .unwrap();
                assert!(got == want, "case {case}, fraction {f}, threads {threads}");
                assert_eq!(out.kept, sel.kept, "case {case}");
                assert!(out.charged <= cap, "case {case}: {} > {cap}", out.charged);
            }
        }
    }
}
