//! Workflows of the reference CNN that the command-line tool, the examples and
//! users' programs share: dense training with a cosine schedule (the LeNet-5 and
//! VGG-MNIST recipes), latency calibration of the bilinear and layer-table models
//! on this CPU, progress lines for the training driver, and the **closed latency
//! loop** of ECC: measure the compacted network, and while the measurement misses
//! the budget, tighten the model's budget and prune again.

use energy_prune::network::Trainable;
use energy_prune::prune::{EpochEvent, Observer};
use energy_prune::train::{
    Control, CrossEntropy, DataSource, Optimizer, cosine_lr, evaluate, train_epoch,
};
use rand::rngs::ChaCha12Rng;

/// How the dense network is trained.
pub struct DenseTraining {
    /// Epochs.
    pub epochs: usize,
    /// Base learning rate of the cosine schedule.
    pub lr: f32,
    /// The cosine runs over this many epochs (>= `epochs`).
    pub schedule_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
}

/// Per-epoch figures of the dense run.
pub struct DenseEpoch {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f32,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f64,
    /// Samples per second.
    pub images_per_second: f64,
    /// Seconds of training.
    pub seconds: f64,
    /// Samples trained on.
    pub images: usize,
}

/// Train a dense network with cross-entropy and a cosine learning rate, calling
/// `each` after every epoch.
pub fn train_dense<N, O>(
    net: &mut N,
    opt: &mut O,
    train: &dyn DataSource,
    test: &dyn DataSource,
    cfg: &DenseTraining,
    rng: &mut ChaCha12Rng,
    each: &mut dyn FnMut(&DenseEpoch),
) -> energy_prune::Result<()>
where
    N: Trainable,
    O: Optimizer,
{
    for e in 0..cfg.epochs {
        let lr = cosine_lr(cfg.lr, e, cfg.schedule_epochs);
        opt.set_learning_rate(lr);
        let st = train_epoch(
            net,
            opt,
            train,
            &mut CrossEntropy,
            cfg.batch_size,
            rng,
            &mut |_, _, _| Ok(Control::Continue),
        )?;
        each(&DenseEpoch {
            epoch: e + 1,
            lr,
            loss: st.loss,
            train_accuracy: st.train_accuracy,
            test_accuracy: evaluate(net, test, 1000)?,
            images_per_second: st.throughput(),
            seconds: st.seconds,
            images: st.images,
        });
    }
    Ok(())
}

/// The dense LeNet-5 of the tool's jobs: `epochs` epochs of SGD (momentum 0.9, weight
/// decay 5e-4, batch 64) with a cosine learning rate from 0.02, data order from `seed`.
pub fn train_dense_lenet5<N: Trainable>(
    net: &mut N,
    train: &dyn DataSource,
    test: &dyn DataSource,
    epochs: usize,
    seed: u64,
    each: &mut dyn FnMut(&DenseEpoch),
) -> energy_prune::Result<()> {
    let mut opt = energy_prune::train::Sgd::new(0.02, 0.9, 5e-4)?;
    let cfg = DenseTraining {
        epochs,
        lr: 0.02,
        schedule_epochs: epochs,
        batch_size: 64,
    };
    let mut rng = <ChaCha12Rng as rand::SeedableRng>::seed_from_u64(seed);
    train_dense(net, &mut opt, train, test, &cfg, &mut rng, each)
}

/// The dense VGG-MNIST of the tool's jobs: `epochs` epochs of Adam (rate 1e-3, batch
/// 64; this deeper network without normalisation diverges under plain SGD at
/// LeNet-5's rate) with a cosine over `epochs + 1`, data order from `seed`.
pub fn train_dense_vgg<N: Trainable>(
    net: &mut N,
    train: &dyn DataSource,
    test: &dyn DataSource,
    epochs: usize,
    seed: u64,
    each: &mut dyn FnMut(&DenseEpoch),
) -> energy_prune::Result<()> {
    let mut opt = energy_prune::train::Adam::new(1e-3)?;
    let cfg = DenseTraining {
        epochs,
        lr: 1e-3,
        schedule_epochs: epochs + 1,
        batch_size: 64,
    };
    let mut rng = <ChaCha12Rng as rand::SeedableRng>::seed_from_u64(seed);
    train_dense(net, &mut opt, train, test, &cfg, &mut rng, each)
}

