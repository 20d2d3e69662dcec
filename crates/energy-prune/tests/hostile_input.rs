//! Bad input gets an error that says what to change, never a panic or a silently
//! wrong answer; and nothing is changed when an error is returned.

use energy_prune::Error;
use energy_prune::arch::{ArchBuilder, Conv, zoo};
use energy_prune::energy::{
    Bilinear, CostOracle, FitOptions, ModelOracle, ProfileSet, SystolicArray, SystolicConfig,
    WeightEnergyModel, WidthSampler,
};
use energy_prune::network::NetworkState;
use energy_prune::prune::{Admm, AdmmConfig, magnitude_prune};
use energy_prune::prune::{Budget, MagnitudeRule};
use energy_prune_nn::Cnn;

fn lenet_model() -> SystolicArray {
    SystolicArray::new(&zoo::lenet5().unwrap(), SystolicConfig::default()).unwrap()
}

#[test]
fn energy_rejects_non_finite_weights_and_masks() {
    let m = lenet_model();
    let arch = m.architecture().clone();
    for bad in [f32::NAN, f32::INFINITY] {
        let mut s = NetworkState::dense(&arch);
        s.weights[1][7] = bad;
        let e = m.energy(&s).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 7, .. }), "{e}");
        let mut s = NetworkState::dense(&arch);
        s.input_masks[0] = Some(vec![1.0; arch.layers()[0].in_features()]);
        s.input_masks[0].as_mut().unwrap()[3] = bad;
        let e = m.energy(&s).unwrap_err();
        assert!(e.to_string().contains("input mask"), "{e}");
    }
}

#[test]
fn magnitude_prune_rejects_a_nan_budget_and_keeps_the_state() {
    let m = lenet_model();
    let mut s = NetworkState::dense(&m.architecture().clone());
    let before = s.clone();
    for budget in [f64::NAN, f64::INFINITY] {
        let e = magnitude_prune(
            &mut s,
            &[Budget::absolute("energy", &m, budget)],
            MagnitudeRule::Global,
        )
        .unwrap_err();
        assert!(e.to_string().contains("budget"), "{e}");
        assert_eq!(s, before);
    }
}

#[test]
fn admm_rejects_non_finite_weights_and_unknown_frozen_widths() {
    let arch = zoo::lenet5().unwrap();
    let n = arch.widths().len();
    let cfg = AdmmConfig {
        frozen: vec![n + 90],
        ..AdmmConfig::default()
    };
    let e = Admm::new(&arch, &[Budget::absolute("cost", m_width(&arch), 1e6)], cfg).unwrap_err();
    assert!(
        matches!(
            e,
            Error::IndexOutOfRange {
                what: "frozen width",
                ..
            }
        ),
        "{e}"
    );
    let model = m_width(&arch);
    let one = [Budget::absolute("cost", &model, 0.5 * full_cost(&arch))];
    let mut admm = Admm::new(&arch, &one, AdmmConfig::default()).unwrap();
    let mut w = NetworkState::dense(&arch).weights;
    w[2][0] = f32::NAN;
    let before = w.clone();
    let pre: Vec<Vec<f32>> = w.iter().map(|l| vec![1.0; l.len()]).collect();
    let e = admm.step(&mut w, &pre, 1e-3, &one).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    assert_eq!(format!("{w:?}"), format!("{before:?}"), "weights unchanged");
}

/// A width-level cost model fitted to the systolic energy of random widths.
fn m_width(arch: &energy_prune::arch::Architecture) -> Bilinear {
    let truth = SystolicArray::new(arch, SystolicConfig::default()).unwrap();
    let mut oracle = ModelOracle(&truth);
    let mut sampler = WidthSampler::new(arch, 3);
    let mut data = ProfileSet::new(arch.widths().len());
    for _ in 0..80 {
        let w = sampler.sample();
        let c = oracle.measure(&w).unwrap();
        data.push(w, c).unwrap();
    }
    Bilinear::fit(arch, &data, &FitOptions::default())
        .unwrap()
        .model
}

fn full_cost(arch: &energy_prune::arch::Architecture) -> f64 {
    use energy_prune::energy::WidthCostModel;
    let widths: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    m_width(arch).cost_of_widths(&widths).unwrap()
}

#[test]
fn fit_detects_rank_deficient_designs_and_survives_huge_costs() {
    let arch = zoo::lenet5().unwrap();
    let truth = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut oracle = ModelOracle(&truth);
    let mut sampler = WidthSampler::new(&arch, 5);
    // 60 samples of only two distinct configurations.
    let (a, b) = (sampler.sample(), sampler.sample());
    let mut two = ProfileSet::new(arch.widths().len());
    for i in 0..60 {
        let w = if i % 2 == 0 { a.clone() } else { b.clone() };
        let c = oracle.measure(&w).unwrap();
        two.push(w, c).unwrap();
    }
    let e = Bilinear::fit(&arch, &two, &FitOptions::default()).unwrap_err();
    assert!(e.to_string().contains("distinct"), "{e}");
    // Costs near 1e293: the fit works and its R^2 is finite.
    let mut huge = ProfileSet::new(arch.widths().len());
    for _ in 0..80 {
        let w = sampler.sample();
        let c = oracle.measure(&w).unwrap() * 1e286;
        huge.push(w, c).unwrap();
    }
    let fitted = Bilinear::fit(&arch, &huge, &FitOptions::default()).unwrap();
    let r2 = fitted.report.validation.r2;
    assert!(r2.is_finite() && r2 > 0.9, "R^2 = {r2}");
}

