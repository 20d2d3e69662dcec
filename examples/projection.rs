//! The projection in a few lines: price LeNet-5 on the systolic-array model and
//! project a state's weights onto 30 % of the dense energy.
//!
//! ```text
//! cargo run --release -p energy-prune-examples --example projection
//! ```

use energy_prune::arch::zoo;
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::NetworkState;
use energy_prune::prune::Budget;
use energy_prune::prune::project;

fn main() -> energy_prune::Result<()> {
    let arch = zoo::lenet5()?;
    let hw = SystolicArray::new(&arch, SystolicConfig::default())?;
    // Weights would come from your network (`NetworkState::from_network`); here a
    // deterministic pattern stands in for them.
    let mut state = NetworkState::dense(&arch);
    for (l, w) in state.weights.iter_mut().enumerate() {
        for (i, v) in w.iter_mut().enumerate() {
            *v = ((i * 31 + l) % 97) as f32 - 48.0;
        }
    }
    let dense = hw.energy(&state)?.total;
    let outcome = project(&mut state, &[Budget::absolute("energy", &hw, 0.3 * dense)])?;
    let exact = hw.energy(&state)?;
    println!("{exact}");
    println!(
        "kept {} of {} weights; energy {:.4} of dense (budget 0.30)",
        outcome.kept,
        outcome.nonzero_before,
        exact.total / dense
    );
    assert!(exact.total <= 0.3 * dense);
    Ok(())
}
