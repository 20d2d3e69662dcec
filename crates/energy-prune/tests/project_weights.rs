//! `project_weights` (weights held anywhere, projected in place) against `project`
//! on a `NetworkState` holding the same weights.

use energy_prune::Error;
use energy_prune::arch::zoo;
use energy_prune::energy::{Count, CountingModel, SystolicArray, SystolicConfig};
use energy_prune::network::NetworkState;
use energy_prune::prune::{Budget, ProjectionWorkspace, project, project_weights};
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn random_state(name: &str, seed: u64) -> NetworkState {
    let arch = zoo::by_name(name).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let mut s = NetworkState::dense(&arch);
    for w in &mut s.weights {
        w.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
    }
    s
}

#[test]
fn projecting_borrowed_weights_keeps_what_the_state_projection_keeps() {
    let mut ws = ProjectionWorkspace::new();
    for (name, seed) in [("lenet5", 1), ("mobilenet", 2), ("squeezenet", 3)] {
        let arch = zoo::by_name(name).unwrap();
        let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
        let params = CountingModel::new(&arch, Count::Parameters).unwrap();
        for fraction in [0.25, 0.5, 0.9] {
            let mut state = random_state(name, seed);
            let mut held = state.weights.clone();
            let energy = Budget::fraction("energy", &hw, fraction);
            let a = project(&mut state, std::slice::from_ref(&energy)).unwrap();
            let mut views: Vec<&mut [f32]> = held.iter_mut().map(|w| w.as_mut_slice()).collect();
            let b = project_weights(&mut views, &energy, &mut ws).unwrap();
            assert_eq!(held, state.weights, "{name} at {fraction}");
            assert_eq!(
                (a.kept, a.relaxed_energy.to_bits()),
                (b.kept, b.relaxed_energy.to_bits())
            );
            assert_eq!(a.budgets, b.budgets);
            // Another model's budget through the same call.
            let count = Budget::fraction("parameters", &params, fraction);
            let mut state = random_state(name, seed);
            let mut held = state.weights.clone();
            project(&mut state, std::slice::from_ref(&count)).unwrap();
            project_weights(&mut held, &count, &mut ws).unwrap();
            assert_eq!(held, state.weights);
        }
    }
}

#[test]
fn bad_weights_are_refused_and_left_unchanged() {
    let arch = zoo::lenet5().unwrap();
    let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let budget = Budget::fraction("energy", &hw, 0.3);
    let mut ws = ProjectionWorkspace::new();
    let state = random_state("lenet5", 4);
    let mut w = state.weights.clone();
    assert!(matches!(
        project_weights(&mut w[..4], &budget, &mut ws),
        Err(Error::ShapeMismatch { .. })
    ));
    w[1].pop();
    let e = project_weights(&mut w, &budget, &mut ws).unwrap_err();
    assert!(e.to_string().contains("conv2"), "{e}");
    let mut w = state.weights.clone();
    w[2][7] = f32::NAN;
    let before = w.clone();
    assert!(matches!(
        project_weights(&mut w, &budget, &mut ws),
        Err(Error::NonFinite { .. })
    ));
    assert_eq!(format!("{w:?}"), format!("{before:?}"));
    let mut w = state.weights.clone();
    assert!(matches!(
        project_weights(&mut w, &Budget::fraction("energy", &hw, 0.01), &mut ws),
        Err(Error::InfeasibleBudget { .. })
    ));
    assert_eq!(w, state.weights);
}
