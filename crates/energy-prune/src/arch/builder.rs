//! Incremental construction of an [`Architecture`] that tracks feature-map sizes.

use super::{
    Architecture, Conv2dGeometry, InputSegment, Layer, LayerKind, LinearGeometry, Width, WidthId,
    out_size,
};
use crate::error::{Error, Result};

/// A feature map flowing through the builder: the widths that make up its channels
/// (concatenated in order) and its spatial size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureMap {
    /// Widths whose channels are concatenated to form this map.
    pub widths: Vec<WidthId>,
    /// Total channels.
    pub channels: usize,
    /// Height.
    pub h: usize,
    /// Width (spatial).
    pub w: usize,
}

/// Hyper-parameters of a convolution added with [`ArchBuilder::conv2d`].
///
/// ```
/// use energy_prune::arch::Conv;
/// let c = Conv::new(64, 3).stride(2).padding(1).no_bias();
/// assert_eq!(c.out_channels, 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    /// Output channels (ignored by [`Conv::depthwise`], which keeps the input width).
    pub out_channels: usize,
    /// Square kernel size R.
    pub kernel: usize,
    /// Stride (default 1).
    pub stride: usize,
    /// Zero padding (default 0).
    pub padding: usize,
    /// Groups (default 1).
    pub groups: usize,
    /// Bias (default true).
    pub bias: bool,
    /// Depthwise: groups = channels, output width = input width.
    pub depthwise: bool,
    /// Write into an existing width (residual streams) instead of creating one.
    pub into: Option<WidthId>,
}

impl Conv {
    /// A `kernel x kernel` convolution with `out_channels` filters, stride 1, no padding, bias.
    pub fn new(out_channels: usize, kernel: usize) -> Self {
        Self {
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            groups: 1,
            bias: true,
            depthwise: false,
            into: None,
        }
    }
    /// A depthwise convolution (one filter per input channel; shares the input's width).
    pub fn depthwise(kernel: usize) -> Self {
        Self {
            depthwise: true,
            ..Self::new(0, kernel)
        }
    }
    /// Set the stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
    /// Set the zero padding.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }
    /// Set the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// Drop the bias (e.g. before batch normalisation).
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
    /// Write the output into an existing width (for residual additions).
    pub fn into_width(mut self, width: WidthId) -> Self {
        self.into = Some(width);
        self
    }
}

/// Output length of a pooling window along one axis of length `n`, or 0 when the
/// window does not fit. `ceil_mode` rounds up as PyTorch's `ceil_mode=True` (and
/// ONNX's `ceil_mode=1`): the last window must start inside the input or its left
/// padding.
pub fn pooled_size(
    n: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil_mode: bool,
) -> usize {
    if !ceil_mode {
        return out_size(n, kernel, stride, padding);
    }
    let padded = n.saturating_add(2 * padding);
    if padded < kernel || stride == 0 {
        return 0;
    }
    let mut o = (padded - kernel).div_ceil(stride) + 1;
    if (o - 1) * stride >= n + padding {
        o -= 1;
    }
    o
}

/// Builds an [`Architecture`] layer by layer, tracking feature-map sizes through
/// pooling and concatenation so that every layer's geometry is exact.
#[derive(Debug, Clone, Default)]
pub struct ArchBuilder {
    name: String,
    widths: Vec<Width>,
    layers: Vec<Layer>,
    input: Option<WidthId>,
}

