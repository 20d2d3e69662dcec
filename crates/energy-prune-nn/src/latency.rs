//! Measured CPU latency of the reference CNN at given layer widths: a
//! [`CostOracle`] for the calibration workflow.
//!
//! For a width configuration the oracle builds a *physically narrow* network
//! (every convolution and linear layer with as many output channels as its width),
//! then times the forward pass of one batch: `warmup` untimed runs, then `repeats`
//! timed runs; the cost is the median in milliseconds. Thread count and batch size
//! are fixed per oracle, since both change latency.

use std::time::Instant;

use super::{Cnn, LayerSpec};
use energy_prune::energy::{CostOracle, LayerOracle};
use energy_prune::error::{Error, Result};
use energy_prune::network::Trainable;

/// Latency figures of one configuration, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyStats {
    /// Median over the timed runs.
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
}

/// Forward latency of the reference CNN; see the [module docs](self).
///
/// | setting | default |
/// |---|---|
/// | batch | 64 |
/// | threads | all cores |
/// | warmup | 2 |
/// | repeats | 7 |
#[derive(Debug)]
pub struct LatencyOracle {
    input: (usize, usize, usize),
    specs: Vec<LayerSpec>,
    /// Samples per timed forward pass.
    pub batch: usize,
    /// Threads of the measured network.
    pub threads: usize,
    /// Untimed runs before timing.
    pub warmup: usize,
    /// Timed runs (the median is reported).
    pub repeats: usize,
    last: Option<LatencyStats>,
}

impl LatencyOracle {
    /// An oracle for networks of this input shape and layer stack (the stack's
    /// convolutions must be ungrouped; its widths are the input, then one per
    /// convolution or linear layer in order, the last being the class count).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for grouped convolutions or an invalid stack.
    pub fn new(input: (usize, usize, usize), specs: &[LayerSpec]) -> Result<Self> {
        if specs
            .iter()
            .any(|s| matches!(s, LayerSpec::Conv { groups, .. } if *groups != 1))
        {
            return Err(Error::param(
                "specs",
                "grouped conv",
                "LatencyOracle supports ungrouped convolutions only",
            ));
        }
        Cnn::new(input, specs, 0)?; // validate once
        Ok(Self {
            input,
            specs: specs.to_vec(),
            batch: 64,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            warmup: 2,
            repeats: 7,
            last: None,
        })
    }

