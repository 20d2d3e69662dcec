"""Tests of the Python package (numpy only). Run from the repository root:

    pip install -r crates/energy-prune-python/requirements-dev.txt
    maturin develop --release -m crates/energy-prune-python/Cargo.toml   # in a virtualenv
    pytest crates/energy-prune-python/tests
"""

import pathlib

import numpy as np
import pytest

import energy_prune as ep

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "energy-prune-onnx/tests/data/onnx"


def random_weights(arch, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(layer["shape"]).astype(np.float32) for layer in arch.layers]


def test_zoo_architectures_describe_their_layers():
    assert "lenet5" in ep.Architecture.zoo_names()
    arch = ep.Architecture.zoo("lenet5")
    assert len(arch) == 5
    assert arch.weight_count == 61470
    assert [l["name"] for l in arch.layers] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert arch.layers[0]["shape"] == [6, 1, 5, 5]
    assert arch.layers[2]["shape"] == [120, 400]
    assert sum(l["weights"] for l in arch.layers) == arch.weight_count
    assert [w.shape for w in arch.zeros()] == [tuple(l["shape"]) for l in arch.layers]
    with pytest.raises(ep.EnergyPruneError, match="resnet"):
        ep.Architecture.zoo("no-such-net")


def test_projection_in_place_fits_the_budget_and_keeps_the_values():
    arch = ep.Architecture.zoo("lenet5")
    hw = ep.SystolicArray(arch)
    dense = hw.dense_energy().total
    assert dense == pytest.approx(1.710754e7, rel=1e-6)  # the reference LeNet-5 energy
    w = random_weights(arch)
    before = [x.copy() for x in w]
    ids = [id(x) for x in w]
    out = ep.project(w, [ep.Budget.fraction("energy", hw, 0.3)])
    assert [id(x) for x in w] == ids
    assert all(x.dtype == np.float32 for x in w)
    report = hw.energy(w)
    assert report.total <= 0.3 * dense
    assert out["budgets"][0]["met"] and out["budgets"][0]["name"] == "energy"
    kept = sum(int(np.count_nonzero(x)) for x in w)
    assert out["kept"] == kept == sum(l["nonzero"] for l in report.layers)
    assert 0 < kept < arch.weight_count
    for a, b in zip(w, before):
        assert np.all((a == 0) | (a == b))
        # Within a layer the kept weights are the largest in magnitude.
        if np.count_nonzero(a) and np.count_nonzero(a) < a.size:
            assert np.abs(b[a != 0]).min() >= np.abs(b[a == 0]).max()
    # Projecting a projected network onto the same budget changes nothing.
    again = [x.copy() for x in w]
    ep.project(again, [ep.Budget.fraction("energy", hw, 0.3)])
    for a, b in zip(again, w):
        np.testing.assert_array_equal(a, b)
    assert "conv1" in report.table() and report.layers[0]["name"] == "conv1"


def test_several_budgets_hold_at_once():
    arch = ep.Architecture.zoo("lenet5")
    hw = ep.SystolicArray(arch)
    params = ep.CountingModel(arch, "parameters")
    size = ep.CountingModel(arch, "bytes", value_bits=8, index_bits=8)
    w = random_weights(arch, seed=1)
    out = ep.project(
        w,
        [
            ep.Budget.fraction("energy", hw, 0.5),
            ep.Budget.absolute("parameters", params, 5000),
            ep.Budget.fraction("bytes", size, 0.2),
        ],
    )
    assert [b["name"] for b in out["budgets"]] == ["energy", "parameters", "bytes"]
    assert all(b["met"] for b in out["budgets"])
    assert hw.energy(w).total <= 0.5 * hw.dense_energy().total
    assert params.energy(w).total <= 5000
    assert size.energy(w).total <= 0.2 * size.dense_energy().total


def test_bad_input_raises_with_the_crates_message_and_changes_nothing():
    arch = ep.Architecture.zoo("lenet5")
    hw = ep.SystolicArray(arch)
    budget = [ep.Budget.fraction("energy", hw, 0.3)]
    w = random_weights(arch, seed=2)
    keep = [x.copy() for x in w]
    with pytest.raises(ep.EnergyPruneError, match="5 prunable layers"):
        ep.project(w[:4], budget)
    with pytest.raises(ep.EnergyPruneError, match="conv2"):
        ep.project([w[0], w[1][:3]] + w[2:], budget)
    nan = [x.copy() for x in w]
    nan[2][0, 0] = np.nan
    with pytest.raises(ValueError, match="(?i)nan|finite"):
        ep.project(nan, budget)
    with pytest.raises(ep.EnergyPruneError, match="(?i)infeasible"):
        ep.project(w, [ep.Budget.fraction("energy", hw, 0.01)])
    with pytest.raises(ep.EnergyPruneError, match="contiguous"):
        ep.project([x.T if x.ndim == 2 else x for x in w], budget)
    with pytest.raises(TypeError):
        ep.project([x.astype(np.float64) for x in w], budget)
    with pytest.raises(ep.EnergyPruneError, match="no budget"):
        ep.project(w, [])
    other = ep.SystolicArray(ep.Architecture.zoo("alexnet"))
    with pytest.raises(ep.EnergyPruneError, match="another architecture"):
        ep.project(w, budget + [ep.Budget.fraction("alex", other, 0.5)])
    for a, b in zip(w, keep):
        np.testing.assert_array_equal(a, b)
    assert issubclass(ep.EnergyPruneError, ValueError)
    with pytest.raises(OSError):
        ep.PruningPlan.load("/no/such/plan.json")


