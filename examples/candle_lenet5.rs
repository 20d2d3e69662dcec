//! LeNet-5 written in candle, trained on MNIST and compressed to an energy budget
//! with the same driver as the reference CNN: the proof that the network traits
//! take any framework's model.
//!
//! ```text
//! cargo run --release -p energy-prune-examples --features candle --example candle_lenet5
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Linear, VarBuilder, VarMap};
use energy_prune::arch::zoo;
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkState, ParamKind, Trainable};
use energy_prune::prune::{Budget, Data, ProjectedTraining, train_projected};
use energy_prune::train::evaluate;
use energy_prune_candle::{CandleLayer, CandleNetwork, max_pool2d};
use energy_prune_nn::mnist::{Mnist, MnistOptions};
use energy_prune_nn::workflow::{Progress, print_dense, train_dense_lenet5};

/// LeNet-5 in plain candle: conv 6@5x5, max-pool 2, conv 16@5x5, max-pool 2,
/// FC 400-120-84-10, ReLU after every layer but the last. The pools are
/// `energy_prune_candle::max_pool2d` (exact gradient; candle 0.9's own scales it
/// by 1/4).
struct LeNet5 {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl LeNet5 {
    fn new(vb: &VarBuilder) -> candle_core::Result<Self> {
        let cfg = candle_nn::Conv2dConfig::default();
        Ok(Self {
            conv1: candle_nn::conv2d(1, 6, 5, cfg, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(6, 16, 5, cfg, vb.pp("conv2"))?,
            fc1: candle_nn::linear(400, 120, vb.pp("fc1"))?,
            fc2: candle_nn::linear(120, 84, vb.pp("fc2"))?,
            fc3: candle_nn::linear(84, 10, vb.pp("fc3"))?,
        })
    }
}

impl Module for LeNet5 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = max_pool2d(&self.conv1.forward(x)?.relu()?, 2)?;
        let x = max_pool2d(&self.conv2.forward(&x)?.relu()?, 2)?;
        let x = x.flatten_from(1)?;
        let x = self.fc1.forward(&x)?.relu()?;
        let x = self.fc2.forward(&x)?.relu()?;
        self.fc3.forward(&x)
    }
}

fn seeded_init(net: &mut impl Trainable, seed: u64) -> energy_prune::Result<()> {
    use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let fan_in: Vec<usize> = net
        .architecture()
        .layers()
        .iter()
        .map(|l| l.weight_count() / l.out_channels())
        .collect();
    for (l, &n) in fan_in.iter().enumerate() {
        let bound = 1.0 / (n as f32).sqrt();
        let w: Vec<f32> = (0..net.architecture().layers()[l].weight_count())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        net.write_weights(l, &w)?;
    }
    net.visit_params(&mut |kind, values, _| {
        if let ParamKind::Bias(l) = kind {
            let bound = 1.0 / (fan_in[l] as f32).sqrt();
            values
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-bound..bound));
        }
    });
    Ok(())
}

fn main() -> energy_prune::Result<()> {
    let (fraction, dense_epochs, seed) = (0.2, 8, 1);
    let start = Instant::now();
    let data = Mnist::load("data/mnist", MnistOptions::default())?;
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let model = LeNet5::new(&vb).map_err(energy_prune::Error::external)?;
    let layers = ["conv1", "conv2", "fc1", "fc2", "fc3"]
        .iter()
        .map(|p| CandleLayer::from_varmap(&vars, p))
        .collect::<energy_prune::Result<Vec<_>>>()?;
    // The architecture tells the cost model what the candle model computes.
    let mut net = CandleNetwork::new(zoo::lenet5()?, model, layers, vec![], [1, 32, 32])?;
    // candle's CPU generator cannot be seeded: draw PyTorch's default initialisation
    // (uniform in +-1/sqrt(fan_in)) from the seed, through the network traits.
    seeded_init(&mut net, seed)?;

    println!("candle LeNet-5 on MNIST: dense training");
    let (train, test) = (&data.train, &data.test);
    let each = &mut |e: &_| print_dense("dense", dense_epochs, e);
    train_dense_lenet5(&mut net, train, test, dense_epochs, seed, each)?;
    let dense_acc = evaluate(&mut net, test, 1000)?;
    let hw = SystolicArray::new(net.architecture(), SystolicConfig::default())?;
    let e_dense = hw.energy(&NetworkState::from_network(&net)?)?.total;
    let budget = fraction * e_dense;
    println!(
        "\ndense: test accuracy {:.2} %, energy {e_dense:.6e}\n",
        100.0 * dense_acc
    );
    let cfg = ProjectedTraining {
        seed,
        ..ProjectedTraining::default()
    };
    let mut progress = Progress {
        reference: e_dense,
        unit: "of dense",
    };
    let split = Data {
        train,
        validation: None,
        test: Some(test),
    };
    let budgets = vec![Budget::absolute("energy", &hw, budget)];
    let report = train_projected(&mut net, budgets, split, &cfg, &mut progress)?;
    let energy = hw.energy(&NetworkState::from_network(&net)?)?.total;
    let accuracy = evaluate(&mut net, test, 1000)?;
    let met = energy <= budget;
    println!("\n{}\n", report.termination);
    println!("| network | test accuracy | energy (of dense) | budget met |");
    println!("|---|---|---|---|");
    println!("| dense (candle) | {:.2} % | 1.0000 | |", 100.0 * dense_acc);
    let ratio = energy / e_dense;
    let yes = if met { "yes" } else { "NO" };
    println!(
        "| energy-constrained (candle) | {:.2} % | {ratio:.4} | {yes} |",
        100.0 * accuracy
    );
    println!("\nwhole run: {:.1} s", start.elapsed().as_secs_f64());
    energy_prune_nn::workflow::require_budget_met("the candle network", met, ratio, fraction)
}