/// A latency calibration: every model fitted on the same measurements, the best
/// by held-out error, and how noisy the machine was.
pub struct Calibration {
    /// The model with the lowest validation MRAE.
    pub chosen: energy_prune::energy::CalibratedModel,
    /// Every model fitted: a label, the model, its report.
    pub models: Vec<(
        &'static str,
        energy_prune::energy::CalibratedModel,
        energy_prune::energy::FitReport,
    )>,
    /// The measurements' noise.
    pub noise: energy_prune::energy::NoiseReport,
    /// The measured configurations (protocol estimates).
    pub data: energy_prune::energy::ProfileSet,
}

/// How a latency calibration measures.
pub struct CalibrationSettings {
    /// Random width configurations measured whole.
    pub samples: usize,
    /// Widths sampled in `[min_fraction * max, max]`.
    pub min_fraction: f64,
    /// Batch of a timed forward pass.
    pub batch: usize,
    /// Interleaved timed passes of the protocol.
    pub repeats: usize,
    /// Grid points per axis of the layer table.
    pub grid: usize,
    /// Seed of the sampler and the fits' splits.
    pub seed: u64,
    /// Per-configuration statistic of the repeats.
    pub statistic: energy_prune::energy::Statistic,
}

/// Calibrate the CPU latency of a sequential stack on this machine: `samples`
/// random width configurations measured whole under the measurement protocol
/// (warm-up pass, interleaved repeats, low quantile, re-measurement of noisy
/// configurations), every layer measured alone on a grid for the layer table, then
/// ECC's bilinear model (with and without linear terms) and the layer table fitted
/// on the same measurements; the best by validation MRAE is chosen.
pub fn calibrate_latency(
    arch: &energy_prune::arch::Architecture,
    input: (usize, usize, usize),
    specs: &[crate::LayerSpec],
    cfg: &CalibrationSettings,
) -> energy_prune::Result<Calibration> {
    use crate::{LatencyOracle, LayerLatencyOracle};
    let mut oracle = LatencyOracle::new(input, specs)?;
    (oracle.batch, oracle.warmup, oracle.repeats) = (cfg.batch, 1, 1);
    let mut layers = LayerLatencyOracle::new(input, specs)?;
    (layers.batch, layers.warmup, layers.repeats) = (cfg.batch, 1, 1);
    calibrate_with(arch, &mut oracle, &mut layers, cfg, "forward passes")
}

