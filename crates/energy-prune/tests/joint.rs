//! The joint pruning and quantization projection: the plain projection with one
//! lossless option, the optimum of small instances found by exhaustive search,
//! budgets never exceeded in exact energy, several budgets, errors.

use energy_prune::Error;
use energy_prune::arch::{ArchBuilder, Architecture, Conv, zoo};
use energy_prune::energy::{
    Count, CountingModel, LayerPrecision, NumberFormat, PrecisionModel, SystolicArray,
    SystolicConfig, WeightEnergyModel,
};
use energy_prune::network::NetworkState;
use energy_prune::prune::{Budget, precision_options, project, project_joint};
use energy_prune::quant::{ActivationStats, weight_noise};
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn random_state(arch: &Architecture, rng: &mut ChaCha12Rng) -> NetworkState {
    let mut s = NetworkState::dense(arch);
    for w in &mut s.weights {
        for v in w.iter_mut() {
            let u: f32 = rng.random_range(-1.0..1.0);
            *v = u * u * u;
        }
    }
    s
}

fn stats(arch: &Architecture, rng: &mut ChaCha12Rng) -> Vec<ActivationStats> {
    arch.layers()
        .iter()
        .map(|_| {
            let ms: f64 = rng.random_range(0.05..1.0);
            ActivationStats {
                mean_square: ms,
                max_abs: ms.sqrt() * rng.random_range(2.0..12.0),
            }
        })
        .collect()
}

const INT: fn(u8) -> NumberFormat = NumberFormat::Int;

#[test]
fn one_lossless_option_is_the_plain_projection() {
    let arch = zoo::lenet5().unwrap();
    let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let options = vec![vec![LayerPrecision::REFERENCE]; arch.layers().len()];
    for fraction in [0.9, 0.4, 0.2, 0.16] {
        let state = random_state(&arch, &mut rng);
        let (mut a, mut b) = (state.clone(), state.clone());
        let budgets = [Budget::fraction("energy", &hw, fraction)];
        let joint = project_joint(&mut a, &budgets, &options, None).unwrap();
        let plain = project(&mut b, &budgets).unwrap();
        assert_eq!(a, b, "fraction {fraction}");
        assert_eq!(joint.projection.kept, plain.kept);
        assert_eq!(
            joint.precision,
            options.iter().map(|o| o[0]).collect::<Vec<_>>()
        );
    }
}

/// The joint value of `state`'s kept weights at `precision`.
fn value_of(
    arch: &Architecture,
    original: &NetworkState,
    kept: &NetworkState,
    precision: &[LayerPrecision],
    stats: &[ActivationStats],
) -> f64 {
    let mut total = 0.0;
    for (l, layer) in arch.layers().iter().enumerate() {
        let eps = weight_noise(layer, &original.weights[l], precision[l].weights).unwrap();
        let gain = (1.0 - stats[l].noise_ratio(precision[l].activations)).max(0.0);
        for (w, k) in original.weights[l].iter().zip(&kept.weights[l]) {
            if *k != 0.0 {
                total += gain * f64::from(*w) * f64::from(*w) - eps;
            }
        }
    }
    total
}

