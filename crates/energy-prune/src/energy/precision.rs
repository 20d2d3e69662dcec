//! Numeric precision of a layer's weights and activations, and how the cost
//! models scale with it.
//!
//! A [`LayerPrecision`] gives the number format of a layer's weights and of its
//! input (and output) activations: signed integers of 2 to 16 bits
//! ([`NumberFormat::Int`]) or IEEE half / single floats as reference points.
//! A network's precision is one [`LayerPrecision`] per layer, beside its
//! [`Architecture`]; [`check_precision`] validates it against one.
//!
//! # Scaling of the systolic model
//! The systolic model's unit energies are those of 16-bit values (the
//! reference, [`REFERENCE_BITS`]); a layer at another precision is priced with
//! the scaling below, after the per-operation energies of Horowitz, "Computing's
//! energy problem (and what we can do about it)", ISSCC 2014 (45 nm: an 8-bit
//! integer multiply 0.2 pJ, 32-bit 3.1 pJ, growing with the product of the
//! operand widths; an 8-bit add 0.03 pJ, 32-bit 0.1 pJ, growing with the width;
//! a 16-bit float multiply 1.1 pJ and add 0.4 pJ; memory energy per bit read).
//! With `b_w` weight bits, `b_a` activation bits and `r = 16`:
//! ```text
//! weight movement  e_dram, e_buf, e_rf  x  b_w / r      weight buffer holds S_w r / b_w weights
//! input movement   e_dram, e_buf, e_rf  x  b_a / r      input buffer holds S_in r / b_a inputs
//! e_mac' = e_mac (1 + s_a (s_m (M - 1) + (1 - s_m)(A - 1)) + (1 - s_a)((b_w + b_a) / 2r - 1))
//!   M = b_w b_a / r^2                          (multiplier; x f_mul for float arithmetic)
//!   A = (b_w + b_a + g) / (2r + g)             (accumulator of width b_w + b_a + g; x f_add for float)
//! ```
//! `s_a` is the share of `e_mac` that is arithmetic (the rest is the register-file
//! traffic of the operands, which scales with the bits moved), `s_m` the
//! multiplier's share of the arithmetic, `g` the accumulator's guard bits, and
//! `f_mul`, `f_add` the cost of float over integer arithmetic of the same width;
//! arithmetic is float when either operand is. Output write-back moves values of
//! the layer's activation format. At 16-bit integers every factor is exactly 1,
//! so every figure of the 16-bit model is reproduced bit for bit. The parameters
//! are [`PrecisionScaling`], part of the
//! [`SystolicConfig`](super::SystolicConfig).
//!
//! # Lossless formats
//! Formats of 16 bits or more are treated as lossless, as the systolic model's
//! paper does for its 16-bit fixed-point hardware: they are priced, but training
//! does not quantize them and the joint solver charges them no quantization error.

use std::fmt;
use std::str::FromStr;

use super::WeightEnergyModel;
use crate::arch::Architecture;
use crate::error::{Error, Result};

/// Bits of the values the systolic model's unit energies and buffer sizes refer to.
pub const REFERENCE_BITS: u32 = 16;

/// The number format of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub enum NumberFormat {
    /// Signed integers of the given bits (2 to 16), symmetric uniform quantization.
    Int(u8),
    /// IEEE 754 half precision.
    Float16,
    /// IEEE 754 single precision.
    Float32,
}

impl NumberFormat {
    /// 8-bit integers.
    pub const INT8: Self = NumberFormat::Int(8);
    /// 16-bit integers: the reference format of the systolic model.
    pub const INT16: Self = NumberFormat::Int(16);

    /// Bits per value.
    pub fn bits(&self) -> u32 {
        match self {
            NumberFormat::Int(b) => u32::from(*b),
            NumberFormat::Float16 => 16,
            NumberFormat::Float32 => 32,
        }
    }

    /// Whether the format is floating point.
    pub fn is_float(&self) -> bool {
        !matches!(self, NumberFormat::Int(_))
    }

    /// Whether training and the joint solver treat the format as exact (16 bits or
    /// more; see the [module docs](self)).
    pub fn is_lossless(&self) -> bool {
        self.bits() >= REFERENCE_BITS
    }

    /// The largest quantization level `2^(b-1) - 1` of an integer format below
    /// 16 bits (`None` for a lossless format): values are rounded to
    /// `scale * k` for integers `k` in `[-levels, levels]`.
    pub fn levels(&self) -> Option<f32> {
        match self {
            NumberFormat::Int(b) if !self.is_lossless() => Some(((1u32 << (b - 1)) - 1) as f32),
            _ => None,
        }
    }

