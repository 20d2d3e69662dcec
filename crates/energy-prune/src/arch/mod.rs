//! Architecture descriptions: what a network looks like to a cost model.
//!
//! An [`Architecture`] is an ordered list of *prunable* layers (2-D convolutions,
//! including strided, padded, grouped and depthwise ones, and fully-connected layers)
//! with their full geometry, plus the **widths** that tie them together.
//!
//! A [`Width`] is a group of channel slots that must be pruned together:
//!
//! * the output channels of one layer are the input channels of the next;
//! * after a flatten, each channel of a `C x H x W` map feeds `H * W` consecutive
//!   inputs of the following linear layer (an [`InputSegment`] with `spatial = H * W`);
//! * a layer may read a concatenation of widths (SqueezeNet fire modules, Inception);
//! * several layers may write the same width (residual additions);
//! * a depthwise convolution reads and writes one and the same width.
//!
//! The network's input channels and its class count are *fixed* widths.
//!
//! Non-prunable operations (pooling, activations, normalisation, additions) are not
//! stored; the [`ArchBuilder`] tracks their effect on the feature-map size so that
//! every layer's input geometry is exact. [`zoo`] holds ready-made descriptions of
//! well-known networks.
//!
//! # Examples
//! ```
//! use energy_prune::arch::{ArchBuilder, Conv};
//! # fn main() -> energy_prune::Result<()> {
//! let mut b = ArchBuilder::new("tiny");
//! let x = b.input(1, 28, 28)?;
//! let x = b.conv2d("conv1", &x, Conv::new(8, 3).padding(1))?;
//! let x = b.pool(&x, 2, 2, 0, false)?;
//! let y = b.linear("fc", &x, 10, true)?;
//! let arch = b.finish(&y)?;
//! assert_eq!(arch.layers().len(), 2);
//! assert_eq!(arch.layers()[1].in_features(), 8 * 14 * 14);
//! # Ok(()) }
//! ```

mod builder;
mod slots;
pub mod zoo;

pub use builder::{ArchBuilder, Conv, FeatureMap, pooled_size};
pub use slots::SlotLayout;

use crate::error::{Error, Result};

/// Index of a [`Width`] inside its [`Architecture`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WidthId(pub usize);

/// A group of channel slots pruned together.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Width {
    /// Human-readable name (by default the name of the layer that produces it).
    pub name: String,
    /// Number of channels at full (dense) size.
    pub channels: usize,
    /// Fixed widths (network input, class count) are never pruned.
    pub fixed: bool,
}

/// One part of a layer's input: all channels of `width`, each feeding `spatial`
/// consecutive input elements (1 for a convolution, `H * W` for a linear layer
/// after a flatten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct InputSegment {
    /// The width whose channels are read.
    pub width: WidthId,
    /// Input elements per channel (`H * W` after a flatten, else 1).
    pub spatial: usize,
}

/// Geometry of a 2-D convolution.
///
/// ```text
/// out_h = floor((in_h + 2 * padding - kernel_h) / stride) + 1   (likewise out_w)
/// weights = out_channels * (in_channels / groups) * kernel_h * kernel_w
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Conv2dGeometry {
    /// Input channels C.
    pub in_channels: usize,
    /// Input height H.
    pub in_h: usize,
    /// Input width W.
    pub in_w: usize,
    /// Output channels (filters) D.
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Stride t (same along both axes).
    pub stride: usize,
    /// Zero padding P (same on all four sides).
    pub padding: usize,
    /// Groups G (1 = ordinary convolution; `G = C = D` = depthwise).
    pub groups: usize,
}

