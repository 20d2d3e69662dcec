//! Measured energy: cumulative energy counters of the machine ([`RaplCounter`] on
//! Linux powercap, [`NvmlCounter`] on NVIDIA GPUs with the `nvml` feature, or any
//! [`EnergyCounter`]) turned into a [`CostOracle`] that gives joules per inference
//! of a workload at given widths ([`EnergyOracle`]), so that the calibration
//! ([`measure_interleaved`](energy_prune::energy::measure_interleaved) and the
//! fits) runs on energy as it does on latency.
//!
//! # What one measurement is
//! The workload (a closure that runs inferences of the network narrowed to the
//! widths and returns how many it ran) is repeated until the window is long enough
//! for the counter: at least `min_window` (by default 200 counter updates, at least
//! 0.2 s) **and** at least `min_ticks` counter resolutions of energy (1 000 by
//! default: 0.1 % quantisation). Then
//!
//! ```text
//! joules per inference = (E_after - E_before - P_idle * seconds) / inferences
//! ```
//!
//! where `P_idle` is the power measured over `idle_window` with nothing running,
//! before the first measurement ([`EnergyMeter::idle_watts`], reported apart).
//! Counters are whole-package or whole-board: other processes' energy is in them
//! (the measurement protocol's interleaved repeats and robust statistic handle
//! the disturbance). A counter that does not advance over a full window is an
//! error (frozen or wrong domain), as is a net energy of 0 or less (the workload
//! is lost in the idle power: lengthen the window or batch more inferences), or
//! an average power above 100 kW.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use energy_prune::energy::CostOracle;
use energy_prune::error::{Error, Result};

/// A cumulative energy counter of the machine.
pub trait EnergyCounter {
    /// Joules since an arbitrary origin, never decreasing (wrap-arounds of the
    /// hardware counter are undone).
    ///
    /// # Errors
    /// Whatever reading the counter can fail with.
    fn joules(&mut self) -> Result<f64>;

    /// The smallest change of energy the counter reports, in joules.
    fn resolution(&self) -> f64;

    /// How often the counter is updated.
    fn update_interval(&self) -> Duration;

    /// What is measured (for reports): domains, device.
    fn describe(&self) -> String;
}

impl<C: EnergyCounter + ?Sized> EnergyCounter for Box<C> {
    fn joules(&mut self) -> Result<f64> {
        (**self).joules()
    }
    fn resolution(&self) -> f64 {
        (**self).resolution()
    }
    fn update_interval(&self) -> Duration {
        (**self).update_interval()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A RAPL domain of the powercap tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaplDomain {
    /// A whole socket (`package-N`), every socket summed.
    Package,
    /// The cores of every socket.
    Core,
    /// The uncore (integrated GPU) of every socket.
    Uncore,
    /// The memory of every socket.
    Dram,
    /// The whole platform (`psys`), where the firmware reports it.
    Psys,
}

impl RaplDomain {
    /// The zone name the kernel gives it (`package` matches `package-0`, ...).
    pub fn zone_name(self) -> &'static str {
        match self {
            RaplDomain::Package => "package",
            RaplDomain::Core => "core",
            RaplDomain::Uncore => "uncore",
            RaplDomain::Dram => "dram",
            RaplDomain::Psys => "psys",
        }
    }

    /// Parse `package`, `core`, `uncore`, `dram` or `psys`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for another name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "package" => RaplDomain::Package,
            "core" => RaplDomain::Core,
            "uncore" => RaplDomain::Uncore,
            "dram" => RaplDomain::Dram,
            "psys" => RaplDomain::Psys,
            other => {
                return Err(Error::param(
                    "RAPL domain",
                    other,
                    "expected package, core, uncore, dram or psys",
                ));
            }
        })
    }
}

/// One counter file of the powercap tree.
#[derive(Debug)]
struct Zone {
    /// The zone's directory.
    dir: PathBuf,
    name: String,
    /// The counter wraps to 0 after this many microjoules.
    max_range_uj: u64,
    last_uj: u64,
    /// Microjoules accumulated over the reads so far (wraps undone).
    total_uj: u128,
}

