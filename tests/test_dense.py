"""Dense-prediction metrics by hand, and NYUv2 / Cityscapes through the real .npy layout and network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtlbench.cli import main
from mtlbench.config import resolve_config
from mtlbench.data.dense import NYUv2
from mtlbench.errors import MtlbenchError
from mtlbench.tasks import TaskSpec
from mtlbench.training import build, make_optimizer, train_config


def _one_hot_logits(pred: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred, classes).permute(0, 3, 1, 2).float()


def test_miou_and_pixel_accuracy_by_hand():
    task = TaskSpec("seg", "segmentation", 3)
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, -1, -1]]])  # two ignored pixels
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 0, 0]]])
    ev = task.evaluator()
    ev.update(_one_hot_logits(pred, 3), target)
    # class 0: tp 1, fp 1 (a class-2 pixel), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    metrics = ev.compute()
    assert metrics["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert metrics["pixel_acc"] == pytest.approx(4 / 6)


def test_depth_errors_by_hand():
    task = TaskSpec("depth", "depth")
    target = torch.tensor([[[[2.0, 4.0], [0.0, 1.0]]]])  # one missing pixel
    output = torch.tensor([[[[3.0, 3.0], [9.0, 1.5]]]])
    ev = task.evaluator()
    ev.update(output, target)
    metrics = ev.compute()
    assert metrics["abs_err"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics["rel_err"] == pytest.approx((1 / 2 + 1 / 4 + 0.5 / 1) / 3)


def test_normal_angles_by_hand():
    task = TaskSpec("normal", "normals")
    target = torch.zeros(1, 3, 1, 4)
    target[0, 2] = 1.0  # every valid normal is +z
    target[0, :, 0, 3] = 0.0  # the last pixel is missing
    angles = [0.0, 20.0, 45.0]
    output = torch.zeros(1, 3, 1, 4)
    for i, a in enumerate(angles):
        output[0, 0, 0, i] = 2 * math.sin(math.radians(a))  # any length: predictions are normalised
        output[0, 2, 0, i] = 2 * math.cos(math.radians(a))
    ev = task.evaluator()
    ev.update(output, target)
    m = ev.compute()
    assert m["mean_angle"] == pytest.approx(65 / 3, abs=1e-3) and m["median_angle"] == pytest.approx(20, abs=1e-3)
    assert (m["within_11.25"], m["within_22.5"], m["within_30"]) == pytest.approx((1 / 3, 2 / 3, 2 / 3))


def write_nyuv2(root, n_train=5, n_val=2, size=(16, 24), seed=0):
    """A tiny NYUv2 in the real preprocessed layout."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for folder in ("image", "label", "depth", "normal"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random((3, *size), dtype=np.float32))
            label = rng.integers(-1, 13, size=size).astype(np.float32)
            np.save(root / split / "label" / f"{i}.npy", label)
            np.save(root / split / "depth" / f"{i}.npy", rng.random((1, *size), dtype=np.float32) * 5)
            normal = rng.normal(size=(3, *size)).astype(np.float32)
            np.save(root / split / "normal" / f"{i}.npy", normal / np.linalg.norm(normal, axis=0, keepdims=True))


def test_nyuv2_loader_and_one_hard_sharing_step(tmp_path):
    write_nyuv2(tmp_path)
    cfg = resolve_config(
        "nyuv2", "hps", 0, {"dataset.root": str(tmp_path), "train.batch_size": 2, "tracking.enabled": False}
    )
    bundle, model, rule = build(cfg)
    assert [t.kind for t in bundle.tasks] == ["segmentation", "depth", "normals"]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (4, 1, 2)
    x, targets = next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=2)))
    outputs = model(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 13, 16, 24), (2, 1, 16, 24), (2, 3, 16, 24)]
    optimizer = make_optimizer(model.param_groups(1e-4), train_config(cfg))
    before = [p.detach().clone() for p in model.encoder.parameters()][:3]
    losses = rule.backward(x, targets)
    optimizer.step()
    assert torch.isfinite(losses).all()
    assert any(not torch.equal(a, p) for a, p in zip(before, list(model.encoder.parameters())[:3], strict=False))
    model.eval()
    evs = [t.evaluator() for t in bundle.tasks]
    with torch.no_grad():
        for ev, out, tgt in zip(evs, model(x), targets, strict=True):
            ev.update(out, tgt)
    metrics = [ev.compute() for ev in evs]
    assert 0 <= metrics[0]["miou"] <= 1 and metrics[1]["abs_err"] > 0 and 0 <= metrics[2]["mean_angle"] <= 180


def test_missing_or_partial_dense_data_is_named(tmp_path):
    with pytest.raises(MtlbenchError, match="missing folder"):
        NYUv2(root=str(tmp_path)).load(0)
    write_nyuv2(tmp_path)
    (tmp_path / "val" / "depth" / "1.npy").unlink()
    problems, _ = NYUv2(root=str(tmp_path)).check()
    assert any("do not match" in p for p in problems)
    assert main(["data", "check", "--dataset", "nyuv2", "--root", str(tmp_path)]) == 1


def test_data_check_accepts_a_good_copy(tmp_path, capsys):
    write_nyuv2(tmp_path)
    assert main(["data", "check", "--dataset", "nyuv2", "--root", str(tmp_path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_data_check_of_mnist_files(tmp_path, capsys):
    assert (
        main(
            ["data", "check", "--dataset", "multimnist", "--root", str(tmp_path), "--set", "dataset.source=torchvision"]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "train-images-idx3-ubyte" in out and str(tmp_path / "MNIST" / "raw") in out


def test_cityscapes_loader_and_one_step(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 4), ("val", 2)):
        for folder in ("image", "label_7", "depth"):
            (tmp_path / split / folder).mkdir(parents=True)
        for i in range(n):
            np.save(tmp_path / split / "image" / f"{i}.npy", rng.random((3, 16, 32), dtype=np.float32))
            np.save(tmp_path / split / "label_7" / f"{i}.npy", rng.integers(-1, 7, size=(16, 32)).astype(np.float32))
            np.save(tmp_path / split / "depth" / f"{i}.npy", rng.random((16, 32), dtype=np.float32))  # (H, W) too
    cfg = resolve_config("cityscapes", "hps", 0, {"dataset.root": str(tmp_path), "tracking.enabled": False})
    bundle, model, rule = build(cfg)
    assert [(t.name, t.num_outputs) for t in bundle.tasks] == [("segmentation", 7), ("depth", 1)]
    x, targets = next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=2)))
    assert targets[1].shape == (2, 1, 16, 32)
    assert torch.isfinite(rule.backward(x, targets)).all()


def test_data_check_names_a_corrupt_array_instead_of_crashing(tmp_path, capsys):
    """Issue 26.7: data check crashed on corrupt NYUv2 files."""
    write_nyuv2(tmp_path)
    for split in ("train", "val"):
        for path in (tmp_path / split / "image").glob("*.npy"):
            path.write_bytes(b"\x93NUMPY truncated")
    assert main(["data", "check", "--dataset", "nyuv2", "--root", str(tmp_path)]) == 1
    assert "unreadable as a NumPy array" in capsys.readouterr().out
