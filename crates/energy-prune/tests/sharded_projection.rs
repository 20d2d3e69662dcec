//! The parallel and sharded projections equal the in-memory one exactly: same
//! weights kept, same counts and charged cost, on random instances with ties,
//! zeros, rank-dependent costs, shards that cut through layers, and extreme scales.
#![cfg(feature = "serde")]

use energy_prune::energy::LayerCost;
use energy_prune::prune::projection::sharded::{
    Coordinator, PROTOCOL_VERSION, Reply, ReplyMessage, Request, RequestMessage, Shard, answer,
    coordinate,
};
use energy_prune::prune::{
    ProjectionWorkspace, ShardedProblem, WEIGHTS_PER_THREAD, greedy_knapsack,
};
use energy_prune_testing::greedy_knapsack_on_threads;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn weight(extreme: bool) -> BoxedStrategy<f32> {
    let ordinary = prop_oneof![
        2 => Just(0.0f32),
        2 => Just(0.5f32),
        1 => Just(-0.5f32),
        6 => -2.0f32..2.0,
    ];
    if extreme {
        prop_oneof![
            3 => ordinary,
            2 => (-44i32..38, 1.0f32..9.99).prop_map(|(e, m)| (m as f64 * 10f64.powi(e)) as f32),
        ]
        .boxed()
    } else {
        ordinary.boxed()
    }
}

fn instance(extreme: bool) -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<LayerCost>)> {
    prop::collection::vec(
        (1usize..40).prop_flat_map(move |n| {
            (
                prop::collection::vec(weight(extreme), n),
                prop_oneof![Just(1.0f64), Just(2.5), 0.5f64..5.0],
                prop_oneof![Just(0.0), 0.0f64..3.0],
                0..=n,
            )
        }),
        1..5,
    )
    .prop_map(|layers| {
        let mut w = Vec::new();
        let mut c = Vec::new();
        for (wl, base, surcharge, buffered) in layers {
            w.push(wl);
            c.push(LayerCost {
                base,
                surcharge,
                buffered,
            });
        }
        (w, c)
    })
}

fn dense_cost(w: &[Vec<f32>], c: &[LayerCost]) -> f64 {
    w.iter()
        .zip(c)
        .map(|(l, k)| l.len() as f64 * (k.base + k.surcharge))
        .sum()
}

/// The sharded protocol with every message serialised to JSON and back, as a
/// transport between machines would carry it.
fn over_the_wire(w: &mut [Vec<f32>], costs: &[LayerCost], capacity: f64, parts: usize) -> usize {
    let problem = ShardedProblem {
        costs: costs.to_vec(),
        layer_lens: w.iter().map(|l| l.len() as u64).collect(),
        capacity,
    };
    let mut shards = Shard::split(w, parts);
    let out = coordinate(&problem, |req| {
        let req: RequestMessage =
            serde_json::from_str(&serde_json::to_string(req).unwrap()).unwrap();
        shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                let r = answer(&problem, i, s, &req)?;
                Ok(
                    serde_json::from_str::<ReplyMessage>(&serde_json::to_string(&r).unwrap())
                        .unwrap(),
                )
            })
            .collect()
    })
    .unwrap();
    out.rounds
}

fn check(w: Vec<Vec<f32>>, c: Vec<LayerCost>, fraction: f64) -> Result<(), TestCaseError> {
    let capacity = dense_cost(&w, &c) * fraction;
    let mut a = w.clone();
    let sel = greedy_knapsack(&mut a, &c, capacity, &mut ProjectionWorkspace::new()).unwrap();
    for threads in [1, 2, 3, 7] {
        let mut b = w.clone();
        let out = greedy_knapsack_on_threads(
            &mut b,
            &c,
            capacity,
            &mut ProjectionWorkspace::new(),
            threads,
        )
        .unwrap();
        prop_assert_eq!(&a, &b, "threads {}", threads);
        // Identical in every field, kept value included.
        prop_assert_eq!(out, sel);
    }
    let mut d = w.clone();
    over_the_wire(&mut d, &c, capacity, 4);
    prop_assert_eq!(&a, &d, "serialised messages");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn parallel_and_sharded_equal_in_memory((w, c) in instance(false), f in 0.0f64..1.1) {
        check(w, c, f)?;
    }

    #[test]
    fn parallel_and_sharded_equal_in_memory_at_extreme_scales((w, c) in instance(true), f in 0.0f64..1.1) {
        check(w, c, f)?;
    }
}

