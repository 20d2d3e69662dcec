//! Quantized models in the QDQ form: `QuantizeLinear`/`DequantizeLinear` pairs
//! around float operators, as onnxruntime's static quantization writes them and as
//! [`OnnxModel::to_qdq`] exports a model trained by the joint solver.
//!
//! **Import.** A `DequantizeLinear` of a constant (an integer initializer with its
//! scale and zero point, per tensor or per axis) is folded into a float constant:
//! a layer reading it has the dequantized weights `(q - z) * s`, and its weight
//! precision is the number of integer levels the stored values span
//! (`ceil(log2(max q - min q + 1))` bits: an int8 tensor holding only -7..7 is
//! priced at 4 bits). A `QuantizeLinear` → `DequantizeLinear` pair on a tensor is
//! run as ONNX defines it (`q = saturate(round_half_even(x / s) + z)`, then
//! `(q - z) * s`); the layer reading its output has the activation precision of
//! the levels the pair can produce, narrowed by a `Clip` right before the
//! `QuantizeLinear`. Layers without a pair keep the reference precision
//! ([`LayerPrecision::REFERENCE`]). [`OnnxModel::precision`] gives them for
//! pricing; [`OnnxModel::save`] writes pruned weights back into the integer
//! tensors with their scales (zeros stay exactly zero).
//!
//! **Export.** [`OnnxModel::to_qdq`] writes each layer at its [`LayerPrecision`]:
//! weights as integers with one scale per output channel (`DequantizeLinear`
//! along the output axis; int8 up to 8 bits, packed int4 up to 4 bits at opset 21,
//! int16 above 8 bits at opset 21), activations through `Clip(-L s, L s)` →
//! `QuantizeLinear` → `DequantizeLinear` with `s = range / L`,
//! `L = 2^(b-1) - 1` (the crate's [`quant`](energy_prune::quant) grid exactly);
//! the bias of a layer with both quantized becomes int32 on the accumulator's grid
//! `s_x * s_w[c]` (see [`QdqSpec::quantize_bias`]). 16-bit and float layers stay
//! float32 (the reference precision).

use std::collections::HashMap;
use std::path::Path;

use super::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
use super::tensor::{self, IntType, attr, attr_int, corrupt};
use super::{OnnxModel, Op};
use energy_prune::energy::precision::{LayerPrecision, NumberFormat, check_precision};
use energy_prune::error::{Error, Result};
use energy_prune::quant::{
    WeightScale, bias_level, bias_scales, channel_scales_with, storable_scales,
};

/// How a layer's weights are stored in a QDQ model: integers read by a
/// `DequantizeLinear` along `axis` of the stored tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WeightQuant {
    /// The integer type of the stored tensor.
    pub ty: IntType,
    /// Scale and zero point per slice along `axis` (one entry: per tensor).
    pub scales: Vec<f32>,
    pub zeros: Vec<i32>,
    pub axis: usize,
    /// Bits the stored values span (the layer's weight precision).
    pub bits: u8,
}

impl WeightQuant {
    /// Scale and zero point of the stored element `i` of a tensor of `dims`.
    fn at(&self, dims: &[usize], i: usize) -> (f32, i32) {
        if self.scales.len() == 1 {
            return (self.scales[0], self.zeros[0]);
        }
        let inner: usize = dims[self.axis + 1..].iter().product();
        let k = (i / inner.max(1)) % dims[self.axis];
        (self.scales[k], self.zeros[k])
    }

    /// The stored integers of float values `stored` (in the stored layout).
    pub fn encode(&self, dims: &[usize], stored: &[f32]) -> Vec<i32> {
        stored
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (s, z) = self.at(dims, i);
                quantize(v, s, z, self.ty.lo, self.ty.hi)
            })
            .collect()
    }
}

/// ONNX `QuantizeLinear` of one value: `saturate(round_half_even(x / s) + z)`.
#[inline]
pub(crate) fn quantize(x: f32, scale: f32, zero: i32, lo: i32, hi: i32) -> i32 {
    let q = (x / scale).round_ties_even() + zero as f32;
    q.clamp(lo as f32, hi as f32) as i32
}

