//! The learned bilinear cost model of ECC (Yang, Zhu, Liu, CVPR 2019, section 3).
//!
//! With every width normalised by its maximum, `x_u = s_u / S_u`, the model is
//! ```text
//! f(s) = a_0 + sum_l a_l * x_in(l) * x_out(l)  [ + sum_u b_u * x_u ]
//! ```
//! one bilinear term per prunable layer `l` (its cost grows with input width times
//! output width; `x_in(l)` is the normalised size of the layer's input, which may
//! be a concatenation or a flattened map), a bias `a_0` for the platform's constant
//! cost and, optionally, one linear term per free width (per-channel costs such as
//! output writes; depthwise layers give a square term `x_u^2`). For a sequential
//! network this is exactly the paper's `a_0 + sum_j a_j x_j x_(j+1)`. Terms that
//! coincide (a layer whose input or output width is fixed is linear in the other)
//! are merged.
//!
//! [`Bilinear::fit`] solves the ridge least-squares problem
//! `min ||X a - e||^2 + lambda ||a_(1..)||^2` in closed form (Cholesky of
//! `X^T X + lambda D`, the bias unpenalised), choosing `lambda` on a validation
//! split when it is not given, and reports the validation error.

use nalgebra::{Cholesky, DMatrix, DVector};

use super::WidthCostModel;
use super::profile::ProfileSet;
use crate::arch::Architecture;
use crate::error::{Error, Origin, Result};

/// One term of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Term {
    /// `x_in(layer) * x_out(layer)`.
    Product(usize),
    /// `x_width`.
    Linear(usize),
}

/// A layer as the model sees it: its input segments `(width, spatial)` and output width.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct LayerWidths {
    input: Vec<(usize, f64)>,
    in_norm: f64,
    output: usize,
}

/// Options of [`Bilinear::fit`].
///
/// | field | default | purpose |
/// |---|---|---|
/// | `linear_terms` | false | add one linear term per free width |
/// | `lambda` | None | ridge coefficient; None: chosen on the validation split |
/// | `validation` | 0.2 | fraction of samples held out |
/// | `seed` | 0 | seed of the split |
/// | `relative` | false | minimise relative instead of absolute squared errors (rows weighted by `1 / e`) |
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Add one linear term per free width.
    pub linear_terms: bool,
    /// Ridge coefficient (`>= 0`), or None to choose it by validation.
    pub lambda: Option<f64>,
    /// Held-out fraction in `(0, 1)`.
    pub validation: f64,
    /// Seed of the train/validation split.
    pub seed: u64,
    /// Minimise `sum ((f - e) / e)^2` instead of `sum (f - e)^2`: better when costs
    /// span orders of magnitude and relative error is what matters.
    pub relative: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            linear_terms: false,
            lambda: None,
            validation: 0.2,
            seed: 0,
            relative: false,
        }
    }
}

/// Accuracy of a model on a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FitMetrics {
    /// Mean relative absolute error `mean |f - e| / e`.
    pub mrae: f64,
    /// Largest relative error.
    pub max_rel_error: f64,
    /// Fraction of samples predicted within +-10 %.
    pub within_10pct: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Number of samples.
    pub samples: usize,
}

/// Prediction errors of `predict` (a cost at continuous widths) on `data`: MRAE,
/// largest relative error, share within +-10 %, and R^2 on costs divided by the
/// largest (finite at any magnitude; 1 when every cost is equal).
pub(crate) fn fit_metrics(data: &ProfileSet, predict: impl Fn(&[f64]) -> f64) -> FitMetrics {
    let n = data.len().max(1) as f64;
    let scale = data.iter().map(|(_, c)| c.abs()).fold(0.0f64, f64::max);
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let mean = data.iter().map(|(_, c)| c / scale).sum::<f64>() / n;
    let (mut sum_rel, mut max_rel, mut within, mut ss_res, mut ss_tot) =
        (0.0, 0.0f64, 0usize, 0.0, 0.0);
    for (w, c) in data.iter() {
        let s: Vec<f64> = w.iter().map(|v| *v as f64).collect();
        let f = predict(&s);
        let rel = (f - c).abs() / c;
        sum_rel += rel;
        max_rel = max_rel.max(rel);
        within += (rel <= 0.1) as usize;
        let (fs, cs) = (f / scale, c / scale);
        ss_res += (fs - cs) * (fs - cs);
        ss_tot += (cs - mean) * (cs - mean);
    }
    FitMetrics {
        mrae: sum_rel / n,
        max_rel_error: max_rel,
        within_10pct: within as f64 / n,
        r2: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        },
        samples: data.len(),
    }
}