/// Large layers (the bracket and radix paths at scale), rank-dependent costs,
/// many exact ties, and rounds counted.
#[test]
fn large_instances_with_many_ties_are_identical() {
    let mut rng = ChaCha12Rng::seed_from_u64(3);
    let n = 200_000;
    let layers: Vec<Vec<f32>> = (0..3)
        .map(|l| {
            (0..n)
                .map(|_| match rng.random_range(0..10) {
                    0 => 0.0,
                    1..=3 => [0.25f32, -0.5, 1.0][l],
                    _ => rng.random_range(-1.0f32..1.0),
                })
                .collect()
        })
        .collect();
    let costs = vec![
        LayerCost {
            base: 3.0,
            surcharge: 5.0,
            buffered: n / 4,
        },
        LayerCost {
            base: 1.5,
            surcharge: 0.0,
            buffered: n,
        },
        LayerCost {
            base: 0.7,
            surcharge: 0.3,
            buffered: n / 2,
        },
    ];
    for fraction in [0.01, 0.1, 0.3, 0.6, 0.95] {
        let capacity = dense_cost(&layers, &costs) * fraction;
        let mut a = layers.clone();
        let sel =
            greedy_knapsack(&mut a, &costs, capacity, &mut ProjectionWorkspace::new()).unwrap();
        let mut b = layers.clone();
        let out = greedy_knapsack_on_threads(
            &mut b,
            &costs,
            capacity,
            &mut ProjectionWorkspace::new(),
            2,
        )
        .unwrap();
        assert!(a == b, "fraction {fraction}");
        assert_eq!(out, sel);
        let mut d = layers.clone();
        assert!(over_the_wire(&mut d, &costs, capacity, 5) <= 10);
        assert!(a == d);
    }
}

#[test]
fn bad_shards_and_non_finite_weights_are_errors() {
    let costs = vec![LayerCost {
        base: 1.0,
        surcharge: 0.0,
        buffered: 4,
    }];
    let mut w = vec![vec![1.0f32, f32::NAN, 2.0, 3.0]];
    let before = format!("{w:?}");
    let e = greedy_knapsack_on_threads(&mut w, &costs, 1.0, &mut ProjectionWorkspace::new(), 2)
        .unwrap_err();
    assert!(
        matches!(e, energy_prune::Error::NonFinite { index: 1, .. }),
        "{e}"
    );
    assert_eq!(format!("{w:?}"), before, "unchanged on error");
    // The protocol names the global position of a non-finite weight.
    let problem1 = ShardedProblem {
        costs: costs.clone(),
        layer_lens: vec![4],
        capacity: 1.0,
    };
    let mut shards = Shard::split(&mut w, 2);
    let e = coordinate(&problem1, |req| {
        shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| answer(&problem1, i, s, req))
            .collect()
    })
    .unwrap_err();
    assert!(e.to_string().contains("global position"), "{e}");
    // Shards out of order.
    let problem = ShardedProblem {
        costs: costs.clone(),
        layer_lens: vec![4],
        capacity: 1.0,
    };
    let mut w = vec![vec![1.0f32, 2.0, 3.0, 4.0]];
    let mut shards = Shard::split(&mut w, 2);
    shards.reverse();
    let e = coordinate(&problem, |req| {
        shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| answer(&problem, i, s, req))
            .collect()
    })
    .unwrap_err();
    assert!(e.to_string().contains("tile"), "{e}");
    // A problem whose lengths do not match its costs.
    let bad = ShardedProblem {
        layer_lens: vec![4, 1],
        ..problem
    };
    assert!(bad.validate().is_err());
}

