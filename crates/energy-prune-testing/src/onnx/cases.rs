//! Structurally random ONNX models for fuzzing and for the differential test
//! against onnxruntime: small CNNs built from the operators the import reads
//! (convolutions with and without groups, batch normalisation, ReLU/ReLU6,
//! pooling, residual additions, concatenations, constants added with every kind of
//! broadcast shape, Flatten/Reshape/ReduceMean heads, Gemm and MatMul), then bent
//! the way exporters and hostile users bend them: deduplicated (shared)
//! initializers, initializers listed as graph inputs, duplicate names, a missing
//! opset, operator forms of another opset, extra inputs, fixed batches.
//!
//! [`case`] is a pure function of its seed; [`fingerprint`] of the bytes lets
//! fixtures recorded with onnxruntime detect a changed generator.

use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

use super::proto::{AttributeProto, ModelProto, TensorProto, ValueInfoProto, tensor_shape_proto};
use super::{GraphWriter, float_attr, int_attr, ints_attr, set_floats, set_ints, tensor_type};

/// One generated model with an input to run it on.
#[derive(Debug, Clone)]
pub struct Case {
    /// The seed it was made from.
    pub seed: u64,
    /// The model.
    pub model: ModelProto,
    /// `[C, H, W]` of one sample.
    pub input_shape: [usize; 3],
    /// Samples in `input`.
    pub batch: usize,
    /// `batch * C * H * W` values in `[-1, 1]`.
    pub input: Vec<f32>,
    /// What was done to the model beyond a plain export (for messages).
    pub twists: Vec<&'static str>,
}

/// 64-bit FNV-1a of `bytes` (the same function in `scripts/check_onnx_differential.py`).
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The tensor being built and its layout.
struct Map {
    name: String,
    c: usize,
    h: usize,
    w: usize,
}

struct Builder {
    g: GraphWriter,
    rng: ChaCha12Rng,
    layer: usize,
    twists: Vec<&'static str>,
    /// A Reshape fixed the batch to one sample.
    batch_one: bool,
}

impl Builder {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn name(&mut self, kind: &str) -> String {
        self.layer += 1;
        format!("{kind}{}", self.layer)
    }

    fn conv(&mut self, x: Map) -> Map {
        let name = self.name("conv");
        let k = if x.h >= 3 && self.chance(0.6) { 3 } else { 1 };
        let pad = usize::from(k == 3 && self.chance(0.6));
        let stride = if x.h >= 4 && self.chance(0.25) { 2 } else { 1 };
        let depthwise = x.c > 1 && self.chance(0.2);
        let (out, groups) = if depthwise {
            (x.c, x.c)
        } else {
            (self.rng.random_range(1..=6), 1)
        };
        let bias = self.chance(0.6);
        let y = self
            .g
            .conv(&x.name, &name, x.c, out, k, stride, pad, groups, bias);
        let size = |n: usize| (n + 2 * pad - k) / stride + 1;
        let mut y = Map {
            name: y,
            c: out,
            h: size(x.h),
            w: size(x.w),
        };
        if self.chance(0.4) {
            y.name = self.g.batch_norm(&y.name, &format!("{name}.bn"), out);
        }
        y.name = match self.rng.random_range(0..3) {
            0 => self.g.relu(&y.name),
            1 => self.g.relu6(&y.name),
            _ => y.name,
        };
        y
    }

    /// A constant added to a map, with a broadcast shape that may or may not keep
    /// the map's shape under ONNX rules.
    fn add_const_map(&mut self, x: Map) -> Map {
        let c = x.c;
        let dims: Vec<usize> = match self.rng.random_range(0..7) {
            0 => vec![c, 1, 1],
            1 => vec![1, c, 1, 1],
            2 => vec![],
            3 => vec![1],
            4 => {
                self.twists.push("[C,1,1,1] constant");
                vec![c, 1, 1, 1]
            }
            5 => {
                self.twists.push("[C] constant on a map");
                vec![c]
            }
            _ => {
                self.twists.push("[1,1,C,1,1] constant");
                vec![1, 1, c, 1, 1]
            }
        };
        let name = self.name("shift");
        let k = self.g.random(&name, &dims, 0.5);
        let y = if self.chance(0.5) {
            self.g.raw("Add", &[&x.name, &k], vec![])
        } else {
            self.g.raw("Add", &[&k, &x.name], vec![])
        };
        Map { name: y, ..x }
    }

