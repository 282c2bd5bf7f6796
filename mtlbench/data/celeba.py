"""CelebA: 40 binary attributes on the official split (MGDA / SRDML protocol), 64x64 images.

Layout (torchvision's): `root/celeba/{img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt,
identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt}`. Network (`backbone`): MGDA's
ResNet-18 variant with two-way heads (default, as in the MGDA / SRDML CelebA rows), or torchvision's
ResNet-18 with one-logit heads; random initialisation. Metrics per task: accuracy, AUC,
precision, recall (SRDML reports their averages over the tasks).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from mtlbench.data import DatasetBundle, DatasetProvider
from mtlbench.data.files import check_files
from mtlbench.errors import MtlbenchError
from mtlbench.nets import Network
from mtlbench.registry import DATASETS
from mtlbench.tasks import TaskSpec


@functools.cache
def celeba_classes() -> tuple[Any, Any]:
    """(torchvision's CelebA, its subclass whose MD5 checks are presence checks)."""
    from torchvision.datasets import CelebA

    class CelebAFiles(CelebA):
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            listed = [folder / name for _, _, name in self.file_list if not name.endswith((".zip", ".7z"))]
            return all(p.is_file() for p in listed) and (folder / "img_align_celeba").is_dir()

    return CelebA, CelebAFiles


class AttributeTasks(Dataset):
    """torchvision's CelebA items as (image, [attribute_t for each of the 40 tasks])."""

    def __init__(self, celeba: Any):
        self.celeba = celeba

    def __len__(self) -> int:
        return len(self.celeba)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        image, attr = self.celeba[i]
        return image, list(attr.long().unbind(0))


def resnet18_stages() -> nn.Sequential:
    """torchvision's ResNet-18 up to its global average pool (a 512 x 1 x 1 map; the heads flatten it)."""
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    return nn.Sequential(stem, net.layer2, net.layer3, nn.Sequential(net.layer4, net.avgpool))


def mgda_resnet18_stages() -> nn.Sequential:
    """MGDA's CelebA encoder (official multi_faces_resnet.py): a CIFAR-style ResNet-18 with a 3x3 stride-1
    stem and no max-pool, BasicBlock stages of widths 64 / 128 / 256 / 512 and strides 1 / 2 / 2 / 2, then a
    4x4 average pool: a 512 x 2 x 2 map at 64x64 input, flattened by the heads to 2048 features."""
    from torchvision.models.resnet import BasicBlock

    def stage(inp: int, out: int, stride: int) -> nn.Sequential:
        shortcut = (
            None
            if stride == 1 and inp == out
            else nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        )
        return nn.Sequential(BasicBlock(inp, out, stride, shortcut), BasicBlock(out, out))

    stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), stage(64, 64, 1))
    return nn.Sequential(
        stem, stage(64, 128, 2), stage(128, 256, 2), nn.Sequential(stage(256, 512, 2), nn.AvgPool2d(4))
    )


class TwoWayHead(nn.Module):
    """MGDA's attribute head: a linear layer to two class logits (softmax over {absent, present}). Two-way
    cross-entropy equals binary cross-entropy on the logit difference, so the head returns z_present -
    z_absent and the task keeps its binary metrics (AUC, precision, recall)."""

    def __init__(self, features: int):
        super().__init__()
        self.flatten, self.linear = nn.Flatten(), nn.Linear(features, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(self.flatten(x))
        return z[:, 1:] - z[:, :1]


BACKBONES = {
    "mgda_resnet18": (mgda_resnet18_stages, lambda task: TwoWayHead(2048)),
    "resnet18": (resnet18_stages, lambda task: nn.Sequential(nn.Flatten(), nn.Linear(512, task.num_outputs))),
}


@DATASETS.register("celeba", "CelebA: 40 binary attributes, official split, 64x64, MGDA's ResNet-18 (tier 1)")
class CelebAttributes(DatasetProvider):
    train_defaults = {"epochs": 30, "batch_size": 256, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        image_size: int = 64,
        backbone: Literal["mgda_resnet18", "resnet18"] = "mgda_resnet18",
    ):
        self.root, self.download, self.image_size, self.backbone = Path(root), download, image_size, backbone

    def layout(self) -> str:
        return (
            f"{self.root / 'celeba'} with img_align_celeba/ and list_attr_celeba.txt, list_eval_partition.txt, "
            f"identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt (torchvision's CelebA; "
            f"the files are on the CelebA website / Google Drive)"
        )

    def check(self) -> tuple[list[str], list[str]]:
        original, _ = celeba_classes()
        folder = self.root / original.base_folder
        files = [(folder / name, digest) for _, digest, name in original.file_list if not name.endswith(".zip")]
        problems, warnings = check_files(files, self.layout())
        if not (folder / "img_align_celeba").is_dir():
            problems.insert(0, f"missing {folder / 'img_align_celeba'}/")
        return problems, warnings

    def load(self, data_seed: int) -> DatasetBundle:
        from torchvision import transforms

        original, files_only = celeba_classes()
        transform = transforms.Compose(
            [
                transforms.Resize((self.image_size, self.image_size)),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )
        cls = original if self.download else files_only
        try:
            splits = {
                s: cls(str(self.root), split=s, target_type="attr", transform=transform, download=self.download)
                for s in ("train", "valid", "test")
            }
        except (RuntimeError, OSError, ValueError) as exc:
            raise MtlbenchError(f"CelebA not found or unreadable ({exc}); expected {self.layout()}") from None
        names = [n for n in splits["train"].attr_names if n]
        tasks = [TaskSpec(n, "binary") for n in names]
        encoder, head = BACKBONES[self.backbone]
        network = Network(encoder, head, (3, self.image_size, self.image_size))
        train, val, test = (AttributeTasks(splits[s]) for s in ("train", "valid", "test"))
        return DatasetBundle(train, val, test, tasks, (3, self.image_size, self.image_size), network)
