//! Writing ONNX graphs node by node in Rust, in the form `torch.onnx.export`
//! gives them (initializers named after the PyTorch module path, `Gemm` with
//! `transB = 1`, `Flatten` before the classifier, `Clip` bounds as inputs). Used by
//! the tests and examples to make models without Python; deterministic weights
//! from a seed.

use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType,
    tensor_shape_proto::{Dimension, dimension},
    type_proto,
};
use super::tensor;

/// A graph under construction. Every method returns the name of the value it
/// produces.
pub struct GraphWriter {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    input: ValueInfoProto,
    rng: StdRng,
    count: usize,
    /// Opset written into the model (17 by default, as PyTorch 2.x exports).
    pub opset: i64,
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..AttributeProto::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..AttributeProto::default()
    }
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..AttributeProto::default()
    }
}

fn tensor_type(dims: &[i64]) -> Option<TypeProto> {
    Some(TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: tensor::FLOAT,
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|&d| Dimension {
                        value: Some(if d > 0 {
                            dimension::Value::DimValue(d)
                        } else {
                            dimension::Value::DimParam("batch".into())
                        }),
                        ..Dimension::default()
                    })
                    .collect(),
            }),
        })),
        ..TypeProto::default()
    })
}

impl GraphWriter {
    /// A graph reading one `N x c x h x w` input named `input` (N symbolic);
    /// weights drawn from `seed`. Returns the writer and the input's name.
    pub fn new(input: [usize; 3], seed: u64) -> (Self, String) {
        let [c, h, w] = input.map(|v| v as i64);
        let input = ValueInfoProto {
            name: "input".into(),
            r#type: tensor_type(&[0, c, h, w]),
            ..ValueInfoProto::default()
        };
        (
            Self {
                nodes: Vec::new(),
                initializers: Vec::new(),
                input,
                rng: StdRng::seed_from_u64(seed),
                count: 0,
                opset: 17,
            },
            "input".into(),
        )
    }

    fn fresh(&mut self, op: &str) -> String {
        self.count += 1;
        format!("/{op}_{}_output_0", self.count)
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(op);
        self.nodes.push(NodeProto {
            name: format!("/{op}_{}", self.count),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..NodeProto::default()
        });
        out
    }

