#![warn(missing_docs)]
//! # energy-prune-onnx
//!
//! ONNX models in and out: read a model exported from PyTorch (or any ONNX
//! producer) into an [`Architecture`] plus a network implementing
//! [`Network`]/[`NetworkMut`], price and prune it with the rest of the crate, and
//! write it back, either with the pruned weights (zeros where projected away) or
//! **compacted**, with the pruned channels physically removed.
//!
//! ```no_run
//! use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
//! use energy_prune::network::{NetworkState, Network};
//! use energy_prune_onnx::OnnxModel;
//! # fn main() -> energy_prune::Result<()> {
//! let model = OnnxModel::load("resnet18.onnx", None)?;
//! let hw = SystolicArray::new(model.architecture(), SystolicConfig::default())?;
//! let state = NetworkState::from_network(&model)?;
//! let joules = hw.energy(&state)?.total;
//! println!("{}: {} layers, energy {joules:.3e}", model.architecture().name(),
//!          model.architecture().layers().len());
//! # Ok(()) }
//! ```
//!
//! # What is read
//! The graph is walked in node order (ONNX graphs are topologically sorted) and
//! every tensor's channel structure is tracked as a list of [`Width`](energy_prune::arch::Width)s:
//!
//! | operator | effect on widths and sizes |
//! |---|---|
//! | `Conv` (groups, depthwise, strides, symmetric pads) | a prunable layer; a new width, or the input's for a depthwise conv |
//! | `Gemm`, `MatMul` with a constant weight | a prunable linear layer reading the flattened input |
//! | `Relu`, `Clip` (ReLU6), `Dropout`, `Identity`, `BatchNormalization` | none (normalisation follows its input's channels) |
//! | `MaxPool`, `AveragePool` (incl. `ceil_mode`), `GlobalAveragePool`, `GlobalMaxPool`, `ReduceMean` over H and W | spatial size only |
//! | `Flatten` (axis 1), `Reshape` to `[batch, features]` keeping the batch | the map is flattened: each channel feeds `H * W` features |
//! | `Add` of two tensors | residual: both sides' widths become one (pruned together) |
//! | `Add` of a constant (scalar, per channel or per feature) | none (a bias) |
//! | `Concat` on channels | widths concatenated |
//! | `Constant`, `Identity` of a constant | a constant for the nodes above |
//! | `DequantizeLinear` of a constant (int4/8/16/32, per tensor or per axis) | a float constant (the dequantized weights or bias); the layer's weight bits |
//! | `QuantizeLinear` → `DequantizeLinear` on a tensor (per-tensor scale) | none; run as ONNX defines them, the next layer's activation bits |
//!
//! Anything else is an [`Error::Unsupported`] naming the node and its operator.
//! Dilated convolutions, asymmetric padding, `auto_pad` `SAME_*`, blocked
//! quantization and per-axis scales of activations are refused with a message
//! that says so. Batch normalisation
//! stays a separate node whose per-channel tensors follow their input's channels
//! (sliced with them when compacting).
//!
//! # The ONNX rule
//! What the import accepts, it evaluates as ONNX defines (as onnxruntime runs it);
//! what [`OnnxModel::save`] and [`OnnxModel::compact`] write, onnxruntime loads and
//! runs to the same outputs. In particular:
//! * **Shared initializers are untied on import.** Exporters merge equal tensors
//!   into one initializer (a zero bias, a shape, a weight equal to a scale); a
//!   constant read by several node inputs gets one copy per use, so pruning or
//!   compacting one user never changes another, and a saved model computes what
//!   the model in memory computes. Two layers tied to one weight become two
//!   independently prunable layers (each saved with its own copy).
//! * **Broadcasting is ONNX's.** A constant added to an `N x C x H x W` map is a
//!   scalar or per channel only when its shape broadcasts without changing the
//!   map's shape (`[C, 1, 1]`, `[1, C, 1, 1]`; not `[C, 1, 1, 1]` nor `[C]`); to a
//!   flattened `[N, F]`, `[F]` or `[1, F]` (not `[F, 1]`). Biases are `[C]`,
//!   batch-norm parameters `[C]` with variance + epsilon > 0.
//! * **The model is well formed**: an opset of the default domain is declared,
//!   value names are unique, operator forms match the opset (Clip bounds and
//!   ReduceMean axes as attributes or inputs), `Conv` has 2 or 3 inputs, `pads`
//!   only with `auto_pad = NOTSET`, `Gemm`/`MatMul` read a flattened `[N, F]`, a
//!   Reshape keeps the batch (`[0, -1]`, `[-1, F]`, `[0, F]`, or the input's fixed
//!   batch), the input is float32.
//! * **Sizes are checked**: every tensor's `C * H * W` and every initializer's
//!   element count fit [`MAX_ELEMENTS`](energy_prune::arch::MAX_ELEMENTS) without
//!   wrapping.
//! * Initializers also listed as graph inputs (`keep_initializers_as_inputs`)
//!   keep declared shapes equal to their compacted dims.
//!
//! Tested by a differential test against onnxruntime's outputs on 800 structurally
//! random models (`energy-prune-testing/tests/onnx_differential.rs`, fixtures
//! written by `scripts/check_onnx_differential.py`, which runs the comparison live
//! on any number of models) and by a structural fuzzer (`fuzz_parsers.rs`: every
//! accepted model runs, saves and re-imports bit for bit, compacts to what the
//! masked model computes).
//!
//! # External data
//! Models above 2 GiB (the most one protobuf message holds) keep their tensors in
//! side files: ONNX *external data*, a `location` relative to the model's
//! directory, an `offset` and a `length` per tensor. [`OnnxModel::load`] (and
//! [`OnnxModel::from_bytes`], relative to its `source`) reads them, checking
//! each reference before allocating for it: the location stays inside the
//! model's directory (no absolute path, no `..`), the region lies inside the
//! file and holds exactly the bytes the tensor's dims and type need, and the
//! bytes read in all stay within the size of the files referenced. A hostile
//! reference is an [`Error::CorruptData`] naming the tensor.
//! [`OnnxModel::external_files`] lists the side files read.
//! [`OnnxModel::save_with_external_data`] writes the model with every tensor of
//! at least [`ExternalData::threshold`] bytes in one side file (offsets aligned to
//! [`ALIGNMENT`]), streaming the weights into it; [`OnnxModel::save`] refuses a
//! model that would exceed 2 GiB and says to use it.
//! ```no_run
//! use energy_prune_onnx::{ExternalData, OnnxModel};
//! # fn main() -> energy_prune::Result<()> {
//! let model = OnnxModel::load("big/model.onnx", None)?; // reads big/model.onnx.data
//! model.save_with_external_data("out/pruned.onnx", &ExternalData::new("pruned.onnx.data"))?;
//! # Ok(()) }
//! ```
//!
//! # Quantized models (QDQ)
//! [`OnnxModel::to_qdq`] writes a model at a per-layer
//! [`LayerPrecision`](energy_prune::energy::LayerPrecision) in QDQ form (weights as
//! integers with per-channel scales, activations through `Clip` →
//! `QuantizeLinear` → `DequantizeLinear`, int32 biases), and the import reads QDQ
//! files, ours and those of onnxruntime's quantizer, with
//! [`OnnxModel::precision`] giving each layer's bits for pricing
//! ([`SystolicArray::with_precision`](energy_prune::energy::SystolicArray::with_precision)).
//! With the `nn` feature, [`OnnxModel::from_cnn`] exports the reference CNN. The
//! formats, the rounding and the checks against onnxruntime are in the `qdq`
//! module's notes and `docs/quantization.md`.
//!
//! # Exporting from PyTorch
//! Both of PyTorch's exporters (torch.export, the default, and the TorchScript one
//! with `dynamo=False`) give files this module reads; tested with PyTorch 2.15.
//! ```text
//! import torch, torchvision
//! m = torchvision.models.resnet18(weights="DEFAULT").eval()
//! torch.onnx.export(m, (torch.randn(1, 3, 224, 224),), "resnet18.onnx", opset_version=17)
//! ```