impl Conv2dGeometry {
    /// Output height: `floor((H + 2P - R) / t) + 1`, or 0 if the kernel does not fit.
    pub fn out_h(&self) -> usize {
        out_size(self.in_h, self.kernel_h, self.stride, self.padding)
    }
    /// Output width: `floor((W + 2P - R) / t) + 1`, or 0 if the kernel does not fit.
    pub fn out_w(&self) -> usize {
        out_size(self.in_w, self.kernel_w, self.stride, self.padding)
    }
    /// Number of output positions `A = H' * W'`.
    pub fn out_positions(&self) -> usize {
        self.out_h() * self.out_w()
    }
    /// Input channels seen by one filter, `C / G`.
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }
    /// Output channels per group, `D / G`.
    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }
    /// Weights of one filter, `(C / G) * R_h * R_w`.
    pub fn filter_len(&self) -> usize {
        self.in_per_group() * self.kernel_h * self.kernel_w
    }
    /// True when every group holds exactly one input and one output channel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.groups == self.out_channels
    }

    /// Every field, in declaration order, with `padding` last (the one that may be 0).
    fn fields(&self) -> [usize; 9] {
        [
            self.in_channels,
            self.in_h,
            self.in_w,
            self.out_channels,
            self.kernel_h,
            self.kernel_w,
            self.stride,
            self.groups,
            self.padding,
        ]
    }

    /// Check that the geometry describes a computable convolution.
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] if a size, the stride or the groups are zero,
    /// the groups do not divide both channel counts, the kernel does not fit the
    /// padded input, or a derived size exceeds [`MAX_ELEMENTS`].
    pub fn validate(&self) -> Result<()> {
        let g = self;
        if g.fields()[..8].contains(&0) {
            return Err(Error::arch(format!("zero size in {g:?}")));
        }
        if !g.in_channels.is_multiple_of(g.groups) || !g.out_channels.is_multiple_of(g.groups) {
            return Err(Error::arch(format!(
                "groups {} must divide in_channels {} and out_channels {}",
                g.groups, g.in_channels, g.out_channels
            )));
        }
        if g.out_h() == 0 || g.out_w() == 0 {
            return Err(Error::arch(format!(
                "kernel {}x{} does not fit the padded {}x{} input",
                g.kernel_h, g.kernel_w, g.in_h, g.in_w
            )));
        }
        conv_sizes_fit(g)
            .then_some(())
            .ok_or_else(|| Error::arch(format!("sizes exceed {MAX_ELEMENTS} elements: {g:?}")))
    }
}

