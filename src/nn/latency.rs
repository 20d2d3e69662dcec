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
use crate::energy::CostOracle;
use crate::error::{Error, Result};
use crate::network::Trainable;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Network;

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
