//! The straightforward sort-based greedy knapsack: the reference that the
//! selection algorithm is tested against and the baseline of the benches. Use it
//! to check a result independently; it is `O(n log n)` and allocates.

use super::select::{
    Classifier, IfFits, KeyScale, Selection, WeightStats, charged_of_classes, fits,
    select_with_guarantees,
};
use crate::energy::LayerCost;
use crate::error::Result;

/// The straightforward sort-based greedy knapsack (reference implementation and
/// bench baseline): same result as [`greedy_knapsack`](super::greedy_knapsack), in `O(n log n)`.
///
/// # Errors
/// As [`greedy_knapsack`](super::greedy_knapsack).
pub fn project_sorted<W: AsMut<[f32]> + AsRef<[f32]> + Sync>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
) -> Result<Selection> {
    select_with_guarantees(weights, costs, capacity, |w, cap, if_fits| {
        let stats = WeightStats::of(w, 1)?;
        let nonzeros: Vec<u64> = w
            .iter()
            .map(|l| l.as_ref().iter().filter(|v| **v != 0.0).count() as u64)
            .collect();
        let sel = match fits(costs, &nonzeros, cap, || stats.total_value) {
            Some(same) if if_fits == IfFits::Identity => same,
            _ => sorted_once(w, costs, cap, &stats),
        };
        Ok(Selection {
            total_value: stats.total_value,
            ..sel
        })
    })
}

/// One sort-based selection.
fn sorted_once<W: AsMut<[f32]> + AsRef<[f32]>>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
    stats: &WeightStats,
) -> Selection {
    let class_cost: Vec<f64> = costs
        .iter()
        .flat_map(|c| [c.base, c.base + c.surcharge])
        .collect();
    let scale = KeyScale::choose(stats.max_abs, &class_cost, capacity);
    let mut mags = Vec::new();
    // Per weight: its class; then (key, flat index) pairs of the affordable nonzeros.
    let mut class_of: Vec<Vec<usize>> = Vec::with_capacity(weights.len());
    let mut order: Vec<(f32, u64)> = Vec::new();
    let mut offsets = Vec::with_capacity(weights.len());
    let mut flat = 0u64;
    for (l, (w, c)) in weights.iter().zip(costs).enumerate() {
        let w = w.as_ref();
        let mut cls = Classifier::new(w, c, &mut mags);
        let classes: Vec<usize> = w
            .iter()
            .map(|&v| 2 * l + usize::from(cls.surcharged(v)))
            .collect();
        for (i, (&v, &k)) in w.iter().zip(&classes).enumerate() {
            let cost = class_cost[k];
            if v != 0.0 && cost <= capacity {
                let key = scale.key(v, scale.param(cost, capacity));
                order.push((key, flat + i as u64));
            }
        }
        offsets.push(flat);
        flat += w.len() as u64;
        class_of.push(classes);
    }
    let locate = |g: u64| -> (usize, usize) {
        let l = offsets.partition_point(|&o| o <= g) - 1;
        (l, (g - offsets[l]) as usize)
    };
    let value = |l: usize, i: usize| -> f64 {
        let v = weights[l].as_ref()[i] as f64;
        v * v
    };
    // The best single affordable item: largest |w|, first in index order among equals.
    let best = order.iter().fold(None::<(f32, u64)>, |b, &(_, g)| {
        let (l, i) = locate(g);
        let m = weights[l].as_ref()[i].abs();
        if b.is_none_or(|(bm, bg)| m > bm || (m == bm && g < bg)) {
            Some((m, g))
        } else {
            b
        }
    });
    order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    // The longest prefix whose exact cost (per-class counts priced by
    // `charged_of_classes`) fits. A running sum screens the items far from the
    // capacity; near it, the exact price decides.
    let margin = capacity * f64::EPSILON * (order.len() + 4 * class_cost.len() + 4) as f64;
    let mut counts = vec![0u64; class_cost.len()];
    let (mut used, mut prefix_value, mut prefix) = (0.0f64, 0.0f64, 0usize);
    for &(_, g) in &order {
        let (l, i) = locate(g);
        let k = class_of[l][i];
        let c = class_cost[k];
        counts[k] += 1;
        if used + c > capacity - margin && charged_of_classes(&counts, &class_cost) > capacity {
            counts[k] -= 1;
            break;
        }
        used += c;
        prefix_value += value(l, i);
        prefix += 1;
    }
    let mut keep: Vec<Vec<bool>> = weights
        .iter()
        .map(|w| vec![false; w.as_ref().len()])
        .collect();
    let mut kept = vec![0u64; class_cost.len()];
    let single = match best {
        Some((_, g)) if value(locate(g).0, locate(g).1) > prefix_value => {
            let (l, i) = locate(g);
            keep[l][i] = true;
            kept[class_of[l][i]] += 1;
            true
        }
        _ => {
            for &(_, g) in &order[..prefix] {
                let (l, i) = locate(g);
                keep[l][i] = true;
                kept[class_of[l][i]] += 1;
            }
            false
        }
    };
    for (w, k) in weights.iter_mut().zip(&keep) {
        for (v, k) in w.as_mut().iter_mut().zip(k) {
            if !k {
                *v = 0.0;
            }
        }
    }
    let kept_value = weights
        .iter()
        .flat_map(|w| w.as_ref().iter())
        .map(|v| f64::from(*v) * f64::from(*v))
        .sum();
    Selection {
        kept: kept.iter().sum(),
        charged: charged_of_classes(&kept, &class_cost),
        kept_value,
        total_value: 0.0,
        single_item: single,
    }
}