/// The Linux powercap (RAPL) energy counters: `ROOT/intel-rapl:N/energy_uj`
/// (packages, `psys`) and `ROOT/intel-rapl:N:M/energy_uj` (their core, uncore and
/// DRAM subzones); AMD processors use the same tree since Linux 5.8. Counters are
/// in microjoules, updated about every millisecond, and wrap at
/// `max_energy_range_uj`; they are readable by root only since Linux 5.10 unless
/// read access is granted.
#[derive(Debug)]
pub struct RaplCounter {
    zones: Vec<Zone>,
}

/// The powercap tree of a Linux machine.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

/// The error of reading a counter file: a permission says how to grant it.
fn read_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                e.kind(),
                format!(
                    "read access denied (the RAPL counters are root-only since Linux 5.10): \
                     grant it with `sudo chmod a+r {}` (or a udev rule), or run as root",
                    path.display()
                ),
            ),
        }
    } else {
        Error::io(path, e)
    }
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path).map_err(|e| read_error(path, e))?;
    text.trim().parse().map_err(|_| Error::CorruptData {
        path: path.to_path_buf(),
        reason: format!(
            "expected a whole number of microjoules, found {:?}",
            text.trim()
        ),
    })
}

impl RaplCounter {
    /// The counters of `domains` (every socket's, summed) under `root` (normally
    /// [`POWERCAP_ROOT`]; tests point it at a directory of their own).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when `root` has no RAPL zones or lacks a domain (the
    /// message lists those present); [`Error::Io`] for a counter that cannot be
    /// read (with how to grant access when it is a permission), corrupt data for
    /// a counter that is not a number.
    pub fn open(root: &Path, domains: &[RaplDomain]) -> Result<Self> {
        let entries = std::fs::read_dir(root).map_err(|_| {
            Error::unsupported(
                format!(
                    "RAPL energy counters: no powercap tree at {}",
                    root.display()
                ),
                "this machine or kernel exposes no RAPL counters (a virtual machine, or a \
                 kernel without intel_rapl); measure latency instead, or use another counter",
            )
        })?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(file) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !file.starts_with("intel-rapl:") {
                continue;
            }
            let Ok(name) = std::fs::read_to_string(dir.join("name")) else {
                continue;
            };
            found.push((dir, name.trim().to_string()));
        }
        found.sort();
        if domains.is_empty() {
            return Err(Error::param(
                "RAPL domains",
                "[]",
                "name at least one domain",
            ));
        }
        let mut zones = Vec::new();
        for &d in domains {
            let want = d.zone_name();
            let matching: Vec<&(PathBuf, String)> = found
                .iter()
                .filter(|(_, n)| {
                    n == want || n.strip_prefix(want).is_some_and(|r| r.starts_with('-'))
                })
                .collect();
            if matching.is_empty() {
                let present: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
                return Err(Error::unsupported(
                    format!("the RAPL domain `{want}` under {}", root.display()),
                    format!("the zones present are {present:?}; choose one of them"),
                ));
            }
            for (dir, name) in matching {
                let max_range_uj = read_u64(&dir.join("max_energy_range_uj"))?;
                let last_uj = read_u64(&dir.join("energy_uj"))?;
                if max_range_uj == 0 || last_uj > max_range_uj {
                    return Err(Error::CorruptData {
                        path: dir.join("energy_uj"),
                        reason: format!(
                            "counter {last_uj} outside its range 0..={max_range_uj} microjoules"
                        ),
                    });
                }
                zones.push(Zone {
                    dir: dir.clone(),
                    name: name.clone(),
                    max_range_uj,
                    last_uj,
                    total_uj: 0,
                });
            }
        }
        Ok(Self { zones })
    }
}

/// The microjoules a counter advanced from `last` to `now`, one wrap at
/// `max_range` undone: `now - last`, or `max_range - last + now` when it wrapped.
pub fn rapl_delta(last: u64, now: u64, max_range: u64) -> u64 {
    if now >= last {
        now - last
    } else {
        max_range.saturating_sub(last) + now
    }
}

impl EnergyCounter for RaplCounter {
    fn joules(&mut self) -> Result<f64> {
        let mut total = 0u128;
        for z in &mut self.zones {
            let now = read_u64(&z.dir.join("energy_uj"))?;
            if now > z.max_range_uj {
                return Err(Error::CorruptData {
                    path: z.dir.join("energy_uj"),
                    reason: format!("counter {now} above its range {}", z.max_range_uj),
                });
            }
            z.total_uj += u128::from(rapl_delta(z.last_uj, now, z.max_range_uj));
            z.last_uj = now;
            total += z.total_uj;
        }
        Ok(total as f64 * 1e-6)
    }

