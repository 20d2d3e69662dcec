//! Compaction: a physically smaller [`Cnn`] without the pruned channels.

use super::{Cnn, LayerSpec};
use crate::arch::LayerKind;
use crate::error::Result;
use crate::network::{Network, NetworkMut};
use crate::prune::PruningPlan;

impl Cnn {
    /// Build a network holding only the channels `plan` keeps: every layer loses the
    /// filters of its dropped output channels and the weights reading dropped input
    /// channels. Its outputs equal those of this network with the plan applied
    /// ([`PruningPlan::apply`]), up to float rounding; its latency is that of the
    /// narrow shapes.
    ///
    /// # Errors
    /// [`PruningPlan::check`] errors (wrong width count, bad indices, a fixed width
    /// pruned) and, for grouped (non-depthwise) convolutions, [`crate::Error::InvalidParameter`].
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
                    let kept = plan.kept[arch.layers()[layer].output.0].len();
                    if *groups > 1 {
                        let LayerKind::Conv2d(g) = arch.layers()[layer].kind else {
                            unreachable!("conv spec")
                        };
                        if !g.is_depthwise() {
                            return Err(crate::Error::param(
                                "groups",
                                g.groups,
                                "compaction supports ungrouped and depthwise convolutions",
                            ));
                        }
                        *groups = kept;
                    }
                    *out_channels = kept;
                    layer += 1;
                }
                LayerSpec::Linear { out_features, .. } => {
                    *out_features = plan.kept[arch.layers()[layer].output.0].len();
                    layer += 1;
                }
                _ => {}
            }
        }
        let mut net = Cnn::new(self.input_shape(), &specs, 0)?;
        net.set_threads(self.threads());
        for (l, lay) in arch.layers().iter().enumerate() {
            let outs = &plan.kept[lay.output.0];
            let old = self.weights_ref(l)?;
            let old_bias = self.bias(l)?;
            let (ins, taps, in_len): (Vec<usize>, usize, usize) = match lay.kind {
                LayerKind::Conv2d(g) if g.is_depthwise() => (vec![0], g.kernel_h * g.kernel_w, 1),
                LayerKind::Conv2d(g) => (
                    plan.kept[lay.input[0].width.0].clone(),
                    g.kernel_h * g.kernel_w,
                    g.in_channels,
                ),
                LayerKind::Linear(g) => {
                    let sp = lay.input[0].spatial;
                    let feats = plan.kept[lay.input[0].width.0]
                        .iter()
                        .flat_map(|&c| c * sp..(c + 1) * sp)
                        .collect();
                    (feats, 1, g.in_features)
                }
            };
            let mut w = Vec::with_capacity(outs.len() * ins.len() * taps);
            for &o in outs {
                for &i in &ins {
                    let base = (o * in_len + i) * taps;
                    w.extend_from_slice(&old[base..base + taps]);
                }
            }
            net.write_weights(l, &w)?;
            let b: Vec<f32> = outs.iter().map(|&o| old_bias[o]).collect();
            net.set_bias(l, &b)?;
            if let Some(m) = self.input_mask(l) {
                let per = m.len() / arch.widths()[lay.input[0].width.0].channels;
                let kept_in = &plan.kept[lay.input[0].width.0];
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