/// Calibrate the measured **energy** per inference of a sequential stack, as
/// [`calibrate_latency`] calibrates its latency: the whole networks and every
/// layer alone run batches of `cfg.batch` inferences on `meter` (a RAPL or NVML
/// counter with the idle power measured), each measurement a window long enough
/// for the counter; the costs are joules per inference, idle subtracted.
pub fn calibrate_energy<C: crate::meter::EnergyCounter>(
    arch: &energy_prune::arch::Architecture,
    input: (usize, usize, usize),
    specs: &[crate::LayerSpec],
    meter: &mut crate::meter::EnergyMeter<C>,
    cfg: &CalibrationSettings,
) -> energy_prune::Result<Calibration> {
    use std::cell::RefCell;
    let oracle = crate::LatencyOracle::new(input, specs)?;
    let layers = crate::LayerLatencyOracle::new(input, specs)?;
    let batch = cfg.batch;
    let x = |net: &crate::Cnn| -> Vec<f32> {
        (0..batch * net.input_len())
            .map(|i| ((i * 7919) % 255) as f32 / 255.0)
            .collect()
    };
    // The last network built, reused while the widths stay the same.
    type Built = (Vec<usize>, crate::Cnn, Vec<f32>);
    let cache: RefCell<Option<Built>> = RefCell::new(None);
    let meter = RefCell::new(meter);
    let run = |net: &mut crate::Cnn, x: &[f32]| -> energy_prune::Result<usize> {
        let mut logits = Vec::new();
        net.predict(x, batch, &mut logits)?;
        Ok(batch)
    };
    struct Whole<'a, F>(&'a F);
    impl<F: Fn(&[usize]) -> energy_prune::Result<f64>> energy_prune::energy::CostOracle
        for Whole<'_, F>
    {
        fn measure(&mut self, widths: &[usize]) -> energy_prune::Result<f64> {
            (self.0)(widths)
        }
    }
    struct Layers<'a, F>(&'a F);
    impl<F: Fn(usize, usize, usize) -> energy_prune::Result<f64>> energy_prune::energy::LayerOracle
        for Layers<'_, F>
    {
        fn measure_layer(&mut self, l: usize, c: usize, d: usize) -> energy_prune::Result<f64> {
            (self.0)(l, c, d)
        }
    }
    let whole = |widths: &[usize]| -> energy_prune::Result<f64> {
        let mut slot = cache.borrow_mut();
        if slot.as_ref().is_none_or(|(w, _, _)| w.as_slice() != widths) {
            let net = crate::Cnn::new(input, &oracle.narrow_specs(widths)?, 1)?;
            let input = x(&net);
            *slot = Some((widths.to_vec(), net, input));
        }
        let Some((_, net, input)) = slot.as_mut() else {
            unreachable!("set above")
        };
        let sample = meter.borrow_mut().measure(|| run(net, input))?;
        Ok(sample.joules_per_inference)
    };
    let layer = |l: usize, c: usize, d: usize| -> energy_prune::Result<f64> {
        let measure = |block: bool| -> energy_prune::Result<f64> {
            match layers.network(l, c, d, block)? {
                Some(mut net) => {
                    let input = x(&net);
                    Ok(meter
                        .borrow_mut()
                        .measure(|| run(&mut net, &input))?
                        .joules_per_inference)
                }
                None => Ok(0.0),
            }
        };
        let (block, head) = (measure(true)?, measure(false)?);
        Ok((block - head).max(0.01 * block))
    };
    calibrate_with(
        arch,
        &mut Whole(&whole),
        &mut Layers(&layer),
        cfg,
        "measurement windows",
    )
}

/// The calibration both kinds share: sample, measure under the protocol, fit the
/// bilinear models and the layer table, choose by validation MRAE.
fn calibrate_with(
    arch: &energy_prune::arch::Architecture,
    oracle: &mut dyn energy_prune::energy::CostOracle,
    layers: &mut dyn energy_prune::energy::LayerOracle,
    cfg: &CalibrationSettings,
    calls: &str,
) -> energy_prune::Result<Calibration> {
    use energy_prune::energy::{
        Bilinear, CalibratedModel, FitOptions, LayerTable, Protocol, WidthSampler,
        measure_interleaved,
    };
    let mut sampler = WidthSampler::new(arch, cfg.seed);
    for (u, w) in arch.widths().iter().enumerate() {
        if !w.fixed {
            let lo = ((cfg.min_fraction * w.channels as f64).ceil() as usize).clamp(1, w.channels);
            sampler = sampler.with_bounds(u, lo, w.channels)?;
        }
    }
    let configs: Vec<Vec<usize>> = (0..cfg.samples).map(|_| sampler.sample()).collect();
    let protocol = Protocol {
        repeats: cfg.repeats,
        statistic: cfg.statistic,
        ..Protocol::default()
    };
    let run = measure_interleaved(oracle, &configs, &protocol)?;
    let n = &run.noise;
    println!(
        "measured {} configurations in {} {calls}: median coefficient of variation {:.2} % (largest {:.1} %), {} re-measured, {} still unstable",
        n.configurations,
        n.calls,
        100.0 * n.median_cv,
        100.0 * n.max_cv,
        n.remeasured,
        n.unstable
    );
    if let Some(w) = &n.warning {
        println!("WARNING: {w}");
    }
    let opts = FitOptions {
        linear_terms: true,
        relative: true,
        seed: cfg.seed,
        ..FitOptions::default()
    };
    let mut models = Vec::new();
    let fit = Bilinear::fit(arch, &run.profile, &opts)?;
    models.push((
        "bilinear + linear terms",
        CalibratedModel::Bilinear(fit.model),
        fit.report,
    ));
    let plain = FitOptions {
        linear_terms: false,
        ..opts.clone()
    };
    let fit = Bilinear::fit(arch, &run.profile, &plain)?;
    models.push((
        "bilinear only",
        CalibratedModel::Bilinear(fit.model),
        fit.report,
    ));
    let mut table = LayerTable::measure(arch, layers, cfg.grid, cfg.min_fraction, &protocol)?;
    let report = table.fit(&run.profile, &opts)?;
    models.push(("layer table", CalibratedModel::LayerTable(table), report));
    let best = (0..models.len())
        .min_by(|&a, &b| {
            models[a]
                .2
                .validation
                .mrae
                .total_cmp(&models[b].2.validation.mrae)
        })
        .unwrap_or(0);
    Ok(Calibration {
        chosen: models[best].1.clone(),
        models,
        noise: run.noise,
        data: run.profile,
    })
}