    fn block(&mut self, x: Map) -> Map {
        match self.rng.random_range(0..10) {
            0..=3 => self.conv(x),
            4 if x.h >= 2 => {
                let max = self.chance(0.5);
                let ceil = self.chance(0.3);
                let y = self.g.pool(&x.name, max, 2, 2, 0, ceil);
                let size = |n: usize| if ceil { n.div_ceil(2) } else { n / 2 };
                Map {
                    name: y,
                    h: size(x.h),
                    w: size(x.w),
                    ..x
                }
            }
            5 | 6 => {
                // Residual: x + conv1x1(x).
                let name = self.name("res");
                let y = self.g.conv(&x.name, &name, x.c, x.c, 1, 1, 0, 1, true);
                let y = self.g.add(&x.name, &y);
                let y = self.g.relu(&y);
                Map { name: y, ..x }
            }
            7 => {
                let a = self.name("branch");
                let b = self.name("branch");
                let (ca, cb) = (self.rng.random_range(1..=3), self.rng.random_range(1..=3));
                let ya = self.g.conv(&x.name, &a, x.c, ca, 1, 1, 0, 1, true);
                let yb = self.g.conv(&x.name, &b, x.c, cb, 1, 1, 0, 1, false);
                let y = self.g.concat(&[&ya, &yb]);
                Map {
                    name: y,
                    c: ca + cb,
                    ..x
                }
            }
            8 => self.add_const_map(x),
            _ => self.conv(x),
        }
    }

    /// Flatten the map to `[N, F]`; returns the name and F.
    fn head(&mut self, x: Map, fixed_batch: Option<usize>) -> (String, usize) {
        let f = x.c * x.h * x.w;
        match self.rng.random_range(0..8) {
            0 => {
                let y = self.g.global_avg_pool(&x.name);
                (self.g.flatten(&y), x.c)
            }
            1 => {
                // ReduceMean over H and W, axes in the form of the opset (or not).
                let form_18 = self.g.opset >= 18;
                let as_input = if self.chance(0.15) {
                    self.twists.push("ReduceMean axes of another opset");
                    !form_18
                } else {
                    form_18
                };
                let y = if as_input {
                    let axes = self.ints_const(&[2, 3]);
                    self.g.raw(
                        "ReduceMean",
                        &[&x.name, &axes],
                        vec![int_attr("keepdims", 0)],
                    )
                } else {
                    self.g.raw(
                        "ReduceMean",
                        &[&x.name],
                        vec![ints_attr("axes", &[2, 3]), int_attr("keepdims", 0)],
                    )
                };
                (y, x.c)
            }
            2..=4 => {
                let target: [i64; 2] = match self.rng.random_range(0..8) {
                    0 => [0, -1],
                    1 => [-1, f as i64],
                    2 => {
                        self.batch_one = true;
                        [1, -1]
                    }
                    3 => [0, f as i64],
                    4 => {
                        self.twists.push("Reshape to [2, -1]");
                        [2, -1]
                    }
                    5 => {
                        self.twists.push("Reshape to [-1, -1]");
                        [-1, -1]
                    }
                    6 if fixed_batch.is_some() => [fixed_batch.unwrap_or(1) as i64, -1],
                    _ => [-1, f as i64],
                };
                let shape = self.ints_const(&target);
                (self.g.raw("Reshape", &[&x.name, &shape], vec![]), f)
            }
            5 if x.h == 1 && x.w == 1 => {
                self.twists.push("Gemm on a 4-D map");
                (x.name, f)
            }
            _ => (self.g.flatten(&x.name), f),
        }
    }

