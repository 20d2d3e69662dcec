//! Conversions between a framework's own float type and the canonical `f32`
//! layout of the network traits, for models whose weights are stored as `f64`
//! (or any other [`Float`]): copy with a length and finiteness check, so that a
//! value outside the `f32` range is an error instead of an infinity.

use num_traits::Float;

use crate::error::{Error, Origin, Result};

/// Copy `src` (any float type) into `dst` as `f32`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the lengths differ; [`Error::NonFinite`] for a NaN,
/// an infinity, or a value that overflows `f32` (`dst` is unchanged then).
///
/// # Examples
/// ```
/// use energy_prune::network::to_canonical;
/// let mut dst = [0.0f32; 2];
/// to_canonical(&[0.5f64, -2.0], &mut dst)?;
/// assert_eq!(dst, [0.5, -2.0]);
/// assert!(to_canonical(&[1e300f64, 0.0], &mut dst).is_err());
/// # Ok::<(), energy_prune::Error>(())
/// ```
pub fn to_canonical<F: Float>(src: &[F], dst: &mut [f32]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::shape(
            "weights (canonical length)",
            dst.len(),
            src.len(),
        ));
    }
    let as_f32 = |v: F| v.to_f32().filter(|x| x.is_finite());
    if let Some(index) = src.iter().position(|v| as_f32(*v).is_none()) {
        return Err(Error::non_finite(
            "weights converted to f32",
            index,
            Origin::Input,
        ));
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = as_f32(*s).unwrap_or(0.0);
    }
    Ok(())
}

/// Copy canonical `f32` weights into `dst` of any float type.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the lengths differ; [`Error::NonFinite`] for a NaN
/// or infinite value (`dst` is unchanged then).
pub fn from_canonical<F: Float>(src: &[f32], dst: &mut [F]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::shape(
            "weights (canonical length)",
            src.len(),
            dst.len(),
        ));
    }
    crate::error::check_finite("canonical weights", src)?;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = F::from(*s).unwrap_or_else(F::zero);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_values() {
        let mut c = [0.0f32; 3];
        to_canonical(&[1.5f64, -0.25, 3.0], &mut c).unwrap();
        let mut back = [0.0f64; 3];
        from_canonical(&c, &mut back).unwrap();
        assert_eq!(back, [1.5, -0.25, 3.0]);
        assert!(to_canonical(&[f64::NAN, 0.0, 0.0], &mut c).is_err());
        assert!(to_canonical(&[1e39f64, 0.0, 0.0], &mut c).is_err());
        assert_eq!(c, [1.5, -0.25, 3.0], "unchanged on error");
        assert!(to_canonical(&[1.0f64], &mut c).is_err());
        assert!(from_canonical(&[f32::INFINITY, 0.0, 0.0], &mut back).is_err());
    }
}
