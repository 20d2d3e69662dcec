//! Data parallelism of the reference CNN: a batch is split into shards, one worker
//! thread each; gradients are summed in a fixed order, so results are
//! deterministic for a given thread count.

use super::executor::Worker;

/// The sample range `[lo, hi)` of shard `i` of `shards`.
pub(super) fn shard_range(batch: usize, shards: usize, i: usize) -> (usize, usize) {
    (batch * i / shards, batch * (i + 1) / shards)
}

/// `dst = first + sum(rest)`, in that order.
pub(super) fn sum_into<'a>(dst: &mut [f32], first: &[f32], rest: impl Iterator<Item = &'a [f32]>) {
    dst.copy_from_slice(first);
    for src in rest {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    }
}

/// Run `f` on every worker, one thread each (the first on the calling thread).
pub(super) fn parallel_for_each<F>(workers: &mut [Worker], f: F)
where
    F: Fn((usize, &mut Worker)) + Sync,
{
    if workers.len() == 1 {
        f((0, &mut workers[0]));
        return;
    }
    std::thread::scope(|s| {
        let (first, rest) = workers.split_at_mut(1);
        let f = &f;
        for (i, wk) in rest.iter_mut().enumerate() {
            s.spawn(move || f((i + 1, wk)));
        }
        f((0, &mut first[0]));
    });
}