#[test]
fn systolic_configs_with_absurd_unit_energies_are_rejected() {
    let arch = zoo::lenet5().unwrap();
    for (name, cfg) in [
        (
            "e_dram",
            SystolicConfig {
                e_dram: 1e308,
                ..SystolicConfig::default()
            },
        ),
        (
            "e_rf",
            SystolicConfig {
                e_rf: -1.0,
                ..SystolicConfig::default()
            },
        ),
        (
            "unit energies",
            SystolicConfig {
                e_mac: 0.0,
                e_dram: 0.0,
                e_buf: 0.0,
                e_rf: 0.0,
                ..SystolicConfig::default()
            },
        ),
    ] {
        let e = SystolicArray::new(&arch, cfg).unwrap_err();
        assert!(e.to_string().contains(name), "{name}: {e}");
    }
}

#[test]
fn degenerate_pools_and_oversized_layers_are_rejected() {
    let mut b = ArchBuilder::new("p");
    let x = b.input(3, 8, 8).unwrap();
    for (k, s) in [(0, 1), (2, 0)] {
        let e = b.pool(&x, k, s, 0, false).unwrap_err();
        assert!(e.to_string().contains(">= 1"), "{e}");
    }
    assert!(
        b.pool(&x, 2, 2, 2, false).is_err(),
        "padding over half the kernel"
    );
    let e = b.conv2d("huge", &x, Conv::new(1 << 40, 3)).unwrap_err();
    assert!(e.to_string().contains("exceed"), "{e}");
    let mut b = ArchBuilder::new("fc");
    let x = b.input(1 << 21, 1, 1).unwrap();
    let e = b.linear("fc", &x, 1 << 21, false).unwrap_err();
    assert!(e.to_string().contains("exceed"), "{e}");
}

#[test]
fn writing_a_state_of_the_wrong_shape_changes_nothing() {
    let mut net = Cnn::lenet5(0).unwrap();
    let before = NetworkState::from_network(&net).unwrap();
    let mut bad = before.clone();
    for w in &mut bad.weights {
        w.iter_mut().for_each(|v| *v = 0.5);
    }
    bad.weights.last_mut().unwrap().pop(); // the last layer is one weight short
    let e = bad.write_weights_to(&mut net).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    assert_eq!(NetworkState::from_network(&net).unwrap(), before);
    let mut nan = before.clone();
    nan.weights[3][0] = f32::NAN;
    assert!(nan.write_weights_to(&mut net).is_err());
    assert_eq!(NetworkState::from_network(&net).unwrap(), before);
}

/// A network that refuses writes to one layer: a state written to it fails and
/// leaves every layer as it was (the layers written before are restored).
struct Refuses {
    net: Cnn,
    layer: usize,
}

impl energy_prune::network::Network for Refuses {
    fn architecture(&self) -> &energy_prune::arch::Architecture {
        self.net.architecture()
    }
    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> energy_prune::Result<()> {
        self.net.read_weights(layer, dst)
    }
}

impl energy_prune::network::NetworkMut for Refuses {
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> energy_prune::Result<()> {
        if layer == self.layer {
            return Err(Error::Unsupported {
                feature: "writing this layer".into(),
                hint: "it is read-only".into(),
            });
        }
        self.net.write_weights(layer, src)
    }
}

#[test]
fn a_refused_write_is_rolled_back_and_shapes_are_checked() {
    use energy_prune::network::{Network, NetworkMut};
    let net = Cnn::lenet5(0).unwrap();
    let before = NetworkState::from_network(&net).unwrap();
    let mut r = Refuses { net, layer: 2 };
    let mut new = before.clone();
    for w in &mut new.weights {
        w.iter_mut().for_each(|v| *v = 0.125);
    }
    let e = new.write_weights_to(&mut r).unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(NetworkState::from_network(&r.net).unwrap(), before);
    let _ = r.write_weights(0, &before.weights[0]);
    let mut fewer = before.clone();
    fewer.weights.pop();
    fewer.input_masks.pop();
    let e = fewer.check(r.architecture()).unwrap_err();
    assert!(e.to_string().contains("layers in the network state"), "{e}");
}

#[test]
fn grouped_convolutions_cannot_be_compacted() {
    use energy_prune::network::{Network, PruningPlan};
    use energy_prune_nn::LayerSpec;
    let specs = [
        LayerSpec::conv("c1", 4, 3),
        LayerSpec::Relu,
        LayerSpec::Conv {
            name: "g".into(),
            out_channels: 8,
            kernel: 3,
            stride: 1,
            padding: 1,
            groups: 2,
        },
        LayerSpec::Relu,
        LayerSpec::linear("fc", 3),
    ];
    let net = Cnn::new((1, 6, 6), &specs, 1).unwrap();
    let plan = PruningPlan::full(net.architecture());
    let e = net.compact(&plan).unwrap_err();
    assert!(e.to_string().contains("grouped"), "{e}");
}
