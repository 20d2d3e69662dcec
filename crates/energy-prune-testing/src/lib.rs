#![warn(missing_docs)]
//! Helpers shared by the tests and benches of the energy-prune workspace (not
//! published): a finite-difference gradient checker, peak-memory reading, an ONNX
//! graph writer with its own copy of the schema, small networks and synthetic
//! data, and re-exports of the reference solvers and checked kernels the benches
//! measure against.

pub mod data;
pub mod nn;
pub mod onnx;

pub use energy_prune::prune::projection::{greedy_knapsack_on_threads, project_sorted};
pub use energy_prune_nn::latency::peak_rss_mb;

/// Central finite-difference check of a gradient: for every coordinate `i` of `x`,
/// `(f(x + h_i e_i) - f(x - h_i e_i)) / 2 h_i` with the relative step
/// `h_i = h * max(|x_i|, 1)`, against `grad[i]`, with tolerance
/// `abs_tol + rel_tol * max(|fd|, |grad|)`.
///
/// # Errors
/// A message naming the first coordinate whose difference is out of tolerance.
pub fn check_gradient(
    x: &[f64],
    grad: &[f64],
    h: f64,
    abs_tol: f64,
    rel_tol: f64,
    mut f: impl FnMut(&[f64]) -> f64,
) -> std::result::Result<(), String> {
    if grad.len() != x.len() {
        return Err(format!(
            "gradient has {} entries, x has {}",
            grad.len(),
            x.len()
        ));
    }
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        let hi = h * x[i].abs().max(1.0);
        xp[i] = x[i] + hi;
        let fp = f(&xp);
        xp[i] = x[i] - hi;
        let fm = f(&xp);
        xp[i] = x[i];
        let fd = (fp - fm) / (2.0 * hi);
        let tol = abs_tol + rel_tol * fd.abs().max(grad[i].abs());
        if (fd - grad[i]).abs() > tol || !fd.is_finite() {
            return Err(format!(
                "coordinate {i}: finite difference {fd:.6e} vs gradient {:.6e} (tolerance {tol:.2e})",
                grad[i]
            ));
        }
    }
    Ok(())
}
