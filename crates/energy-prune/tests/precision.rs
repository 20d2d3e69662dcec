//! The systolic and counting models at other precisions: hand-computed figures at
//! 8 and 4 bits, the 16-bit identity, monotonicity in the bits, buffers sized in
//! bits, and the width form.

use energy_prune::Error;
use energy_prune::arch::{ArchBuilder, Architecture, Conv, zoo};
use energy_prune::energy::systolic::{COMPUTE, INPUT_MOVEMENT, WEIGHT_MOVEMENT};
use energy_prune::energy::{
    Count, CountingModel, LayerPrecision, NumberFormat, PrecisionModel, SystolicArray,
    SystolicConfig, WeightEnergyModel, WidthCostModel,
};
use energy_prune::network::NetworkState;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn p(w: u8, a: u8) -> LayerPrecision {
    LayerPrecision::int(w, a).unwrap()
}

fn one_linear(c: usize, d: usize) -> Architecture {
    let mut b = ArchBuilder::new("fc");
    let x = b.input(c, 1, 1).unwrap();
    let y = b.linear("fc", &x, d, false).unwrap();
    b.finish(&y).unwrap()
}

fn one_conv(c: usize, h: usize, conv: Conv) -> Architecture {
    let mut b = ArchBuilder::new("conv");
    let x = b.input(c, h, h).unwrap();
    let y = b.conv2d("conv", &x, conv).unwrap();
    b.finish(&y).unwrap()
}

fn part(m: &SystolicArray, s: &NetworkState, name: &str) -> f64 {
    m.energy(s).unwrap().layers[0].part(name).unwrap()
}

#[test]
fn linear_layer_at_8_bits_matches_hand_computation() {
    // 20 inputs, 10 outputs, dense. At 16 bits: compute 3 * 200 = 600; weights
    // 207 * 200 = 41 400; input 6*1*20 + 1*10*20 + 200*20 + 200*10 = 6 320.
    let arch = one_linear(20, 10);
    let dense = NetworkState::dense(&arch);
    let m16 = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    assert_eq!(m16.energy(&dense).unwrap().total, 48_320.0);
    // int8/int8: e_mac' = 1.285 (see energy::precision), movement halved:
    // compute 257, weights 103.5 * 200 = 20 700, input 3*20 + 0.5*200 + 100*20 + 100*10 = 3 160.
    let m8 = SystolicArray::with_precision(&arch, SystolicConfig::default(), &[p(8, 8)]).unwrap();
    let r = m8.energy(&dense).unwrap();
    assert!((r.layers[0].part(COMPUTE).unwrap() - 257.0).abs() < 1e-9);
    assert_eq!(r.layers[0].part(WEIGHT_MOVEMENT).unwrap(), 20_700.0);
    assert_eq!(r.layers[0].part(INPUT_MOVEMENT).unwrap(), 3_160.0);
    assert!((r.total - 24_117.0).abs() < 1e-9);
}