/// A coordinator facing a broken transport or malformed replies returns an error
/// naming the problem, and a shard facing a malformed request does too.
#[test]
fn malformed_messages_are_errors() {
    let costs = vec![
        LayerCost {
            base: 1.0,
            surcharge: 2.0,
            buffered: 3,
        },
        LayerCost {
            base: 2.0,
            surcharge: 0.0,
            buffered: 8,
        },
    ];
    let problem = ShardedProblem {
        costs,
        layer_lens: vec![8, 8],
        capacity: 6.0,
    };
    let fresh = || vec![(0..8).map(|i| i as f32 - 3.5).collect::<Vec<f32>>(); 2];
    // `tamper(round, replies)` edits the honest replies of each round.
    let run = |tamper: &dyn Fn(usize, &mut Vec<Reply>)| {
        let mut w = fresh();
        let mut shards = Shard::split(&mut w, 2);
        let mut round = 0;
        coordinate(&problem, |req| {
            let mut replies: Vec<Reply> = shards
                .iter_mut()
                .enumerate()
                .map(|(i, s)| answer(&problem, i, s, req).map(|m| m.reply))
                .collect::<energy_prune::Result<_>>()?;
            tamper(round, &mut replies);
            round += 1;
            Ok(replies.into_iter().map(ReplyMessage::new).collect())
        })
    };
    assert!(run(&|_, _| {}).is_ok());
    let says = |tamper: &dyn Fn(usize, &mut Vec<Reply>), what: &str| {
        let e = run(tamper).unwrap_err().to_string();
        assert!(e.contains(what), "expected `{what}` in: {e}");
    };
    says(
        &|r, rs| {
            if r == 1 {
                rs.pop();
            }
        },
        "one per shard",
    );
    says(
        &|r, rs| {
            if r == 0 {
                rs[0] = Reply::Done
            }
        },
        "expected Stats",
    );
    says(
        &|r, rs| {
            if r == 0 {
                rs.pop();
            }
        },
        "weights held by the shards",
    );
    says(
        &|r, rs| {
            if r == 0 {
                rs.swap(0, 1)
            }
        },
        "tile",
    );
    says(
        &|r, rs| {
            if r == 1 {
                rs[0] = Reply::Done
            }
        },
        "expected Magnitudes",
    );
    says(
        &|r, rs| {
            if r == 1
                && let Reply::Magnitudes(h) = &mut rs[0]
            {
                h.push(Vec::new());
            }
        },
        "one histogram per layer",
    );
    says(
        &|r, rs| {
            if r == 4 {
                rs[1] = Reply::Done
            }
        },
        "expected Keys",
    );
    says(
        &|r, rs| {
            if r == 4
                && let Reply::Keys(h) = &mut rs[0]
            {
                h.push((0, 99, 1));
            }
        },
        "out of range",
    );
    says(
        &|r, rs| {
            if let Reply::Applied { kept, .. } = &mut rs[0] {
                kept.pop();
                let _ = r;
            }
        },
        "per class where the earlier rounds established",
    );
    says(
        &|r, rs| {
            if r == 0
                && let Reply::Stats { nonzeros, .. } = &mut rs[0]
            {
                nonzeros.push((7, 1));
            }
        },
        "layers must be in range",
    );
    // Shard side.
    let mut w = fresh();
    let mut shards = Shard::split(&mut w, 1);
    let bad_step = Request::Magnitudes {
        layers: vec![(
            0,
            energy_prune::prune::projection::sharded::RadixStep {
                prefix: 0,
                known: 30,
                bits: 12,
            },
        )],
    };
    let e = answer(&problem, 0, &mut shards[0], &RequestMessage::new(bad_step)).unwrap_err();
    assert!(e.to_string().contains("radix step"), "{e}");
    let bad_layer = Request::Magnitudes {
        layers: vec![(
            9,
            energy_prune::prune::projection::sharded::RadixStep {
                prefix: 0,
                known: 0,
                bits: 12,
            },
        )],
    };
    assert!(answer(&problem, 0, &mut shards[0], &RequestMessage::new(bad_layer)).is_err());
    let bad_ctx = Request::Ties {
        ctx: energy_prune::prune::projection::sharded::KeyContext {
            logarithmic: false,
            params: vec![1.0],
            classes: Vec::new(),
        },
        cut: 0,
    };
    let e = answer(&problem, 0, &mut shards[0], &RequestMessage::new(bad_ctx)).unwrap_err();
    assert!(e.to_string().contains("key context"), "{e}");
    let mut buf = vec![0.0f32; 10];
    assert!(
        Shard::from_range(&problem, 10, &mut buf).is_err(),
        "past the last weight"
    );
    // Requests that would wrap or write non-finite values are refused.
    let wrap = Request::Magnitudes {
        layers: vec![(
            0,
            energy_prune::prune::projection::sharded::RadixStep {
                prefix: 0,
                known: u32::MAX,
                bits: 1,
            },
        )],
    };
    let e = answer(&problem, 0, &mut shards[0], &RequestMessage::new(wrap)).unwrap_err();
    assert!(e.to_string().contains("radix step"), "{e}");
    for (position, weight) in [(0, f32::NAN), (0, f32::INFINITY), (16, 1.0)] {
        let keep = Request::KeepOnly { position, weight };
        let e = answer(&problem, 0, &mut shards[0], &RequestMessage::new(keep)).unwrap_err();
        assert!(matches!(e, energy_prune::Error::Protocol { .. }), "{e}");
    }
    let huge = ShardedProblem {
        costs: problem.costs.clone(),
        layer_lens: vec![u64::MAX, 2],
        capacity: 1.0,
    };
    assert!(huge.validate().is_err(), "lengths whose sum overflows");
    assert!(coordinate(&huge, |_| Ok(Vec::new())).is_err());
    // Messages of another protocol version are refused on both sides, before any
    // weight changes.
    let mut old = RequestMessage::new(Request::Stats);
    old.version = PROTOCOL_VERSION + 1;
    let e = answer(&problem, 0, &mut shards[0], &old).unwrap_err();
    assert!(
        matches!(e, energy_prune::Error::Protocol { .. }) && e.to_string().contains("version"),
        "{e}"
    );
    let mut w = fresh();
    let mut shards = Shard::split(&mut w, 2);
    let e = coordinate(&problem, |req| {
        shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                let mut r = answer(&problem, i, s, req)?;
                r.version = 1;
                Ok(r)
            })
            .collect()
    })
    .unwrap_err();
    assert!(e.to_string().contains("protocol version 1"), "{e}");
    assert_eq!(w, fresh(), "nothing changed");
}

