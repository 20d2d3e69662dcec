//! Pruning and quantization under one energy budget on LeNet-5 and MNIST: from one
//! dense network, at each budget (a fraction of the dense 16-bit energy), with the
//! same epochs,
//!
//! * `prune16`: pruning only, 16-bit values, with layer input masks;
//! * `int8`: uniform 8-bit weights and activations, pruned to the budget;
//! * `joint`: each layer's weight and activation bits chosen with its pruning.
//!
//! ```text
//! energy-prune lab quantize [--budgets 0.05,0.08,0.1,0.15,0.2] [--methods prune16,int8,joint]
//!     [--weight-bits 2,3,4,5,6,8,16] [--activation-bits 3,4,5,6,8,16] [--epochs N] [--finetune-epochs N]
//!     [--dense FILE] [--save-dense FILE] [--dense-epochs N] [--mask-rounds 8] [--table-budget 0.1]
//!     [--train-limit N] [--test-limit N] [--out DIR] [--seed N] [--data DIR] [--json]
//! ```
//! Writes `quantize.csv`, `quantize.json` and `accuracy_energy.svg` into `--out`
//! and prints a table of every point and the per-layer bits and kept weights of
//! each method at `--table-budget`. Every trained network is also written as an
//! ONNX model under `--out`/onnx: the dense one in float (`dense.onnx`), the
//! quantized ones in QDQ form at their precision (`<method>_<budget>.onnx`; the
//! input-masked `prune16` networks have no ONNX form and are left out);
//! `scripts/check_qdq_onnxruntime.py` evaluates them in onnxruntime, beside
//! onnxruntime's own static int8 quantization of the dense model.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use energy_prune::Error;
use energy_prune::energy::{
    LayerPrecision, NumberFormat, PrecisionModel, SystolicArray, SystolicConfig, WeightEnergyModel,
};
use energy_prune::network::{Network, NetworkState};
use energy_prune::prune::{
    Budget, Data, JointChoice, MaskRounds, ProjectedTraining, precision_options, train_joint,
    train_projected,
};
use energy_prune::quant::{self, WeightScale};
use energy_prune::train::{Dataset, evaluate};
use energy_prune_nn::Cnn;
use energy_prune_nn::mnist::{Mnist, MnistOptions, Normalization};
use energy_prune_nn::workflow::{Progress, held_out, print_dense, train_dense_lenet5};
use energy_prune_onnx::{OnnxModel, QdqSpec};

use crate::args::Usage;
use crate::common::check;
use crate::plot::{Series, accuracy_plot, save};

/// A method of the comparison.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Pruning only at 16 bits, with layer input masks.
    Prune16,
    /// Uniform 8-bit weights and activations, pruned to the budget.
    Int8,
    /// Bits and pruning chosen together.
    Joint,
}

impl Method {
    const ALL: [Method; 3] = [Method::Prune16, Method::Int8, Method::Joint];

    fn name(self) -> &'static str {
        match self {
            Method::Prune16 => "prune16",
            Method::Int8 => "int8",
            Method::Joint => "joint",
        }
    }
}

