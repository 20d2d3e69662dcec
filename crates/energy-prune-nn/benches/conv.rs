//! Convolution (im2col + GEMM) against a direct loop convolution, and one full
//! LeNet-5 training step, float and quantization-aware.
//!
//! `cargo bench --bench conv`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use energy_prune::arch::Conv2dGeometry;
use energy_prune::network::{Network, Trainable};
use energy_prune::train::Sgd;
use energy_prune::train::cross_entropy;
use energy_prune_nn::Cnn;
use energy_prune_testing::nn::kernels::{conv2d_backward, conv2d_direct, conv2d_forward};
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn geom(c: usize, h: usize, d: usize, k: usize, p: usize) -> Conv2dGeometry {
    Conv2dGeometry {
        in_channels: c,
        in_h: h,
        in_w: h,
        out_channels: d,
        kernel_h: k,
        kernel_w: k,
        stride: 1,
        padding: p,
        groups: 1,
    }
}

fn rand_vec(rng: &mut ChaCha12Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn conv(c: &mut Criterion) {
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    let cases = [
        ("lenet5_conv1_b64", geom(1, 32, 6, 5, 0), 64),
        ("lenet5_conv2_b64", geom(6, 14, 16, 5, 0), 64),
        ("alexnet_conv3_b4", geom(192, 13, 384, 3, 1), 4),
    ];
    for (name, g, batch) in cases {
        let x = rand_vec(&mut rng, g.in_channels * batch * g.in_h * g.in_w);
        let w = rand_vec(&mut rng, g.out_channels * g.filter_len());
        let b = rand_vec(&mut rng, g.out_channels);
        let n_out = g.out_channels * batch * g.out_positions();
        let mut y = vec![0.0; n_out];
        let mut col = vec![0.0; g.filter_len() * batch * g.out_positions()];
        let macs = (g.out_channels * g.filter_len() * g.out_positions() * batch) as u64;
        let mut group = c.benchmark_group(format!("conv2d_forward/{name}"));
        group.throughput(Throughput::Elements(macs));
        group.sample_size(10);
        group.bench_function(BenchmarkId::new("im2col_gemm", batch), |bn| {
            bn.iter(|| {
                conv2d_forward(&g, batch, black_box(&x), &w, Some(&b), &mut col, &mut y).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("direct", batch), |bn| {
            bn.iter(|| conv2d_direct(&g, batch, black_box(&x), &w, Some(&b), &mut y).unwrap())
        });
        group.finish();

        conv2d_forward(&g, batch, &x, &w, Some(&b), &mut col, &mut y).unwrap();
        let dy = rand_vec(&mut rng, n_out);
        let (mut dw, mut db, mut dx) = (vec![0.0; w.len()], vec![0.0; b.len()], vec![0.0; x.len()]);
        let mut dcol = vec![0.0; col.len()];
        let mut group = c.benchmark_group(format!("conv2d_backward/{name}"));
        group.throughput(Throughput::Elements(macs));
        group.sample_size(10);
        group.bench_function(BenchmarkId::new("im2col_gemm", batch), |bn| {
            bn.iter(|| {
                conv2d_backward(
                    &g,
                    batch,
                    &x,
                    &w,
                    &col,
                    black_box(&dy),
                    &mut dw,
                    Some(&mut db),
                    Some(&mut dx),
                    &mut dcol,
                )
                .unwrap()
            })
        });
        group.finish();
    }
}

fn train_step(c: &mut Criterion) {
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let batch = 64;
    let mut group = c.benchmark_group("lenet5_train_step");
    group.throughput(Throughput::Elements(batch as u64));
    for threads in [1, 2] {
        let mut net = Cnn::lenet5(0).unwrap();
        net.set_threads(threads);
        let mut opt = Sgd::new(0.01, 0.9, 5e-4).unwrap();
        let x = rand_vec(&mut rng, batch * net.input_len());
        let labels: Vec<u32> = (0..batch).map(|i| (i % 10) as u32).collect();
        let (mut logits, mut grad) = (Vec::new(), vec![0.0; batch * 10]);
        group.bench_function(BenchmarkId::new("threads", threads), |bn| {
            bn.iter(|| {
                net.forward(black_box(&x), batch, &mut logits).unwrap();
                grad.fill(0.0);
                cross_entropy(&logits, &labels, 10, 1.0, &mut grad).unwrap();
                net.backward(&grad).unwrap();
                opt.step(&mut net).unwrap();
            })
        });
    }
    group.finish();
}

/// Quantization-aware training against float training: the same LeNet-5 step, then
/// with int8 activations in every layer and the joint solver's per-step work
/// (full-precision weights updated from the optimizer's change, support held,
/// weights re-quantized per output channel and written back).
fn qat_step(c: &mut Criterion) {
    use energy_prune::energy::{NumberFormat, SystolicArray, SystolicConfig};
    use energy_prune::prune::{
        Budget, ConstrainedOptimizer, JointConfig, JointQuantization, Phase, RunInfo, StepContext,
        precision_options,
    };
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    let batch = 64;
    let mut group = c.benchmark_group("lenet5_qat_step");
    group.throughput(Throughput::Elements(batch as u64));
    for threads in [1, 2] {
        for qat in [false, true] {
            let mut net = Cnn::lenet5(0).unwrap();
            net.set_threads(threads);
            let mut opt = Sgd::new(0.01, 0.9, 5e-4).unwrap();
            let x = rand_vec(&mut rng, batch * net.input_len());
            let labels: Vec<u32> = (0..batch).map(|i| (i % 10) as u32).collect();
            let (mut logits, mut grad) = (Vec::new(), vec![0.0; batch * 10]);
            let hw = SystolicArray::new(net.architecture(), SystolicConfig::default()).unwrap();
            let int8 = precision_options(5, &[NumberFormat::INT8], &[NumberFormat::INT8]).unwrap();
            let mut solver = JointQuantization::new(
                vec![Budget::fraction("energy", &hw, 0.9)],
                int8,
                JointConfig::default(),
            )
            .unwrap();
            let steps = 1 << 30;
            if qat {
                solver.begin(&mut net, &RunInfo::default()).unwrap();
                solver.begin_phase(&net, Phase::Constrained, steps).unwrap();
                // One projection: int8 chosen, the activation quantizers set.
                solver.step(&mut net, &StepContext::new(50, steps)).unwrap();
                for _ in 0..10 {
                    net.forward(&x, batch, &mut logits).unwrap();
                }
            }
            let name = if qat { "int8-qat" } else { "float" };
            group.bench_function(BenchmarkId::new(name, threads), |bn| {
                bn.iter(|| {
                    net.forward(black_box(&x), batch, &mut logits).unwrap();
                    grad.fill(0.0);
                    cross_entropy(&logits, &labels, 10, 1.0, &mut grad).unwrap();
                    net.backward(&grad).unwrap();
                    opt.step(&mut net).unwrap();
                    if qat {
                        solver.step(&mut net, &StepContext::new(1, steps)).unwrap();
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, conv, train_step, qat_step);
criterion_main!(benches);
