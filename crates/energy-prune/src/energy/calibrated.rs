//! A calibrated black-box cost model of any kind, saved and loaded with its kind,
//! so that a calibration can pick the model that predicts best and every consumer
//! (ADMM, the uniform baseline, reports) takes it as a [`WidthCostModel`].
//!
//! JSON form: `{"kind": "bilinear", ...}` or `{"kind": "layer_table", ...}`, with
//! an optional `"provenance"` ([`FitProvenance`]: crate version, the architecture
//! it was fitted for, samples, validation figures, what was measured); a file
//! written by [`Bilinear::save_json`] (no kind) still loads as a bilinear model.

use super::WidthCostModel;
use super::bilinear::Bilinear;
use super::table::LayerTable;
use crate::error::Result;

/// Where a fitted model comes from: saved next to it by
/// [`CalibratedModel::save_json_with_provenance`] and checked against the
/// architecture at hand by [`FitProvenance::check`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FitProvenance {
    /// Version of energy-prune that fitted the model.
    pub crate_version: String,
    /// Name of the architecture it was fitted for.
    pub architecture: String,
    /// [`Architecture::fingerprint`](crate::arch::Architecture::fingerprint) of it.
    pub fingerprint: u64,
    /// Measured configurations the fit used (training and validation).
    pub samples: usize,
    /// Validation figures of the fit.
    pub validation: super::FitMetrics,
    /// What was measured, in which unit, how (e.g. `"CPU latency in ms, batch 64, 2 threads"`).
    pub measured: String,
}

impl FitProvenance {
    /// The provenance of a fit made now, by this crate version, for `arch`.
    pub fn new(
        arch: &crate::arch::Architecture,
        samples: usize,
        validation: super::FitMetrics,
        measured: impl Into<String>,
    ) -> Self {
        Self {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            architecture: arch.name().to_string(),
            fingerprint: arch.fingerprint(),
            samples,
            validation,
            measured: measured.into(),
        }
    }

    /// Check that the model was fitted for `arch`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] naming both architectures when the
    /// fingerprints differ.
    pub fn check(&self, arch: &crate::arch::Architecture) -> Result<()> {
        if self.fingerprint == arch.fingerprint() {
            return Ok(());
        }
        Err(crate::Error::InvalidParameter {
            name: "cost model",
            value: format!(
                "fitted for `{}` (fingerprint {:016x})",
                self.architecture, self.fingerprint
            ),
            reason: format!(
                "it does not describe `{}` (fingerprint {:016x}): calibrate this architecture",
                arch.name(),
                arch.fingerprint()
            ),
        })
    }
}

/// A fitted width-level cost model: ECC's bilinear regression or the per-layer
/// lookup table.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "kind", rename_all = "snake_case")
)]
pub enum CalibratedModel {
    /// [`Bilinear`] (with or without linear terms).
    Bilinear(Bilinear),
    /// [`LayerTable`].
    LayerTable(LayerTable),
}

impl CalibratedModel {
    /// The kind's name as saved (`"bilinear"`, `"layer_table"`).
    pub fn kind(&self) -> &'static str {
        match self {
            CalibratedModel::Bilinear(_) => "bilinear",
            CalibratedModel::LayerTable(_) => "layer_table",
        }
    }

    /// Channels of every width of the dense network the model was fitted for.
    pub fn dense_channels(&self) -> Vec<usize> {
        match self {
            CalibratedModel::Bilinear(m) => m.dense_channels(),
            CalibratedModel::LayerTable(m) => m.dense_channels(),
        }
    }

    /// Check that the model prices the widths of `arch`: as many widths, each
    /// with the same dense channel count.
    ///
    /// # Errors
    /// [`crate::Error::ShapeMismatch`] naming the first width that differs.
    pub fn check_architecture(&self, arch: &crate::arch::Architecture) -> Result<()> {
        let mine = self.dense_channels();
        if mine.len() != arch.widths().len() {
            return Err(crate::Error::shape(
                format!("widths of the cost model for `{}`", arch.name()),
                arch.widths().len(),
                mine.len(),
            ));
        }
        for (w, &c) in arch.widths().iter().zip(&mine) {
            if w.channels != c {
                return Err(crate::Error::shape(
                    format!(
                        "dense channels of width `{}` in the cost model for `{}` (fitted for \
                         another network?)",
                        w.name,
                        arch.name()
                    ),
                    w.channels,
                    c,
                ));
            }
        }
        Ok(())
    }

    fn inner(&self) -> &dyn WidthCostModel {
        match self {
            CalibratedModel::Bilinear(m) => m,
            CalibratedModel::LayerTable(m) => m,
        }
    }
}

