//! Python bindings of energy-prune (the `energy_prune._native` extension module;
//! the Python package `energy_prune` re-exports it with docstrings and stubs).
//!
//! Weights cross the boundary as one float32 numpy array per prunable layer, in
//! the layer's canonical layout (`[out, in / groups, kh, kw]` for a convolution,
//! `[out, in]` for a linear layer; any shape with that many elements, C-contiguous).
//! Reads of weights are views (no copy); `project` and `PruningPlan.apply`
//! write into the arrays in place (`project` onto one budget in the arrays' own
//! memory, onto several through one copy in and out). The GIL is released while the projection and
//! the energy evaluation run. Errors become `energy_prune.EnergyPruneError` (a
//! `ValueError`) with the crate's message, `OSError` for files.

use std::sync::Arc;

use numpy::{
    PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use energy_prune::arch::{Architecture, LayerKind, zoo};
use energy_prune::energy::{
    Count, CountingModel, EnergyReport, SystolicArray, SystolicConfig, WeightEnergyModel,
};
use energy_prune::network::{Network, NetworkMut, NetworkState};
use energy_prune::prune::{Budget, Limit};

pyo3::create_exception!(
    energy_prune,
    EnergyPruneError,
    PyValueError,
    "Bad input to energy-prune: mismatched shapes, non-finite weights, a budget below the \
     smallest achievable energy, a corrupt file. The message says what was wrong and what to do."
);

/// The crate's error as a Python exception.
fn to_py(e: energy_prune::Error) -> PyErr {
    match e {
        energy_prune::Error::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => EnergyPruneError::new_err(e.to_string()),
    }
}

trait OrPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> OrPy<T> for energy_prune::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// A network architecture: its prunable layers and the widths they share.
#[pyclass(name = "Architecture", module = "energy_prune", frozen)]
#[derive(Clone)]
struct PyArchitecture {
    inner: Arc<Architecture>,
}

/// The canonical weight shape of a layer.
fn weight_shape(kind: &LayerKind) -> Vec<usize> {
    match kind {
        LayerKind::Conv2d(g) => vec![
            g.out_channels,
            g.in_channels / g.groups.max(1),
            g.kernel_h,
            g.kernel_w,
        ],
        LayerKind::Linear(g) => vec![g.out_features, g.in_features],
    }
}

#[pymethods]
impl PyArchitecture {
    /// One of the built-in networks (`Architecture.zoo_names()`).
    #[staticmethod]
    fn zoo(name: &str) -> PyResult<Self> {
        Ok(Self {
            inner: Arc::new(zoo::by_name(name).py()?),
        })
    }

    /// The names of the built-in networks.
    #[staticmethod]
    fn zoo_names() -> Vec<&'static str> {
        zoo::NAMES.to_vec()
    }

    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// A stable hash of the widths and the layer geometry (plans record it).
    #[getter]
    fn fingerprint(&self) -> u64 {
        self.inner.fingerprint()
    }

    /// Prunable weights in all.
    #[getter]
    fn weight_count(&self) -> usize {
        self.inner.weight_count()
    }

    /// Multiply-accumulates per sample of the dense network.
    #[getter]
    fn macs(&self) -> u64 {
        self.inner.macs()
    }

    /// One dict per prunable layer: `name`, `kind` (`"conv2d"` or `"linear"`),
    /// `weights` (count), `shape` (canonical weight shape), `macs`.
    #[getter]
    fn layers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner
            .layers()
            .iter()
            .map(|l| {
                let d = PyDict::new(py);
                d.set_item("name", &l.name)?;
                d.set_item("kind", if l.is_conv() { "conv2d" } else { "linear" })?;
                d.set_item("weights", l.weight_count())?;
                d.set_item("shape", weight_shape(&l.kind))?;
                d.set_item("macs", l.macs())?;
                Ok(d)
            })
            .collect()
    }

    /// `(name, channels, fixed)` of every width (fixed widths are never pruned).
    #[getter]
    fn widths(&self) -> Vec<(String, usize, bool)> {
        self.inner
            .widths()
            .iter()
            .map(|w| (w.name.clone(), w.channels, w.fixed))
            .collect()
    }

    /// Dense float32 weights of every layer, zero-filled, in the canonical shapes.
    fn zeros<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        self.inner
            .layers()
            .iter()
            .map(|l| {
                PyArray1::<f32>::zeros(py, l.weight_count(), false)
                    .reshape(weight_shape(&l.kind))
                    .map(Bound::into_any)
            })
            .collect()
    }

    fn __len__(&self) -> usize {
        self.inner.layers().len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Architecture('{}', {} prunable layers, {} weights)",
            self.inner.name(),
            self.inner.layers().len(),
            self.inner.weight_count()
        )
    }
}

