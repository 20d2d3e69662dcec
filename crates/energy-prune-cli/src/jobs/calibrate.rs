//! Build a cost model of YOUR hardware: profile random layer widths of a network on
//! this machine's CPU under the measurement protocol (warm-up, interleaved
//! repeats, a low quantile, re-measurement of noisy configurations, a noise
//! report), measure every layer alone on a grid, fit ECC's bilinear model (CVPR
//! 2019, with and without linear terms) and the per-layer lookup table on the same
//! measurements, validate each on held-out configurations, and save the best as
//! JSON with its kind.
//!
//! ```text
//! energy-prune calibrate [--net vgg-mnist|lenet5]
//!     [--samples N] [--batch N] [--repeats N] [--grid N] [--min-fraction F] [--seed N] [--out FILE] [--csv FILE]
//!     [--min-fraction F] [--oracle latency|rapl|nvml] [--rapl-domains package,dram]
//!     [--powercap-root DIR] [--gpu N] [--json]
//! ```
//! The cost is the median forward latency (ms) of one batch at the machine's
//! thread count, or with `--oracle rapl` (Linux powercap counters; `--rapl-domains`,
//! `--powercap-root`) or `--oracle nvml` (an NVIDIA GPU's counter, tool built with
//! `--features nvml`; `--gpu`) the **measured energy** in joules per inference,
//! the idle power measured first and subtracted, each measurement a window long
//! enough for the counter (`energy_prune_nn::meter`). Free widths are sampled uniformly in `[F * max, max]`,
//! `F = --min-fraction` (default 0.25, the range channel pruning works in; 0 gives
//! the full `[1, max]`). With `--json` the last stdout line is one JSON object.

use crate::common::check;
use energy_prune_nn::workflow::{CalibrationSettings, calibrate_latency, print_calibration};

use std::path::PathBuf;
use std::time::Instant;

use energy_prune::energy::{FitOptions, WidthCostModel};
use energy_prune::network::Network;
use energy_prune_nn::{Cnn, LatencyOracle};