def test_plans_from_pruned_weights_round_trip_and_apply(tmp_path):
    arch = ep.Architecture.zoo("lenet5")
    w = random_weights(arch, seed=3)
    # A channel is live while a weight reading it is nonzero: zero the fc1
    # columns that read channels 0 and 3 of conv2 (16 channels x 5 x 5 positions).
    w[2].reshape(120, 16, 25)[:, [0, 3]] = 0
    plan = ep.PruningPlan.from_weights(arch, w)
    widths = dict(zip([name for name, _, _ in arch.widths], plan.widths))
    assert plan.widths[[n for n, _, _ in arch.widths].index("conv2")] == 14
    assert plan.fingerprint == arch.fingerprint
    path = tmp_path / "plan.json"
    plan.save(path)
    back = ep.PruningPlan.load(str(path))
    assert back.kept == plan.kept and back.widths == plan.widths
    # Applying it to dense weights zeroes every weight reading those channels
    # (conv2's filters of them stay: compaction removes them).
    dense = random_weights(arch, seed=4)
    back.apply(arch, dense)
    assert np.count_nonzero(dense[1]) == dense[1].size
    fc1 = dense[2].reshape(120, 16, 25)
    assert np.all(fc1[:, [0, 3]] == 0) and np.all(fc1[:, 1] != 0)
    assert widths["conv1"] == 6


def test_onnx_models_price_as_the_zoo_prune_save_and_compact(tmp_path):
    model = ep.OnnxModel.load(FIXTURES / "lenet5.onnx")
    arch = model.architecture
    assert arch.fingerprint == ep.Architecture.zoo("lenet5").fingerprint
    hw = ep.SystolicArray(arch)
    w = model.weights()
    assert [x.shape for x in w] == [tuple(l["shape"]) for l in arch.layers]
    assert hw.energy(w).total == hw.dense_energy().total
    ep.project(w, [ep.Budget.fraction("energy", hw, 0.4)])
    model.set_weights(w)
    x = np.linspace(-1, 1, 2 * 32 * 32, dtype=np.float32)
    y = model.run(x, 2)
    path = tmp_path / "pruned.onnx"
    model.save(path, external_data=True)
    assert (tmp_path / "pruned.onnx.data").is_file()
    back = ep.OnnxModel.load(path)
    assert len(back.external_files) == 1
    np.testing.assert_array_equal(back.run(x, 2), y)
    for a, b in zip(back.weights(), w):
        np.testing.assert_array_equal(a, b)
    plan = ep.PruningPlan.from_weights(arch, w)
    small = back.compact(plan)
    assert small.architecture.weight_count <= arch.weight_count
    np.testing.assert_allclose(small.run(x, 2), y, rtol=1e-5, atol=1e-6)
    with pytest.raises(ep.EnergyPruneError):
        ep.OnnxModel.load(FIXTURES / "lenet5.json")


def test_joint_precision_goes_below_the_pruning_floor_and_reduces_to_project():
    import json

    arch = ep.Architecture.zoo("lenet5")
    hw = ep.SystolicArray(arch)
    w = random_weights(arch, seed=5)
    with pytest.raises(ep.EnergyPruneError, match="(?i)infeasible"):
        ep.project([x.copy() for x in w], [ep.Budget.fraction("energy", hw, 0.1)])
    out = ep.project_joint(w, [ep.Budget.fraction("energy", hw, 0.1)], weight_bits=[2, 4, 8, 16], activation_bits=[4, 8, 16])
    assert len(out["precision"]) == 5
    assert all(pw in {"int2", "int4", "int8", "int16"} and pa in {"int4", "int8", "int16"} for pw, pa in out["precision"])
    assert any(pa != "int16" for _, pa in out["precision"])
    assert all(b["met"] and b["cost"] <= b["limit"] for b in out["budgets"])
    assert out["kept"] == sum(int(np.count_nonzero(x)) for x in w) > 0
    # With the 16-bit reference as the only option it is the plain projection.
    a, b = random_weights(arch, seed=6), random_weights(arch, seed=6)
    budget = [ep.Budget.fraction("energy", hw, 0.3)]
    ep.project(a, budget)
    joint = ep.project_joint(b, budget, weight_bits=[16], activation_bits=[16])
    assert joint["precision"] == [("int16", "int16")] * 5
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ep.EnergyPruneError):
        ep.project_joint(b, budget, weight_bits=[1])
    plan = ep.PruningPlan.from_weights(arch, b)
    assert isinstance(json.loads(plan.provenance), dict)
