"""energy-prune for Python: energy reports, the projection onto energy budgets and
pruning plans, on numpy arrays (the Rust crate `energy-prune` underneath).

Weights are one float32 numpy array per prunable layer of an `Architecture`, in the
layer's canonical layout (`[out, in / groups, kh, kw]` for a convolution, `[out, in]`
for a linear layer), C-contiguous. `project` writes into them in place.

    import numpy as np
    import energy_prune as ep

    arch = ep.Architecture.zoo("lenet5")
    hw = ep.SystolicArray(arch)
    weights = [np.random.randn(*l["shape"]).astype(np.float32) for l in arch.layers]
    ep.project(weights, [ep.Budget.fraction("energy", hw, 0.3)])
    print(hw.energy(weights))            # per-layer table; total <= 0.3 of dense

Errors on bad input raise `EnergyPruneError` (a `ValueError`) with a message that
says what was wrong and what to do; files that cannot be read raise `OSError`.
"""

from ._native import (
    Architecture,
    Budget,
    Coordinator,
    CostModel,
    CountingModel,
    EnergyPruneError,
    EnergyReport,
    OnnxModel,
    PruningPlan,
    ShardedProblem,
    SystolicArray,
    __version__,
    answer,
    project,
    project_joint,
)

__all__ = [
    "Architecture",
    "Budget",
    "Coordinator",
    "CostModel",
    "CountingModel",
    "EnergyPruneError",
    "EnergyReport",
    "OnnxModel",
    "PruningPlan",
    "ShardedProblem",
    "SystolicArray",
    "__version__",
    "answer",
    "project",
    "project_joint",
]