    /// Check the format: integers of 2 to 16 bits.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an integer width outside `2..=16`.
    pub fn validate(&self) -> Result<()> {
        match self {
            NumberFormat::Int(b) if !(2..=16).contains(b) => Err(Error::param(
                "integer bits",
                b,
                "integer formats have 2 to 16 bits (use fp16 or fp32 for floats)",
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for NumberFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberFormat::Int(b) => f.pad(&format!("int{b}")),
            NumberFormat::Float16 => f.pad("fp16"),
            NumberFormat::Float32 => f.pad("fp32"),
        }
    }
}

impl FromStr for NumberFormat {
    type Err = Error;
    /// `int2` to `int16` (or just the bits, `8`), `fp16`, `fp32`.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let format = match t.as_str() {
            "fp16" | "float16" | "f16" => NumberFormat::Float16,
            "fp32" | "float32" | "f32" => NumberFormat::Float32,
            other => {
                let bits = other.strip_prefix("int").unwrap_or(other);
                let b: u8 = bits.parse().map_err(|_| {
                    Error::param(
                        "number format",
                        s,
                        "expected int2 .. int16 (or the bits alone), fp16 or fp32",
                    )
                })?;
                NumberFormat::Int(b)
            }
        };
        format.validate()?;
        Ok(format)
    }
}

impl TryFrom<String> for NumberFormat {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<NumberFormat> for String {
    fn from(f: NumberFormat) -> Self {
        f.to_string()
    }
}

/// The number formats of one layer: its weights and its input (and output)
/// activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerPrecision {
    /// Format of the weights.
    pub weights: NumberFormat,
    /// Format of the activations the layer reads and writes.
    pub activations: NumberFormat,
}

impl Default for LayerPrecision {
    fn default() -> Self {
        Self::REFERENCE
    }
}

impl LayerPrecision {
    /// 16-bit weights and activations: the precision of the systolic model's
    /// reference figures.
    pub const REFERENCE: Self = Self {
        weights: NumberFormat::INT16,
        activations: NumberFormat::INT16,
    };

    /// Weights and activations in the given formats.
    ///
    /// # Errors
    /// As [`NumberFormat::validate`].
    pub fn new(weights: NumberFormat, activations: NumberFormat) -> Result<Self> {
        weights.validate()?;
        activations.validate()?;
        Ok(Self {
            weights,
            activations,
        })
    }

    /// Integers of `weight_bits` and `activation_bits`.
    ///
    /// # Errors
    /// As [`NumberFormat::validate`].
    pub fn int(weight_bits: u8, activation_bits: u8) -> Result<Self> {
        Self::new(
            NumberFormat::Int(weight_bits),
            NumberFormat::Int(activation_bits),
        )
    }

    /// Whether this is the reference precision (every 16-bit figure unchanged).
    pub fn is_reference(&self) -> bool {
        *self == Self::REFERENCE
    }

    /// Check both formats.
    ///
    /// # Errors
    /// As [`NumberFormat::validate`].
    pub fn validate(&self) -> Result<()> {
        self.weights.validate()?;
        self.activations.validate()
    }
}

impl fmt::Display for LayerPrecision {
    /// `w8a8`-style: `w<weights>/a<activations>`, e.g. `int8/int16`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}/{}", self.weights, self.activations))
    }
}

impl FromStr for LayerPrecision {
    type Err = Error;
    /// `weights/activations`, e.g. `int8/int8`, `4/8` or `fp32/fp32`.
    fn from_str(s: &str) -> Result<Self> {
        let (w, a) = s.split_once('/').ok_or_else(|| {
            Error::param(
                "precision",
                s,
                "expected weights/activations, e.g. int8/int8 or 4/8",
            )
        })?;
        Self::new(w.parse()?, a.parse()?)
    }
}

/// Check a network precision: one valid [`LayerPrecision`] per layer of `arch`.
///
/// # Errors
/// [`Error::ShapeMismatch`] for another number of entries; as
/// [`NumberFormat::validate`].
pub fn check_precision(arch: &Architecture, precision: &[LayerPrecision]) -> Result<()> {
    if precision.len() != arch.layers().len() {
        return Err(Error::shape(
            "layer precisions (one per layer)",
            arch.layers().len(),
            precision.len(),
        ));
    }
    precision.iter().try_for_each(LayerPrecision::validate)
}

