//! The papers' central figure for your network: test accuracy against the exact
//! energy, swept over budgets, for energy-constrained training and two magnitude
//! baselines, with a CSV, a JSON and two SVG plots.
//!
//! ```text
//! energy-prune lab sweep [--budgets 0.15,0.2,0.3,0.4,0.5,0.7]
//!     [--methods energy,magnitude,layer-uniform] [--dense FILE] [--save-dense FILE]
//!     [--dense-epochs N] [--epochs N] [--finetune-epochs N] [--input-mask auto|always|never]
//!     [--mask-rounds N] [--breakdown-budget F] [--out DIR] [--data DIR]
//!     [--train-limit N] [--test-limit N] [--seed N] [--json]
//! ```
//!
//! One dense LeNet-5 is trained (or loaded) once; every run starts from it. Per
//! budget (a fraction of the dense network's exact energy on the systolic model):
//!
//! * `energy`: projected training onto the energy budget (ICLR 2019), then
//!   fine-tuning; with learnable input masks on conv1, conv2 and fc1 where they help:
//!   by default (`--input-mask auto`) when the unmasked network's all-zero energy
//!   (inputs and output writes, which weights cannot remove) is at least half the
//!   budget. Mask rounds hold out the last 5 000 training images to decide;
//!   at larger budgets the masks only cost training data;
//! * `magnitude`: global magnitude pruning to the same exact energy, fine-tuned;
//! * `layer-uniform`: the same fraction of every layer kept by magnitude, fine-tuned.
//!
//! All three train the same number of epochs with the same optimizer and loss
//! (distillation from the dense network). Below the all-zero energy of the
//! unmasked network only input masks can reach the budget: the baselines are then
//! reported as infeasible. Outputs in `--out` (default `sweep-results`):
//! `sweep.csv`, `sweep.json`, `accuracy_energy.svg`, `energy_breakdown.svg`.
//! With `--json` the last line of stdout is
//! `{"points": [{"method", "budget", "energy_ratio", "test_accuracy"}...], "svg": [...]}`.

use energy_prune::prune::Budget;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use crate::common::check;
use crate::plot::{Breakdown, Series, accuracy_plot, breakdown_plot, save};
use energy_prune::Error;
use energy_prune::energy::systolic::{COMPUTE, INPUT_MOVEMENT, WEIGHT_MOVEMENT};
use energy_prune::energy::{EnergyReport, SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::{Network, NetworkState};
use energy_prune::prune::{
    Data, EpochEvent, MagnitudeRule, MaskRounds, Observer, ProjectedTraining, train_magnitude,
    train_projected,
};
use energy_prune::train::{Control, Dataset, evaluate};
use energy_prune_nn::Cnn;
use energy_prune_nn::mnist::{Mnist, MnistOptions};
use energy_prune_nn::workflow::{epoch_line, held_out, print_dense, train_dense_lenet5};
use indicatif::{ProgressBar, ProgressStyle};

/// When the energy-constrained runs learn input masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaskUse {
    /// When the unmasked all-zero energy is at least half the budget.
    Auto,
    /// At every budget.
    Always,
    /// Never.
    Never,
}

impl MaskUse {
    fn at(self, budget: f64, floor: f64) -> bool {
        match self {
            MaskUse::Auto => floor >= 0.5 * budget,
            MaskUse::Always => true,
            MaskUse::Never => false,
        }
    }
}

/// The compared methods, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Energy-constrained projected training.
    #[value(alias = "energy-constrained")]
    Energy,
    /// Global magnitude pruning to the same energy.
    #[value(alias = "global")]
    Magnitude,
    /// Layer-uniform magnitude pruning to the same energy.
    #[value(alias = "uniform")]
    LayerUniform,
}

impl Method {
    const ALL: [Method; 3] = [Method::Energy, Method::Magnitude, Method::LayerUniform];

    fn name(self) -> &'static str {
        match self {
            Method::Energy => "energy-constrained",
            Method::Magnitude => "magnitude",
            Method::LayerUniform => "layer-uniform",
        }
    }
}