#[cfg(feature = "nn")]
mod cnn;
mod compact;
mod external;
mod import;
mod prepare;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod proto;
mod qdq;
mod run;
mod tensor;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use prost::Message;

use energy_prune::arch::{Architecture, WidthId};
use energy_prune::error::{Error, Result};
use energy_prune::network::{Network, NetworkMut};
use proto::{ModelProto, TensorProto};

#[cfg(feature = "nn")]
pub use cnn::CNN_OPSET;
pub use external::{ALIGNMENT, ExternalData};
pub use prepare::Untied;
pub use qdq::QdqSpec;

/// The largest `.onnx` file [`OnnxModel::load`] reads: 2 GiB, the most a protobuf
/// message can hold (larger models keep their weights in external data files).
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// How a prunable layer's weights sit in the ONNX file.
#[derive(Debug, Clone, PartialEq)]
struct LayerBinding {
    /// Index of the node computing the layer.
    node: usize,
    /// Index of the weight initializer in `graph.initializer`.
    weight: usize,
    /// Stored as `[in][out]` (MatMul, Gemm with `transB = 0`) rather than the
    /// canonical `[out][in]`.
    transposed: bool,
    /// The bias constant, if any.
    bias: Option<Constant>,
    /// The weight tensor's dims as stored.
    dims: Vec<usize>,
    /// How the weights are stored in a QDQ model (integers read by a
    /// `DequantizeLinear`); `None` for float weights.
    quant: Option<qdq::WeightQuant>,
}