/// `--weight-scale`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleRule {
    /// The largest weight of each channel exact.
    Max,
    /// The least squared rounding error per channel.
    Mse,
}

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Budgets, fractions of the dense 16-bit energy, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.05, 0.08, 0.1, 0.15, 0.2])]
    pub budgets: Vec<f64>,
    /// Methods to run, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = Method::ALL)]
    pub methods: Vec<Method>,
    /// Weight bits the joint method chooses from (2 to 16).
    #[arg(long, value_delimiter = ',', default_values_t = [2u8, 3, 4, 5, 6, 8, 16])]
    pub weight_bits: Vec<u8>,
    /// Activation bits the joint method chooses from (2 to 16).
    #[arg(long, value_delimiter = ',', default_values_t = [3u8, 4, 5, 6, 8, 16])]
    pub activation_bits: Vec<u8>,
    /// Epochs of constrained training per point.
    #[arg(long, default_value_t = ProjectedTraining::default().epochs)]
    pub epochs: usize,
    /// Epochs of fine-tuning per point.
    #[arg(long, default_value_t = ProjectedTraining::default().finetune_epochs)]
    pub finetune_epochs: usize,
    /// Load the dense network from this file instead of training it.
    #[arg(long)]
    pub dense: Option<PathBuf>,
    /// Save the trained dense network to this file.
    #[arg(long)]
    pub save_dense: Option<PathBuf>,
    /// Epochs of dense training.
    #[arg(long, default_value_t = 12)]
    pub dense_epochs: usize,
    /// How the joint and int8 methods choose per-channel weight scales.
    #[arg(long, value_enum, default_value_t = ScaleRule::Max)]
    pub weight_scale: ScaleRule,
    /// Rounds of input-mask training of `prune16` (below its 0.15 floor it needs many).
    #[arg(long, default_value_t = 8)]
    pub mask_rounds: usize,
    /// Budget of the per-layer table (the listed budget nearest to it).
    #[arg(long, default_value_t = 0.1)]
    pub table_budget: f64,
    /// Use only the first N training images (smoke runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images (smoke runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Directory of the outputs.
    #[arg(long, default_value = "quantize-results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub rng: crate::args::Seed,
    #[command(flatten)]
    pub mnist: crate::args::MnistDir,
    #[command(flatten)]
    pub print: crate::args::Json,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        let a = self;
        check::fractions("--budgets", &a.budgets)?;
        check::fraction("--table-budget", a.table_budget)?;
        check::at_least_one("--epochs", a.epochs)?;
        check::count("--finetune-epochs", a.finetune_epochs, 0)?;
        check::count("--dense-epochs", a.dense_epochs, 0)?;
        check::count("--mask-rounds", a.mask_rounds, 1)?;
        for (flag, bits) in [
            ("--weight-bits", &a.weight_bits),
            ("--activation-bits", &a.activation_bits),
        ] {
            if bits.is_empty() || bits.iter().any(|b| !(2..=16).contains(b)) {
                return Err(Usage(format!(
                    "{flag}: give integer bit-widths from 2 to 16, e.g. 4,8,16"
                )));
            }
        }
        for (flag, n) in [
            ("--train-limit", a.train_limit),
            ("--test-limit", a.test_limit),
        ] {
            if let Some(n) = n {
                check::count(flag, n, 1)?;
            }
        }
        if a.train_limit.is_some_and(|n| n < 12) {
            return Err(Usage(
                "--train-limit: at least 12 images (one twelfth is held out for the masks)".into(),
            ));
        }
        check::mnist_dir("--data", &a.mnist.data)?;
        if let Some(p) = &a.dense {
            check::readable("--dense", p)?;
        }
        std::fs::create_dir_all(&a.out).map_err(|e| {
            Usage(format!(
                "--out {}: cannot be created ({e})",
                a.out.display()
            ))
        })?;
        check::writable("--out", &a.out.join("quantize.json"))?;
        if let Some(p) = &a.save_dense {
            check::writable("--save-dense", p)?;
        }
        Ok(())
    }
}

/// One trained point.
struct Run {
    /// Test accuracy of the network as exported (biases on their integer grid).
    test_accuracy: f64,
    /// Test accuracy at the end of training (float biases).
    float_bias_accuracy: f64,
    energy_ratio: f64,
    precision: Vec<LayerPrecision>,
    nonzero: Vec<u64>,
    seconds: f64,
    /// Why the run is not a result (it diverged), if so.
    failed: Option<String>,
    /// The exported ONNX file (relative to `--out`), or why there is none.
    onnx: std::result::Result<String, String>,
}

/// One (method, budget) point: a run, or why there is none.
struct Point {
    method: Method,
    budget: f64,
    run: std::result::Result<Run, String>,
}