/// [`calibrate_latency`] for VGG-MNIST with the tool's defaults (widths in
/// `[max/4, max]`, batch 64, 5 repeats, a 5-point grid).
pub fn calibrate_vgg_latency(
    arch: &energy_prune::arch::Architecture,
    samples: usize,
    seed: u64,
) -> energy_prune::Result<Calibration> {
    calibrate_latency(
        arch,
        (1, 28, 28),
        &crate::Cnn::vgg_mnist_specs(),
        &CalibrationSettings {
            samples,
            min_fraction: 0.25,
            batch: 64,
            repeats: 5,
            grid: 5,
            seed,
            statistic: energy_prune::energy::Protocol::default().statistic,
        },
    )
}

#[cfg(feature = "serde")]
/// Load a calibrated cost model written by `calibrate` and check that it was
/// fitted for `arch` (its provenance, required, names `arch`'s fingerprint) and
/// prices its widths (the same dense channels); the file itself is validated on
/// reading (finite, non-negative costs and finite gradients, grids within the
/// widths).
pub fn load_cost_model(
    path: &std::path::Path,
    arch: &energy_prune::arch::Architecture,
) -> energy_prune::Result<energy_prune::energy::CalibratedModel> {
    let (m, provenance) = energy_prune::energy::CalibratedModel::load_json_with_provenance(path)?;
    let Some(p) = &provenance else {
        return Err(energy_prune::Error::CorruptData {
            path: path.to_path_buf(),
            reason: format!(
                "the cost model records no provenance, so it cannot be checked against `{}`; \
                 re-run `energy-prune calibrate` (it records the network the model was fitted for)",
                arch.name()
            ),
        });
    };
    p.check(arch)?;
    m.check_architecture(arch)?;
    Ok(m)
}

/// Training images held out for the input-mask rounds' validation: a twelfth of
/// the set (5 000 of MNIST's 60 000), at least 1 and at most 5 000, so that a
/// small data set keeps most of its images for training.
pub fn held_out(train_len: usize) -> usize {
    (train_len / 12)
        .clamp(1, 5_000)
        .min(train_len.saturating_sub(1))
}

/// Print the validation table of a calibration.
pub fn print_calibration(c: &Calibration) {
    println!("| model | validation MRAE | max rel. error | within +-10 % | R^2 |");
    println!("|---|---|---|---|---|");
    for (name, _, r) in &c.models {
        let e = r.validation;
        println!(
            "| {name} | {:.2} % | {:.2} % | {:.1} % | {:.4} |",
            100.0 * e.mrae,
            100.0 * e.max_rel_error,
            100.0 * e.within_10pct,
            e.r2
        );
    }
    let name = c
        .models
        .iter()
        .find(|m| m.1 == c.chosen)
        .map_or("", |m| m.0);
    println!("chosen: {name} (lowest validation MRAE)");
}

/// The dense progress line of the tool's jobs.
pub fn print_dense(label: &str, epochs: usize, e: &DenseEpoch) {
    println!(
        "{label:<24} {:>3}/{:<3} loss {:.4}  train {:6.2} %  test {:6.2} %  {:>6.0} img/s",
        e.epoch,
        epochs,
        e.loss,
        100.0 * e.train_accuracy,
        100.0 * e.test_accuracy,
        e.images_per_second
    );
}