/// 64-bit FNV-1a (the fingerprint's hash: tiny, stable, no dependency).
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        for x in v.to_le_bytes() {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The largest number of elements a layer's weights, inputs or outputs (and the
/// whole network's weights) may have: `f32` buffers of this length still fit a
/// 64-bit address space with room to spare, and every derived size (MACs, flattened
/// features) is computed without overflow.
pub const MAX_ELEMENTS: usize = 1 << 40;

/// `prod(xs)` if it fits [`MAX_ELEMENTS`] (checked arithmetic).
fn product(xs: &[usize]) -> Option<usize> {
    xs.iter()
        .try_fold(1usize, |a, &x| a.checked_mul(x))
        .filter(|v| *v <= MAX_ELEMENTS)
}

/// Every size derived from a convolution's geometry (weights, inputs, outputs,
/// im2col buffers, MACs) fits [`MAX_ELEMENTS`], so the unchecked accessors cannot
/// wrap afterwards.
fn conv_sizes_fit(g: &Conv2dGeometry) -> bool {
    let filter = product(&[g.in_channels / g.groups.max(1), g.kernel_h, g.kernel_w]);
    let positions = product(&[g.out_h(), g.out_w()]);
    let padded = |x: usize| x.checked_add(g.padding.saturating_mul(2));
    match (filter, positions) {
        (Some(f), Some(p)) => {
            product(&[g.out_channels, f]).is_some()
                && product(&[p, g.out_channels]).is_some()
                && product(&[g.in_channels, f, p]).is_some()
                && product(&[g.in_channels, g.in_h, g.in_w]).is_some()
                && padded(g.in_h).is_some_and(|h| h <= MAX_ELEMENTS)
                && padded(g.in_w).is_some_and(|w| w <= MAX_ELEMENTS)
                && (f as u128) * (p as u128) * (g.out_channels as u128) < u128::from(u64::MAX)
        }
        _ => false,
    }
}

/// Output size of a convolution or pooling along one axis,
/// `(input + 2 padding - kernel) / stride + 1`, or 0 when the kernel does not fit
/// or the stride is 0.
pub fn out_size(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    let padded = input.saturating_add(padding.saturating_mul(2));
    if padded < kernel || stride == 0 {
        0
    } else {
        (padded - kernel) / stride + 1
    }
}

/// For kernel offset `k` along an axis of length `n` (padding `pad`, stride
/// `stride`, `out` outputs), the output range `[lo, hi)` whose input coordinate
/// `o * stride + k - pad` falls inside `[0, n)`.
#[inline]
pub fn valid_range(k: usize, pad: usize, stride: usize, n: usize, out: usize) -> (usize, usize) {
    // o * stride + k >= pad  and  o * stride + k < n + pad
    let lo = if k >= pad {
        0
    } else {
        (pad - k).div_ceil(stride)
    };
    let hi = if n + pad > k {
        ((n + pad - k - 1) / stride + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Geometry of a fully-connected layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LinearGeometry {
    /// Input features C.
    pub in_features: usize,
    /// Output features D.
    pub out_features: usize,
}

/// The kind and geometry of a prunable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LayerKind {
    /// A 2-D convolution.
    Conv2d(Conv2dGeometry),
    /// A fully-connected layer.
    Linear(LinearGeometry),
}

/// A prunable layer: geometry plus the widths it reads and writes.
///
/// Its weights, in the canonical layout, are `[out][in / groups][kh][kw]` row-major
/// (`[out][in]` for a linear layer, with flattened inputs in `c * H * W + y * W + x` order).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Layer {
    /// Unique layer name.
    pub name: String,
    /// Kind and geometry.
    pub kind: LayerKind,
    /// The widths concatenated to form the input, in channel order.
    pub input: Vec<InputSegment>,
    /// The width of the output channels.
    pub output: WidthId,
    /// Whether the layer has a bias vector (counted in parameters, never pruned).
    pub bias: bool,
}

impl Layer {
    /// Number of weights (biases excluded).
    pub fn weight_count(&self) -> usize {
        match &self.kind {
            LayerKind::Conv2d(g) => g.out_channels * g.filter_len(),
            LayerKind::Linear(g) => g.out_features * g.in_features,
        }
    }
    /// Parameters including the bias.
    pub fn param_count(&self) -> usize {
        self.weight_count() + if self.bias { self.out_channels() } else { 0 }
    }
    /// Nominal dense multiply-accumulates per image (padding taps included, as usually
    /// published). The energy model counts exact in-bounds products instead.
    pub fn macs(&self) -> u64 {
        match &self.kind {
            LayerKind::Conv2d(g) => (g.out_positions() * g.out_channels * g.filter_len()) as u64,
            LayerKind::Linear(g) => (g.in_features * g.out_features) as u64,
        }
    }
    /// Output channels (filters or output features).
    pub fn out_channels(&self) -> usize {
        match &self.kind {
            LayerKind::Conv2d(g) => g.out_channels,
            LayerKind::Linear(g) => g.out_features,
        }
    }
    /// Number of input elements per image (`C * H * W` for a convolution).
    pub fn in_features(&self) -> usize {
        match &self.kind {
            LayerKind::Conv2d(g) => g.in_channels * g.in_h * g.in_w,
            LayerKind::Linear(g) => g.in_features,
        }
    }
    /// Whether this is a convolution.
    pub fn is_conv(&self) -> bool {
        matches!(self.kind, LayerKind::Conv2d(_))
    }
}

/// An ordered list of prunable layers and the widths that connect them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "ArchitectureParts")
)]
pub struct Architecture {
    name: String,
    widths: Vec<Width>,
    layers: Vec<Layer>,
    input: WidthId,
    output: WidthId,
}

/// The serialised form of an [`Architecture`]: deserialising goes through
/// [`Architecture::new`], so no invalid architecture can be read from a file.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct ArchitectureParts {
    name: String,
    widths: Vec<Width>,
    layers: Vec<Layer>,
    input: WidthId,
    output: WidthId,
}

#[cfg(feature = "serde")]
impl TryFrom<ArchitectureParts> for Architecture {
    type Error = Error;
    fn try_from(p: ArchitectureParts) -> Result<Self> {
        Architecture::new(p.name, p.widths, p.layers, p.input, p.output)
    }
}

