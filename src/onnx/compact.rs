//! Physically smaller models: remove the channels a [`PruningPlan`] drops from
//! every tensor that holds them (convolution and linear weights, biases,
//! normalisation parameters, per-channel constants, reshape targets).

use std::collections::HashMap;

use super::proto::{ModelProto, TensorProto};
use super::{ConstSource, OnnxModel, Op, Shape, tensor};
use crate::arch::LayerKind;
use crate::error::{Error, Result};
use crate::network::PruningPlan;

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
    /// channels, or one constant feeds two tensors pruned differently.
    pub fn compact(&self, plan: &PruningPlan) -> Result<OnnxModel> {
        plan.check(&self.arch)?;
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
        let mut proto: ModelProto = self.to_proto();
        let mut sliced: HashMap<ConstSource, Vec<usize>> = HashMap::new();
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
                    if let Some(bias) = b.bias {
                        slice_const(
                            &mut proto,
                            &self.source,
                            ConstSource::Initializer(bias),
                            &rows,
                            &mut sliced,
                        )?;
                    }
                }
                Op::BatchNorm(params, _) => {
                    let idx = channels(xs);
                    for p in params.iter() {
                        slice_const(&mut proto, &self.source, p.source, &idx, &mut sliced)?;
                    }
                }
                Op::AddConst(c) if c.values.len() > 1 => {
                    let idx = if xs.flat { features(xs) } else { channels(xs) };
                    slice_const(&mut proto, &self.source, c.source, &idx, &mut sliced)?;
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
    }
}

/// Keep entries `idx` of a per-channel constant along its single non-unit axis.
fn slice_const(
    proto: &mut ModelProto,
    source: &std::path::Path,
    src: ConstSource,
    idx: &[usize],
    done: &mut HashMap<ConstSource, Vec<usize>>,
) -> Result<()> {
    if let Some(prev) = done.get(&src) {
        if prev == idx {
            return Ok(());
        }
        return Err(Error::unsupported(
            "one constant tensor shared by layers whose channels are pruned differently",
            "give each layer its own bias / normalisation tensors before export",
        ));
    }
    let t = const_mut(proto, src)?;
    let values = tensor::floats(t, source)?;
    let mut dims = tensor::dims(t, source)?;
    let kept: Vec<f32> = idx.iter().map(|&i| values[i]).collect();
    if let Some(d) = dims.iter_mut().find(|d| **d == values.len()) {
        *d = kept.len();
    } else if dims.is_empty() {
        dims.push(kept.len());
    }
    tensor::set_floats(t, &dims, &kept);
    done.insert(src, idx.to_vec());
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