/// What [`Bilinear::fit`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FitReport {
    /// Error on the training samples.
    pub train: FitMetrics,
    /// Error on the held-out samples.
    pub validation: FitMetrics,
    /// The ridge coefficient used.
    pub lambda: f64,
}

/// What [`Bilinear::fit`] returns: the model and how well it fits.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The fitted model.
    pub model: Bilinear,
    /// Its accuracy on the training and held-out samples.
    pub report: FitReport,
}

/// A fitted bilinear cost model; see the [module docs](self).
///
/// A model read from JSON is validated on the way in (term, layer and width
/// indices in range, counts consistent, finite coefficients), so a corrupt file is
/// an error when loaded, never a panic when evaluated.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "BilinearFields")
)]
pub struct Bilinear {
    max: Vec<f64>,
    fixed: Vec<bool>,
    layers: Vec<LayerWidths>,
    terms: Vec<Term>,
    /// `[a_0, one coefficient per term]`.
    coefficients: Vec<f64>,
}

/// The serialised form of a [`Bilinear`] model.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct BilinearFields {
    max: Vec<f64>,
    fixed: Vec<bool>,
    layers: Vec<LayerWidths>,
    terms: Vec<Term>,
    coefficients: Vec<f64>,
}

#[cfg(feature = "serde")]
impl TryFrom<BilinearFields> for Bilinear {
    type Error = Error;
    fn try_from(f: BilinearFields) -> Result<Self> {
        let bad = |reason: String| Error::param("bilinear model", "(deserialised)", reason);
        let n = f.max.len();
        if f.fixed.len() != n {
            return Err(bad(format!("{} fixed flags for {n} widths", f.fixed.len())));
        }
        if f.coefficients.len() != f.terms.len() + 1 {
            return Err(bad(format!(
                "{} coefficients for {} terms (expected terms + 1)",
                f.coefficients.len(),
                f.terms.len()
            )));
        }
        if let Some(i) = f.coefficients.iter().position(|c| !c.is_finite()) {
            return Err(bad(format!("coefficient {i} is not finite")));
        }
        if let Some(u) = f.max.iter().position(|m| !(m.is_finite() && *m >= 1.0)) {
            return Err(bad(format!("width {u} has a maximum below 1")));
        }
        for (l, lw) in f.layers.iter().enumerate() {
            let widths_ok = lw.output < n
                && lw
                    .input
                    .iter()
                    .all(|(u, sp)| *u < n && sp.is_finite() && *sp >= 0.0);
            if !widths_ok {
                return Err(bad(format!(
                    "layer {l} names a width out of range (there are {n}) or a negative size"
                )));
            }
            if !(lw.in_norm.is_finite() && lw.in_norm > 0.0) {
                return Err(bad(format!(
                    "layer {l} has the input normalisation {} (must be finite and > 0)",
                    lw.in_norm
                )));
            }
        }
        for t in &f.terms {
            let ok = match *t {
                Term::Product(l) => l < f.layers.len(),
                Term::Linear(u) => u < n,
            };
            if !ok {
                return Err(bad(format!("term {t:?} is out of range")));
            }
        }
        let model = Bilinear {
            max: f.max,
            fixed: f.fixed,
            layers: f.layers,
            terms: f.terms,
            coefficients: f.coefficients,
        };
        // Every term is non-negative and largest at the dense widths: the sum of
        // |coefficient x term| there bounds the cost at any widths.
        let mut feats = Vec::new();
        model.features(&model.max, &mut feats);
        let bound: f64 = feats
            .iter()
            .zip(&model.coefficients)
            .map(|(x, a)| (x * a).abs())
            .sum();
        if !bound.is_finite() {
            return Err(bad(format!(
                "coefficients {:?} overflow at the dense widths",
                model.coefficients
            )));
        }
        let min: Vec<f64> = model
            .max
            .iter()
            .zip(&model.fixed)
            .map(|(&m, &fixed)| if fixed { m } else { 1.0 })
            .collect();
        super::check_model_evaluates(&model, &min, &model.max, "bilinear model")?;
        Ok(model)
    }
}