/// Where a constant used by a non-prunable node lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ConstSource {
    /// `graph.initializer[i]`.
    Initializer(usize),
    /// The `value` attribute of `graph.node[i]` (a `Constant` node).
    Node(usize),
    /// The output of `graph.node[i]`, a `DequantizeLinear` of a constant (folded
    /// at import).
    Dequantized(usize),
}

/// A constant tensor read at import (small: biases, normalisation statistics).
#[derive(Debug, Clone, PartialEq)]
struct Constant {
    source: ConstSource,
    /// Which input of its consuming node reads it.
    input: usize,
    dims: Vec<usize>,
    values: Vec<f32>,
}

/// Pooling window of a `MaxPool`/`AveragePool` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
}

/// One node of the imported graph, as the interpreter and the compaction see it.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// Prunable layer `.0` (Conv, Gemm or MatMul).
    Layer(usize),
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, lo), hi)`.
    Clip(f32, f32),
    /// Dropout or Identity.
    Identity,
    /// Max (`true`) or average pooling; `count_include_pad` for averages.
    Pool {
        max: bool,
        window: Window,
        count_include_pad: bool,
    },
    /// Global average (`false`) or max (`true`) pooling.
    GlobalPool { max: bool },
    /// Flatten or Reshape to `[batch, features]`; the constant holding a Reshape's
    /// target shape, if any.
    Flatten(Option<ConstSource>),
    /// Sum of two tensors.
    Add,
    /// Tensor plus constant (broadcast per channel or scalar).
    AddConst(Constant),
    /// Concatenation on channels.
    Concat,
    /// Inference-mode batch normalisation: scale, bias, mean, variance, epsilon.
    BatchNorm(Box<[Constant; 4]>, f32),
    /// `QuantizeLinear` of a tensor: `clamp(round_half_even(x / scale) + zero, lo, hi)`.
    Quantize {
        scale: f32,
        zero: i32,
        lo: i32,
        hi: i32,
    },
    /// `DequantizeLinear` of a tensor: `(x - zero) * scale`.
    Dequantize { scale: f32, zero: i32 },
}

/// A node with the value slots it reads and writes.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    node: usize,
    op: Op,
    inputs: Vec<usize>,
    output: usize,
}

/// The channel structure and size of one tensor of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    /// Widths concatenated along the channels, with their channel counts.
    segments: Vec<(WidthId, usize)>,
    h: usize,
    w: usize,
    /// Flattened to `[batch, channels * h * w]`.
    flat: bool,
}

impl Shape {
    fn channels(&self) -> usize {
        self.segments.iter().map(|s| s.1).sum()
    }
    fn len(&self) -> usize {
        self.channels() * self.h * self.w
    }
}

/// An ONNX model read into the crate: its [`Architecture`] and prunable weights
/// (as a [`Network`]/[`NetworkMut`]), with everything else of the file kept so
/// that [`OnnxModel::save`] writes a complete model back.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// The model with the prunable weights' data moved out into `weights`.
    proto: ModelProto,
    arch: Architecture,
    bindings: Vec<LayerBinding>,
    /// Canonical weights per prunable layer.
    weights: Vec<Vec<f32>>,
    steps: Vec<Step>,
    shapes: Vec<Shape>,
    /// Value slot of the graph input and output.
    input: usize,
    output: usize,
    /// Where the model came from (for messages).
    source: PathBuf,
    /// Constants copied per use on import.
    untied: Vec<prepare::Untied>,
    /// Each prunable layer's precision (from the QDQ nodes; the reference where
    /// stored in float).
    precision: Vec<energy_prune::energy::precision::LayerPrecision>,
    /// The file holds QuantizeLinear/DequantizeLinear nodes.
    quantized: bool,
    /// Side files the tensors were read from (ONNX external data).
    external_files: Vec<PathBuf>,
}

/// Where [`OnnxModel::write_model`] puts each initializer's data.
struct Layout<'a> {
    /// The prunable layer whose weights each initializer holds.
    layer_of: Vec<Option<usize>>,
    /// Each layer's integer bytes in a QDQ model (`None`: float weights).
    quantized: Vec<Option<Vec<u8>>>,
    /// `(offset, length)` in the side file of each initializer stored there.
    slots: Vec<Option<(u64, u64)>>,
    /// The side file's location as written into the model.
    location: Option<&'a str>,
}

impl OnnxModel {
    /// Read a model file. `input` is the `[channels, height, width]` of one sample,
    /// needed when the graph's input has symbolic (or no) dimensions; when given it
    /// overrides the graph's. Tensors stored as external data are read from their
    /// side files next to the model (see [External data](crate#external-data)).
    ///
    /// # Errors
    /// [`Error::Io`] if the file or a side file cannot be read,
    /// [`Error::CorruptData`] if it is not a valid ONNX model or an external data
    /// reference is refused, [`Error::Unsupported`] naming the first node whose
    /// operator or attributes are not supported, [`Error::InvalidArchitecture`] if
    /// the layer sizes do not chain, [`Error::NonFinite`] for NaN or infinite weights.
    pub fn load(path: impl AsRef<Path>, input: Option<[usize; 3]>) -> Result<Self> {
        let path = path.as_ref();
        // A protobuf message holds at most 2 GiB.
        let bytes = energy_prune::files::read_bounded(path, MAX_FILE_BYTES)?;
        let proto = decode(&bytes, path)?;
        drop(bytes); // the decoded model holds its own copy of the tensors
        Self::import_with_external(proto, input, path)
    }

    /// Resolve the external data of `proto` (relative to `source`'s directory),
    /// then import it.
    fn import_with_external(
        mut proto: ModelProto,
        input: Option<[usize; 3]>,
        source: &Path,
    ) -> Result<Self> {
        let dir = source.parent().unwrap_or_else(|| Path::new(""));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let external = external::resolve(&mut proto, dir, source)?;
        let mut model = import::import_with(proto, input, source, Some(&external))?;
        // Whatever the layers did not read (nothing, in a model the import accepts).
        external.finish(&mut model.proto)?;
        model.external_files = external.files();
        Ok(model)
    }

    /// Read a model from the bytes of an `.onnx` file; `source` names it in messages
    /// and becomes the architecture's name (its file stem) when the graph has none;
    /// external data is read relative to `source`'s directory.
    ///
    /// # Errors
    /// As [`OnnxModel::load`].
    pub fn from_bytes(bytes: &[u8], input: Option<[usize; 3]>, source: &Path) -> Result<Self> {
        Self::import_with_external(decode(bytes, source)?, input, source)
    }

    /// The model as ONNX protobuf bytes, with the current weights.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Write the model with the current weights (zeros where pruned) to `path`,
    /// through a temporary file: on error nothing is half-written.
    ///
    /// The weights are streamed from memory into the file, never copied into a
    /// message first, so saving needs little memory beyond the model's own (the
    /// file decodes to the same model as [`OnnxModel::to_bytes`]; only the order of
    /// the fields differs).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written, or if the model is larger
    /// than the 2 GiB one file holds (then use
    /// [`OnnxModel::save_with_external_data`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let layout = self.layout(None);
        energy_prune::files::write_atomic_with(path.as_ref(), |w| self.write_model(w, &layout))
    }

    /// Write the model with the current weights to `path`, every tensor of at
    /// least `external.threshold` bytes (the prunable layers' weights among them)
    /// stored in the side file `external.location` next to it, as ONNX's external
    /// data (see the [external data](crate#external-data) notes): the form of
    /// models above the 2 GiB a single `.onnx` file can hold. Each tensor sits
    /// at an offset aligned to 4096 bytes. Both files are written through
    /// temporary files and renamed only when both are complete: on error neither
    /// is half-written.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a location that is absolute or leaves the
    /// model's directory, or that would overwrite the model file itself;
    /// [`Error::Io`] if a file cannot be written.
    pub fn save_with_external_data(
        &self,
        path: impl AsRef<Path>,
        external: &ExternalData,
    ) -> Result<()> {
        let path = path.as_ref();
        let location = external.checked_location()?;
        let dir = path.parent().unwrap_or_else(|| Path::new(""));
        let data_path = dir.join(&external.location);
        if data_path == path {
            return Err(Error::param(
                "ExternalData::location",
                external.location.display(),
                "the side file would overwrite the model file; give it another name",
            ));
        }
        if let Some(parent) = data_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let layout = self.layout(Some((&location, external.threshold)));
        energy_prune::files::write_atomic_pair(
            (&data_path, &mut |w| self.write_data(w, &layout)),
            (path, &mut |w| self.write_model(w, &layout)),
        )
    }

    /// The side files the tensors of the loaded model were read from (empty for
    /// a model held in one `.onnx` file).
    pub fn external_files(&self) -> &[PathBuf] {
        &self.external_files
    }

    /// Where each initializer's data goes: `(prunable layer, external slot)`.
    fn layout<'a>(&self, external: Option<(&'a str, usize)>) -> Layout<'a> {
        let initializers = &self.graph().initializer;
        let mut layer_of = vec![None; initializers.len()];
        for (l, b) in self.bindings.iter().enumerate() {
            layer_of[b.weight] = Some(l);
        }
        // Integer weights of a QDQ model, encoded up front (a quarter of the floats).
        let quantized: Vec<Option<Vec<u8>>> = (0..self.bindings.len())
            .map(|l| self.quantized_bytes(l))
            .collect();
        let mut slots = vec![None; initializers.len()];
        let mut next = 0u64;
        if let Some((_, threshold)) = external {
            for (i, t) in initializers.iter().enumerate() {
                let len = match layer_of[i] {
                    Some(l) => self.layer_bytes(l, &quantized[l]),
                    None => t.raw_data.len(),
                };
                if len > 0 && len >= threshold {
                    let offset = external::aligned(next);
                    slots[i] = Some((offset, len as u64));
                    next = offset + len as u64;
                }
            }
        }
        Layout {
            layer_of,
            quantized,
            slots,
            location: external.map(|e| e.0),
        }
    }

    /// Stream the model: the model's fields without its graph, then the graph's
    /// fields without its initializers, then every initializer; a prunable
    /// layer's tensor as its header and its `raw_data` written from the weights,
    /// a tensor stored externally as its header with the side file's region.
    /// Protocol buffers merge fields in any order, so this decodes to the model.
    fn write_model(&self, w: &mut dyn std::io::Write, layout: &Layout<'_>) -> std::io::Result<()> {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
        let mut head = self.proto.clone();
        let mut graph = head.graph.take().unwrap_or_default();
        let initializers = std::mem::take(&mut graph.initializer);
        // The tensor's fields without the data written from elsewhere.
        let header = |i: usize| -> TensorProto {
            let t = &initializers[i];
            let external = layout.slots[i].zip(layout.location);
            if layout.layer_of[i].is_none() && external.is_none() {
                return t.clone();
            }
            let mut h = TensorProto {
                dims: t.dims.clone(),
                data_type: t.data_type,
                segment: t.segment,
                name: t.name.clone(),
                doc_string: t.doc_string.clone(),
                metadata_props: t.metadata_props.clone(),
                ..TensorProto::default()
            };
            if let Some(l) = layout.layer_of[i] {
                let b = &self.bindings[l];
                h.dims = b.dims.iter().map(|&d| d as i64).collect();
                h.data_type = b.quant.as_ref().map_or(tensor::FLOAT, |q| q.ty.code);
            }
            if let Some(((offset, len), location)) = external {
                h.data_location = proto::tensor_proto::DataLocation::External as i32;
                h.external_data = external::entries(location, offset, len);
            }
            h
        };
        // Bytes of `raw_data` written after the header (layers held inline).
        let raw_len = |i: usize| match (layout.layer_of[i], layout.slots[i]) {
            (Some(l), None) => Some(self.layer_bytes(l, &layout.quantized[l])),
            _ => None,
        };
        let tensor_len = |t: &TensorProto, raw: Option<usize>| {
            t.encoded_len() + raw.map_or(0, |n| key_len(9) + encoded_len_varint(n as u64) + n)
        };
        let lens: Vec<usize> = (0..initializers.len())
            .map(|i| tensor_len(&header(i), raw_len(i)))
            .collect();
        let graph_len = graph.encoded_len()
            + lens
                .iter()
                .map(|&n| key_len(5) + encoded_len_varint(n as u64) + n)
                .sum::<usize>();
        let total =
            head.encoded_len() + key_len(7) + encoded_len_varint(graph_len as u64) + graph_len;
        if total as u64 > MAX_FILE_BYTES {
            return Err(std::io::Error::other(format!(
                "the model is {total} bytes, more than the 2 GiB an .onnx file can hold; \
                 save it with its weights in a side file (OnnxModel::save_with_external_data, \
                 or --external-data on the command line)"
            )));
        }
        let mut buf = Vec::new();
        head.encode(&mut buf).map_err(std::io::Error::other)?;
        encode_key(7, WireType::LengthDelimited, &mut buf);
        encode_varint(graph_len as u64, &mut buf);
        graph.encode(&mut buf).map_err(std::io::Error::other)?;
        w.write_all(&buf)?;
        for (i, &len) in lens.iter().enumerate() {
            buf.clear();
            encode_key(5, WireType::LengthDelimited, &mut buf);
            encode_varint(len as u64, &mut buf);
            let t = header(i);
            t.encode(&mut buf).map_err(std::io::Error::other)?;
            if let (Some(l), Some(n)) = (layout.layer_of[i], raw_len(i)) {
                encode_key(9, WireType::LengthDelimited, &mut buf);
                encode_varint(n as u64, &mut buf);
                w.write_all(&buf)?;
                self.write_layer_bytes(l, &layout.quantized[l], w)?;
            } else {
                w.write_all(&buf)?;
            }
        }
        Ok(())
    }

    /// Stream the side file of `layout`: every external tensor's bytes at its
    /// offset (zeros in the alignment gaps).
    fn write_data(&self, w: &mut dyn std::io::Write, layout: &Layout<'_>) -> std::io::Result<()> {
        let initializers = &self.graph().initializer;
        let mut at = 0u64;
        for (i, slot) in layout.slots.iter().enumerate() {
            let Some((offset, len)) = *slot else { continue };
            std::io::copy(&mut std::io::repeat(0).take(offset - at), w)?;
            match layout.layer_of[i] {
                Some(l) => self.write_layer_bytes(l, &layout.quantized[l], w)?,
                None => w.write_all(&initializers[i].raw_data)?,
            }
            at = offset + len;
        }
        Ok(())
    }

    /// The length of layer `l`'s stored bytes (see [`OnnxModel::write_layer_bytes`]).
    fn layer_bytes(&self, l: usize, quantized: &Option<Vec<u8>>) -> usize {
        quantized
            .as_ref()
            .map_or(4 * self.weights[l].len(), Vec::len)
    }

    /// Layer `l`'s stored bytes: its integers in a QDQ model, else its floats.
    fn write_layer_bytes(
        &self,
        l: usize,
        quantized: &Option<Vec<u8>>,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        match quantized {
            Some(bytes) => w.write_all(bytes),
            None => self.write_weights_raw(l, w),
        }
    }

    /// The little-endian float32 bytes of layer `l`'s weights in the stored layout.
    fn write_weights_raw(&self, l: usize, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let (b, weights) = (&self.bindings[l], &self.weights[l]);
        let mut chunk = Vec::with_capacity(1 << 16);
        let mut put = |v: f32, chunk: &mut Vec<u8>| -> std::io::Result<()> {
            chunk.extend_from_slice(&v.to_le_bytes());
            if chunk.len() >= 1 << 16 {
                w.write_all(chunk)?;
                chunk.clear();
            }
            Ok(())
        };
        if b.transposed {
            // Stored `[in][out]`, held `[out][in]`.
            let (rows, cols) = (b.dims[0], b.dims[1]);
            for r in 0..rows {
                for c in 0..cols {
                    put(weights[c * rows + r], &mut chunk)?;
                }
            }
        } else {
            for &v in weights {
                put(v, &mut chunk)?;
            }
        }
        w.write_all(&chunk)
    }

    /// Layer `l`'s weights in the stored layout (`[in][out]` when transposed).
    fn stored_weights(&self, l: usize) -> Vec<f32> {
        let (b, w) = (&self.bindings[l], &self.weights[l]);
        if b.transposed {
            transpose(w, b.dims[1], b.dims[0])
        } else {
            w.clone()
        }
    }

    /// The `raw_data` of layer `l`'s integer weights in a QDQ model (`None` for
    /// float weights): the current weights rounded with the file's scales.
    fn quantized_bytes(&self, l: usize) -> Option<Vec<u8>> {
        let b = &self.bindings[l];
        let q = b.quant.as_ref()?;
        let ints = q.encode(&b.dims, &self.stored_weights(l));
        Some(tensor::encode_quantized(q.ty, &ints))
    }

    /// The complete ONNX model with the current weights.
    pub(crate) fn to_proto(&self) -> ModelProto {
        let mut proto = self.proto.clone();
        if let Some(graph) = proto.graph.as_mut() {
            for (l, b) in self.bindings.iter().enumerate() {
                let t = &mut graph.initializer[b.weight];
                match &b.quant {
                    Some(q) => {
                        let ints = q.encode(&b.dims, &self.stored_weights(l));
                        tensor::set_quantized(t, &b.dims, q.ty, &ints);
                    }
                    None => tensor::set_floats(t, &b.dims, &self.stored_weights(l)),
                }
            }
        }
        proto
    }

    /// The constants (initializers or `Constant` outputs) that several nodes read
    /// in the file and that the import copied once per extra use, so that pruning
    /// or compacting one user never changes another (see the
    /// [ONNX rule](crate#the-onnx-rule)); what [`OnnxModel::save`] writes holds
    /// the copies.
    pub fn untied(&self) -> &[Untied] {
        &self.untied
    }

    /// Move the weights out as a [`NetworkState`](energy_prune::network::NetworkState)
    /// (no copy: for projecting a large model in place), leaving the model without
    /// weights until [`OnnxModel::put_state`] gives them back; reading, running or
    /// saving the model in between is an error or sees empty layers.
    pub fn take_state(&mut self) -> energy_prune::network::NetworkState {
        energy_prune::network::NetworkState {
            input_masks: vec![None; self.weights.len()],
            weights: std::mem::take(&mut self.weights),
        }
    }

    /// Give the weights back after [`OnnxModel::take_state`] (or any state of
    /// this architecture), checked: one tensor per layer of the right length, all
    /// finite; on error the model keeps no weights and the state is returned in it.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for another number of layers or a wrong length,
    /// [`Error::NonFinite`] for a NaN or infinite weight.
    pub fn put_state(&mut self, state: energy_prune::network::NetworkState) -> Result<()> {
        let layers = self.arch.layers();
        if state.weights.len() != layers.len() {
            return Err(Error::shape(
                "weight tensors (one per prunable layer)",
                layers.len(),
                state.weights.len(),
            ));
        }
        for (l, w) in layers.iter().zip(&state.weights) {
            if w.len() != l.weight_count() {
                return Err(Error::shape(
                    format!("weights of layer `{}`", l.name),
                    l.weight_count(),
                    w.len(),
                ));
            }
            energy_prune::error::check_finite(&format!("weights of layer `{}`", l.name), w)?;
        }
        self.weights = state.weights;
        Ok(())
    }

    /// One line saying which shared constants were untied, if any (for reports).
    pub fn untied_note(&self) -> Option<String> {
        if self.untied.is_empty() {
            return None;
        }
        let names: Vec<String> = self
            .untied
            .iter()
            .take(5)
            .map(|u| format!("`{}` ({} uses)", u.name, u.uses))
            .collect();
        let more = self.untied.len().saturating_sub(5);
        Some(format!(
            "{} shared constant(s) copied per use so that pruning one use never changes another: {}{}",
            self.untied.len(),
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
    }

    /// `[channels, height, width]` of one input sample.
    pub fn input_shape(&self) -> [usize; 3] {
        let s = &self.shapes[self.input];
        [s.channels(), s.h, s.w]
    }

    /// Number of outputs per sample (the class count).
    pub fn output_len(&self) -> usize {
        self.shapes[self.output].len()
    }

    /// Name of the ONNX weight initializer of prunable layer `layer`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for a bad layer index.
    pub fn weight_name(&self, layer: usize) -> Result<&str> {
        let b = self.binding(layer)?;
        Ok(self.graph().initializer[b.weight].name.as_str())
    }

    fn graph(&self) -> &proto::GraphProto {
        // `import` refuses a model without a graph.
        self.proto.graph.as_ref().unwrap_or(&EMPTY_GRAPH)
    }

    fn binding(&self, layer: usize) -> Result<&LayerBinding> {
        self.bindings.get(layer).ok_or(Error::IndexOutOfRange {
            what: "layer",
            index: layer,
            len: self.bindings.len(),
        })
    }
}

fn decode(bytes: &[u8], source: &Path) -> Result<ModelProto> {
    ModelProto::decode(bytes)
        .map_err(|e| tensor::corrupt(source, format!("not an ONNX model (protobuf: {e})")))
}

static EMPTY_GRAPH: proto::GraphProto = proto::GraphProto {
    node: Vec::new(),
    name: String::new(),
    initializer: Vec::new(),
    sparse_initializer: Vec::new(),
    doc_string: String::new(),
    input: Vec::new(),
    output: Vec::new(),
    value_info: Vec::new(),
    quantization_annotation: Vec::new(),
    metadata_props: Vec::new(),
};

/// `rows x cols` row-major to `cols x rows`.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = src[r * cols + c];
        }
    }
    out
}

impl Network for OnnxModel {
    fn architecture(&self) -> &Architecture {
        &self.arch
    }

    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()> {
        let w = self.weights.get(layer).ok_or(Error::IndexOutOfRange {
            what: "layer",
            index: layer,
            len: self.weights.len(),
        })?;
        if dst.len() != w.len() {
            return Err(Error::shape(
                format!("weights of layer `{}`", self.arch.layers()[layer].name),
                w.len(),
                dst.len(),
            ));
        }
        dst.copy_from_slice(w);
        Ok(())
    }
}

impl NetworkMut for OnnxModel {
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        let len = self.weights.len();
        let name = self.arch.layer(layer)?.name.clone();
        let w = self.weights.get_mut(layer).ok_or(Error::IndexOutOfRange {
            what: "layer",
            index: layer,
            len,
        })?;
        if src.len() != w.len() {
            return Err(Error::shape(
                format!("weights of layer `{name}`"),
                w.len(),
                src.len(),
            ));
        }
        energy_prune::error::check_finite(&format!("weights of layer `{name}`"), src)?;
        w.copy_from_slice(src);
        Ok(())
    }
}