impl ArchBuilder {
    /// Start a new architecture.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Declare the network input (a fixed width).
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] on a zero size or a second call.
    pub fn input(&mut self, channels: usize, h: usize, w: usize) -> Result<FeatureMap> {
        if self.input.is_some() {
            return Err(Error::arch("input() called twice"));
        }
        if channels == 0 || h == 0 || w == 0 {
            return Err(Error::arch(format!(
                "input size {channels}x{h}x{w} has a zero dimension"
            )));
        }
        let id = self.add_width("input", channels, true);
        self.input = Some(id);
        Ok(FeatureMap {
            widths: vec![id],
            channels,
            h,
            w,
        })
    }

    /// Add a width that no layer has produced yet (rarely needed: [`Conv`] and
    /// [`ArchBuilder::linear`] create their output widths).
    pub fn add_width(&mut self, name: impl Into<String>, channels: usize, fixed: bool) -> WidthId {
        self.widths.push(Width {
            name: name.into(),
            channels,
            fixed,
        });
        WidthId(self.widths.len() - 1)
    }

    /// Number of channels of a width.
    pub fn width_channels(&self, id: WidthId) -> Option<usize> {
        self.widths.get(id.0).map(|w| w.channels)
    }

    /// Add a convolution reading `x`.
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] if the geometry is invalid (see [`Architecture::new`]),
    /// a depthwise conv reads a concatenation, or `into_width` names a width of another size.
    pub fn conv2d(&mut self, name: &str, x: &FeatureMap, conv: Conv) -> Result<FeatureMap> {
        let (out_channels, groups, output) = if conv.depthwise {
            if x.widths.len() != 1 {
                return Err(Error::arch(format!(
                    "depthwise conv `{name}` cannot read a concatenation"
                )));
            }
            (x.channels, x.channels, x.widths[0])
        } else {
            let out = match conv.into {
                Some(id) => {
                    let c = self.width_channels(id).ok_or_else(|| {
                        Error::arch(format!("conv `{name}`: unknown width {}", id.0))
                    })?;
                    if c != conv.out_channels {
                        return Err(Error::arch(format!(
                            "conv `{name}` has {} filters but width {} has {c} channels",
                            conv.out_channels, id.0
                        )));
                    }
                    id
                }
                None => self.add_width(name, conv.out_channels, false),
            };
            (conv.out_channels, conv.groups, out)
        };
        let geom = Conv2dGeometry {
            in_channels: x.channels,
            in_h: x.h,
            in_w: x.w,
            out_channels,
            kernel_h: conv.kernel,
            kernel_w: conv.kernel,
            stride: conv.stride,
            padding: conv.padding,
            groups,
        };
        let (h, w) = (geom.out_h(), geom.out_w());
        self.layers.push(Layer {
            name: name.to_string(),
            kind: LayerKind::Conv2d(geom),
            input: x
                .widths
                .iter()
                .map(|&width| InputSegment { width, spatial: 1 })
                .collect(),
            output,
            bias: conv.bias,
        });
        self.check_last()?;
        Ok(FeatureMap {
            widths: vec![output],
            channels: out_channels,
            h,
            w,
        })
    }

    /// Add a fully-connected layer reading `x` flattened (`C * H * W` inputs).
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] on a zero size.
    pub fn linear(
        &mut self,
        name: &str,
        x: &FeatureMap,
        out_features: usize,
        bias: bool,
    ) -> Result<FeatureMap> {
        let output = self.add_width(name, out_features, false);
        let spatial = x.h * x.w;
        self.layers.push(Layer {
            name: name.to_string(),
            kind: LayerKind::Linear(LinearGeometry {
                in_features: x.channels * spatial,
                out_features,
            }),
            input: x
                .widths
                .iter()
                .map(|&width| InputSegment { width, spatial })
                .collect(),
            output,
            bias,
        });
        self.check_last()?;
        Ok(FeatureMap {
            widths: vec![output],
            channels: out_features,
            h: 1,
            w: 1,
        })
    }

    /// A max- or average-pool (not stored; only changes the map size).
    /// `ceil_mode` rounds the output size up as PyTorch's `ceil_mode=True`.
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] if the kernel or stride is zero, the padding
    /// exceeds half the kernel, or the window does not fit.
    pub fn pool(
        &self,
        x: &FeatureMap,
        kernel: usize,
        stride: usize,
        padding: usize,
        ceil_mode: bool,
    ) -> Result<FeatureMap> {
        if kernel == 0 || stride == 0 {
            return Err(Error::arch(format!(
                "pool kernel {kernel} and stride {stride} must both be >= 1"
            )));
        }
        if padding > kernel / 2 {
            return Err(Error::arch(format!(
                "pool padding {padding} exceeds half the kernel {kernel}"
            )));
        }
        let size = |n: usize| pooled_size(n, kernel, stride, padding, ceil_mode);
        let (h, w) = (size(x.h), size(x.w));
        if h == 0 || w == 0 {
            return Err(Error::arch(format!(
                "pool {kernel}/{stride} does not fit a {}x{} map",
                x.h, x.w
            )));
        }
        Ok(FeatureMap { h, w, ..x.clone() })
    }

    /// Global average pool: the map becomes `C x 1 x 1`.
    pub fn global_pool(&self, x: &FeatureMap) -> FeatureMap {
        FeatureMap {
            h: 1,
            w: 1,
            ..x.clone()
        }
    }

    /// Concatenate maps along channels.
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] if the spatial sizes differ or the list is empty.
    pub fn concat(&self, maps: &[&FeatureMap]) -> Result<FeatureMap> {
        let first = maps
            .first()
            .ok_or_else(|| Error::arch("concat of no maps"))?;
        if maps.iter().any(|m| m.h != first.h || m.w != first.w) {
            return Err(Error::arch("concat of maps with different spatial sizes"));
        }
        Ok(FeatureMap {
            widths: maps.iter().flat_map(|m| m.widths.iter().copied()).collect(),
            channels: maps.iter().map(|m| m.channels).sum(),
            h: first.h,
            w: first.w,
        })
    }

    /// Residual addition: both maps must hold the same widths and size.
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] if they differ (write the branch into the
    /// shortcut's width with [`Conv::into_width`]).
    pub fn add(&self, a: &FeatureMap, b: &FeatureMap) -> Result<FeatureMap> {
        if a != b {
            return Err(Error::arch(format!(
                "residual add of different maps ({:?} vs {:?}); write the branch into the shortcut's width with Conv::into_width",
                a.widths, b.widths
            )));
        }
        Ok(a.clone())
    }

    /// Finish: `output` is the logits map; its width becomes fixed (the class count).
    ///
    /// # Errors
    /// [`Error::InvalidArchitecture`] if no input was declared, `output` is a
    /// concatenation, or validation fails.
    pub fn finish(self, output: &FeatureMap) -> Result<Architecture> {
        let input = self
            .input
            .ok_or_else(|| Error::arch("no input() declared"))?;
        if output.widths.len() != 1 {
            return Err(Error::arch("the output map must be a single width"));
        }
        Architecture::new(self.name, self.widths, self.layers, input, output.widths[0])
    }

    fn check_last(&mut self) -> Result<()> {
        // Validate the layer just added with the same rules as the final architecture,
        // so errors point at the offending call.
        let layer = self.layers.last().expect("a layer was just pushed").clone();
        let res = Architecture::new(
            "check",
            self.widths.clone(),
            vec![layer],
            WidthId(0),
            WidthId(0),
        );
        if res.is_err() {
            self.layers.pop();
        }
        res.map(|_| ())
    }
}