use crate::args::Usage;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Budgets as fractions of the dense energy, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.15, 0.2, 0.3, 0.4, 0.5, 0.7])]
    pub budgets: Vec<f64>,
    /// Methods, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = Method::ALL)]
    pub methods: Vec<Method>,
    /// Load the dense network from this file instead of training it.
    #[arg(long)]
    pub dense: Option<PathBuf>,
    /// Save the trained dense network to this file.
    #[arg(long)]
    pub save_dense: Option<PathBuf>,
    /// Epochs of dense training.
    #[arg(long, default_value_t = 12)]
    pub dense_epochs: usize,
    /// Epochs of constrained training.
    #[arg(long, default_value_t = ProjectedTraining::default().epochs)]
    pub epochs: usize,
    /// Epochs of fine-tuning with the support frozen.
    #[arg(long, default_value_t = ProjectedTraining::default().finetune_epochs)]
    pub finetune_epochs: usize,
    /// When the energy-constrained runs learn layer input masks.
    #[arg(long, value_enum, default_value_t = MaskUse::Auto)]
    pub input_mask: MaskUse,
    /// Rounds of input-mask training.
    #[arg(long, default_value_t = MaskRounds::default().rounds)]
    pub mask_rounds: usize,
    /// Budget whose per-layer energy breakdown is plotted.
    #[arg(long)]
    pub breakdown_budget: Option<f64>,
    /// Directory of the CSV, JSON and SVG outputs.
    #[arg(long, default_value = "sweep-results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub mnist: crate::args::MnistDir,
    /// Use at most this many training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use at most this many test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    #[command(flatten)]
    pub rng: crate::args::Seed,
    #[command(flatten)]
    pub print: crate::args::Json,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        let a = self;
        check::fractions("--budgets", &a.budgets)?;
        a.budgets.sort_by(|x, y| y.total_cmp(x));
        a.budgets.dedup();
        a.methods.dedup();
        if a.methods.is_empty() {
            return Err("--methods: name at least one of energy, magnitude, layer-uniform".into());
        }
        check::at_least_one("--epochs", a.epochs)?;
        check::count("--dense-epochs", a.dense_epochs, 0)?;
        check::count("--finetune-epochs", a.finetune_epochs, 0)?;
        check::at_least_one("--mask-rounds", a.mask_rounds)?;
        if let Some(b) = a.breakdown_budget
            && !a.budgets.contains(&b)
        {
            return Err(format!("--breakdown-budget {b}: must be one of --budgets").into());
        }
        for (flag, v) in [
            ("--train-limit", a.train_limit),
            ("--test-limit", a.test_limit),
        ] {
            if let Some(n) = v {
                check::at_least_one(flag, n)?;
            }
        }
        if a.train_limit.is_some_and(|n| n < 12) {
            return Err(
                "--train-limit: at least 12 images (one sixth is held out for the masks)".into(),
            );
        }
        check::mnist_dir("--data", &a.mnist.data)?;
        if let Some(p) = &a.dense {
            check::readable("--dense", p)?;
        }
        if let Some(p) = &a.save_dense {
            check::writable("--save-dense", p)?;
            let mut inputs = check::mnist_files(&a.mnist.data);
            inputs.extend(a.dense.iter().cloned());
            let inputs: Vec<&std::path::Path> = inputs.iter().map(|p| p.as_path()).collect();
            check::outputs_apart(&[("--save-dense", p)], &inputs)?;
        }
        if a.out.exists() && !a.out.is_dir() {
            return Err(format!("--out {}: is a file; give a directory", a.out.display()).into());
        }
        std::fs::create_dir_all(&a.out)
            .map_err(|e| format!("--out {}: cannot be created ({e})", a.out.display()))?;
        check::writable("--out", &a.out.join("sweep.csv"))?;
        Ok(())
    }
}

/// One (method, budget) result; `None` in `run` when the budget is below what the
/// method can reach (its smallest energy is then in `min_ratio`).
struct Point {
    method: Method,
    /// Whether the run learned input masks.
    masks: bool,
    budget: f64,
    run: Option<RunResult>,
    min_ratio: Option<f64>,
}

