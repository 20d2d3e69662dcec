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

from . import Architecture, Budget, EnergyPruneError, EnergyReport, OnnxModel, PruningPlan, SystolicArray, project

__all__ = ["EnergyProjector", "export", "layers_of", "report"]


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
