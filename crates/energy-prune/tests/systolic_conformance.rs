//! Reproduces every figure of `lenet5-dense.md` (the ICLR 2019 authors' reference
//! implementation on the paper's LeNet-5 with default hardware) to 1e-9 relative.

use energy_prune::arch::zoo;
use energy_prune::energy::systolic::{COMPUTE, INPUT_MOVEMENT, WEIGHT_MOVEMENT};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::NetworkState;

fn close(got: f64, want: f64) {
    approx::assert_relative_eq!(got, want, epsilon = 0.0, max_relative = 1e-9);
}

fn model() -> (energy_prune::arch::Architecture, SystolicArray) {
    let arch = zoo::lenet5().unwrap();
    let m = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    (arch, m)
}

#[test]
fn dense_per_layer_breakdown() {
    let (arch, m) = model();
    let r = m.energy(&NetworkState::dense(&arch)).unwrap();
    // (name, weights, E_compute, E_weights, E_input, total)
    let want = [
        ("conv1", 150, 352_800.0, 207_000.0, 1_380_800.0, 1_940_600.0),
        ("conv2", 2_400, 720_000.0, 849_600.0, 975_200.0, 2_544_800.0),
        (
            "fc1",
            48_000,
            144_000.0,
            9_936_000.0,
            173_600.0,
            10_253_600.0,
        ),
        ("fc2", 10_080, 30_240.0, 2_086_560.0, 55_200.0, 2_172_000.0),
        ("fc3", 840, 2_520.0, 173_880.0, 20_144.0, 196_544.0),
    ];
    for (l, w) in r.layers.iter().zip(want) {
        assert_eq!(l.name, w.0);
        assert_eq!(l.weights, w.1);
        close(l.part(COMPUTE).unwrap(), w.2);
        close(l.part(WEIGHT_MOVEMENT).unwrap(), w.3);
        close(l.part(INPUT_MOVEMENT).unwrap(), w.4);
        close(l.total, w.5);
    }
    close(r.part(COMPUTE).unwrap(), 1_249_560.0);
    close(r.part(WEIGHT_MOVEMENT).unwrap(), 13_253_040.0);
    close(r.part(INPUT_MOVEMENT).unwrap(), 2_604_944.0);
    close(r.total, 17_107_544.0);
    // Relaxed equals exact here (no padding, dense input).
    let relaxed = m
        .relaxed_energy(
            &NetworkState::dense(&arch).nonzeros(),
            m.dense_input_energy(),
        )
        .unwrap();
    close(relaxed.total, 17_107_544.0);
    for (a, b) in r.layers.iter().zip(&relaxed.layers) {
        close(b.total, a.total);
    }
}

#[test]
fn hand_check_of_conv1() {
    let (arch, m) = model();
    let r = m.energy(&NetworkState::dense(&arch)).unwrap();
    // U = 784 * 25, N_mac = 6 * 25 * 784.
    assert_eq!(r.layers[0].macs, 6 * 25 * 784);
    close(
        200.0 * (1_024.0 + 6.0 * 784.0) + 6.0 * 19_600.0 + 19_600.0 * 6.0,
        r.layers[0].part(INPUT_MOVEMENT).unwrap(),
    );
}

#[test]
fn knapsack_costs_and_coefficients() {
    let (_, m) = model();
    let b = |l| {
        m.conv_access_energy(l)
            .unwrap()
            .map(|b| (b.beta_in, b.beta_out))
    };
    assert_eq!(b(0), Some((1_380.0, 14_380.0)));
    assert_eq!(b(1), Some((354.0, 1_954.0)));
    assert_eq!(b(2), None);
    let c = m.knapsack_costs();
    close(c[0].base, 3_732.0);
    close(c[0].base + c[0].surcharge, 16_732.0);
    assert_eq!(c[0].buffered, 150);
    close(c[1].base, 654.0);
    close(c[1].base + c[1].surcharge, 2_254.0);
    assert_eq!(c[1].buffered, 2_400);
    for fc in &c[2..] {
        close(fc.base, 210.0);
        assert_eq!(fc.surcharge, 0.0);
    }
    close(m.dense_floor(), 2_604_944.0);
    assert!((m.dense_floor() / 17_107_544.0 - 0.1523).abs() < 5e-5);
}

#[test]
fn sparse_states_keep_largest_magnitudes_per_layer() {
    let (arch, m) = model();
    // Distinct magnitudes so "the largest fraction" is unambiguous.
    let base: Vec<Vec<f32>> = arch
        .layers()
        .iter()
        .map(|l| {
            (0..l.weight_count())
                .map(|i| {
                    (((i * 7919) % l.weight_count()) as f32 + 1.0)
                        * if i % 2 == 0 { 1.0 } else { -1.0 }
                })
                .collect()
        })
        .collect();
    // (fraction, kept per layer, E_weights, E_compute, total)
    let cases: [(f64, [u64; 5], f64, f64, f64); 3] = [
        (
            0.5,
            [75, 1_200, 24_000, 5_040, 420],
            6_626_520.0,
            624_780.0,
            9_856_244.0,
        ),
        (
            0.3,
            [45, 720, 14_400, 3_024, 252],
            3_975_912.0,
            374_868.0,
            6_955_724.0,
        ),
        (
            0.1,
            [15, 240, 4_800, 1_008, 84],
            1_325_304.0,
            124_956.0,
            4_055_204.0,
        ),
    ];
    for (frac, kept, ew, ec, total) in cases {
        let mut state = NetworkState::dense(&arch);
        for (l, w) in base.iter().enumerate() {
            let k = (w.len() as f64 * frac).round() as usize;
            let mut mags: Vec<f32> = w.iter().map(|v| v.abs()).collect();
            mags.sort_by(|a, b| b.total_cmp(a));
            let thr = mags[k - 1];
            state.weights[l] = w
                .iter()
                .map(|v| if v.abs() >= thr { *v } else { 0.0 })
                .collect();
        }
        assert_eq!(state.nonzeros(), kept.to_vec());
        let r = m.energy(&state).unwrap();
        close(r.part(WEIGHT_MOVEMENT).unwrap(), ew);
        close(r.part(COMPUTE).unwrap(), ec);
        close(r.part(INPUT_MOVEMENT).unwrap(), 2_604_944.0);
        close(r.total, total);
        let relaxed = m
            .relaxed_total(&state.nonzeros(), m.dense_input_energy())
            .unwrap();
        close(relaxed, total);
    }
}