/// The public parallel entry point gives small problems fewer threads than asked
/// (each thread at least `WEIGHTS_PER_THREAD` weights) and large ones all of them:
/// either way the result is the sequential one.
#[test]
fn parallel_entry_point_equals_sequential_at_both_sizes() {
    let mut rng = ChaCha12Rng::seed_from_u64(9);
    for n in [1000, 2 * WEIGHTS_PER_THREAD + 17] {
        let w: Vec<Vec<f32>> = vec![(0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()];
        let costs = [LayerCost {
            base: 1.0,
            surcharge: 2.0,
            buffered: n / 3,
        }];
        let capacity = dense_cost(&w, &costs) * 0.2;
        let mut a = w.clone();
        let sel =
            greedy_knapsack(&mut a, &costs, capacity, &mut ProjectionWorkspace::new()).unwrap();
        let mut b = w.clone();
        let par = energy_prune::prune::greedy_knapsack_parallel(
            &mut b,
            &costs,
            capacity,
            &mut ProjectionWorkspace::new(),
            4,
        )
        .unwrap();
        assert!(a == b, "n {n}");
        assert_eq!(par, sel);
    }
}

/// Shards cut at odd places through layers of odd lengths (block and unit edges),
/// rank-dependent costs with small buffers, quantised weights: the protocol keeps
/// exactly what the in-memory selection keeps.
#[test]
fn shards_at_odd_places_equal_in_memory() {
    let mut rng = ChaCha12Rng::seed_from_u64(12);
    for case in 0..40 {
        let w: Vec<Vec<f32>> = [65, 4097, 65_537, 70_001][..rng.random_range(1..5)]
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| (rng.random_range(0..200) - 100) as f32 / 64.0)
                    .collect()
            })
            .collect();
        let costs: Vec<LayerCost> = w
            .iter()
            .map(|l| LayerCost {
                base: rng.random_range(0.5..2.0),
                surcharge: if rng.random_bool(0.5) {
                    rng.random_range(0.5..3.0)
                } else {
                    0.0
                },
                buffered: rng.random_range(0..l.len().min(500)),
            })
            .collect();
        let capacity = dense_cost(&w, &costs) * rng.random_range(0.001..0.9);
        let mut a = w.clone();
        greedy_knapsack(&mut a, &costs, capacity, &mut ProjectionWorkspace::new()).unwrap();
        let mut d = w.clone();
        over_the_wire(&mut d, &costs, capacity, rng.random_range(2..9));
        assert!(a == d, "case {case}");
    }
}