    fn ints_const(&mut self, values: &[i64]) -> String {
        let name = self.name("shape");
        let mut t = TensorProto {
            name: name.clone(),
            ..TensorProto::default()
        };
        set_ints(&mut t, &[values.len()], values);
        self.g.initializers.push(t);
        name
    }

    fn linear(&mut self, x: &str, in_f: usize, out_f: usize) -> String {
        let name = self.name("fc");
        if self.chance(0.3) {
            self.g.matmul(x, &name, in_f, out_f)
        } else {
            self.g.linear(x, &name, in_f, out_f)
        }
    }

    fn add_const_flat(&mut self, x: &str, f: usize) -> String {
        let dims = match self.rng.random_range(0..4) {
            0 => vec![f],
            1 => vec![1, f],
            2 => vec![],
            _ => {
                self.twists.push("[F,1] constant");
                vec![f, 1]
            }
        };
        let name = self.name("offset");
        let k = self.g.random(&name, &dims, 0.5);
        self.g.raw("Add", &[x, &k], vec![])
    }
}

/// The model of `seed`.
pub fn case(seed: u64) -> Case {
    let mut rng = ChaCha12Rng::seed_from_u64(seed ^ 0x0c0f_fee0);
    let c = rng.random_range(1..=3);
    let side = rng.random_range(3..=8);
    let input_shape = [c, side, side];
    let (mut g, x) = GraphWriter::new(input_shape, seed);
    g.opset = [11, 13, 13, 17, 17, 17, 18][rng.random_range(0..7)];
    let fixed_batch = rng.random_bool(0.3).then(|| rng.random_range(1..=2));
    let mut b = Builder {
        g,
        rng,
        layer: 0,
        twists: Vec::new(),
        batch_one: false,
    };
    let mut x = Map {
        name: x,
        c,
        h: side,
        w: side,
    };
    for _ in 0..b.rng.random_range(1..=4) {
        x = b.block(x);
    }
    let (mut y, mut f) = b.head(x, fixed_batch);
    if b.chance(0.2) {
        y = b.add_const_flat(&y, f);
    }
    if b.chance(0.4) {
        let hidden = b.rng.random_range(2..=8);
        y = b.linear(&y, f, hidden);
        y = b.g.relu(&y);
        f = hidden;
    }
    let classes = b.rng.random_range(2..=5);
    let y = b.linear(&y, f, classes);
    let Builder {
        g,
        mut rng,
        mut twists,
        batch_one,
        ..
    } = b;
    let mut model = g.finish(&y, classes);
    twist(&mut model, &mut rng, &mut twists);
    if let Some(n) = fixed_batch {
        set_batch(&mut model, n);
    }
    let batch = match fixed_batch {
        Some(n) => n,
        None if batch_one => 1,
        None => 2,
    };
    let input = (0..batch * c * side * side)
        .map(|_| rng.random_range(-1.0f32..=1.0))
        .collect();
    Case {
        seed,
        model,
        input_shape,
        batch,
        input,
        twists,
    }
}

fn set_batch(model: &mut ModelProto, n: usize) {
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    if let Some(super::proto::type_proto::Value::TensorType(t)) = graph.input[0]
        .r#type
        .as_mut()
        .and_then(|t| t.value.as_mut())
        && let Some(shape) = t.shape.as_mut()
        && let Some(d) = shape.dim.first_mut()
    {
        d.value = Some(tensor_shape_proto::dimension::Value::DimValue(n as i64));
    }
}