/// The optimum by exhaustive search: every assignment of options, every count of
/// kept weights per layer (the relaxed cost depends on the counts only, and at a
/// given count the best kept set is the largest weights).
fn optimum(
    arch: &Architecture,
    hw: &SystolicArray,
    state: &NetworkState,
    options: &[LayerPrecision],
    stats: &[ActivationStats],
    limit: f64,
) -> f64 {
    let n = arch.layers().len();
    assert_eq!(n, 2);
    let mut best = f64::NEG_INFINITY;
    for p0 in options {
        for p1 in options {
            let precision = [*p0, *p1];
            let m = hw.at_precision(&precision).unwrap();
            let ie = m.input_energy(&state.input_masks).unwrap();
            // Prefix values per layer, largest |w| first.
            let prefix: Vec<Vec<f64>> = (0..n)
                .map(|l| {
                    let layer = &arch.layers()[l];
                    let eps = weight_noise(layer, &state.weights[l], precision[l].weights).unwrap();
                    let gain = (1.0 - stats[l].noise_ratio(precision[l].activations)).max(0.0);
                    let mut sq: Vec<f64> = state.weights[l]
                        .iter()
                        .map(|w| f64::from(*w) * f64::from(*w))
                        .collect();
                    sq.sort_by(|a, b| b.total_cmp(a));
                    let mut acc = vec![0.0];
                    for q in sq {
                        acc.push(acc.last().unwrap() + gain * q - eps);
                    }
                    acc
                })
                .collect();
            for m0 in 0..prefix[0].len() {
                for m1 in 0..prefix[1].len() {
                    let cost = m.relaxed_total(&[m0 as u64, m1 as u64], &ie).unwrap();
                    if cost <= limit {
                        best = best.max(prefix[0][m0] + prefix[1][m1]);
                    }
                }
            }
        }
    }
    best
}

#[test]
fn the_joint_projection_is_near_the_exhaustive_optimum() {
    let mut b = ArchBuilder::new("small");
    let x = b.input(2, 4, 4).unwrap();
    let y = b.conv2d("conv", &x, Conv::new(3, 3)).unwrap();
    let y = b.linear("fc", &y, 4, false).unwrap();
    let arch = b.finish(&y).unwrap();
    let cfg = SystolicConfig {
        weight_buffer: 20,
        ..SystolicConfig::default()
    };
    let hw = SystolicArray::new(&arch, cfg).unwrap();
    let options: Vec<LayerPrecision> = precision_options(
        1,
        &[INT(2), INT(4), INT(8), NumberFormat::INT16],
        &[INT(4), INT(8), NumberFormat::INT16],
    )
    .unwrap()
    .remove(0);
    let per_layer = vec![options.clone(); 2];
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let dense = hw.energy_total(&NetworkState::dense(&arch)).unwrap();
    let (mut fractions, mut worst, mut solved) = (0.0, f64::INFINITY, 0usize);
    for _ in 0..150 {
        let state = random_state(&arch, &mut rng);
        let st = stats(&arch, &mut rng);
        let limit = dense * rng.random_range(0.02..0.6);
        let mut got = state.clone();
        let out = match project_joint(
            &mut got,
            &[Budget::absolute("energy", &hw, limit)],
            &per_layer,
            Some(&st),
        ) {
            Ok(out) => out,
            Err(Error::InfeasibleBudget { .. }) => continue,
            Err(e) => panic!("{e}"),
        };
        // Never over budget, in exact energy at the chosen precision.
        let exact = hw
            .at_precision(&out.precision)
            .unwrap()
            .energy_total(&got)
            .unwrap();
        assert!(exact <= limit, "exact {exact} > {limit}");
        assert!(out.exact.iter().all(|b| b.met));
        let opt = optimum(&arch, &hw, &state, &options, &st, limit);
        let value = value_of(&arch, &state, &got, &out.precision, &st);
        assert!((value - out.value).abs() <= 1e-4 * value.abs().max(1.0));
        assert!(
            value <= opt + 1e-6 * opt.abs().max(1.0),
            "{value} above the optimum {opt}"
        );
        let frac = if opt > 0.0 { value / opt } else { 1.0 };
        fractions += frac;
        worst = f64::min(worst, frac);
        solved += 1;
    }
    assert!(solved >= 100, "only {solved} feasible instances");
    let mean = fractions / solved as f64;
    println!(
        "joint projection vs exhaustive optimum over {solved} instances: mean {mean:.4}, worst {worst:.4}"
    );
    assert!(mean >= 0.99, "mean fraction of the optimum {mean}");
    assert!(worst >= 0.9, "worst fraction of the optimum {worst}");
}