#[test]
fn conv_layer_at_8_and_4_bits_matches_hand_computation() {
    // 2 x 6 x 6 input, 10 filters of 3x3: N_w = 180, A = 16, Q = 2, N_mac = 2 880,
    // U = 288, N_x = 72. Weight buffer of 100 values.
    let arch = one_conv(2, 6, Conv::new(10, 3));
    let cfg = SystolicConfig {
        weight_buffer: 100,
        ..SystolicConfig::default()
    };
    let dense = NetworkState::dense(&arch);
    // 16 bits: 6*2*180 + 1*16*180 + 200*(100 + 2*80) = 57 040 (80 weights spill).
    let m16 = SystolicArray::new(&arch, cfg).unwrap();
    assert_eq!(part(&m16, &dense, WEIGHT_MOVEMENT), 57_040.0);
    // 200*(72 + 160) + 6*288*1 + 1*288*10 = 51 008.
    assert_eq!(part(&m16, &dense, INPUT_MOVEMENT), 51_008.0);
    // int8 weights: the buffer holds 200 8-bit weights, nothing spills:
    // 3*2*180 + 0.5*16*180 + 100*180 = 20 520. MAC at 8/16: 3 * 0.67667 = 2.03.
    let m8 = SystolicArray::with_precision(&arch, cfg, &[p(8, 16)]).unwrap();
    assert_eq!(part(&m8, &dense, WEIGHT_MOVEMENT), 20_520.0);
    assert!((part(&m8, &dense, COMPUTE) - 2.03 * 2_880.0).abs() < 1e-9);
    assert_eq!(part(&m8, &dense, INPUT_MOVEMENT), 51_008.0);
    // int8 weights, int4 activations: input movement at a quarter:
    // 50*232 + 1.5*288 + 0.25*2 880 = 12 752; MAC at 8/4: 3 * 0.30417 = 0.9125.
    let m84 = SystolicArray::with_precision(&arch, cfg, &[p(8, 4)]).unwrap();
    assert_eq!(part(&m84, &dense, INPUT_MOVEMENT), 12_752.0);
    assert!((part(&m84, &dense, COMPUTE) - 0.9125 * 2_880.0).abs() < 1e-9);
    // The knapsack costs price the same: relaxed energy = floor + sum of costs.
    let costs = m8.knapsack_costs();
    assert_eq!(costs[0].buffered, 180);
    let ie = m8.input_energy(&dense.input_masks).unwrap();
    let relaxed = m8.relaxed_total(&dense.nonzeros(), &ie).unwrap();
    assert!((relaxed - (ie[0] + 180.0 * costs[0].base)).abs() < 1e-6 * relaxed);
}

#[test]
fn the_input_buffer_holds_more_values_of_fewer_bits() {
    // Three 10-element rows need 30 values: too many for 25 16-bit values, fine at 8 bits.
    let arch = one_conv(1, 10, Conv::new(1, 3));
    let cfg = SystolicConfig {
        input_buffer: 25,
        ..SystolicConfig::default()
    };
    let err = SystolicArray::new(&arch, cfg).unwrap_err();
    assert!(
        matches!(err, Error::BufferTooSmall { buffer: 25, .. }),
        "{err}"
    );
    assert!(SystolicArray::with_precision(&arch, cfg, &[p(16, 8)]).is_ok());
}

#[test]
fn the_16_bit_reference_reproduces_every_figure() {
    let arch = zoo::lenet5().unwrap();
    let n = arch.layers().len();
    let cfg = SystolicConfig::default();
    let base = SystolicArray::new(&arch, cfg).unwrap();
    let at16 =
        SystolicArray::with_precision(&arch, cfg, &vec![LayerPrecision::REFERENCE; n]).unwrap();
    let dense = NetworkState::dense(&arch);
    assert_eq!(at16.energy(&dense).unwrap().total, 17_107_544.0);
    assert_eq!(at16.knapsack_costs(), base.knapsack_costs());
    // An int16 weight with fp16-free integer arithmetic, and any 16-bit movement,
    // prices movement exactly as the reference.
    let w8 = base.at_precision(&vec![p(8, 16); n]).unwrap();
    assert_eq!(
        w8.input_energy(&dense.input_masks).unwrap(),
        base.input_energy(&dense.input_masks).unwrap()
    );
}