    fn resolution(&self) -> f64 {
        1e-6
    }

    fn update_interval(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.zones.iter().map(|z| z.name.as_str()).collect();
        format!("RAPL {}", names.join(" + "))
    }
}

/// Settings of [`EnergyOracle`].
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `idle_window` | 1 s | > 0 | nothing runs while the idle power is measured |
/// | `min_window` | None | | shortest measurement; None: 200 counter updates, at least 0.2 s |
/// | `min_ticks` | 1000 | >= 1 | least energy of a window, in counter resolutions |
/// | `max_window` | 30 s | > min | a counter that has not advanced by then is frozen |
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSettings {
    /// Length of the idle measurement.
    pub idle_window: Duration,
    /// Shortest measurement window (None: derived from the counter).
    pub min_window: Option<Duration>,
    /// Least energy per window, in counter resolutions.
    pub min_ticks: f64,
    /// Longest measurement window.
    pub max_window: Duration,
}

impl Default for MeterSettings {
    fn default() -> Self {
        Self {
            idle_window: Duration::from_secs(1),
            min_window: None,
            min_ticks: 1000.0,
            max_window: Duration::from_secs(30),
        }
    }
}

/// One measurement of [`EnergyOracle`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergySample {
    /// Net joules per inference (idle subtracted).
    pub joules_per_inference: f64,
    /// Joules the counter advanced over the window.
    pub counted_joules: f64,
    /// Idle joules subtracted.
    pub idle_joules: f64,
    /// Length of the window.
    pub seconds: f64,
    /// Inferences run in it.
    pub inferences: usize,
}

/// Net joules per inference: `(counted - idle_watts * seconds) / inferences`.
///
/// # Errors
/// [`Error::InvalidParameter`] when no inference ran, or when the net energy is
/// not positive (the workload is lost in the idle power).
pub fn net_joules_per_inference(
    counted: f64,
    seconds: f64,
    idle_watts: f64,
    inferences: usize,
) -> Result<f64> {
    if inferences == 0 {
        return Err(Error::param(
            "inferences",
            0,
            "the workload ran no inference",
        ));
    }
    let net = counted - idle_watts * seconds;
    if !(net > 0.0 && net.is_finite()) {
        return Err(Error::param(
            "measured energy",
            format!("{counted:.6} J in {seconds:.3} s with {idle_watts:.3} W idle"),
            "the workload's energy does not stand out of the idle power; run more \
             inferences per call, lengthen the window, or choose a narrower domain",
        ));
    }
    Ok(net / inferences as f64)
}

/// An energy counter with the idle power measured: every [`EnergyMeter::measure`]
/// runs a workload over a window long enough for the counter and returns its
/// joules per inference, idle subtracted (see the [module docs](self)).
pub struct EnergyMeter<C> {
    counter: C,
    settings: MeterSettings,
    idle_watts: f64,
    last: Option<EnergySample>,
}