fn formats(bits: &[u8]) -> Vec<NumberFormat> {
    bits.iter().map(|b| NumberFormat::Int(*b)).collect()
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    let start = Instant::now();
    let mnist = Mnist::load(&args.mnist.data, MnistOptions::default())?;
    let limit = |d: &Dataset, n: Option<usize>| n.map_or_else(|| d.clone(), |n| d.take(n));
    let (train, test) = (
        limit(&mnist.train, args.train_limit),
        limit(&mnist.test, args.test_limit),
    );
    let (train_part, validation) = train.split(train.len() - held_out(train.len()));

    let mut dense = Cnn::lenet5(args.rng.seed)?;
    match &args.dense {
        Some(path) => {
            dense.load(path)?;
            println!("loaded dense LeNet-5 from {}", path.display());
        }
        None => train_dense_lenet5(
            &mut dense,
            &train,
            &test,
            args.dense_epochs,
            args.rng.seed,
            &mut |e| print_dense("dense", args.dense_epochs, e),
        )?,
    }
    if let Some(path) = &args.save_dense {
        dense.save(path)?;
        println!("saved dense LeNet-5 to {}", path.display());
    }
    let dense_acc = evaluate(&mut dense, &test, 1000)?;
    let onnx_dir = args.out.join("onnx");
    std::fs::create_dir_all(&onnx_dir).map_err(|e| Error::io(&onnx_dir, e))?;
    OnnxModel::from_cnn(&dense)?.save(args.out.join("onnx/dense.onnx"))?;
    let arch = dense.architecture().clone();
    let n = arch.layers().len();
    let hw = SystolicArray::new(&arch, SystolicConfig::default())?;
    let e_dense = hw.energy_total(&NetworkState::from_network(&dense)?)?;
    println!(
        "\ndense: test accuracy {:.2} %, 16-bit energy {e_dense:.6e}; pruning-only floor {:.4}, \
         at int8 {:.4} of dense\n",
        100.0 * dense_acc,
        hw.dense_floor() / e_dense,
        hw.at_precision(&vec![LayerPrecision::int(8, 8)?; n])?
            .floor(&vec![None; n])?
            / e_dense
    );
    // Activation statistics of the dense network on (up to) 2 000 training images.
    let k = train.len().min(2000);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    energy_prune::train::DataSource::gather(&train, &(0..k).collect::<Vec<_>>(), &mut xs, &mut ys)?;
    let stats = dense.clone().activation_stats(&xs, k, 250)?;

    let cfg = ProjectedTraining {
        epochs: args.epochs,
        finetune_epochs: args.finetune_epochs,
        seed: args.rng.seed,
        ..ProjectedTraining::default()
    };
    let masked = ProjectedTraining {
        input_masks: Some(MaskRounds {
            rounds: args.mask_rounds,
            ..MaskRounds::default()
        }),
        ..cfg.clone()
    };
    let joint_options = precision_options(
        n,
        &formats(&args.weight_bits),
        &formats(&args.activation_bits),
    )?;
    let int8_options = precision_options(n, &[NumberFormat::INT8], &[NumberFormat::INT8])?;
    let mut progress = Progress {
        reference: e_dense,
        unit: "of dense",
    };
    let mut points = Vec::new();
    for &budget in &args.budgets {
        for &method in &args.methods {
            println!(
                "== {} at {budget} of the dense 16-bit energy",
                method.name()
            );
            let t0 = Instant::now();
            let mut net = dense.clone();
            let limit = vec![Budget::absolute("energy", &hw, budget * e_dense)];
            let result = match method {
                Method::Prune16 => {
                    for l in 0..3 {
                        net.enable_input_mask(l)?;
                    }
                    let data = Data {
                        train: &train_part,
                        validation: Some(&validation),
                        test: Some(&test),
                    };
                    train_projected(&mut net, limit, data, &masked, &mut progress)
                        .map(|r| (r, vec![LayerPrecision::REFERENCE; n], None))
                }
                Method::Int8 | Method::Joint => {
                    let options = if method == Method::Joint {
                        joint_options.clone()
                    } else {
                        int8_options.clone()
                    };
                    let data = Data {
                        train: &train,
                        validation: None,
                        test: Some(&test),
                    };
                    let choice = JointChoice {
                        options,
                        activations: Some(stats.clone()),
                        weight_scale: match args.weight_scale {
                            ScaleRule::Max => WeightScale::Max,
                            ScaleRule::Mse => WeightScale::Mse,
                        },
                    };
                    train_joint(&mut net, limit, choice, data, &cfg, &mut progress)
                        .map(|t| (t.report, t.precision, Some(t.weight_scales)))
                }
            };
            let run = match result {
                Ok((report, precision, scales)) => {
                    // Integer kernels hold a layer's bias in int32 on the grid
                    // `s_x * s_w`: round it there, as the QDQ export stores it, and
                    // report the accuracy of that network.
                    let rounded = round_biases(&mut net, &precision, scales.as_deref())?;
                    let accuracy = if rounded {
                        evaluate(&mut net, &test, 1000)?
                    } else {
                        report.test_accuracy.unwrap_or(f64::NAN)
                    };
                    let file = format!("onnx/{}_{budget}.onnx", method.name());
                    let onnx = export(&net, &precision, scales, &test, &args.out.join(&file))
                        .map(|diff| {
                            println!(
                                "wrote {file} (its outputs within {diff:.2e} of the network's)"
                            );
                            file
                        })
                        .map_err(|e| e.to_string());
                    let state = NetworkState::from_network(&net)?;
                    let at = hw.at_precision(&precision)?;
                    let energy = at.energy(&state)?;
                    // A diverged run, or one whose mask rounds ended on a state over
                    // the budget, is a failure of the method, not a result.
                    let over = energy.total > budget * e_dense;
                    let failed = match report.clone().converged(method.name()) {
                        Err(e) => Some(e.to_string()),
                        Ok(_) if over || !report.budget_met() => Some(format!(
                            "ends at {:.4} of dense, over its budget",
                            energy.total / e_dense
                        )),
                        Ok(_) => None,
                    };
                    Ok(Run {
                        test_accuracy: accuracy,
                        float_bias_accuracy: report.test_accuracy.unwrap_or(f64::NAN),
                        energy_ratio: energy.total / e_dense,
                        precision,
                        nonzero: energy.layers.iter().map(|l| l.nonzero).collect(),
                        seconds: t0.elapsed().as_secs_f64(),
                        failed,
                        onnx,
                    })
                }
                Err(Error::InfeasibleBudget { min_achievable, .. }) => Err(format!(
                    "infeasible: its smallest energy is {:.4} of dense",
                    min_achievable / e_dense
                )),
                // A run that collapses or cannot reach its budget is a result of the
                // method, not a reason to stop the comparison.
                Err(e) => Err(format!("failed: {e}")),
            };
            match &run {
                Err(why) => println!("{}: {why}", method.name()),
                Ok(Run {
                    failed: Some(why), ..
                }) => println!("{}: failed: {why}", method.name()),
                Ok(_) => {}
            }
            points.push(Point {
                method,
                budget,
                run,
            });
        }
    }
    print_results(args, &arch, &points, dense_acc);
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "\nwhole run: {seconds:.1} s; outputs in {}",
        args.out.display()
    );
    write_outputs(args, &arch, &points, dense_acc, e_dense, seconds)
}

