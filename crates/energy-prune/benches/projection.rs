//! Weighted sparse projection on 1 M and 10 M weights, on AlexNet (61 M,
//! systolic costs) and on ResNet-18 (11.7 M, nearly all rank-dependent costs),
//! against baselines measured in the same run: one streaming pass over the same
//! weights (the memory floor: a sum of squares), the sort-based
//! reference, the sequential selection, the parallel selection (2 threads) and the
//! sharded protocol in memory (8 shards, answered in turn on one thread).
//!
//! Every projection works in place on long-lived buffers, as in training: before
//! each timed call the buffers get the original weights back (not timed), so no
//! allocation or first touch of fresh memory is measured.
//!
//! `cargo bench --bench projection`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use energy_prune::arch::zoo;
use energy_prune::energy::{LayerCost, SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::prune::projection::sharded::{Shard, answer, coordinate};
use energy_prune::prune::{
    ProjectionWorkspace, ShardedProblem, greedy_knapsack, greedy_knapsack_parallel,
};
use energy_prune_testing::project_sorted;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn normal_weights(rng: &mut ChaCha12Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u1, u2): (f32, f32) = (rng.random_range(1e-7f32..1.0), rng.random());
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// Time `project` on `iters` fresh copies of `weights` held in one set of
/// buffers (restoring them is not timed).
fn in_place(
    iters: u64,
    weights: &[Vec<f32>],
    buffers: &mut [Vec<f32>],
    mut project: impl FnMut(&mut [Vec<f32>]),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        for (b, w) in buffers.iter_mut().zip(weights) {
            b.copy_from_slice(w);
        }
        let t = Instant::now();
        project(black_box(&mut *buffers));
        total += t.elapsed();
    }
    total
}

fn bench_case(
    c: &mut Criterion,
    name: &str,
    weights: Vec<Vec<f32>>,
    costs: Vec<LayerCost>,
    keep_fraction: f64,
) {
    let n: usize = weights.iter().map(Vec::len).sum();
    // Capacity: about `keep_fraction` of the weights at their base cost.
    let capacity: f64 = weights
        .iter()
        .zip(&costs)
        .map(|(w, c)| w.len() as f64 * c.base)
        .sum::<f64>()
        * keep_fraction;
    let mut ws = ProjectionWorkspace::new();
    let mut buffers = weights.clone();
    let mut group = c.benchmark_group(format!("projection/{name}"));
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.bench_function(BenchmarkId::new("selection", n), |b| {
        b.iter_custom(|iters| {
            in_place(iters, &weights, &mut buffers, |w| {
                greedy_knapsack(w, &costs, capacity, &mut ws).unwrap();
            })
        })
    });
    // The floor: one streaming pass over the same weights, as fast as a pass can be
    // (a sum of squares in 16 independent f32 lanes, which vectorises).
    let one_pass = |w: &[f32]| {
        let mut acc = [0.0f32; 16];
        for c in w.chunks_exact(16) {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v * v;
            }
        }
        acc.iter().sum::<f32>()
    };
    group.bench_function(BenchmarkId::new("floor_one_pass", n), |b| {
        b.iter(|| weights.iter().map(|w| one_pass(black_box(w))).sum::<f32>())
    });
    group.bench_function(BenchmarkId::new("floor_one_pass_2_threads", n), |b| {
        let halves: Vec<(&[f32], &[f32])> =
            weights.iter().map(|w| w.split_at(w.len() / 2)).collect();
        b.iter(|| {
            std::thread::scope(|s| {
                let h = s.spawn(|| {
                    halves
                        .iter()
                        .map(|(a, _)| one_pass(black_box(a)))
                        .sum::<f32>()
                });
                let b: f32 = halves.iter().map(|(_, b)| one_pass(black_box(b))).sum();
                h.join().unwrap() + b
            })
        })
    });
    let mut ws2 = ProjectionWorkspace::new();
    group.bench_function(BenchmarkId::new("parallel_2_threads", n), |b| {
        b.iter_custom(|iters| {
            in_place(iters, &weights, &mut buffers, |w| {
                greedy_knapsack_parallel(w, &costs, capacity, &mut ws2, 2).unwrap();
            })
        })
    });
    let problem = ShardedProblem {
        costs: costs.clone(),
        layer_lens: weights.iter().map(|w| w.len() as u64).collect(),
        capacity,
    };
    group.bench_function(BenchmarkId::new("sharded_8_in_memory", n), |b| {
        b.iter_custom(|iters| {
            in_place(iters, &weights, &mut buffers, |w| {
                let mut shards = Shard::split(w, 8);
                coordinate(&problem, |req| {
                    shards
                        .iter_mut()
                        .enumerate()
                        .map(|(i, s)| answer(&problem, i, s, req))
                        .collect()
                })
                .unwrap();
            })
        })
    });
    group.bench_function(BenchmarkId::new("sort", n), |b| {
        b.iter_custom(|iters| {
            in_place(iters, &weights, &mut buffers, |w| {
                project_sorted(w, &costs, capacity).unwrap();
            })
        })
    });
    group.finish();
}

fn projection(c: &mut Criterion) {
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    for n in [1_000_000usize, 10_000_000] {
        // A conv-like layer that spills the weight buffer and a linear-like layer.
        let weights = vec![
            normal_weights(&mut rng, n / 10),
            normal_weights(&mut rng, n - n / 10),
        ];
        let costs = vec![
            LayerCost {
                base: 654.0,
                surcharge: 1600.0,
                buffered: 4096,
            },
            LayerCost {
                base: 210.0,
                surcharge: 0.0,
                buffered: n,
            },
        ];
        bench_case(c, &format!("{}M", n / 1_000_000), weights, costs, 0.3);
    }
    // AlexNet, and a model whose layers nearly all have rank-dependent costs.
    for (name, arch) in [
        ("alexnet_61M", zoo::alexnet().unwrap()),
        ("resnet18_11M", zoo::resnet18().unwrap()),
    ] {
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let weights: Vec<Vec<f32>> = arch
            .layers()
            .iter()
            .map(|l| normal_weights(&mut rng, l.weight_count()))
            .collect();
        bench_case(c, name, weights, model.knapsack_costs(), 0.3);
    }
}

criterion_group!(benches, projection);
criterion_main!(benches);
