"""Tier-1 loaders on tiny fixtures written in the real on-disk formats, through torchvision's own parsing,
with one hard-sharing training step through the real loader, network and metric code."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mtlbench.cli import main
from mtlbench.config import resolve_config
from mtlbench.data import iterate_batches
from mtlbench.data.office import Office31
from mtlbench.errors import MtlbenchError
from mtlbench.training import build, evaluate, make_optimizer, train_config
from tests.test_data import write_mnist_files


def _one_step(cfg: dict, batch: int = 4) -> tuple[dict, object]:
    bundle, model, rule = build(cfg)
    optimizer = make_optimizer(model.param_groups(1e-3), train_config(cfg))
    x, targets = next(iterate_batches(bundle.train, batch, True, torch.Generator().manual_seed(0), torch.device("cpu")))
    losses = rule.backward(x, targets)
    optimizer.step()
    assert torch.isfinite(losses).all() and len(losses) == len(bundle.tasks)
    metrics, _ = evaluate(model, bundle.test, bundle.tasks, batch, torch.device("cpu"))
    return metrics, bundle


def write_cifar10(root, per_batch=6, n_test=8, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, size=n)],
            "batch_label": name,
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump(
            {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]},
            fh,
        )


def test_cifar_mtl_from_python_batches(tmp_path):
    write_cifar10(tmp_path)
    cfg = resolve_config(
        "cifar_mtl", "hps", 0, {"dataset.root": str(tmp_path), "dataset.per_class": 2, "tracking.enabled": False}
    )
    metrics, bundle = _one_step(cfg)
    assert len(bundle.tasks) == 10 and all(t.kind == "binary" for t in bundle.tasks)
    # per_class caps each class at its first 2 training images; 10% of those go to validation
    assert len(bundle.train) + len(bundle.val) <= 20 and len(bundle.test) == 8
    positives = sum(int(t.sum()) for t in bundle.test.targets)
    assert positives == 8  # one-vs-rest: every test image is positive for exactly one task
    assert set(metrics["cat"]) == {"accuracy", "auc", "precision", "recall"}
    assert bundle.info["pretrained"].startswith("none")
    # the official code feeds the images in [0, 1], without mean / std normalisation
    assert float(bundle.train.x.min()) >= 0.0 and float(bundle.train.x.max()) <= 1.0


def test_cifar_mtl_missing_files_and_checksums(tmp_path, capsys):
    with pytest.raises(MtlbenchError, match="cifar-10-batches-py"):
        build(resolve_config("cifar_mtl", "hps", 0, {"dataset.root": str(tmp_path), "tracking.enabled": False}))
    assert main(["data", "check", "--dataset", "cifar_mtl", "--root", str(tmp_path)]) == 1
    write_cifar10(tmp_path)
    assert main(["data", "check", "--dataset", "cifar_mtl", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("checksum differs") == 7  # re-encoded copy: warnings, not failure


ATTRS = [f"attr{i:02d}" for i in range(40)]


def write_celeba(root, n=9, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for name in names:
        pixels = rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name)
    attrs = rng.choice([-1, 1], size=(n, 40))
    (folder / "list_attr_celeba.txt").write_text(
        f"{n}\n"
        + " ".join(ATTRS)
        + " \n"
        + "".join(f"{m} " + " ".join(f"{v:2d}" for v in row) + "\n" for m, row in zip(names, attrs, strict=True))
    )
    (folder / "list_eval_partition.txt").write_text("".join(f"{m} {i % 3}\n" for i, m in enumerate(names)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{m} {i + 1}\n" for i, m in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{m} 1 2 3 4\n" for m in names)
    )
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
        "rightmouth_y\n" + "".join(f"{m} " + " ".join(["10"] * 10) + "\n" for m in names)
    )
    return attrs


def test_celeba_attributes_from_the_official_lists(tmp_path):
    attrs = write_celeba(tmp_path)
    cfg = resolve_config("celeba", "hps", 0, {"dataset.root": str(tmp_path), "tracking.enabled": False})
    metrics, bundle = _one_step(cfg, batch=3)
    assert [t.name for t in bundle.tasks] == ATTRS
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3, 3, 3)  # partition 0 / 1 / 2
    image, targets = bundle.train[1]
    assert image.shape == (3, 64, 64)
    assert [int(t) for t in targets] == [(v + 1) // 2 for v in attrs[3]]  # the 2nd training image is 000004.jpg
    assert set(metrics["attr00"]) == {"accuracy", "auc", "precision", "recall"}


def test_celeba_missing_is_named(tmp_path):
    assert main(["data", "check", "--dataset", "celeba", "--root", str(tmp_path)]) == 1
    with pytest.raises(MtlbenchError, match="img_align_celeba"):
        build(resolve_config("celeba", "hps", 0, {"dataset.root": str(tmp_path), "tracking.enabled": False}))


def test_multifashion_from_fashion_mnist_idx_files(tmp_path):
    write_mnist_files(tmp_path, "FashionMNIST")
    cfg = resolve_config(
        "multifashion",
        "hps",
        0,
        {
            "dataset.root": str(tmp_path),
            "dataset.n_train": 32,
            "dataset.n_val": 8,
            "dataset.n_test": 8,
            "tracking.enabled": False,
        },
    )
    metrics, bundle = _one_step(cfg)
    assert set(metrics) == {"left", "right"} and bundle.train.x.shape == (32, 1, 28, 28)


def write_office31(root, per_class=5, seed=0, with_lists=True):
    rng = np.random.default_rng(seed)
    for domain in ("amazon", "dslr", "webcam"):
        for cls in ("back_pack", "bike"):
            folder = root / domain / "images" / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(18, 18, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"frame_{i:04d}.jpg")
    if with_lists:  # dslr gets published-style split lists; the other domains use the seeded split
        (root / "splits").mkdir()
        for split, ids in (("train", [0, 1, 2]), ("val", [3]), ("test", [4])):
            lines = [
                f"dslr/images/{c}/frame_{i:04d}.jpg {label}"
                for label, c in enumerate(("back_pack", "bike"))
                for i in ids
            ]
            (root / "splits" / f"dslr_{split}.txt").write_text("\n".join(lines) + "\n")


def test_office31_domains_as_tasks(tmp_path):
    write_office31(tmp_path)
    cfg = resolve_config(
        "office31",
        "hps",
        0,
        {
            "dataset.root": str(tmp_path),
            "dataset.image_size": 32,
            "dataset.backbone": "resnet18",
            "tracking.enabled": False,
        },
    )
    metrics, bundle = _one_step(cfg, batch=4)
    assert [t.name for t in bundle.tasks] == ["amazon", "dslr", "webcam"]
    assert all(t.num_classes == 2 for t in bundle.tasks)
    # dslr follows its lists (6 / 2 / 2); amazon and webcam split 10 images 6 / 2 / 2
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (18, 6, 6)
    image, targets = bundle.test[0]
    assert image.shape == (3, 32, 32)
    assert sum(int(t) >= 0 for t in targets) == 1  # labelled for its own domain only
    assert set(metrics) == {"amazon", "dslr", "webcam"}


def test_office_missing_or_bad_lists_are_named(tmp_path):
    assert main(["data", "check", "--dataset", "office31", "--root", str(tmp_path)]) == 1
    write_office31(tmp_path)
    bad = "dslr/images/bike/nothere.jpg 1\ndslr/images/bike/frame_0000.jpg 7\n"
    (tmp_path / "splits" / "dslr_test.txt").write_text(bad)
    problems, _ = Office31(root=str(tmp_path)).check()
    assert any("no image" in p for p in problems) and any("outside 0..1" in p for p in problems)


def test_office_home_layout_without_images_folder(tmp_path):
    rng = np.random.default_rng(2)
    for domain in ("Art", "Clipart", "Product", "Real_World"):
        for cls in ("Alarm_Clock", "Bike", "Pen"):
            (tmp_path / domain / cls).mkdir(parents=True)
            for i in range(5):
                pixels = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / domain / cls / f"{i:05d}.jpg")
    cfg = resolve_config(
        "office_home",
        "hps",
        0,
        {
            "dataset.root": str(tmp_path),
            "dataset.image_size": 32,
            "dataset.backbone": "resnet18",
            "tracking.enabled": False,
        },
    )
    metrics, bundle = _one_step(cfg, batch=6)
    assert [t.num_classes for t in bundle.tasks] == [3, 3, 3, 3] and bundle.info["classes"] == [
        "Alarm_Clock",
        "Bike",
        "Pen",
    ]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (36, 12, 12)


class _RunsCode:
    """A pickle payload that calls a function while loading (here: writes a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_cifar_pickle_runs_nothing_and_gets_one_error(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as fh:
        pickle.dump({"data": _RunsCode(marker), "labels": [0]}, fh)
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtlbench",
            "train",
            "--dataset",
            "cifar_mtl",
            "--method",
            "hps",
            "--no-tracking",
            "--set",
            f"dataset.root={tmp_path}",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert train.returncode == 2 and train.stderr.startswith("error: refused to load CIFAR-10")
    assert "posix.system" in train.stderr or "os.system" in train.stderr
    assert "Traceback" not in train.stderr and train.stderr.count("\n") == 1
    check = subprocess.run(
        [sys.executable, "-m", "mtlbench", "data", "check", "--dataset", "cifar_mtl", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert check.returncode == 1 and "not plain data" in check.stdout
    assert not marker.exists()  # nothing ran, under train or under data check


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("../../etc/passwd 0", "lies outside the dataset folder"),
        ("/etc/passwd 0", "lies outside the dataset folder"),
        ("dslr/images/bike/frame_0000.jpg one", "expected '<image path> <label>'"),
        ("justonefield", "expected '<image path> <label>'"),
    ],
)
def test_a_split_list_cannot_name_files_outside_the_dataset_or_break_the_check(tmp_path, line, message):
    """Issue 26.7: an Office split list could name files outside the dataset folder; a malformed line crashed
    the check. Both `data check` and training refuse it in one line naming the file and line."""
    write_office31(tmp_path)
    (tmp_path / "splits" / "dslr_test.txt").write_text(line + "\n")
    problems, _ = Office31(root=str(tmp_path)).check()
    assert any(message in p and "dslr_test.txt:1" in p for p in problems)
    with pytest.raises(MtlbenchError, match=message):
        Office31(root=str(tmp_path)).load(0)


def test_data_check_reads_cifar_as_training_does(tmp_path, capsys):
    """Issue 26.7: data check said `ok` for CIFAR files that training could not parse (plain data, wrong
    content)."""
    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"labels": [1, 2]}, fh)  # no "data"
    assert main(["data", "check", "--dataset", "cifar_mtl", "--root", str(tmp_path)]) == 1
    assert "unreadable" in capsys.readouterr().out
