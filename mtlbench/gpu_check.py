"""The GPU check (issue 25.6): every default method trained on MultiMNIST for one seed on a GPU, checked against
the CPU, with per-method step times and the GPU's utilisation. `workflow/scripts/gpu_check.sh` runs it on a bare
GPU machine (PyTorch there, no package registry: what the training core needs beyond it travels as wheels).

Two checks, both printed and written to `gpu_check.csv`:
- **agreement**: one epoch of each method on the CPU and on the GPU of the same machine, from the same seed,
  TF32 off, and the layers that draw random numbers made deterministic for these two runs (dropout off, Gumbel
  gates without noise: the CUDA generator draws other numbers than the CPU's): the epoch's mean training loss,
  validation loss and validation accuracy must agree within float tolerance (`LOSS_RTOL`, `ACCURACY_ATOL`);
- **full budget on the GPU**: the config's epochs (15) per method; its step time (CUDA events, read once per
  epoch), the GPU's mean utilisation while it trained (sampled every 0.2 s), and its test accuracy beside the
  CPU reference's for the same seed (`results/reference/metrics.csv`), as a difference, not a pass/fail: a
  whole run on another device follows another float trajectory.

`python -m mtlbench.gpu_check --device cpu --tiny` runs the same code on a CPU, on a few hundred samples (the
suite's test of the script).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from mtlbench.config import resolve_config
from mtlbench.record import RunRecord
from mtlbench.training import train

LOSS_RTOL = 1e-3
ACCURACY_ATOL = 0.005  # 10 of 2,000 validation pairs
ROOT = Path(__file__).resolve().parent.parent
TINY = {"dataset.n_train": 256, "dataset.n_val": 64, "dataset.n_test": 64}


def default_methods() -> list[str]:
    return list(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["methods"])


def multimnist_config(method: str, device: str, epochs: int | None, tiny: bool) -> dict[str, Any]:
    """The default pipeline's MultiMNIST config of a method (its `overrides` for the dataset), seed 0."""
    overrides = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["overrides"]
    sets = {**overrides["common"], **overrides["datasets"]["multimnist"], "tracking.enabled": False}
    sets["train.device"], sets["train.progress"] = device, "off"
    sets.update({"train.epochs": epochs} if epochs else {})
    sets.update(TINY if tiny else {})
    return resolve_config("multimnist", method, 0, sets)


class UtilisationSampler:
    """The GPU's utilisation (%) every `period` seconds, in a thread, from NVML (torch.cuda.utilization) or,
    failing that, nvidia-smi; `mean()` of the samples since `start()`."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples = period, cast(list[float], [])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def read() -> float | None:
        try:
            return float(torch.cuda.utilization())
        except Exception:  # noqa: BLE001 - no NVML binding: ask nvidia-smi
            query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            try:
                return float(subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.split()[0])
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self.read()
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.period)

    def start(self) -> None:
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def mean(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return sum(self.samples) / len(self.samples) if self.samples else math.nan


def noiseless_gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
    """`F.gumbel_softmax` with zero noise: the softmax of logits / tau (hard: its one-hot argmax, straight-through)."""
    soft = (logits / tau).softmax(dim)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft


@contextlib.contextmanager
def deterministic_layers() -> Iterator[None]:
    """Dropout off and Gumbel gates without noise, for the CPU-GPU agreement runs only."""
    dropouts = [nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout]
    saved = {cls: cls.forward for cls in dropouts}
    gumbel = F.gumbel_softmax
    try:
        for cls in dropouts:
            cls.forward = lambda self, x: x
        F.gumbel_softmax = noiseless_gumbel_softmax
        yield
    finally:
        for cls, forward in saved.items():
            cls.forward = forward
        F.gumbel_softmax = gumbel


def first_epoch(record: RunRecord) -> dict[str, float]:
    entry = record.history[0]
    accuracy = [m["accuracy"] for m in entry["val"].values()]
    return {
        "train_loss": sum(entry["train_loss"]),
        "val_loss": sum(entry["val_loss"]),
        "val_accuracy": sum(accuracy) / len(accuracy),
    }


def agreement(cpu: RunRecord, gpu: RunRecord) -> dict[str, Any]:
    """The first epoch on both devices: the largest relative loss difference, the accuracy difference, and
    whether both are within tolerance."""
    a, b = first_epoch(cpu), first_epoch(gpu)
    loss_rel = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in ("train_loss", "val_loss"))
    accuracy = abs(a["val_accuracy"] - b["val_accuracy"])
    return {
        "loss_rel_diff": loss_rel,
        "accuracy_diff": accuracy,
        "agree": loss_rel <= LOSS_RTOL and accuracy <= ACCURACY_ATOL,
    }


def reference_accuracy(method: str) -> float:
    """The CPU reference's mean test accuracy of seed 0 (results/reference/metrics.csv), or NaN."""
    path = ROOT / "results" / "reference" / "metrics.csv"
    if not path.exists():
        return math.nan
    with path.open() as handle:
        rows = [
            float(r["value"])
            for r in csv.DictReader(handle)
            if r.get("dataset") == "multimnist"
            and r.get("method") == method
            and r.get("seed") == "0"
            and r.get("metric") == "accuracy"
            and r.get("split", "test") == "test"
        ]
    return sum(rows) / len(rows) if rows else math.nan


