//! LeNet-5 written in candle, trained on MNIST and compressed to an energy budget
//! with the same driver as the reference CNN: the proof that the network traits
//! take any framework's model.
//!
//! ```text
//! cargo run --release -p energy-prune-examples --features candle --example candle_lenet5
//! ```
//! With `json: true` in its settings the last line is
//! `{"budget", "energy_ratio", "test_accuracy", "budget_met", "dense_accuracy", "seconds"}`.

use energy_prune::prune::Budget;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Linear, VarBuilder, VarMap};
use energy_prune::arch::zoo;
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkState, ParamKind, Trainable};
use energy_prune::prune::{Data, ProjectedTraining, train_projected};
use energy_prune::train::evaluate;
use energy_prune_candle::{CandleLayer, CandleNetwork, max_pool2d};
use energy_prune_nn::mnist::{Mnist, MnistOptions};
use energy_prune_nn::workflow::{Progress, print_dense, train_dense_lenet5};

struct Args {
    budget: f64,
    dense_epochs: usize,
    epochs: usize,
    finetune_epochs: usize,
    seed: u64,
    data: PathBuf,
    json: bool,
}

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

/// The example's settings (edit them here: the example shows the library, not a
/// command line; the `energy-prune` tool has the jobs with flags).
fn main() -> std::process::ExitCode {
    let args = Args {
        budget: 0.2,
        dense_epochs: 8,
        epochs: ProjectedTraining::default().epochs,
        finetune_epochs: ProjectedTraining::default().finetune_epochs,
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

fn run(args: &Args) -> energy_prune::Result<()> {
    let start = Instant::now();
    let data = Mnist::load(&args.data, MnistOptions::default())?;
    let vars = VarMap::new();
    let device = Device::Cpu;
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &device);
    let model = LeNet5::new(&vb).map_err(energy_prune::Error::external)?;
    let layers = ["conv1", "conv2", "fc1", "fc2", "fc3"]
        .iter()
        .map(|p| CandleLayer::from_varmap(&vars, p))
        .collect::<energy_prune::Result<Vec<_>>>()?;
    // The architecture tells the cost model what the candle model computes.
    let mut net = CandleNetwork::new(zoo::lenet5()?, model, layers, vec![], [1, 32, 32])?;
    // candle's CPU generator cannot be seeded: draw PyTorch's default initialisation
    // (uniform in +-1/sqrt(fan_in)) from the seed, through the network traits.
    seeded_init(&mut net, args.seed)?;

    println!("candle LeNet-5 on MNIST: dense training");
    train_dense_lenet5(
        &mut net,
        &data.train,
        &data.test,
        args.dense_epochs,
        args.seed,
        &mut |e| print_dense("dense", args.dense_epochs, e),
    )?;
    let dense_acc = evaluate(&mut net, &data.test, 1000)?;
    let hw = SystolicArray::new(net.architecture(), SystolicConfig::default())?;
    let e_dense = hw.energy(&NetworkState::from_network(&net)?)?.total;
    let budget = args.budget * e_dense;
    println!(
        "\ndense: test accuracy {:.2} %, energy {:.6e}; budget {} of dense\n",
        100.0 * dense_acc,
        e_dense,
        args.budget
    );
    let cfg = ProjectedTraining {
        epochs: args.epochs,
        finetune_epochs: args.finetune_epochs,
        seed: args.seed,
        ..ProjectedTraining::default()
    };
    let mut progress = Progress {
        reference: e_dense,
        unit: "of dense",
    };
    let data_c = Data {
        train: &data.train,
        validation: None,
        test: Some(&data.test),
    };
    let report = train_projected(
        &mut net,
        vec![Budget::absolute("energy", &hw, budget)],
        data_c,
        &cfg,
        &mut progress,
    )?;
    let energy = hw.energy(&NetworkState::from_network(&net)?)?.total;
    let accuracy = evaluate(&mut net, &data.test, 1000)?;
    let met = energy <= budget;
    let seconds = start.elapsed().as_secs_f64();
    println!("\n{}\n", report.termination);
    println!("| network | test accuracy | energy (of dense) | budget met |");
    println!("|---|---|---|---|");
    println!("| dense (candle) | {:.2} % | 1.0000 | |", 100.0 * dense_acc);
    println!(
        "| energy-constrained (candle) | {:.2} % | {:.4} | {} |",
        100.0 * accuracy,
        energy / e_dense,
        if met { "yes" } else { "NO" }
    );
    println!("\nwhole run: {seconds:.1} s");
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "budget": args.budget,
                "energy_ratio": energy / e_dense,
                "test_accuracy": accuracy,
                "budget_met": met,
                "dense_accuracy": dense_acc,
                "seconds": seconds,
            })
        );
    }
    energy_prune_nn::workflow::require_budget_met(
        "the candle network",
        met,
        energy / e_dense,
        args.budget,
    )
}
