//! A measurement protocol for black-box costs on a real, noisy machine, usable with
//! any [`CostOracle`] (one call = one measurement):
//!
//! 1. **warm-up**: `warmup_passes` untimed round-robin passes over every
//!    configuration (caches, frequency scaling, allocator);
//! 2. **interleaved repeats**: `repeats` round-robin passes, each measuring every
//!    configuration once, so that slow drift of the machine spreads over all
//!    configurations instead of biasing the ones measured during a slow spell;
//! 3. **robust statistic** per configuration ([`Statistic`]: a low quantile, a
//!    trimmed mean, the median or the minimum), with its dispersion recorded as the
//!    coefficient of variation `cv = sd / mean` of the repeats;
//! 4. **re-measurement**: configurations whose repeats disagree (`cv > max_cv`) get
//!    `repeats` more samples in further interleaved passes over just them, at most
//!    `remeasure_rounds` times;
//! 5. a **noise report** ([`NoiseReport`]): median and largest `cv`, how many
//!    configurations were re-measured and how many still disagree, and a warning
//!    when the machine is too noisy for the requested accuracy (median `cv` above
//!    `target_error`);
//! 6. on a **busy machine** (median `cv` above `noisy_above`, e.g. another process
//!    holding a core) the estimates use `noisy_statistic` (the minimum by default):
//!    other processes only ever slow a run down, so the fastest of many samples is
//!    the one least disturbed, while a quantile still mixes in the interference.
//!
//! ```
//! use energy_prune::arch::zoo;
//! use energy_prune::energy::{measure_interleaved, ModelOracle, Protocol, SystolicArray,
//!     SystolicConfig, WidthSampler};
//! # fn main() -> energy_prune::Result<()> {
//! let arch = zoo::lenet5()?;
//! let mut oracle = ModelOracle(SystolicArray::new(&arch, SystolicConfig::default())?);
//! let mut sampler = WidthSampler::new(&arch, 1);
//! let configs: Vec<Vec<usize>> = (0..20).map(|_| sampler.sample()).collect();
//! let run = measure_interleaved(&mut oracle, &configs, &Protocol::default())?;
//! assert_eq!(run.profile.len(), 20);
//! assert!(run.noise.median_cv < 1e-12); // an exact oracle has no noise
//! # Ok(()) }
//! ```

use super::profile::{CostOracle, ProfileSet};
use crate::error::{Error, Result};

/// The per-configuration statistic of the repeats.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Statistic {
    /// The `q`-quantile (`0 <= q <= 1`, linear interpolation): a low quantile such
    /// as 0.25 ignores slow outliers (interference) without trusting one lucky run.
    Quantile(f64),
    /// The mean after dropping the fraction `t` (`0 <= t < 0.5`) of samples at each
    /// end.
    TrimmedMean(f64),
    /// The median.
    Median,
    /// The fastest sample.
    Min,
}

impl Statistic {
    /// The statistic of `samples` (sorted in place; not empty).
    fn of(self, samples: &mut [f64]) -> f64 {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let quantile = |q: f64| {
            let pos = q * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            samples[lo] + (samples[hi] - samples[lo]) * (pos - lo as f64)
        };
        match self {
            Statistic::Quantile(q) => quantile(q),
            Statistic::Median => quantile(0.5),
            Statistic::Min => samples[0],
            Statistic::TrimmedMean(t) => {
                let cut = ((n as f64) * t).floor() as usize;
                let kept = &samples[cut..n - cut];
                kept.iter().sum::<f64>() / kept.len() as f64
            }
        }
    }
}

