//! Fitting the bilinear cost model and evaluating it.
//!
//! `cargo bench --bench fit`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use energy_prune::arch::{ArchBuilder, Architecture, Conv};
use energy_prune::energy::{Bilinear, FitOptions, ProfileSet, WidthCostModel, WidthSampler};

/// A sequential network with 16 widths (input, 14 hidden, classes).
fn sixteen_widths() -> Architecture {
    let mut b = ArchBuilder::new("chain16");
    let mut x = b.input(3, 32, 32).unwrap();
    for i in 0..14 {
        x = b
            .conv2d(&format!("conv{i}"), &x, Conv::new(32 + 8 * i, 3).padding(1))
            .unwrap();
    }
    let y = b.linear("fc", &x, 10, true).unwrap();
    b.finish(&y).unwrap()
}

fn fit(c: &mut Criterion) {
    let arch = sixteen_widths();
    let n = Bilinear::terms_for(&arch, true).len();
    let truth = Bilinear::with_coefficients(&arch, true, (0..=n).map(|i| 1.0 + i as f64).collect())
        .unwrap();
    let mut sampler = WidthSampler::new(&arch, 1);
    let mut data = ProfileSet::new(arch.widths().len());
    for _ in 0..10_000 {
        let s = sampler.sample();
        let f: Vec<f64> = s.iter().map(|v| *v as f64).collect();
        data.push(s, truth.cost(&f).unwrap()).unwrap();
    }
    let opts = FitOptions {
        linear_terms: true,
        lambda: Some(0.0),
        ..FitOptions::default()
    };
    let mut group = c.benchmark_group("bilinear_fit");
    group.throughput(Throughput::Elements(data.len() as u64));
    group.sample_size(10);
    group.bench_function("10k_samples_16_widths", |b| {
        b.iter(|| Bilinear::fit(&arch, black_box(&data), &opts).unwrap())
    });
    group.finish();

    let s: Vec<f64> = arch
        .widths()
        .iter()
        .map(|w| w.channels as f64 * 0.6)
        .collect();
    let mut g = vec![0.0; s.len()];
    c.bench_function("bilinear_value_and_gradient_16_widths", |b| {
        b.iter(|| truth.cost_and_gradient(black_box(&s), &mut g).unwrap())
    });
}

criterion_group!(benches, fit);
criterion_main!(benches);
