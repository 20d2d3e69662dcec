"""The projection inside PyTorch training loops (imports torch; the rest of the
package does not).

    import energy_prune.torch as ept

    projector = ept.EnergyProjector(model, example_input, budget=0.2)
    for x, y in data:
        loss_fn(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        projector.step()          # every `every` steps: project onto the budget, in place
    projector.freeze()            # fine-tune on the support reached: pruned weights stay zero
    print(projector.energy())     # per-layer table of the exact energy

The layers are found through `torch.onnx.export` (the TorchScript exporter): each
prunable layer of the exported graph (Conv, Gemm, MatMul with a constant weight) is
matched to the module parameter its weight initializer is named after
("conv1.weight"); a layer that cannot be matched (a weight the exporter renamed,
say by folding a batch norm into it) is refused with its name. Parameters live on
any device: CPU float32 parameters are projected in their own memory, others
through a copy.
"""

import os
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import (
    Architecture,
    Budget,
    Coordinator,
    EnergyPruneError,
    EnergyReport,
    OnnxModel,
    PruningPlan,
    ShardedProblem,
    SystolicArray,
    answer,
    project,
)

__all__ = ["EnergyProjector", "export", "layers_of", "project_sharded", "report"]


def export(model: torch.nn.Module, example_input: torch.Tensor) -> OnnxModel:
    """The model as the crate reads it: exported to ONNX (opset 17, eval mode, the
    parameters as initializers) and loaded back."""
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    (example_input,),
                    path,
                    opset_version=17,
                    dynamo=False,
                    do_constant_folding=False,
                    export_params=True,
                )
            return OnnxModel.load(path, tuple(int(d) for d in example_input.shape[1:]) if example_input.dim() == 4 else None)
    finally:
        model.train(was_training)


def layers_of(model: torch.nn.Module, example_input: torch.Tensor) -> Tuple[Architecture, List[torch.nn.Parameter]]:
    """The architecture of `model` and the parameter holding each prunable layer's
    weights (in `Architecture.layers` order, each of the layer's canonical shape)."""
    onnx = export(model, example_input)
    arch = onnx.architecture
    params = dict(model.named_parameters())
    found = []
    for layer, name in zip(arch.layers, onnx.weight_names):
        p = params.get(name)
        if p is None:
            raise EnergyPruneError(
                f"layer `{layer['name']}`: its weights `{name}` are no parameter of the module "
                "(the exporter renamed or computed them, e.g. by folding a batch norm into a "
                "convolution); prune a module whose prunable weights are parameters"
            )
        if list(p.shape) != list(layer["shape"]):
            raise EnergyPruneError(
                f"layer `{layer['name']}`: parameter `{name}` has shape {list(p.shape)}, the "
                f"layer's weights {layer['shape']} (weights stored transposed are not supported)"
            )
        found.append(p)
    return arch, found


def report(model: torch.nn.Module, example_input: torch.Tensor, hardware: Optional[str] = None) -> EnergyReport:
    """The exact energy of the module's current weights on the systolic array
    (`hardware`: a JSON `SystolicConfig`, default the 12 x 14 array)."""
    onnx = export(model, example_input)
    return SystolicArray(onnx.architecture, hardware).energy(onnx.weights())


