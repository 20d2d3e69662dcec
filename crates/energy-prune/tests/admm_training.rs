//! ADMM channel pruning end to end on a tiny synthetic task, and the uniform baseline.

use energy_prune::Error;
use energy_prune::energy::{SystolicArray, SystolicConfig, WidthCostModel};
use energy_prune::network::{Network, PruningPlan, Trainable};
use energy_prune::prune::Budget;
use energy_prune::prune::{
    AdmmConfig, AdmmTraining, Data, NoObserver, Termination, train_admm, uniform_widths,
};
use energy_prune_nn::Cnn;

use common::synthetic;
use energy_prune_testing::data as common;

fn net() -> Cnn {
    common::small_cnn(12, 24, 3)
}

fn full(n: &Cnn) -> Vec<f64> {
    n.architecture()
        .widths()
        .iter()
        .map(|w| w.channels as f64)
        .collect()
}

#[test]
fn admm_meets_the_budget_and_the_plan_compacts() {
    let (train, test) = (synthetic(512, 1), synthetic(256, 2));
    let mut n = net();
    let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
    let budget = 0.6 * model.cost(&full(&n)).unwrap();
    let cfg = AdmmTraining {
        epochs: 6,
        finetune_epochs: 1,
        batch_size: 16,
        lr: 0.01,
        admm: AdmmConfig {
            eta_s: 2.0,
            ..AdmmConfig::default()
        },
        ..AdmmTraining::default()
    };
    let data = Data {
        train: &train,
        validation: None,
        test: Some(&test),
    };
    let r = train_admm(
        &mut n,
        vec![Budget::absolute("cost", &model, budget)],
        data,
        &cfg,
        &mut NoObserver,
    )
    .unwrap();
    assert!(
        matches!(r.termination, Termination::BudgetMet { .. }),
        "{:?}",
        r.termination
    );
    assert!(
        r.budget_met() && r.status.cost <= budget,
        "{} > {budget}",
        r.status.cost
    );
    let plan = PruningPlan::from_network(&n).unwrap();
    let widths = plan.widths();
    let live: Vec<f64> = widths.iter().map(|v| *v as f64).collect();
    assert!(model.cost(&live).unwrap() <= budget);
    assert!(widths.iter().all(|w| *w >= 1));
    // The compact network computes what the pruned one does.
    let mut compact = n.compact(&plan).unwrap();
    let x: Vec<f32> = train.images[..8 * 64].to_vec();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    n.forward(&x, 8, &mut a).unwrap();
    compact.forward(&x, 8, &mut b).unwrap();
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "{p} vs {q}");
    }
    assert!(r.test_accuracy.unwrap() > 0.4, "{:?}", r.test_accuracy);
}

#[test]
fn infeasible_budgets_are_errors_and_uniform_widths_are_maximal() {
    let train = synthetic(64, 1);
    let mut n = net();
    let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
    let arch = n.architecture().clone();
    let ones: Vec<f64> = arch
        .widths()
        .iter()
        .map(|w| if w.fixed { w.channels as f64 } else { 1.0 })
        .collect();
    let floor = model.cost(&ones).unwrap();
    let data = Data {
        train: &train,
        validation: None,
        test: None,
    };
    let err = train_admm(
        &mut n,
        vec![Budget::absolute("cost", &model, 0.9 * floor)],
        data,
        &AdmmTraining::default(),
        &mut NoObserver,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InfeasibleBudget { .. }), "{err}");
    assert!(uniform_widths(&arch, &[Budget::absolute("cost", &model, 0.9 * floor)]).is_err());
    let budget = 0.5 * model.cost(&full(&n)).unwrap();
    let w = uniform_widths(&arch, &[Budget::absolute("cost", &model, budget)]).unwrap();
    let cost = |w: &[usize]| {
        model
            .cost(&w.iter().map(|v| *v as f64).collect::<Vec<_>>())
            .unwrap()
    };
    assert!(cost(&w) <= budget);
    // One more channel on every free width would exceed the budget.
    let wider: Vec<usize> = w
        .iter()
        .zip(arch.widths())
        .map(|(v, a)| {
            if a.fixed {
                *v
            } else {
                (*v + 1).min(a.channels)
            }
        })
        .collect();
    assert!(cost(&wider) > budget);
}