use crate::args::Usage;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network to calibrate: vgg-mnist or lenet5.
    #[arg(long, default_value = "vgg-mnist")]
    pub net: String,
    /// Random width configurations measured.
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Batch size of the latency measurements.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Repeats of each measurement.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Grid points per layer of the layer table.
    #[arg(long, default_value_t = 5)]
    pub grid: usize,
    #[command(flatten)]
    pub rng: crate::args::Seed,
    /// Write the fitted models (JSON) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the measurements as CSV to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    #[command(flatten)]
    pub print: crate::args::Json,
    /// Smallest width fraction sampled.
    #[arg(long, default_value_t = 0.25)]
    pub min_fraction: f64,
    /// Statistic of repeated measurements: q25, q10, min, median or trim20.
    #[arg(long, value_parser = crate::args::statistic, default_value = "q25")]
    pub statistic: energy_prune::energy::Statistic,
    /// What is measured: latency (CPU time per batch), rapl (Linux powercap energy)
    /// or nvml (NVIDIA GPU energy; needs the tool built with `--features nvml`).
    #[arg(long, default_value = "latency")]
    pub oracle: String,
    #[command(flatten)]
    pub counter: crate::args::Counter,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        let a = self;
        if !["vgg-mnist", "lenet5"].contains(&a.net.as_str()) {
            return Err(format!("--net {}: expected vgg-mnist or lenet5", a.net).into());
        }
        check::at_least_one("--samples", a.samples)?;
        check::at_least_one("--batch", a.batch)?;
        check::at_least_one("--repeats", a.repeats)?;
        check::count("--grid", a.grid, 2)?;
        if !["latency", "rapl", "nvml"].contains(&a.oracle.as_str()) {
            return Err(format!("--oracle {}: expected latency, rapl or nvml", a.oracle).into());
        }
        a.counter.check(&a.oracle)?;
        check::within("--min-fraction", a.min_fraction, 0.0, 1.0)?;
        let mut outputs = Vec::new();
        for (flag, p) in [("--out", &a.out), ("--csv", &a.csv)] {
            if let Some(p) = p {
                check::writable(flag, p)?;
                outputs.push((flag, p.as_path()));
            }
        }
        check::outputs_apart(&outputs, &[])
    }
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    let start = Instant::now();
    let (net, input, specs) = match args.net.as_str() {
        "vgg-mnist" => (Cnn::vgg_mnist(0)?, (1, 28, 28), Cnn::vgg_mnist_specs()),
        "lenet5" => (Cnn::lenet5(0)?, (1, 32, 32), Cnn::lenet5_specs()),
        other => {
            return Err(energy_prune::Error::InvalidParameter {
                name: "net",
                value: other.into(),
                reason: "choose vgg-mnist or lenet5".into(),
            });
        }
    };
    let arch = net.architecture().clone();
    let mut oracle = LatencyOracle::new(input, &specs)?;
    oracle.batch = args.batch;
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    let settings = CalibrationSettings {
        samples: args.samples,
        min_fraction: args.min_fraction,
        batch: args.batch,
        repeats: args.repeats,
        grid: args.grid,
        seed: args.rng.seed,
        statistic: args.statistic,
    };
    let (cal, dense, unit, measured) = match args.oracle.as_str() {
        "latency" => {
            let dense = oracle.measure_stats(&full)?;
            println!(
                "{}: dense forward of a batch of {} on {} threads: median {:.3} ms (min {:.3}, max {:.3})",
                args.net, args.batch, oracle.threads, dense.median_ms, dense.min_ms, dense.max_ms
            );
            let cal = calibrate_latency(&arch, input, &specs, &settings)?;
            let measured = format!(
                "CPU latency in ms of a forward pass, batch {}, {} threads, {:?} of the repeats",
                args.batch, oracle.threads, cal.noise.statistic
            );
            (cal, dense.median_ms, "ms", measured)
        }
        kind => {
            let counter = args.counter.open(kind)?;
            let mut meter = energy_prune_nn::meter::EnergyMeter::new(
                counter,
                energy_prune_nn::meter::MeterSettings::default(),
            )?;
            println!(
                "{}: measuring energy on {} (idle {:.3} W, subtracted; windows of at least {:.0} ms)",
                args.net,
                meter.describe(),
                meter.idle_watts(),
                meter.min_window().as_secs_f64() * 1e3
            );
            let cal = energy_prune_nn::workflow::calibrate_energy(
                &arch, input, &specs, &mut meter, &settings,
            )?;
            let dense = energy_prune::energy::WidthCostModel::cost_of_widths(&cal.chosen, &full)?;
            let measured = format!(
                "energy in J per inference on {} (idle {:.3} W subtracted), batch {}, {:?} of the repeats",
                meter.describe(),
                meter.idle_watts(),
                args.batch,
                cal.noise.statistic
            );
            (cal, dense, "J", measured)
        }
    };
    let data = &cal.data;
    if let Some(p) = &args.csv {
        data.save_csv(p)?;
        println!("measurements written to {}", p.display());
    }
    let report = cal
        .models
        .iter()
        .find(|m| m.1 == cal.chosen)
        .map(|m| m.2)
        .expect("the chosen model is one of the fitted ones");
    println!(
        "\nvalidation on {} held-out configurations:\n",
        report.validation.samples
    );
    print_calibration(&cal);
    let model = &cal.chosen;
    let opts = FitOptions {
        seed: args.rng.seed,
        ..FitOptions::default()
    };
    let (_, val) = data.split(opts.validation, opts.seed)?;
    let mut worst: Vec<(f64, Vec<usize>, f64, f64)> = val
        .iter()
        .map(|(w, c)| {
            let f = model.cost_of_widths(w).unwrap_or(f64::NAN);
            ((f - c).abs() / c, w.to_vec(), c, f)
        })
        .collect();
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("\nworst held-out predictions (widths, measured {unit}, predicted {unit}, error):");
    for (e, w, c, f) in worst.iter().take(5) {
        println!("  {w:?}  {c:.4e}  {f:.4e}  {:.1} %", 100.0 * e);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("calibrate-{}.json", args.net)));
    let provenance =
        energy_prune::energy::FitProvenance::new(&arch, data.len(), report.validation, measured);
    model.save_json_with_provenance(&out, &provenance)?;
    println!(
        "\nmodel written to {}  (whole run {:.1} s)",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    if args.print.json {
        let v = report.validation;
        let val = |v: &energy_prune::energy::FitMetrics| serde_json::json!({"mrae": v.mrae, "max_rel_error": v.max_rel_error, "within_10pct": v.within_10pct, "r2": v.r2});
        let models: Vec<serde_json::Value> = cal
            .models
            .iter()
            .map(|(name, m, r)| serde_json::json!({"kind": m.kind(), "name": name, "validation": val(&r.validation)}))
            .collect();
        let line = serde_json::json!({
            "net": args.net,
            "samples": args.samples,
            "min_fraction": args.min_fraction,
            "validation": val(&v),
            "model": serde_json::to_value(model)
                .map_err(|e| energy_prune::Error::serialization("the calibrated model", e))?,
            "models": models,
            "noise": {"median_cv": cal.noise.median_cv, "max_cv": cal.noise.max_cv, "remeasured": cal.noise.remeasured, "unstable": cal.noise.unstable, "warning": cal.noise.warning, "statistic": format!("{:?}", cal.noise.statistic)},
            "oracle": args.oracle,
            "unit": unit,
            "dense_cost": dense,
        });
        println!("{line}");
    }
    Ok(())
}
