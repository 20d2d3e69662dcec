//! Helpers for this crate's tests and benches: not part of the public API, may
//! change without notice.

use crate::energy::LayerCost;
use crate::error::Result;
use crate::prune::Selection;

/// The sort-based reference of the greedy knapsack (`O(n log n)`), the baseline of
/// the projection benches.
///
/// # Errors
/// As [`greedy_knapsack`](crate::prune::greedy_knapsack).
pub fn project_sorted<W: AsMut<[f32]> + AsRef<[f32]> + Sync>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
) -> Result<Selection> {
    crate::prune::project_sorted(weights, costs, capacity)
}

/// [`greedy_knapsack_parallel`](crate::prune::greedy_knapsack_parallel) on exactly
/// `threads` threads, however few the weights (it otherwise gives every thread at
/// least [`WEIGHTS_PER_THREAD`](crate::prune::projection::WEIGHTS_PER_THREAD)):
/// for tests that the result does not depend on the number of threads.
///
/// # Errors
/// As [`greedy_knapsack`](crate::prune::greedy_knapsack).
pub fn greedy_knapsack_on_threads<W: AsMut<[f32]> + AsRef<[f32]> + Send + Sync>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
    ws: &mut crate::prune::ProjectionWorkspace,
    threads: usize,
) -> Result<Selection> {
    crate::prune::projection::greedy_knapsack_on_threads(weights, costs, capacity, ws, threads)
}

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

/// Peak resident memory of this process in MB, from `/proc/self/status` (`VmHWM`);
/// 0 where that file does not exist (not Linux). For the out-of-core example and
/// the bounded-memory checks of the fuzz tests.
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