/// Borrowed float32 slices of every layer, checked against the architecture.
fn read_slices<'a>(
    arch: &Architecture,
    arrays: &'a [PyReadonlyArrayDyn<'_, f32>],
    what: &str,
) -> PyResult<Vec<&'a [f32]>> {
    check_count(arch, arrays.len(), what)?;
    arrays
        .iter()
        .zip(arch.layers())
        .map(|(a, l)| {
            let s = a
                .as_slice()
                .ok()
                .filter(|_| a.is_c_contiguous())
                .ok_or_else(|| {
                    EnergyPruneError::new_err(format!(
                        "{what} of layer `{}` are not C-contiguous; pass np.ascontiguousarray(w)",
                        l.name
                    ))
                })?;
            check_len(l, s.len(), what)?;
            Ok(s)
        })
        .collect()
}

fn check_count(arch: &Architecture, got: usize, what: &str) -> PyResult<()> {
    if got != arch.layers().len() {
        return Err(EnergyPruneError::new_err(format!(
            "{got} arrays of {what} given, the architecture `{}` has {} prunable layers \
             (one float32 array per layer, in the order of Architecture.layers)",
            arch.name(),
            arch.layers().len()
        )));
    }
    Ok(())
}

fn check_len(l: &energy_prune::arch::Layer, got: usize, what: &str) -> PyResult<()> {
    if got != l.weight_count() {
        return Err(EnergyPruneError::new_err(format!(
            "{what} of layer `{}` hold {got} values, the layer has {} (shape {:?})",
            l.name,
            l.weight_count(),
            weight_shape(&l.kind)
        )));
    }
    Ok(())
}

/// Borrowed mutable float32 slices of every layer, checked against the
/// architecture.
fn write_slices<'a>(
    arch: &Architecture,
    arrays: &'a mut [PyReadwriteArrayDyn<'_, f32>],
) -> PyResult<Vec<&'a mut [f32]>> {
    check_count(arch, arrays.len(), "weights")?;
    arrays
        .iter_mut()
        .zip(arch.layers())
        .map(|(a, l)| {
            if !a.is_c_contiguous() {
                return Err(EnergyPruneError::new_err(format!(
                    "weights of layer `{}` are not C-contiguous; pass np.ascontiguousarray(w) \
                     and keep that array",
                    l.name
                )));
            }
            let s = a.as_slice_mut().map_err(|_| {
                EnergyPruneError::new_err(format!(
                    "weights of layer `{}` are not C-contiguous; pass np.ascontiguousarray(w) \
                     and keep that array",
                    l.name
                ))
            })?;
            check_len(l, s.len(), "weights")?;
            Ok(s)
        })
        .collect()
}

/// Numpy arrays seen through the network traits, without a copy.
struct Slices<'a, S> {
    arch: &'a Architecture,
    weights: Vec<S>,
}

impl<S: AsRef<[f32]> + Send + Sync> Network for Slices<'_, S> {
    fn architecture(&self) -> &Architecture {
        self.arch
    }

    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> energy_prune::Result<()> {
        let w = self
            .weights
            .get(layer)
            .ok_or(energy_prune::Error::IndexOutOfRange {
                what: "layer",
                index: layer,
                len: self.weights.len(),
            })?
            .as_ref();
        if w.len() != dst.len() {
            return Err(energy_prune::Error::shape("weights", w.len(), dst.len()));
        }
        dst.copy_from_slice(w);
        Ok(())
    }
}

impl<S: AsRef<[f32]> + AsMut<[f32]> + Send + Sync> NetworkMut for Slices<'_, S> {
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> energy_prune::Result<()> {
        energy_prune::error::check_finite("weights", src)?;
        let len = self.weights.len();
        let w = self
            .weights
            .get_mut(layer)
            .ok_or(energy_prune::Error::IndexOutOfRange {
                what: "layer",
                index: layer,
                len,
            })?
            .as_mut();
        if w.len() != src.len() {
            return Err(energy_prune::Error::shape("weights", w.len(), src.len()));
        }
        w.copy_from_slice(src);
        Ok(())
    }
}

/// A cost model that prices weight sparsity: the systolic array or a count.
#[derive(Clone, Debug)]
enum Model {
    Systolic(Arc<SystolicArray>),
    Counting(Arc<CountingModel>),
}

impl Model {
    fn get(&self) -> &dyn WeightEnergyModel {
        match self {
            Model::Systolic(m) => &**m,
            Model::Counting(m) => &**m,
        }
    }

    fn precision(&self) -> &dyn energy_prune::energy::PrecisionModel {
        match self {
            Model::Systolic(m) => &**m,
            Model::Counting(m) => &**m,
        }
    }
}

