"""energy_prune.torch on small modules (skipped where PyTorch is not installed:
`pip install torch onnx` to run them)."""

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch onnx)")
pytest.importorskip("onnx", reason="the onnx package is not installed (torch.onnx.export needs it)")

import energy_prune as ep  # noqa: E402
import energy_prune.torch as ept  # noqa: E402
from torch import nn  # noqa: E402


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def lenet5():
    torch.manual_seed(0)
    return LeNet5()


def test_a_module_maps_to_the_zoo_architecture_and_its_report():
    model, x = lenet5(), torch.randn(1, 1, 32, 32)
    arch, params = ept.layers_of(model, x)
    assert arch.fingerprint == ep.Architecture.zoo("lenet5").fingerprint
    assert params == [model.conv1.weight, model.conv2.weight, model.fc1.weight, model.fc2.weight, model.fc3.weight]
    report = ept.report(model, x)
    assert report.total == ep.SystolicArray(arch).dense_energy().total


def test_the_projector_prunes_the_module_in_place_and_freezing_keeps_the_support():
    model, x = lenet5(), torch.randn(8, 1, 32, 32)
    projector = ept.EnergyProjector(model, x[:1], budget=0.3)
    storage = model.fc1.weight.data_ptr()
    out = projector.step()
    assert out["budgets"][0]["met"]
    assert model.fc1.weight.data_ptr() == storage
    assert projector.energy().total <= 0.3 * projector.dense_energy()
    assert ept.report(model, x[:1]).total == projector.energy().total
    zeros = int((model.fc1.weight == 0).sum())
    assert zeros > 0
    projector.freeze()
    pruned = [(p == 0) for p in projector.parameters]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        assert projector.step() is None
    for p, z in zip(projector.parameters, pruned):
        assert bool((p[z] == 0).all())
    assert projector.energy().total <= 0.3 * projector.dense_energy()
    assert sum(projector.plan().widths) > 0


def test_every_k_steps_and_bad_arguments():
    model, x = lenet5(), torch.randn(1, 1, 32, 32)
    projector = ept.EnergyProjector(model, x, budget=0.5, every=2)
    assert projector.step() is None
    assert projector.step() is not None
    with pytest.raises(ep.EnergyPruneError, match="every"):
        ept.EnergyProjector(model, x, budget=0.5, every=0)
    with pytest.raises(ep.EnergyPruneError, match="budget"):
        ept.EnergyProjector(model, x)
    with pytest.raises(ep.EnergyPruneError, match="(?i)infeasible"):
        ept.EnergyProjector(model, x, budget=0.01).step()


class Transposed(nn.Module):
    """A linear layer whose parameter is stored [in, out]."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(12, 5))

    def forward(self, x):
        return torch.flatten(x, 1) @ self.w


def test_a_parameter_not_in_the_layers_layout_is_refused_by_name():
    with pytest.raises(ep.EnergyPruneError, match="`w`.*transposed"):
        ept.layers_of(Transposed(), torch.randn(1, 12, 1, 1))
