//! Measuring a black-box cost (energy, latency, ...) of width configurations:
//! the [`CostOracle`] trait, a seeded [`WidthSampler`], and [`ProfileSet`], the
//! measured data with train/validation split and CSV (and, with feature `serde`,
//! JSON) import/export.
//!
//! The calibration workflow (ECC, CVPR 2019, section 2):
//! sample widths -> measure each with an oracle -> fit a
//! [`Bilinear`](super::Bilinear) model -> check its validation error -> save it.
//!
//! ```
//! use energy_prune::arch::zoo;
//! use energy_prune::energy::{Bilinear, CostOracle, FitOptions, Fitted, ModelOracle, ProfileSet,
//!     SystolicArray, SystolicConfig, WidthSampler};
//! # fn main() -> energy_prune::Result<()> {
//! let arch = zoo::lenet5()?;
//! // Here the "hardware" is the analytic model itself, which makes the fit checkable.
//! let mut oracle = ModelOracle(SystolicArray::new(&arch, SystolicConfig::default())?);
//! let mut sampler = WidthSampler::new(&arch, 7);
//! let mut data = ProfileSet::new(arch.widths().len());
//! for _ in 0..200 {
//!     let s = sampler.sample();
//!     data.push(s.clone(), oracle.measure(&s)?)?;
//! }
//! let Fitted { model, report } = Bilinear::fit(&arch, &data, &FitOptions { linear_terms: true, ..FitOptions::default() })?;
//! assert!(report.validation.mrae < 1e-6);
//! # let _ = model;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

use super::WidthCostModel;
use crate::arch::Architecture;
use crate::error::{Error, Result};

/// Measures the real cost of a width configuration (one entry per
/// [`Width`](crate::arch::Width) of the architecture, in channels). A failed
/// measurement is an error, never a zero.
pub trait CostOracle {
    /// The cost of `widths` (finite and positive).
    ///
    /// # Errors
    /// Whatever the measurement can fail with.
    fn measure(&mut self, widths: &[usize]) -> Result<f64>;
}

impl<T: CostOracle + ?Sized> CostOracle for &mut T {
    fn measure(&mut self, widths: &[usize]) -> Result<f64> {
        (**self).measure(widths)
    }
}

impl<T: CostOracle + ?Sized> CostOracle for Box<T> {
    fn measure(&mut self, widths: &[usize]) -> Result<f64> {
        (**self).measure(widths)
    }
}

/// An oracle that evaluates a width-level model (for instance the systolic
/// array's width form): exact, noise-free "measurements" for tests and for
/// hardware that is already described by a model.
#[derive(Debug, Clone)]
pub struct ModelOracle<M>(pub M);

impl<M: WidthCostModel> CostOracle for ModelOracle<M> {
    fn measure(&mut self, widths: &[usize]) -> Result<f64> {
        let s: Vec<f64> = widths.iter().map(|w| *w as f64).collect();
        self.0.cost(&s)
    }
}

/// Draws random width configurations: every free width uniform in
/// `[lower, channels]` (lower bound 1 unless set), fixed widths at their size.
#[derive(Debug)]
pub struct WidthSampler {
    bounds: Vec<(usize, usize)>,
    rng: ChaCha12Rng,
}

impl WidthSampler {
    /// A sampler for `arch`, seeded.
    pub fn new(arch: &Architecture, seed: u64) -> Self {
        let bounds = arch
            .widths()
            .iter()
            .map(|w| {
                if w.fixed {
                    (w.channels, w.channels)
                } else {
                    (1, w.channels)
                }
            })
            .collect();
        Self {
            bounds,
            rng: ChaCha12Rng::seed_from_u64(seed),
        }
    }

    /// Restrict width `width` to `[lower, upper]`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for a bad width, [`Error::InvalidParameter`] if
    /// `lower` is 0, above `upper`, or the width is fixed.
    pub fn with_bounds(mut self, width: usize, lower: usize, upper: usize) -> Result<Self> {
        let len = self.bounds.len();
        let b = self.bounds.get_mut(width).ok_or(Error::IndexOutOfRange {
            what: "width",
            index: width,
            len,
        })?;
        if lower == 0 || lower > upper || upper > b.1 || b.0 == b.1 && b.1 != upper {
            return Err(Error::param(
                "width bounds",
                format!("[{lower}, {upper}]"),
                format!("need 1 <= lower <= upper <= {} on a free width", b.1),
            ));
        }
        *b = (lower, upper);
        Ok(self)
    }

    /// One configuration.
    pub fn sample(&mut self) -> Vec<usize> {
        self.bounds
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo
                } else {
                    self.rng.random_range(lo..=hi)
                }
            })
            .collect()
    }
}