/// The report of one evaluation as a Python object.
#[pyclass(name = "EnergyReport", module = "energy_prune", frozen)]
struct PyEnergyReport {
    inner: EnergyReport,
}

#[pymethods]
impl PyEnergyReport {
    /// The total, in the model's unit.
    #[getter]
    fn total(&self) -> f64 {
        self.inner.total
    }

    /// One dict per layer: `name`, `weights`, `nonzero`, `macs`, `total` and one
    /// entry per cost part (for the systolic model `compute`, `weight_movement`,
    /// `input_movement`).
    #[getter]
    fn layers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner
            .layers
            .iter()
            .map(|l| {
                let d = PyDict::new(py);
                d.set_item("name", &l.name)?;
                d.set_item("weights", l.weights)?;
                d.set_item("nonzero", l.nonzero)?;
                d.set_item("macs", l.macs)?;
                d.set_item("total", l.total)?;
                for p in &l.parts {
                    d.set_item(p.name.replace(' ', "_"), p.value)?;
                }
                Ok(d)
            })
            .collect()
    }

    /// The per-layer table, as the command line prints it.
    fn table(&self) -> String {
        self.inner.to_string()
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "EnergyReport(total={:.6e}, {} layers)",
            self.inner.total,
            self.inner.layers.len()
        )
    }
}