impl Architecture {
    /// Build and validate an architecture from its parts.
    ///
    /// `input` and `output` name the network's input-channel and class-count widths;
    /// both are marked fixed.
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] when a size is zero, a width index is out of
    /// range, channel counts do not chain through the widths, groups do not divide the
    /// channels, a convolution input is flattened, a kernel does not fit its input, or
    /// two layers share a name.
    pub fn new(
        name: impl Into<String>,
        mut widths: Vec<Width>,
        layers: Vec<Layer>,
        input: WidthId,
        output: WidthId,
    ) -> Result<Self> {
        let nw = widths.len();
        for (i, w) in widths.iter().enumerate() {
            if w.channels == 0 {
                return Err(Error::arch(format!(
                    "width {i} (`{}`) has zero channels",
                    w.name
                )));
            }
        }
        for id in [input, output] {
            if id.0 >= nw {
                return Err(Error::arch(format!(
                    "width index {} out of range ({nw} widths)",
                    id.0
                )));
            }
            widths[id.0].fixed = true;
        }
        if layers.is_empty() {
            return Err(Error::arch(
                "an architecture needs at least one prunable layer",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for layer in &layers {
            let n = &layer.name;
            if !names.insert(n.clone()) {
                return Err(Error::arch(format!(
                    "two layers are named `{n}`; names must be unique"
                )));
            }
            if layer.output.0 >= nw || layer.input.iter().any(|s| s.width.0 >= nw) {
                return Err(Error::arch(format!(
                    "layer `{n}` refers to a width index >= {nw}"
                )));
            }
            if layer.input.is_empty() {
                return Err(Error::arch(format!("layer `{n}` has no input widths")));
            }
            let in_elems = layer
                .input
                .iter()
                .try_fold(0usize, |acc, s| {
                    widths[s.width.0]
                        .channels
                        .checked_mul(s.spatial)
                        .and_then(|e| acc.checked_add(e))
                })
                .ok_or_else(|| Error::arch(format!("layer `{n}`: input size overflows usize")))?;

            let out_ch = widths[layer.output.0].channels;
            match &layer.kind {
                LayerKind::Conv2d(g) => {
                    g.validate()
                        .map_err(|e| Error::arch(format!("conv `{n}`: {e}")))?;
                    if layer.input.iter().any(|s| s.spatial != 1) {
                        return Err(Error::arch(format!(
                            "conv `{n}` reads a flattened input (spatial != 1)"
                        )));
                    }
                    if g.out_h() == 0 || g.out_w() == 0 {
                        return Err(Error::arch(format!(
                            "conv `{n}`: kernel {}x{} does not fit the padded {}x{} input",
                            g.kernel_h, g.kernel_w, g.in_h, g.in_w
                        )));
                    }
                    if in_elems != g.in_channels {
                        return Err(Error::arch(format!(
                            "conv `{n}` expects {} input channels but its input widths provide {in_elems}",
                            g.in_channels
                        )));
                    }
                    if g.is_depthwise()
                        && (layer.input.len() != 1 || layer.input[0].width != layer.output)
                    {
                        return Err(Error::arch(format!(
                            "depthwise conv `{n}` must read and write the same single width"
                        )));
                    }
                }
                LayerKind::Linear(g) => {
                    if g.in_features == 0 || g.out_features == 0 {
                        return Err(Error::arch(format!("linear `{n}` has a zero size")));
                    }
                    if product(&[g.in_features, g.out_features]).is_none() {
                        return Err(Error::arch(format!(
                            "linear `{n}`: {} x {} weights exceed {MAX_ELEMENTS}",
                            g.in_features, g.out_features
                        )));
                    }
                    if in_elems != g.in_features {
                        return Err(Error::arch(format!(
                            "linear `{n}` expects {} inputs but its input widths provide {in_elems}",
                            g.in_features
                        )));
                    }
                }
            }
            if out_ch != layer.out_channels() {
                return Err(Error::arch(format!(
                    "layer `{n}` has {} outputs but its output width `{}` has {out_ch} channels",
                    layer.out_channels(),
                    widths[layer.output.0].name
                )));
            }
        }
        let total = layers
            .iter()
            .try_fold(0usize, |acc, l| acc.checked_add(l.weight_count()));
        if total.is_none_or(|t| t > MAX_ELEMENTS) {
            return Err(Error::arch(format!(
                "the layers hold more than {MAX_ELEMENTS} weights in all; \
                 split the model or check the layer sizes"
            )));
        }
        Ok(Self {
            name: name.into(),
            widths,
            layers,
            input,
            output,
        })
    }

    /// The same architecture under another name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// The architecture's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Prunable layers in forward order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    /// All widths.
    pub fn widths(&self) -> &[Width] {
        &self.widths
    }
    /// The network-input width (fixed).
    pub fn input_width(&self) -> WidthId {
        self.input
    }
    /// The class-count width (fixed).
    pub fn output_width(&self) -> WidthId {
        self.output
    }
    /// The layer at `index`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if there is no such layer.
    pub fn layer(&self, index: usize) -> Result<&Layer> {
        self.layers.get(index).ok_or(Error::IndexOutOfRange {
            what: "layer",
            index,
            len: self.layers.len(),
        })
    }
    /// Index of the layer called `name`, if any.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }
    /// A stable 64-bit fingerprint of everything that shapes the weights and the
    /// channel coupling: every width (channels, fixed) and every layer (name, kind,
    /// geometry, input segments, output width, bias), in order. The network's own
    /// name is left out. Computed with 64-bit FNV-1a over a fixed little-endian
    /// encoding, so it is the same on every platform and in every release that
    /// keeps this documented encoding.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fnv64::default();
        h.u64(self.widths.len() as u64);
        for w in &self.widths {
            h.u64(w.channels as u64);
            h.u64(u64::from(w.fixed));
        }
        h.u64(self.input.0 as u64);
        h.u64(self.output.0 as u64);
        for l in &self.layers {
            h.bytes(l.name.as_bytes());
            match &l.kind {
                LayerKind::Conv2d(g) => {
                    h.u64(1);
                    for v in g.fields() {
                        h.u64(v as u64);
                    }
                }
                LayerKind::Linear(g) => {
                    h.u64(2);
                    h.u64(g.in_features as u64);
                    h.u64(g.out_features as u64);
                }
            }
            h.u64(l.input.len() as u64);
            for seg in &l.input {
                h.u64(seg.width.0 as u64);
                h.u64(seg.spatial as u64);
            }
            h.u64(l.output.0 as u64);
            h.u64(u64::from(l.bias));
        }
        h.0
    }

    /// Total number of prunable weights.
    pub fn weight_count(&self) -> usize {
        self.layers.iter().map(Layer::weight_count).sum()
    }
    /// Total parameters of the prunable layers, biases included.
    pub fn param_count(&self) -> usize {
        self.layers.iter().map(Layer::param_count).sum()
    }
    /// Total nominal dense multiply-accumulates per image.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(Layer::macs).sum()
    }
    /// Channel offset of each input segment of `layer` inside its input
    /// (in flattened elements), paired with the segment.
    pub fn input_offsets(&self, layer: &Layer) -> Vec<(usize, InputSegment)> {
        let mut off = 0;
        layer
            .input
            .iter()
            .map(|s| {
                let o = off;
                off += self.widths[s.width.0].channels * s.spatial;
                (o, *s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, c: usize) -> Width {
        Width {
            name: name.into(),
            channels: c,
            fixed: false,
        }
    }

    #[test]
    fn out_size_matches_formula() {
        assert_eq!(out_size(224, 11, 4, 2), 55);
        assert_eq!(out_size(32, 5, 1, 0), 28);
        assert_eq!(out_size(3, 5, 1, 0), 0);
    }

    #[test]
    fn validation_catches_mismatched_channels() {
        let widths = vec![w("in", 3), w("a", 8), w("out", 10)];
        let conv = Layer {
            name: "c".into(),
            kind: LayerKind::Conv2d(Conv2dGeometry {
                in_channels: 4,
                in_h: 8,
                in_w: 8,
                out_channels: 8,
                kernel_h: 3,
                kernel_w: 3,
                stride: 1,
                padding: 1,
                groups: 1,
            }),
            input: vec![InputSegment {
                width: WidthId(0),
                spatial: 1,
            }],
            output: WidthId(1),
            bias: true,
        };
        let err = Architecture::new(
            "x",
            widths.clone(),
            vec![conv.clone()],
            WidthId(0),
            WidthId(1),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("expects 4 input channels"),
            "{err}"
        );

        let mut bad_groups = conv.clone();
        if let LayerKind::Conv2d(g) = &mut bad_groups.kind {
            g.in_channels = 3;
            g.groups = 2;
        }
        let err = Architecture::new(
            "x",
            widths.clone(),
            vec![bad_groups],
            WidthId(0),
            WidthId(1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("groups 2 must divide"), "{err}");

        let mut zero = conv;
        if let LayerKind::Conv2d(g) = &mut zero.kind {
            g.in_channels = 3;
            g.kernel_h = 0;
        }
        assert!(Architecture::new("x", widths, vec![zero], WidthId(0), WidthId(1)).is_err());
    }
}