/// Exporter habits and hostile edits, each with its own probability.
fn twist(model: &mut ModelProto, rng: &mut ChaCha12Rng, twists: &mut Vec<&'static str>) {
    let opset = model.opset_import.first().map_or(17, |o| o.version);
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    // Deduplication: a node input reads an earlier initializer of the same dims
    // (the values of the first win, as when an exporter merges equal tensors).
    if rng.random_bool(0.45) {
        let mut inputs: Vec<(usize, usize, usize)> = Vec::new();
        for (n, node) in graph.node.iter().enumerate() {
            for (k, name) in node.input.iter().enumerate() {
                if let Some(i) = graph.initializer.iter().position(|t| &t.name == name) {
                    inputs.push((n, k, i));
                }
            }
        }
        for _ in 0..rng.random_range(1..=3) {
            let Some(&(n, k, i)) = inputs.get(rng.random_range(0..inputs.len().max(1))) else {
                break;
            };
            let dims = graph.initializer[i].dims.clone();
            let dtype = graph.initializer[i].data_type;
            if let Some(j) = (0..graph.initializer.len()).find(|&j| {
                j != i
                    && graph.initializer[j].dims == dims
                    && graph.initializer[j].data_type == dtype
            }) {
                graph.node[n].input[k] = graph.initializer[j].name.clone();
                twists.push("shared initializer");
            }
        }
        // Initializers nobody reads any more are dropped, as exporters do.
        let used: std::collections::HashSet<String> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .collect();
        graph.initializer.retain(|t| used.contains(&t.name));
    }
    if rng.random_bool(0.15) {
        // torch.onnx.export(..., keep_initializers_as_inputs=True)
        let listed: Vec<ValueInfoProto> = graph
            .initializer
            .iter()
            .filter(|t| t.data_type == super::FLOAT)
            .map(|t| ValueInfoProto {
                name: t.name.clone(),
                r#type: tensor_type(&t.dims),
                ..ValueInfoProto::default()
            })
            .collect();
        graph.input.extend(listed);
        twists.push("initializers as inputs");
    }
    if rng.random_bool(0.04) && !graph.initializer.is_empty() {
        let i = rng.random_range(0..graph.initializer.len());
        let mut copy = graph.initializer[i].clone();
        if copy.data_type == super::FLOAT {
            let n = copy.raw_data.len() / 4;
            let dims: Vec<usize> = copy.dims.iter().map(|&d| d as usize).collect();
            set_floats(&mut copy, &dims, &vec![0.25; n]);
        }
        graph.initializer.push(copy);
        twists.push("duplicate initializer name");
    }
    let convs: Vec<usize> = (0..graph.node.len())
        .filter(|&i| graph.node[i].op_type == "Conv")
        .collect();
    if rng.random_bool(0.03)
        && let Some(&n) = convs.first()
    {
        let extra = graph.node[n].input[1].clone();
        let node = &mut graph.node[n];
        while node.input.len() < 3 {
            node.input.push(String::new());
        }
        node.input.push(extra);
        twists.push("Conv with 4 inputs");
    }
    if rng.random_bool(0.03)
        && let Some(&n) = convs.last()
    {
        graph.node[n].attribute.push(AttributeProto {
            name: "auto_pad".into(),
            r#type: super::proto::attribute_proto::AttributeType::String as i32,
            s: b"VALID".to_vec(),
            ..AttributeProto::default()
        });
        twists.push("auto_pad VALID with pads");
    }
    if rng.random_bool(0.05)
        && let Some(node) = graph.node.iter_mut().find(|n| n.op_type == "Clip")
    {
        // Clip bounds as attributes: valid before opset 11 only.
        node.input.truncate(1);
        node.attribute.push(float_attr("min", 0.0));
        node.attribute.push(float_attr("max", 6.0));
        if opset >= 11 {
            twists.push("Clip attributes under opset >= 11");
        }
    }
    if rng.random_bool(0.02) {
        model.opset_import.clear();
        twists.push("no opset");
    }
}

/// What the crate does with a [`Case`]: import, run, save and re-import, prune
/// with a random plan, compact and re-import. Every step that fails on a model the
/// import accepted is a broken guarantee, reported as `Err`.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The import's error message when the model is refused (then nothing else is set).
    pub refused: Option<String>,
    /// Outputs of the imported model on the case's input.
    pub output: Vec<f32>,
    /// The file `save` writes.
    pub saved: Vec<u8>,
    /// The compacted file (random channels removed, their weights zeroed first)
    /// and the compacted model's outputs on the input.
    pub compact: Vec<u8>,
    /// Outputs of the compacted model.
    pub compact_output: Vec<f32>,
}