/// Copy the arrays into a state (the models price owned states).
fn state_of(
    arch: &Architecture,
    weights: &[PyReadonlyArrayDyn<'_, f32>],
    input_masks: Option<&[Option<PyReadonlyArrayDyn<'_, f32>>]>,
) -> PyResult<NetworkState> {
    let w = read_slices(arch, weights, "weights")?;
    let mut state = NetworkState {
        weights: w.iter().map(|s| s.to_vec()).collect(),
        input_masks: vec![None; arch.layers().len()],
    };
    if let Some(masks) = input_masks {
        check_count(arch, masks.len(), "input masks")?;
        for (slot, m) in state.input_masks.iter_mut().zip(masks) {
            if let Some(m) = m {
                let s = m
                    .as_slice()
                    .ok()
                    .filter(|_| m.is_c_contiguous())
                    .ok_or_else(|| {
                        EnergyPruneError::new_err("an input mask is not C-contiguous")
                    })?;
                *slot = Some(s.to_vec());
            }
        }
    }
    Ok(state)
}

/// Shared methods of the cost-model classes.
fn evaluate(
    py: Python<'_>,
    model: &Model,
    weights: Vec<PyReadonlyArrayDyn<'_, f32>>,
    input_masks: Option<Vec<Option<PyReadonlyArrayDyn<'_, f32>>>>,
) -> PyResult<PyEnergyReport> {
    let state = state_of(model.get().architecture(), &weights, input_masks.as_deref())?;
    let inner = py.detach(|| model.get().energy(&state)).py()?;
    Ok(PyEnergyReport { inner })
}

/// What every cost model offers: the exact cost of weights and of the dense
/// network (the base class of `SystolicArray` and `CountingModel`).
#[pyclass(name = "CostModel", module = "energy_prune", subclass, frozen)]
struct PyCostModel {
    model: Model,
    arch: PyArchitecture,
}

#[pymethods]
impl PyCostModel {
    /// The architecture priced.
    #[getter]
    fn architecture(&self) -> PyArchitecture {
        self.arch.clone()
    }

    /// The exact cost of the weights (one float32 array per layer; zeros are
    /// pruned weights), optionally with layer input masks.
    #[pyo3(signature = (weights, input_masks=None))]
    fn energy(
        &self,
        py: Python<'_>,
        weights: Vec<PyReadonlyArrayDyn<'_, f32>>,
        input_masks: Option<Vec<Option<PyReadonlyArrayDyn<'_, f32>>>>,
    ) -> PyResult<PyEnergyReport> {
        evaluate(py, &self.model, weights, input_masks)
    }

    /// The cost of the dense network (what budget fractions are fractions of).
    fn dense_energy(&self, py: Python<'_>) -> PyResult<PyEnergyReport> {
        let inner = py.detach(|| self.model.get().dense_energy()).py()?;
        Ok(PyEnergyReport { inner })
    }
}

/// The analytic energy model of a systolic array (Eyeriss-like memory hierarchy:
/// DRAM, buffers, register files, MACs) at the 16-bit reference precision.
#[pyclass(name = "SystolicArray", module = "energy_prune", extends = PyCostModel, frozen)]
struct PySystolicArray;

#[pymethods]
impl PySystolicArray {
    /// `config` is a JSON object of `SystolicConfig` fields (omitted: the
    /// defaults, a 12 x 14 array).
    #[new]
    #[pyo3(signature = (architecture, config=None))]
    fn new(
        architecture: &PyArchitecture,
        config: Option<&str>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let cfg = match config {
            None => SystolicConfig::default(),
            Some(json) => serde_json::from_str(json).map_err(|e| {
                EnergyPruneError::new_err(format!("the systolic config is not valid JSON: {e}"))
            })?,
        };
        let hw = SystolicArray::new(&architecture.inner, cfg).py()?;
        let base = PyCostModel {
            model: Model::Systolic(Arc::new(hw)),
            arch: architecture.clone(),
        };
        Ok(PyClassInitializer::from(base).add_subclass(Self))
    }

    fn __repr__(slf: PyRef<'_, Self>) -> String {
        format!("SystolicArray({})", slf.as_super().arch.__repr__())
    }
}

/// An exact count of the kept weights: `"parameters"`, `"macs"`, or `"bytes"`
/// (with `value_bits` and `index_bits` of a sparse format).
#[pyclass(name = "CountingModel", module = "energy_prune", extends = PyCostModel, frozen)]
struct PyCountingModel;

#[pymethods]
impl PyCountingModel {
    #[new]
    #[pyo3(signature = (architecture, count="parameters", value_bits=32, index_bits=0))]
    fn new(
        architecture: &PyArchitecture,
        count: &str,
        value_bits: u32,
        index_bits: u32,
    ) -> PyResult<PyClassInitializer<Self>> {
        let count = match count {
            "parameters" => Count::Parameters,
            "macs" => Count::Macs,
            "bytes" => Count::Bytes {
                value_bits,
                index_bits,
            },
            other => {
                return Err(EnergyPruneError::new_err(format!(
                    "count `{other}`: use \"parameters\", \"macs\" or \"bytes\""
                )));
            }
        };
        let m = CountingModel::new(&architecture.inner, count).py()?;
        let base = PyCostModel {
            model: Model::Counting(Arc::new(m)),
            arch: architecture.clone(),
        };
        Ok(PyClassInitializer::from(base).add_subclass(Self))
    }

    fn __repr__(slf: PyRef<'_, Self>) -> String {
        format!("CountingModel({})", slf.as_super().arch.__repr__())
    }
}

/// One budget of the projection: a name, a cost model and a limit.
#[pyclass(name = "Budget", module = "energy_prune", frozen)]
struct PyBudget {
    name: String,
    model: Model,
    fingerprint: u64,
    limit: Limit,
}

/// The model of a `SystolicArray` or `CountingModel` object.
fn model_of(obj: &Bound<'_, PyAny>) -> PyResult<(Model, u64)> {
    let m = obj.cast::<PyCostModel>().map_err(|_| {
        EnergyPruneError::new_err("a budget's model is a SystolicArray or a CountingModel")
    })?;
    let m = m.get();
    Ok((m.model.clone(), m.arch.inner.fingerprint()))
}

#[pymethods]
impl PyBudget {
    /// A limit that is a fraction in (0, 1] of the dense network's cost.
    #[staticmethod]
    fn fraction(name: String, model: &Bound<'_, PyAny>, fraction: f64) -> PyResult<Self> {
        let (model, fingerprint) = model_of(model)?;
        Ok(Self {
            name,
            model,
            fingerprint,
            limit: Limit::FractionOfDense(fraction),
        })
    }

    /// A limit in the model's unit.
    #[staticmethod]
    fn absolute(name: String, model: &Bound<'_, PyAny>, limit: f64) -> PyResult<Self> {
        let (model, fingerprint) = model_of(model)?;
        Ok(Self {
            name,
            model,
            fingerprint,
            limit: Limit::Absolute(limit),
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    fn __repr__(&self) -> String {
        match self.limit {
            Limit::Absolute(v) => format!("Budget('{}', absolute {v:e})", self.name),
            Limit::FractionOfDense(f) => format!("Budget('{}', {f} of dense)", self.name),
        }
    }
}

/// The architecture every budget prices (the first's), checked: the same for all.
fn common_architecture(budgets: &[PyRef<'_, PyBudget>]) -> PyResult<Architecture> {
    let first = budgets
        .first()
        .ok_or_else(|| EnergyPruneError::new_err("no budget given; pass at least one Budget"))?;
    let arch = first.model.get().architecture().clone();
    if let Some(b) = budgets.iter().find(|b| b.fingerprint != arch.fingerprint()) {
        return Err(EnergyPruneError::new_err(format!(
            "budget `{}` prices another architecture than budget `{}`; build every \
             budget's model on the same Architecture",
            b.name, first.name
        )));
    }
    Ok(arch)
}

/// Run `f` (without the GIL) on a state holding a copy of `slices`, then copy
/// the state's weights back (only when `f` succeeds: nothing changes on error).
fn through_state<R: Send>(
    py: Python<'_>,
    slices: &mut [&mut [f32]],
    f: impl FnOnce(&mut NetworkState) -> energy_prune::Result<R> + Send,
) -> PyResult<R> {
    let mut state = NetworkState {
        weights: slices.iter().map(|s| s.to_vec()).collect(),
        input_masks: vec![None; slices.len()],
    };
    let out = py.detach(|| f(&mut state)).py()?;
    for (dst, src) in slices.iter_mut().zip(&state.weights) {
        dst.copy_from_slice(src);
    }
    Ok(out)
}

/// Each budget's status as a dict: `name`, `cost`, `limit`, `met`, `binding`.
fn statuses<'py>(
    py: Python<'py>,
    list: &[energy_prune::prune::BudgetStatus],
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    list.iter()
        .map(|s| {
            let b = PyDict::new(py);
            b.set_item("name", &s.name)?;
            b.set_item("cost", s.cost)?;
            b.set_item("limit", s.budget)?;
            b.set_item("met", s.met)?;
            b.set_item("binding", s.binding)?;
            Ok(b)
        })
        .collect()
}

/// Project the weights (one float32 array per layer, written in place) onto
/// every budget: the largest-magnitude weights the budgets afford are kept, the
/// rest set to zero; the result fits every budget by construction. Returns a
/// dict of the outcome: `kept`, `nonzero_before`, `relaxed_energy` (of the first
/// budget's model), and `budgets` (name, cost, limit, binding) in order.
#[pyfunction]
fn project<'py>(
    py: Python<'py>,
    mut weights: Vec<PyReadwriteArrayDyn<'py, f32>>,
    budgets: Vec<PyRef<'py, PyBudget>>,
) -> PyResult<Bound<'py, PyDict>> {
    let arch = common_architecture(&budgets)?;
    let mut slices = write_slices(&arch, &mut weights)?;
    let list: Vec<Budget<&dyn WeightEnergyModel>> = budgets
        .iter()
        .map(|b| Budget {
            name: b.name.clone(),
            model: b.model.get(),
            limit: b.limit,
        })
        .collect();
    let out = if let [one] = &list[..] {
        // One budget: projected in the arrays' own memory.
        let mut ws = energy_prune::prune::ProjectionWorkspace::new();
        py.detach(|| energy_prune::prune::project_weights(&mut slices, one, &mut ws))
            .py()?
    } else {
        // Several: through the crate's vectors and back.
        through_state(py, &mut slices, |state| {
            energy_prune::prune::project(state, &list)
        })?
    };
    let d = PyDict::new(py);
    d.set_item("kept", out.kept)?;
    d.set_item("nonzero_before", out.nonzero_before)?;
    d.set_item("relaxed_energy", out.relaxed_energy)?;
    d.set_item("budget", out.budget)?;
    d.set_item("budgets", statuses(py, &out.budgets)?)?;
    Ok(d)
}

/// Choose every layer's weight and activation bits together with its kept
/// weights under the budgets (the joint pruning and quantization of the crate's
/// `project_joint`): each layer's options are every pair of `weight_bits` and
/// `activation_bits` (integers of 2 to 16 bits; 16 is the lossless reference),
/// a kept weight worth its square minus its rounding error. The weights (one
/// float32 array per layer) are pruned in place; they stay in float (quantize
/// them at the chosen bits for deployment, e.g. through an ONNX QDQ export).
/// Returns `precision` (a `(weights, activations)` pair of format names per
/// layer, e.g. `("int4", "int8")`), `kept`, `value`, `distortion` and `budgets`
/// (each budget's exact cost at the chosen precision, its limit, `met` and
/// `binding`).
#[pyfunction]
#[pyo3(signature = (weights, budgets, weight_bits=vec![2, 4, 8, 16], activation_bits=vec![4, 8, 16]))]
fn project_joint<'py>(
    py: Python<'py>,
    mut weights: Vec<PyReadwriteArrayDyn<'py, f32>>,
    budgets: Vec<PyRef<'py, PyBudget>>,
    weight_bits: Vec<u8>,
    activation_bits: Vec<u8>,
) -> PyResult<Bound<'py, PyDict>> {
    use energy_prune::energy::NumberFormat;
    let arch = common_architecture(&budgets)?;
    let formats =
        |bits: &[u8]| -> Vec<NumberFormat> { bits.iter().map(|&b| NumberFormat::Int(b)).collect() };
    let options = energy_prune::prune::precision_options(
        arch.layers().len(),
        &formats(&weight_bits),
        &formats(&activation_bits),
    )
    .py()?;
    let mut slices = write_slices(&arch, &mut weights)?;
    let list: Vec<Budget<&dyn energy_prune::energy::PrecisionModel>> = budgets
        .iter()
        .map(|b| Budget {
            name: b.name.clone(),
            model: b.model.precision(),
            limit: b.limit,
        })
        .collect();
    let out = through_state(py, &mut slices, |state| {
        energy_prune::prune::project_joint(state, &list, &options, None)
    })?;
    let d = PyDict::new(py);
    let precision: Vec<(String, String)> = out
        .precision
        .iter()
        .map(|p| (p.weights.to_string(), p.activations.to_string()))
        .collect();
    d.set_item("precision", precision)?;
    d.set_item("kept", out.projection.kept)?;
    d.set_item("value", out.value)?;
    d.set_item("distortion", out.distortion)?;
    d.set_item("budgets", statuses(py, &out.exact)?)?;
    Ok(d)
}

/// Which channels of every width a pruned network keeps, with its provenance.
#[pyclass(name = "PruningPlan", module = "energy_prune", frozen)]
struct PyPruningPlan {
    inner: energy_prune::network::PruningPlan,
}

#[pymethods]
impl PyPruningPlan {
    /// The plan of pruned weights: a channel is kept while any weight reading it
    /// is nonzero (the arrays are read in place, not copied).
    #[staticmethod]
    fn from_weights(
        architecture: &PyArchitecture,
        weights: Vec<PyReadonlyArrayDyn<'_, f32>>,
    ) -> PyResult<Self> {
        let arch = &*architecture.inner;
        let w = read_slices(arch, &weights, "weights")?;
        let net = Slices { arch, weights: w };
        Ok(Self {
            inner: energy_prune::network::PruningPlan::from_network(&net).py()?,
        })
    }

    /// Read a plan written by `save` or `energy-prune prune --plan`.
    #[staticmethod]
    fn load(path: std::path::PathBuf) -> PyResult<Self> {
        Ok(Self {
            inner: energy_prune::network::PruningPlan::load_json(path).py()?,
        })
    }

    /// Write the plan as JSON (through a temporary file).
    fn save(&self, path: std::path::PathBuf) -> PyResult<()> {
        self.inner.save_json(path).py()
    }

    /// Zero, in place, every weight that reads a channel the plan drops (the
    /// weights of `architecture`, which must be the plan's; the filters that
    /// compute such a channel stay, `OnnxModel.compact` removes them).
    fn apply(
        &self,
        architecture: &PyArchitecture,
        mut weights: Vec<PyReadwriteArrayDyn<'_, f32>>,
    ) -> PyResult<()> {
        let arch = &*architecture.inner;
        let w = write_slices(arch, &mut weights)?;
        let mut net = Slices { arch, weights: w };
        self.inner.apply(&mut net).py()
    }

    /// Kept channels per width.
    #[getter]
    fn widths(&self) -> Vec<usize> {
        self.inner.widths()
    }

    /// The kept channel indices of every width.
    #[getter]
    fn kept(&self) -> Vec<Vec<usize>> {
        self.inner.kept().to_vec()
    }

    /// The fingerprint of the architecture the plan was made for.
    #[getter]
    fn fingerprint(&self) -> u64 {
        self.inner.fingerprint()
    }

    /// Where the plan came from (cost model, budget, predicted cost, precision,
    /// crate version), as JSON.
    #[getter]
    fn provenance(&self) -> PyResult<String> {
        serde_json::to_string(self.inner.provenance())
            .map_err(|e| EnergyPruneError::new_err(format!("the provenance: {e}")))
    }

    fn __repr__(&self) -> String {
        format!(
            "PruningPlan('{}', widths {:?})",
            self.inner.architecture_name(),
            self.inner.widths()
        )
    }
}

/// An ONNX model: its architecture and prunable weights, written back with the
/// weights it holds (zeros where pruned), compacted by a plan, in one file or
/// with its tensors in a side file.
#[pyclass(name = "OnnxModel", module = "energy_prune")]
struct PyOnnxModel {
    inner: energy_prune_onnx::OnnxModel,
}

#[pymethods]
impl PyOnnxModel {
    /// Read a model file (its external data from the side files next to it);
    /// `input` is `(channels, height, width)` when the graph's is symbolic.
    #[staticmethod]
    #[pyo3(signature = (path, input=None))]
    fn load(py: Python<'_>, path: std::path::PathBuf, input: Option<[usize; 3]>) -> PyResult<Self> {
        let inner = py
            .detach(|| energy_prune_onnx::OnnxModel::load(&path, input))
            .py()?;
        Ok(Self { inner })
    }

    /// The architecture read from the graph.
    #[getter]
    fn architecture(&self) -> PyArchitecture {
        PyArchitecture {
            inner: Arc::new(self.inner.architecture().clone()),
        }
    }

    /// Copies of the weights, one float32 array per layer in its canonical shape.
    fn weights<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        self.inner
            .architecture()
            .layers()
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let w = self.inner.weights(l).py()?;
                PyArray1::from_vec(py, w)
                    .reshape(weight_shape(&layer.kind))
                    .map(Bound::into_any)
            })
            .collect()
    }

    /// Replace the weights (checked: one finite array per layer of its size).
    fn set_weights(&mut self, weights: Vec<PyReadonlyArrayDyn<'_, f32>>) -> PyResult<()> {
        let arch = self.inner.architecture().clone();
        let w = read_slices(&arch, &weights, "weights")?;
        for s in &w {
            energy_prune::error::check_finite("weights", s).py()?;
        }
        for (l, s) in w.iter().enumerate() {
            self.inner.write_weights(l, s).py()?;
        }
        Ok(())
    }

    /// Write the model; with `external_data`, its tensors of 1 KiB and more go to
    /// `<file name>.data` next to it (ONNX external data, for models above 2 GiB).
    #[pyo3(signature = (path, external_data=false))]
    fn save(&self, py: Python<'_>, path: std::path::PathBuf, external_data: bool) -> PyResult<()> {
        py.detach(|| {
            if external_data {
                let ext = energy_prune_onnx::ExternalData::beside(&path);
                self.inner.save_with_external_data(&path, &ext)
            } else {
                self.inner.save(&path)
            }
        })
        .py()
    }

    /// The model with the channels the plan drops removed.
    fn compact(&self, plan: &PyPruningPlan) -> PyResult<Self> {
        Ok(Self {
            inner: self.inner.compact(&plan.inner).py()?,
        })
    }

    /// The name of every prunable layer's weight initializer (PyTorch's exporter
    /// names them after the parameters: `"conv1.weight"`).
    #[getter]
    fn weight_names(&self) -> PyResult<Vec<String>> {
        (0..self.inner.architecture().layers().len())
            .map(|l| self.inner.weight_name(l).map(str::to_string).py())
            .collect()
    }

    /// The side files the tensors were read from.
    #[getter]
    fn external_files(&self) -> Vec<std::path::PathBuf> {
        self.inner.external_files().to_vec()
    }

    /// Run the reference interpreter on `batch` samples (flat float32 input).
    fn run<'py>(
        &self,
        py: Python<'py>,
        input: PyReadonlyArrayDyn<'py, f32>,
        batch: usize,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let x = input
            .as_slice()
            .ok()
            .filter(|_| input.is_c_contiguous())
            .ok_or_else(|| EnergyPruneError::new_err("the input is not C-contiguous"))?;
        let y = self.inner.run(x, batch).py()?;
        Ok(PyArray1::from_vec(py, y))
    }
}

