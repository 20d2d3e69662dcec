//! A network that is not the reference CNN, trained by its own loop, kept within an
//! energy budget by calling the constrained-optimizer step after every update.
//!
//! The model is a two-layer MLP (784 -> 128 -> 10, ReLU) whose weights live in its
//! own `[in][out]` (transposed) storage, with its own forward and backward pass and
//! its own plain SGD. It implements only `Network` and `NetworkMut` (read and write
//! weights in the canonical layout); the loop below is the user's, and the crate
//! contributes one call per update: `WeightProjection::step`.
//!
//! ```text
//! cargo run --release -p energy-prune-examples --example custom_training_loop
//! ```
//! With `json: true` in its settings the last line of stdout is
//! `{"budget": f64, "energy": f64, "budget_met": bool, "test_accuracy": f64}`, the
//! energy as a fraction of the dense network's.

use energy_prune::prune::Budget;
use std::path::PathBuf;

use energy_prune::arch::{ArchBuilder, Architecture};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkMut, NetworkState};
use energy_prune::prune::{
    ConstrainedOptimizer, Phase, RunInfo, StepContext, WeightProjection, WeightProjectionConfig,
};
use energy_prune::train::{Dataset, argmax_rows, cross_entropy};
use energy_prune::{Error, Result};
use energy_prune_nn::mnist::{Mnist, MnistOptions};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng, rngs::StdRng};

struct Args {
    budget: f64,
    epochs: usize,
    finetune_epochs: usize,
    seed: u64,
    data: PathBuf,
    json: bool,
}

/// The example's settings (edit them here: the example shows the library, not a
/// command line; the `energy-prune` tool has the jobs with flags).
fn main() -> std::process::ExitCode {
    let args = Args {
        budget: 0.3,
        epochs: 3,
        finetune_epochs: 1,
        seed: 1,
        data: PathBuf::from("data/mnist"),
        json: false,
    };
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The user's model: two dense layers, weights stored `[in][out]`.
struct Mlp {
    arch: Architecture,
    dims: [(usize, usize); 2],
    w: [Vec<f32>; 2],
    b: [Vec<f32>; 2],
}

/// What one forward pass keeps for the backward pass.
struct Cache {
    x: Vec<f32>,
    h: Vec<f32>,
    z: Vec<f32>,
}

impl Mlp {
    fn new(seed: u64) -> Result<Self> {
        let mut b = ArchBuilder::new("mlp");
        let x = b.input(784, 1, 1)?;
        let h = b.linear("fc1", &x, 128, true)?;
        let z = b.linear("fc2", &h, 10, true)?;
        let arch = b.finish(&z)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let dims = [(784, 128), (128, 10)];
        let init = |(i, o): (usize, usize), rng: &mut StdRng| -> Vec<f32> {
            let s = (6.0 / i as f32).sqrt();
            (0..i * o).map(|_| rng.random_range(-s..s)).collect()
        };
        let w = [init(dims[0], &mut rng), init(dims[1], &mut rng)];
        Ok(Self {
            arch,
            dims,
            w,
            b: [vec![0.0; 128], vec![0.0; 10]],
        })
    }

    /// `y[n][o] = b[o] + sum_i x[n][i] w[i][o]`.
    fn dense(x: &[f32], w: &[f32], b: &[f32], (i, o): (usize, usize), y: &mut Vec<f32>) {
        let n = x.len() / i;
        y.clear();
        y.resize(n * o, 0.0);
        for (xr, yr) in x.chunks_exact(i).zip(y.chunks_exact_mut(o)) {
            yr.copy_from_slice(b);
            for (xv, wr) in xr.iter().zip(w.chunks_exact(o)) {
                if *xv != 0.0 {
                    yr.iter_mut().zip(wr).for_each(|(y, w)| *y += xv * w);
                }
            }
        }
    }

    fn forward(&self, x: &[f32], c: &mut Cache) {
        c.x.clear();
        c.x.extend_from_slice(x);
        Self::dense(x, &self.w[0], &self.b[0], self.dims[0], &mut c.h);
        c.h.iter_mut().for_each(|v| *v = v.max(0.0));
        Self::dense(&c.h, &self.w[1], &self.b[1], self.dims[1], &mut c.z);
    }

    /// Plain SGD on the gradient of the loss w.r.t. the logits `dz`.
    fn backward_and_step(&mut self, c: &Cache, dz: &[f32], lr: f32) {
        let ((i0, o0), (i1, o1)) = (self.dims[0], self.dims[1]);
        let mut dh = vec![0.0f32; c.h.len()];
        for (n, dzr) in dz.chunks_exact(o1).enumerate() {
            let hr = &c.h[n * i1..(n + 1) * i1];
            for (k, hv) in hr.iter().enumerate() {
                let wr = &self.w[1][k * o1..(k + 1) * o1];
                let g: f32 = wr.iter().zip(dzr).map(|(w, d)| w * d).sum();
                dh[n * i1 + k] = if *hv > 0.0 { g } else { 0.0 };
            }
        }
        let step = |w: &mut [f32], b: &mut [f32], x: &[f32], d: &[f32], (i, o): (usize, usize)| {
            for (xr, dr) in x.chunks_exact(i).zip(d.chunks_exact(o)) {
                for (xv, wr) in xr.iter().zip(w.chunks_exact_mut(o)) {
                    if *xv != 0.0 {
                        wr.iter_mut().zip(dr).for_each(|(w, d)| *w -= lr * xv * d);
                    }
                }
                b.iter_mut().zip(dr).for_each(|(b, d)| *b -= lr * d);
            }
        };
        let [w0, w1] = &mut self.w;
        let [b0, b1] = &mut self.b;
        step(w1, b1, &c.h, dz, (i1, o1));
        step(w0, b0, &c.x, &dh, (i0, o0));
    }
}

impl Network for Mlp {
    fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// Canonical `[out][in]` from the stored `[in][out]`.
    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()> {
        let (i, o) = *self.dims.get(layer).ok_or(Error::IndexOutOfRange {
            what: "layer",
            index: layer,
            len: 2,
        })?;
        if dst.len() != i * o {
            return Err(Error::external(format!(
                "layer {layer} has {} weights",
                i * o
            )));
        }
        for r in 0..o {
            for c in 0..i {
                dst[r * i + c] = self.w[layer][c * o + r];
            }
        }
        Ok(())
    }
}

impl NetworkMut for Mlp {
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        let (i, o) = *self.dims.get(layer).ok_or(Error::IndexOutOfRange {
            what: "layer",
            index: layer,
            len: 2,
        })?;
        if src.len() != i * o {
            return Err(Error::external(format!(
                "layer {layer} has {} weights",
                i * o
            )));
        }
        for r in 0..o {
            for c in 0..i {
                self.w[layer][c * o + r] = src[r * i + c];
            }
        }
        Ok(())
    }
}