/// Bits spanned by integers from `lo` to `hi`: `ceil(log2(hi - lo + 1))`, 2 to 16.
pub(crate) fn bits_spanned(lo: i32, hi: i32) -> u8 {
    let levels = (i64::from(hi) - i64::from(lo) + 1).max(1) as u64;
    let bits = 64 - (levels - 1).leading_zeros();
    bits.clamp(2, 16) as u8
}

/// A `DequantizeLinear` of a constant, folded into a float constant at import.
#[derive(Debug, Clone)]
pub(crate) struct Folded {
    /// The `DequantizeLinear` node.
    pub node: usize,
    /// Index of the integer initializer it reads.
    pub initializer: Option<usize>,
    /// The dequantized values as a float tensor named after the node's output.
    pub tensor: TensorProto,
    pub quant: WeightQuant,
}

/// A zero point's type and values, when given.
type ZeroPoint = Option<(IntType, Vec<i32>)>;

/// The scale (float) and zero point (integer, with its type) inputs of a
/// `QuantizeLinear`/`DequantizeLinear` node, read from `consts`.
fn scale_and_zero<'t>(
    node: &NodeProto,
    index: usize,
    consts: &dyn Fn(&str) -> Option<&'t TensorProto>,
    src: &Path,
) -> Result<(Vec<f32>, ZeroPoint)> {
    let name = |k: usize| node.input.get(k).filter(|n| !n.is_empty());
    let not_const = |k: usize| {
        super::import::unsupported(
            node,
            index,
            format!("input {k} (scale or zero point) that is not a constant"),
        )
    };
    let scale_t = name(1)
        .ok_or_else(|| {
            corrupt(
                src,
                format!("node #{index} ({}) lacks its scale", node.op_type),
            )
        })
        .and_then(|n| consts(n.as_str()).ok_or_else(|| not_const(1)))?;
    let scales = tensor::floats(scale_t, src)?;
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(corrupt(
            src,
            format!(
                "node #{index} ({}): scale {s} (scales must be finite and positive)",
                node.op_type
            ),
        ));
    }
    let zero = match name(2) {
        Some(n) => {
            let t = consts(n.as_str()).ok_or_else(|| not_const(2))?;
            let (ty, z) = tensor::quantized(t, src)?;
            if z.len() != scales.len() {
                return Err(corrupt(
                    src,
                    format!(
                        "node #{index} ({}): {} zero points for {} scales",
                        node.op_type,
                        z.len(),
                        scales.len()
                    ),
                ));
            }
            Some((ty, z))
        }
        None => None,
    };
    if attr(node, "block_size").is_some_and(|a| a.i != 0) {
        return Err(super::import::unsupported(
            node,
            index,
            "blocked quantization (block_size); export per channel or per tensor",
        ));
    }
    Ok((scales, zero))
}

/// The axis of a per-axis scale of `len` entries over a tensor of `rank` dims.
fn axis_of(node: &NodeProto, index: usize, rank: usize, len: usize) -> Result<usize> {
    if len == 1 {
        return Ok(0);
    }
    let a = attr_int(node, "axis", 1);
    let a = if a < 0 { a + rank as i64 } else { a };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| super::import::unsupported(node, index, format!("axis {a} for rank {rank}")))
}