/// The knapsack every party of a sharded projection agrees on: each layer's
/// costs and length and the capacity, derived from one budget (JSON on the wire).
#[pyclass(name = "ShardedProblem", module = "energy_prune", frozen)]
struct PyShardedProblem {
    inner: energy_prune::prune::ShardedProblem,
}

#[pymethods]
impl PyShardedProblem {
    /// The problem of projecting onto `budget` (no input masks): what
    /// `project(weights, [budget])` solves, for weights held in shards.
    #[staticmethod]
    fn from_budget(budget: &PyBudget) -> PyResult<Self> {
        let model = budget.model.get();
        let arch = model.architecture();
        let b = Budget {
            name: budget.name.clone(),
            model,
            limit: budget.limit,
        };
        let limit = b.weight_limit().py()?;
        let input = model.input_energy(&vec![None; arch.layers().len()]).py()?;
        let constant: f64 = input.iter().sum();
        let zeros = vec![0u64; input.len()];
        let floor = model
            .relaxed_energy(&zeros, &input)
            .py()?
            .total
            .max(constant);
        if limit < floor {
            return Err(to_py(energy_prune::Error::InfeasibleBudget {
                budget: limit,
                min_achievable: floor,
            }));
        }
        let inner = energy_prune::prune::ShardedProblem {
            costs: model.knapsack_costs(),
            layer_lens: arch
                .layers()
                .iter()
                .map(|l| l.weight_count() as u64)
                .collect(),
            capacity: limit - constant,
        };
        inner.validate().py()?;
        Ok(Self { inner })
    }

