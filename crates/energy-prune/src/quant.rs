//! Uniform symmetric quantization: the quantizers of quantization-aware training
//! and the error model the joint pruning and quantization solver prices.
//!
//! A value `x` in an integer format of `b < 16` bits with scale `s` becomes
//! ```text
//! q(x) = s * clamp(round(x / s), -L, L),    L = 2^(b-1) - 1
//! ```
//! with `round` to the nearest integer, ties to even, and `x / s` a float32
//! division: ONNX's `QuantizeLinear` exactly, so that a model exported in QDQ form
//! computes in onnxruntime what it computed in training.
//! Weights take one scale per output channel, `s_c = max_i |w_ci| / L` (the
//! largest weight of the channel is represented exactly, [`WeightScale::Max`]) or
//! the scale among `f max_i |w_ci| / L`, `f` in `0.20, 0.22, ..., 1.00`, with the
//! least squared error over the channel's nonzero weights ([`WeightScale::Mse`],
//! clipping the largest weights to round the others finer); activations one scale per
//! tensor, `s = a_max / L` from a running maximum `a_max` of `|x|` ([`ActivationQuantizer`]).
//! Formats of 16 bits or more are lossless here (see
//! [`precision`](crate::energy::precision)): nothing is rounded.
//!
//! Training uses the straight-through estimator: the forward pass sees `q(x)`, the
//! backward pass takes `dq/dx = 1` inside the clipping range `|x| <= L s` and `0`
//! outside.
//!
//! # Error model
//! Rounding to a step `s` adds an error of mean square `s^2 / 12` (the additive
//! noise model of uniform quantization). The joint solver charges a kept weight of
//! a layer the mean over its channels of `s_c^2 / 12`
//! ([`weight_noise`]), and scales its value by one minus the activations'
//! noise-to-signal ratio `(s_a^2 / 12) / E[x^2]` ([`ActivationStats::noise_ratio`]).

use crate::arch::Layer;
use crate::energy::NumberFormat;
use crate::error::{Error, Result, check_finite};

/// The weights of one output channel of `layer`: `weight_count / out_channels`.
fn channel_len(layer: &Layer, weights: &[f32]) -> Result<usize> {
    if weights.len() != layer.weight_count() {
        return Err(Error::shape(
            format!("weights of layer {}", layer.name),
            layer.weight_count(),
            weights.len(),
        ));
    }
    Ok(weights.len() / layer.out_channels().max(1))
}

/// How the per-channel weight scales are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightScale {
    /// `max |w| / L`: the largest weight exact.
    #[default]
    Max,
    /// The least squared rounding error over the channel's nonzero weights among
    /// 41 fractions of the maximum.
    Mse,
}

/// The per-output-channel scales `max |w| / L` of `weights` in `format` (`None`
/// for a lossless format). A channel of zeros has scale 0.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `weights` is not the layer's size;
/// [`Error::NonFinite`] for NaN or infinite weights.
pub fn channel_scales(
    layer: &Layer,
    weights: &[f32],
    format: NumberFormat,
) -> Result<Option<Vec<f32>>> {
    channel_scales_with(layer, weights, format, WeightScale::Max)
}

/// Squared rounding error of `channel` at `scale`.
fn channel_error(channel: &[f32], scale: f32, levels: f32) -> f64 {
    channel
        .iter()
        .map(|&v| {
            let e = f64::from(v - quantize_value(v, scale, levels));
            e * e
        })
        .sum()
}

/// [`channel_scales`] by `rule`.
///
/// # Errors
/// As [`channel_scales`].
pub fn channel_scales_with(
    layer: &Layer,
    weights: &[f32],
    format: NumberFormat,
    rule: WeightScale,
) -> Result<Option<Vec<f32>>> {
    let len = channel_len(layer, weights)?;
    check_finite(&format!("weights of layer {}", layer.name), weights)?;
    let Some(levels) = format.levels() else {
        return Ok(None);
    };
    Ok(Some(
        weights
            .chunks_exact(len.max(1))
            .map(|c| {
                let max = c.iter().fold(0.0f32, |m, v| m.max(v.abs())) / levels;
                match rule {
                    WeightScale::Max => max,
                    WeightScale::Mse => (10..=50)
                        .map(|k| max * k as f32 / 50.0)
                        .min_by(|&a, &b| {
                            channel_error(c, a, levels).total_cmp(&channel_error(c, b, levels))
                        })
                        .unwrap_or(max),
                }
            })
            .collect(),
    ))
}

/// Quantize `weights` (one chunk per output channel) in place with given scales.
/// Zeros stay zero.
pub fn quantize_with_scales(weights: &mut [f32], scales: &[f32], format: NumberFormat) {
    let Some(levels) = format.levels() else {
        return;
    };
    let len = weights.len() / scales.len().max(1);
    for (c, s) in weights.chunks_exact_mut(len.max(1)).zip(scales) {
        for v in c {
            *v = quantize_value(*v, *s, levels);
        }
    }
}