/// Round the bias of every layer with quantized weights and activations onto
/// its int32 grid `s_x * s_w[c]` ([`quant::quantize_bias`]); whether any was.
fn round_biases(
    net: &mut Cnn,
    precision: &[LayerPrecision],
    scales: Option<&[Option<Vec<f32>>]>,
) -> energy_prune::Result<bool> {
    let Some(scales) = scales else {
        return Ok(false);
    };
    let mut any = false;
    for (l, (p, ws)) in precision.iter().zip(scales).enumerate() {
        let sx = net.activation_quantizers()[l].map_or(0.0, |q| q.scale());
        if let (Some(ws), true, true) = (ws, sx > 0.0, p.activations.levels().is_some()) {
            let mut b = net.bias(l)?.to_vec();
            quant::quantize_bias(&mut b, &quant::bias_scales(sx, &quant::storable_scales(ws)));
            net.set_bias(l, &b)?;
            any = true;
        }
    }
    Ok(any)
}

/// Write `net` at `precision` (QDQ; the weights with their training `scales`) to
/// `path`; returns the largest difference between the exported model's outputs
/// and the network's on the first 64 test images.
fn export(
    net: &Cnn,
    precision: &[LayerPrecision],
    scales: Option<Vec<Option<Vec<f32>>>>,
    test: &Dataset,
    path: &std::path::Path,
) -> energy_prune::Result<f32> {
    let float = OnnxModel::from_cnn(net)?;
    let ranges = net
        .activation_quantizers()
        .iter()
        .map(|q| q.map(|q| q.range))
        .collect();
    let mut spec = QdqSpec::new(precision.to_vec()).with_activation_ranges(ranges);
    if let Some(s) = scales {
        spec = spec.with_weight_scales(s);
    }
    let model = if precision.iter().all(|p| *p == LayerPrecision::REFERENCE) {
        float
    } else {
        float.to_qdq(&spec)?
    };
    let k = test.len().min(64);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    energy_prune::train::DataSource::gather(test, &(0..k).collect::<Vec<_>>(), &mut xs, &mut ys)?;
    let mut logits = Vec::new();
    energy_prune::network::Trainable::predict(&mut net.clone(), &xs, k, &mut logits)?;
    let diff = model
        .run(&xs, k)?
        .iter()
        .zip(&logits)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    model.save(path)?;
    Ok(diff)
}

