//! Time `project_weights` on 61 M AlexNet-shaped weights at 0.3 of the dense
//! energy: the baseline of the Python package's timing
//! (`crates/energy-prune-python/examples/time_projection.py` makes the same call
//! from Python on weights of the same distribution).
//!
//! ```sh
//! cargo run --release -p energy-prune-examples --example project_timing [-- REPEATS]
//! ```
//! Prints the median, minimum and maximum seconds of REPEATS projections (default
//! 7), each from the same dense weights (restored between calls, not timed).

use std::time::Instant;

use energy_prune::arch::zoo;
use energy_prune::energy::{SystolicArray, SystolicConfig};
use energy_prune::prune::{Budget, ProjectionWorkspace, project_weights};
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn main() -> energy_prune::Result<()> {
    let repeats: usize = std::env::args()
        .nth(1)
        .map_or(Ok(7), |s| s.parse())
        .map_err(|e| energy_prune::Error::param("REPEATS", "?", format!("{e}")))?;
    let arch = zoo::alexnet()?;
    let hw = SystolicArray::new(&arch, SystolicConfig::default())?;
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    let dense: Vec<Vec<f32>> = arch
        .layers()
        .iter()
        .map(|l| {
            (0..l.weight_count())
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect()
        })
        .collect();
    let budget = Budget::fraction("energy", &hw, 0.3);
    let mut ws = ProjectionWorkspace::new();
    let mut weights = dense.clone();
    let mut times = Vec::with_capacity(repeats);
    let mut kept = 0;
    for _ in 0..repeats.max(1) {
        for (w, d) in weights.iter_mut().zip(&dense) {
            w.copy_from_slice(d);
        }
        let start = Instant::now();
        kept = project_weights(&mut weights, &budget, &mut ws)?.kept;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "rust project_weights, alexnet {} weights at 0.3: median {:.4} s (min {:.4}, max {:.4}, {} runs), kept {kept}",
        arch.weight_count(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
    Ok(())
}