/// Prints one progress line per epoch: cost against budget, as a fraction of a
/// reference (the dense cost) or in the model's unit.
pub struct Progress {
    /// Divide costs by this (1.0 to print model units).
    pub reference: f64,
    /// What the printed cost is ("of dense", "ms", ...).
    pub unit: &'static str,
}

impl Observer for Progress {
    fn on_epoch(&mut self, e: &EpochEvent) -> energy_prune::Result<Control> {
        println!("{}", epoch_line(e, self.reference, self.unit));
        Ok(Control::Continue)
    }
}

/// One progress line of a constrained run: solver/phase, epoch, loss, accuracies,
/// cost against budget (divided by `reference`, printed with `unit`), kept units,
/// throughput.
pub fn epoch_line(e: &EpochEvent, reference: f64, unit: &str) -> String {
    let s = &e.status;
    let r = reference;
    format!(
        "{:<24} {:>3}/{:<3} loss {:.4}  train {:6.2} %  test {:6.2} %  cost {:.4} (relaxed {:.4}) vs budget {:.4} {}  kept {:>6}  {:>6.0} img/s",
        format!("{}/{}", e.solver, e.phase),
        e.epoch,
        e.epochs,
        e.loss,
        100.0 * e.train_accuracy,
        100.0 * e.test_accuracy.unwrap_or(f64::NAN),
        s.cost / r,
        s.relaxed_cost / r,
        s.budget / r,
        unit,
        s.kept.total(),
        e.images_per_second
    )
}

/// The run's verdict on its own budget: an error (exit code 1) if the result misses
/// it, so that no run ends with success and a result over budget.
pub fn require_budget_met(
    what: &str,
    met: bool,
    reached: f64,
    budget: f64,
) -> energy_prune::Result<()> {
    if met {
        return Ok(());
    }
    Err(energy_prune::Error::BudgetMissed {
        what: what.to_string(),
        reached,
        budget,
    })
}

/// Latency of `net` relative to `reference`, measured interleaved so that drift of
/// the machine spreads over both: `rounds` alternations of one warm-up and one timed
/// forward pass of 64 samples each (2 threads), medians compared. Returns
/// `(median ms of net, median ms of reference)`.
pub fn measure_against(
    net: &mut crate::Cnn,
    reference: &mut crate::Cnn,
    rounds: usize,
) -> energy_prune::Result<(f64, f64)> {
    use crate::measure_latency;
    let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds.max(1) {
        a.push(measure_latency(net, 64, 1, 1)?.median_ms);
        b.push(measure_latency(reference, 64, 1, 1)?.median_ms);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut a), median(&mut b)))
}

/// Energy per inference of `net` relative to `reference` on `meter`, measured
/// interleaved like [`measure_against`]: `rounds` alternations of one window of
/// each (batches of 64), medians compared. Returns `(median J of net, median J of
/// reference)` per inference, idle subtracted.
///
/// # Errors
/// The meter's and the forward passes' errors.
pub fn measure_energy_against<C: crate::meter::EnergyCounter>(
    meter: &mut crate::meter::EnergyMeter<C>,
    net: &mut crate::Cnn,
    reference: &mut crate::Cnn,
    rounds: usize,
) -> energy_prune::Result<(f64, f64)> {
    const BATCH: usize = 64;
    let mut window = |n: &mut crate::Cnn| -> energy_prune::Result<f64> {
        let x: Vec<f32> = (0..BATCH * n.input_len())
            .map(|i| ((i * 7919) % 255) as f32 / 255.0)
            .collect();
        let mut logits = Vec::new();
        Ok(meter
            .measure(|| {
                n.predict(&x, BATCH, &mut logits)?;
                Ok(BATCH)
            })?
            .joules_per_inference)
    };
    let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds.max(1) {
        a.push(window(net)?);
        b.push(window(reference)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut a), median(&mut b)))
}

/// One round of [`closed_loop`].
pub struct LoopRound {
    /// The latency target the round pruned to (model units).
    pub target: f64,
    /// The model's latency of the round's widths (model units).
    pub predicted: f64,
    /// Measured latency of the compact network / the dense network's.
    pub measured: f64,
    /// Measured cost of the compact network: latency in ms per batch of 64, or
    /// joules per inference when the loop measures energy
    /// ([`closed_loop_with`]).
    pub ms: f64,
    /// Widths after the round.
    pub widths: Vec<usize>,
}

