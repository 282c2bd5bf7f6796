"""NYUv2 and Cityscapes in the common preprocessed `.npy` layout (MTAN / LibMTL), for dense prediction.

Layout under `root`:  {train,val}/image/<i>.npy (3, H, W) float;  {train,val}/<label folder>/<i>.npy (H, W)
class ids with -1 = ignore;  {train,val}/depth/<i>.npy (1, H, W) or (H, W), 0 = missing;  NYUv2 also
{train,val}/normal/<i>.npy (3, H, W), zero vectors = missing. The published `val` split is the test set; the
validation set is a seeded 10% of `train` (the layout has none). Network: dilated ResNet-50 encoder
(output stride 8) with one DeepLab-v3 (ASPP) head per task, upsampled to the input size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from mtlbench.data import DatasetBundle, DatasetProvider
from mtlbench.errors import MtlbenchError
from mtlbench.nets import Network
from mtlbench.registry import DATASETS
from mtlbench.tasks import TaskSpec

VALIDATION_SEED = 688


class NpyFolders(Dataset):
    """One split: sample i is `image/<i>.npy` with one target file per task folder."""

    def __init__(self, split_dir: Path, folders: list[str]):
        self.split_dir, self.folders = split_dir, folders
        self.ids = sorted(int(p.stem) for p in (split_dir / "image").glob("*.npy"))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        idx = self.ids[i]
        image = torch.from_numpy(np.load(self.split_dir / "image" / f"{idx}.npy").astype(np.float32))
        targets = []
        for folder in self.folders:
            array = np.load(self.split_dir / folder / f"{idx}.npy")
            if folder.startswith("label"):
                targets.append(torch.from_numpy(array.astype(np.int64)))
            else:
                t = torch.from_numpy(array.astype(np.float32))
                targets.append(t[None] if t.dim() == 2 else t)
        return image, targets


def dilated_resnet50_stages() -> nn.Sequential:
    """torchvision's ResNet-50 with dilation in the last two stages (output stride 8); random initialisation
    (ImageNet weights are not downloaded here)."""
    from torchvision.models import resnet50

    net = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    return nn.Sequential(stem, net.layer2, net.layer3, net.layer4)


class UpsampledHead(nn.Module):
    """DeepLab-v3 head (ASPP) whose output is resized to the input image."""

    def __init__(self, channels: int, size: tuple[int, int]):
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        self.head, self.size = DeepLabHead(2048, channels), size

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.head(rep), size=self.size, mode="bilinear", align_corners=False)


class DenseNpyDataset(DatasetProvider):
    """Shared loading and checking of the `.npy` layout; subclasses name their task folders."""

    folders: ClassVar[dict[str, TaskSpec]]
    obtain: ClassVar[str]
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 200,
        "batch_size": 8,
        "optimizer": "adam",
        "lr": 1e-4,
        "weight_decay": 1e-5,
        "lr_step": 100,
        "lr_gamma": 0.5,
    }

    def __init__(self, root: str = "data/nyuv2", val_fraction: float = 0.1):
        self.root, self.val_fraction = Path(root), val_fraction

    def layout(self) -> str:
        names = ", ".join(["image", *self.folders])
        return (
            f"{self.root}/{{train,val}}/{{{names}}}/<index>.npy (the MTAN/LibMTL preprocessed layout; "
            f"obtain it from {self.obtain})"
        )

    def check(self) -> tuple[list[str], list[str]]:
        """(problems, warnings) of the copy under `root`: folders, matching files, shapes and value ranges."""
        problems: list[str] = []
        for split in ("train", "val"):
            split_dir = self.root / split
            folders = ["image", *self.folders]
            missing = [f for f in folders if not (split_dir / f).is_dir()]
            if missing:
                problems.append(f"missing folder(s) {', '.join(str(split_dir / f) for f in missing)}")
                continue
            ids = {f: {p.stem for p in (split_dir / f).glob("*.npy")} for f in folders}
            if not ids["image"]:
                problems.append(f"no .npy images in {split_dir / 'image'}")
                continue
            for folder in self.folders:
                if ids[folder] != ids["image"]:
                    problems.append(
                        f"{split_dir / folder}: {len(ids['image'] ^ ids[folder])} index files do not match "
                        f"{split_dir / 'image'}"
                    )
            try:
                problems += self._check_sample(split_dir, sorted(ids["image"])[0])
            except (OSError, ValueError, EOFError) as exc:  # a truncated or foreign file where an array belongs
                problems.append(f"{split_dir}: a sample is unreadable as a NumPy array ({exc})")
        return problems, []

    def _check_sample(self, split_dir: Path, idx: str) -> list[str]:
        out = []
        image = np.load(split_dir / "image" / f"{idx}.npy")
        if image.ndim != 3 or image.shape[0] != 3:
            out.append(f"{split_dir / 'image' / idx}.npy has shape {image.shape}, expected (3, H, W)")
            return out
        hw = image.shape[1:]
        for folder, task in self.folders.items():
            array = np.load(split_dir / folder / f"{idx}.npy")
            if array.shape[-2:] != hw:
                out.append(f"{split_dir / folder / idx}.npy has shape {array.shape}, expected (..., {hw[0]}, {hw[1]})")
            elif problem := task.spec.label_problem(task, array):
                out.append(f"{split_dir / folder / idx}.npy {problem}")
        return out

    def load(self, data_seed: int) -> DatasetBundle:
        problems, _ = self.check()
        if problems:
            raise MtlbenchError(
                f"{type(self).__name__} data at {self.root} is missing or malformed: "
                f"{'; '.join(problems[:5])}. Expected {self.layout()}"
            )
        train_all = NpyFolders(self.root / "train", list(self.folders))
        test = NpyFolders(self.root / "val", list(self.folders))
        perm = torch.randperm(len(train_all), generator=torch.Generator().manual_seed(VALIDATION_SEED)).tolist()
        n_val = max(1, int(round(self.val_fraction * len(train_all))))
        val, train = Subset(train_all, perm[:n_val]), Subset(train_all, perm[n_val:])
        image, _ = train_all[0]
        size = (int(image.shape[1]), int(image.shape[2]))
        network = Network(
            dilated_resnet50_stages, lambda task: UpsampledHead(task.num_outputs, size), tuple(image.shape)
        )
        return DatasetBundle(train, val, test, list(self.folders.values()), tuple(image.shape), network)


@DATASETS.register("nyuv2", "NYUv2: 13-class segmentation, depth, surface normals (.npy layout; tier 2)")
class NYUv2(DenseNpyDataset):
    folders = {
        "label": TaskSpec("segmentation", "segmentation", 13),
        "depth": TaskSpec("depth", "depth"),
        "normal": TaskSpec("normal", "normals"),
    }
    obtain = "the MTAN repository's preprocessed NYUv2 (288x384)"

    def __init__(self, root: str = "data/nyuv2", val_fraction: float = 0.1):
        super().__init__(root, val_fraction)


@DATASETS.register("cityscapes", "Cityscapes: 7-class segmentation and depth (.npy layout; tier 2)")
class Cityscapes(DenseNpyDataset):
    folders = {"label_7": TaskSpec("segmentation", "segmentation", 7), "depth": TaskSpec("depth", "depth")}
    obtain = "the MTAN repository's preprocessed Cityscapes (128x256)"

    def __init__(self, root: str = "data/cityscapes", val_fraction: float = 0.1):
        super().__init__(root, val_fraction)
