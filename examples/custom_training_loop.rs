//! A network that is not the reference CNN, trained by its own loop, kept within an
//! energy budget by one call of the constrained-optimizer step after every update.
//!
//! The model is softmax regression on MNIST (784 -> 10) whose weights live in its
//! own `[in][out]` (transposed) storage, with its own forward and backward pass and
//! plain SGD. It implements only `Network` and `NetworkMut` (read and write weights
//! in the canonical `[out][in]` layout); the loop is the user's, and the crate
//! contributes `WeightProjection::step` (and `hold` while fine-tuning).
//!
//! ```text
//! cargo run --release -p energy-prune-examples --example custom_training_loop
//! ```

use energy_prune::arch::{ArchBuilder, Architecture};
use energy_prune::energy::{SystolicArray, SystolicConfig};
use energy_prune::network::{Network, NetworkMut};
use energy_prune::prune::{
    Budget, ConstrainedOptimizer, Phase, RunInfo, StepContext, WeightProjection,
    WeightProjectionConfig,
};
use energy_prune::train::{Dataset, argmax_rows, cross_entropy};
use energy_prune::{Error, Result};
use energy_prune_nn::mnist::{Mnist, MnistOptions};
use rand::rngs::ChaCha12Rng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// Inputs (28 x 28 pixels) and classes.
const IN: usize = 784;
const OUT: usize = 10;

/// The user's model: one dense layer, weights stored `[in][out]`.
struct Softmax {
    arch: Architecture,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Softmax {
    /// Dense random weights: the projection's budget schedule decays from the
    /// energy of the network it starts from.
    fn new(rng: &mut ChaCha12Rng) -> Result<Self> {
        let mut a = ArchBuilder::new("softmax");
        let x = a.input(IN, 1, 1)?;
        let z = a.linear("fc", &x, OUT, true)?;
        let arch = a.finish(&z)?;
        let s = (6.0 / IN as f32).sqrt();
        Ok(Self {
            arch,
            w: (0..IN * OUT).map(|_| rng.random_range(-s..s)).collect(),
            b: vec![0.0; OUT],
        })
    }

    /// Logits `z[n][o] = b[o] + sum_i x[n][i] w[i][o]`.
    fn forward(&self, x: &[f32], z: &mut Vec<f32>) {
        z.clear();
        for xr in x.chunks_exact(IN) {
            let at = z.len();
            z.extend_from_slice(&self.b);
            for (xv, wr) in xr.iter().zip(self.w.chunks_exact(OUT)) {
                if *xv != 0.0 {
                    z[at..].iter_mut().zip(wr).for_each(|(z, w)| *z += xv * w);
                }
            }
        }
    }

    /// Plain SGD on the gradient `dz` of the loss with respect to the logits.
    fn step(&mut self, x: &[f32], dz: &[f32], lr: f32) {
        for (xr, dr) in x.chunks_exact(IN).zip(dz.chunks_exact(OUT)) {
            for (xv, wr) in xr.iter().zip(self.w.chunks_exact_mut(OUT)) {
                if *xv != 0.0 {
                    wr.iter_mut().zip(dr).for_each(|(w, d)| *w -= lr * xv * d);
                }
            }
            self.b.iter_mut().zip(dr).for_each(|(b, d)| *b -= lr * d);
        }
    }

    fn check(&self, layer: usize, len: usize) -> Result<()> {
        match (layer, len) {
            (0, n) if n == IN * OUT => Ok(()),
            (0, n) => Err(Error::shape("weights of layer fc", IN * OUT, n)),
            (l, _) => Err(Error::IndexOutOfRange {
                what: "layer",
                index: l,
                len: 1,
            }),
        }
    }
}

impl Network for Softmax {
    fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// Canonical `[out][in]` from the stored `[in][out]`.
    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()> {
        self.check(layer, dst.len())?;
        for (i, row) in self.w.chunks_exact(OUT).enumerate() {
            row.iter()
                .enumerate()
                .for_each(|(o, v)| dst[o * IN + i] = *v);
        }
        Ok(())
    }
}

impl NetworkMut for Softmax {
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        self.check(layer, src.len())?;
        for (i, row) in self.w.chunks_exact_mut(OUT).enumerate() {
            row.iter_mut()
                .enumerate()
                .for_each(|(o, v)| *v = src[o * IN + i]);
        }
        Ok(())
    }
}

fn accuracy(net: &Softmax, data: &Dataset) -> f64 {
    let mut z = Vec::new();
    net.forward(&data.images, &mut z);
    let hits = argmax_rows(&z, OUT)
        .zip(&data.labels)
        .filter(|(p, l)| *p == **l as usize);
    hits.count() as f64 / data.labels.len() as f64
}

fn main() -> Result<()> {
    let (fraction, epochs, finetune, batch, lr) = (0.3, 3, 1, 64, 0.05f32);
    let mnist = Mnist::load(
        "data/mnist",
        MnistOptions {
            pad: 0,
            ..MnistOptions::default()
        },
    )?;
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let mut net = Softmax::new(&mut rng)?;
    let hw = SystolicArray::new(net.architecture(), SystolicConfig::default())?;

    // The crate's part: a projection solver, told about the run and each phase.
    let budgets = vec![Budget::fraction("energy", &hw, fraction)];
    let mut solver = WeightProjection::new(budgets, WeightProjectionConfig::default())?;
    solver.begin(&mut net, &RunInfo::default())?;

    let steps = mnist.train.len().div_ceil(batch);
    let mut order: Vec<usize> = (0..mnist.train.len()).collect();
    let (mut x, mut labels, mut z, mut dz) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (phase, n) in [(Phase::Constrained, epochs), (Phase::FineTune, finetune)] {
        solver.begin_phase(&net, phase, n * steps)?;
        for epoch in 0..n {
            order.shuffle(&mut rng);
            for (s, idx) in order.chunks(batch).enumerate() {
                x.clear();
                labels.clear();
                for &i in idx {
                    x.extend_from_slice(&mnist.train.images[i * IN..(i + 1) * IN]);
                    labels.push(mnist.train.labels[i]);
                }
                net.forward(&x, &mut z);
                dz.clear();
                dz.resize(z.len(), 0.0);
                cross_entropy(&z, &labels, OUT, 1.0, &mut dz)?;
                net.step(&x, &dz, lr);
                // One call per update keeps the network within budget.
                if phase == Phase::FineTune {
                    solver.hold(&mut net)?;
                } else {
                    solver.step(
                        &mut net,
                        &StepContext::new(epoch * steps + s + 1, n * steps),
                    )?;
                }
            }
            let st = solver.status(&net)?;
            println!(
                "{phase:<11} epoch {}/{n}  test {:.2} %  energy {:.4e} (budget in force {:.4e})  nonzero {}",
                epoch + 1,
                100.0 * accuracy(&net, &mnist.test),
                st.cost,
                st.budget,
                st.kept.total()
            );
        }
    }
    let st = solver.status(&net)?;
    println!("\n| budget (of dense) | energy (of budget) | budget met | test accuracy |");
    println!("|---|---|---|---|");
    let met = if st.met { "yes" } else { "NO" };
    let acc = 100.0 * accuracy(&net, &mnist.test);
    println!(
        "| {fraction:.2} | {:.4} | {met} | {acc:.2} % |",
        st.cost / st.target
    );
    if !st.met {
        return Err(Error::BudgetMissed {
            what: "the model".into(),
            reached: st.cost,
            budget: st.target,
        });
    }
    Ok(())
}
