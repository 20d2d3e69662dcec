//! The graph walk that turns an ONNX `ModelProto` into an [`OnnxModel`].

use std::collections::HashMap;
use std::path::Path;

use super::external::{self, External};
use super::proto::{GraphProto, ModelProto, NodeProto, TensorProto, type_proto};
use super::qdq::{self, Folded};
use super::tensor::{self, attr, attr_float, attr_int, attr_ints, attr_str, corrupt};
use super::{ConstSource, Constant, LayerBinding, OnnxModel, Op, Shape, Step, Window};
use energy_prune::arch::{
    Architecture, Conv2dGeometry, InputSegment, Layer, LayerKind, LinearGeometry, Width, WidthId,
    pooled_size,
};
use energy_prune::energy::precision::{LayerPrecision, NumberFormat};

impl Shape {
    /// The layer input reading this tensor, `spatial` features per channel.
    fn inputs(&self, spatial: usize) -> Vec<InputSegment> {
        self.segments
            .iter()
            .map(|&(width, _)| InputSegment { width, spatial })
            .collect()
    }
}
use energy_prune::error::{Error, Result};

/// Operators the import understands (listed in messages).
const SUPPORTED: &str = "Conv, Gemm, MatMul, Relu, Clip, Dropout, Identity, BatchNormalization, \
     MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean over H and W, Flatten, \
     Reshape, Add, Concat, Constant, QuantizeLinear, DequantizeLinear";

/// Provisional widths joined by residual additions (union-find).
#[derive(Default)]
struct Widths {
    names: Vec<String>,
    channels: Vec<usize>,
    parent: Vec<usize>,
}

impl Widths {
    fn add(&mut self, name: &str, channels: usize) -> WidthId {
        self.names.push(name.to_string());
        self.channels.push(channels);
        self.parent.push(self.parent.len());
        WidthId(self.parent.len() - 1)
    }
    fn find(&mut self, mut a: usize) -> usize {
        while self.parent[a] != a {
            self.parent[a] = self.parent[self.parent[a]];
            a = self.parent[a];
        }
        a
    }
    /// Join two widths (the older one names the result).
    fn union(&mut self, a: WidthId, b: WidthId) {
        let (ra, rb) = (self.find(a.0), self.find(b.0));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.parent[hi] = lo;
        }
    }
}

struct Importer<'a> {
    graph: &'a GraphProto,
    src: &'a Path,
    /// Value name -> slot in `shapes`.
    slots: HashMap<&'a str, usize>,
    shapes: Vec<Shape>,
    /// Name -> constant tensor (initializers and `Constant` nodes).
    constants: HashMap<&'a str, (&'a TensorProto, ConstSource)>,
    widths: Widths,
    layers: Vec<Layer>,
    bindings: Vec<LayerBinding>,
    weights: Vec<Vec<f32>>,
    precision: Vec<LayerPrecision>,
    steps: Vec<Step>,
    used_weights: Vec<bool>,
    /// `DequantizeLinear`s of constants, folded.
    folded: &'a [Folded],
    /// Opset of the default domain (attributes and inputs of some operators
    /// changed between versions).
    opset: super::prepare::Opset,
    /// The graph input's batch size when it is a fixed number (exporters that
    /// trace with an example batch write it into Reshape targets).
    batch: Option<i64>,
    /// Side files of layer weights not read yet.
    external: Option<&'a External>,
}

/// Read a decoded model (see [`OnnxModel::from_bytes`]) held in memory.
pub(super) fn import(
    proto: ModelProto,
    input: Option<[usize; 3]>,
    src: &Path,
) -> Result<OnnxModel> {
    import_with(proto, input, src, None)
}

/// [`import`] of a model whose layer weights may still be in side files, read
/// from `external` straight into the layers.
pub(super) fn import_with(
    mut proto: ModelProto,
    input: Option<[usize; 3]>,
    src: &Path,
    external: Option<&External>,
) -> Result<OnnxModel> {
    let (opset, untied) = super::prepare::prepare(&mut proto, src)?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| corrupt(src, "the model has no graph"))?;
    let folded = qdq::fold_constants(graph, src)?;
    let quantized = graph
        .node
        .iter()
        .any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear");
    let mut imp = Importer {
        external,
        opset,
        batch: None,
        graph,
        src,
        slots: HashMap::new(),
        shapes: Vec::new(),
        constants: HashMap::new(),
        widths: Widths::default(),
        layers: Vec::new(),
        bindings: Vec::new(),
        weights: Vec::new(),
        precision: Vec::new(),
        steps: Vec::new(),
        used_weights: vec![false; graph.initializer.len()],
        folded: &folded,
    };
    for (i, t) in graph.initializer.iter().enumerate() {
        imp.constants
            .insert(t.name.as_str(), (t, ConstSource::Initializer(i)));
    }
    for f in &folded {
        imp.constants.insert(
            f.tensor.name.as_str(),
            (&f.tensor, ConstSource::Dequantized(f.node)),
        );
    }
    let input_slot = imp.graph_input(input)?;
    for (i, node) in graph.node.iter().enumerate() {
        imp.node(i, node)?;
    }
    let output_slot = imp.graph_output()?;
    let name = if graph.name.is_empty() || graph.name == "main_graph" {
        src.file_stem()
            .map_or("onnx".to_string(), |s| s.to_string_lossy().into_owned())
    } else {
        graph.name.clone()
    };
    let (arch, shapes) = imp.finish(&name, input_slot, output_slot)?;
    let Importer {
        bindings,
        weights,
        precision,
        steps,
        ..
    } = imp;
    // The prunable weights now live in `weights`: drop their copies in the proto.
    if let Some(g) = proto.graph.as_mut() {
        for b in &bindings {
            let t = &mut g.initializer[b.weight];
            t.raw_data = Vec::new();
            external::inline(t);
            t.float_data = Vec::new();
            t.double_data = Vec::new();
            t.int32_data = Vec::new();
        }
    }
    Ok(OnnxModel {
        proto,
        arch,
        bindings,
        weights,
        steps,
        shapes,
        input: input_slot,
        output: output_slot,
        source: src.to_path_buf(),
        untied,
        precision,
        quantized,
        external_files: Vec::new(),
    })
}

