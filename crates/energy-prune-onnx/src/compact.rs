//! Physically smaller models: remove the channels a [`PruningPlan`] drops from
//! every tensor that holds them (convolution and linear weights, biases,
//! normalisation parameters, per-channel constants, reshape targets).

use std::collections::HashMap;

use super::proto::{ModelProto, TensorProto};
use super::{ConstSource, OnnxModel, Op, Shape, tensor};
use energy_prune::arch::LayerKind;
use energy_prune::error::{Error, Result};
use energy_prune::network::PruningPlan;

impl OnnxModel {
    /// A copy of the model with the channels that `plan` drops physically removed:
    /// convolution filters and input channels, linear rows and columns (`H * W`
    /// features per channel after a flatten), biases, batch-normalisation tensors,
    /// per-channel constants and reshape targets are sliced consistently, residual
    /// additions and concatenations keep their coupling (they share one plan entry).
    ///
    /// With weights already zero on the dropped channels (e.g. after
    /// [`PruningPlan::apply`]), the compact model computes the same outputs as the
    /// masked one (up to the order of float additions). Output classes and input
    /// channels are never removed.
    ///
    /// # Errors
    /// [`PruningPlan::check`] errors (a plan made for another architecture);
    /// [`Error::Unsupported`] when a grouped (not depthwise) convolution would lose
    /// channels. A constant shared by tensors pruned differently is copied.
    pub fn compact(&self, plan: &PruningPlan) -> Result<OnnxModel> {
        plan.check(&self.arch)?;
        if self.quantized {
            return Err(Error::unsupported(
                "compacting a quantized (QDQ) model",
                "compact the float model, then quantize the compact one (OnnxModel::to_qdq)",
            ));
        }
        let kept = plan.kept();
        let channels = |s: &Shape| -> Vec<usize> {
            let mut out = Vec::new();
            let mut offset = 0;
            for &(w, c) in &s.segments {
                out.extend(kept[w.0].iter().map(|&k| offset + k));
                offset += c;
            }
            out
        };
        let features = |s: &Shape| -> Vec<usize> {
            let hw = s.h * s.w;
            channels(s)
                .iter()
                .flat_map(|&k| k * hw..(k + 1) * hw)
                .collect()
        };
        // Every layer's weights are written below (sliced), so start from the model
        // without them rather than encoding the full weights first.
        let mut proto: ModelProto = self.proto.clone();
        let mut sliced = Sliced::new();
        for step in &self.steps {
            let xs = &self.shapes[step.inputs[0]];
            match &step.op {
                Op::Layer(l) => {
                    let layer = &self.arch.layers()[*l];
                    let b = &self.bindings[*l];
                    let rows = kept[layer.output.0].clone();
                    let w = &self.weights[*l];
                    let (new_w, dims) = match layer.kind {
                        LayerKind::Conv2d(g) => {
                            let k = g.kernel_h * g.kernel_w;
                            let cols: Vec<usize> = if g.is_depthwise() {
                                vec![0]
                            } else if g.groups > 1 {
                                if rows.len() != g.out_channels
                                    || channels(xs).len() != g.in_channels
                                {
                                    return Err(Error::unsupported(
                                        format!(
                                            "removing channels around the grouped convolution `{}`",
                                            layer.name
                                        ),
                                        "keep every channel of its input and output widths \
                                         (freeze them) or convert it to depthwise/dense",
                                    ));
                                }
                                (0..g.in_per_group()).collect()
                            } else {
                                channels(xs)
                            };
                            let cg = g.in_per_group();
                            let mut out = Vec::with_capacity(rows.len() * cols.len() * k);
                            for &o in &rows {
                                for &i in &cols {
                                    let at = (o * cg + i) * k;
                                    out.extend_from_slice(&w[at..at + k]);
                                }
                            }
                            if g.is_depthwise() {
                                set_group(&mut proto, step.node, rows.len());
                            }
                            (out, vec![rows.len(), cols.len(), g.kernel_h, g.kernel_w])
                        }
                        LayerKind::Linear(g) => {
                            let cols = features(xs);
                            let n = g.in_features;
                            let mut out = Vec::with_capacity(rows.len() * cols.len());
                            for &o in &rows {
                                out.extend(cols.iter().map(|&i| w[o * n + i]));
                            }
                            let stored = if b.transposed {
                                super::transpose(&out, rows.len(), cols.len())
                            } else {
                                out
                            };
                            let dims = if b.transposed {
                                vec![cols.len(), rows.len()]
                            } else {
                                vec![rows.len(), cols.len()]
                            };
                            (stored, dims)
                        }
                    };
                    let graph = graph_mut(&mut proto)?;
                    tensor::set_floats(&mut graph.initializer[b.weight], &dims, &new_w);
                    if let Some(bias) = &b.bias {
                        let user = (b.node, 2);
                        let src = bias.source;
                        slice_const(&mut proto, &self.source, src, user, &rows, &mut sliced)?;
                    }
                }
                Op::BatchNorm(params, _) => {
                    let idx = channels(xs);
                    for p in params.iter() {
                        let user = (step.node, p.input);
                        slice_const(&mut proto, &self.source, p.source, user, &idx, &mut sliced)?;
                    }
                }
                Op::AddConst(c) if c.values.len() > 1 => {
                    let idx = if xs.flat { features(xs) } else { channels(xs) };
                    let user = (step.node, c.input);
                    slice_const(&mut proto, &self.source, c.source, user, &idx, &mut sliced)?;
                }
                Op::Flatten(Some(src)) => {
                    let n = features(xs).len() as i64;
                    let t = const_mut(&mut proto, *src)?;
                    let mut shape = tensor::ints(t, &self.source)?;
                    if shape.get(1).is_some_and(|&f| f != -1) {
                        shape[1] = n;
                        let d = tensor::dims(t, &self.source)?;
                        tensor::set_ints(t, &d, &shape);
                    }
                }
                _ => {}
            }
        }
        let graph = graph_mut(&mut proto)?;
        // Intermediate shapes changed; they are optional in ONNX.
        graph.value_info.clear();
        super::prepare::sync_initializer_inputs(graph);
        super::import::import(proto, Some(self.input_shape()), &self.source)
    }
}