struct RunResult {
    energy: EnergyReport,
    test_accuracy: f64,
    seconds: f64,
    /// Why the run does not count as a result (it diverged, missed its budget,
    /// or its accuracy is at chance): shown in the table and files, left out of
    /// the curve, and the job exits with code 1 after writing its outputs.
    failed: Option<String>,
}

/// Test accuracy at or below this multiple of chance marks a run as failed.
const CHANCE_FACTOR: f64 = 1.5;

/// Epoch lines above a progress bar over all epochs of the sweep.
struct SweepProgress {
    bar: ProgressBar,
    /// Bar position when the current run started.
    base: u64,
    reference: f64,
}

impl Observer for SweepProgress {
    fn on_epoch(&mut self, e: &EpochEvent) -> energy_prune::Result<Control> {
        let line = epoch_line(e, self.reference, "of dense");
        self.bar.suspend(|| println!("{line}"));
        self.bar.set_position(self.base + e.epoch as u64);
        Ok(Control::Continue)
    }
}

/// Epochs a run of `method` trains at most (the bar's unit).
fn planned_epochs(method: Method, cfg: &ProjectedTraining) -> u64 {
    let masks = match (method, &cfg.input_masks) {
        (Method::Energy, Some(m)) => m.rounds * (m.mask_epochs + m.weight_epochs),
        _ => 0,
    };
    (cfg.epochs + cfg.finetune_epochs + masks) as u64
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
    // Input-mask rounds decide on a hold-out sized to the data set.
    let (train_part, validation) = train.split(train.len() - held_out(train.len()));

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
    // The all-zero energy of the unmasked network as a fraction of the dense one
    // (from the architecture alone: every dense weight is nonzero).
    let floor = {
        let arch = Cnn::lenet5(args.rng.seed)?.architecture().clone();
        let m = SystolicArray::new(&arch, SystolicConfig::default())?;
        m.dense_floor() / m.energy_total(&NetworkState::dense(&arch))?
    };
    let settings = |method: Method, budget: f64| {
        if method == Method::Energy && args.input_mask.at(budget, floor) {
            &masked
        } else {
            &cfg
        }
    };
    let total: u64 = args
        .budgets
        .iter()
        .flat_map(|&b| args.methods.iter().map(move |&m| (m, b)))
        .map(|(m, b)| planned_epochs(m, settings(m, b)))
        .sum::<u64>()
        + if args.dense.is_none() {
            args.dense_epochs as u64
        } else {
            0
        };
    let bar = if std::io::stdout().is_terminal() {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40.cyan/blue} {pos}/{len} epochs  {elapsed_precise} elapsed, about {eta} left  {msg}",
        )
        .map_err(|e| Error::External(Box::new(e)))?,
    );

    let mut dense = Cnn::lenet5(args.rng.seed)?;
    match &args.dense {
        Some(path) => {
            dense.load(path)?;
            println!("loaded dense LeNet-5 from {}", path.display());
        }
        None => {
            bar.set_message("dense training");
            train_dense_lenet5(
                &mut dense,
                &train,
                &test,
                args.dense_epochs,
                args.rng.seed,
                &mut |e| {
                    bar.suspend(|| print_dense("dense", args.dense_epochs, e));
                    bar.inc(1);
                },
            )?
        }
    }
    if let Some(path) = &args.save_dense {
        dense.save(path)?;
        println!("saved dense LeNet-5 to {}", path.display());
    }
    let dense_acc = evaluate(&mut dense, &test, 1000)?;
    let model = SystolicArray::new(dense.architecture(), SystolicConfig::default())?;
    let dense_report = model.energy(&NetworkState::from_network(&dense)?)?;
    let e_dense = dense_report.total;
    println!(
        "\ndense: test accuracy {:.2} %, energy {:.6e} (all-zero floor {:.4} of dense); budgets {:?} of dense, methods {}\n\
         every run starts from this dense network (trained once) and trains {} epochs{}\n",
        100.0 * dense_acc,
        e_dense,
        model.dense_floor() / e_dense,
        args.budgets,
        args.methods
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        cfg.epochs + cfg.finetune_epochs,
        match args
            .budgets
            .iter()
            .filter(|&&b| args.input_mask.at(b, floor))
            .collect::<Vec<_>>()
        {
            v if v.is_empty() => String::new(),
            v => format!(" (energy-constrained at {v:?}: plus input-mask rounds)"),
        },
    );

    let mut progress = SweepProgress {
        bar,
        base: if args.dense.is_none() {
            args.dense_epochs as u64
        } else {
            0
        },
        reference: e_dense,
    };
    let mut points = Vec::new();
    for &budget in &args.budgets {
        for &method in &args.methods {
            progress
                .bar
                .set_message(format!("{} at {budget}", method.name()));
            let t = Instant::now();
            let mut net = dense.clone();
            let run_cfg = settings(method, budget);
            let outcome = match method {
                Method::Energy => {
                    let data = if run_cfg.input_masks.is_some() {
                        for l in 0..3 {
                            net.enable_input_mask(l)?; // conv1, conv2, fc1: the costly inputs
                        }
                        Data {
                            train: &train_part,
                            validation: Some(&validation),
                            test: Some(&test),
                        }
                    } else {
                        Data {
                            train: &train,
                            validation: None,
                            test: Some(&test),
                        }
                    };
                    train_projected(
                        &mut net,
                        vec![Budget::absolute("energy", &model, budget * e_dense)],
                        data,
                        run_cfg,
                        &mut progress,
                    )
                }
                Method::Magnitude | Method::LayerUniform => {
                    let rule = if method == Method::Magnitude {
                        MagnitudeRule::Global
                    } else {
                        MagnitudeRule::LayerUniform
                    };
                    let data = Data {
                        train: &train,
                        validation: None,
                        test: Some(&test),
                    };
                    train_magnitude(
                        &mut net,
                        vec![Budget::absolute("energy", &model, budget * e_dense)],
                        rule,
                        data,
                        run_cfg,
                        &mut progress,
                    )
                }
            };
            progress.base += planned_epochs(method, run_cfg);
            progress.bar.set_position(progress.base);
            let point = match outcome {
                Ok(report) => {
                    let energy = model.energy(&NetworkState::from_network(&net)?)?;
                    let test_accuracy = report.test_accuracy.unwrap_or(f64::NAN);
                    let classes = energy_prune::network::Trainable::num_classes(&net);
                    let chance = 1.0 / classes.max(1) as f64;
                    let failed = if report.diverged() || !report.budget_met() {
                        Some(report.termination.to_string())
                    } else if test_accuracy.is_nan() || test_accuracy <= CHANCE_FACTOR * chance {
                        Some(format!(
                            "test accuracy {:.2} % is at chance ({:.0} % for {} classes)",
                            100.0 * test_accuracy,
                            100.0 * chance,
                            classes
                        ))
                    } else {
                        None
                    };
                    let run = RunResult {
                        test_accuracy,
                        energy,
                        seconds: t.elapsed().as_secs_f64(),
                        failed,
                    };
                    progress.bar.suspend(|| match &run.failed {
                        None => println!(
                            "==> {} at budget {budget}: test accuracy {:.2} %, energy {:.4} of dense, {:.0} s\n",
                            method.name(),
                            100.0 * run.test_accuracy,
                            run.energy.total / e_dense,
                            run.seconds
                        ),
                        Some(why) => println!(
                            "==> {} at budget {budget}: FAILED, {why}; not a point of the curve\n",
                            method.name()
                        ),
                    });
                    Point {
                        masks: run_cfg.input_masks.is_some(),
                        method,
                        budget,
                        run: Some(run),
                        min_ratio: None,
                    }
                }
                Err(Error::InfeasibleBudget { min_achievable, .. }) => {
                    progress.bar.suspend(|| {
                        println!(
                            "==> {} at budget {budget}: infeasible, its smallest energy is {:.4} of dense\n",
                            method.name(),
                            min_achievable / e_dense
                        )
                    });
                    Point {
                        masks: run_cfg.input_masks.is_some(),
                        method,
                        budget,
                        run: None,
                        min_ratio: Some(min_achievable / e_dense),
                    }
                }
                Err(e) => return Err(e),
            };
            points.push(point);
        }
    }
    progress.bar.finish_and_clear();

    let svg = write_outputs(args, floor, &points, &dense_report, dense_acc)?;
    print_table(args, &points, dense_acc, e_dense);
    println!(
        "\nwrote {}",
        svg.iter()
            .chain(&[args.out.join("sweep.csv"), args.out.join("sweep.json")])
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("whole sweep: {:.1} s", start.elapsed().as_secs_f64());
    if args.print.json {
        let pts: Vec<_> = points
            .iter()
            .map(|p| {
                serde_json::json!({
                    "method": p.method.name(),
                    "budget": p.budget,
                    "energy_ratio": p.run.as_ref().map(|r| r.energy.total / e_dense),
                    "test_accuracy": p.run.as_ref().map(|r| r.test_accuracy),
                    "failed": p.run.as_ref().and_then(|r| r.failed.clone()),
                })
            })
            .collect();
        let paths: Vec<String> = svg.iter().map(|p| p.display().to_string()).collect();
        println!("{}", serde_json::json!({"points": pts, "svg": paths}));
    }
    // A run that reported success within budget must really be within it.
    for p in &points {
        if let Some(r) = p.run.as_ref().filter(|r| r.failed.is_none()) {
            energy_prune_nn::workflow::require_budget_met(
                p.method.name(),
                r.energy.total <= p.budget * e_dense,
                r.energy.total,
                p.budget * e_dense,
            )?;
        }
    }
    let failed: Vec<String> = points
        .iter()
        .filter_map(|p| {
            let why = p.run.as_ref()?.failed.as_ref()?;
            Some(format!("{} at {}: {why}", p.method.name(), p.budget))
        })
        .collect();
    if !failed.is_empty() {
        return Err(Error::RunsFailed {
            what: format!("{} of {} sweep points", failed.len(), points.len()),
            reasons: failed.join("; "),
        });
    }
    Ok(())
}