    /// The problem as JSON (to send to the other parties).
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner)
            .map_err(|e| EnergyPruneError::new_err(format!("the problem: {e}")))
    }

    /// A problem received as JSON (checked).
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        let inner: energy_prune::prune::ShardedProblem = serde_json::from_str(text)
            .map_err(|e| EnergyPruneError::new_err(format!("not a sharded problem: {e}")))?;
        inner.validate().py()?;
        Ok(Self { inner })
    }

    /// Weights in all (layers concatenated in order).
    #[getter]
    fn total(&self) -> u64 {
        self.inner.total()
    }

    /// Weights per layer.
    #[getter]
    fn layer_lens(&self) -> Vec<u64> {
        self.inner.layer_lens.clone()
    }
}

/// The coordinator of a sharded projection: `next_request()` gives the message
/// to send to every shard (JSON; `None` when done), `receive(replies)` takes the
/// shards' replies in shard order and returns the outcome after the last round.
#[pyclass(name = "Coordinator", module = "energy_prune")]
struct PyCoordinator {
    inner: energy_prune::prune::projection::sharded::Coordinator<'static>,
}

#[pymethods]
impl PyCoordinator {
    #[new]
    fn new(problem: &PyShardedProblem) -> PyResult<Self> {
        Ok(Self {
            inner: energy_prune::prune::projection::sharded::Coordinator::owned(
                problem.inner.clone(),
            )
            .py()?,
        })
    }

