//! The straightforward sort-based greedy knapsack: the reference that the
//! selection algorithm is tested against and the baseline of the benches. Not part
//! of the public API (reachable through `energy_prune::testing` for benches).

use super::select::{Classifier, Selection, check_inputs, key};
use crate::energy::LayerCost;
use crate::error::Result;

/// The straightforward sort-based greedy knapsack (reference implementation and
/// bench baseline): same result as [`greedy_knapsack`](super::greedy_knapsack), in `O(n log n)`.
///
/// # Errors
/// As [`greedy_knapsack`].
pub(crate) fn project_sorted<W: AsMut<[f32]> + AsRef<[f32]>>(
    weights: &mut [W],
    costs: &[LayerCost],
    capacity: f64,
) -> Result<Selection> {
    check_inputs(weights, costs, capacity, true)?;
    let mut mags = Vec::new();
    // Per weight: its cost (or NaN when zero / unaffordable); then (key, flat index) pairs.
    let mut cost_of: Vec<Vec<f64>> = Vec::with_capacity(weights.len());
    let mut order: Vec<(f32, u64)> = Vec::new();
    let mut offsets = Vec::with_capacity(weights.len());
    let mut flat = 0u64;
    for (w, c) in weights.iter().zip(costs) {
        let w = w.as_ref();
        let mut cls = Classifier::new(w, c, &mut mags);
        let costs_l: Vec<f64> = w
            .iter()
            .map(|&v| {
                if cls.surcharged(v) {
                    c.base + c.surcharge
                } else {
                    c.base
                }
            })
            .collect();
        for (i, (&v, &cost)) in w.iter().zip(&costs_l).enumerate() {
            if v != 0.0 && cost <= capacity {
                order.push((key(v, (1.0 / cost) as f32), flat + i as u64));
            }
        }
        offsets.push(flat);
        flat += w.len() as u64;
        cost_of.push(costs_l);
    }
    let locate = |g: u64| -> (usize, usize) {
        let l = offsets.partition_point(|&o| o <= g) - 1;
        (l, (g - offsets[l]) as usize)
    };
    let value = |l: usize, i: usize| -> f64 {
        let v = weights[l].as_ref()[i] as f64;
        v * v
    };
    let total_value: f64 = weights
        .iter()
        .flat_map(|w| w.as_ref().iter())
        .map(|v| (*v as f64) * (*v as f64))
        .sum();
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
    let (mut used, mut prefix_value, mut prefix) = (0.0f64, 0.0f64, 0usize);
    for &(_, g) in &order {
        let (l, i) = locate(g);
        let c = cost_of[l][i];
        if used + c > capacity {
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
    let (kept, charged, kept_value, single) = match best {
        Some((_, g)) if value(locate(g).0, locate(g).1) > prefix_value => {
            let (l, i) = locate(g);
            keep[l][i] = true;
            (1, cost_of[l][i], value(l, i), true)
        }
        _ => {
            for &(_, g) in &order[..prefix] {
                let (l, i) = locate(g);
                keep[l][i] = true;
            }
            (prefix as u64, used, prefix_value, false)
        }
    };
    for (w, k) in weights.iter_mut().zip(&keep) {
        for (v, k) in w.as_mut().iter_mut().zip(k) {
            if !k {
                *v = 0.0;
            }
        }
    }
    Ok(Selection {
        kept,
        charged,
        kept_value,
        total_value,
        single_item: single,
    })
}
