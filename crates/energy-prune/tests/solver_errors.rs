//! Every error path of the width-level solver reached with a check of its message,
//! and the accessors of the solvers.

use energy_prune::Error;
use energy_prune::arch::zoo;
use energy_prune::energy::{SystolicArray, SystolicConfig, WidthCostModel};
use energy_prune::network::NetworkState;
use energy_prune::prune::Budget;
use energy_prune::prune::{Admm, AdmmConfig, AdmmPruning, ConstrainedOptimizer};

fn lenet() -> (energy_prune::arch::Architecture, SystolicArray, f64) {
    let arch = zoo::lenet5().unwrap();
    let m = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    let dense = m.cost_of_widths(&full).unwrap();
    (arch, m, dense)
}

fn says(r: energy_prune::Result<impl std::fmt::Debug>, what: &str) {
    let e = r.unwrap_err();
    assert!(e.to_string().contains(what), "expected `{what}` in: {e}");
}

#[test]
fn admm_config_fields_are_checked() {
    let d = AdmmConfig::default();
    assert!(d.validate().is_ok());
    for (cfg, name) in [
        (
            AdmmConfig {
                rho_y: 0.0,
                ..d.clone()
            },
            "rho_y",
        ),
        (
            AdmmConfig {
                rho_z: Some(f64::NAN),
                ..d.clone()
            },
            "rho_z",
        ),
        (
            AdmmConfig {
                eta_s: -1.0,
                ..d.clone()
            },
            "eta_s",
        ),
        (
            AdmmConfig {
                grad_clip: Some(0.0),
                ..d.clone()
            },
            "grad_clip",
        ),
        (
            AdmmConfig {
                min_channels: 0,
                ..d.clone()
            },
            "min_channels",
        ),
        (
            AdmmConfig {
                round_to: Some(0),
                ..d.clone()
            },
            "round_to",
        ),
    ] {
        says(cfg.validate(), name);
    }
}

#[test]
fn admm_construction_and_steps_reject_bad_input() {
    let (arch, m, dense) = lenet();
    // A model of another architecture.
    let other = SystolicArray::new(&zoo::alexnet().unwrap(), SystolicConfig::default()).unwrap();
    says(
        Admm::new(
            &arch,
            &[Budget::absolute("cost", &other, dense)],
            AdmmConfig::default(),
        ),
        "widths of the cost model",
    );
    // A budget below the narrowest network.
    let e = Admm::new(
        &arch,
        &[Budget::absolute("cost", &m, 1e-9 * dense)],
        AdmmConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InfeasibleBudget { .. }), "{e}");
    says(
        Admm::new(
            &arch,
            &[Budget::absolute("cost", &m, f64::NAN)],
            AdmmConfig::default(),
        ),
        "budget",
    );
    let one = [Budget::absolute("cost", &m, 0.5 * dense)];
    let mut admm = Admm::new(&arch, &one, AdmmConfig::default()).unwrap();
    assert_eq!(admm.s().len(), arch.widths().len());
    assert!(admm.y().iter().all(|v| *v == 0.0));
    assert_eq!(admm.duals(), &[0.0]);
    let w = NetworkState::dense(&arch).weights;
    let pre: Vec<Vec<f32>> = w.iter().map(|l| vec![1.0; l.len()]).collect();
    let mut w1 = w.clone();
    says(admm.step(&mut w1, &pre, f64::NAN, &one), "alpha");
    says(admm.step(&mut w1[..2], &pre, 1e-3, &one), "layers");
    let mut short = pre.clone();
    short[1].pop();
    says(admm.step(&mut w1, &short, 1e-3, &one), "preconditioner");
    assert_eq!(w1, w, "weights unchanged on error");
    let step = admm.step(&mut w1, &pre, 1e-3, &one).unwrap();
    assert!(step.cost.is_finite());
}

#[test]
fn admm_pruning_exposes_its_state() {
    let (arch, m, dense) = lenet();
    let p = AdmmPruning::new(
        &arch,
        vec![Budget::absolute("cost", &m, 0.5 * dense)],
        AdmmConfig::default(),
    )
    .unwrap();
    assert_eq!(p.name(), "admm");
    assert_eq!(p.target(), 0.5 * dense);
    assert!(p.plan().is_none(), "no plan before the budget is met");
    assert_eq!(p.admm().s().len(), arch.widths().len());
    says(
        AdmmPruning::new(
            &arch,
            vec![Budget::absolute("cost", &m, 0.5 * dense)],
            AdmmConfig {
                eta_s: 0.0,
                ..AdmmConfig::default()
            },
        ),
        "eta_s",
    );
}