/// Fold every `DequantizeLinear` whose input is a constant (see the module docs).
pub(crate) fn fold_constants(graph: &GraphProto, src: &Path) -> Result<Vec<Folded>> {
    let mut consts: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let init_index: HashMap<&str, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut out = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        if node.op_type == "Constant"
            && let (Some(name), Some(t)) = (
                node.output.first(),
                attr(node, "value").and_then(|a| a.t.as_ref()),
            )
        {
            consts.insert(name.as_str(), t);
        }
        if node.op_type != "DequantizeLinear" {
            continue;
        }
        let Some(x) = node
            .input
            .first()
            .and_then(|n| consts.get(n.as_str()).copied())
        else {
            continue;
        };
        let (scales, zero) = scale_and_zero(node, index, &|n: &str| consts.get(n).copied(), src)?;
        let (ty, q) = tensor::quantized(x, src)?;
        let dims = tensor::dims(x, src)?;
        let axis = axis_of(node, index, dims.len(), scales.len())?;
        if scales.len() > 1 && dims.get(axis) != Some(&scales.len()) {
            return Err(corrupt(
                src,
                format!(
                    "node #{index} (DequantizeLinear): {} scales along axis {axis} of a tensor \
                     of shape {dims:?}",
                    scales.len()
                ),
            ));
        }
        let zeros = match zero {
            Some((zty, z)) if zty.code == ty.code => z,
            Some((zty, _)) => {
                return Err(corrupt(
                    src,
                    format!(
                        "node #{index} (DequantizeLinear): zero point of type {} for data of \
                         type {}",
                        zty.code, ty.code
                    ),
                ));
            }
            None => vec![0; scales.len()],
        };
        let quant = WeightQuant {
            ty,
            scales,
            zeros,
            axis,
            bits: 16,
        };
        let mut lo = i32::MAX;
        let mut hi = i32::MIN;
        let values: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (s, z) = quant.at(&dims, i);
                lo = lo.min(v - z);
                hi = hi.max(v - z);
                (v - z) as f32 * s
            })
            .collect();
        let bits = if q.is_empty() {
            2
        } else {
            bits_spanned(lo, hi)
        };
        let name = node.output.first().cloned().unwrap_or_default();
        let mut t = TensorProto {
            name: name.clone(),
            ..TensorProto::default()
        };
        tensor::set_floats(&mut t, &dims, &values);
        out.push(Folded {
            node: index,
            initializer: node
                .input
                .first()
                .and_then(|n| init_index.get(n.as_str()).copied()),
            tensor: t,
            quant: WeightQuant { bits, ..quant },
        });
    }
    Ok(out)
}

/// The elementwise op of a `QuantizeLinear` (`quantize = true`) or
/// `DequantizeLinear` of a tensor: per-tensor scale and zero point only.
pub(crate) fn elementwise<'t>(
    node: &NodeProto,
    index: usize,
    consts: &dyn Fn(&str) -> Option<&'t TensorProto>,
    src: &Path,
) -> Result<Op> {
    let (scales, zero) = scale_and_zero(node, index, consts, src)?;
    let [scale] = scales[..] else {
        return Err(super::import::unsupported(
            node,
            index,
            "per-axis quantization of activations (one scale per tensor expected)",
        ));
    };
    let (ty, zero) = match zero {
        Some((ty, z)) => (ty, z[0]),
        // The default output type of QuantizeLinear is uint8.
        None => (IntType::UINT8, 0),
    };
    if let Some(t) = attr(node, "output_dtype").filter(|a| a.i != 0)
        && t.i != i64::from(ty.code)
    {
        return Err(super::import::unsupported(
            node,
            index,
            "an output_dtype other than the zero point's type",
        ));
    }
    Ok(if node.op_type == "QuantizeLinear" {
        Op::Quantize {
            scale,
            zero,
            lo: ty.lo,
            hi: ty.hi,
        }
    } else {
        Op::Dequantize { scale, zero }
    })
}

/// What [`OnnxModel::to_qdq`] writes: each layer's precision, its input
/// activations' clipping ranges, and optionally the weights' scales.
///
/// ```
/// # fn main() -> energy_prune::Result<()> {
/// use energy_prune::energy::precision::LayerPrecision;
/// use energy_prune_onnx::QdqSpec;
/// // Two layers at 8-bit weights and activations, inputs clipped at 1.0 and 4.0.
/// let spec = QdqSpec::new(vec![LayerPrecision::int(8, 8)?; 2])
///     .with_activation_ranges(vec![Some(1.0), Some(4.0)]);
/// assert_eq!(spec.precision.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct QdqSpec {
    /// Weight and activation format per prunable layer.
    pub precision: Vec<LayerPrecision>,
    /// The clipping range `a_max` of each layer's input (an
    /// [`ActivationQuantizer::range`](energy_prune::quant::ActivationQuantizer));
    /// needed where the activations are below 16 bits.
    pub activation_ranges: Vec<Option<f32>>,
    /// Per-output-channel weight scales (e.g.
    /// `JointQuantization::weight_scales`); computed by `weight_scale` from the
    /// weights where `None`.
    pub weight_scales: Option<Vec<Option<Vec<f32>>>>,
    /// How scales are computed when not given.
    pub weight_scale: WeightScale,
    /// Store the bias of a layer with quantized weights and activations as int32
    /// on the accumulator's grid `s_x * s_w[c]` (as integer kernels hold it; the
    /// bias is rounded onto that grid: round the network's biases the same way
    /// with [`quantize_bias`](energy_prune::quant::quantize_bias) to evaluate what
    /// is exported). `true` by default; `false` keeps float biases, which
    /// onnxruntime rounds onto the same grid when it fuses the layer.
    pub quantize_bias: bool,
}