    /// Add an initializer of uniform random values in `[-scale, scale]`, none of
    /// them zero (a zero would count as pruned).
    pub fn random(&mut self, name: &str, dims: &[usize], scale: f32) -> String {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| match self.rng.random_range(-scale..=scale) {
                0.0 => scale * 0.5,
                v => v,
            })
            .collect();
        self.tensor(name, dims, &v)
    }

    /// Add a float initializer with the given values.
    pub fn tensor(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let mut t = TensorProto {
            name: name.into(),
            ..TensorProto::default()
        };
        tensor::set_floats(&mut t, dims, values);
        self.initializers.push(t);
        name.into()
    }

    /// `nn.Conv2d(in_c, out_c, k, stride, pad, groups, bias)` named `name`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        name: &str,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        bias: bool,
    ) -> String {
        let fan_in = (in_c / groups * k * k) as f32;
        let w = self.random(
            &format!("{name}.weight"),
            &[out_c, in_c / groups, k, k],
            1.0 / fan_in.sqrt(),
        );
        let mut inputs = vec![x.to_string(), w];
        if bias {
            inputs.push(self.random(&format!("{name}.bias"), &[out_c], 0.1));
        }
        let (k, s, p) = (k as i64, stride as i64, pad as i64);
        let attrs = vec![
            ints_attr("dilations", &[1, 1]),
            int_attr("group", groups as i64),
            ints_attr("kernel_shape", &[k, k]),
            ints_attr("pads", &[p, p, p, p]),
            ints_attr("strides", &[s, s]),
        ];
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node("Conv", &refs, attrs)
    }

    /// `nn.BatchNorm2d(c)` in eval mode, named `name`.
    pub fn batch_norm(&mut self, x: &str, name: &str, c: usize) -> String {
        let scale = self.random(&format!("{name}.weight"), &[c], 0.5);
        let bias = self.random(&format!("{name}.bias"), &[c], 0.1);
        let mean = self.random(&format!("{name}.running_mean"), &[c], 0.1);
        let var: Vec<f32> = (0..c).map(|_| self.rng.random_range(0.5..1.5)).collect();
        let var = self.tensor(&format!("{name}.running_var"), &[c], &var);
        self.node(
            "BatchNormalization",
            &[x, &scale, &bias, &mean, &var],
            vec![float_attr("epsilon", 1e-5), float_attr("momentum", 0.9)],
        )
    }

    /// `ReLU`.
    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    /// `ReLU6` as PyTorch exports it: `Clip` with constant bounds 0 and 6.
    pub fn relu6(&mut self, x: &str) -> String {
        let n = self.count;
        let lo = self.tensor(&format!("clip_min_{n}"), &[], &[0.0]);
        let hi = self.tensor(&format!("clip_max_{n}"), &[], &[6.0]);
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    /// `Dropout` (an identity at inference).
    pub fn dropout(&mut self, x: &str) -> String {
        self.node("Dropout", &[x], vec![])
    }

    /// `MaxPool2d` / `AvgPool2d`.
    pub fn pool(
        &mut self,
        x: &str,
        max: bool,
        k: usize,
        stride: usize,
        pad: usize,
        ceil: bool,
    ) -> String {
        let (k, s, p) = (k as i64, stride as i64, pad as i64);
        let mut attrs = vec![
            int_attr("ceil_mode", i64::from(ceil)),
            ints_attr("kernel_shape", &[k, k]),
            ints_attr("pads", &[p, p, p, p]),
            ints_attr("strides", &[s, s]),
        ];
        if !max {
            attrs.push(int_attr("count_include_pad", 1));
        }
        self.node(if max { "MaxPool" } else { "AveragePool" }, &[x], attrs)
    }

    /// `GlobalAveragePool` (PyTorch's `AdaptiveAvgPool2d(1)`).
    pub fn global_avg_pool(&mut self, x: &str) -> String {
        self.node("GlobalAveragePool", &[x], vec![])
    }

    /// `torch.flatten(x, 1)`.
    pub fn flatten(&mut self, x: &str) -> String {
        self.node("Flatten", &[x], vec![int_attr("axis", 1)])
    }

    /// `x.view(-1, features)` with the target shape in a `Constant` node.
    pub fn reshape(&mut self, x: &str, features: i64) -> String {
        let mut t = TensorProto::default();
        tensor::set_ints(&mut t, &[2], &[-1, features]);
        let shape = self.fresh("Constant");
        self.nodes.push(NodeProto {
            name: format!("/Constant_{}", self.count),
            op_type: "Constant".into(),
            output: vec![shape.clone()],
            attribute: vec![AttributeProto {
                name: "value".into(),
                r#type: AttributeType::Tensor as i32,
                t: Some(t),
                ..AttributeProto::default()
            }],
            ..NodeProto::default()
        });
        self.node("Reshape", &[x, &shape], vec![])
    }

    /// `nn.Linear(in_f, out_f)` as `Gemm(transB = 1)`.
    pub fn linear(&mut self, x: &str, name: &str, in_f: usize, out_f: usize) -> String {
        let w = self.random(
            &format!("{name}.weight"),
            &[out_f, in_f],
            1.0 / (in_f as f32).sqrt(),
        );
        let b = self.random(&format!("{name}.bias"), &[out_f], 0.1);
        self.node(
            "Gemm",
            &[x, &w, &b],
            vec![
                float_attr("alpha", 1.0),
                float_attr("beta", 1.0),
                int_attr("transB", 1),
            ],
        )
    }

    /// A linear layer as `MatMul` with a `[in, out]` weight plus `Add` of the bias.
    pub fn matmul(&mut self, x: &str, name: &str, in_f: usize, out_f: usize) -> String {
        let w = self.random(
            &format!("{name}.weight"),
            &[in_f, out_f],
            1.0 / (in_f as f32).sqrt(),
        );
        let b = self.random(&format!("{name}.bias"), &[out_f], 0.1);
        let y = self.node("MatMul", &[x, &w], vec![]);
        self.node("Add", &[&y, &b], vec![])
    }

    /// Elementwise sum (residual connection).
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    /// Concatenation on channels.
    pub fn concat(&mut self, xs: &[&str]) -> String {
        self.node("Concat", xs, vec![int_attr("axis", 1)])
    }

    /// Any node (for operators the helpers above do not cover).
    pub fn raw(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.node(op, inputs, attrs)
    }

    /// The finished model with `output` as its single output of `classes` values.
    pub fn finish(self, output: &str, classes: usize) -> ModelProto {
        let out = ValueInfoProto {
            name: output.into(),
            r#type: tensor_type(&[0, classes as i64]),
            ..ValueInfoProto::default()
        };
        ModelProto {
            ir_version: 8,
            producer_name: "energy-prune".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            graph: Some(GraphProto {
                name: "main_graph".into(),
                node: self.nodes,
                initializer: self.initializers,
                input: vec![self.input],
                output: vec![out],
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        }
    }
}

/// Graphs of torchvision's classification models as `torch.onnx.export` writes
/// them at 224 x 224 (eval mode, batch normalisation kept as nodes), with random
/// weights: AlexNet, SqueezeNet 1.0, ResNet-18, MobileNet v2.
pub mod torchvision {
    use super::GraphWriter;
    use crate::onnx::proto::ModelProto;

    /// `torchvision.models.alexnet()`.
    pub fn alexnet(seed: u64) -> ModelProto {
        let (mut g, x) = GraphWriter::new([3, 224, 224], seed);
        let x = g.conv(&x, "features.0", 3, 64, 11, 4, 2, 1, true);
        let x = g.relu(&x);
        let x = g.pool(&x, true, 3, 2, 0, false);
        let x = g.conv(&x, "features.3", 64, 192, 5, 1, 2, 1, true);
        let x = g.relu(&x);
        let x = g.pool(&x, true, 3, 2, 0, false);
        let x = g.conv(&x, "features.6", 192, 384, 3, 1, 1, 1, true);
        let x = g.relu(&x);
        let x = g.conv(&x, "features.8", 384, 256, 3, 1, 1, 1, true);
        let x = g.relu(&x);
        let x = g.conv(&x, "features.10", 256, 256, 3, 1, 1, 1, true);
        let x = g.relu(&x);
        let x = g.pool(&x, true, 3, 2, 0, false);
        // AdaptiveAvgPool2d((6, 6)) on a 6 x 6 map: a 1 x 1 average.
        let x = g.pool(&x, false, 1, 1, 0, false);
        let x = g.flatten(&x);
        let x = g.dropout(&x);
        let x = g.linear(&x, "classifier.1", 9216, 4096);
        let x = g.relu(&x);
        let x = g.dropout(&x);
        let x = g.linear(&x, "classifier.4", 4096, 4096);
        let x = g.relu(&x);
        let x = g.linear(&x, "classifier.6", 4096, 1000);
        g.finish(&x, 1000)
    }

    fn fire(g: &mut GraphWriter, x: &str, name: &str, inp: usize, s: usize, e: usize) -> String {
        let sq = g.conv(x, &format!("{name}.squeeze"), inp, s, 1, 1, 0, 1, true);
        let sq = g.relu(&sq);
        let a = g.conv(&sq, &format!("{name}.expand1x1"), s, e, 1, 1, 0, 1, true);
        let a = g.relu(&a);
        let b = g.conv(&sq, &format!("{name}.expand3x3"), s, e, 3, 1, 1, 1, true);
        let b = g.relu(&b);
        g.concat(&[&a, &b])
    }

    /// `torchvision.models.squeezenet1_0()`.
    pub fn squeezenet1_0(seed: u64) -> ModelProto {
        let (mut g, x) = GraphWriter::new([3, 224, 224], seed);
        let x = g.conv(&x, "features.0", 3, 96, 7, 2, 0, 1, true);
        let x = g.relu(&x);
        let mut x = g.pool(&x, true, 3, 2, 0, true);
        let fires: [(usize, usize, usize, usize); 8] = [
            (3, 96, 16, 64),
            (4, 128, 16, 64),
            (5, 128, 32, 128),
            (7, 256, 32, 128),
            (8, 256, 48, 192),
            (9, 384, 48, 192),
            (10, 384, 64, 256),
            (12, 512, 64, 256),
        ];
        for (idx, inp, s, e) in fires {
            if idx == 7 || idx == 12 {
                x = g.pool(&x, true, 3, 2, 0, true);
            }
            x = fire(&mut g, &x, &format!("features.{idx}"), inp, s, e);
        }
        let x = g.dropout(&x);
        let x = g.conv(&x, "classifier.1", 512, 1000, 1, 1, 0, 1, true);
        let x = g.relu(&x);
        let x = g.global_avg_pool(&x);
        let x = g.flatten(&x);
        g.finish(&x, 1000)
    }

    /// `torchvision.models.resnet18()`.
    pub fn resnet18(seed: u64) -> ModelProto {
        let (mut g, x) = GraphWriter::new([3, 224, 224], seed);
        let x = g.conv(&x, "conv1", 3, 64, 7, 2, 3, 1, false);
        let x = g.batch_norm(&x, "bn1", 64);
        let x = g.relu(&x);
        let mut x = g.pool(&x, true, 3, 2, 1, false);
        let mut inp = 64;
        for (stage, ch) in [64usize, 128, 256, 512].into_iter().enumerate() {
            for blk in 0..2 {
                let stride = if stage > 0 && blk == 0 { 2 } else { 1 };
                let n = format!("layer{}.{blk}", stage + 1);
                let h = g.conv(&x, &format!("{n}.conv1"), inp, ch, 3, stride, 1, 1, false);
                let h = g.batch_norm(&h, &format!("{n}.bn1"), ch);
                let h = g.relu(&h);
                let h = g.conv(&h, &format!("{n}.conv2"), ch, ch, 3, 1, 1, 1, false);
                let h = g.batch_norm(&h, &format!("{n}.bn2"), ch);
                let sc = if stride != 1 || inp != ch {
                    let d = format!("{n}.downsample");
                    let s = g.conv(&x, &format!("{d}.0"), inp, ch, 1, stride, 0, 1, false);
                    g.batch_norm(&s, &format!("{d}.1"), ch)
                } else {
                    x.clone()
                };
                let y = g.add(&h, &sc);
                x = g.relu(&y);
                inp = ch;
            }
        }
        let x = g.global_avg_pool(&x);
        let x = g.flatten(&x);
        let x = g.linear(&x, "fc", 512, 1000);
        g.finish(&x, 1000)
    }

    /// `torchvision.models.mobilenet_v2()`.
    pub fn mobilenet_v2(seed: u64) -> ModelProto {
        let (mut g, x) = GraphWriter::new([3, 224, 224], seed);
        let x = g.conv(&x, "features.0.0", 3, 32, 3, 2, 1, 1, false);
        let x = g.batch_norm(&x, "features.0.1", 32);
        let mut x = g.relu6(&x);
        let mut inp = 32;
        let mut idx = 1;
        for (t, c, n, s) in [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ] {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let hidden = inp * t;
                let p = format!("features.{idx}.conv");
                let mut h = x.clone();
                let mut k = 0;
                if t != 1 {
                    h = g.conv(&h, &format!("{p}.0.0"), inp, hidden, 1, 1, 0, 1, false);
                    h = g.batch_norm(&h, &format!("{p}.0.1"), hidden);
                    h = g.relu6(&h);
                    k = 1;
                }
                h = g.conv(
                    &h,
                    &format!("{p}.{k}.0"),
                    hidden,
                    hidden,
                    3,
                    stride,
                    1,
                    hidden,
                    false,
                );
                h = g.batch_norm(&h, &format!("{p}.{k}.1"), hidden);
                h = g.relu6(&h);
                h = g.conv(&h, &format!("{p}.{}", k + 1), hidden, c, 1, 1, 0, 1, false);
                h = g.batch_norm(&h, &format!("{p}.{}", k + 2), c);
                x = if stride == 1 && inp == c {
                    g.add(&x, &h)
                } else {
                    h
                };
                inp = c;
                idx += 1;
            }
        }
        let x = g.conv(&x, "features.18.0", 320, 1280, 1, 1, 0, 1, false);
        let x = g.batch_norm(&x, "features.18.1", 1280);
        let x = g.relu6(&x);
        let x = g.global_avg_pool(&x);
        let x = g.flatten(&x);
        let x = g.dropout(&x);
        let x = g.linear(&x, "classifier.1", 1280, 1000);
        g.finish(&x, 1000)
    }
}