/// The parameters of the precision scaling of the systolic model (see the
/// [module docs](self) for the formulas and their source).
///
/// | field | default | range | meaning |
/// |---|---|---|---|
/// | `arithmetic_share` (s_a) | 1/3 | [0, 1] | share of `e_mac` that is arithmetic (Eyeriss: a MAC of 1 next to two register-file accesses) |
/// | `multiplier_share` (s_m) | 0.9 | [0, 1] | the multiplier's share of the arithmetic at 16 x 16 bits (Horowitz: ~0.8 pJ multiply, ~0.1 pJ accumulate) |
/// | `accumulator_guard_bits` (g) | 8 | 0..=64 | accumulator bits beyond `b_w + b_a` |
/// | `float_multiplier_factor` (f_mul) | 1.3 | [1, 100] | float over integer multiply of one width (Horowitz: fp16 1.1 vs ~0.8 pJ, fp32 3.7 vs 3.1 pJ) |
/// | `float_adder_factor` (f_add) | 8 | [1, 100] | float over integer add of one width (fp16 0.4 vs ~0.05 pJ, fp32 0.9 vs 0.1 pJ) |
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PrecisionScaling {
    /// Share of the MAC energy that is arithmetic.
    pub arithmetic_share: f64,
    /// The multiplier's share of the arithmetic at the reference precision.
    pub multiplier_share: f64,
    /// Accumulator bits beyond the product's.
    pub accumulator_guard_bits: u32,
    /// Float over integer multiplier energy.
    pub float_multiplier_factor: f64,
    /// Float over integer adder energy.
    pub float_adder_factor: f64,
}

impl Default for PrecisionScaling {
    fn default() -> Self {
        Self::HOROWITZ
    }
}

impl PrecisionScaling {
    /// The defaults of the table above.
    pub const HOROWITZ: Self = Self {
        arithmetic_share: 1.0 / 3.0,
        multiplier_share: 0.9,
        accumulator_guard_bits: 8,
        float_multiplier_factor: 1.3,
        float_adder_factor: 8.0,
    };

    /// Check every field against its range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("precision.arithmetic_share", self.arithmetic_share),
            ("precision.multiplier_share", self.multiplier_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::param(name, v, "a share must be in [0, 1]"));
            }
        }
        for (name, v) in [
            (
                "precision.float_multiplier_factor",
                self.float_multiplier_factor,
            ),
            ("precision.float_adder_factor", self.float_adder_factor),
        ] {
            if !(1.0..=100.0).contains(&v) {
                return Err(Error::param(name, v, "a float factor must be in [1, 100]"));
            }
        }
        if self.accumulator_guard_bits > 64 {
            return Err(Error::param(
                "precision.accumulator_guard_bits",
                self.accumulator_guard_bits,
                "at most 64 guard bits",
            ));
        }
        Ok(())
    }

    /// The factor of data movement of values in `format`: `bits / 16`.
    pub fn movement(format: NumberFormat) -> f64 {
        f64::from(format.bits()) / f64::from(REFERENCE_BITS)
    }

    /// The number of values in `format` that a buffer of `capacity` reference
    /// (16-bit) values holds: `floor(capacity * 16 / bits)`, at least 1.
    pub fn capacity(capacity: u64, format: NumberFormat) -> u64 {
        let bits = u128::from(format.bits());
        let held = u128::from(capacity) * u128::from(REFERENCE_BITS) / bits;
        u64::try_from(held).unwrap_or(u64::MAX).max(1)
    }

    /// The MAC energy at `precision` of a MAC that costs `e_mac` at the reference
    /// precision (the formula of the [module docs](self)); exactly `e_mac` at the
    /// reference.
    pub fn mac_energy(&self, e_mac: f64, precision: LayerPrecision) -> f64 {
        if precision.is_reference() {
            return e_mac;
        }
        let (bw, ba) = (
            f64::from(precision.weights.bits()),
            f64::from(precision.activations.bits()),
        );
        let r = f64::from(REFERENCE_BITS);
        let g = f64::from(self.accumulator_guard_bits);
        let float = precision.weights.is_float() || precision.activations.is_float();
        let (f_mul, f_add) = if float {
            (self.float_multiplier_factor, self.float_adder_factor)
        } else {
            (1.0, 1.0)
        };
        let multiplier = bw * ba / (r * r) * f_mul;
        let accumulator = (bw + ba + g) / (2.0 * r + g) * f_add;
        let registers = (bw + ba) / (2.0 * r);
        let (sa, sm) = (self.arithmetic_share, self.multiplier_share);
        e_mac
            * (1.0
                + sa * (sm * (multiplier - 1.0) + (1.0 - sm) * (accumulator - 1.0))
                + (1.0 - sa) * (registers - 1.0))
    }
}

/// A weight-level model that prices the precision of every layer: the models the
/// joint pruning and quantization solver can choose bit-widths with.
///
/// A layer's cost must depend only on its own precision (true of the systolic
/// and counting models), so that the solver can price a layer's options one
/// layer at a time.
pub trait PrecisionModel: WeightEnergyModel {
    /// The precision of every layer, as the model prices it now.
    fn precision(&self) -> &[LayerPrecision];