    /// The layer stack at the given widths.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong number of widths, [`Error::InvalidParameter`]
    /// if a fixed width (input channels, classes) is changed or a width is 0.
    pub fn narrow_specs(&self, widths: &[usize]) -> Result<Vec<LayerSpec>> {
        let layers = self
            .specs
            .iter()
            .filter(|s| matches!(s, LayerSpec::Conv { .. } | LayerSpec::Linear { .. }))
            .count();
        if widths.len() != layers + 1 {
            return Err(Error::shape(
                "widths (input + one per layer)",
                layers + 1,
                widths.len(),
            ));
        }
        if widths[0] != self.input.0 {
            return Err(Error::param(
                "widths",
                widths[0],
                format!("width 0 is the input's {} channels", self.input.0),
            ));
        }
        if let Some(i) = widths.iter().position(|w| *w == 0) {
            return Err(Error::param("widths", 0, format!("width {i} must be >= 1")));
        }
        let mut k = 0;
        let mut out = self.specs.clone();
        for s in &mut out {
            match s {
                LayerSpec::Conv { out_channels, .. } => {
                    k += 1;
                    *out_channels = widths[k];
                }
                LayerSpec::Linear { out_features, .. } => {
                    k += 1;
                    if k == layers && widths[k] != *out_features {
                        return Err(Error::param(
                            "widths",
                            widths[k],
                            format!("the last width is the {out_features} classes"),
                        ));
                    }
                    *out_features = widths[k];
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Build the narrow network and time it.
    ///
    /// # Errors
    /// As [`LatencyOracle::narrow_specs`].
    pub fn measure_stats(&mut self, widths: &[usize]) -> Result<LatencyStats> {
        let specs = self.narrow_specs(widths)?;
        let mut net = Cnn::new(self.input, &specs, 1)?;
        net.set_threads(self.threads);
        let stats = measure_latency(&mut net, self.batch, self.warmup, self.repeats)?;
        self.last = Some(stats);
        Ok(stats)
    }

    /// Figures of the last measurement.
    pub fn last(&self) -> Option<LatencyStats> {
        self.last
    }
}

/// Time the forward pass of `net` on one batch of `batch` samples: `warmup`
/// untimed runs, then the median, minimum and maximum of `repeats` timed runs.
///
/// # Errors
/// [`Error::InvalidParameter`] for a zero batch; errors of the forward pass.
pub fn measure_latency(
    net: &mut Cnn,
    batch: usize,
    warmup: usize,
    repeats: usize,
) -> Result<LatencyStats> {
    if batch == 0 {
        return Err(Error::param("batch", 0, "must be >= 1"));
    }
    let x: Vec<f32> = (0..batch * net.input_len())
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect();
    let mut logits = Vec::new();
    for _ in 0..warmup {
        net.predict(&x, batch, &mut logits)?;
    }
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        net.predict(&x, batch, &mut logits)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(LatencyStats {
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        max_ms: times[times.len() - 1],
    })
}

impl CostOracle for LatencyOracle {
    fn measure(&mut self, widths: &[usize]) -> Result<f64> {
        Ok(self.measure_stats(widths)?.median_ms)
    }
}

/// Latency of one layer of a sequential stack measured alone, for the per-layer
/// lookup table ([`LayerTable`](energy_prune::energy::LayerTable)): layer `l` (the `l`-th
/// convolution or linear layer) with the ReLU and pooling that follow it up to the
/// next one, built as a network of its own with `c_in` input and `c_out` output
/// channels at the spatial size the layer sees in the full stack, timed like
/// [`LatencyOracle`] (median of `repeats` after `warmup` runs). A block that
/// ends on a feature map (a convolution) gets a one-output linear head so that it
/// is a network of its own; the head's latency, timed alone, is subtracted.
#[derive(Debug)]
pub struct LayerLatencyOracle {
    /// Per layer: its specs (the layer first) and its input's spatial size.
    blocks: Vec<(Vec<LayerSpec>, usize, usize)>,
    /// Per layer: the spatial size of its block's output.
    outputs: Vec<(usize, usize)>,
    /// Samples per timed forward pass.
    pub batch: usize,
    /// Threads of the measured network.
    pub threads: usize,
    /// Untimed runs before timing.
    pub warmup: usize,
    /// Timed runs (the median is reported).
    pub repeats: usize,
}

impl LayerLatencyOracle {
    /// An oracle for the layers of this stack (same rules as [`LatencyOracle::new`]).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for grouped convolutions or an invalid stack.
    pub fn new(input: (usize, usize, usize), specs: &[LayerSpec]) -> Result<Self> {
        let full = LatencyOracle::new(input, specs)?;
        let (mut c, mut h, mut w) = input;
        let mut blocks: Vec<(Vec<LayerSpec>, usize, usize)> = Vec::new();
        for spec in &full.specs {
            match spec {
                LayerSpec::Conv { .. } | LayerSpec::Linear { .. } => {
                    blocks.push((vec![spec.clone()], h, w));
                }
                _ => match blocks.last_mut() {
                    Some(b) => b.0.push(spec.clone()),
                    None => {
                        return Err(Error::param(
                            "specs",
                            format!("{spec:?}"),
                            "the stack must start with a convolution or linear layer",
                        ));
                    }
                },
            }
            match spec {
                LayerSpec::Conv {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    ..
                } => {
                    c = *out_channels;
                    h = (h + 2 * padding - kernel) / stride + 1;
                    w = (w + 2 * padding - kernel) / stride + 1;
                }
                LayerSpec::Linear { out_features, .. } => {
                    c = *out_features;
                    (h, w) = (1, 1);
                }
                LayerSpec::MaxPool { kernel, stride } | LayerSpec::AvgPool { kernel, stride } => {
                    h = (h - kernel) / stride + 1;
                    w = (w - kernel) / stride + 1;
                }
                LayerSpec::Relu => {}
            }
        }
        let _ = c;
        let mut outputs: Vec<(usize, usize)> = blocks.iter().skip(1).map(|b| (b.1, b.2)).collect();
        outputs.push((h, w));
        let oracle = Self {
            blocks,
            outputs,
            batch: full.batch,
            threads: full.threads,
            warmup: full.warmup,
            repeats: full.repeats,
        };
        // Every block builds at the stack's own widths.
        let mut ch = input.0;
        for (l, (b, _, _)) in oracle.blocks.iter().enumerate() {
            let out = match &b[0] {
                LayerSpec::Conv { out_channels, .. } => *out_channels,
                LayerSpec::Linear { out_features, .. } => *out_features,
                _ => unreachable!("blocks start with a conv or linear layer"),
            };
            oracle.network(l, ch, out, true)?;
            ch = out;
        }
        Ok(oracle)
    }

    /// Number of layers (blocks).
    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// The block of layer `l` as a network with `c_in` inputs and `c_out` outputs
    /// (`block`), or the one-output head that follows a block ending on a feature
    /// map (`!block`; `None` when the block needs none).
    pub(crate) fn network(
        &self,
        l: usize,
        c_in: usize,
        c_out: usize,
        block: bool,
    ) -> Result<Option<Cnn>> {
        let Some((specs, h, w)) = self.blocks.get(l) else {
            return Err(Error::IndexOutOfRange {
                what: "layer",
                index: l,
                len: self.blocks.len(),
            });
        };
        if c_in == 0 || c_out == 0 {
            return Err(Error::param(
                "channels",
                0,
                "a layer needs >= 1 input and output channel",
            ));
        }
        let mut specs = specs.clone();
        let head = match &mut specs[0] {
            LayerSpec::Conv { out_channels, .. } => {
                *out_channels = c_out;
                true
            }
            LayerSpec::Linear { out_features, .. } => {
                *out_features = c_out;
                false
            }
            _ => false,
        };
        let head_spec = LayerSpec::Linear {
            name: "head".into(),
            out_features: 1,
        };
        let (input, specs) = match (block, head) {
            (true, false) => ((c_in, *h, *w), specs),
            (true, true) => {
                specs.push(head_spec);
                ((c_in, *h, *w), specs)
            }
            (false, true) => {
                let (oh, ow) = self.outputs[l];
                ((c_out, oh, ow), vec![head_spec])
            }
            (false, false) => return Ok(None),
        };
        let mut net = Cnn::new(input, &specs, 1)?;
        net.set_threads(self.threads);
        Ok(Some(net))
    }
}

impl LayerOracle for LayerLatencyOracle {
    fn measure_layer(&mut self, layer: usize, c_in: usize, c_out: usize) -> Result<f64> {
        let time = |net: Option<Cnn>| -> Result<f64> {
            match net {
                Some(mut n) => {
                    Ok(measure_latency(&mut n, self.batch, self.warmup, self.repeats)?.median_ms)
                }
                None => Ok(0.0),
            }
        };
        let block = time(self.network(layer, c_in, c_out, true)?)?;
        let head = time(self.network(layer, c_in, c_out, false)?)?;
        // Never below a hundredth of the block with its head (timing noise).
        Ok((block - head).max(0.01 * block))
    }
}

/// Peak resident memory of this process in MB, from `/proc/self/status` (`VmHWM`);
/// 0 where that file does not exist (not Linux). For reports of memory use (the
/// out-of-core projection, bounded-memory checks).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use energy_prune::network::Network;

    #[test]
    fn layer_oracle_builds_every_block_and_rejects_bad_requests() {
        let specs = Cnn::vgg_mnist_specs();
        let mut o = LayerLatencyOracle::new((1, 28, 28), &specs).unwrap();
        o.warmup = 0;
        o.repeats = 1;
        o.batch = 2;
        let arch = Cnn::vgg_mnist(0).unwrap().architecture().clone();
        assert_eq!(o.layers(), arch.layers().len());
        // Each block's input matches the full network's geometry at full widths.
        for (l, layer) in arch.layers().iter().enumerate() {
            let c: usize = layer
                .input
                .iter()
                .map(|s| arch.widths()[s.width.0].channels)
                .sum();
            let d = arch.widths()[layer.output.0].channels;
            let v = o.measure_layer(l, c, d).unwrap();
            assert!(v > 0.0 && v.is_finite());
        }
        assert!(o.measure_layer(99, 1, 1).is_err());
        assert!(o.measure_layer(0, 1, 0).is_err());
        // A wider layer takes longer than a much narrower one (best of three).
        let best = |o: &mut LayerLatencyOracle, c, d| {
            (0..3)
                .map(|_| o.measure_layer(1, c, d).unwrap())
                .fold(f64::INFINITY, f64::min)
        };
        o.batch = 16;
        assert!(best(&mut o, 32, 32) > best(&mut o, 2, 2));
    }

    #[test]
    fn narrow_specs_follow_the_widths_and_reject_bad_ones() {
        let o = LatencyOracle::new((1, 32, 32), &Cnn::lenet5_specs()).unwrap();
        let specs = o.narrow_specs(&[1, 3, 5, 7, 9, 10]).unwrap();
        let net = Cnn::new((1, 32, 32), &specs, 0).unwrap();
        let ch: Vec<usize> = net
            .architecture()
            .widths()
            .iter()
            .map(|w| w.channels)
            .collect();
        assert_eq!(ch, vec![1, 3, 5, 7, 9, 10]);
        assert!(o.narrow_specs(&[1, 3, 5, 7, 9]).is_err());
        assert!(o.narrow_specs(&[2, 3, 5, 7, 9, 10]).is_err());
        assert!(o.narrow_specs(&[1, 3, 5, 7, 9, 11]).is_err());
        assert!(o.narrow_specs(&[1, 0, 5, 7, 9, 10]).is_err());
    }

    #[test]
    fn wider_networks_take_longer() {
        let mut o = LatencyOracle::new((1, 28, 28), &Cnn::vgg_mnist_specs()).unwrap();
        o.batch = 16;
        o.repeats = 5;
        // Interleaved, best of three each: other tests run on the same cores.
        let (mut small, mut big) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..3 {
            small = small.min(o.measure(&[1, 4, 4, 8, 8, 16, 32, 10]).unwrap());
            big = big.min(o.measure(&[1, 32, 32, 64, 64, 128, 256, 10]).unwrap());
        }
        assert!(
            big > 3.0 * small,
            "full width {big} ms vs narrow {small} ms"
        );
        let s = o.last().unwrap();
        assert!(s.min_ms <= s.median_ms && s.median_ms <= s.max_ms);
    }
}