/// Settings of [`measure_interleaved`].
///
/// | field | default | range | purpose |
/// |---|---|---|---|
/// | `warmup_passes` | 1 | >= 0 | untimed round-robin passes first |
/// | `repeats` | 5 | >= 1 | timed round-robin passes |
/// | `statistic` | `Quantile(0.25)` | | per-configuration estimate |
/// | `max_cv` | 0.05 | > 0 | repeats with a larger coefficient of variation are re-measured |
/// | `remeasure_rounds` | 2 | >= 0 | most re-measurement rounds |
/// | `target_error` | Some(0.03) | > 0 | warn when the median `cv` exceeds it |
/// | `noisy_statistic` | Some(`Min`) | | estimate used on a busy machine (None: always `statistic`) |
/// | `noisy_above` | 0.06 | > 0 | median `cv` from which the machine counts as busy |
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Protocol {
    /// Untimed passes over every configuration before timing.
    pub warmup_passes: usize,
    /// Timed round-robin passes.
    pub repeats: usize,
    /// The per-configuration statistic.
    pub statistic: Statistic,
    /// Coefficient of variation above which a configuration is re-measured.
    pub max_cv: f64,
    /// Most re-measurement rounds.
    pub remeasure_rounds: usize,
    /// Accuracy the caller needs (relative); a noisier machine gets a warning.
    pub target_error: Option<f64>,
    /// The statistic used instead of `statistic` when the median coefficient of
    /// variation exceeds `noisy_above` (None: never switch).
    #[cfg_attr(feature = "serde", serde(default = "default_noisy_statistic"))]
    pub noisy_statistic: Option<Statistic>,
    /// Median coefficient of variation above which `noisy_statistic` is used.
    #[cfg_attr(feature = "serde", serde(default = "default_noisy_above"))]
    pub noisy_above: f64,
}

#[cfg(feature = "serde")]
fn default_noisy_statistic() -> Option<Statistic> {
    Some(Statistic::Min)
}

#[cfg(feature = "serde")]
fn default_noisy_above() -> f64 {
    0.06
}

impl Default for Protocol {
    fn default() -> Self {
        Self {
            warmup_passes: 1,
            repeats: 5,
            statistic: Statistic::Quantile(0.25),
            max_cv: 0.05,
            remeasure_rounds: 2,
            target_error: Some(0.03),
            noisy_statistic: Some(Statistic::Min),
            noisy_above: 0.06,
        }
    }
}

impl Protocol {
    /// Check every field against its range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.repeats == 0 {
            return Err(Error::param("repeats", 0, "must be >= 1"));
        }
        if !(self.max_cv.is_finite() && self.max_cv > 0.0) {
            return Err(Error::param(
                "max_cv",
                self.max_cv,
                "must be finite and > 0",
            ));
        }
        if let Some(t) = self.target_error
            && !(t.is_finite() && t > 0.0)
        {
            return Err(Error::param("target_error", t, "must be finite and > 0"));
        }
        if !(self.noisy_above.is_finite() && self.noisy_above > 0.0) {
            return Err(Error::param(
                "noisy_above",
                self.noisy_above,
                "must be finite and > 0",
            ));
        }
        std::iter::once(self.statistic)
            .chain(self.noisy_statistic)
            .try_for_each(|s| match s {
                Statistic::Quantile(q) if !(0.0..=1.0).contains(&q) => {
                    Err(Error::param("statistic quantile", q, "must be in [0, 1]"))
                }
                Statistic::TrimmedMean(t) if !(0.0..0.5).contains(&t) => {
                    Err(Error::param("statistic trim", t, "must be in [0, 0.5)"))
                }
                _ => Ok(()),
            })
    }
}

/// One configuration as measured.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Measured {
    /// The widths.
    pub widths: Vec<usize>,
    /// The protocol's estimate of its cost.
    pub cost: f64,
    /// Every timed sample, in the order taken.
    pub samples: Vec<f64>,
    /// Coefficient of variation of the samples (`sd / mean`).
    pub cv: f64,
    /// Re-measurement rounds it went through.
    pub remeasured: usize,
}

/// How noisy the measurements were.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NoiseReport {
    /// Configurations measured.
    pub configurations: usize,
    /// Oracle calls made (warm-up included).
    pub calls: usize,
    /// Median coefficient of variation over the configurations.
    pub median_cv: f64,
    /// Largest coefficient of variation.
    pub max_cv: f64,
    /// Configurations re-measured at least once.
    pub remeasured: usize,
    /// Configurations still above `max_cv` after the last round.
    pub unstable: usize,
    /// A warning for the user, when the machine was too noisy for `target_error`.
    pub warning: Option<String>,
    /// The statistic the estimates used (`noisy_statistic` on a busy machine).
    pub statistic: Statistic,
}

/// The result of [`measure_interleaved`].
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredSet {
    /// Widths and estimated costs, in the order of the configurations given.
    pub profile: ProfileSet,
    /// Every configuration with its samples and dispersion.
    pub measured: Vec<Measured>,
    /// The noise report.
    pub noise: NoiseReport,
}

