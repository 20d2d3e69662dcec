//! `LayerSpec`: the layer stack a `Cnn` is built from.

/// One layer of a [`Cnn`](super::Cnn), as given to [`Cnn::new`](super::Cnn::new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSpec {
    /// 2-D convolution with bias (square kernel, zero padding, groups).
    Conv {
        /// Unique layer name.
        name: String,
        /// Output channels.
        out_channels: usize,
        /// Kernel size R.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
        /// Groups (input and output channels must be divisible by it).
        groups: usize,
    },
    /// Fully-connected layer with bias; flattens a `C x H x W` input.
    Linear {
        /// Unique layer name.
        name: String,
        /// Output features.
        out_features: usize,
    },
    /// Rectified linear unit.
    Relu,
    /// Max-pool (square window, no padding).
    MaxPool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Average-pool (square window, no padding).
    AvgPool {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
}

impl LayerSpec {
    /// A convolution with stride 1, no padding, one group.
    pub fn conv(name: &str, out_channels: usize, kernel: usize) -> Self {
        LayerSpec::Conv {
            name: name.into(),
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }
    /// A fully-connected layer.
    pub fn linear(name: &str, out_features: usize) -> Self {
        LayerSpec::Linear {
            name: name.into(),
            out_features,
        }
    }
}