class EnergyProjector:
    """Keeps a module inside energy budgets during training: call `step()` after
    `optimizer.step()`; every `every` steps the weights are projected onto the
    budgets in place (the largest-magnitude weights the budgets afford are kept).
    `freeze()` fixes the support reached, for fine-tuning: from then on `step()`
    zeroes the pruned weights again after every update, so they never grow back.

    `budget` is a fraction of the dense energy on the systolic array (`hardware`:
    a JSON `SystolicConfig`); `budgets` replaces it by any list of `Budget`s made on
    `self.hardware` / `self.architecture` (energy, parameters, bytes...).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        example_input: torch.Tensor,
        budget: Optional[float] = None,
        *,
        budgets: Optional[Sequence[Budget]] = None,
        every: int = 1,
        hardware: Optional[str] = None,
    ) -> None:
        if every < 1:
            raise EnergyPruneError(f"every = {every}: project every 1 or more steps")
        self.architecture, self.parameters = layers_of(model, example_input)
        self.hardware = SystolicArray(self.architecture, hardware)
        if budgets is None:
            if budget is None:
                raise EnergyPruneError("give a budget (a fraction of the dense energy) or budgets")
            budgets = [Budget.fraction("energy", self.hardware, budget)]
        self.budgets = list(budgets)
        self.every = every
        self.steps = 0
        self.masks: Optional[List[torch.Tensor]] = None
        self.last = None

    def _arrays(self):
        """numpy views of the parameters (CPU float32 contiguous), or copies."""
        views, copies = [], []
        for p in self.parameters:
            t = p.detach()
            shared = t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
            a = t.numpy() if shared else t.to("cpu", torch.float32).contiguous().numpy()
            views.append(a)
            copies.append(not shared)
        return views, copies

    @torch.no_grad()
    def project(self) -> dict:
        """Project the parameters onto the budgets now; the outcome (kept weights,
        each budget's cost and limit)."""
        arrays, copies = self._arrays()
        out = project(arrays, self.budgets)
        for p, a, copied in zip(self.parameters, arrays, copies):
            if copied:
                p.copy_(torch.from_numpy(a).to(p.device, p.dtype))
        self.last = out
        return out

    @torch.no_grad()
    def step(self) -> Optional[dict]:
        """After `optimizer.step()`: project every `every` steps (the outcome), or,
        once frozen, zero the pruned weights again (`None`)."""
        self.steps += 1
        if self.masks is not None:
            for p, m in zip(self.parameters, self.masks):
                p.mul_(m)
            return None
        if self.steps % self.every == 0:
            return self.project()
        return None

    def set_budget(self, fraction: float) -> None:
        """Replace the budgets by one energy budget, a fraction of the dense energy
        (for a schedule that tightens the budget over the epochs)."""
        self.budgets = [Budget.fraction("energy", self.hardware, fraction)]

    @torch.no_grad()
    def freeze(self) -> None:
        """Project once more, then keep this support: pruned weights stay zero."""
        self.project()
        self.masks = [(p != 0).to(p.dtype) for p in self.parameters]

    def energy(self) -> EnergyReport:
        """The exact energy of the current weights."""
        return self.hardware.energy(self._arrays()[0])

    def dense_energy(self) -> float:
        return self.hardware.dense_energy().total

    def plan(self) -> PruningPlan:
        """The pruning plan of the current weights (channels left without readers)."""
        return PruningPlan.from_weights(self.architecture, self._arrays()[0])


def project_sharded(weights, start: int, problem: ShardedProblem, *, src: int = 0, group=None) -> dict:
    """The projection of weights sharded over the ranks of a torch.distributed
    process group (gloo on CPU; any backend that carries Python objects).

    Every rank calls it with its shard: `weights` is a 1-D float32 CPU tensor (or
    numpy array) holding positions `[start, start + len)` of all layers' weights
    concatenated in `Architecture.layers` order (the flat shard of FSDP, say);
    the ranks hold consecutive ranges in rank order, covering every weight.
    `problem` is the same on every rank (`ShardedProblem.from_budget`, or its JSON
    sent around). Rank `src` coordinates: each round it broadcasts a request
    (`broadcast_object_list`), every rank answers from its own weights, and the
    replies come back with `all_gather_object`; a few rounds of small messages,
    after which each shard is projected in place, exactly as `project` would
    have projected the whole. Returns the outcome (`kept`, `kept_value`,
    `rounds`, ...) on every rank; an error on any rank is raised on every rank.
    """
    import torch.distributed as dist

    rank = dist.get_rank(group)
    world = dist.get_world_size(group)
    if isinstance(weights, torch.Tensor):
        t = weights.detach()
        if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous() or t.dim() != 1:
            raise EnergyPruneError("the shard must be a contiguous 1-D float32 CPU tensor")
        weights = t.numpy()
    coordinator = Coordinator(problem) if rank == src else None

    def share(value):
        box = [value]
        dist.broadcast_object_list(box, src=src, group=group)
        return box[0]

    outcome = None
    while True:
        message = None
        if rank == src:
            try:
                message = ("request", coordinator.next_request())
            except Exception as e:  # noqa: BLE001 - passed on to every rank
                message = ("error", f"coordinator: {e}")
        kind, request = share(message)
        if kind == "error":
            raise EnergyPruneError(request)
        if request is None:
            break
        try:
            reply = ("reply", answer(problem, rank, start, weights, request))
        except Exception as e:  # noqa: BLE001 - passed on to every rank
            reply = ("error", f"rank {rank}: {e}")
        replies = [None] * world
        dist.all_gather_object(replies, reply, group=group)
        errors = [text for kind, text in replies if kind == "error"]
        if errors:
            raise EnergyPruneError("; ".join(errors))
        if rank == src:
            try:
                outcome = ("outcome", coordinator.receive([text for _, text in replies]))
            except Exception as e:  # noqa: BLE001 - passed on to every rank
                outcome = ("error", f"coordinator: {e}")
            if outcome[0] == "error":
                # Tell the others through the next request's broadcast.
                coordinator = _Failed(outcome[1])
    kind, result = share(outcome if rank == src else None)
    if kind == "error":
        raise EnergyPruneError(result)
    return result


class _Failed:
    """A coordinator that failed: its next request is the error."""

    def __init__(self, message: str) -> None:
        self.message = message

    def next_request(self):
        raise EnergyPruneError(self.message)
