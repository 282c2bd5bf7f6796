"""Figures plot what the tables report (issue 16.4)."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from mtlbench.figures import primary_panels
from mtlbench.update_rules import assign_flat_gradient


def test_metric_panels_use_each_tasks_primary_metric():
    """Audit: metrics_ci.png plotted synthetic MAE (alphabetically first) while every table uses MSE."""
    rows = [
        {"dataset": "s", "method": m, "task": "t1", "metric": metric, "primary": metric == "mse", "mean": 1.0}
        for m in ("hps", "stl")
        for metric in ("mae", "mse")
    ]
    rows += [{"dataset": "s", "method": "hps", "task": "all", "metric": "delta_m", "primary": True, "mean": 0.0}]
    panels = primary_panels(pd.DataFrame(rows))
    assert [key for key, _ in panels] == [("s", "t1")]
    assert set(panels[0][1].metric) == {"mse"} and len(panels[0][1]) == 2


def test_assigned_gradients_keep_the_parameters_layout():
    """Rules that write flattened gradients (PCGrad, MGDA) give channels_last conv weights a channels_last
    gradient (a contiguous one broke autograd's layout contract and slowed every optimiser step)."""
    conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    flat = torch.arange(float(conv.weight.numel() + conv.bias.numel()))
    assign_flat_gradient([conv.weight, conv.bias], flat)
    assert conv.weight.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(conv.weight.grad, flat[: conv.weight.numel()].view(conv.weight.shape))
    assign_flat_gradient([conv.weight, conv.bias], flat)  # accumulates
    assert torch.equal(conv.bias.grad, 2 * flat[conv.weight.numel() :])


def test_a_method_keeps_its_gate_colour_in_every_panel(tmp_path, monkeypatch):
    """DSMTL-JL runs on two datasets, DSMTL-IL on one: JL's bars have one colour in both panels."""
    from mtlbench import figures
    from mtlbench.record import RunRecord

    def gates(method, dataset):
        state = {"gates": {"t1": {"public": 0.3, "private": 0.7}, "t2": {"public": 0.6, "private": 0.4}}}
        return RunRecord.from_json(
            {"dataset": dataset, "method": method, "seed": 0, "status": "ok", "method_state": state}
        )

    saved = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path, rect=None: saved.setdefault("fig", fig))
    records = [gates("dsmtl_il", "a"), gates("dsmtl_jl", "a"), gates("dsmtl_jl", "b")]
    figures.gate_values(records, tmp_path / "gates.png")
    colours = []
    for ax in saved["fig"].axes[:2]:
        bars = {
            text.get_text(): patch
            for text, patch in zip(ax.get_legend().get_texts(), ax.get_legend().get_patches(), strict=True)
        }
        colours.append(tuple(bars["dsmtl_jl"].get_facecolor()))
    assert colours[0] == colours[1]