fn label(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("#{index} ({})", node.op_type)
    } else {
        format!("`{}` ({})", node.name, node.op_type)
    }
}

pub(super) fn unsupported(node: &NodeProto, index: usize, what: impl std::fmt::Display) -> Error {
    Error::unsupported(
        format!("node {}: {what}", label(node, index)),
        format!(
            "supported operators and attributes are listed in the energy_prune_onnx docs \
             ({SUPPORTED}); simplify the model before export"
        ),
    )
}

impl<'a> Importer<'a> {
    /// Record a tensor of the graph; its size (channels, then `C * H * W`) is
    /// checked, so that every later product of its dims fits.
    fn new_slot(&mut self, name: &'a str, shape: Shape) -> Result<usize> {
        let channels = shape
            .segments
            .iter()
            .try_fold(0usize, |acc, s| acc.checked_add(s.1))
            .unwrap_or(usize::MAX);
        super::prepare::checked_len(&[channels, shape.h, shape.w], || format!("tensor `{name}`"))?;
        self.shapes.push(shape);
        let slot = self.shapes.len() - 1;
        self.slots.insert(name, slot);
        Ok(slot)
    }

    /// The slot of a value read by `node`.
    fn value(&self, node: &NodeProto, index: usize, k: usize) -> Result<usize> {
        let name = node.input.get(k).map(String::as_str).unwrap_or("");
        if name.is_empty() {
            return Err(corrupt(
                self.src,
                format!("node {} lacks input {k}", label(node, index)),
            ));
        }
        if self.constants.contains_key(name) {
            return Err(unsupported(
                node,
                index,
                format!("input {k} (`{name}`) is a constant where a tensor was expected"),
            ));
        }
        self.slots.get(name).copied().ok_or_else(|| {
            corrupt(
                self.src,
                format!(
                    "node {} reads `{name}`, which no earlier node produces \
                     (the graph is not in topological order, or an input is missing)",
                    label(node, index)
                ),
            )
        })
    }

    /// A constant read by `node` (initializer or `Constant` output), if input `k` is one.
    fn constant(&self, node: &NodeProto, k: usize) -> Option<(&'a TensorProto, ConstSource)> {
        let name = node.input.get(k)?;
        self.constants.get(name.as_str()).copied()
    }

    fn constant_floats(&self, node: &NodeProto, index: usize, k: usize) -> Result<Constant> {
        let (t, source) = self.constant(node, k).ok_or_else(|| {
            unsupported(node, index, format!("input {k} must be a constant tensor"))
        })?;
        let values = tensor::floats(t, self.src)?;
        energy_prune::error::check_finite_from(
            energy_prune::Origin::File,
            &format!("tensor `{}`", t.name),
            &values,
        )?;
        Ok(Constant {
            source,
            input: k,
            dims: tensor::dims(t, self.src)?,
            values,
        })
    }

