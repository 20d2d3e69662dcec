//! Mutation fuzzing of every parser of the crate on stable Rust: valid files are
//! mutated (bit flips, byte overwrites, truncation, insertions, deletions, splices,
//! huge header values; for text formats also extreme number tokens) and parsed
//! again. Every case must return `Ok` or `Err`, never panic, and memory stays
//! bounded (peak RSS checked at the end).
//!
//! CI runs 10 000 cases per parser. The long run, 100 000 per parser:
//! `cargo test --release -p energy-prune-testing --test fuzz_parsers -- --ignored`
//! (any count: `ENERGY_PRUNE_FUZZ_CASES=1000000 cargo test --release -p energy-prune-testing --test fuzz_parsers`).

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use energy_prune::arch::{Architecture, zoo};
use energy_prune::energy::{
    Bilinear, CalibratedModel, FitOptions, ProfileSet, SystolicArray, SystolicConfig,
};
use energy_prune::network::PruningPlan;
use energy_prune_nn::mnist::MnistOptions;
use energy_prune_nn::{Cnn, LayerSpec};
use energy_prune_testing::nn::{load_cnn_bytes, read_mnist_pair};
use energy_prune_testing::peak_rss_mb;
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

fn cases(default: usize) -> usize {
    std::env::var("ENERGY_PRUNE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// One random mutation of `seed`.
fn mutate(rng: &mut ChaCha12Rng, seed: &[u8], text: bool) -> Vec<u8> {
    let mut v = seed.to_vec();
    let rounds = rng.random_range(1..4);
    for _ in 0..rounds {
        let n = v.len();
        match rng.random_range(0..9) {
            0 if n > 0 => {
                let i = rng.random_range(0..n);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if n > 0 => {
                let i = rng.random_range(0..n);
                v[i] = rng.random();
            }
            2 => v.truncate(rng.random_range(0..=n)),
            3 => {
                let i = rng.random_range(0..=n);
                let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                v.splice(i..i, extra);
            }
            4 if n > 0 => {
                let i = rng.random_range(0..n);
                let j = rng.random_range(i..=n.min(i + 16));
                v.drain(i..j);
            }
            5 if n > 1 => {
                // Splice: copy a chunk of the file over another place.
                let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
                let len = rng.random_range(1..=(n - a.max(b)).min(64));
                let chunk = v[a..a + len].to_vec();
                v[b..b + len].copy_from_slice(&chunk);
            }
            6 if n >= 4 => {
                // A huge header-like value.
                let i = rng.random_range(0..n - 3);
                let big: [u8; 4] = match rng.random_range(0..3) {
                    0 => [0xff; 4],
                    1 => [0x7f, 0xff, 0xff, 0xff],
                    _ => [0x00, 0x10, 0x00, 0x00],
                };
                v[i..i + 4].copy_from_slice(&big);
            }
            7 if text => {
                // Replace a number token with an extreme one.
                let tokens = [
                    "1e309",
                    "-1e309",
                    "NaN",
                    "-0",
                    "0",
                    "18446744073709551616",
                    "-1",
                    "4294967296",
                    "1e-320",
                    "99999999999999999999999",
                    "inf",
                ];
                let t = tokens[rng.random_range(0..tokens.len())].as_bytes();
                let digits: Vec<usize> = (0..n).filter(|&i| v[i].is_ascii_digit()).collect();
                if let Some(&i) = digits.get(rng.random_range(0..digits.len().max(1))) {
                    let mut j = i;
                    while j < n && (v[j].is_ascii_digit() || v[j] == b'.' || v[j] == b'e') {
                        j += 1;
                    }
                    v.splice(i..j, t.iter().copied());
                }
            }
            _ if n > 0 => {
                let i = rng.random_range(0..n);
                v[i] = [b'0', b'9', b'-', b',', b'"', b'[', b']', b'{', b'}', 0]
                    [rng.random_range(0..10)];
            }
            _ => {}
        }
    }
    v
}

/// Run `parse` on `n` mutations of each seed, counting outcomes; panics fail the test.
fn fuzz(name: &str, seeds: &[Vec<u8>], text: bool, n: usize, mut parse: impl FnMut(&[u8]) -> bool) {
    let mut rng = ChaCha12Rng::seed_from_u64(0x5eed ^ name.len() as u64);
    let (mut ok, mut err) = (0usize, 0usize);
    for seed in seeds {
        assert!(parse(seed), "{name}: the unmutated seed must parse");
    }
    for case in 0..n {
        let seed = &seeds[case % seeds.len()];
        let input = mutate(&mut rng, seed, text);
        match catch_unwind(AssertUnwindSafe(|| parse(&input))) {
            Ok(true) => ok += 1,
            Ok(false) => err += 1,
            Err(_) => panic!(
                "{name}: case {case} panicked on input {:?}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    eprintln!("{name}: {n} mutated inputs, {ok} accepted, {err} rejected, 0 panics");
    let rss = peak_rss_mb();
    assert!(rss < 2048.0, "{name}: peak RSS {rss:.0} MB");
}

fn idx_seed() -> (Vec<u8>, Vec<u8>) {
    let mut img = 2051u32.to_be_bytes().to_vec();
    for d in [3u32, 4, 4] {
        img.extend_from_slice(&d.to_be_bytes());
    }
    img.extend((0..48).map(|i| (i * 5) as u8));
    let mut lab = 2049u32.to_be_bytes().to_vec();
    lab.extend_from_slice(&3u32.to_be_bytes());
    lab.extend_from_slice(&[1, 7, 9]);
    (img, lab)
}

fn idx(n: usize) {
    let (img, lab) = idx_seed();
    let (img_gz, lab_gz) = (gz(&img), gz(&lab));
    let opts = MnistOptions::default();
    // Mutations of the compressed files (mostly gzip errors) ...
    fuzz(
        "idx images (gzip bytes)",
        std::slice::from_ref(&img_gz),
        false,
        n,
        |b| read_mnist_pair(b, &lab_gz, opts).is_ok(),
    );
    fuzz(
        "idx labels (gzip bytes)",
        std::slice::from_ref(&lab_gz),
        false,
        n,
        |b| read_mnist_pair(&img_gz, b, opts).is_ok(),
    );
    // ... and of the IDX content itself, recompressed (reaches the header checks).
    fuzz("idx images (content)", &[img], false, n, |b| {
        read_mnist_pair(&gz(b), &lab_gz, opts).is_ok()
    });
    fuzz("idx labels (content)", &[lab], false, n, |b| {
        read_mnist_pair(&img_gz, &gz(b), opts).is_ok()
    });
}

fn profiles() -> ProfileSet {
    energy_prune_testing::data::lenet5_profiles(60, 2)
}

fn text_formats(n: usize) {
    let data = profiles();
    fuzz("profile csv", &[data.to_csv().into_bytes()], true, n, |b| {
        std::str::from_utf8(b)
            .ok()
            .is_some_and(|t| ProfileSet::from_csv(t, Path::new("x.csv")).is_ok())
    });
    fn json<T: serde::de::DeserializeOwned>(b: &[u8]) -> bool {
        serde_json::from_slice::<T>(b).is_ok()
    }
    let to = |v: &dyn erased::Ser| v.bytes();
    fuzz("profile json", &[to(&data)], true, n, json::<ProfileSet>);
    let arch = zoo::lenet5().unwrap();
    let model = Bilinear::fit(&arch, &data, &FitOptions::default())
        .unwrap()
        .model;
    fuzz("bilinear model json", &[to(&model)], true, n, |b| {
        // A model that loads must also evaluate without panicking.
        serde_json::from_slice::<Bilinear>(b).is_ok_and(|m| {
            use energy_prune::energy::WidthCostModel;
            let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
            m.num_widths() != full.len() || m.cost_of_widths(&full).is_ok()
        })
    });
    struct Flat;
    impl energy_prune::energy::LayerOracle for Flat {
        fn measure_layer(&mut self, l: usize, c: usize, d: usize) -> energy_prune::Result<f64> {
            Ok(1.0 + (l * c * d) as f64)
        }
    }
    let quick = energy_prune::energy::Protocol {
        warmup_passes: 0,
        repeats: 1,
        ..Default::default()
    };
    let mut table =
        energy_prune::energy::LayerTable::measure(&arch, &mut Flat, 3, 0.25, &quick).unwrap();
    table.fit(&data, &FitOptions::default()).unwrap();
    let seeds = [
        to(&CalibratedModel::Bilinear(model.clone())),
        to(&CalibratedModel::LayerTable(table)),
    ];
    fuzz("calibrated model json", &seeds, true, n, |b| {
        // A model that loads must also evaluate (value and gradient) without panicking.
        serde_json::from_slice::<CalibratedModel>(b).is_ok_and(|m| {
            use energy_prune::energy::WidthCostModel;
            let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
            let mut g = vec![0.0; full.len()];
            let s: Vec<f64> = full.iter().map(|&c| c as f64 * 0.5).collect();
            m.num_widths() != full.len()
                || (m.cost_of_widths(&full).is_ok() && m.cost_and_gradient(&s, &mut g).is_ok())
        })
    });
    fuzz(
        "pruning plan json",
        &[to(&PruningPlan::full(&arch))],
        true,
        n,
        |b| serde_json::from_slice::<PruningPlan>(b).is_ok_and(|p| p.check(&arch).is_ok()),
    );
    let archs: Vec<Vec<u8>> = [zoo::lenet5().unwrap(), zoo::squeezenet1_0().unwrap()]
        .iter()
        .map(|a| to(a))
        .collect();
    fuzz("architecture json", &archs, true, n, |b| {
        // An architecture that loads must also be priced without panicking.
        match serde_json::from_slice::<Architecture>(b) {
            Ok(a) => {
                let _priced = SystolicArray::new(&a, SystolicConfig::default());
                true
            }
            Err(_) => false,
        }
    });
    fuzz(
        "systolic config json",
        &[to(&SystolicConfig::default())],
        true,
        n,
        |b| {
            serde_json::from_slice::<SystolicConfig>(b)
                .is_ok_and(|c| SystolicArray::new(&zoo::lenet5().unwrap(), c).is_ok())
        },
    );
}

/// Serialisation to JSON bytes for the seeds.
mod erased {
    pub trait Ser {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap()
        }
    }
}

fn saved_networks(n: usize) {
    let specs = [
        LayerSpec::conv("c1", 2, 3),
        LayerSpec::Relu,
        LayerSpec::linear("fc", 3),
    ];
    let net = Cnn::new((1, 5, 5), &specs, 1).unwrap();
    let dir = std::env::temp_dir().join(format!("ep-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("net.bin");
    net.save(&path).unwrap();
    let seed = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    fuzz("saved network", &[seed], false, n, |b| {
        let mut target = net.clone();
        load_cnn_bytes(&mut target, b).is_ok()
    });
}

/// ONNX models exported by PyTorch (tests/data/onnx): decoded, imported and, when
/// small enough to run, run and compacted by a full plan.
fn onnx_models(n: usize) {
    use energy_prune::network::Network;
    use energy_prune_onnx::OnnxModel;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../energy-prune-onnx/tests/data/onnx");
    let seeds: Vec<Vec<u8>> = ["tinynet.onnx", "lenet5_dynamo.onnx"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    fuzz("onnx model", &seeds, false, n, |b| {
        let Ok(model) = OnnxModel::from_bytes(b, None, Path::new("fuzz.onnx")) else {
            return false;
        };
        let arch = model.architecture();
        let len: usize = model.input_shape().iter().product();
        if arch.macs() < 50_000_000 && len < 1_000_000 {
            let _ = model.run(&vec![0.5; len], 1);
            let _ = model.compact(&PruningPlan::full(arch));
        }
        let _ = model.to_bytes();
        true
    });
}

/// Structurally random models ([`energy_prune_testing::onnx::cases`]): no panic,
/// and every accepted model runs, saves and re-imports to the same outputs, and
/// compacts to a model computing what the masked one does.
fn onnx_structures(n: usize) {
    use energy_prune_testing::onnx::cases::{case, evaluate};
    let (mut accepted, mut refused) = (0usize, 0usize);
    for seed in 0..n as u64 {
        let c = case(seed);
        match catch_unwind(AssertUnwindSafe(|| evaluate(&c))) {
            Ok(Ok(e)) if e.refused.is_none() => accepted += 1,
            Ok(Ok(_)) => refused += 1,
            Ok(Err(msg)) => panic!("onnx structure: seed {seed} ({:?}): {msg}", c.twists),
            Err(_) => panic!("onnx structure: seed {seed} ({:?}) panicked", c.twists),
        }
    }
    eprintln!(
        "onnx structure: {n} generated models, {accepted} accepted, {refused} refused, 0 panics"
    );
    assert!(
        accepted * 2 > n,
        "the generator should mostly make valid models"
    );
}

#[test]
fn onnx_structures_hold_their_guarantees() {
    onnx_structures(cases(2_000));
}

#[test]
fn parsers_never_panic() {
    let n = cases(10_000);
    idx(n);
    text_formats(n);
    saved_networks(n);
    onnx_models(n);
    onnx_structures(n);
}

#[test]
#[ignore = "long run: cargo test --release -p energy-prune-testing --test fuzz_parsers -- --ignored"]
fn parsers_never_panic_long() {
    let n = cases(100_000);
    idx(n);
    text_formats(n);
    saved_networks(n);
    onnx_models(n);
    onnx_structures(n);
}
