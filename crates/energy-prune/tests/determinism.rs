//! The same seed gives bit-identical results: short projected and ADMM training
//! runs (weights, losses, accuracies, costs) and cost-model fits.

use energy_prune::arch::zoo;
use energy_prune::energy::{
    Bilinear, CostOracle, FitOptions, ModelOracle, ProfileSet, SystolicArray, SystolicConfig,
    WeightEnergyModel, WidthCostModel, WidthSampler,
};
use energy_prune::network::{Network, NetworkState};
use energy_prune::prune::Budget;
use energy_prune::prune::{
    AdmmTraining, Data, MaskRounds, NoObserver, ProjectedTraining, TrainingReport, train_admm,
    train_projected,
};
use energy_prune_nn::Cnn;

use common::synthetic;
use energy_prune_testing::data as common;

fn net() -> Cnn {
    common::small_cnn(6, 16, 7)
}

/// Everything of a report that does not depend on the clock.
fn trace(r: &TrainingReport) -> Vec<u64> {
    let mut t = vec![r.status.cost.to_bits(), r.status.relaxed_cost.to_bits()];
    for e in &r.history {
        t.push(e.loss.to_bits());
        t.push(e.train_accuracy.to_bits());
        t.push(e.test_accuracy.unwrap_or(-1.0).to_bits());
        t.push(e.status.cost.to_bits());
    }
    t
}

fn twice<T: PartialEq + std::fmt::Debug>(mut run: impl FnMut() -> T) {
    let (a, b) = (run(), run());
    assert_eq!(a, b, "two runs with the same seed differ");
}

#[test]
fn projected_training_is_deterministic() {
    let (train, validation, test) = (synthetic(384, 1), synthetic(128, 3), synthetic(128, 2));
    twice(|| {
        let mut n = net();
        for l in 0..2 {
            n.enable_input_mask(l).unwrap();
        }
        let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
        let dense = model.relaxed_energy_of(&NetworkState::from_network(&n).unwrap());
        let budget = 0.4 * dense.unwrap();
        let cfg = ProjectedTraining {
            epochs: 2,
            finetune_epochs: 1,
            batch_size: 16,
            lr: 0.05,
            project_every: 4,
            seed: 11,
            input_masks: Some(MaskRounds {
                rounds: 1,
                ..MaskRounds::default()
            }),
            ..Default::default()
        };
        let data = Data {
            train: &train,
            validation: Some(&validation),
            test: Some(&test),
        };
        let r = train_projected(
            &mut n,
            vec![Budget::absolute("energy", &model, budget)],
            data,
            &cfg,
            &mut NoObserver,
        )
        .unwrap();
        (trace(&r), NetworkState::from_network(&n).unwrap())
    });
}

#[test]
fn admm_training_is_deterministic() {
    let (train, test) = (synthetic(384, 1), synthetic(128, 2));
    twice(|| {
        let mut n = net();
        let model = SystolicArray::new(n.architecture(), SystolicConfig::default()).unwrap();
        let full: Vec<usize> = n
            .architecture()
            .widths()
            .iter()
            .map(|w| w.channels)
            .collect();
        let budget = 0.6 * model.cost_of_widths(&full).unwrap();
        let cfg = AdmmTraining {
            epochs: 3,
            finetune_epochs: 1,
            batch_size: 16,
            seed: 5,
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
        (trace(&r), NetworkState::from_network(&n).unwrap())
    });
}

#[test]
fn fits_are_deterministic() {
    let arch = zoo::lenet5().unwrap();
    let truth = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    twice(|| {
        let mut oracle = ModelOracle(&truth);
        let mut sampler = WidthSampler::new(&arch, 9);
        let mut data = ProfileSet::new(arch.widths().len());
        for _ in 0..80 {
            let w = sampler.sample();
            let c = oracle.measure(&w).unwrap();
            data.push(w, c).unwrap();
        }
        let f = Bilinear::fit(&arch, &data, &FitOptions::default()).unwrap();
        let bits: Vec<u64> = f.model.coefficients().iter().map(|c| c.to_bits()).collect();
        (bits, f.report.validation.mrae.to_bits())
    });
}