impl Bilinear {
    /// Channels of every width of the dense network.
    pub fn dense_channels(&self) -> Vec<usize> {
        self.max.iter().map(|&m| m as usize).collect()
    }

    /// The terms the model uses for `arch` (before fitting).
    pub fn terms_for(arch: &Architecture, linear_terms: bool) -> Vec<Term> {
        let widths = arch.widths();
        let mut terms = Vec::new();
        let push = |t: Term, terms: &mut Vec<Term>| {
            if !terms.contains(&t) {
                terms.push(t);
            }
        };
        for (l, layer) in arch.layers().iter().enumerate() {
            let in_fixed = layer.input.iter().all(|s| widths[s.width.0].fixed);
            let out_fixed = widths[layer.output.0].fixed;
            match (in_fixed, out_fixed) {
                (true, true) => {} // constant: absorbed by the bias
                (true, false) => push(Term::Linear(layer.output.0), &mut terms),
                (false, true) if layer.input.len() == 1 => {
                    push(Term::Linear(layer.input[0].width.0), &mut terms)
                }
                _ => push(Term::Product(l), &mut terms),
            }
        }
        if linear_terms {
            for (u, w) in widths.iter().enumerate() {
                if !w.fixed {
                    push(Term::Linear(u), &mut terms);
                }
            }
        }
        terms
    }

    fn skeleton(arch: &Architecture, linear_terms: bool) -> Self {
        let widths = arch.widths();
        let layers = arch
            .layers()
            .iter()
            .map(|l| LayerWidths {
                input: l
                    .input
                    .iter()
                    .map(|s| (s.width.0, s.spatial as f64))
                    .collect(),
                in_norm: l
                    .input
                    .iter()
                    .map(|s| (widths[s.width.0].channels * s.spatial) as f64)
                    .sum(),
                output: l.output.0,
            })
            .collect();
        Self {
            max: widths.iter().map(|w| w.channels as f64).collect(),
            fixed: widths.iter().map(|w| w.fixed).collect(),
            layers,
            terms: Self::terms_for(arch, linear_terms),
            coefficients: Vec::new(),
        }
    }

    /// A model with given coefficients (`[a_0, one per term of `terms_for`]`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong coefficient count, [`Error::NonFinite`] for NaN.
    pub fn with_coefficients(
        arch: &Architecture,
        linear_terms: bool,
        coefficients: Vec<f64>,
    ) -> Result<Self> {
        let mut m = Self::skeleton(arch, linear_terms);
        if coefficients.len() != m.terms.len() + 1 {
            return Err(Error::shape(
                "bilinear coefficients (bias + terms)",
                m.terms.len() + 1,
                coefficients.len(),
            ));
        }
        if let Some(i) = coefficients.iter().position(|c| !c.is_finite()) {
            return Err(Error::non_finite("bilinear coefficients", i, Origin::Model));
        }
        m.coefficients = coefficients;
        Ok(m)
    }

    /// The terms, in coefficient order (after the bias).
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// `[a_0, one coefficient per term]`.
    pub fn coefficients(&self) -> &[f64] {
        &self.coefficients
    }

    fn x_in(&self, l: &LayerWidths, s: &[f64]) -> f64 {
        l.input.iter().map(|(w, sp)| s[*w] * sp).sum::<f64>() / l.in_norm
    }

    /// The feature vector `[1, term values...]` at widths `s`.
    fn features(&self, s: &[f64], out: &mut Vec<f64>) {
        out.clear();
        out.push(1.0);
        for t in &self.terms {
            out.push(match *t {
                Term::Product(l) => {
                    let lw = &self.layers[l];
                    self.x_in(lw, s) * s[lw.output] / self.max[lw.output]
                }
                Term::Linear(u) => s[u] / self.max[u],
            });
        }
    }

