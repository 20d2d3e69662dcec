//! Energy evaluation of the analytic systolic model on AlexNet and VGG-16.
//!
//! `cargo bench --bench energy`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use energy_prune::arch::zoo;
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::NetworkState;
use energy_prune::prune::weight_costs;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn energy(c: &mut Criterion) {
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    for arch in [zoo::alexnet().unwrap(), zoo::vgg16().unwrap()] {
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let dense = NetworkState::dense(&arch);
        let mut sparse = dense.clone();
        for w in &mut sparse.weights {
            w.iter_mut()
                .for_each(|v| *v = if rng.random_bool(0.3) { 1.0 } else { 0.0 });
        }
        let n = arch.weight_count() as u64;
        let mut group = c.benchmark_group(format!("exact_energy/{}", arch.name()));
        group.throughput(Throughput::Elements(n));
        group.sample_size(10);
        group.bench_function("dense", |b| {
            b.iter(|| model.energy(black_box(&dense)).unwrap())
        });
        group.bench_function("random_30pct", |b| {
            b.iter(|| model.energy(black_box(&sparse)).unwrap())
        });
        group.finish();

        let nz = sparse.nonzeros();
        let ie = model.dense_input_energy().to_vec();
        let mut group = c.benchmark_group(format!("relaxed_energy/{}", arch.name()));
        group.bench_function("relaxed_total", |b| {
            b.iter(|| model.relaxed_total(black_box(&nz), &ie).unwrap())
        });
        group.finish();
    }

    let arch = zoo::alexnet().unwrap();
    let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let weights: Vec<Vec<f32>> = arch
        .layers()
        .iter()
        .map(|l| {
            (0..l.weight_count())
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect()
        })
        .collect();
    let costs = model.knapsack_costs();
    let mut out = Vec::new();
    let mut group = c.benchmark_group("weight_costs");
    group.throughput(Throughput::Elements(arch.weight_count() as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("alexnet", arch.weight_count()), |b| {
        b.iter(|| weight_costs(black_box(&weights), &costs, &mut out).unwrap())
    });
    group.finish();
}

criterion_group!(benches, energy);
criterion_main!(benches);