fn graph_mut(proto: &mut ModelProto) -> Result<&mut super::proto::GraphProto> {
    proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::arch("the model has no graph"))
}

fn const_mut(proto: &mut ModelProto, src: ConstSource) -> Result<&mut TensorProto> {
    let graph = graph_mut(proto)?;
    match src {
        ConstSource::Initializer(i) => Ok(&mut graph.initializer[i]),
        ConstSource::Node(n) => graph.node[n]
            .attribute
            .iter_mut()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.as_mut())
            .ok_or_else(|| Error::arch("a Constant node lost its value")),
        ConstSource::Dequantized(_) => Err(Error::unsupported(
            "changing a dequantized constant",
            "compact the float model, then quantize it",
        )),
    }
}

/// Constants already sliced: the entries kept and the tensor as it was before.
type Sliced = HashMap<ConstSource, (Vec<usize>, TensorProto)>;

/// Keep entries `idx` of a per-channel constant along its single non-unit axis,
/// for input `user.1` of node `user.0`. A constant shared with a node that needs
/// other entries (PyTorch's exporter shares equal tensors, e.g. zero biases) is
/// copied from its original first, and the node is pointed at its own copy.
fn slice_const(
    proto: &mut ModelProto,
    source: &std::path::Path,
    src: ConstSource,
    user: (usize, usize),
    idx: &[usize],
    done: &mut Sliced,
) -> Result<()> {
    let target = match done.get(&src) {
        Some((prev, _)) if prev == idx => return Ok(()),
        Some((_, original)) => {
            let name = format!("{}__for_node_{}", original.name, user.0);
            let copy = TensorProto {
                name: name.clone(),
                ..original.clone()
            };
            let graph = graph_mut(proto)?;
            graph.initializer.push(copy);
            if let Some(input) = graph.node[user.0].input.get_mut(user.1) {
                *input = name;
            }
            ConstSource::Initializer(graph.initializer.len() - 1)
        }
        None => src,
    };
    let t = const_mut(proto, target)?;
    let original = t.clone();
    let values = tensor::floats(t, source)?;
    let mut dims = tensor::dims(t, source)?;
    let kept: Vec<f32> = idx.iter().map(|&i| values[i]).collect();
    if let Some(d) = dims.iter_mut().find(|d| **d == values.len()) {
        *d = kept.len();
    } else if dims.is_empty() {
        dims.push(kept.len());
    }
    tensor::set_floats(t, &dims, &kept);
    done.insert(target, (idx.to_vec(), original));
    Ok(())
}

fn set_group(proto: &mut ModelProto, node: usize, groups: usize) {
    if let Some(g) = proto.graph.as_mut()
        && let Some(a) = g.node[node]
            .attribute
            .iter_mut()
            .find(|a| a.name == "group")
    {
        a.i = groups as i64;
    }
}
