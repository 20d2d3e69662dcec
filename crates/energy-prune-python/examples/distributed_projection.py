"""The projection of weights sharded over torch.distributed ranks, checked against the
single-process projection bit for bit (pip install torch):

    torchrun --standalone --nproc_per_node 4 crates/energy-prune-python/examples/distributed_projection.py \
        [--net squeezenet] [--budget 0.3]

Rank 0 builds the problem (`ShardedProblem.from_budget`) and sends it to the others as
JSON; each rank holds one contiguous shard of the weights (all layers concatenated),
as FSDP's flat shards are; `energy_prune.torch.project_sharded` runs the protocol over
gloo (broadcast_object_list / all_gather_object) and projects every shard in place.
Here every rank draws the same random network and keeps its own slice, so that rank 0
can compare the gathered result with `energy_prune.project` on the whole.
"""

import argparse
import sys

import numpy as np
import torch
import torch.distributed as dist

import energy_prune as ep
from energy_prune.torch import project_sharded


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", default="squeezenet")
    ap.add_argument("--budget", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    arch = ep.Architecture.zoo(args.net)
    budget = ep.Budget.fraction("energy", ep.SystolicArray(arch), args.budget)
    box = [ep.ShardedProblem.from_budget(budget).to_json() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    problem = ep.ShardedProblem.from_json(box[0])

    rng = np.random.default_rng(args.seed)
    full = np.concatenate([rng.standard_normal(l["weights"]).astype(np.float32) for l in arch.layers])
    per = -(-len(full) // world)
    start, end = min(rank * per, len(full)), min((rank + 1) * per, len(full))
    shard = torch.from_numpy(full[start:end].copy())

    outcome = project_sharded(shard, start, problem)

    pieces = [None] * world
    dist.all_gather_object(pieces, shard.numpy())
    status = 0
    if rank == 0:
        sharded = np.concatenate(pieces)
        layers, at = [], 0
        for l in arch.layers:
            layers.append(full[at : at + l["weights"]].copy())
            at += l["weights"]
        reference = ep.project(layers, [budget])
        single = np.concatenate(layers)
        same = np.array_equal(sharded.view(np.uint32), single.view(np.uint32))
        print(
            f"{args.net}: {len(full)} weights on {world} ranks, budget {args.budget}: kept {outcome['kept']} "
            f"in {outcome['rounds']} rounds (largest reply {outcome['largest_reply_numbers']} numbers); "
            f"single process kept {reference['kept']}; identical bit for bit: {same}"
        )
        status = 0 if same and outcome["kept"] == reference["kept"] else 1
    dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