fn cv(samples: &[f64]) -> f64 {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    if n < 2.0 || mean == 0.0 {
        return 0.0;
    }
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    var.sqrt() / mean
}

/// Measure every configuration of `configs` with `oracle` under `protocol`; see the
/// [module docs](self). Every configuration must have `oracle`'s number of widths
/// (the first one fixes it for the profile).
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad protocol or no configuration,
/// [`Error::ShapeMismatch`] for configurations of different lengths, and the
/// oracle's errors (a measurement that is not finite and positive is an error).
pub fn measure_interleaved<O: CostOracle + ?Sized>(
    oracle: &mut O,
    configs: &[Vec<usize>],
    protocol: &Protocol,
) -> Result<MeasuredSet> {
    protocol.validate()?;
    let Some(first) = configs.first() else {
        return Err(Error::param(
            "configurations",
            0,
            "give at least one configuration to measure",
        ));
    };
    if let Some(c) = configs.iter().find(|c| c.len() != first.len()) {
        return Err(Error::shape(
            "widths of a configuration",
            first.len(),
            c.len(),
        ));
    }
    let mut calls = 0usize;
    let mut call = |oracle: &mut O, w: &[usize]| -> Result<f64> {
        calls += 1;
        let v = oracle.measure(w)?;
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::param(
                "measurement",
                v,
                format!("the oracle returned a cost that is not finite and > 0 for {w:?}"),
            ));
        }
        Ok(v)
    };
    for _ in 0..protocol.warmup_passes {
        for c in configs {
            call(oracle, c)?;
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(protocol.repeats); configs.len()];
    for _ in 0..protocol.repeats {
        for (c, s) in configs.iter().zip(&mut samples) {
            s.push(call(oracle, c)?);
        }
    }
    let mut rounds = vec![0usize; configs.len()];
    for _ in 0..protocol.remeasure_rounds {
        let noisy: Vec<usize> = (0..configs.len())
            .filter(|&i| cv(&samples[i]) > protocol.max_cv)
            .collect();
        if noisy.is_empty() {
            break;
        }
        for _ in 0..protocol.repeats {
            for &i in &noisy {
                samples[i].push(call(oracle, &configs[i])?);
            }
        }
        for &i in &noisy {
            rounds[i] += 1;
        }
    }
    let cv_of: Vec<f64> = samples.iter().map(|s| cv(s)).collect();
    let mut cvs = cv_of.clone();
    cvs.sort_by(f64::total_cmp);
    let median_cv = cvs[cvs.len() / 2];
    let statistic = match protocol.noisy_statistic {
        Some(s) if median_cv > protocol.noisy_above => s,
        _ => protocol.statistic,
    };
    let mut profile = ProfileSet::new(first.len());
    let mut measured = Vec::with_capacity(configs.len());
    for (((c, s), r), cv) in configs.iter().zip(samples).zip(rounds).zip(cv_of) {
        let mut sorted = s.clone();
        let cost = statistic.of(&mut sorted);
        profile.push(c.clone(), cost)?;
        measured.push(Measured {
            widths: c.clone(),
            cost,
            cv,
            samples: s,
            remeasured: r,
        });
    }
    let warning = protocol.target_error.filter(|&t| median_cv > t).map(|t| {
        let switched = if statistic == protocol.statistic {
            String::new()
        } else {
            format!(" (estimates taken as {statistic:?} of each configuration's samples)")
        };
        format!(
            "the machine is too noisy for {:.1} % accuracy: repeats of one configuration vary by {:.1} % (median coefficient of variation){switched}; stop other work on the machine, pin threads, or raise the repeats",
            100.0 * t,
            100.0 * median_cv
        )
    });
    let noise = NoiseReport {
        configurations: configs.len(),
        calls,
        median_cv,
        max_cv: *cvs.last().unwrap_or(&0.0),
        remeasured: measured.iter().filter(|m| m.remeasured > 0).count(),
        unstable: measured.iter().filter(|m| m.cv > protocol.max_cv).count(),
        warning,
        statistic,
    };
    Ok(MeasuredSet {
        profile,
        measured,
        noise,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::zoo;
    use crate::energy::profile::WidthSampler;
    use crate::energy::{ModelOracle, SystolicArray, SystolicConfig, WidthCostModel};
    use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

    /// A noisy machine: the exact cost times a slow drift over the calls, plus
    /// multiplicative noise and rare slow spikes (interference), recording the order
    /// of the calls.
    struct Noisy {
        exact: ModelOracle<SystolicArray>,
        rng: ChaCha12Rng,
        calls: Vec<Vec<usize>>,
        noise: f64,
        spikes: f64,
        drift: f64,
    }

    impl CostOracle for Noisy {
        fn measure(&mut self, widths: &[usize]) -> Result<f64> {
            self.calls.push(widths.to_vec());
            let t = self.calls.len() as f64;
            let base = self.exact.measure(widths)?;
            let drift = 1.0 + self.drift * (t / 50.0).sin();
            let noise = 1.0 + self.noise * self.rng.random_range(-1.0..1.0);
            let spike = if self.rng.random_range(0.0..1.0) < self.spikes {
                1.5
            } else {
                1.0
            };
            Ok(base * drift * noise * spike)
        }
    }

    fn setup(noise: f64, spikes: f64, drift: f64) -> (Noisy, Vec<Vec<usize>>) {
        let arch = zoo::lenet5().unwrap();
        let model = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let mut sampler = WidthSampler::new(&arch, 3);
        let configs = (0..30).map(|_| sampler.sample()).collect();
        let oracle = Noisy {
            exact: ModelOracle(model),
            rng: ChaCha12Rng::seed_from_u64(9),
            calls: Vec::new(),
            noise,
            spikes,
            drift,
        };
        (oracle, configs)
    }

    fn mean_rel_error(run: &MeasuredSet, exact: &SystolicArray) -> f64 {
        run.measured
            .iter()
            .map(|m| {
                let e = exact.cost_of_widths(&m.widths).unwrap();
                (m.cost - e).abs() / e
            })
            .sum::<f64>()
            / run.measured.len() as f64
    }

    #[test]
    fn statistics_by_hand() {
        let mut s = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(Statistic::Median.of(&mut s), 3.0);
        assert_eq!(Statistic::Min.of(&mut s), 1.0);
        assert_eq!(Statistic::Quantile(0.25).of(&mut s), 2.0);
        assert_eq!(Statistic::Quantile(0.1).of(&mut s), 1.4);
        assert_eq!(Statistic::TrimmedMean(0.2).of(&mut s), 3.0);
        let mut t = [1.0, 1.0, 1.0, 100.0];
        assert_eq!(Statistic::TrimmedMean(0.25).of(&mut t), 1.0);
    }

    #[test]
    fn passes_are_round_robin_and_counted() {
        let (mut o, configs) = setup(0.0, 0.0, 0.0);
        let p = Protocol {
            warmup_passes: 1,
            repeats: 3,
            ..Protocol::default()
        };
        let run = measure_interleaved(&mut o, &configs, &p).unwrap();
        // 1 warm-up + 3 timed passes, each over every configuration in order.
        assert_eq!(o.calls.len(), 4 * configs.len());
        for (i, c) in o.calls.iter().enumerate() {
            assert_eq!(c, &configs[i % configs.len()]);
        }
        assert_eq!(run.noise.calls, o.calls.len());
        assert_eq!(run.noise.remeasured, 0);
        assert!(run.noise.warning.is_none());
        assert!(
            run.measured
                .iter()
                .all(|m| m.samples.len() == 3 && m.cv < 1e-12)
        );
    }

    #[test]
    fn robust_statistic_beats_a_single_shot_under_spikes_and_drift() {
        let (mut o, configs) = setup(0.02, 0.1, 0.03);
        let exact = o.exact.0.clone();
        let single = Protocol {
            warmup_passes: 0,
            repeats: 1,
            statistic: Statistic::Median,
            remeasure_rounds: 0,
            ..Protocol::default()
        };
        let one = measure_interleaved(&mut o, &configs, &single).unwrap();
        let full = measure_interleaved(&mut o, &configs, &Protocol::default()).unwrap();
        let (e1, e2) = (mean_rel_error(&one, &exact), mean_rel_error(&full, &exact));
        assert!(e2 < 0.6 * e1, "protocol {e2} vs single shot {e1}");
        // Spiky configurations were re-measured.
        assert!(full.noise.remeasured > 0);
        assert!(
            full.measured
                .iter()
                .filter(|m| m.remeasured > 0)
                .all(|m| m.samples.len() > 5)
        );
    }

    /// Another process holding a core: most runs are slowed by 20-80 %, some not
    /// at all (interference only ever adds time).
    struct Busy {
        exact: ModelOracle<SystolicArray>,
        rng: ChaCha12Rng,
    }

    impl CostOracle for Busy {
        fn measure(&mut self, widths: &[usize]) -> Result<f64> {
            let base = self.exact.measure(widths)?;
            let slow = if self.rng.random_range(0.0..1.0) < 0.3 {
                0.0
            } else {
                self.rng.random_range(0.2..0.8)
            };
            Ok(base * (1.0 + slow) * (1.0 + 0.005 * self.rng.random_range(-1.0..1.0)))
        }
    }

    #[test]
    fn a_busy_machine_switches_to_the_noisy_statistic() {
        let (o, configs) = setup(0.0, 0.0, 0.0);
        let exact = o.exact.0.clone();
        let mut busy = Busy {
            exact: o.exact,
            rng: ChaCha12Rng::seed_from_u64(4),
        };
        let adaptive = measure_interleaved(&mut busy, &configs, &Protocol::default()).unwrap();
        assert_eq!(adaptive.noise.statistic, Statistic::Min);
        assert!(adaptive.noise.warning.as_deref().unwrap().contains("Min"));
        let fixed = Protocol {
            noisy_statistic: None,
            ..Protocol::default()
        };
        let quantile = measure_interleaved(&mut busy, &configs, &fixed).unwrap();
        assert_eq!(quantile.noise.statistic, Statistic::Quantile(0.25));
        let (ea, eq) = (
            mean_rel_error(&adaptive, &exact),
            mean_rel_error(&quantile, &exact),
        );
        assert!(ea < 0.5 * eq, "min {ea} vs quantile {eq}");
        // A quiet machine keeps the base statistic.
        let (mut quiet, configs) = setup(0.01, 0.0, 0.0);
        let run = measure_interleaved(&mut quiet, &configs, &Protocol::default()).unwrap();
        assert_eq!(run.noise.statistic, Statistic::Quantile(0.25));
    }

    #[test]
    fn a_noisy_machine_gets_a_warning() {
        let (mut o, configs) = setup(0.2, 0.0, 0.0);
        let run = measure_interleaved(&mut o, &configs, &Protocol::default()).unwrap();
        assert!(run.noise.median_cv > 0.03);
        let w = run.noise.warning.expect("a warning");
        assert!(w.contains("too noisy"), "{w}");
        assert!(run.noise.unstable > 0);
    }

    #[test]
    fn bad_protocols_and_inputs_are_errors() {
        let (mut o, configs) = setup(0.0, 0.0, 0.0);
        for p in [
            Protocol {
                repeats: 0,
                ..Protocol::default()
            },
            Protocol {
                max_cv: f64::NAN,
                ..Protocol::default()
            },
            Protocol {
                statistic: Statistic::Quantile(1.5),
                ..Protocol::default()
            },
            Protocol {
                statistic: Statistic::TrimmedMean(0.5),
                ..Protocol::default()
            },
            Protocol {
                target_error: Some(0.0),
                ..Protocol::default()
            },
            Protocol {
                noisy_above: 0.0,
                ..Protocol::default()
            },
            Protocol {
                noisy_statistic: Some(Statistic::Quantile(-0.1)),
                ..Protocol::default()
            },
        ] {
            assert!(measure_interleaved(&mut o, &configs, &p).is_err(), "{p:?}");
        }
        assert!(measure_interleaved(&mut o, &[], &Protocol::default()).is_err());
        let mut bad = configs.clone();
        bad[1].pop();
        assert!(measure_interleaved(&mut o, &bad, &Protocol::default()).is_err());
        struct Zero;
        impl CostOracle for Zero {
            fn measure(&mut self, _: &[usize]) -> Result<f64> {
                Ok(0.0)
            }
        }
        let e = measure_interleaved(&mut Zero, &configs, &Protocol::default()).unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
    }
}