/// How a lying (or broken) shard or transport corrupts the honest replies of one
/// round: every edit the coordinator must catch before it returns `Ok` over the
/// capacity.
#[derive(Debug, Clone, Copy)]
enum Lie {
    Swap,
    Inflate(u64),
    Deflate,
    Empty,
    WrongLayer,
    BestValue(f32),
    NaNValue,
    Duplicate,
}

fn lie() -> impl Strategy<Value = Lie> {
    prop_oneof![
        Just(Lie::Swap),
        (1u64..1000).prop_map(Lie::Inflate),
        Just(Lie::Deflate),
        Just(Lie::Empty),
        Just(Lie::WrongLayer),
        prop_oneof![
            Just(f32::INFINITY),
            Just(1e30f32),
            Just(-7.0f32),
            Just(1e-3f32)
        ]
        .prop_map(Lie::BestValue),
        Just(Lie::NaNValue),
        Just(Lie::Duplicate),
    ]
}

fn tell(lie: Lie, shard: usize, replies: &mut [Reply]) {
    let n = replies.len();
    let r = &mut replies[shard % n];
    match (lie, r) {
        (Lie::Swap, _) if n > 1 => replies.swap(shard % n, (shard + 1) % n),
        (Lie::Inflate(k), Reply::Stats { nonzeros, .. }) => {
            nonzeros.iter_mut().for_each(|e| e.1 += k)
        }
        (Lie::Deflate, Reply::Stats { nonzeros, .. }) => nonzeros.iter_mut().for_each(|e| e.1 /= 2),
        (Lie::Empty, Reply::Stats { nonzeros, best, .. }) => {
            nonzeros.clear();
            best.clear();
        }
        (Lie::WrongLayer, Reply::Stats { best, nonzeros, .. }) => {
            best.iter_mut().for_each(|b| b.layer = (b.layer + 1) % 4);
            nonzeros.iter_mut().for_each(|e| e.0 = (e.0 + 1) % 4);
        }
        (Lie::BestValue(v), Reply::Stats { best, .. }) => {
            best.iter_mut().for_each(|b| b.weight = v)
        }
        (Lie::NaNValue, Reply::Stats { sum_sq, .. }) => *sum_sq = f64::NAN,
        (Lie::Inflate(k), Reply::Magnitudes(hs)) => hs.iter_mut().flatten().for_each(|e| e.2 += k),
        (Lie::Deflate | Lie::Empty, Reply::Magnitudes(hs)) => hs.iter_mut().for_each(Vec::clear),
        (Lie::Inflate(k), Reply::Keys(h)) => h.iter_mut().for_each(|e| e.2 += k),
        (Lie::Deflate, Reply::Keys(h)) => h.iter_mut().for_each(|e| e.2 /= 2),
        (Lie::Empty, Reply::Keys(h)) => h.clear(),
        (Lie::WrongLayer, Reply::Keys(h)) => h.iter_mut().for_each(|e| e.1 ^= 2),
        (Lie::Duplicate, Reply::Keys(h)) => {
            let copy = h.clone();
            h.extend(copy);
        }
        (Lie::Inflate(k), Reply::Ties(runs)) => runs.iter_mut().for_each(|e| e.1 += k),
        (Lie::Empty | Lie::Deflate, Reply::Ties(runs)) => runs.clear(),
        (Lie::WrongLayer, Reply::Ties(runs)) => runs.iter_mut().for_each(|e| e.0 ^= 1),
        (Lie::Inflate(k), Reply::Applied { kept, .. }) => kept.iter_mut().for_each(|e| *e += k),
        (Lie::Deflate | Lie::Empty, Reply::Applied { kept, .. }) => {
            kept.iter_mut().for_each(|e| *e /= 2)
        }
        (Lie::NaNValue, Reply::Applied { kept_value, .. }) => *kept_value = f64::NAN,
        (Lie::BestValue(v), Reply::Applied { kept_value, .. }) => *kept_value = f64::from(v),
        _ => {}
    }
}