    /// Fit the model for `arch` to measured data, holding out `opts.validation` of
    /// the samples.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for too few samples (fewer training samples than
    /// coefficients), a width that never varies in the data while a term uses it, a
    /// bad option, or a singular system (collinear samples: add a ridge `lambda` or
    /// more varied samples); [`Error::ShapeMismatch`] if the data has another number
    /// of widths than `arch`.
    pub fn fit(arch: &Architecture, data: &ProfileSet, opts: &FitOptions) -> Result<Fitted> {
        if data.num_widths() != arch.widths().len() {
            return Err(Error::shape(
                "widths per profile sample",
                arch.widths().len(),
                data.num_widths(),
            ));
        }
        if let Some(l) = opts.lambda
            && !(l.is_finite() && l >= 0.0)
        {
            return Err(Error::param("lambda", l, "must be finite and >= 0"));
        }
        let mut model = Self::skeleton(arch, opts.linear_terms);
        let p = model.terms.len() + 1;
        let (train, val) = data.split(opts.validation, opts.seed)?;
        if train.len() < p || val.is_empty() {
            return Err(Error::param(
                "samples",
                data.len(),
                format!(
                    "the model has {p} coefficients: measure at least {} configurations",
                    (p as f64 / (1.0 - opts.validation)).ceil() as usize + 1
                ),
            ));
        }
        // Design matrix of the training samples, then the checks on the raw features.
        let mut xt = DMatrix::zeros(train.len(), p);
        let mut yt = DVector::zeros(train.len());
        let mut f = Vec::with_capacity(p);
        for (i, (w, c)) in train.iter().enumerate() {
            let s: Vec<f64> = w.iter().map(|v| *v as f64).collect();
            model.features(&s, &mut f);
            for (j, v) in f.iter().enumerate() {
                xt[(i, j)] = *v;
            }
            yt[i] = c;
        }
        for j in 1..p {
            let col = xt.column(j);
            let (lo, hi) = col
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(*v), b.max(*v))
                });
            if hi - lo <= 1e-12 * hi.abs().max(1.0) {
                return Err(Error::param(
                    "samples",
                    format!("{:?}", model.terms[j - 1]),
                    "this term never varies in the training data: sample its widths over their range",
                ));
            }
        }
        check_rank(&xt, &train, p)?;
        if opts.relative {
            // Weight each row by 1 / e: the residuals become relative errors.
            for i in 0..train.len() {
                let w = 1.0 / yt[i];
                xt.row_mut(i).scale_mut(w);
                yt[i] = 1.0;
            }
        }
        let gram = xt.transpose() * &xt;
        let rhs = xt.transpose() * &yt;
        let scale = (1..p).map(|j| gram[(j, j)]).sum::<f64>() / (p - 1).max(1) as f64;
        let solve = |lambda: f64| -> Option<Vec<f64>> {
            let mut a = gram.clone();
            for j in 1..p {
                a[(j, j)] += lambda * scale;
            }
            Cholesky::new(a).map(|c| c.solve(&rhs).iter().copied().collect())
        };
        let candidates: Vec<f64> = match opts.lambda {
            Some(l) => vec![l],
            None => vec![0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2],
        };
        let mut best: Option<(f64, Vec<f64>, FitMetrics)> = None;
        for &lambda in &candidates {
            let Some(coef) = solve(lambda) else { continue };
            if coef.iter().any(|c| !c.is_finite()) {
                continue;
            }
            model.coefficients = coef.clone();
            let err = model.error_on(&val)?;
            if best.as_ref().is_none_or(|(_, _, e)| err.mrae < e.mrae) {
                best = Some((lambda, coef, err));
            }
        }
        let (lambda, coef, validation) = best.ok_or_else(|| {
            Error::param("samples", data.len(), "the least-squares system is singular: sample more varied widths or set a ridge lambda > 0")
        })?;
        model.coefficients = coef;
        let train_err = model.error_on(&train)?;
        Ok(Fitted {
            model,
            report: FitReport {
                train: train_err,
                validation,
                lambda,
            },
        })
    }

    /// Prediction error of the model on `data`.
    ///
    /// R^2 is `1 - SS_res / SS_tot` (1 when every cost is equal); it is computed on
    /// costs divided by the largest, so it stays finite at any magnitude.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for samples of another number of widths.
    pub fn error_on(&self, data: &ProfileSet) -> Result<FitMetrics> {
        if data.num_widths() != self.max.len() {
            return Err(Error::shape(
                "widths per profile sample",
                self.max.len(),
                data.num_widths(),
            ));
        }
        Ok(fit_metrics(data, |s| self.value(s)))
    }

    fn value(&self, s: &[f64]) -> f64 {
        let mut f = Vec::with_capacity(self.coefficients.len());
        self.features(s, &mut f);
        f.iter().zip(&self.coefficients).map(|(x, a)| x * a).sum()
    }

    /// Save as JSON (feature `serde`).
    ///
    /// # Errors
    /// [`Error::Io`].
    #[cfg(feature = "serde")]
    pub fn save_json(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::serialization("the bilinear model", e))?;
        crate::files::write_atomic(path.as_ref(), text.as_bytes())
    }

    /// Load from JSON written by [`Bilinear::save_json`] (feature `serde`).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::CorruptData`].
    #[cfg(feature = "serde")]
    pub fn load_json(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = crate::files::read_text(path)?;
        serde_json::from_str(&text).map_err(|e| Error::CorruptData {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

impl WidthCostModel for Bilinear {
    fn num_widths(&self) -> usize {
        self.max.len()
    }

    fn cost_and_gradient(&self, widths: &[f64], grad: &mut [f64]) -> Result<f64> {
        let n = self.max.len();
        if widths.len() != n || grad.len() != n {
            return Err(Error::shape(
                "widths / gradient",
                n,
                widths.len().min(grad.len()),
            ));
        }
        if let Some(i) = widths.iter().position(|s| !s.is_finite()) {
            return Err(Error::non_finite("widths", i, Origin::Input));
        }
        if self.coefficients.len() != self.terms.len() + 1 {
            return Err(Error::param(
                "coefficients",
                self.coefficients.len(),
                "the model is not fitted",
            ));
        }
        grad.fill(0.0);
        let mut f = self.coefficients[0];
        for (t, a) in self.terms.iter().zip(&self.coefficients[1..]) {
            match *t {
                Term::Product(l) => {
                    let lw = &self.layers[l];
                    let (xi, xo) = (
                        self.x_in(lw, widths),
                        widths[lw.output] / self.max[lw.output],
                    );
                    f += a * xi * xo;
                    for (w, sp) in &lw.input {
                        grad[*w] += a * xo * sp / lw.in_norm;
                    }
                    grad[lw.output] += a * xi / self.max[lw.output];
                }
                Term::Linear(u) => {
                    f += a * widths[u] / self.max[u];
                    grad[u] += a / self.max[u];
                }
            }
        }
        super::finite_cost(f, grad, "bilinear model")
    }
}

/// Reject a design that cannot determine the `p` coefficients: fewer distinct
/// width configurations than coefficients, or columns that are linearly dependent
/// (numerical rank of the column-normalised design below `p`). Either way the
/// least-squares fit would look perfect on repeated configurations and say
/// nothing about new ones.
fn check_rank(x: &DMatrix<f64>, train: &ProfileSet, p: usize) -> Result<()> {
    let distinct: std::collections::HashSet<&[usize]> = train.iter().map(|(w, _)| w).collect();
    if distinct.len() < p {
        return Err(Error::param(
            "samples",
            format!("{} distinct of {}", distinct.len(), train.len()),
            format!(
                "the model has {p} coefficients but the training data holds only {} distinct \
                 width configurations: sample more varied widths",
                distinct.len()
            ),
        ));
    }
    let mut scaled = x.clone();
    for mut col in scaled.column_iter_mut() {
        let norm = col.norm();
        if norm > 0.0 {
            col /= norm;
        }
    }
    let sv = scaled.singular_values();
    let top = sv.iter().copied().fold(0.0f64, f64::max);
    let rank = sv.iter().filter(|v| **v > top * 1e-9).count();
    if rank < p {
        return Err(Error::param(
            "samples",
            format!("design of rank {rank} for {p} coefficients"),
            "the sampled widths make some terms linear combinations of others \
             (rank-deficient design): sample every width independently over its range",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::zoo;
    use crate::energy::{CostOracle, ModelOracle, SystolicArray, SystolicConfig, WidthSampler};

    fn profile(arch: &Architecture, n: usize, seed: u64) -> ProfileSet {
        let mut oracle = ModelOracle(SystolicArray::new(arch, SystolicConfig::default()).unwrap());
        let mut sampler = WidthSampler::new(arch, seed);
        let mut data = ProfileSet::new(arch.widths().len());
        for _ in 0..n {
            let s = sampler.sample();
            let c = oracle.measure(&s).unwrap();
            data.push(s, c).unwrap();
        }
        data
    }

    #[test]
    fn recovers_the_systolic_width_form_of_lenet5_exactly() {
        let arch = zoo::lenet5().unwrap();
        let data = profile(&arch, 300, 1);
        let Fitted { model, report: rep } = Bilinear::fit(
            &arch,
            &data,
            &FitOptions {
                linear_terms: true,
                ..FitOptions::default()
            },
        )
        .unwrap();
        assert!(
            rep.validation.mrae < 1e-6,
            "validation MRAE {}",
            rep.validation.mrae
        );
        assert!(rep.validation.max_rel_error < 1e-5);
        assert_eq!(rep.validation.within_10pct, 1.0);
        assert!(rep.validation.r2 > 0.999_999);
        // Relative weighting recovers it as well.
        let rel = FitOptions {
            linear_terms: true,
            relative: true,
            ..FitOptions::default()
        };
        assert!(
            Bilinear::fit(&arch, &data, &rel)
                .unwrap()
                .report
                .validation
                .mrae
                < 1e-6
        );
        // Without linear terms the fit is only approximate.
        let rep2 = Bilinear::fit(&arch, &data, &FitOptions::default())
            .unwrap()
            .report;
        assert!(rep2.validation.mrae > 1e-4);
        // On fresh configurations too.
        let fresh = profile(&arch, 50, 99);
        assert!(model.error_on(&fresh).unwrap().mrae < 1e-6);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for arch in [
            zoo::lenet5().unwrap(),
            zoo::squeezenet1_0().unwrap(),
            zoo::mobilenet_v1().unwrap(),
        ] {
            let terms = Bilinear::terms_for(&arch, true);
            let coef: Vec<f64> = (0..=terms.len())
                .map(|i| 1.0 + (i % 7) as f64 * 0.37)
                .collect();
            let m = Bilinear::with_coefficients(&arch, true, coef).unwrap();
            let s: Vec<f64> = arch
                .widths()
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    if w.fixed {
                        w.channels as f64
                    } else {
                        w.channels as f64 * (0.3 + 0.05 * (i % 9) as f64)
                    }
                })
                .collect();
            let mut g = vec![0.0; s.len()];
            m.cost_and_gradient(&s, &mut g).unwrap();
            energy_prune_testing::check_gradient(&s, &g, 1e-6, 1e-6, 1e-6, |x| m.cost(x).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        }
    }

    #[test]
    fn degenerate_data_is_an_error() {
        let arch = zoo::lenet5().unwrap();
        let few = profile(&arch, 5, 2);
        let err = Bilinear::fit(&arch, &few, &FitOptions::default()).unwrap_err();
        assert!(err.to_string().contains("measure at least"), "{err}");
        // A width that never varies.
        let mut flat = ProfileSet::new(arch.widths().len());
        let mut sampler = WidthSampler::new(&arch, 3).with_bounds(1, 6, 6).unwrap();
        for _ in 0..50 {
            flat.push(sampler.sample(), 1.0).unwrap();
        }
        let err = Bilinear::fit(&arch, &flat, &FitOptions::default()).unwrap_err();
        assert!(err.to_string().contains("never varies"), "{err}");
        assert!(Bilinear::fit(&arch, &ProfileSet::new(3), &FitOptions::default()).is_err());
        assert!(
            Bilinear::fit(
                &arch,
                &few,
                &FitOptions {
                    lambda: Some(-1.0),
                    ..FitOptions::default()
                }
            )
            .is_err()
        );
    }
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;
    use crate::arch::zoo;

    #[test]
    fn json_round_trip_and_corrupt_file() {
        let arch = zoo::lenet5().unwrap();
        let n = Bilinear::terms_for(&arch, true).len();
        let m = Bilinear::with_coefficients(&arch, true, (0..=n).map(|i| i as f64 * 0.5).collect())
            .unwrap();
        let dir = std::env::temp_dir().join(format!("ep-bilinear-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.json");
        m.save_json(&path).unwrap();
        let back = Bilinear::load_json(&path).unwrap();
        assert_eq!(back, m);
        std::fs::write(&path, r#"{"max": [1.0]"#).unwrap();
        assert!(matches!(
            Bilinear::load_json(&path),
            Err(Error::CorruptData { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
