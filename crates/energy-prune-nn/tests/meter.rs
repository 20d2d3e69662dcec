//! Measured energy without hardware: a simulated powercap tree (counter files
//! written by the test, advanced by an idle thread and by the workload, wrapping
//! around), the RAPL counter's errors, the idle subtraction, and the calibration
//! fitted end to end on a simulated device whose energy is a known function of
//! the widths.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use energy_prune::Error;
use energy_prune::arch::zoo;
use energy_prune::energy::CostOracle;
use energy_prune::energy::{
    Bilinear, FitOptions, ModelOracle, ProfileSet, Protocol, SystolicArray, SystolicConfig,
    WidthCostModel, WidthSampler, measure_interleaved,
};
use energy_prune::network::Network;
use energy_prune_nn::meter::{
    EnergyCounter, EnergyMeter, EnergyOracle, MeterSettings, RaplCounter, RaplDomain,
    net_joules_per_inference, rapl_delta,
};

/// The tests measure time and this process's CPU time: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tree(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ep-rapl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn zone(root: &Path, id: &str, name: &str, energy: u64, range: u64) -> PathBuf {
    let d = root.join(format!("intel-rapl:{id}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
    std::fs::write(d.join("max_energy_range_uj"), format!("{range}\n")).unwrap();
    std::fs::write(d.join("energy_uj"), format!("{energy}\n")).unwrap();
    d
}

/// Write a counter as sysfs shows it: the whole value at once (a temporary file
/// and a rename, so that a concurrent read never sees a half-written file).
fn set(zone: &Path, energy: u64) {
    let tmp = zone.join("energy_uj.tmp");
    std::fs::write(&tmp, format!("{energy}\n")).unwrap();
    std::fs::rename(&tmp, zone.join("energy_uj")).unwrap();
}

#[test]
fn rapl_sums_sockets_and_undoes_wrap_arounds_to_the_microjoule() {
    let _one_at_a_time = serial();
    let root = tree("wrap");
    let p0 = zone(&root, "0", "package-0", 999_990, 1_000_000);
    let p1 = zone(&root, "1", "package-1", 5, 1_000_000);
    let core = zone(&root, "0:0", "core", 100, 1_000_000);
    let dram = zone(&root, "1:0", "dram", 7, 2_000_000);
    let mut pkg = RaplCounter::open(&root, &[RaplDomain::Package]).unwrap();
    assert_eq!(pkg.describe(), "RAPL package-0 + package-1");
    assert_eq!(pkg.joules().unwrap(), 0.0);
    // Socket 0 wraps: 999 990 -> (1 000 000 = 0) -> 10 is 20 uJ; socket 1 adds 30.
    set(&p0, 10);
    set(&p1, 35);
    assert_eq!((pkg.joules().unwrap() * 1e6).round(), 50.0);
    set(&p0, 999_999);
    assert_eq!((pkg.joules().unwrap() * 1e6).round(), 50.0 + 999_989.0);
    assert_eq!(rapl_delta(999_990, 10, 1_000_000), 20);
    assert_eq!(rapl_delta(10, 10, 1_000_000), 0);
    // Several domains at once.
    let mut both = RaplCounter::open(&root, &[RaplDomain::Core, RaplDomain::Dram]).unwrap();
    set(&core, 150);
    set(&dram, 1);
    // DRAM wrapped at its own range: 2 000 000 - 7 + 1.
    assert_eq!((both.joules().unwrap() * 1e6).round(), 50.0 + 1_999_994.0);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn rapl_errors_say_what_is_wrong() {
    let _one_at_a_time = serial();
    let root = tree("errors");
    let missing = RaplCounter::open(&root.join("none"), &[RaplDomain::Package]).unwrap_err();
    assert!(
        missing.to_string().contains("no powercap tree"),
        "{missing}"
    );
    let p0 = zone(&root, "0", "package-0", 10, 1_000_000);
    let e = RaplCounter::open(&root, &[RaplDomain::Psys]).unwrap_err();
    assert!(e.to_string().contains("[\"package-0\"]"), "{e}");
    std::fs::write(p0.join("energy_uj"), "twelve\n").unwrap();
    let e = RaplCounter::open(&root, &[RaplDomain::Package]).unwrap_err();
    assert!(matches!(e, Error::CorruptData { .. }), "{e}");
    set(&p0, 2_000_000);
    let e = RaplCounter::open(&root, &[RaplDomain::Package]).unwrap_err();
    assert!(e.to_string().contains("outside its range"), "{e}");
    assert!(RaplDomain::parse("gpu").is_err());
    assert_eq!(RaplDomain::parse("dram").unwrap(), RaplDomain::Dram);
    // A counter that never advances: frozen, after the longest window.
    set(&p0, 10);
    let counter = RaplCounter::open(&root, &[RaplDomain::Package]).unwrap();
    let settings = MeterSettings {
        idle_window: Duration::from_millis(20),
        min_window: Some(Duration::from_millis(5)),
        max_window: Duration::from_millis(60),
        ..MeterSettings::default()
    };
    let mut meter = EnergyMeter::new(counter, settings).unwrap();
    assert_eq!(meter.idle_watts(), 0.0);
    let mut oracle = EnergyOracle {
        meter: &mut meter,
        workload: |_: &[usize]| Ok(1),
    };
    let e = oracle.measure(&[1, 2]).unwrap_err();
    assert!(e.to_string().contains("frozen"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn idle_power_is_subtracted_exactly() {
    let _one_at_a_time = serial();
    // 2.5 J counted in 2 s at 1 W idle over 5 inferences: 0.1 J each.
    assert_eq!(net_joules_per_inference(2.5, 2.0, 1.0, 5).unwrap(), 0.1);
    assert_eq!(
        net_joules_per_inference(3.000_007, 2.0, 1.5, 1).unwrap(),
        3.000_007 - 3.0
    );
    // Lost in the idle power, or no inference: errors that say so.
    let e = net_joules_per_inference(1.0, 2.0, 1.0, 5).unwrap_err();
    assert!(e.to_string().contains("does not stand out"), "{e}");
    assert!(net_joules_per_inference(1.0, 1.0, 0.0, 0).is_err());
}

/// A simulated machine: one package counter (wrapping every 50 J) advanced by an
/// idle thread at `idle_watts` and by every inference of the workload.
struct Device {
    zone: PathBuf,
    state: Arc<Mutex<Counter>>,
    stop: Arc<AtomicBool>,
    idle: Option<std::thread::JoinHandle<()>>,
}

/// The simulated counter: its value, the fraction of a microjoule carried, the idle
/// power and when idle energy was last added.
struct Counter {
    value: u64,
    carry: f64,
    idle_watts: f64,
    last: Instant,
}

const RANGE: u64 = 50_000_000;

impl Device {
    fn start(root: &Path, idle_watts: f64) -> Self {
        let zone = zone(root, "0", "package-0", RANGE - 1_000, RANGE);
        let state = Arc::new(Mutex::new(Counter {
            value: RANGE - 1_000,
            carry: 0.0,
            idle_watts,
            last: Instant::now(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (z, s, st) = (zone.clone(), state.clone(), stop.clone());
        // Idle energy accrues with wall time, as a hardware counter's does: the
        // ticking thread and every workload call bring it up to date, so a starved
        // thread on a loaded machine does not make the counter lag.
        let idle = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(500));
                Self::add(&z, &s, 0.0);
            }
        });
        Self {
            zone,
            state,
            stop,
            idle: Some(idle),
        }
    }

    /// Add the idle energy since the last addition and `uj` microjoules (fractions
    /// carried), and write the counter, wrapping.
    fn add(zone: &Path, state: &Mutex<Counter>, uj: f64) {
        let mut s = state.lock().unwrap();
        let now = Instant::now();
        let idle = s.idle_watts * (now - s.last).as_secs_f64() * 1e6;
        s.last = now;
        let total = s.carry + idle + uj;
        let whole = total.floor();
        s.carry = total - whole;
        s.value = (s.value + whole as u64) % RANGE;
        set(zone, s.value);
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.idle.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn energy_calibration_recovers_a_simulated_device() {
    let _one_at_a_time = serial();
    let arch = zoo::lenet5().unwrap();
    // The device's energy per inference: a bilinear function of the widths (fitted
    // to the systolic model, scaled to about 2 mJ for the dense network), with 2 %
    // noise per inference.
    let systolic = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut exact = ModelOracle(&systolic);
    let mut sampler = WidthSampler::new(&arch, 7);
    let mut seed = ProfileSet::new(arch.widths().len());
    for _ in 0..80 {
        let w = sampler.sample();
        let c = exact.measure(&w).unwrap();
        seed.push(w, c).unwrap();
    }
    let truth = Bilinear::fit(&arch, &seed, &FitOptions::default())
        .unwrap()
        .model;
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    // 20 mJ per dense inference (20 W for 1 ms): even the smallest configurations
    // stand well out of the 0.05 W idle power and of the error of its estimate.
    let scale = 20_000.0 / truth.cost_of_widths(&full).unwrap();
    let root = tree("device");
    let device = Device::start(&root, 0.05);
    let counter = RaplCounter::open(&root, &[RaplDomain::Package]).unwrap();
    let (zone, state) = (device.zone.clone(), device.state.clone());
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    let workload = |w: &[usize]| -> energy_prune::Result<usize> {
        // One inference: 1 ms, the function's energy times 1 +- 2 %.
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let u = (noise >> 11) as f64 / (1u64 << 53) as f64;
        let uj = scale * truth.cost_of_widths(w)? * (1.0 + 0.04 * (u - 0.5) * 2.0 / 2.0);
        std::thread::sleep(Duration::from_millis(1));
        Device::add(&zone, &state, uj);
        Ok(1)
    };
    let settings = MeterSettings {
        idle_window: Duration::from_millis(200),
        min_window: Some(Duration::from_millis(25)),
        ..MeterSettings::default()
    };
    let mut meter = EnergyMeter::new(counter, settings).unwrap();
    let idle = meter.idle_watts();
    let mut oracle = EnergyOracle {
        meter: &mut meter,
        workload,
    };
    assert!((idle - 0.05).abs() < 0.01, "idle {idle} W");
    let configs: Vec<Vec<usize>> = (0..40).map(|_| sampler.sample()).collect();
    // The median: the idle subtraction's error is symmetric, so the minimum (the
    // protocol's choice on a busy machine, right for latency) would bias energy low.
    let protocol = Protocol {
        warmup_passes: 0,
        repeats: 5,
        statistic: energy_prune::energy::Statistic::Median,
        noisy_statistic: None,
        ..Protocol::default()
    };
    let run = measure_interleaved(&mut oracle, &configs, &protocol).unwrap();
    let fit = Bilinear::fit(&arch, &run.profile, &FitOptions::default()).unwrap();
    let mrae = fit.report.validation.mrae;
    eprintln!(
        "simulated device: idle {idle:.4} W, noise median cv {:.4}, validation MRAE {:.4}",
        run.noise.median_cv, mrae
    );
    assert!(mrae <= 0.02, "validation MRAE {mrae}");
    // Against the truth on fresh widths.
    for _ in 0..20 {
        let w = sampler.sample();
        let want = scale * truth.cost_of_widths(&w).unwrap() * 1e-6;
        let got = fit.model.cost_of_widths(&w).unwrap();
        assert!(
            (got - want).abs() <= 0.03 * want,
            "{got} J vs {want} J at {w:?}"
        );
    }
    drop(device);
    let _ = std::fs::remove_dir_all(&root);
}

/// A software counter: 10 W times this process's CPU time (`/proc/self/stat`,
/// clock ticks of 10 ms): coarse like a GPU's counter, and idle near 0 W.
struct CpuTimeCounter;

impl EnergyCounter for CpuTimeCounter {
    fn joules(&mut self) -> energy_prune::Result<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat")
            .map_err(|e| Error::io(Path::new("/proc/self/stat"), e))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        Ok(10.0 * ticks / 100.0)
    }
    fn resolution(&self) -> f64 {
        0.1
    }
    fn update_interval(&self) -> Duration {
        Duration::from_millis(10)
    }
    fn describe(&self) -> String {
        "10 W x CPU time".into()
    }
}

/// The whole energy calibration (networks and layers alone, bilinear models and
/// the layer table) runs on any counter; on CPU time it fits as well as a latency
/// calibration would.
#[test]
fn energy_calibration_runs_on_a_coarse_counter() {
    let _one_at_a_time = serial();
    if !Path::new("/proc/self/stat").exists() {
        return;
    }
    let arch = energy_prune_nn::Cnn::lenet5(0)
        .unwrap()
        .architecture()
        .clone();
    let settings = MeterSettings {
        idle_window: Duration::from_millis(100),
        min_window: Some(Duration::from_millis(30)),
        min_ticks: 4.0,
        ..MeterSettings::default()
    };
    let mut meter = EnergyMeter::new(CpuTimeCounter, settings).unwrap();
    let cal = energy_prune_nn::workflow::calibrate_energy(
        &arch,
        (1, 32, 32),
        &energy_prune_nn::Cnn::lenet5_specs(),
        &mut meter,
        &energy_prune_nn::workflow::CalibrationSettings {
            samples: 16,
            min_fraction: 0.25,
            batch: 16,
            repeats: 2,
            grid: 2,
            seed: 3,
            statistic: energy_prune::energy::Statistic::Median,
        },
    )
    .unwrap();
    assert_eq!(cal.models.len(), 3);
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    let dense = cal.chosen.cost_of_widths(&full).unwrap();
    assert!(dense > 0.0 && dense < 1.0, "{dense} J per inference");
    let best = cal
        .models
        .iter()
        .map(|m| m.2.validation.mrae)
        .fold(f64::INFINITY, f64::min);
    eprintln!("CPU-time counter: best validation MRAE {best:.3}");
    assert!(best < 0.5, "{best}");
}

/// The closed loop's energy measurement: a network with a quarter of the
/// channels costs clearly less per inference than the dense one.
#[test]
fn energy_of_a_narrow_network_is_measured_against_the_dense_one() {
    let _one_at_a_time = serial();
    if !Path::new("/proc/self/stat").exists() {
        return;
    }
    let settings = MeterSettings {
        idle_window: Duration::from_millis(50),
        min_window: Some(Duration::from_millis(40)),
        min_ticks: 4.0,
        ..MeterSettings::default()
    };
    let mut meter = EnergyMeter::new(CpuTimeCounter, settings).unwrap();
    let mut dense = energy_prune_nn::Cnn::lenet5(0).unwrap();
    let specs = energy_prune_nn::Cnn::lenet5_specs();
    let oracle = energy_prune_nn::LatencyOracle::new((1, 32, 32), &specs).unwrap();
    let narrow = oracle.narrow_specs(&[1, 2, 4, 30, 21, 10]).unwrap();
    let mut small = energy_prune_nn::Cnn::new((1, 32, 32), &narrow, 0).unwrap();
    let (j_small, j_dense) =
        energy_prune_nn::workflow::measure_energy_against(&mut meter, &mut small, &mut dense, 3)
            .unwrap();
    assert!(
        j_small > 0.0 && j_small < 0.8 * j_dense,
        "{j_small} J vs {j_dense} J"
    );
}

/// A fake GPU board as NVML shows it: a millijoule counter refreshed every 20 ms
/// (energy = 30 W idle plus 10 mJ per inference, both known exactly).
struct FakeBoard {
    start: Instant,
    inferences: Arc<Mutex<u64>>,
}

impl EnergyCounter for FakeBoard {
    fn joules(&mut self) -> energy_prune::Result<f64> {
        // The board's value as of its last 20 ms refresh, in whole millijoules.
        let t = self.start.elapsed().as_secs_f64();
        let refreshed = (t / 0.02).floor() * 0.02;
        let n = *self.inferences.lock().unwrap() as f64;
        Ok(((30.0 * refreshed + 0.010 * n) * 1e3).floor() * 1e-3)
    }
    fn resolution(&self) -> f64 {
        1e-3
    }
    fn update_interval(&self) -> Duration {
        Duration::from_millis(20)
    }
    fn describe(&self) -> String {
        "fake board".into()
    }
}

#[test]
fn a_coarse_board_counter_gives_joules_per_inference() {
    let _one_at_a_time = serial();
    let inferences = Arc::new(Mutex::new(0u64));
    let board = FakeBoard {
        start: Instant::now(),
        inferences: inferences.clone(),
    };
    let settings = MeterSettings {
        idle_window: Duration::from_millis(400),
        min_window: Some(Duration::from_millis(400)),
        ..MeterSettings::default()
    };
    let mut meter = EnergyMeter::new(board, settings).unwrap();
    assert!(
        (meter.idle_watts() - 30.0).abs() < 2.0,
        "{}",
        meter.idle_watts()
    );
    let sample = meter
        .measure(|| {
            std::thread::sleep(Duration::from_millis(1));
            *inferences.lock().unwrap() += 1;
            Ok(1)
        })
        .unwrap();
    // The idle estimate and the 20 ms refresh are the error: a few percent.
    let j = sample.joules_per_inference;
    assert!(
        (j - 0.010).abs() < 0.1 * 0.010,
        "{j} J per inference ({sample:?})"
    );
    assert!(
        sample.counted_joules >= 1.0,
        "at least 1 000 counter steps: {sample:?}"
    );
}