/// The honest protocol over `parts` shards of `w`, with the replies of round
/// `round` corrupted by `lie` (told by shard `shard`).
fn exchange_with_lie(
    problem: &ShardedProblem,
    w: &mut [Vec<f32>],
    parts: usize,
    round: usize,
    shard: usize,
    lie: Lie,
) -> energy_prune::Result<energy_prune::prune::ShardedOutcome> {
    let mut shards = Shard::split(w, parts);
    let mut at = 0;
    coordinate(problem, |req| {
        let mut replies: Vec<Reply> = shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| answer(problem, i, s, req).map(|m| m.reply))
            .collect::<energy_prune::Result<_>>()?;
        if at == round {
            tell(lie, shard, &mut replies);
        }
        at += 1;
        Ok(replies.into_iter().map(ReplyMessage::new).collect())
    })
}

/// The true cost of weights: nonzeros per layer priced as the in-memory
/// projection prices them (rank-dependent surcharges included).
fn true_cost(w: &[Vec<f32>], c: &[LayerCost]) -> f64 {
    w.iter()
        .zip(c)
        .map(|(l, k)| {
            let nz = l.iter().filter(|v| **v != 0.0).count();
            let surcharged = nz.saturating_sub(k.buffered);
            nz as f64 * k.base + surcharged as f64 * k.surcharge
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// One reply of one round corrupted: the coordinator either errors or returns
    /// weights within the capacity, never `Ok` over it, and never writes a value
    /// no shard held.
    #[test]
    fn a_lying_shard_never_gets_ok_over_capacity(
        (w, c) in instance(false),
        f in 0.0f64..1.1,
        parts in 2usize..5,
        round in 0usize..11,
        shard in 0usize..5,
        lie in lie(),
    ) {
        let capacity = dense_cost(&w, &c) * f;
        let problem = ShardedProblem {
            costs: c.clone(),
            layer_lens: w.iter().map(|l| l.len() as u64).collect(),
            capacity,
        };
        let mut d = w.clone();
        let out = exchange_with_lie(&problem, &mut d, parts, round, shard, lie);
        if out.is_ok() {
            let cost = true_cost(&d, &c);
            prop_assert!(
                cost <= capacity * (1.0 + 1e-9) + 1e-12,
                "Ok with true cost {} over capacity {} ({:?} in round {})",
                cost, capacity, lie, round
            );
            let held: Vec<u32> = w.iter().flatten().map(|v| v.to_bits()).collect();
            for v in d.iter().flatten().filter(|v| **v != 0.0) {
                prop_assert!(held.contains(&v.to_bits()), "wrote {} that no shard held", v);
            }
        }
    }
}

/// The corruptions the reliability review observed, each caught.
#[test]
fn the_coordinator_checks_replies_against_earlier_rounds() {
    let costs = vec![
        LayerCost {
            base: 1.0,
            surcharge: 2.0,
            buffered: 3,
        },
        LayerCost {
            base: 2.0,
            surcharge: 0.0,
            buffered: 8,
        },
    ];
    let problem = ShardedProblem {
        costs: costs.clone(),
        layer_lens: vec![8, 8],
        capacity: 6.0,
    };
    let fresh = || vec![(0..8).map(|i| i as f32 - 3.5).collect::<Vec<f32>>(); 2];
    let run = |round: usize, lie: Lie, problem: &ShardedProblem| {
        let mut w = fresh();
        let out = exchange_with_lie(problem, &mut w, 2, round, 0, lie);
        (out, w)
    };
    // Rounds: 0 stats, 1-3 magnitudes, 4-6 keys, 7 ties, 8 apply.
    for (round, lie, says) in [
        (
            0,
            Lie::Deflate,
            "8 keys in layer 0, which holds 4 nonzero weights",
        ),
        (
            0,
            Lie::Inflate(5),
            "13 nonzeros in layer 0, which has 8 weights",
        ),
        (
            0,
            Lie::Empty,
            "0 nonzeros, sum of squares 42 and largest magnitude 3.5 do not fit",
        ),
        (
            0,
            Lie::WrongLayer,
            "8 nonzeros in layer 1, which has 0 weights",
        ),
        (
            0,
            Lie::BestValue(f32::INFINITY),
            "best weight inf of layer 0",
        ),
        (
            0,
            Lie::BestValue(1e30),
            "must be a finite nonzero of at most the shard's largest",
        ),
        (
            0,
            Lie::NaNValue,
            "sum of squares NaN and largest magnitude 3.5 must be finite",
        ),
        (
            1,
            Lie::Inflate(3),
            "20 magnitudes of layer 0 where earlier rounds established 8",
        ),
        (
            4,
            Lie::Empty,
            "0 keys in layer 0, which holds 8 nonzero weights",
        ),
        (
            5,
            Lie::Inflate(1),
            "[2, 0, 0, 0] where the previous round established [1, 0, 0, 0]",
        ),
        (
            7,
            Lie::Swap,
            "ties per class [0, 0, 2, 0] where the key rounds established",
        ),
        (
            8,
            Lie::Inflate(1),
            "kept [4, 1, 1, 1] per class where the earlier rounds established",
        ),
        (8, Lie::NaNValue, "kept value NaN"),
    ] {
        let (out, _) = run(round, lie, &problem);
        let e = out.expect_err(says).to_string();
        assert!(
            e.contains(says),
            "{lie:?} in round {round}: expected `{says}` in: {e}"
        );
    }
    // A state that fits: an under-reported second pass is caught, the state unchanged.
    let loose = ShardedProblem {
        capacity: 1e9,
        ..problem.clone()
    };
    let (out, w) = run(1, Lie::Deflate, &loose);
    assert!(
        out.unwrap_err()
            .to_string()
            .contains("changed between two passes")
    );
    assert_eq!(w, fresh());
    // A keep-only request carrying a value the shard does not hold is refused.
    let mut w = fresh();
    let mut shards = Shard::split(&mut w, 1);
    let req = RequestMessage::new(Request::KeepOnly {
        position: 3,
        weight: 1e30,
    });
    assert!(answer(&problem, 0, &mut shards[0], &req).is_err());
    drop(shards);
    assert_eq!(w, fresh());
}

#[test]
fn an_owned_coordinator_runs_the_same_exchange() {
    let mut rng = ChaCha12Rng::seed_from_u64(11);
    let costs = vec![
        LayerCost {
            base: 3.0,
            surcharge: 5.0,
            buffered: 300,
        },
        LayerCost {
            base: 1.0,
            surcharge: 0.0,
            buffered: 0,
        },
    ];
    let w: Vec<Vec<f32>> = [1000usize, 2500]
        .iter()
        .map(|&n| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    let problem = ShardedProblem {
        costs: costs.clone(),
        layer_lens: w.iter().map(|l| l.len() as u64).collect(),
        capacity: 0.4 * dense_cost(&w, &costs),
    };
    let (mut a, mut b) = (w.clone(), w);
    let mut shards = Shard::split(&mut a, 3);
    let borrowed = coordinate(&problem, |req| {
        shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| answer(&problem, i, s, req))
            .collect()
    })
    .unwrap();
    let mut c = Coordinator::owned(problem.clone()).unwrap();
    let mut shards = Shard::split(&mut b, 3);
    let owned = loop {
        let req = c.next_request().unwrap();
        let replies: Vec<ReplyMessage> = shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| answer(&problem, i, s, &req).unwrap())
            .collect();
        if let Some(out) = c.receive(&replies).unwrap() {
            break out;
        }
    };
    assert_eq!(owned, borrowed);
    assert_eq!(a, b);
    assert!(owned.selection.kept > 0);
}