/// Largest difference between two outputs relative to their scale.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + x.abs().max(y.abs())))
        .fold(0.0, f32::max)
}

/// Run a case through the crate; `Err` names the guarantee that broke.
///
/// # Errors
/// A message when an accepted model cannot run, when the saved file computes
/// other outputs or does not re-import, or when the compacted model differs from
/// the masked one.
pub fn evaluate(case: &Case) -> Result<Evaluation, String> {
    use energy_prune::network::{Network, PruningPlan};
    use energy_prune_onnx::OnnxModel;
    let bytes = super::to_bytes(&case.model);
    let src = std::path::Path::new("case.onnx");
    let model = match OnnxModel::from_bytes(&bytes, None, src) {
        Ok(m) => m,
        Err(e) => {
            return Ok(Evaluation {
                refused: Some(e.to_string()),
                output: Vec::new(),
                saved: Vec::new(),
                compact: Vec::new(),
                compact_output: Vec::new(),
            });
        }
    };
    let run = |m: &OnnxModel, what: &str| {
        m.run(&case.input, case.batch)
            .map_err(|e| format!("{what}: run failed: {e}"))
    };
    let output = run(&model, "imported model")?;
    let saved = model.to_bytes();
    let reloaded = OnnxModel::from_bytes(&saved, None, src)
        .map_err(|e| format!("the saved file does not re-import: {e}"))?;
    let again = run(&reloaded, "saved model")?;
    if again != output {
        return Err(format!(
            "save and re-import change the outputs by {}",
            max_rel_diff(&again, &output)
        ));
    }
    // A random plan: every inner width keeps a random non-empty subset.
    let arch = model.architecture();
    let mut rng = ChaCha12Rng::seed_from_u64(case.seed ^ 0x91a7);
    let (input, output_width) = (arch.input_width(), arch.output_width());
    let kept: Vec<Vec<usize>> = arch
        .widths()
        .iter()
        .enumerate()
        .map(|(u, w)| {
            if u == input.0 || u == output_width.0 || w.fixed || rng.random_bool(0.3) {
                (0..w.channels).collect()
            } else {
                let k: Vec<usize> = (0..w.channels).filter(|_| rng.random_bool(0.6)).collect();
                if k.is_empty() { vec![0] } else { k }
            }
        })
        .collect();
    let plan = PruningPlan::new(arch, kept).map_err(|e| format!("plan: {e}"))?;
    let mut masked = model.clone();
    plan.apply(&mut masked)
        .map_err(|e| format!("applying the plan: {e}"))?;
    let masked_output = run(&masked, "masked model")?;
    let compacted = match masked.compact(&plan) {
        Ok(c) => c,
        // Grouped (not depthwise) convolutions cannot lose channels: a clean refusal.
        Err(energy_prune::Error::Unsupported { .. }) => masked.clone(),
        Err(e) => return Err(format!("compaction failed: {e}")),
    };
    let compact_output = run(&compacted, "compacted model")?;
    let d = max_rel_diff(&compact_output, &masked_output);
    if d > 1e-4 {
        return Err(format!(
            "the compacted model differs from the masked one by {d} (kept {:?}: {compact_output:?} vs {masked_output:?})",
            plan.kept()
        ));
    }
    let compact = compacted.to_bytes();
    let re = OnnxModel::from_bytes(&compact, None, src)
        .map_err(|e| format!("the compacted file does not re-import: {e}"))?;
    if run(&re, "re-imported compacted model")? != compact_output {
        return Err("the compacted file computes other outputs after re-import".into());
    }
    Ok(Evaluation {
        refused: None,
        output,
        saved,
        compact,
        compact_output,
    })
}