#[test]
fn budgets_below_the_pruning_floor_are_met_in_exact_energy() {
    let arch = zoo::lenet5().unwrap();
    let n = arch.layers().len();
    let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let dense = hw.energy_total(&NetworkState::dense(&arch)).unwrap();
    assert!(hw.dense_floor() / dense > 0.15);
    let options = precision_options(
        n,
        &[INT(2), INT(4), INT(8), NumberFormat::INT16],
        &[INT(4), INT(8), NumberFormat::INT16],
    )
    .unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(3);
    for fraction in [0.05, 0.08, 0.1, 0.15, 0.2] {
        let st = stats(&arch, &mut rng);
        let mut state = random_state(&arch, &mut rng);
        let budgets = [Budget::fraction("energy", &hw, fraction)];
        let out = project_joint(&mut state, &budgets, &options, Some(&st)).unwrap();
        let exact = hw
            .at_precision(&out.precision)
            .unwrap()
            .energy_total(&state)
            .unwrap();
        assert!(exact <= fraction * dense, "{fraction}: {exact}");
        assert!(out.precision.iter().any(|p| !p.is_reference()));
        assert!(out.distortion >= 0.0);
    }
    // Pruning alone cannot go there.
    let mut state = random_state(&arch, &mut rng);
    let err = project(&mut state, &[Budget::fraction("energy", &hw, 0.1)]).unwrap_err();
    assert!(matches!(err, Error::InfeasibleBudget { .. }));
}

#[test]
fn energy_and_model_bytes_at_once() {
    let arch = zoo::lenet5().unwrap();
    let n = arch.layers().len();
    let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let bytes = CountingModel::new(
        &arch,
        Count::Bytes {
            value_bits: 16,
            index_bits: 0,
        },
    )
    .unwrap();
    let options = precision_options(n, &[INT(4), INT(8), NumberFormat::INT16], &[INT(8)]).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(9);
    let mut state = random_state(&arch, &mut rng);
    let budgets: Vec<Budget<&dyn PrecisionModel>> = vec![
        Budget::fraction("energy", &hw, 0.2),
        Budget::absolute("bytes", &bytes, 8_000.0),
    ];
    let out = project_joint(&mut state, &budgets, &options, None).unwrap();
    assert_eq!(out.exact.len(), 2);
    for b in &out.exact {
        assert!(b.met, "{b:?}");
    }
    let at = bytes.at_precision(&out.precision).unwrap();
    assert!(at.energy_total(&state).unwrap() <= 8_000.0);
}

#[test]
fn bad_inputs_are_errors_and_leave_the_state_unchanged() {
    let arch = zoo::lenet5().unwrap();
    let n = arch.layers().len();
    let hw = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(4);
    let state = random_state(&arch, &mut rng);
    let budgets = [Budget::fraction("energy", &hw, 0.1)];
    let options = precision_options(n, &[INT(8)], &[INT(8)]).unwrap();
    let mut s = state.clone();
    // 0.1 of the dense energy at 8 bits everywhere: above the 8-bit floor? Either
    // way the state is unchanged on error.
    let tight = [Budget::fraction("energy", &hw, 0.01)];
    let err = project_joint(&mut s, &tight, &options, None).unwrap_err();
    assert!(matches!(err, Error::InfeasibleBudget { .. }), "{err}");
    assert_eq!(s, state);
    assert!(matches!(
        project_joint(&mut s, &budgets, &options[1..], None),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut empty = options.clone();
    empty[2].clear();
    assert!(project_joint(&mut s, &budgets, &empty, None).is_err());
    assert!(project_joint(&mut s, &budgets, &options, Some(&[])).is_err());
    s.weights[0][0] = f32::NAN;
    assert!(project_joint(&mut s, &budgets, &options, None).is_err());
    assert!(precision_options(n, &[], &[INT(8)]).is_err());
    assert!(precision_options(n, &[INT(1)], &[INT(8)]).is_err());
}