fn print_results(
    args: &Args,
    arch: &energy_prune::arch::Architecture,
    points: &[Point],
    dense: f64,
) {
    println!(
        "\nTest accuracy and exact energy (fraction of the dense 16-bit energy; dense {:.2} %):\n",
        100.0 * dense
    );
    print!("| budget |");
    for m in &args.methods {
        print!(" {} |", m.name());
    }
    println!();
    println!("|---|{}", "---|".repeat(args.methods.len()));
    for &b in &args.budgets {
        print!("| {b} |");
        for &m in &args.methods {
            match points
                .iter()
                .find(|p| p.method == m && p.budget == b)
                .map(|p| &p.run)
            {
                Some(Ok(r)) if r.failed.is_some() => print!(" failed |"),
                Some(Err(why)) if why.starts_with("failed") => print!(" failed |"),
                Some(Ok(r)) => print!(
                    " {:.2} % at {:.4} |",
                    100.0 * r.test_accuracy,
                    r.energy_ratio
                ),
                Some(Err(_)) => print!(" infeasible |"),
                None => print!(" |"),
            }
        }
        println!();
    }
    let at = nearest(&args.budgets, args.table_budget);
    println!("\nPer layer at budget {at}: bits (weights/activations) and kept weights:\n");
    print!("| method |");
    for l in arch.layers() {
        print!(" {} |", l.name);
    }
    println!();
    println!("|---|{}", "---|".repeat(arch.layers().len()));
    for p in points.iter().filter(|p| p.budget == at) {
        if let Ok(r) = &p.run {
            print!("| {} |", p.method.name());
            for ((l, pr), nz) in arch.layers().iter().zip(&r.precision).zip(&r.nonzero) {
                print!(" {pr}, {nz}/{} |", l.weight_count());
            }
            println!();
        }
    }
}

fn nearest(budgets: &[f64], to: f64) -> f64 {
    budgets
        .iter()
        .copied()
        .min_by(|a, b| (a - to).abs().total_cmp(&(b - to).abs()))
        .unwrap_or(to)
}