impl QdqSpec {
    /// Layers at `precision`, no activation ranges, scales from the weights' maxima.
    pub fn new(precision: Vec<LayerPrecision>) -> Self {
        let n = precision.len();
        Self {
            precision,
            activation_ranges: vec![None; n],
            weight_scales: None,
            weight_scale: WeightScale::Max,
            quantize_bias: true,
        }
    }

    /// With the layers' input clipping ranges.
    pub fn with_activation_ranges(mut self, ranges: Vec<Option<f32>>) -> Self {
        self.activation_ranges = ranges;
        self
    }

    /// With given per-output-channel weight scales (`None` for a layer: computed).
    pub fn with_weight_scales(mut self, scales: Vec<Option<Vec<f32>>>) -> Self {
        self.weight_scales = Some(scales);
        self
    }
}

/// The integer type that holds `bits`-bit values at `opset`.
fn storage(bits: u32, opset: i64, weights: bool) -> Result<IntType> {
    match bits {
        ..=4 if weights && opset >= 21 => Ok(IntType::INT4),
        ..=8 => Ok(IntType::INT8),
        _ if opset >= 21 => Ok(IntType::INT16),
        _ => Err(Error::unsupported(
            format!("{bits}-bit values in a model of opset {opset}"),
            "QuantizeLinear/DequantizeLinear take int16 from opset 21: re-export the model \
             with opset_version=21, or choose at most 8 bits",
        )),
    }
}

fn tensor_named(name: String) -> TensorProto {
    TensorProto {
        name,
        ..TensorProto::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..NodeProto::default()
    }
}

impl OnnxModel {
    /// The weight and activation precision of every prunable layer: read from the
    /// QDQ nodes of a quantized model, [`LayerPrecision::REFERENCE`] for layers
    /// stored in float (see [`SystolicArray::with_precision`](energy_prune::energy::SystolicArray::with_precision)).
    pub fn precision(&self) -> &[LayerPrecision] {
        &self.precision
    }

    /// Whether the file holds `QuantizeLinear`/`DequantizeLinear` nodes.
    pub fn is_quantized(&self) -> bool {
        self.quantized
    }