/// Measured `(widths, cost)` pairs.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "ProfileSetFields")
)]
pub struct ProfileSet {
    num_widths: usize,
    widths: Vec<Vec<usize>>,
    costs: Vec<f64>,
}

/// The serialised form of a [`ProfileSet`]: every sample goes through
/// [`ProfileSet::push`] on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct ProfileSetFields {
    num_widths: usize,
    widths: Vec<Vec<usize>>,
    costs: Vec<f64>,
}

#[cfg(feature = "serde")]
impl TryFrom<ProfileSetFields> for ProfileSet {
    type Error = Error;
    fn try_from(f: ProfileSetFields) -> Result<Self> {
        if f.widths.len() != f.costs.len() {
            return Err(Error::shape(
                "costs (one per sample)",
                f.widths.len(),
                f.costs.len(),
            ));
        }
        let mut set = ProfileSet::new(f.num_widths);
        for (w, c) in f.widths.into_iter().zip(f.costs) {
            set.push(w, c)?;
        }
        Ok(set)
    }
}

impl ProfileSet {
    /// An empty set for configurations of `num_widths` widths.
    pub fn new(num_widths: usize) -> Self {
        Self {
            num_widths,
            ..Self::default()
        }
    }

    /// Add one measurement.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong number of widths; [`Error::InvalidParameter`]
    /// for a cost that is not finite and positive.
    pub fn push(&mut self, widths: Vec<usize>, cost: f64) -> Result<()> {
        if widths.len() != self.num_widths {
            return Err(Error::shape(
                "widths of a profile sample",
                self.num_widths,
                widths.len(),
            ));
        }
        if !(cost.is_finite() && cost > 0.0) {
            return Err(Error::param(
                "cost",
                cost,
                "measured costs must be finite and > 0",
            ));
        }
        self.widths.push(widths);
        self.costs.push(cost);
        Ok(())
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.costs.len()
    }
    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.costs.is_empty()
    }
    /// Widths per configuration.
    pub fn num_widths(&self) -> usize {
        self.num_widths
    }
    /// Sample `i` as `(widths, cost)`.
    pub fn get(&self, i: usize) -> Option<(&[usize], f64)> {
        Some((self.widths.get(i)?.as_slice(), *self.costs.get(i)?))
    }
    /// Iterate over `(widths, cost)`.
    pub fn iter(&self) -> impl Iterator<Item = (&[usize], f64)> {
        self.widths
            .iter()
            .map(Vec::as_slice)
            .zip(self.costs.iter().copied())
    }

    /// Split into training and validation sets, a seeded random `validation`
    /// fraction of the samples going to the second.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the fraction is not in `(0, 1)`.
    pub fn split(&self, validation: f64, seed: u64) -> Result<(ProfileSet, ProfileSet)> {
        if !(validation > 0.0 && validation < 1.0) {
            return Err(Error::param(
                "validation fraction",
                validation,
                "must be in (0, 1)",
            ));
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        rand::seq::SliceRandom::shuffle(&mut idx[..], &mut ChaCha12Rng::seed_from_u64(seed));
        let n_val = ((self.len() as f64) * validation).round() as usize;
        let mut train = ProfileSet::new(self.num_widths);
        let mut val = ProfileSet::new(self.num_widths);
        for (k, &i) in idx.iter().enumerate() {
            let dst = if k < n_val { &mut val } else { &mut train };
            dst.widths.push(self.widths[i].clone());
            dst.costs.push(self.costs[i]);
        }
        Ok((train, val))
    }

    /// CSV text: a header `w0,w1,...,cost`, then one line per sample.
    pub fn to_csv(&self) -> String {
        let mut s = String::new();
        for i in 0..self.num_widths {
            let _ = write!(s, "w{i},");
        }
        s.push_str("cost\n");
        for (w, c) in self.iter() {
            for v in w {
                let _ = write!(s, "{v},");
            }
            let _ = writeln!(s, "{c:e}");
        }
        s
    }

    /// Parse CSV written by [`ProfileSet::to_csv`] (or by a measurement rig:
    /// `num_widths` integer columns and a final cost column, one header line).
    ///
    /// # Errors
    /// [`Error::CorruptData`] naming the line that is malformed.
    pub fn from_csv(text: &str, source: &Path) -> Result<Self> {
        let corrupt = |line: usize, reason: String| Error::CorruptData {
            path: source.to_path_buf(),
            reason: format!("line {line}: {reason}"),
        };
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| corrupt(1, "empty file".into()))?;
        let cols = header.split(',').count();
        if cols < 2 {
            return Err(corrupt(
                1,
                "need at least one width column and a cost column".into(),
            ));
        }
        let mut set = ProfileSet::new(cols - 1);
        for (n, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != cols {
                return Err(corrupt(
                    n + 1,
                    format!("{} fields, the header has {cols}", fields.len()),
                ));
            }
            let widths = fields[..cols - 1]
                .iter()
                .map(|f| {
                    f.parse::<usize>()
                        .map_err(|e| corrupt(n + 1, format!("width `{f}`: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let cost: f64 = fields[cols - 1]
                .parse()
                .map_err(|e| corrupt(n + 1, format!("cost `{}`: {e}", fields[cols - 1])))?;
            set.push(widths, cost)
                .map_err(|e| corrupt(n + 1, e.to_string()))?;
        }
        Ok(set)
    }

    /// Write [`ProfileSet::to_csv`] to `path` (via a temporary file and a rename).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::files::write_atomic(path.as_ref(), self.to_csv().as_bytes())
    }

    /// Read a CSV file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::CorruptData`].
    pub fn load_csv(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = crate::files::read_text(path)?;
        Self::from_csv(&text, path)
    }
}

#[cfg(feature = "serde")]
impl ProfileSet {
    /// Save as JSON (feature `serde`).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let text =
            serde_json::to_string(self).map_err(|e| Error::serialization("the profile set", e))?;
        crate::files::write_atomic(path.as_ref(), text.as_bytes())
    }

    /// Load JSON written by [`ProfileSet::save_json`], re-validating every sample.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::CorruptData`].
    pub fn load_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = crate::files::read_text(path)?;
        let corrupt = |reason: String| Error::CorruptData {
            path: path.to_path_buf(),
            reason,
        };
        let raw: ProfileSet = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if raw.widths.len() != raw.costs.len() {
            return Err(corrupt(format!(
                "{} width rows for {} costs",
                raw.widths.len(),
                raw.costs.len()
            )));
        }
        let mut set = ProfileSet::new(raw.num_widths);
        for (w, c) in raw.widths.into_iter().zip(raw.costs) {
            set.push(w, c).map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::zoo;

    #[test]
    fn sampler_respects_bounds_and_fixed_widths() {
        let arch = zoo::lenet5().unwrap();
        let mut s = WidthSampler::new(&arch, 1).with_bounds(1, 3, 5).unwrap();
        for _ in 0..100 {
            let w = s.sample();
            assert_eq!(w[0], 1);
            assert!((3..=5).contains(&w[1]));
            assert!((1..=16).contains(&w[2]));
            assert_eq!(*w.last().unwrap(), 10);
        }
        assert!(WidthSampler::new(&arch, 1).with_bounds(1, 0, 5).is_err());
        assert!(WidthSampler::new(&arch, 1).with_bounds(1, 3, 7).is_err());
        assert!(WidthSampler::new(&arch, 1).with_bounds(99, 1, 2).is_err());
    }

    #[test]
    fn csv_round_trip_and_errors() {
        let mut p = ProfileSet::new(3);
        p.push(vec![1, 2, 3], 1.5).unwrap();
        p.push(vec![4, 5, 6], 2.25e-3).unwrap();
        assert!(p.push(vec![1, 2], 1.0).is_err());
        assert!(p.push(vec![1, 2, 3], f64::NAN).is_err());
        assert!(p.push(vec![1, 2, 3], 0.0).is_err());
        let back = ProfileSet::from_csv(&p.to_csv(), Path::new("x.csv")).unwrap();
        assert_eq!(back, p);
        let err = ProfileSet::from_csv("w0,cost\n1,2\n3\n", Path::new("x.csv")).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(ProfileSet::from_csv("w0,cost\nx,2\n", Path::new("x.csv")).is_err());
        assert!(ProfileSet::from_csv("w0,cost\n1,-2\n", Path::new("x.csv")).is_err());
        let (a, b) = {
            let mut big = ProfileSet::new(1);
            for i in 0..10 {
                big.push(vec![i], 1.0 + i as f64).unwrap();
            }
            big.split(0.2, 3).unwrap()
        };
        assert_eq!((a.len(), b.len()), (8, 2));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn json_round_trip_revalidates() {
        let mut p = ProfileSet::new(2);
        p.push(vec![1, 2], 3.0).unwrap();
        let dir = std::env::temp_dir().join(format!("ep-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.json");
        p.save_json(&path).unwrap();
        assert_eq!(ProfileSet::load_json(&path).unwrap(), p);
        std::fs::write(&path, r#"{"num_widths":2,"widths":[[1]],"costs":[1.0]}"#).unwrap();
        assert!(matches!(
            ProfileSet::load_json(&path),
            Err(Error::CorruptData { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