/// The three parts of a layer's energy as fractions of the dense total.
fn parts(r: &EnergyReport, e_dense: f64) -> Vec<(String, [f64; 3])> {
    r.layers
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                [
                    l.part(WEIGHT_MOVEMENT).unwrap_or(0.0) / e_dense,
                    l.part(COMPUTE).unwrap_or(0.0) / e_dense,
                    l.part(INPUT_MOVEMENT).unwrap_or(0.0) / e_dense,
                ],
            )
        })
        .collect()
}

fn write_outputs(
    args: &Args,
    floor: f64,
    points: &[Point],
    dense: &EnergyReport,
    dense_acc: f64,
) -> energy_prune::Result<Vec<PathBuf>> {
    let e_dense = dense.total;
    let names: Vec<&str> = dense.layers.iter().map(|l| l.name.as_str()).collect();
    // CSV: one row per point; infeasible points have empty figures.
    let mut csv = String::from("method,budget,feasible,failed,energy_ratio,test_accuracy,seconds");
    for n in &names {
        write!(csv, ",nonzero_{n}").unwrap();
    }
    csv.push('\n');
    for p in points {
        let failed = p.run.as_ref().is_some_and(|r| r.failed.is_some());
        write!(
            csv,
            "{},{},{},{failed}",
            p.method.name(),
            p.budget,
            p.run.is_some()
        )
        .unwrap();
        match &p.run {
            Some(r) => {
                write!(
                    csv,
                    ",{},{},{:.1}",
                    r.energy.total / e_dense,
                    r.test_accuracy,
                    r.seconds
                )
                .unwrap();
                for l in &r.energy.layers {
                    write!(csv, ",{}", l.nonzero).unwrap();
                }
            }
            None => csv.push_str(&",".repeat(3 + names.len())),
        }
        csv.push('\n');
    }
    save(&args.out.join("sweep.csv"), &csv)?;

    let layers = |r: &EnergyReport| -> serde_json::Value {
        r.layers
            .iter()
            .map(|l| {
                serde_json::json!({"name": l.name, "nonzero": l.nonzero, "weights": l.part(WEIGHT_MOVEMENT),
                    "compute": l.part(COMPUTE), "inputs": l.part(INPUT_MOVEMENT), "total": l.total})
            })
            .collect()
    };
    let json = serde_json::json!({
        "network": "lenet5",
        "dense": {"test_accuracy": dense_acc, "energy": e_dense, "layers": layers(dense)},
        "settings": {"epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
            "input_mask": format!("{:?}", args.input_mask).to_lowercase(), "unmasked_floor": floor, "mask_rounds": args.mask_rounds, "seed": args.rng.seed,
            "train_images": args.train_limit, "test_images": args.test_limit},
        "points": points.iter().map(|p| serde_json::json!({
            "method": p.method.name(),
            "budget": p.budget,
            "input_masks": p.masks,
            "feasible": p.run.is_some(),
            "min_energy_ratio": p.min_ratio,
            "energy_ratio": p.run.as_ref().map(|r| r.energy.total / e_dense),
            "test_accuracy": p.run.as_ref().map(|r| r.test_accuracy),
            "failed": p.run.as_ref().and_then(|r| r.failed.clone()),
            "seconds": p.run.as_ref().map(|r| r.seconds),
            "nonzero": p.run.as_ref().map(|r| r.energy.layers.iter().map(|l| l.nonzero).collect::<Vec<_>>()),
            "layers": p.run.as_ref().map(|r| layers(&r.energy)),
        })).collect::<Vec<_>>(),
    });
    save(&args.out.join("sweep.json"), &format!("{json:#}\n"))?;

    let series: Vec<Series> = args
        .methods
        .iter()
        .map(|&m| Series {
            name: m.name().to_string(),
            points: points
                .iter()
                .filter(|p| p.method == m)
                .filter_map(|p| p.run.as_ref())
                .filter(|r| r.failed.is_none())
                .map(|r| (r.energy.total / e_dense, 100.0 * r.test_accuracy))
                .collect(),
        })
        .collect();
    let accuracy = args.out.join("accuracy_energy.svg");
    accuracy_plot(
        &accuracy,
        "LeNet-5 on MNIST: test accuracy against exact energy (systolic model)",
        "energy / dense energy",
        &series,
        Some(("dense", 100.0 * dense_acc)),
    )?;

    // Energy per layer at one budget: the requested one, else the one nearest 0.2.
    let at = args.breakdown_budget.unwrap_or_else(|| {
        *args
            .budgets
            .iter()
            .min_by(|a, b| (*a - 0.2).abs().total_cmp(&(*b - 0.2).abs()))
            .expect("at least one budget")
    });
    let mut panels = vec![Breakdown {
        title: "dense".into(),
        layers: parts(dense, e_dense),
    }];
    for p in points.iter().filter(|p| p.budget == at) {
        panels.push(Breakdown {
            title: match &p.run {
                Some(r) => format!("{} ({:.3})", p.method.name(), r.energy.total / e_dense),
                None => format!("{} (infeasible)", p.method.name()),
            },
            layers: p
                .run
                .as_ref()
                .map_or_else(Vec::new, |r| parts(&r.energy, e_dense)),
        });
    }
    let breakdown = args.out.join("energy_breakdown.svg");
    breakdown_plot(
        &breakdown,
        &format!(
            "Energy per layer: dense (left, own scale) and each method at budget {at} (same scale)"
        ),
        "energy / dense total",
        ["weights", "compute", "inputs"],
        &panels,
        true,
    )?;
    Ok(vec![accuracy, breakdown])
}

fn print_table(args: &Args, points: &[Point], dense_acc: f64, e_dense: f64) {
    println!(
        "\nTest accuracy / exact energy ratio per budget (dense: {:.2} %, 1.0000):\n",
        100.0 * dense_acc
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
            match points.iter().find(|p| p.budget == b && p.method == m) {
                Some(Point { run: Some(r), .. }) if r.failed.is_some() => print!(
                    " failed ({:.2} %) / {:.4} |",
                    100.0 * r.test_accuracy,
                    r.energy.total / e_dense
                ),
                Some(Point { run: Some(r), .. }) => print!(
                    " {:.2} % / {:.4} |",
                    100.0 * r.test_accuracy,
                    r.energy.total / e_dense
                ),
                Some(Point {
                    min_ratio: Some(min),
                    ..
                }) => print!(" infeasible (min {min:.4}) |"),
                _ => print!(" - |"),
            }
        }
        println!();
    }
}
