//! Small networks and synthetic data sets for tests: deterministic from a seed.

use energy_prune::train::Dataset;
use energy_prune_nn::{Cnn, LayerSpec};
use rand::{RngExt, SeedableRng, rngs::ChaCha12Rng};

/// 1x8x8 images whose class is the quadrant holding the brightest pixel.
pub fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let img: Vec<f32> = (0..64).map(|_| rng.random_range(0.0f32..0.5)).collect();
        let q = rng.random_range(0..4u8);
        let (y, x) = (
            rng.random_range(0..4) + 4 * (q as usize / 2),
            rng.random_range(0..4) + 4 * (q as usize % 2),
        );
        let mut img = img;
        img[y * 8 + x] = 3.0;
        images.extend_from_slice(&img);
        labels.push(u32::from(q));
    }
    Dataset {
        images,
        labels,
        channels: 1,
        h: 8,
        w: 8,
    }
}

/// A convolution spec with every knob.
#[allow(dead_code)]
pub fn conv(
    name: &str,
    out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    groups: usize,
) -> LayerSpec {
    LayerSpec::Conv {
        name: name.into(),
        out_channels: out,
        kernel: k,
        stride,
        padding,
        groups,
    }
}

/// conv (3x3, `conv` filters) - ReLU - 2x2 max-pool - fc (`fc` units) - ReLU - fc (4
/// classes) on 1x8x8 inputs: the small network of the training tests.
#[allow(dead_code)]
pub fn small_cnn(conv: usize, fc: usize, seed: u64) -> Cnn {
    let specs = [
        LayerSpec::conv("conv", conv, 3),
        LayerSpec::Relu,
        LayerSpec::MaxPool {
            kernel: 2,
            stride: 2,
        },
        LayerSpec::linear("fc1", fc),
        LayerSpec::Relu,
        LayerSpec::linear("fc2", 4),
    ];
    Cnn::new((1, 8, 8), &specs, seed).unwrap()
}

/// `n` width configurations of LeNet-5 (sampler seed `seed`) priced by the
/// systolic model: a calibration data set with exact costs.
pub fn lenet5_profiles(n: usize, seed: u64) -> energy_prune::energy::ProfileSet {
    use energy_prune::energy::{
        CostOracle, ModelOracle, ProfileSet, SystolicArray, SystolicConfig, WidthSampler,
    };
    let arch = energy_prune::arch::zoo::lenet5().expect("the zoo's LeNet-5 is valid");
    let truth =
        SystolicArray::new(&arch, SystolicConfig::default()).expect("the default config is valid");
    let mut oracle = ModelOracle(&truth);
    let mut sampler = WidthSampler::new(&arch, seed);
    let mut data = ProfileSet::new(arch.widths().len());
    for _ in 0..n {
        let w = sampler.sample();
        let c = oracle
            .measure(&w)
            .expect("the systolic model prices every sample");
        data.push(w, c).expect("one width per architecture width");
    }
    data
}
