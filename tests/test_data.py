"""Tier-0 data: the MultiMNIST geometry and splits, the synthetic ground truth, torchvision's MNIST files."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch
import torch.nn.functional as F

from mtlbench.data.multimnist import CANVAS, SHIFT, MultiMNIST, compose_canvas, compose_pairs
from mtlbench.data.synthetic import SCALES, SyntheticRelations, ground_truth_relation
from mtlbench.errors import MtlbenchError


def _digit(value: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 28, 28, generator=g) * value).to(torch.uint8)


def test_left_digit_at_origin_right_digit_shifted_and_max_overlap():
    left, right = _digit(200, 0), _digit(255, 1)
    canvas = compose_canvas(left, right)[0]
    assert canvas.shape == (CANVAS, CANVAS)
    lf, rf = left[0].float() / 255, right[0].float() / 255
    # only the left digit reaches the top-left corner, only the right one the bottom-right
    assert torch.equal(canvas[:SHIFT, :28], lf[:SHIFT])
    assert torch.equal(canvas[28 : SHIFT + 28, SHIFT : SHIFT + 28], rf[28 - SHIFT :])
    assert canvas[SHIFT + 28 :].abs().sum() == 0 and canvas[:, SHIFT + 28 :].abs().sum() == 0
    # the overlap is the pixel-wise maximum
    overlap = canvas[SHIFT:28, SHIFT:28]
    assert torch.equal(overlap, torch.maximum(lf[SHIFT:, SHIFT:], rf[: 28 - SHIFT, : 28 - SHIFT]))
    assert canvas[:SHIFT, 28:].abs().sum() == 0  # nothing lands outside both digits


def test_pairs_are_the_canvas_resized_to_28_by_nearest_neighbour_as_the_official_code():
    """PIL's NEAREST (the official scipy imresize interp='nearest') samples the source pixel whose centre is
    nearest: index floor((i + 0.5) * 36 / 28), i.e. rows 0, 1, 3, 4, 5, 7, ... 34, 35."""
    left, right = _digit(255, 2).repeat(3, 1, 1), _digit(255, 3).repeat(3, 1, 1)
    images = compose_pairs(left, right)
    assert images.shape == (3, 28, 28)
    idx = ((torch.arange(28) + 0.5) * CANVAS / 28).floor().long()
    assert idx[:6].tolist() == [0, 1, 3, 4, 5, 7] and idx[-1] == 35
    canvas = compose_canvas(left, right)
    assert torch.equal(images, canvas[:, idx][:, :, idx])
    smooth = compose_pairs(left, right, resize="bilinear")
    expected = F.interpolate(canvas[:, None], size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(smooth, expected)


def test_digit_splits_are_disjoint_and_pairing_follows_the_data_seed():
    provider = MultiMNIST(n_train=300, n_val=50, n_test=50)
    tr, va, te = provider.digit_splits(torch.Generator().manual_seed(0))
    keys = [{hash(img.numpy().tobytes()) for img in split[0]} for split in (tr, va, te)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert len(tr[0]) + len(va[0]) + len(te[0]) == 5000
    a, b, c = provider.load(0), provider.load(0), provider.load(1)
    assert torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.train.x, c.train.x)
    assert [t.name for t in a.tasks] == ["left", "right"] and a.input_shape == (1, 28, 28)


def test_synthetic_ground_truth_and_generator():
    rel = ground_truth_relation()
    assert rel.shape == (12, 12) and torch.equal(rel, rel.T) and rel.diag().abs().sum() == 0
    assert rel[0, 1] == 2 and rel[0, 2] == 1 and rel[0, 6] == 0 and rel[6, 11] == 1 and rel[10, 11] == 2
    provider = SyntheticRelations()
    bundle = provider.load(0)
    x = bundle.train.x
    assert x.shape == (10, 20) and len(bundle.test) == 40
    for t, scale in enumerate(SCALES):  # y_t = scale * sum(x) + N(0, 0.01^2)
        residual = bundle.train.targets[t] - scale * x.sum(1)
        assert residual.abs().max() < 0.06
    assert bundle.info["ground_truth_relation"] == rel.tolist()


def _write_idx(path, data: torch.Tensor) -> None:
    magic = {1: 0x0801, 3: 0x0803}[data.dim()]
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in data.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + data.to(torch.uint8).numpy().tobytes())


def write_mnist_files(root, folder: str = "MNIST", n_train: int = 60, n_test: int = 20) -> None:
    """A tiny MNIST-format copy (the published .gz IDX files) under root/<folder>/raw."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{split}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=g))
        _write_idx(raw / f"{split}-labels-idx1-ubyte.gz", torch.randint(0, 10, (n,), generator=g))


def test_torchvision_source_reads_real_idx_files(tmp_path):
    write_mnist_files(tmp_path)
    provider = MultiMNIST(source="torchvision", root=str(tmp_path), n_train=40, n_val=10, n_test=10)
    tr, va, te = provider.digit_splits(torch.Generator().manual_seed(0))
    assert (len(tr[0]), len(va[0]), len(te[0])) == (54, 6, 20)
    bundle = provider.load(0)
    assert bundle.train.x.shape == (40, 1, 28, 28)
    problems, warnings = provider.check()  # the fixture's bytes are not the published ones: warnings only
    assert problems == [] and len(warnings) == 4 and all("checksum" in w for w in warnings)


def test_torchvision_source_missing_files_names_the_expected_path(tmp_path):
    with pytest.raises(MtlbenchError, match=str(tmp_path / "MNIST" / "raw")) as info:
        MultiMNIST(source="torchvision", root=str(tmp_path)).load(0)
    assert "train-images-idx3-ubyte" in str(info.value)