    /// The same model with layer `l` at `precision[l]`.
    ///
    /// # Errors
    /// As [`check_precision`], and model-specific errors (a buffer too small for
    /// the layer at that precision).
    fn at_precision(&self, precision: &[LayerPrecision]) -> Result<Box<dyn PrecisionModel>>;
}

macro_rules! forward_precision {
    ($($ptr:ty),*) => {$(
        impl<T: PrecisionModel + ?Sized> PrecisionModel for $ptr {
            fn precision(&self) -> &[LayerPrecision] { (**self).precision() }
            fn at_precision(&self, p: &[LayerPrecision]) -> Result<Box<dyn PrecisionModel>> { (**self).at_precision(p) }
        }
    )*};
}
forward_precision!(&T, Box<T>, std::sync::Arc<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_print_and_validate() {
        assert_eq!("int8".parse::<NumberFormat>().unwrap(), NumberFormat::INT8);
        assert_eq!("4".parse::<NumberFormat>().unwrap(), NumberFormat::Int(4));
        assert_eq!(
            "FP32".parse::<NumberFormat>().unwrap(),
            NumberFormat::Float32
        );
        assert!("int1".parse::<NumberFormat>().is_err());
        assert!("int17".parse::<NumberFormat>().is_err());
        assert!("bf16".parse::<NumberFormat>().is_err());
        let p: LayerPrecision = "4/int8".parse().unwrap();
        assert_eq!(p, LayerPrecision::int(4, 8).unwrap());
        assert_eq!(p.to_string(), "int4/int8");
        assert!("int8".parse::<LayerPrecision>().is_err());
        assert_eq!(NumberFormat::Int(4).levels(), Some(7.0));
        assert_eq!(NumberFormat::Int(2).levels(), Some(1.0));
        assert_eq!(NumberFormat::INT16.levels(), None);
        assert!(NumberFormat::Float16.is_lossless() && !NumberFormat::Int(8).is_lossless());
    }

    #[test]
    fn scaling_is_the_identity_at_16_bits_and_hand_computed_at_8_and_4() {
        let s = PrecisionScaling::HOROWITZ;
        assert_eq!(s.mac_energy(3.0, LayerPrecision::REFERENCE), 3.0);
        // 8/8: M = 64/256 = 0.25, A = 24/40 = 0.6, registers 16/32 = 0.5:
        // 3 (1 + (1/3)(0.9 (-0.75) + 0.1 (-0.4)) + (2/3)(-0.5)) = 3 (1 - 0.715/3 - 1/3) = 1.285
        let e8 = s.mac_energy(3.0, LayerPrecision::int(8, 8).unwrap());
        assert!((e8 - 1.285).abs() < 1e-12, "{e8}");
        // 4/8: M = 32/256 = 0.125, A = 20/40 = 0.5, registers 12/32 = 0.375:
        // 3 (1 + (1/3)(0.9 (-0.875) + 0.1 (-0.5)) + (2/3)(-0.625)) = 3 - 0.8375 - 1.25 = 0.9125
        let e4 = s.mac_energy(3.0, LayerPrecision::int(4, 8).unwrap());
        assert!((e4 - 0.9125).abs() < 1e-12, "{e4}");
        assert_eq!(PrecisionScaling::capacity(4096, NumberFormat::INT8), 8192);
        assert_eq!(
            PrecisionScaling::capacity(4096, NumberFormat::Float32),
            2048
        );
        assert_eq!(PrecisionScaling::capacity(5, NumberFormat::Int(3)), 26);
        assert_eq!(PrecisionScaling::movement(NumberFormat::Int(4)), 0.25);
        // Float arithmetic costs more than integer arithmetic of the same width.
        let f16 = LayerPrecision::new(NumberFormat::Float16, NumberFormat::Float16).unwrap();
        assert!(s.mac_energy(3.0, f16) > 3.0);
    }

    #[test]
    fn mac_energy_grows_with_either_width() {
        let s = PrecisionScaling::HOROWITZ;
        for a in 2..=16u8 {
            for w in 2..16u8 {
                let lo = s.mac_energy(3.0, LayerPrecision::int(w, a).unwrap());
                let hi_w = s.mac_energy(3.0, LayerPrecision::int(w + 1, a).unwrap());
                assert!(hi_w > lo, "w {w} a {a}");
                if a < 16 {
                    let hi_a = s.mac_energy(3.0, LayerPrecision::int(w, a + 1).unwrap());
                    assert!(hi_a > lo, "w {w} a {a}");
                }
            }
        }
        assert!(
            PrecisionScaling {
                arithmetic_share: 1.5,
                ..s
            }
            .validate()
            .is_err()
        );
    }
}