    /// The model in QDQ form at the precision of `spec` (see the
    /// [module docs](crate#quantized-models-qdq)), with the current weights: what
    /// onnxruntime runs as an integer model and what [`OnnxModel::run`] evaluates
    /// to the same outputs.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a spec of another number of layers or scales
    /// of another number of channels; [`Error::InvalidParameter`] for a format out
    /// of range or a missing, zero or non-finite activation range where the
    /// activations are quantized; [`Error::Unsupported`] for a model already
    /// quantized, an opset below 13 (per-channel scales), or more than 8 bits
    /// below opset 21.
    pub fn to_qdq(&self, spec: &QdqSpec) -> Result<OnnxModel> {
        let layers = self.arch.layers();
        check_precision(&self.arch, &spec.precision)?;
        if spec.activation_ranges.len() != layers.len() {
            return Err(Error::shape(
                "activation ranges (one per prunable layer)",
                layers.len(),
                spec.activation_ranges.len(),
            ));
        }
        if let Some(s) = &spec.weight_scales
            && s.len() != layers.len()
        {
            return Err(Error::shape(
                "weight scales (one list per prunable layer)",
                layers.len(),
                s.len(),
            ));
        }
        if self.quantized {
            return Err(Error::unsupported(
                "quantizing a model that already holds QuantizeLinear/DequantizeLinear nodes",
                "quantize the float model",
            ));
        }
        let opset = super::prepare::default_opset(&self.proto);
        if opset < 13 {
            return Err(Error::unsupported(
                format!("QDQ export of a model of opset {opset}"),
                "per-channel DequantizeLinear needs opset 13 or later: re-export the model \
                 with opset_version >= 13",
            ));
        }
        let mut proto = self.to_proto();
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| Error::arch("the model has no graph"))?;
        // Nodes to insert before each layer's node.
        let mut before: HashMap<usize, Vec<NodeProto>> = HashMap::new();
        for (l, layer) in layers.iter().enumerate() {
            let p = spec.precision[l];
            let b = &self.bindings[l];
            let name = layer.name.replace(['/', ' '], "_");
            let mut prefix = Vec::new();
            let mut input_scale = None;
            if let Some(levels) = p.activations.levels() {
                let range = spec.activation_ranges[l]
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| {
                        Error::param(
                            "activation range",
                            format!("{:?} for layer `{}`", spec.activation_ranges[l], layer.name),
                            "a finite positive range where activations are quantized: calibrate \
                             the quantizers first (Cnn::activation_quantizers)",
                        )
                    })?;
                let ty = storage(p.activations.bits(), opset, false)?;
                let scale = range / levels;
                input_scale = Some(scale);
                let x = graph.node[b.node].input[0].clone();
                let [lo, hi, s, z] = ["clip_min", "clip_max", "scale", "zero_point"]
                    .map(|k| format!("{name}.input_quant.{k}"));
                let mut t = tensor_named(lo.clone());
                tensor::set_floats(&mut t, &[], &[-levels * scale]);
                graph.initializer.push(t);
                let mut t = tensor_named(hi.clone());
                tensor::set_floats(&mut t, &[], &[levels * scale]);
                graph.initializer.push(t);
                let mut t = tensor_named(s.clone());
                tensor::set_floats(&mut t, &[], &[scale]);
                graph.initializer.push(t);
                let mut t = tensor_named(z.clone());
                tensor::set_quantized(&mut t, &[], ty, &[0]);
                graph.initializer.push(t);
                let clipped = format!("{name}.input_clipped");
                let q = format!("{name}.input_quantized");
                let dq = format!("{name}.input_dequantized");
                prefix.push(node("Clip", &[&x, &lo, &hi], &clipped, vec![]));
                prefix.push(node("QuantizeLinear", &[&clipped, &s, &z], &q, vec![]));
                prefix.push(node("DequantizeLinear", &[&q, &s, &z], &dq, vec![]));
                graph.node[b.node].input[0] = dq;
            }
            if let Some(levels) = p.weights.levels() {
                let w = &self.weights[l];
                let given = spec.weight_scales.as_ref().and_then(|s| s[l].clone());
                let scales = match given {
                    Some(s) => s,
                    None => channel_scales_with(layer, w, p.weights, spec.weight_scale)?
                        .unwrap_or_default(),
                };
                let out = layer.out_channels();
                if scales.len() != out {
                    return Err(Error::shape(
                        format!("weight scales of layer `{}`", layer.name),
                        out,
                        scales.len(),
                    ));
                }
                // A channel of zeros has scale 0: any positive scale stores it.
                let scales = storable_scales(&scales);
                let ty = storage(p.weights.bits(), opset, true)?;
                let per = w.len() / out.max(1);
                let lv = levels as i32;
                let canonical: Vec<i32> = w
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| quantize(v, scales[i / per.max(1)], 0, -lv, lv))
                    .collect();
                let (stored, axis) = if b.transposed {
                    let (rows, cols) = (b.dims[0], b.dims[1]);
                    let mut t = vec![0; canonical.len()];
                    for r in 0..rows {
                        for c in 0..cols {
                            t[r * cols + c] = canonical[c * rows + r];
                        }
                    }
                    (t, 1)
                } else {
                    (canonical, 0)
                };
                let wi = &mut graph.initializer[b.weight];
                let wname = wi.name.clone();
                let qname = format!("{wname}_quantized");
                wi.name = qname.clone();
                tensor::set_quantized(wi, &b.dims, ty, &stored);
                let (s, z) = (format!("{wname}_scale"), format!("{wname}_zero_point"));
                let mut t = tensor_named(s.clone());
                tensor::set_floats(&mut t, &[out], &scales);
                graph.initializer.push(t);
                let mut t = tensor_named(z.clone());
                tensor::set_quantized(&mut t, &[out], ty, &vec![0; out]);
                graph.initializer.push(t);
                let axis_attr = AttributeProto {
                    name: "axis".into(),
                    i: axis,
                    r#type: super::proto::attribute_proto::AttributeType::Int as i32,
                    ..AttributeProto::default()
                };
                prefix.push(node(
                    "DequantizeLinear",
                    &[&qname, &s, &z],
                    &wname,
                    vec![axis_attr.clone()],
                ));
                if let (Some(sx), Some(bias), true) = (input_scale, &b.bias, spec.quantize_bias)
                    && let super::ConstSource::Initializer(bi) = bias.source
                {
                    let bs = bias_scales(sx, &scales);
                    let levels: Vec<i32> = bias
                        .values
                        .iter()
                        .zip(&bs)
                        .map(|(&v, &s)| bias_level(v, s))
                        .collect();
                    let bt = &mut graph.initializer[bi];
                    let bname = bt.name.clone();
                    let bq = format!("{bname}_quantized");
                    bt.name = bq.clone();
                    tensor::set_quantized(bt, &[out], IntType::INT32, &levels);
                    let (s, z) = (format!("{bname}_scale"), format!("{bname}_zero_point"));
                    let mut t = tensor_named(s.clone());
                    tensor::set_floats(&mut t, &[out], &bs);
                    graph.initializer.push(t);
                    let mut t = tensor_named(z.clone());
                    tensor::set_quantized(&mut t, &[out], IntType::INT32, &vec![0; out]);
                    graph.initializer.push(t);
                    let mut a0 = axis_attr;
                    a0.i = 0;
                    prefix.push(node("DequantizeLinear", &[&bq, &s, &z], &bname, vec![a0]));
                    for v in &mut graph.input {
                        if v.name == bname {
                            v.name = bq.clone();
                        }
                    }
                }
                // The graph input list may name the float initializer (old exporters).
                for v in &mut graph.input {
                    if v.name == wname {
                        v.name = qname.clone();
                    }
                }
            }
            if !prefix.is_empty() {
                before.entry(b.node).or_default().extend(prefix);
            }
        }
        let nodes = std::mem::take(&mut graph.node);
        for (i, n) in nodes.into_iter().enumerate() {
            if let Some(p) = before.remove(&i) {
                graph.node.extend(p);
            }
            graph.node.push(n);
        }
        super::prepare::sync_initializer_inputs(graph);
        super::import::import(proto, Some(self.input_shape()), &self.source)
    }
}