/// Closed loop on measured latency: `prune(net, target)` prunes and fine-tunes `net`
/// in place to a latency target in model units (first `target`); the compact
/// network is then measured against `dense` ([`measure_against`]). The loop ends
/// when the measured latency is within `fraction * (1 + tolerance)` of the dense
/// one and the model's cost meets the target. While the measurement is over, the
/// target is tightened by the observed ratio (`min(target, predicted) * fraction /
/// measured`); while only the model's cost is over (pruning ran out of epochs), the
/// next round continues at the same target. Pruning always continues from the
/// current network, for at most `rounds` rounds (or until the target falls below
/// what the model can reach). Returns every round; the last is the result.
#[allow(clippy::too_many_arguments)]
pub fn closed_loop(
    net: &mut crate::Cnn,
    dense: &crate::Cnn,
    fraction: f64,
    target: f64,
    tolerance: f64,
    rounds: usize,
    predict: &dyn Fn(&[usize]) -> energy_prune::Result<f64>,
    prune: &mut dyn FnMut(&mut crate::Cnn, f64) -> energy_prune::Result<()>,
) -> energy_prune::Result<Vec<LoopRound>> {
    closed_loop_with(
        net,
        dense,
        fraction,
        target,
        tolerance,
        rounds,
        predict,
        prune,
        &mut |n, r| measure_against(n, r, 9),
    )
}

/// `measure(compact, dense)`: the two networks' measured costs.
pub type MeasureAgainst<'a> =
    dyn FnMut(&mut crate::Cnn, &mut crate::Cnn) -> energy_prune::Result<(f64, f64)> + 'a;

/// [`closed_loop`] on any measured cost: `measure(compact, dense)` returns the
/// two networks' measured costs (e.g. [`measure_energy_against`] for joules per
/// inference on an energy counter).
#[allow(clippy::too_many_arguments)]
pub fn closed_loop_with(
    net: &mut crate::Cnn,
    dense: &crate::Cnn,
    fraction: f64,
    mut target: f64,
    tolerance: f64,
    rounds: usize,
    predict: &dyn Fn(&[usize]) -> energy_prune::Result<f64>,
    prune: &mut dyn FnMut(&mut crate::Cnn, f64) -> energy_prune::Result<()>,
    measure: &mut MeasureAgainst<'_>,
) -> energy_prune::Result<Vec<LoopRound>> {
    use energy_prune::network::PruningPlan;
    let mut out = Vec::new();
    let mut reference = dense.clone();
    for round in 1..=rounds.max(1) {
        match prune(net, target) {
            Ok(()) => {}
            // A target below what the model can reach: keep the last round.
            Err(energy_prune::Error::InfeasibleBudget { min_achievable, .. }) if round > 1 => {
                println!(
                    "closed loop round {round}: target {target:.4} is below the model's smallest cost {min_achievable:.4}; stopping with round {}",
                    round - 1
                );
                break;
            }
            Err(e) => return Err(e),
        }
        let plan = PruningPlan::from_network(&*net)?;
        let widths = plan.widths();
        let mut compact = net.compact(&plan)?;
        let (ms, dense_ms) = measure(&mut compact, &mut reference)?;
        let measured = ms / dense_ms;
        let predicted = predict(&widths)?;
        println!(
            "closed loop round {round}: target {target:.4}, predicted {predicted:.4}, measured {measured:.4} of dense (budget {fraction}), widths {widths:?}"
        );
        out.push(LoopRound {
            target,
            predicted,
            measured,
            ms,
            widths,
        });
        let over_measured = measured > fraction * (1.0 + tolerance);
        // Pruning may end its epochs before the model's cost meets the target.
        let over_model = predicted > target * (1.0 + 1e-9);
        if !over_measured && !over_model {
            break;
        }
        if over_measured {
            // Tighten from what the network costs now on the model (another budget
            // may have kept it below the old target), by the observed ratio.
            target = target.min(predicted) * fraction / measured;
        }
    }
    Ok(out)
}