def reference_ms_per_step(method: str) -> float:
    """The CPU reference's step time for MultiMNIST (results/reference/efficiency.csv: 2 cores, mean of 5
    seeds), or NaN."""
    path = ROOT / "results" / "reference" / "efficiency.csv"
    if not path.exists():
        return math.nan
    with path.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("dataset") == "multimnist" and r.get("method") == method]
    return 1e3 * float(rows[0]["seconds_per_step"]) if rows else math.nan


def mean_test_accuracy(record: RunRecord) -> float:
    values = [m["accuracy"] for m in record.metrics.test.values()]
    return sum(values) / len(values) if values else math.nan


def check_method(method: str, device: str, out: Path, tiny: bool, sampler: UtilisationSampler) -> dict[str, Any]:
    """One method's two checks."""
    with deterministic_layers():
        one = {
            side: train(multimnist_config(method, side, 1, tiny), out / method / f"epoch1-{side}")
            for side in ("cpu", device)
        }
    sampler.start()
    started = time.perf_counter()
    full = train(multimnist_config(method, device, 2 if tiny else None, tiny), out / method / "full")
    seconds = time.perf_counter() - started
    return {
        "method": method,
        **agreement(one["cpu"], one[device]),
        "status": full.status,
        "epochs": full.epochs_completed,
        "ms_per_step": 1e3 * (full.timing.seconds_per_step or math.nan),
        "cpu_reference_ms_per_step": reference_ms_per_step(method),
        "train_seconds": full.timing.train_seconds,
        "wall_seconds": seconds,
        "gpu_utilisation_pct": sampler.mean(),
        "test_accuracy": mean_test_accuracy(full),
        "cpu_reference_accuracy": reference_accuracy(method),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlbench.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--methods", nargs="*", default=None, help="default: config/config.yaml's methods")
    parser.add_argument("--tiny", action="store_true", help="a few hundred samples, 2 epochs (a smoke test)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting methods after this long")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 as on the CPU
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__} on {name}", flush=True)
    sampler, rows, started = UtilisationSampler(), [], time.perf_counter()
    for method in args.methods or default_methods():
        if time.perf_counter() - started > args.budget_s:
            print(f"skipped {method}: the budget of {args.budget_s:.0f} s is spent", flush=True)
            continue
        rows.append(check_method(method, args.device, args.out, args.tiny, sampler))
        print(
            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()), flush=True
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "gpu_check.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    disagree = [r["method"] for r in rows if not r["agree"]]
    print(
        f"{len(rows)} methods; CPU and {args.device} agree on the first epoch: "
        + ("all" if not disagree else f"not {disagree}")
    )
    return 1 if disagree else 0


if __name__ == "__main__":
    raise SystemExit(main())
