"""Time `energy_prune.project` on 61 M AlexNet-shaped float32 weights at 0.3 of the
dense energy, against the same call in Rust (run both on a quiet machine):

    python crates/energy-prune-python/examples/time_projection.py [REPEATS]
    cargo run --release -p energy-prune-examples --example project_timing [-- REPEATS]

Prints the median, minimum and maximum seconds of REPEATS projections (default 7),
each from the same dense weights (restored between calls, not timed).
"""

import sys
import time

import numpy as np

import energy_prune as ep


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    arch = ep.Architecture.zoo("alexnet")
    hw = ep.SystolicArray(arch)
    rng = np.random.default_rng(0)
    dense = [rng.uniform(-1, 1, l["shape"]).astype(np.float32) for l in arch.layers]
    weights = [d.copy() for d in dense]
    budget = [ep.Budget.fraction("energy", hw, 0.3)]
    times, kept = [], 0
    for _ in range(max(1, repeats)):
        for w, d in zip(weights, dense):
            np.copyto(w, d)
        start = time.perf_counter()
        kept = ep.project(weights, budget)["kept"]
        times.append(time.perf_counter() - start)
    times.sort()
    print(
        f"python project, alexnet {arch.weight_count} weights at 0.3: median {times[len(times) // 2]:.4f} s "
        f"(min {times[0]:.4f}, max {times[-1]:.4f}, {len(times)} runs), kept {kept}"
    )


if __name__ == "__main__":
    main()
