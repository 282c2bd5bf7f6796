"""The GPU check's script (issue 25.6) runs end to end on a CPU, and its agreement test sees a difference."""

from __future__ import annotations

import copy
import csv
import os
import subprocess
import sys

from mtlbench.gpu_check import LOSS_RTOL, agreement, main
from mtlbench.record import RunRecord
from tests.conftest import ROOT


def test_the_gpu_check_runs_on_a_cpu_and_writes_its_table(tmp_path):
    assert main(["--device", "cpu", "--tiny", "--methods", "hps", "srdml", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "gpu_check.csv").open()))
    assert [r["method"] for r in rows] == ["hps", "srdml"]
    assert all(r["agree"] == "True" and r["status"] == "ok" and float(r["ms_per_step"]) > 0 for r in rows)
    assert all(0 < float(r["cpu_reference_accuracy"]) <= 1 for r in rows)  # the reference's seed 0


def test_agreement_sees_a_first_epoch_that_differs(tmp_path):
    main(["--device", "cpu", "--tiny", "--methods", "hps", "--out", str(tmp_path)])
    cpu = RunRecord.read(tmp_path / "hps" / "epoch1-cpu" / "record.json")
    other = copy.deepcopy(cpu)
    assert agreement(cpu, other)["agree"]
    other.history[0]["train_loss"] = [v * (1 + 3 * LOSS_RTOL) for v in other.history[0]["train_loss"]]
    result = agreement(cpu, other)
    assert not result["agree"] and abs(result["loss_rel_diff"] - 3 * LOSS_RTOL) < 1e-6


def test_the_shell_script_installs_nothing_where_the_packages_are_there(tmp_path):
    path = f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"  # python3: the suite's own interpreter
    env = {"PATH": path, "OUT": str(tmp_path), "HOME": str(tmp_path)}
    args = ["bash", "workflow/scripts/gpu_check.sh", "--device", "cpu", "--tiny", "--methods", "stl"]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "gpu_check.csv").exists() and "agree on the first epoch: all" in result.stdout


def test_the_agreement_runs_draw_no_random_numbers():
    """Dropout is off and the Gumbel gates are noiseless inside `deterministic_layers` (the CUDA generator would
    draw other numbers than the CPU's), and both are restored after it."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from mtlbench.gpu_check import deterministic_layers

    x, logits = torch.ones(4, 8), torch.tensor([[0.3, -0.2]])
    with deterministic_layers():
        assert torch.equal(nn.Dropout(0.5).train()(x), x) and torch.equal(nn.Dropout2d(0.5).train()(x[None]), x[None])
        draws = {tuple(F.gumbel_softmax(logits, tau=0.1, hard=True)[0].tolist()) for _ in range(20)}
        assert draws == {(1.0, 0.0)}
    torch.manual_seed(0)
    assert not torch.equal(nn.Dropout(0.5).train()(x), x)
    assert len({tuple(F.gumbel_softmax(logits, tau=0.1, hard=True)[0].tolist()) for _ in range(50)}) == 2