/// Per-channel weight scales fit for storage: a channel of zeros (scale 0, or a
/// non-finite scale) takes the layer's smallest positive scale (1 if none), so
/// that every scale is positive and its bias grid no coarser than the others'.
pub fn storable_scales(scales: &[f32]) -> Vec<f32> {
    let fallback = scales
        .iter()
        .copied()
        .filter(|s| s.is_finite() && *s > 0.0)
        .reduce(f32::min)
        .unwrap_or(1.0);
    scales
        .iter()
        .map(|&s| {
            if s.is_finite() && s > 0.0 {
                s
            } else {
                fallback
            }
        })
        .collect()
}

/// The scales of a layer's integer bias: `s_x * s_w[c]` per output channel, the
/// grid of the int32 accumulator of an integer kernel (the QDQ convention:
/// onnxruntime rounds a float bias onto it when it fuses a layer). `weight_scales`
/// as from [`storable_scales`].
pub fn bias_scales(input_scale: f32, weight_scales: &[f32]) -> Vec<f32> {
    weight_scales.iter().map(|&s| input_scale * s).collect()
}

/// Round `bias` in place onto the int32 grid of `scales` (one per channel):
/// `b = s * round(b / s)`, ties to even, clamped to the int32 range.
pub fn quantize_bias(bias: &mut [f32], scales: &[f32]) {
    for (b, &s) in bias.iter_mut().zip(scales) {
        if s > 0.0 {
            *b = s * bias_level(*b, s) as f32;
        }
    }
}

/// The int32 level of bias `b` at scale `s`.
pub fn bias_level(b: f32, s: f32) -> i32 {
    ((b / s).round_ties_even() as f64).clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

/// `v` rounded to the nearest integer, ties to even, for `|v| <= 2^22` (what
/// `f32::round_ties_even` gives, without its library call on targets lacking
/// SSE4.1): adding and subtracting `1.5 * 2^23` leaves no fraction bits, and the
/// float addition rounds to nearest even.
#[inline]
pub fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Round `x` to the grid of `scale` with `levels` levels either side of zero
/// (ties to even, as ONNX's `QuantizeLinear`; clamping first is the same, the
/// bounds being integers).
#[inline]
pub fn quantize_value(x: f32, scale: f32, levels: f32) -> f32 {
    if scale > 0.0 {
        scale * round_even((x / scale).clamp(-levels, levels))
    } else {
        0.0
    }
}

/// Quantize the weights of `layer` in place, per output channel (nothing for a
/// lossless format). Zeros stay zero, so a pruned support is kept.
///
/// # Errors
/// As [`channel_scales`].
pub fn quantize_weights(layer: &Layer, weights: &mut [f32], format: NumberFormat) -> Result<()> {
    if let Some(scales) = channel_scales(layer, weights, format)? {
        quantize_with_scales(weights, &scales, format);
    }
    Ok(())
}

/// The mean square rounding error per kept weight of `layer` in `format` under the
/// noise model: the mean over output channels of `s_c^2 / 12` (0 when lossless).
///
/// # Errors
/// As [`channel_scales`].
pub fn weight_noise(layer: &Layer, weights: &[f32], format: NumberFormat) -> Result<f64> {
    weight_noise_with(layer, weights, format, WeightScale::Max)
}

/// [`weight_noise`] by `rule`: for [`WeightScale::Max`] the noise model `s_c^2 / 12`;
/// for [`WeightScale::Mse`] the measured mean squared rounding error of the layer's
/// nonzero weights at their scales (clipping included).
///
/// # Errors
/// As [`channel_scales`].
pub fn weight_noise_with(
    layer: &Layer,
    weights: &[f32],
    format: NumberFormat,
    rule: WeightScale,
) -> Result<f64> {
    let Some(scales) = channel_scales_with(layer, weights, format, rule)? else {
        return Ok(0.0);
    };
    if rule == WeightScale::Mse {
        let levels = format.levels().unwrap_or(1.0);
        let len = weights.len() / scales.len().max(1);
        let (mut err, mut n) = (0.0, 0usize);
        for (c, s) in weights.chunks_exact(len.max(1)).zip(&scales) {
            err += channel_error(c, *s, levels);
            n += c.iter().filter(|v| **v != 0.0).count();
        }
        return Ok(err / n.max(1) as f64);
    }
    let n = scales.len().max(1) as f64;
    Ok(scales
        .iter()
        .map(|s| f64::from(*s) * f64::from(*s) / 12.0)
        .sum::<f64>()
        / n)
}

/// Statistics of a layer's input activations, for pricing their quantization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationStats {
    /// Largest `|x|` seen (the clipping range of a max-calibrated quantizer).
    pub max_abs: f64,
    /// Mean of `x^2`.
    pub mean_square: f64,
}