fn accuracy(net: &Mlp, data: &Dataset) -> f64 {
    let mut c = Cache {
        x: Vec::new(),
        h: Vec::new(),
        z: Vec::new(),
    };
    let mut correct = 0;
    for (x, y) in data.images.chunks(1000 * 784).zip(data.labels.chunks(1000)) {
        net.forward(x, &mut c);
        correct += argmax_rows(&c.z, 10)
            .zip(y)
            .filter(|(p, l)| *p == **l as usize)
            .count();
    }
    correct as f64 / data.labels.len() as f64
}

fn run(args: &Args) -> Result<()> {
    let mnist = Mnist::load(
        &args.data,
        MnistOptions {
            pad: 0,
            ..MnistOptions::default()
        },
    )?;
    let mut net = Mlp::new(args.seed)?;
    let model = SystolicArray::new(net.architecture(), SystolicConfig::default())?;
    let dense = model
        .energy(&NetworkState::dense(net.architecture()))?
        .total;
    let budget = args.budget * dense;
    println!(
        "MLP 784-128-10 on MNIST; dense energy {dense:.4e}, budget {:.2} of dense, all-zero floor {:.4} of dense",
        args.budget,
        model.dense_floor() / dense
    );

    // The crate's part: a projection solver, told about the run and each phase.
    let cfg = WeightProjectionConfig {
        project_every: 50,
        ..WeightProjectionConfig::default()
    };
    let mut solver = WeightProjection::new(vec![Budget::absolute("energy", &model, budget)], cfg)?;
    solver.begin(&mut net, &RunInfo::default())?;

    let (bs, lr) = (64usize, 0.05f32);
    let steps_per_epoch = mnist.train.len().div_ceil(bs);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut order: Vec<usize> = (0..mnist.train.len()).collect();
    let (mut x, mut labels) = (Vec::new(), Vec::new());
    let mut cache = Cache {
        x: Vec::new(),
        h: Vec::new(),
        z: Vec::new(),
    };
    for (phase, epochs) in [
        (Phase::Constrained, args.epochs),
        (Phase::FineTune, args.finetune_epochs),
    ] {
        solver.begin_phase(&net, phase, epochs * steps_per_epoch)?;
        for epoch in 0..epochs {
            order.shuffle(&mut rng);
            let mut loss_sum = 0.0;
            for (s, idx) in order.chunks(bs).enumerate() {
                x.clear();
                labels.clear();
                for &i in idx {
                    x.extend_from_slice(&mnist.train.images[i * 784..(i + 1) * 784]);
                    labels.push(mnist.train.labels[i]);
                }
                net.forward(&x, &mut cache);
                let mut dz = vec![0.0; cache.z.len()];
                loss_sum += cross_entropy(&cache.z, &labels, 10, 1.0, &mut dz)? as f64;
                net.backward_and_step(&cache, &dz, lr);
                // One call per update keeps the network within budget.
                match phase {
                    Phase::FineTune => solver.hold(&mut net)?,
                    _ => {
                        let step = epoch * steps_per_epoch + s + 1;
                        let ctx = StepContext::new(step, epochs * steps_per_epoch);
                        solver.step(&mut net, &ctx)?;
                    }
                }
            }
            let st = solver.status(&net)?;
            println!(
                "{:<11} epoch {}/{}  loss {:.4}  test {:.2} %  energy {:.4} of dense (budget in force {:.4})  nonzero {}",
                phase,
                epoch + 1,
                epochs,
                loss_sum / steps_per_epoch as f64,
                100.0 * accuracy(&net, &mnist.test),
                st.cost / dense,
                st.budget / dense,
                st.kept.total()
            );
        }
    }
    let st = solver.status(&net)?;
    let acc = accuracy(&net, &mnist.test);
    println!("\n| budget | energy (of dense) | budget met | test accuracy |");
    println!("|---|---|---|---|");
    println!(
        "| {:.2} | {:.4} | {} | {:.2} % |",
        args.budget,
        st.cost / dense,
        if st.met { "yes" } else { "NO" },
        100.0 * acc
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({"budget": args.budget, "energy": st.cost / dense, "budget_met": st.met, "test_accuracy": acc})
        );
    }
    energy_prune_nn::workflow::require_budget_met("the pruned MLP", st.met, st.cost, st.budget)
}