impl<C> std::fmt::Debug for EnergyMeter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergyMeter")
            .field("idle_watts", &self.idle_watts)
            .field("settings", &self.settings)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl<C: EnergyCounter> EnergyMeter<C> {
    /// Measure the idle power over `settings.idle_window` (nothing else should run).
    ///
    /// # Errors
    /// Bad settings; the counter's errors; an idle power that is negative,
    /// non-finite or above 100 kW.
    pub fn new(mut counter: C, settings: MeterSettings) -> Result<Self> {
        if settings.idle_window.is_zero()
            || !(settings.min_ticks >= 1.0 && settings.min_ticks.is_finite())
            || settings.max_window <= settings.min_window.unwrap_or_default()
        {
            return Err(Error::param(
                "meter settings",
                format!("{settings:?}"),
                "idle_window > 0, min_ticks >= 1, max_window > min_window",
            ));
        }
        let t = Instant::now();
        let e0 = counter.joules()?;
        std::thread::sleep(settings.idle_window);
        let e1 = counter.joules()?;
        let idle_watts = (e1 - e0) / t.elapsed().as_secs_f64();
        if !(idle_watts.is_finite() && (0.0..=1e5).contains(&idle_watts)) {
            return Err(Error::param(
                "idle power",
                format!("{idle_watts} W"),
                "an implausible reading: check the counter and its domain",
            ));
        }
        Ok(Self {
            counter,
            settings,
            idle_watts,
            last: None,
        })
    }

    /// The idle power subtracted from every measurement, in watts.
    pub fn idle_watts(&self) -> f64 {
        self.idle_watts
    }

    /// The last measurement.
    pub fn last(&self) -> Option<EnergySample> {
        self.last
    }

    /// What the counter measures.
    pub fn describe(&self) -> String {
        self.counter.describe()
    }

    /// The shortest window: the settings', or 200 counter updates (at least 0.2 s).
    pub fn min_window(&self) -> Duration {
        self.settings.min_window.unwrap_or_else(|| {
            (self.counter.update_interval() * 200).max(Duration::from_millis(200))
        })
    }

    /// Run `workload` (which runs some inferences and returns how many) until the
    /// window is long enough, and return the window's figures.
    ///
    /// # Errors
    /// The workload's and the counter's errors; a counter frozen over the longest
    /// window; an implausible power; a net energy that is not positive.
    pub fn measure(&mut self, mut workload: impl FnMut() -> Result<usize>) -> Result<EnergySample> {
        let min = self.min_window();
        let least = self.settings.min_ticks * self.counter.resolution();
        let t = Instant::now();
        let e0 = self.counter.joules()?;
        let mut inferences = 0usize;
        let (counted, seconds) = loop {
            inferences += workload()?;
            let elapsed = t.elapsed();
            let counted = self.counter.joules()? - e0;
            if elapsed >= min && counted >= least {
                break (counted, elapsed.as_secs_f64());
            }
            if elapsed >= self.settings.max_window {
                return Err(Error::param(
                    "energy counter",
                    format!(
                        "{} advanced {counted:.6} J in {:.1} s",
                        self.counter.describe(),
                        elapsed.as_secs_f64()
                    ),
                    "the counter is frozen or reads another domain than the one running the \
                     workload",
                ));
            }
        };
        let watts = counted / seconds;
        if !(watts.is_finite() && watts <= 1e5) {
            return Err(Error::param(
                "measured power",
                format!("{watts} W"),
                "an implausible reading: check the counter and its domain",
            ));
        }
        let sample = EnergySample {
            joules_per_inference: net_joules_per_inference(
                counted,
                seconds,
                self.idle_watts,
                inferences,
            )?,
            counted_joules: counted,
            idle_joules: self.idle_watts * seconds,
            seconds,
            inferences,
        };
        self.last = Some(sample);
        Ok(sample)
    }
}

/// A [`CostOracle`] of measured energy: joules per inference of `workload(widths)`
/// on a meter (the workload runs some inferences at the widths and returns how
/// many).
pub struct EnergyOracle<'m, C, W> {
    /// The meter.
    pub meter: &'m mut EnergyMeter<C>,
    /// The workload.
    pub workload: W,
}

impl<C: EnergyCounter, W: FnMut(&[usize]) -> Result<usize>> CostOracle for EnergyOracle<'_, C, W> {
    fn measure(&mut self, widths: &[usize]) -> Result<f64> {
        let w = &mut self.workload;
        self.meter
            .measure(|| w(widths))
            .map(|s| s.joules_per_inference)
    }
}

/// A [`LayerOracle`](energy_prune::energy::LayerOracle) of measured energy:
/// joules per inference of `workload(layer, c_in, c_out)` on a meter.
pub struct LayerEnergyOracle<'m, C, W> {
    /// The meter.
    pub meter: &'m mut EnergyMeter<C>,
    /// The workload.
    pub workload: W,
}