impl WidthCostModel for CalibratedModel {
    fn num_widths(&self) -> usize {
        self.inner().num_widths()
    }
    fn cost_and_gradient(&self, widths: &[f64], grad: &mut [f64]) -> Result<f64> {
        self.inner().cost_and_gradient(widths, grad)
    }
    fn cost(&self, widths: &[f64]) -> Result<f64> {
        self.inner().cost(widths)
    }
    fn cost_of_widths(&self, widths: &[usize]) -> Result<f64> {
        self.inner().cost_of_widths(widths)
    }
}

#[cfg(feature = "serde")]
impl CalibratedModel {
    /// Write the model with its kind as JSON (through a temporary file).
    ///
    /// # Errors
    /// [`crate::Error::Io`] if the file cannot be written;
    /// [`crate::Error::Serialization`] if the model cannot be written as JSON.
    pub fn save_json(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| crate::Error::serialization("the calibrated model", e))?;
        crate::files::write_atomic(path.as_ref(), text.as_bytes())
    }

    /// Write the model with its kind and its provenance as JSON (through a
    /// temporary file).
    ///
    /// # Errors
    /// [`crate::Error::Io`] if the file cannot be written;
    /// [`crate::Error::Serialization`] if the model cannot be written as JSON.
    pub fn save_json_with_provenance(
        &self,
        path: impl AsRef<std::path::Path>,
        provenance: &FitProvenance,
    ) -> Result<()> {
        let mut value = serde_json::to_value(self)
            .map_err(|e| crate::Error::serialization("the calibrated model", e))?;
        let prov = serde_json::to_value(provenance)
            .map_err(|e| crate::Error::serialization("the fit provenance", e))?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("provenance".into(), prov);
        }
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| crate::Error::serialization("the calibrated model", e))?;
        crate::files::write_atomic(path.as_ref(), text.as_bytes())
    }

    /// Read a model written by [`CalibratedModel::save_json`] or
    /// [`Bilinear::save_json`], validating it.
    ///
    /// # Errors
    /// [`crate::Error::Io`] if unreadable, [`crate::Error::CorruptData`] if it is
    /// neither kind of model or is inconsistent.
    pub fn load_json(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::load_json_with_provenance(path).map(|(m, _)| m)
    }

    /// Read a model and its provenance (None for files written without one).
    ///
    /// # Errors
    /// As [`CalibratedModel::load_json`]; a malformed provenance is
    /// [`crate::Error::CorruptData`] too.
    pub fn load_json_with_provenance(
        path: impl AsRef<std::path::Path>,
    ) -> Result<(Self, Option<FitProvenance>)> {
        use serde::Deserialize;
        let path = path.as_ref();
        let text = crate::files::read_text(path)?;
        let corrupt = |reason: String| crate::Error::CorruptData {
            path: path.to_path_buf(),
            reason,
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| corrupt(format!("not a calibrated cost model ({e})")))?;
        let model = match CalibratedModel::deserialize(&value) {
            Ok(m) => m,
            // Only a file without a kind is an older bilinear file; an unknown kind
            // is refused, not read as another one.
            Err(tagged) if value.get("kind").is_none() => match Bilinear::deserialize(&value) {
                Ok(b) => CalibratedModel::Bilinear(b),
                Err(_) => return Err(corrupt(format!("not a calibrated cost model ({tagged})"))),
            },
            Err(tagged) => {
                return Err(corrupt(format!(
                    "not a calibrated cost model of a known kind (bilinear, layer_table): {tagged}"
                )));
            }
        };
        let provenance = match value.get("provenance") {
            None => None,
            Some(p) => Some(
                FitProvenance::deserialize(p)
                    .map_err(|e| corrupt(format!("malformed provenance: {e}")))?,
            ),
        };
        Ok((model, provenance))
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;
    use crate::arch::zoo;
    use crate::energy::{
        FitOptions, LayerOracle, ModelOracle, ProfileSet, Protocol, SystolicArray, SystolicConfig,
        WidthSampler, profile::CostOracle,
    };

    fn profile(arch: &crate::arch::Architecture) -> ProfileSet {
        let mut o = ModelOracle(SystolicArray::new(arch, SystolicConfig::default()).unwrap());
        let mut s = WidthSampler::new(arch, 2);
        let mut p = ProfileSet::new(arch.widths().len());
        for _ in 0..40 {
            let w = s.sample();
            let c = o.measure(&w).unwrap();
            p.push(w, c).unwrap();
        }
        p
    }

    #[test]
    fn provenance_is_saved_read_and_checked() {
        let arch = zoo::lenet5().unwrap();
        let data = profile(&arch);
        let fit = Bilinear::fit(&arch, &data, &FitOptions::default()).unwrap();
        let m = CalibratedModel::Bilinear(fit.model);
        let prov = FitProvenance::new(&arch, data.len(), fit.report.validation, "exact energy");
        let dir = std::env::temp_dir().join(format!("ep-prov-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.json");
        m.save_json_with_provenance(&path, &prov).unwrap();
        let (back, p) = CalibratedModel::load_json_with_provenance(&path).unwrap();
        assert_eq!(back, m);
        let p = p.unwrap();
        assert_eq!(p, prov);
        assert_eq!(p.crate_version, env!("CARGO_PKG_VERSION"));
        assert!(p.check(&arch).is_ok());
        let err = p.check(&zoo::alexnet().unwrap()).unwrap_err().to_string();
        assert!(err.contains("lenet5") && err.contains("alexnet"), "{err}");
        // The plain reader ignores the provenance; a file without one has None.
        assert_eq!(CalibratedModel::load_json(&path).unwrap(), m);
        m.save_json(&path).unwrap();
        assert!(
            CalibratedModel::load_json_with_provenance(&path)
                .unwrap()
                .1
                .is_none()
        );
        // A malformed provenance is corrupt data.
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["provenance"] = serde_json::json!({"crate_version": 3});
        std::fs::write(&path, v.to_string()).unwrap();
        assert!(matches!(
            CalibratedModel::load_json_with_provenance(&path),
            Err(crate::Error::CorruptData { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn both_kinds_round_trip_with_their_kind_and_old_files_load() {
        let arch = zoo::lenet5().unwrap();
        let data = profile(&arch);
        let dir = std::env::temp_dir().join(format!("ep-calibrated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fit = Bilinear::fit(&arch, &data, &FitOptions::default()).unwrap();
        struct Flat;
        impl LayerOracle for Flat {
            fn measure_layer(&mut self, l: usize, c: usize, d: usize) -> Result<f64> {
                Ok(1.0 + (l * c * d) as f64)
            }
        }
        let p = Protocol {
            warmup_passes: 0,
            repeats: 1,
            ..Protocol::default()
        };
        let mut table = LayerTable::measure(&arch, &mut Flat, 3, 0.25, &p).unwrap();
        table.fit(&data, &FitOptions::default()).unwrap();
        for m in [
            CalibratedModel::Bilinear(fit.model.clone()),
            CalibratedModel::LayerTable(table.clone()),
        ] {
            let path = dir.join(format!("{}.json", m.kind()));
            m.save_json(&path).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains(&format!("\"kind\": \"{}\"", m.kind())),
                "{text}"
            );
            let back = CalibratedModel::load_json(&path).unwrap();
            assert_eq!(back, m);
            let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
            assert_eq!(
                back.cost_of_widths(&full).unwrap(),
                m.cost_of_widths(&full).unwrap()
            );
        }
        // A bilinear file without a kind (older format) loads as bilinear.
        let old = dir.join("old.json");
        fit.model.save_json(&old).unwrap();
        assert_eq!(
            CalibratedModel::load_json(&old).unwrap(),
            CalibratedModel::Bilinear(fit.model)
        );
        // An inconsistent table and garbage are corrupt data.
        let mut broken = serde_json::to_value(CalibratedModel::LayerTable(table)).unwrap();
        broken["layers"][0]["inputs"] = serde_json::json!([5, 3]);
        let bad = dir.join("bad.json");
        std::fs::write(&bad, broken.to_string()).unwrap();
        assert!(matches!(
            CalibratedModel::load_json(&bad),
            Err(crate::Error::CorruptData { .. })
        ));
        std::fs::write(&bad, "{\"kind\": \"spline\"}").unwrap();
        assert!(matches!(
            CalibratedModel::load_json(&bad),
            Err(crate::Error::CorruptData { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