    fn output(&mut self, node: &'a NodeProto, index: usize, shape: Shape, op: Op) -> Result<()> {
        let name = node
            .output
            .first()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                corrupt(
                    self.src,
                    format!("node {} has no output", label(node, index)),
                )
            })?;
        let inputs = match &op {
            Op::Add => vec![self.value(node, index, 0)?, self.value(node, index, 1)?],
            Op::Concat => (0..node.input.len())
                .map(|k| self.value(node, index, k))
                .collect::<Result<_>>()?,
            Op::AddConst(_) => {
                let k = usize::from(self.constant(node, 0).is_some());
                vec![self.value(node, index, k)?]
            }
            _ => vec![self.value(node, index, 0)?],
        };
        let slot = self.new_slot(name.as_str(), shape)?;
        self.steps.push(Step {
            node: index,
            op,
            inputs,
            output: slot,
        });
        Ok(())
    }

    fn graph_input(&mut self, given: Option<[usize; 3]>) -> Result<usize> {
        let graph = self.graph;
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|v| !self.constants.contains_key(v.name.as_str()))
            .collect();
        let [v] = inputs.as_slice() else {
            return Err(Error::unsupported(
                format!("a graph with {} data inputs", inputs.len()),
                "the model must take exactly one input tensor (N x C x H x W)",
            ));
        };
        if let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_ref().and_then(|t| t.value.as_ref())
            && t.elem_type != tensor::FLOAT
            && t.elem_type != 0
        {
            return Err(Error::unsupported(
                format!(
                    "input `{}` of ONNX element type {} (float32 expected)",
                    v.name, t.elem_type
                ),
                "export the model with a float32 input",
            ));
        }
        let dims: Vec<Option<usize>> = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(super::proto::tensor_shape_proto::dimension::Value::DimValue(
                                x,
                            )) => usize::try_from(x).ok().filter(|&x| x > 0),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if let [Some(n), _, _, _] = dims[..] {
            self.batch = i64::try_from(n).ok();
        }
        let [c, h, w] = match (given, dims.as_slice()) {
            (Some(s), _) => s,
            (None, [_, Some(c), Some(h), Some(w)]) => [*c, *h, *w],
            _ => {
                return Err(Error::unsupported(
                    format!(
                        "input `{}` of shape {dims:?} (symbolic or not N x C x H x W)",
                        v.name
                    ),
                    "give the input size explicitly (e.g. --input 3x224x224)",
                ));
            }
        };
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::param(
                "input",
                format!("{c}x{h}x{w}"),
                "every input dimension must be >= 1",
            ));
        }
        let id = self.widths.add("input", c);
        self.new_slot(
            v.name.as_str(),
            Shape {
                segments: vec![(id, c)],
                h,
                w,
                flat: false,
            },
        )
    }

    fn graph_output(&self) -> Result<usize> {
        let [out] = self.graph.output.as_slice() else {
            return Err(Error::unsupported(
                format!("a graph with {} outputs", self.graph.output.len()),
                "the model must have exactly one output (the logits)",
            ));
        };
        self.slots.get(out.name.as_str()).copied().ok_or_else(|| {
            corrupt(
                self.src,
                format!("the graph output `{}` is produced by no node", out.name),
            )
        })
    }

    fn node(&mut self, index: usize, node: &'a NodeProto) -> Result<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(unsupported(
                node,
                index,
                format!("operator of domain `{}`", node.domain),
            ));
        }
        match node.op_type.as_str() {
            "Constant" => {
                let name = node.output.first().map(String::as_str).unwrap_or("");
                let t = attr(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| {
                        unsupported(node, index, "a Constant without a `value` tensor")
                    })?;
                self.constants.insert(name, (t, ConstSource::Node(index)));
                Ok(())
            }
            "Identity" if self.constant(node, 0).is_some() => {
                // A renamed constant (PyTorch's exporter shares equal tensors this way).
                if let (Some(alias), Some(out)) = (self.constant(node, 0), node.output.first()) {
                    self.constants.insert(out.as_str(), alias);
                }
                Ok(())
            }
            // Folded at import (see `qdq`): a constant for the nodes above.
            "DequantizeLinear" if self.constant(node, 0).is_some() => Ok(()),
            "QuantizeLinear" | "DequantizeLinear" => {
                let s = self.shapes[self.value(node, index, 0)?].clone();
                let consts = |n: &str| self.constants.get(n).map(|c| c.0);
                let op = qdq::elementwise(node, index, &consts, self.src)?;
                self.output(node, index, s, op)
            }
            "ReduceMean" => self.reduce_mean(index, node),
            "Conv" => self.conv(index, node),
            "Gemm" | "MatMul" => self.linear(index, node),
            "Relu" | "Dropout" | "Identity" | "Clip" => {
                let s = self.shapes[self.value(node, index, 0)?].clone();
                let op = match node.op_type.as_str() {
                    "Relu" => Op::Relu,
                    "Clip" => self.clip(index, node)?,
                    _ => Op::Identity,
                };
                self.output(node, index, s, op)
            }
            "BatchNormalization" => self.batch_norm(index, node),
            "MaxPool" | "AveragePool" => self.pool(index, node),
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let s = self.map_input(node, index)?;
                let op = Op::GlobalPool {
                    max: node.op_type == "GlobalMaxPool",
                };
                self.output(node, index, Shape { h: 1, w: 1, ..s }, op)
            }
            "Flatten" => {
                let s = self.shapes[self.value(node, index, 0)?].clone();
                if attr_int(node, "axis", 1) != 1 {
                    return Err(unsupported(node, index, "Flatten with axis != 1"));
                }
                self.output(node, index, Shape { flat: true, ..s }, Op::Flatten(None))
            }
            "Reshape" => self.reshape(index, node),
            "Add" => self.add(index, node),
            "Concat" => self.concat(index, node),
            other => Err(unsupported(
                node,
                index,
                format!("operator `{other}` is not supported"),
            )),
        }
    }

    /// The 4-D (not flattened) shape of input 0.
    fn map_input(&self, node: &NodeProto, index: usize) -> Result<Shape> {
        let s = self.shapes[self.value(node, index, 0)?].clone();
        if s.flat {
            return Err(unsupported(
                node,
                index,
                "reads a flattened tensor where an N x C x H x W map is expected",
            ));
        }
        Ok(s)
    }

    fn clip(&self, index: usize, node: &NodeProto) -> Result<Op> {
        // Opset >= 11: min and max are optional inputs; before: attributes.
        let inputs_form = self.opset >= 11;
        let has_attrs = attr(node, "min").is_some() || attr(node, "max").is_some();
        let has_inputs = node.input.iter().skip(1).any(|n| !n.is_empty());
        if (inputs_form && has_attrs) || (!inputs_form && has_inputs) || node.input.len() > 3 {
            return Err(unsupported(
                node,
                index,
                format!(
                    "Clip bounds given as {} under opset {} (opset 11 and later take them as \
                     inputs, earlier opsets as attributes)",
                    if has_attrs { "attributes" } else { "inputs" },
                    self.opset
                ),
            ));
        }
        let bound = |k: usize, attr_name: &str, default: f32| -> Result<f32> {
            match node.input.get(k).filter(|n| !n.is_empty()) {
                Some(_) => {
                    let c = self.constant_floats(node, index, k)?;
                    match c.values[..] {
                        [v] if c.dims.is_empty() || c.dims == [1] => Ok(v),
                        _ => Err(unsupported(
                            node,
                            index,
                            format!("a Clip bound of shape {:?} (a scalar expected)", c.dims),
                        )),
                    }
                }
                None => Ok(attr_float(node, attr_name, default)),
            }
        };
        Ok(Op::Clip(
            bound(1, "min", f32::NEG_INFINITY)?,
            bound(2, "max", f32::INFINITY)?,
        ))
    }

    /// Symmetric `[h, w]` padding and equal-to-one dilations, or an error.
    fn window_attrs(
        &self,
        index: usize,
        node: &NodeProto,
        kernel: [usize; 2],
    ) -> Result<([usize; 2], [usize; 2])> {
        let auto_pad = attr_str(node, "auto_pad");
        if !(auto_pad.is_empty() || auto_pad == "NOTSET" || auto_pad == "VALID") {
            return Err(unsupported(
                node,
                index,
                format!("auto_pad = {auto_pad} (export with explicit pads)"),
            ));
        }
        if auto_pad == "VALID" && attr(node, "pads").is_some() {
            return Err(unsupported(
                node,
                index,
                "auto_pad = VALID together with explicit pads (ONNX allows pads only with NOTSET)",
            ));
        }
        let dil = attr_ints(node, "dilations");
        if dil.iter().any(|&d| d != 1) {
            return Err(unsupported(node, index, format!("dilations {dil:?}")));
        }
        let to_usize = |v: i64, what: &str| {
            usize::try_from(v).map_err(|_| {
                corrupt(
                    self.src,
                    format!("negative {what} in {}", label(node, index)),
                )
            })
        };
        let strides = attr_ints(node, "strides");
        let stride = match strides {
            [] => [1, 1],
            [a, b] => [to_usize(*a, "stride")?, to_usize(*b, "stride")?],
            other => return Err(unsupported(node, index, format!("strides {other:?}"))),
        };
        let pads = attr_ints(node, "pads");
        let pad = match pads {
            [] => [0, 0],
            [t, l, b, r] if t == b && l == r => [to_usize(*t, "pad")?, to_usize(*l, "pad")?],
            other => {
                return Err(unsupported(
                    node,
                    index,
                    format!("asymmetric pads {other:?} (begin and end must be equal)"),
                ));
            }
        };
        if stride.contains(&0) || kernel.contains(&0) {
            return Err(corrupt(
                self.src,
                format!("zero kernel or stride in {}", label(node, index)),
            ));
        }
        Ok((stride, pad))
    }

    fn conv(&mut self, index: usize, node: &'a NodeProto) -> Result<()> {
        if !(2..=3).contains(&node.input.len()) {
            return Err(corrupt(
                self.src,
                format!(
                    "{} has {} inputs (Conv takes X, W and an optional B)",
                    label(node, index),
                    node.input.len()
                ),
            ));
        }
        let x_slot = self.value(node, index, 0)?;
        let x = self.map_input(node, index)?;
        let (wt, wsrc) = self
            .constant(node, 1)
            .ok_or_else(|| unsupported(node, index, "weights that are not a constant"))?;
        let dims = tensor::dims(wt, self.src)?;
        let [d, cg, kh, kw] = dims[..] else {
            return Err(unsupported(
                node,
                index,
                format!("weights of shape {dims:?} (only 2-D convolutions are supported)"),
            ));
        };
        let kernel = attr_ints(node, "kernel_shape");
        if !kernel.is_empty() && kernel != [kh as i64, kw as i64] {
            return Err(corrupt(
                self.src,
                format!(
                    "{}: kernel_shape {kernel:?} disagrees with the weights {dims:?}",
                    label(node, index)
                ),
            ));
        }
        let (stride, pad) = self.window_attrs(index, node, [kh, kw])?;
        if stride[0] != stride[1] || pad[0] != pad[1] {
            return Err(unsupported(
                node,
                index,
                format!("different strides {stride:?} or pads {pad:?} along height and width"),
            ));
        }
        let groups = usize::try_from(attr_int(node, "group", 1))
            .ok()
            .filter(|&g| g >= 1)
            .ok_or_else(|| corrupt(self.src, format!("bad group in {}", label(node, index))))?;
        let c = x.channels();
        if cg.checked_mul(groups) != Some(c) {
            return Err(Error::arch(format!(
                "conv {}: weights {dims:?} with {groups} groups need {} input channels, \
                 the input has {c}",
                label(node, index),
                cg.saturating_mul(groups)
            )));
        }
        // One filter per channel. A 1 -> 1 convolution is one too: a depthwise layer
        // compacted to a single channel must keep sharing its input's width.
        let depthwise = groups == c && d == c && (groups > 1 || x.segments.len() == 1);
        let name = self.layer_name(node, index, wt);
        let output = if depthwise {
            if x.segments.len() != 1 {
                return Err(unsupported(
                    node,
                    index,
                    "a depthwise convolution of concatenated tensors",
                ));
            }
            x.segments[0].0
        } else {
            self.widths.add(&name, d)
        };
        let geom = Conv2dGeometry {
            in_channels: c,
            in_h: x.h,
            in_w: x.w,
            out_channels: d,
            kernel_h: kh,
            kernel_w: kw,
            stride: stride[0],
            padding: pad[0],
            groups,
        };
        geom.validate()
            .map_err(|e| Error::arch(format!("conv {}: {e}", label(node, index))))?;
        let bias = self.bias(node, index, 2, d)?;
        let (h, w) = (geom.out_h(), geom.out_w());
        self.push_layer(
            Layer {
                name,
                kind: LayerKind::Conv2d(geom),
                input: x.inputs(1),
                output,
                bias: bias.is_some(),
            },
            LayerBinding {
                node: index,
                weight: self.initializer_index(node, index, wsrc)?,
                transposed: false,
                bias,
                dims,
                quant: self.weight_quant(wsrc),
            },
            self.weight_floats(wt)?,
            x_slot,
        )?;
        let shape = Shape {
            segments: vec![(output, d)],
            h,
            w,
            flat: false,
        };
        self.output(node, index, shape, Op::Layer(self.layers.len() - 1))
    }

    fn linear(&mut self, index: usize, node: &'a NodeProto) -> Result<()> {
        let x_slot = self.value(node, index, 0)?;
        let x = self.shapes[x_slot].clone();
        let gemm = node.op_type == "Gemm";
        if !x.flat {
            return Err(unsupported(
                node,
                index,
                "a matrix product on an N x C x H x W map (ONNX multiplies its last two axes; \
                 flatten it first)",
            ));
        }
        let arity = if gemm { 2..=3 } else { 2..=2 };
        if !arity.contains(&node.input.len()) {
            return Err(corrupt(
                self.src,
                format!("{} has {} inputs", label(node, index), node.input.len()),
            ));
        }
        if gemm {
            if attr_int(node, "transA", 0) != 0 {
                return Err(unsupported(node, index, "transA = 1"));
            }
            let (alpha, beta) = (
                attr_float(node, "alpha", 1.0),
                attr_float(node, "beta", 1.0),
            );
            if alpha != 1.0 || (beta != 1.0 && node.input.len() > 2) {
                return Err(unsupported(
                    node,
                    index,
                    format!("alpha = {alpha}, beta = {beta} (only 1 is supported)"),
                ));
            }
        }
        let (wt, wsrc) = self
            .constant(node, 1)
            .ok_or_else(|| unsupported(node, index, "weights that are not a constant"))?;
        let dims = tensor::dims(wt, self.src)?;
        let [a, b] = dims[..] else {
            return Err(unsupported(
                node,
                index,
                format!("weights of shape {dims:?} (2-D expected)"),
            ));
        };
        let transposed = !gemm || attr_int(node, "transB", 0) == 0;
        let (out, inp) = if transposed { (b, a) } else { (a, b) };
        let spatial = x.h * x.w;
        if inp != x.len() {
            return Err(Error::arch(format!(
                "{}: weights {dims:?} expect {inp} inputs, the input has {}",
                label(node, index),
                x.len()
            )));
        }
        let name = self.layer_name(node, index, wt);
        let output = self.widths.add(&name, out);
        let bias = if gemm {
            self.bias(node, index, 2, out)?
        } else {
            None
        };
        let stored = self.weight_floats(wt)?;
        let canonical = if transposed {
            super::transpose(&stored, a, b)
        } else {
            stored
        };
        self.push_layer(
            Layer {
                name,
                kind: LayerKind::Linear(LinearGeometry {
                    in_features: inp,
                    out_features: out,
                }),
                input: x.inputs(spatial),
                output,
                bias: bias.is_some(),
            },
            LayerBinding {
                node: index,
                weight: self.initializer_index(node, index, wsrc)?,
                transposed,
                bias,
                dims,
                quant: self.weight_quant(wsrc),
            },
            canonical,
            x_slot,
        )?;
        let shape = Shape {
            segments: vec![(output, out)],
            h: 1,
            w: 1,
            flat: true,
        };
        self.output(node, index, shape, Op::Layer(self.layers.len() - 1))
    }

    /// `binding` for prunable `layer` reading slot `x`; its precision read from
    /// the QDQ nodes around it.
    fn push_layer(
        &mut self,
        layer: Layer,
        binding: LayerBinding,
        weights: Vec<f32>,
        x: usize,
    ) -> Result<()> {
        let reference = LayerPrecision::REFERENCE;
        self.precision.push(LayerPrecision {
            weights: binding
                .quant
                .as_ref()
                .map_or(reference.weights, |q| NumberFormat::Int(q.bits)),
            activations: qdq::activation_format(&self.steps, x).unwrap_or(reference.activations),
        });
        energy_prune::error::check_finite_from(
            energy_prune::Origin::File,
            &format!("weights of layer `{}`", layer.name),
            &weights,
        )?;
        if self.used_weights[binding.weight] {
            return Err(Error::unsupported(
                format!(
                    "layer `{}` shares its weights with another layer",
                    layer.name
                ),
                "tied weights cannot be pruned independently; untie them before export",
            ));
        }
        self.used_weights[binding.weight] = true;
        self.layers.push(layer);
        self.bindings.push(binding);
        self.weights.push(weights);
        Ok(())
    }

    /// The values of a layer's weight tensor, from its side file if it is still
    /// stored there.
    fn weight_floats(&self, t: &TensorProto) -> Result<Vec<f32>> {
        if let Some(values) = self.external.map(|e| e.floats(t)).transpose()?.flatten() {
            return Ok(values);
        }
        tensor::floats(t, self.src)
    }

    /// The folded `DequantizeLinear` of node `n`.
    fn folded(&self, n: usize) -> Option<&'a Folded> {
        self.folded.iter().find(|f| f.node == n)
    }

    /// How weights read from `src` are stored, when they are dequantized integers.
    fn weight_quant(&self, src: ConstSource) -> Option<qdq::WeightQuant> {
        match src {
            ConstSource::Dequantized(n) => self.folded(n).map(|f| f.quant.clone()),
            _ => None,
        }
    }

    fn initializer_index(&self, node: &NodeProto, index: usize, src: ConstSource) -> Result<usize> {
        match src {
            ConstSource::Initializer(i) => Ok(i),
            ConstSource::Dequantized(n) => {
                self.folded(n).and_then(|f| f.initializer).ok_or_else(|| {
                    unsupported(
                        node,
                        index,
                        "integer weights held in a Constant node (export with weights as \
                         initializers)",
                    )
                })
            }
            ConstSource::Node(_) => Err(unsupported(
                node,
                index,
                "weights held in a Constant node (export with weights as initializers)",
            )),
        }
    }

    /// The bias initializer at input `k`, if present, checked to hold `n` values.
    /// A Conv's bias must be `[n]`; a Gemm's broadcasts to `[batch, n]`.
    fn bias(&self, node: &NodeProto, index: usize, k: usize, n: usize) -> Result<Option<Constant>> {
        if node.input.get(k).is_none_or(String::is_empty) {
            return Ok(None);
        }
        let c = self.constant_floats(node, index, k)?;
        let fits = if node.op_type == "Conv" {
            c.dims == [n]
        } else {
            c.values.len() == n && super::prepare::broadcast_vector(&c.dims, n, 0, 2).is_some()
        };
        if !fits {
            return Err(Error::arch(format!(
                "{}: a bias of shape {:?} for {n} outputs (expected [{n}])",
                label(node, index),
                c.dims
            )));
        }
        if let ConstSource::Node(_) = c.source {
            self.initializer_index(node, index, c.source)?;
        }
        Ok(Some(c))
    }

    /// A unique, readable layer name: the weight's name without `.weight`
    /// (PyTorch's module path), else the node's name.
    fn layer_name(&self, node: &NodeProto, index: usize, weight: &TensorProto) -> String {
        // A dequantized weight is named after its integer tensor (`<path>.weight_quantized`).
        let stored = self
            .constants
            .get(weight.name.as_str())
            .and_then(|&(_, src)| match src {
                ConstSource::Dequantized(n) => self.folded(n).and_then(|f| f.initializer),
                _ => None,
            })
            .map_or(weight.name.as_str(), |i| {
                let n = self.graph.initializer[i].name.as_str();
                n.strip_suffix("_quantized").unwrap_or(n)
            });
        let base = stored
            .strip_suffix(".weight")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| (!node.name.is_empty()).then(|| node.name.clone()))
            .unwrap_or_else(|| format!("{}_{index}", node.op_type));
        let mut name = base.clone();
        let mut k = 1;
        while self.layers.iter().any(|l| l.name == name) {
            k += 1;
            name = format!("{base}#{k}");
        }
        name
    }

    fn batch_norm(&mut self, index: usize, node: &'a NodeProto) -> Result<()> {
        let x = self.map_input(node, index)?;
        if attr_int(node, "training_mode", 0) != 0 || node.output.len() > 1 {
            return Err(unsupported(
                node,
                index,
                "training-mode batch normalisation (export the model in eval mode)",
            ));
        }
        let c = x.channels();
        let mut params = Vec::with_capacity(4);
        for k in 1..=4 {
            let p = self.constant_floats(node, index, k)?;
            if p.dims != [c] {
                return Err(Error::arch(format!(
                    "{}: parameter {k} has shape {:?} for {c} channels (expected [{c}])",
                    label(node, index),
                    p.dims
                )));
            }
            params.push(p);
        }
        let params: [Constant; 4] = params
            .try_into()
            .map_err(|_| corrupt(self.src, "batch-norm parameters"))?;
        let eps = attr_float(node, "epsilon", 1e-5);
        if let Some(v) = params[3]
            .values
            .iter()
            .find(|&&v| (v + eps).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
        {
            return Err(Error::arch(format!(
                "{}: a variance of {v} with epsilon {eps} (variance + epsilon must be > 0, \
                 or the normalisation divides by the square root of a non-positive number)",
                label(node, index)
            )));
        }
        self.output(node, index, x, Op::BatchNorm(Box::new(params), eps))
    }

    fn pool(&mut self, index: usize, node: &'a NodeProto) -> Result<()> {
        let x = self.map_input(node, index)?;
        let kernel = match attr_ints(node, "kernel_shape") {
            [a, b] if *a > 0 && *b > 0 => [*a as usize, *b as usize],
            other => {
                return Err(unsupported(
                    node,
                    index,
                    format!("kernel_shape {other:?} (2-D pooling expected)"),
                ));
            }
        };
        let (stride, pad) = self.window_attrs(index, node, kernel)?;
        let ceil = attr_int(node, "ceil_mode", 0) != 0;
        let h = pooled_size(x.h, kernel[0], stride[0], pad[0], ceil);
        let w = pooled_size(x.w, kernel[1], stride[1], pad[1], ceil);
        if h == 0 || w == 0 || pad[0] * 2 > kernel[0] || pad[1] * 2 > kernel[1] {
            return Err(Error::arch(format!(
                "pool {}: window {kernel:?} / stride {stride:?} / pads {pad:?} does not fit a {}x{} map",
                label(node, index),
                x.h,
                x.w
            )));
        }
        let op = Op::Pool {
            max: node.op_type == "MaxPool",
            window: Window {
                kernel,
                stride,
                pad,
            },
            count_include_pad: attr_int(node, "count_include_pad", 0) != 0,
        };
        self.output(node, index, Shape { h, w, ..x }, op)
    }

    /// `ReduceMean` over the two spatial axes: a global average pool (flattened
    /// when `keepdims = 0`). Axes come from the attribute (opset < 18) or input 1.
    fn reduce_mean(&mut self, index: usize, node: &'a NodeProto) -> Result<()> {
        let x = self.map_input(node, index)?;
        let axes_input = node.input.get(1).is_some_and(|n| !n.is_empty());
        let axes_attr = attr(node, "axes").is_some();
        if (self.opset >= 18 && axes_attr) || (self.opset < 18 && axes_input) {
            return Err(unsupported(
                node,
                index,
                format!(
                    "ReduceMean axes given as {} under opset {} (opset 18 and later take them \
                     as an input, earlier opsets as an attribute)",
                    if axes_attr {
                        "an attribute"
                    } else {
                        "an input"
                    },
                    self.opset
                ),
            ));
        }
        let axes: Vec<i64> = match node.input.get(1).filter(|n| !n.is_empty()) {
            Some(_) => {
                let (t, _) = self
                    .constant(node, 1)
                    .ok_or_else(|| unsupported(node, index, "axes that are not a constant"))?;
                tensor::ints(t, self.src)?
            }
            None => attr_ints(node, "axes").to_vec(),
        };
        let mut axes: Vec<i64> = axes
            .iter()
            .map(|&a| if a < 0 { a + 4 } else { a })
            .collect();
        axes.sort_unstable();
        if axes != [2, 3] {
            return Err(unsupported(
                node,
                index,
                format!("ReduceMean over axes {axes:?} (only the spatial axes [2, 3])"),
            ));
        }
        let flat = attr_int(node, "keepdims", 1) == 0;
        let shape = Shape {
            h: 1,
            w: 1,
            flat,
            ..x
        };
        self.output(node, index, shape, Op::GlobalPool { max: false })
    }

    fn reshape(&mut self, index: usize, node: &'a NodeProto) -> Result<()> {
        let x = self.shapes[self.value(node, index, 0)?].clone();
        let (t, src) = self
            .constant(node, 1)
            .ok_or_else(|| unsupported(node, index, "a shape that is not a constant"))?;
        let shape = tensor::ints(t, self.src)?;
        let features = x.len() as i64;
        // The batch is kept by `0` (copied, unless `allowzero`), by `-1` next to the
        // explicit feature count, or by `1` for one sample at a time.
        let copy_zero = attr_int(node, "allowzero", 0) == 0;
        if node.input.len() != 2 || tensor::dims(t, self.src)?.len() != 1 {
            return Err(unsupported(
                node,
                index,
                "a Reshape whose shape is not a 1-D constant",
            ));
        }
        match shape[..] {
            [n, f]
                if ((n == 0 && copy_zero && (f == -1 || f == features))
                    || (n == -1 && f == features)
                    || (Some(n) == self.batch.or(Some(1)) && (f == -1 || f == features))) =>
            {
                self.output(
                    node,
                    index,
                    Shape { flat: true, ..x },
                    Op::Flatten(Some(src)),
                )
            }
            _ => Err(unsupported(
                node,
                index,
                format!(
                    "Reshape to {shape:?} (only [batch, features] keeping the batch: [0, -1], \
                     [-1, {features}], [0, {features}], or the input's fixed batch {} with -1 \
                     or {features})",
                    self.batch.unwrap_or(1)
                ),
            )),
        }
    }

    fn add(&mut self, index: usize, node: &'a NodeProto) -> Result<()> {
        if node.input.len() != 2 {
            return Err(corrupt(
                self.src,
                format!("{} needs two inputs", label(node, index)),
            ));
        }
        let consts = [
            self.constant(node, 0).is_some(),
            self.constant(node, 1).is_some(),
        ];
        if consts[0] || consts[1] {
            let (k, ck) = if consts[0] { (1, 0) } else { (0, 1) };
            let x = self.shapes[self.value(node, index, k)?].clone();
            let c = self.constant_floats(node, index, ck)?;
            let fits = if x.flat {
                super::prepare::broadcast_vector(&c.dims, x.len(), 0, 2)
            } else {
                super::prepare::broadcast_vector(&c.dims, x.channels(), 2, 4)
            };
            if fits.is_none() {
                return Err(unsupported(
                    node,
                    index,
                    format!(
                        "adding a constant of shape {:?} to a {} tensor (only a scalar or one \
                         value per channel, [C, 1, 1], or per feature, [F], broadcast without \
                         changing the tensor's shape)",
                        c.dims,
                        if x.flat { "[N, F]" } else { "[N, C, H, W]" }
                    ),
                ));
            }
            return self.output(node, index, x, Op::AddConst(c));
        }
        let (a, b) = (
            self.shapes[self.value(node, index, 0)?].clone(),
            self.shapes[self.value(node, index, 1)?].clone(),
        );
        let same_layout = a.segments.len() == b.segments.len()
            && a.segments.iter().zip(&b.segments).all(|(p, q)| p.1 == q.1)
            && (a.h, a.w, a.flat) == (b.h, b.w, b.flat);
        if !same_layout {
            return Err(unsupported(
                node,
                index,
                format!(
                    "residual addition of tensors with different layouts ({} channels {}x{} \
                     and {} channels {}x{})",
                    a.channels(),
                    a.h,
                    a.w,
                    b.channels(),
                    b.h,
                    b.w
                ),
            ));
        }
        for (p, q) in a.segments.iter().zip(&b.segments) {
            self.widths.union(p.0, q.0);
        }
        self.output(node, index, a, Op::Add)
    }

    fn concat(&mut self, index: usize, node: &'a NodeProto) -> Result<()> {
        let parts: Vec<Shape> = (0..node.input.len())
            .map(|k| self.value(node, index, k).map(|s| self.shapes[s].clone()))
            .collect::<Result<_>>()?;
        let Some(first) = parts.first() else {
            return Err(corrupt(
                self.src,
                format!("{} has no inputs", label(node, index)),
            ));
        };
        let axis = attr_int(node, "axis", 1);
        let ok_axis = axis == 1 || (!first.flat && axis == -3);
        if !ok_axis
            || first.flat
            || parts
                .iter()
                .any(|p| (p.h, p.w, p.flat) != (first.h, first.w, first.flat))
        {
            return Err(unsupported(
                node,
                index,
                format!("Concat on axis {axis} (only channel concatenation of equally sized maps)"),
            ));
        }
        let shape = Shape {
            segments: parts.iter().flat_map(|p| p.segments.clone()).collect(),
            ..first.clone()
        };
        self.output(node, index, shape, Op::Concat)
    }

    /// Resolve the residual unions into final widths and build the architecture.
    fn finish(
        &mut self,
        name: &str,
        input: usize,
        output: usize,
    ) -> Result<(Architecture, Vec<Shape>)> {
        let n = self.widths.parent.len();
        let mut id_of_root = vec![usize::MAX; n];
        let mut widths = Vec::new();
        let mut remap = vec![WidthId(0); n];
        for (i, r) in remap.iter_mut().enumerate() {
            let root = self.widths.find(i);
            if id_of_root[root] == usize::MAX {
                id_of_root[root] = widths.len();
                widths.push(Width {
                    name: self.widths.names[root].clone(),
                    channels: self.widths.channels[root],
                    fixed: false,
                });
            }
            *r = WidthId(id_of_root[root]);
        }
        for l in &mut self.layers {
            l.output = remap[l.output.0];
            for s in &mut l.input {
                s.width = remap[s.width.0];
            }
        }
        let shapes: Vec<Shape> = self
            .shapes
            .iter()
            .map(|s| Shape {
                segments: s.segments.iter().map(|&(w, c)| (remap[w.0], c)).collect(),
                ..s.clone()
            })
            .collect();
        let out = &shapes[output];
        let [(out_width, _)] = out.segments[..] else {
            return Err(Error::unsupported(
                "a model whose output concatenates several layers' channels",
                "the output must come from one layer (the classifier)",
            ));
        };
        let arch = Architecture::new(
            name,
            widths,
            std::mem::take(&mut self.layers),
            shapes[input].segments[0].0,
            out_width,
        )?;
        Ok((arch, shapes))
    }
}
