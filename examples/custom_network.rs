//! What a downstream crate does to use energy-prune with its own model: describe the
//! architecture, implement the network traits by copying weights in and out of its
//! own storage, then ask the energy model and the projection for answers.
//!
//! Here the model keeps every weight in ONE flat buffer, convolutions in HWIO
//! layout (`[kh][kw][in][out]`, as TensorFlow does) and the linear layer as
//! `[in][out]`. energy-prune's canonical layout is `[out][in][kh][kw]`.
//!
//! ```text
//! cargo run --release --example custom_network
//! ```

use energy_prune::arch::{ArchBuilder, Architecture, Conv, LayerKind};
use energy_prune::energy::{SystolicArray, SystolicConfig, WeightEnergyModel};
use energy_prune::network::NetworkState;
use energy_prune::network::{Network, NetworkMut};
use energy_prune::prune::Budget;
use energy_prune::prune::{project, weight_costs};
use energy_prune::{Error, Result};

/// The user's model: one flat parameter buffer plus the offset of each layer.
struct FlatModel {
    arch: Architecture,
    params: Vec<f32>,
    offsets: Vec<usize>,
}

impl FlatModel {
    fn new() -> Result<Self> {
        // 1. Describe the prunable layers once, with the builder (it tracks shapes).
        let mut b = ArchBuilder::new("flat-cnn");
        let x = b.input(3, 16, 16)?;
        let x = b.conv2d("conv1", &x, Conv::new(8, 3).padding(1))?;
        let x = b.pool(&x, 2, 2, 0, false)?;
        let x = b.conv2d("conv2", &x, Conv::new(16, 3).stride(2).padding(1))?;
        let x = b.linear("fc", &x, 10, true)?;
        let arch = b.finish(&x)?;
        let mut offsets = vec![0];
        for l in arch.layers() {
            offsets.push(offsets.last().unwrap() + l.weight_count());
        }
        // Some deterministic "trained" weights.
        let params = (0..*offsets.last().unwrap())
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
            .collect();
        Ok(Self {
            arch,
            params,
            offsets,
        })
    }

    /// Index in the flat buffer of canonical element `(o, i, y, x)` of layer `l`.
    fn flat_index(&self, l: usize, o: usize, i: usize, y: usize, x: usize) -> usize {
        let base = self.offsets[l];
        match self.arch.layers()[l].kind {
            // HWIO: [kh][kw][in][out]
            LayerKind::Conv2d(g) => {
                base + ((y * g.kernel_w + x) * g.in_per_group() + i) * g.out_channels + o
            }
            // [in][out]
            LayerKind::Linear(g) => base + i * g.out_features + o,
        }
    }

    /// Visit (canonical index, flat index) pairs of layer `l`.
    fn for_each_index(&self, l: usize, mut f: impl FnMut(usize, usize)) {
        let (outs, ins, kh, kw) = match self.arch.layers()[l].kind {
            LayerKind::Conv2d(g) => (g.out_channels, g.in_per_group(), g.kernel_h, g.kernel_w),
            LayerKind::Linear(g) => (g.out_features, g.in_features, 1, 1),
        };
        let mut c = 0;
        for o in 0..outs {
            for i in 0..ins {
                for y in 0..kh {
                    for x in 0..kw {
                        f(c, self.flat_index(l, o, i, y, x));
                        c += 1;
                    }
                }
            }
        }
    }

    fn check(&self, layer: usize, len: usize) -> Result<()> {
        let want = self.arch.layer(layer)?.weight_count();
        if len != want {
            return Err(Error::external(format!(
                "layer {layer}: buffer of {len}, expected {want}"
            )));
        }
        Ok(())
    }
}

// 2. Read access: copy out into the canonical layout.
impl Network for FlatModel {
    fn architecture(&self) -> &Architecture {
        &self.arch
    }
    fn read_weights(&self, layer: usize, dst: &mut [f32]) -> Result<()> {
        self.check(layer, dst.len())?;
        self.for_each_index(layer, |c, f| dst[c] = self.params[f]);
        Ok(())
    }
}

// 3. Write access: copy back from the canonical layout.
impl NetworkMut for FlatModel {
    fn write_weights(&mut self, layer: usize, src: &[f32]) -> Result<()> {
        self.check(layer, src.len())?;
        let mut pairs = Vec::with_capacity(src.len());
        self.for_each_index(layer, |c, f| pairs.push((c, f)));
        for (c, f) in pairs {
            self.params[f] = src[c];
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let mut net = FlatModel::new()?;
    let model = SystolicArray::new(net.architecture(), SystolicConfig::default())?;

    // 4. Energy of the model as it is, per layer.
    let state = NetworkState::from_network(&net)?;
    let dense = model.energy(&state)?;
    println!("{dense}\n");

    // 5. Knapsack costs of its weights (what one weight costs to keep).
    let mut costs = Vec::new();
    weight_costs(&state.weights, &model.knapsack_costs(), &mut costs)?;
    let mut at = 0;
    for (layer, w) in net.architecture().layers().iter().zip(&state.weights) {
        let c = &costs[at..at + w.len()];
        let (lo, hi) = c
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(*v), b.max(*v)));
        println!(
            "{:<6} {:>5} weights, knapsack cost per weight {lo} .. {hi}",
            layer.name,
            w.len()
        );
        at += w.len();
    }

    // 6. Project onto half of the dense energy and write the result back.
    let mut pruned = state.clone();
    let out = project(
        &mut pruned,
        &[Budget::absolute("energy", &model, 0.5 * dense.total)],
    )?;
    pruned.write_weights_to(&mut net)?;
    let after = model.energy(&NetworkState::from_network(&net)?)?;
    println!(
        "\nprojected onto 50 % of the dense energy: kept {} of {} weights ({:.1} % of the squared norm), exact energy {:.4} of dense",
        out.kept,
        out.nonzero_before,
        100.0 * out.kept_value / out.total_value,
        after.total / dense.total
    );
    assert!(after.total <= 0.5 * dense.total);
    Ok(())
}
