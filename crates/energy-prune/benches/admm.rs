//! One ADMM iteration (proximal step over all channel groups, s step, dual ascent)
//! on AlexNet-sized weights, against one Adam update of the same weights.
//!
//! `cargo bench --bench admm`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use energy_prune::arch::zoo;
use energy_prune::energy::{SystolicArray, SystolicConfig, WidthCostModel};
use energy_prune::prune::{Admm, AdmmConfig, Budget};
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn admm(c: &mut Criterion) {
    let arch = zoo::alexnet().unwrap();
    let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let full: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
    let budget = 0.5 * model.cost(&full).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    let mut weights: Vec<Vec<f32>> = arch
        .layers()
        .iter()
        .map(|l| {
            (0..l.weight_count())
                .map(|_| rng.random_range(-0.1f32..0.1))
                .collect()
        })
        .collect();
    let precond: Vec<Vec<f32>> = weights.iter().map(|w| vec![1e-3; w.len()]).collect();
    let grads = precond.clone();
    let (mut m, mut v) = (precond.clone(), precond.clone());
    let n = arch.weight_count() as u64;
    let one = [Budget::absolute("energy", &model, budget)];
    let mut admm = Admm::new(&arch, &one, AdmmConfig::default()).unwrap();
    let mut group = c.benchmark_group("alexnet_61M");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.bench_function("admm_step", |b| {
        b.iter(|| {
            admm.step(black_box(&mut weights), &precond, 1e-5, &one)
                .unwrap()
        })
    });
    group.bench_function("adam_step", |b| {
        b.iter(|| {
            let (b1, b2, lr, eps) = (0.9f32, 0.999f32, 1e-5f32, 1e-8f32);
            for l in 0..weights.len() {
                for (((w, g), mi), vi) in weights[l]
                    .iter_mut()
                    .zip(&grads[l])
                    .zip(m[l].iter_mut())
                    .zip(v[l].iter_mut())
                {
                    *mi = b1 * *mi + (1.0 - b1) * g;
                    *vi = b2 * *vi + (1.0 - b2) * g * g;
                    *w -= lr * *mi / (vi.sqrt() + eps);
                }
            }
            black_box(&weights);
        })
    });
    group.finish();
}

criterion_group!(benches, admm);
criterion_main!(benches);