#[test]
fn energy_grows_with_the_bits_exact_relaxed_and_width_form() {
    let arch = zoo::lenet5().unwrap();
    let n = arch.layers().len();
    let cfg = SystolicConfig::default();
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    let mut state = NetworkState::dense(&arch);
    for w in &mut state.weights {
        for v in w.iter_mut() {
            *v = if rng.random_bool(0.3) { 1.0 } else { 0.0 };
        }
    }
    let widths: Vec<f64> = arch.widths().iter().map(|w| w.channels as f64).collect();
    let price = |prec: LayerPrecision| {
        let m = SystolicArray::with_precision(&arch, cfg, &vec![prec; n]).unwrap();
        let ie = m.input_energy(&state.input_masks).unwrap();
        let exact = m.energy(&state).unwrap().total;
        let relaxed = m.relaxed_total(&state.nonzeros(), &ie).unwrap();
        assert!(
            relaxed >= exact,
            "{prec}: relaxed {relaxed} < exact {exact}"
        );
        (exact, relaxed, m.cost(&widths).unwrap())
    };
    let formats: Vec<u8> = (2..=16).collect();
    for &a in &formats {
        let mut last = (0.0, 0.0, 0.0);
        for &w in &formats {
            let now = price(p(w, a));
            assert!(
                now.0 > last.0 && now.1 > last.1 && now.2 > last.2,
                "w {w} a {a}"
            );
            last = now;
        }
    }
    for &w in &formats {
        let mut last = (0.0, 0.0, 0.0);
        for &a in &formats {
            let now = price(p(w, a));
            assert!(
                now.0 > last.0 && now.1 > last.1 && now.2 > last.2,
                "w {w} a {a}"
            );
            last = now;
        }
    }
    // Floats: more than the integers of the same width.
    let f16 = LayerPrecision::new(NumberFormat::Float16, NumberFormat::Float16).unwrap();
    let f32_ = LayerPrecision::new(NumberFormat::Float32, NumberFormat::Float32).unwrap();
    assert!(price(f16).0 > price(LayerPrecision::REFERENCE).0);
    assert!(price(f32_).0 > price(f16).0);
}

#[test]
fn width_gradient_at_8_bits_matches_finite_differences() {
    let arch = zoo::lenet5().unwrap();
    let n = arch.layers().len();
    let m =
        SystolicArray::with_precision(&arch, SystolicConfig::default(), &vec![p(4, 8); n]).unwrap();
    let s: Vec<f64> = arch
        .widths()
        .iter()
        .map(|w| w.channels as f64 * 0.7 + 0.3)
        .collect();
    let mut g = vec![0.0; s.len()];
    m.cost_and_gradient(&s, &mut g).unwrap();
    for i in 0..s.len() {
        if arch.widths()[i].fixed {
            continue;
        }
        let h = 1e-4;
        let (mut a, mut b) = (s.clone(), s.clone());
        a[i] += h;
        b[i] -= h;
        let fd = (m.cost(&a).unwrap() - m.cost(&b).unwrap()) / (2.0 * h);
        assert!(
            (fd - g[i]).abs() <= 1e-6 * fd.abs().max(1.0),
            "width {i}: fd {fd} vs {}",
            g[i]
        );
    }
}

#[test]
fn counting_bytes_take_the_weight_bits() {
    let arch = zoo::lenet5().unwrap();
    let n = arch.layers().len();
    let bytes = CountingModel::new(
        &arch,
        Count::Bytes {
            value_bits: 16,
            index_bits: 0,
        },
    )
    .unwrap();
    let dense = NetworkState::dense(&arch);
    let weights: u64 = arch.layers().iter().map(|l| l.weight_count() as u64).sum();
    assert_eq!(bytes.energy(&dense).unwrap().total, 2.0 * weights as f64);
    let mut mixed = vec![p(8, 8); n];
    mixed[0] = p(4, 8);
    let at = bytes.at_precision(&mixed).unwrap();
    let first = arch.layers()[0].weight_count() as f64;
    assert_eq!(
        at.energy(&dense).unwrap().total,
        first * 0.5 + (weights as f64 - first)
    );
    assert_eq!(at.precision(), &mixed[..]);
    // Parameters and MACs do not depend on the bits.
    let params = CountingModel::new(&arch, Count::Parameters).unwrap();
    let at = params.at_precision(&mixed).unwrap();
    assert_eq!(at.energy(&dense).unwrap().total, weights as f64);
    assert!(params.at_precision(&mixed[1..]).is_err());
}
