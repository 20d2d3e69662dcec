"""The sharded projection over torch.distributed (gloo, 4 processes on this machine)
equals the single-process projection bit for bit (skipped without torch)."""

import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples/distributed_projection.py"


@pytest.mark.parametrize("net,budget", [("lenet5", 0.3), ("squeezenet", 0.5)])
def test_four_ranks_project_as_one_process(net, budget):
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
         str(EXAMPLE), "--net", net, "--budget", str(budget)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "identical bit for bit: True" in run.stdout, run.stdout


def test_a_bad_shard_fails_on_every_rank(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text(
        "import numpy as np, torch, torch.distributed as dist, energy_prune as ep\n"
        "from energy_prune.torch import project_sharded\n"
        "dist.init_process_group('gloo')\n"
        "arch = ep.Architecture.zoo('lenet5')\n"
        "problem = ep.ShardedProblem.from_budget(ep.Budget.fraction('e', ep.SystolicArray(arch), 0.3))\n"
        "n = arch.weight_count // 2\n"
        "w = np.ones(n, np.float32)\n"
        "if dist.get_rank() == 1: w[3] = np.nan\n"
        "try:\n"
        "    project_sharded(w, dist.get_rank() * n, problem)\n"
        "except ep.EnergyPruneError as e:\n"
        "    print('refused', dist.get_rank(), e)\n"
        "dist.destroy_process_group()\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "refused 0" in run.stdout and "refused 1" in run.stdout, run.stdout