impl ActivationStats {
    /// The statistics of a batch of activations.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN or infinite values; [`Error::InvalidParameter`]
    /// for an empty batch.
    pub fn of(values: &[f32]) -> Result<Self> {
        check_finite("activations", values)?;
        if values.is_empty() {
            return Err(Error::param(
                "activations",
                "[]",
                "statistics need at least one value",
            ));
        }
        let (max_abs, sum) = values.iter().fold((0.0f64, 0.0f64), |(m, s), v| {
            let v = f64::from(*v);
            (m.max(v.abs()), s + v * v)
        });
        Ok(Self {
            max_abs,
            mean_square: sum / values.len() as f64,
        })
    }

    /// Merge the statistics of `other`, a batch of `n_other` values, into these of
    /// `n_self` values.
    pub fn merge(&self, n_self: usize, other: &Self, n_other: usize) -> Self {
        let total = (n_self + n_other).max(1) as f64;
        Self {
            max_abs: self.max_abs.max(other.max_abs),
            mean_square: (self.mean_square * n_self as f64 + other.mean_square * n_other as f64)
                / total,
        }
    }

    /// The noise-to-signal ratio `(s^2 / 12) / E[x^2]` of quantizing these
    /// activations in `format` with `s = max_abs / L` (0 when lossless or when the
    /// activations are all zero).
    pub fn noise_ratio(&self, format: NumberFormat) -> f64 {
        match format.levels() {
            Some(levels) if self.mean_square > 0.0 => {
                let s = self.max_abs / f64::from(levels);
                s * s / 12.0 / self.mean_square
            }
            _ => 0.0,
        }
    }
}

/// A per-tensor activation quantizer with a calibrated, then tracked, range.
///
/// [`ActivationQuantizer::observe`] raises the range to the batch's largest `|x|`
/// while calibrating, and follows it with an exponential moving average
/// (`momentum`) afterwards; [`ActivationQuantizer::forward`] fake-quantizes in
/// place and [`ActivationQuantizer::backward`] applies the straight-through
/// estimator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationQuantizer {
    /// The format (lossless formats leave the activations unchanged).
    pub format: NumberFormat,
    /// The clipping range `a_max` (0 until the first observation).
    pub range: f32,
    /// Weight of a new batch's maximum in the moving average, in (0, 1].
    pub momentum: f32,
    /// Whether the quantizer is still calibrating (range = running maximum).
    pub calibrating: bool,
    /// Batches observed.
    pub seen: u32,
}

/// Batches over which an [`ActivationQuantizer`] calibrates its range (their running
/// maximum) before tracking it by a moving average.
pub const CALIBRATION_BATCHES: u32 = 8;

impl ActivationQuantizer {
    /// A quantizer in `format`, calibrating, with momentum 0.01.
    pub fn new(format: NumberFormat) -> Self {
        Self {
            format,
            range: 0.0,
            momentum: 0.01,
            calibrating: true,
            seen: 0,
        }
    }

    /// Whether the quantizer changes values (an integer format below 16 bits).
    pub fn is_active(&self) -> bool {
        self.format.levels().is_some()
    }