    /// The request for every shard now (JSON), or `None` once the outcome is known.
    fn next_request(&self) -> PyResult<Option<String>> {
        self.inner
            .next_request()
            .map(|r| {
                serde_json::to_string(&r)
                    .map_err(|e| EnergyPruneError::new_err(format!("the request: {e}")))
            })
            .transpose()
    }

    /// Merge the replies (JSON, one per shard, in shard order); the outcome
    /// (`kept`, `kept_value`, `total_value`, `rounds`, `largest_reply_numbers`)
    /// after the last round, else `None`.
    fn receive<'py>(
        &mut self,
        py: Python<'py>,
        replies: Vec<String>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let replies = replies
            .iter()
            .map(|r| serde_json::from_str(r))
            .collect::<Result<Vec<energy_prune::prune::projection::sharded::ReplyMessage>, _>>()
            .map_err(|e| EnergyPruneError::new_err(format!("not a reply of the protocol: {e}")))?;
        let Some(out) = self.inner.receive(&replies).py()? else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("kept", out.selection.kept)?;
        d.set_item("kept_value", out.selection.kept_value)?;
        d.set_item("total_value", out.selection.total_value)?;
        d.set_item("rounds", out.rounds)?;
        d.set_item("largest_reply_numbers", out.largest_reply_numbers)?;
        Ok(Some(d))
    }
}