fn write_outputs(
    args: &Args,
    arch: &energy_prune::arch::Architecture,
    points: &[Point],
    dense_acc: f64,
    e_dense: f64,
    seconds: f64,
) -> energy_prune::Result<()> {
    let mut csv = String::from("method,budget,feasible,failed,energy_ratio,test_accuracy,seconds");
    for l in arch.layers() {
        write!(csv, ",precision_{0},nonzero_{0}", l.name).unwrap();
    }
    csv.push('\n');
    for p in points {
        let failed = match &p.run {
            Ok(r) => r.failed.is_some(),
            Err(why) => why.starts_with("failed"),
        };
        let feasible = p.run.is_ok() || failed;
        write!(csv, "{},{},{feasible},{failed}", p.method.name(), p.budget).unwrap();
        match &p.run {
            Ok(r) => {
                write!(
                    csv,
                    ",{},{},{:.1}",
                    r.energy_ratio, r.test_accuracy, r.seconds
                )
                .unwrap();
                for (pr, nz) in r.precision.iter().zip(&r.nonzero) {
                    write!(csv, ",{pr},{nz}").unwrap();
                }
            }
            Err(_) => csv.push_str(&",".repeat(3 + 2 * arch.layers().len())),
        }
        csv.push('\n');
    }
    save(&args.out.join("quantize.csv"), &csv)?;
    let json = serde_json::json!({
        "network": "lenet5",
        "dense": {"test_accuracy": dense_acc, "energy_16bit": e_dense, "onnx": "onnx/dense.onnx"},
        "input": {"pad": MnistOptions::default().pad, "normalization": match MnistOptions::default().normalization {
            Normalization::Unit => "unit", Normalization::Scale => "scale", Normalization::Standardize => "standardize"}},
        "settings": {"epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
            "weight_bits": args.weight_bits, "activation_bits": args.activation_bits,
            "weight_scale": format!("{:?}", args.weight_scale).to_lowercase(), "mask_rounds": args.mask_rounds,
            "seed": args.rng.seed, "train_images": args.train_limit, "test_images": args.test_limit,
            "data": args.mnist.data},
        "seconds": seconds,
        "points": points.iter().map(|p| match &p.run {
            Ok(r) => serde_json::json!({
                "method": p.method.name(), "budget": p.budget, "feasible": true,
                "failed": r.failed, "energy_ratio": r.energy_ratio, "test_accuracy": r.test_accuracy,
                "test_accuracy_float_bias": r.float_bias_accuracy,
                "seconds": r.seconds, "onnx": r.onnx.as_ref().ok(), "onnx_missing": r.onnx.as_ref().err(),
                "layers": arch.layers().iter().zip(&r.precision).zip(&r.nonzero).map(|((l, pr), nz)| serde_json::json!({
                    "name": l.name, "weights": pr.weights.to_string(), "activations": pr.activations.to_string(),
                    "nonzero": nz, "total": l.weight_count()})).collect::<Vec<_>>(),
            }),
            Err(why) => serde_json::json!({"method": p.method.name(), "budget": p.budget,
                "feasible": why.starts_with("failed"), "failed": why.starts_with("failed").then_some(why), "why": why}),
        }).collect::<Vec<_>>(),
    });
    save(&args.out.join("quantize.json"), &format!("{json:#}\n"))?;
    let series: Vec<Series> = args
        .methods
        .iter()
        .map(|&m| Series {
            name: m.name().to_string(),
            points: points
                .iter()
                .filter(|p| p.method == m)
                .filter_map(|p| p.run.as_ref().ok())
                .filter(|r| r.failed.is_none())
                .map(|r| (r.energy_ratio, 100.0 * r.test_accuracy))
                .collect(),
        })
        .collect();
    accuracy_plot(
        &args.out.join("accuracy_energy.svg"),
        "LeNet-5 on MNIST: pruning and quantization under one energy budget",
        "exact energy / dense 16-bit energy",
        &series,
        Some(("dense", 100.0 * dense_acc)),
    )?;
    if args.print.json {
        println!("{}", serde_json::to_string(&json).unwrap_or_default());
    }
    Ok(())
}