impl<C: EnergyCounter, W: FnMut(usize, usize, usize) -> Result<usize>>
    energy_prune::energy::LayerOracle for LayerEnergyOracle<'_, C, W>
{
    fn measure_layer(&mut self, l: usize, c: usize, d: usize) -> Result<f64> {
        let w = &mut self.workload;
        self.meter
            .measure(|| w(l, c, d))
            .map(|s| s.joules_per_inference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denied_counter_says_how_to_grant_access() {
        // Tests run as root, where file permissions do not apply: the error itself.
        let p = Path::new("/sys/class/powercap/intel-rapl:0/energy_uj");
        let e = read_error(
            p,
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("sudo chmod a+r /sys/class/powercap/intel-rapl:0/energy_uj"),
            "{msg}"
        );
        assert!(msg.contains("Linux 5.10"), "{msg}");
        let other = read_error(p, std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!other.to_string().contains("chmod"));
    }
}

#[cfg(feature = "nvml")]
pub use nvml::NvmlCounter;

#[cfg(feature = "nvml")]
mod nvml {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use nvml_wrapper::Nvml;

    use super::EnergyCounter;
    use energy_prune::error::{Error, Result};

    fn nvml_error(what: &str, e: impl std::fmt::Display) -> Error {
        Error::unsupported(
            format!("NVML: {what} ({e})"),
            "install the NVIDIA driver (libnvidia-ml.so), check the device index, or measure \
             latency instead",
        )
    }

    /// How an [`NvmlCounter`] measures.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum NvmlMethod {
        /// The board's total energy counter (Volta and later), millijoules.
        EnergyCounter,
        /// Power samples every 10 ms, integrated (older boards).
        IntegratedPower,
    }

    /// The energy of one NVIDIA GPU through NVML (loaded at run time): its total
    /// energy counter where the board has one, else its power sampled every 10 ms
    /// by a thread and integrated ([`NvmlCounter::method`] says which).
    pub struct NvmlCounter {
        nvml: Arc<Nvml>,
        index: u32,
        method: NvmlMethod,
        origin_mj: u64,
        /// Integrated joules and the sampler's stop flag (power method).
        integrated: Arc<Mutex<f64>>,
        stop: Arc<AtomicBool>,
    }

    impl std::fmt::Debug for NvmlCounter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("NvmlCounter")
                .field("index", &self.index)
                .field("method", &self.method)
                .finish_non_exhaustive()
        }
    }

    impl NvmlCounter {
        /// Open GPU `index` (NVML's order, the PCI order).
        ///
        /// # Errors
        /// [`Error::Unsupported`] when NVML cannot be loaded, the device does not
        /// exist, or it reports neither energy nor power.
        pub fn open(index: u32) -> Result<Self> {
            let nvml = Arc::new(Nvml::init().map_err(|e| nvml_error("cannot load NVML", e))?);
            let device = nvml
                .device_by_index(index)
                .map_err(|e| nvml_error(&format!("no device {index}"), e))?;
            let (method, origin_mj) = match device.total_energy_consumption() {
                Ok(mj) => (NvmlMethod::EnergyCounter, mj),
                Err(_) => {
                    device.power_usage().map_err(|e| {
                        nvml_error("the device reports neither energy nor power", e)
                    })?;
                    (NvmlMethod::IntegratedPower, 0)
                }
            };
            let integrated = Arc::new(Mutex::new(0.0));
            let stop = Arc::new(AtomicBool::new(false));
            if method == NvmlMethod::IntegratedPower {
                let (nvml, integrated, stop) = (nvml.clone(), integrated.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                        let watts = nvml
                            .device_by_index(index)
                            .and_then(|d| d.power_usage())
                            .map_or(0.0, |mw| f64::from(mw) / 1000.0);
                        let now = Instant::now();
                        if let Ok(mut j) = integrated.lock() {
                            *j += watts * (now - last).as_secs_f64();
                        }
                        last = now;
                    }
                });
            }
            Ok(Self {
                nvml,
                index,
                method,
                origin_mj,
                integrated,
                stop,
            })
        }

        /// The method in use.
        pub fn method(&self) -> NvmlMethod {
            self.method
        }
    }

    impl Drop for NvmlCounter {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    impl EnergyCounter for NvmlCounter {
        fn joules(&mut self) -> Result<f64> {
            match self.method {
                NvmlMethod::EnergyCounter => {
                    let mj = self
                        .nvml
                        .device_by_index(self.index)
                        .and_then(|d| d.total_energy_consumption())
                        .map_err(|e| nvml_error("reading the energy counter", e))?;
                    Ok(mj.saturating_sub(self.origin_mj) as f64 * 1e-3)
                }
                NvmlMethod::IntegratedPower => Ok(self.integrated.lock().map_or(0.0, |j| *j)),
            }
        }

        fn resolution(&self) -> f64 {
            1e-3
        }

        fn update_interval(&self) -> Duration {
            match self.method {
                // The board refreshes its counter far more slowly than RAPL.
                NvmlMethod::EnergyCounter => Duration::from_millis(20),
                NvmlMethod::IntegratedPower => Duration::from_millis(10),
            }
        }

        fn describe(&self) -> String {
            format!("NVML GPU {} ({:?})", self.index, self.method)
        }
    }
}