/// The activation format of a layer reading slot `x` of `steps`: the levels of a
/// `QuantizeLinear` → `DequantizeLinear` pair producing it (narrowed by a `Clip`
/// before the `QuantizeLinear`), if there is one.
pub(crate) fn activation_format(steps: &[super::Step], x: usize) -> Option<NumberFormat> {
    let producer = |slot: usize| steps.iter().rev().find(|s| s.output == slot);
    let dq = producer(x)?;
    let Op::Dequantize { .. } = dq.op else {
        return None;
    };
    let q = producer(dq.inputs[0])?;
    let Op::Quantize {
        scale,
        zero,
        mut lo,
        mut hi,
    } = q.op
    else {
        return None;
    };
    if let Some(super::Step {
        op: Op::Clip(a, b), ..
    }) = producer(q.inputs[0])
    {
        lo = lo.max(quantize(*a, scale, zero, i32::MIN, i32::MAX));
        hi = hi.min(quantize(*b, scale, zero, i32::MIN, i32::MAX));
    }
    Some(NumberFormat::Int(bits_spanned(lo - zero, hi - zero)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_spanned_counts_levels() {
        assert_eq!(bits_spanned(-127, 127), 8);
        assert_eq!(bits_spanned(-128, 127), 8);
        assert_eq!(bits_spanned(0, 255), 8);
        assert_eq!(bits_spanned(-7, 7), 4);
        assert_eq!(bits_spanned(-1, 1), 2);
        assert_eq!(bits_spanned(0, 0), 2);
        assert_eq!(bits_spanned(-32767, 32767), 16);
        assert_eq!(bits_spanned(i32::MIN, i32::MAX), 16);
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        assert_eq!(quantize(0.5, 1.0, 0, -128, 127), 0);
        assert_eq!(quantize(1.5, 1.0, 0, -128, 127), 2);
        assert_eq!(quantize(-2.5, 1.0, 0, -128, 127), -2);
        assert_eq!(quantize(1000.0, 1.0, 0, -128, 127), 127);
        assert_eq!(quantize(-3.0, 1.0, 128, 0, 255), 125);
    }
}
