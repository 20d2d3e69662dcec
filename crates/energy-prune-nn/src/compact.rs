//! Compaction: a physically smaller [`Cnn`] without the pruned channels.

use super::{Cnn, LayerSpec};
use energy_prune::arch::{LayerKind, SlotLayout};
use energy_prune::error::{Error, Result};
use energy_prune::network::{Network, NetworkMut, PruningPlan};

impl Cnn {
    /// Build a network holding only the channels `plan` keeps: every layer loses the
    /// filters of its dropped output channels and the weights reading dropped input
    /// channels. Its outputs equal those of this network with the plan applied
    /// ([`PruningPlan::apply`]), up to float rounding; its latency is that of the
    /// narrow shapes.
    ///
    /// # Errors
    /// [`PruningPlan::check`] errors (wrong width count, bad indices, a fixed width
    /// pruned) and, for grouped (non-depthwise) convolutions, [`Error::Unsupported`].
    pub fn compact(&self, plan: &PruningPlan) -> Result<Cnn> {
        let arch = self.architecture();
        plan.check(arch)?;
        let mut specs = self.specs().to_vec();
        let mut layer = 0;
        for s in &mut specs {
            match s {
                LayerSpec::Conv {
                    out_channels,
                    groups,
                    ..
                } => {
                    let kept = plan.kept()[arch.layers()[layer].output.0].len();
                    if *groups > 1 {
                        let LayerKind::Conv2d(g) = arch.layers()[layer].kind else {
                            unreachable!("conv spec")
                        };
                        if !g.is_depthwise() {
                            return Err(Error::unsupported(
                                format!(
                                    "compaction of the grouped convolution `{}`",
                                    arch.layers()[layer].name
                                ),
                                "compaction handles ungrouped and depthwise convolutions",
                            ));
                        }
                        *groups = kept;
                    }
                    *out_channels = kept;
                    layer += 1;
                }
                LayerSpec::Linear { out_features, .. } => {
                    *out_features = plan.kept()[arch.layers()[layer].output.0].len();
                    layer += 1;
                }
                _ => {}
            }
        }
        let mut net = Cnn::new(self.input_shape(), &specs, 0)?;
        net.set_threads(self.threads());
        let mut keep: Vec<Vec<bool>> = arch
            .widths()
            .iter()
            .map(|w| vec![false; w.channels])
            .collect();
        for (k, kept) in keep.iter_mut().zip(plan.kept()) {
            kept.iter().for_each(|&c| k[c] = true);
        }
        for (l, lay) in arch.layers().iter().enumerate() {
            let outs = &plan.kept()[lay.output.0];
            let keep_out = &keep[lay.output.0];
            let old = self.weights_ref(l)?;
            // Runs of kept (output, input slot) pairs, in memory order, are the
            // canonical layout of the narrowed layer.
            let mut w = Vec::new();
            for slots in SlotLayout::of_layer(arch, l)? {
                let keep_in = &keep[slots.width];
                slots.for_each_run_with_output(|o, k, r| {
                    if keep_out[o] && keep_in[k] {
                        w.extend_from_slice(&old[r]);
                    }
                });
            }
            net.write_weights(l, &w)?;
            let old_bias = self.bias(l)?;
            let b: Vec<f32> = outs.iter().map(|&o| old_bias[o]).collect();
            net.set_bias(l, &b)?;
            if let Some(m) = self.input_mask(l) {
                let per = m.len() / arch.widths()[lay.input[0].width.0].channels;
                let kept_in = &plan.kept()[lay.input[0].width.0];
                let nm: Vec<f32> = kept_in
                    .iter()
                    .flat_map(|&c| m[c * per..(c + 1) * per].iter().copied())
                    .collect();
                net.enable_input_mask(l)?;
                net.write_input_mask(l, &nm)?;
            }
        }
        Ok(net)
    }
}
