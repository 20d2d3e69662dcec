//! The reference CNN of `energy-prune-nn` as an ONNX model (feature `nn`), in the
//! form PyTorch exports the same network: `Conv` and `Gemm` (`transB = 1`) with
//! initializers named `<layer>.weight` and `<layer>.bias`, `Relu`, `MaxPool` and
//! `AveragePool`, a `Flatten` before the first fully-connected layer, a symbolic
//! batch.

use energy_prune::arch::LayerKind;
use energy_prune::error::{Error, Result};
use energy_prune::network::Network;
use energy_prune_nn::{Cnn, LayerSpec};

use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_shape_proto::{Dimension, dimension};
use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use super::{OnnxModel, tensor};

/// The opset [`OnnxModel::from_cnn`] writes: 21, where `DequantizeLinear` reads
/// int4 and int16 tensors (for [`OnnxModel::to_qdq`]).
pub const CNN_OPSET: i64 = 21;

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..AttributeProto::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..AttributeProto::default()
    }
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(if d > 0 {
                dimension::Value::DimValue(d)
            } else {
                dimension::Value::DimParam("batch".into())
            }),
            ..Dimension::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: tensor::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

impl OnnxModel {
    /// The reference CNN `net` as an ONNX model (opset [`CNN_OPSET`]) with its
    /// current weights and biases: what onnxruntime runs to `net`'s outputs, and
    /// what [`OnnxModel::to_qdq`] quantizes. Needs the `nn` feature.
    ///
    /// ```
    /// # fn main() -> energy_prune::Result<()> {
    /// use energy_prune_nn::Cnn;
    /// use energy_prune_onnx::OnnxModel;
    /// let net = Cnn::lenet5(1)?;
    /// let model = OnnxModel::from_cnn(&net)?;
    /// assert_eq!(model.input_shape(), [1, 32, 32]);
    /// assert_eq!(model.output_len(), 10);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a network with layer input masks enabled (they
    /// have no ONNX form here: apply them to the weights or disable them first).
    pub fn from_cnn(net: &Cnn) -> Result<OnnxModel> {
        let (c, h, w) = net.input_shape();
        let mut nodes = Vec::new();
        let mut inits = Vec::new();
        let mut x = "input".to_string();
        let mut flat = false;
        let mut layer = 0;
        let mut push = |op: &str, inputs: Vec<String>, attribute: Vec<AttributeProto>| {
            let out = format!("/{op}_{}", nodes.len());
            nodes.push(NodeProto {
                name: out.clone(),
                op_type: op.into(),
                input: inputs,
                output: vec![out.clone()],
                attribute,
                ..NodeProto::default()
            });
            out
        };
        let mut add_init = |name: String, dims: &[usize], values: &[f32]| {
            let mut t = TensorProto {
                name: name.clone(),
                ..TensorProto::default()
            };
            tensor::set_floats(&mut t, dims, values);
            inits.push(t);
            name
        };
        let arch = net.architecture();
        for spec in net.specs() {
            match spec {
                LayerSpec::Conv {
                    name,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    groups,
                } => {
                    if net.input_mask(layer).is_some() {
                        return Err(masks_error(name));
                    }
                    let per_group = match arch.layers()[layer].kind {
                        LayerKind::Conv2d(g) => g.in_per_group(),
                        LayerKind::Linear(_) => 0,
                    };
                    let wname = add_init(
                        format!("{name}.weight"),
                        &[*out_channels, per_group, *kernel, *kernel],
                        net.weights_ref(layer)?,
                    );
                    let bname =
                        add_init(format!("{name}.bias"), &[*out_channels], net.bias(layer)?);
                    let (k, s, p) = (*kernel as i64, *stride as i64, *padding as i64);
                    x = push(
                        "Conv",
                        vec![x, wname, bname],
                        vec![
                            ints("dilations", &[1, 1]),
                            int("group", *groups as i64),
                            ints("kernel_shape", &[k, k]),
                            ints("pads", &[p, p, p, p]),
                            ints("strides", &[s, s]),
                        ],
                    );
                    layer += 1;
                }
                LayerSpec::Linear { name, out_features } => {
                    if net.input_mask(layer).is_some() {
                        return Err(masks_error(name));
                    }
                    if !flat {
                        x = push("Flatten", vec![x], vec![int("axis", 1)]);
                        flat = true;
                    }
                    let n = arch.layers()[layer].in_features();
                    let wname = add_init(
                        format!("{name}.weight"),
                        &[*out_features, n],
                        net.weights_ref(layer)?,
                    );
                    let bname =
                        add_init(format!("{name}.bias"), &[*out_features], net.bias(layer)?);
                    x = push("Gemm", vec![x, wname, bname], vec![int("transB", 1)]);
                    layer += 1;
                }
                LayerSpec::Relu => x = push("Relu", vec![x], vec![]),
                LayerSpec::MaxPool { kernel, stride } | LayerSpec::AvgPool { kernel, stride } => {
                    let op = if matches!(spec, LayerSpec::MaxPool { .. }) {
                        "MaxPool"
                    } else {
                        "AveragePool"
                    };
                    let (k, s) = (*kernel as i64, *stride as i64);
                    x = push(
                        op,
                        vec![x],
                        vec![ints("kernel_shape", &[k, k]), ints("strides", &[s, s])],
                    );
                }
            }
        }
        let classes = arch.layers().last().map_or(0, |l| l.out_channels()) as i64;
        if let Some(last) = nodes.last_mut() {
            last.output[0] = "logits".into();
        }
        let proto = ModelProto {
            ir_version: 10,
            producer_name: "energy-prune".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: CNN_OPSET,
            }],
            graph: Some(GraphProto {
                name: arch.name().to_string(),
                node: nodes,
                initializer: inits,
                input: vec![value_info("input", &[0, c as i64, h as i64, w as i64])],
                output: vec![value_info("logits", &[0, classes])],
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        };
        let source = std::path::PathBuf::from(format!("{}.onnx", arch.name()));
        super::import::import(proto, Some([c, h, w]), &source)
    }
}

fn masks_error(layer: &str) -> Error {
    Error::unsupported(
        format!("exporting layer `{layer}` with an input mask"),
        "input masks have no ONNX form here: disable them (Cnn::disable_input_mask) after \
         folding their zeros into the weights",
    )
}