    /// Update the range from a batch (non-finite values are ignored).
    pub fn observe(&mut self, values: &[f32]) {
        let max = values
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f32, |m, v| m.max(v.abs()));
        self.observe_max(max);
    }

    /// Update the range from a batch whose largest `|x|` is `max`: the running
    /// maximum for the first [`CALIBRATION_BATCHES`] batches, then the moving
    /// average.
    pub fn observe_max(&mut self, max: f32) {
        if !max.is_finite() {
            return;
        }
        self.range = if self.calibrating || self.range == 0.0 {
            self.range.max(max)
        } else {
            (1.0 - self.momentum) * self.range + self.momentum * max
        };
        self.seen += 1;
        if self.seen >= CALIBRATION_BATCHES {
            self.calibrating = false;
        }
    }

    /// The step `range / L` (0 when inactive or before any observation).
    pub fn scale(&self) -> f32 {
        self.format.levels().map_or(0.0, |l| self.range / l)
    }

    /// Fake-quantize `values` in place.
    pub fn forward(&self, values: &mut [f32]) {
        let (Some(levels), s) = (self.format.levels(), self.scale()) else {
            return;
        };
        if s > 0.0 {
            for v in values {
                *v = quantize_value(*v, s, levels);
            }
        }
    }

    /// The straight-through gradient: `grad` kept where `|x| <= range` of the
    /// unquantized input `x`, zeroed outside.
    pub fn backward(&self, inputs: &[f32], grad: &mut [f32]) {
        if !self.is_active() || self.scale() == 0.0 {
            return;
        }
        for (g, x) in grad.iter_mut().zip(inputs) {
            if x.abs() > self.range {
                *g = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::zoo;

    #[test]
    fn round_even_is_round_ties_even_in_range() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let v = (rng >> 40) as f32 / (1u64 << 24) as f32 * 70_000.0 - 35_000.0;
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
        for v in [
            0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 32767.5, -32766.5, 0.0, -0.0, 4194304.0,
        ] {
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn weights_round_per_channel_and_keep_zeros() {
        let arch = zoo::lenet5().unwrap();
        let layer = &arch.layers()[4]; // fc 84 -> 10
        let mut w: Vec<f32> = (0..layer.weight_count())
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        w[3] = 0.0;
        let orig = w.clone();
        quantize_weights(layer, &mut w, NumberFormat::Int(4)).unwrap();
        assert_eq!(w[3], 0.0);
        for (c, (q, o)) in w.chunks(84).zip(orig.chunks(84)).enumerate() {
            let max = o.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = max / 7.0;
            for (a, b) in q.iter().zip(o) {
                assert!((a - b).abs() <= s / 2.0 + 1e-6, "channel {c}");
                let k = a / s;
                assert!((k - k.round()).abs() < 1e-4 && k.abs() <= 7.0 + 1e-4);
            }
        }
        let mut same = orig.clone();
        quantize_weights(layer, &mut same, NumberFormat::INT16).unwrap();
        assert_eq!(same, orig);
        assert_eq!(
            weight_noise(layer, &orig, NumberFormat::Float32).unwrap(),
            0.0
        );
        let n8 = weight_noise(layer, &orig, NumberFormat::INT8).unwrap();
        let n4 = weight_noise(layer, &orig, NumberFormat::Int(4)).unwrap();
        // The step grows by 127/7 from 8 to 4 bits: the noise by its square.
        assert!((n4 / n8 - (127.0f64 / 7.0).powi(2)).abs() < 1e-3 * n4 / n8);
        assert!(quantize_weights(layer, &mut w[1..], NumberFormat::INT8).is_err());
        // MSE-optimal scales never round worse than the maximum, and clip at 2 bits.
        for bits in [2u8, 4, 8] {
            let f = NumberFormat::Int(bits);
            let max = channel_scales(layer, &orig, f).unwrap().unwrap();
            let mse = channel_scales_with(layer, &orig, f, WeightScale::Mse)
                .unwrap()
                .unwrap();
            let levels = f.levels().unwrap();
            for ((c, a), b) in orig.chunks(84).zip(&max).zip(&mse) {
                assert!(channel_error(c, *b, levels) <= channel_error(c, *a, levels));
                assert!(b <= a);
            }
            let measured = weight_noise_with(layer, &orig, f, WeightScale::Mse).unwrap();
            assert!(measured > 0.0 && measured.is_finite());
            if bits == 2 {
                assert!(mse.iter().zip(&max).any(|(b, a)| b < a));
            }
        }
    }

    #[test]
    fn activation_quantizer_calibrates_tracks_and_passes_gradients_straight_through() {
        let mut q = ActivationQuantizer::new(NumberFormat::Int(4));
        q.observe(&[0.5, -1.4, 0.2]);
        q.observe(&[0.7]);
        assert_eq!(q.range, 1.4);
        let mut x = vec![0.05, 0.3, -2.0, 1.4];
        let inputs = x.clone();
        q.forward(&mut x);
        let s = 1.4 / 7.0;
        assert!((x[0] - 0.0).abs() < 1e-7 && (x[1] - 2.0 * s).abs() < 1e-6);
        assert!((x[2] + 1.4).abs() < 1e-6 && (x[3] - 1.4).abs() < 1e-6);
        let mut g = vec![1.0; 4];
        q.backward(&inputs, &mut g);
        assert_eq!(g, vec![1.0, 1.0, 0.0, 1.0]);
        q.calibrating = false;
        q.observe(&[2.4]);
        assert!((q.range - (0.99 * 1.4 + 0.01 * 2.4)).abs() < 1e-6);
        let stats = ActivationStats::of(&[1.0, -1.0, 0.0, 2.0]).unwrap();
        assert_eq!(stats.max_abs, 2.0);
        assert_eq!(stats.mean_square, 1.5);
        let r = stats.noise_ratio(NumberFormat::INT8);
        assert!((r - (2.0f64 / 127.0).powi(2) / 12.0 / 1.5).abs() < 1e-15);
        assert_eq!(stats.noise_ratio(NumberFormat::Float16), 0.0);
        assert!(ActivationStats::of(&[]).is_err());
        assert!(ActivationStats::of(&[f32::NAN]).is_err());
    }
}