/// A shard's answer to a request (JSON in, JSON out): `weights` are the shard's
/// weights, positions `[start, start + len)` of the layers concatenated, updated
/// in place when the request says so. Shard `index` holds the `index`-th range
/// in position order.
#[pyfunction]
fn answer(
    py: Python<'_>,
    problem: &PyShardedProblem,
    index: usize,
    start: u64,
    mut weights: PyReadwriteArrayDyn<'_, f32>,
    request: &str,
) -> PyResult<String> {
    if !weights.is_c_contiguous() {
        return Err(EnergyPruneError::new_err(
            "the shard's weights are not C-contiguous; pass np.ascontiguousarray(w)",
        ));
    }
    let w = weights
        .as_slice_mut()
        .map_err(|_| EnergyPruneError::new_err("the shard's weights are not contiguous"))?;
    let message: energy_prune::prune::projection::sharded::RequestMessage =
        serde_json::from_str(request).map_err(|e| {
            EnergyPruneError::new_err(format!("not a request of the protocol: {e}"))
        })?;
    let reply = py
        .detach(|| {
            let mut shard = energy_prune::prune::projection::sharded::Shard::from_range(
                &problem.inner,
                start,
                w,
            )?;
            energy_prune::prune::projection::sharded::answer(
                &problem.inner,
                index,
                &mut shard,
                &message,
            )
        })
        .py()?;
    serde_json::to_string(&reply).map_err(|e| EnergyPruneError::new_err(format!("the reply: {e}")))
}

/// The `energy_prune._native` module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("EnergyPruneError", m.py().get_type::<EnergyPruneError>())?;
    m.add_class::<PyArchitecture>()?;
    m.add_class::<PyEnergyReport>()?;
    m.add_class::<PyCostModel>()?;
    m.add_class::<PySystolicArray>()?;
    m.add_class::<PyCountingModel>()?;
    m.add_class::<PyBudget>()?;
    m.add_class::<PyPruningPlan>()?;
    m.add_class::<PyOnnxModel>()?;
    m.add_class::<PyShardedProblem>()?;
    m.add_class::<PyCoordinator>()?;
    m.add_function(wrap_pyfunction!(project, m)?)?;
    m.add_function(wrap_pyfunction!(answer, m)?)?;
    m.add_function(wrap_pyfunction!(project_joint, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
