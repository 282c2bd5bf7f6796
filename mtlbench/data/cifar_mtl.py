"""CIFAR-MTL (SRDML's protocol): CIFAR-10 as 10 one-vs-rest binary tasks.

The first 2,000 training images of each class (20,000), the 10,000 test images; images resized to 64x64
inside the network; VGG16 trunk (torchvision) with per-task 2048 -> 128 -> 1 heads. The layout is
torchvision's: `root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}` (python pickles).
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlbench.data import DatasetBundle, DatasetProvider, TensorTaskData
from mtlbench.data.files import check_files
from mtlbench.data.safe_pickle import ForbiddenGlobal, restricted_load, restricted_pickle_in
from mtlbench.errors import MtlbenchError
from mtlbench.nets import Network
from mtlbench.registry import DATASETS
from mtlbench.tasks import TaskSpec

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
VALIDATION_SEED = 688
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@functools.cache
def cifar10_classes() -> tuple[Any, Any]:
    """(torchvision's CIFAR10, its subclass whose MD5 checks are presence checks); imported on first use so
    that registering the dataset costs no torchvision import."""
    from torchvision.datasets import CIFAR10

    class CIFAR10Files(CIFAR10):
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
                data = restricted_load(fh, encoding="latin1")
            self.classes = data[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR10, CIFAR10Files


def vgg16_stages(pretrained: str) -> nn.Sequential:
    """VGG16's five conv blocks (a stage each) after resizing 32x32 inputs to 64x64. The encoder ends in the
    block5_pool map (512 x 2 x 2), the shared feature map on which the official SRDML code takes saliencies
    and sums them over space; the heads flatten it (2048)."""
    from torchvision.models import vgg16

    features = vgg16(weights=None).features
    if pretrained:
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        features.load_state_dict(
            {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        )
    cuts = [i + 1 for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
    blocks, start = [], 0
    for end in cuts:
        blocks.append(nn.Sequential(*features[start:end]))
        start = end
    blocks[0] = nn.Sequential(nn.Upsample(size=(64, 64), mode="bilinear", align_corners=False), *blocks[0])
    return nn.Sequential(*blocks)


def cifar_head(task: TaskSpec) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(2048, 128), nn.ReLU(), nn.Linear(128, task.num_outputs))


@DATASETS.register("cifar_mtl", "CIFAR-MTL: CIFAR-10 as 10 one-vs-rest binary tasks, VGG16 (SRDML; tier 1)")
class CifarMTL(DatasetProvider):
    train_defaults = {"epochs": 60, "batch_size": 200, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        per_class: int = 2000,
        val_fraction: float = 0.1,
        pretrained: str = "",
        normalize: bool = False,
    ):
        self.root, self.download, self.per_class, self.normalize = Path(root), download, per_class, normalize
        self.val_fraction, self.pretrained = val_fraction, pretrained

    def layout(self) -> str:
        return (
            f"{self.root / 'cifar-10-batches-py'} with data_batch_1..5, test_batch and batches.meta "
            f"(torchvision's CIFAR-10 python version; `--set dataset.download=true` fetches it)"
        )

    def check(self) -> tuple[list[str], list[str]]:
        CIFAR10, _ = cifar10_classes()
        folder = self.root / CIFAR10.base_folder
        files = [(folder / n, m) for n, m in CIFAR10.train_list + CIFAR10.test_list]
        files.append((folder / CIFAR10.meta["filename"], CIFAR10.meta["md5"]))
        problems, warnings = check_files(files, self.layout())
        for path, _ in files:  # parse each file as data (nothing in it can run): a checksum alone proves little
            if path.is_file():
                try:
                    with open(path, "rb") as fh:
                        restricted_load(fh, encoding="latin1")
                except ForbiddenGlobal as exc:
                    problems.append(f"{path}: not plain data ({exc}); refused, nothing was run")
                except (pickle.UnpicklingError, EOFError, ValueError) as exc:
                    problems.append(f"{path}: unreadable ({exc})")
        if not problems:  # then read them as training does: parsable files of the wrong content fail here
            for train in (True, False):
                try:
                    self._split(train=train)
                except MtlbenchError as exc:
                    problems.append(str(exc))
        return problems, warnings

    def _split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        import torchvision.datasets.cifar as torchvision_cifar

        original, files_only = cifar10_classes()
        try:
            with restricted_pickle_in(torchvision_cifar):  # the batches are pickles: parse them, run nothing
                ds = (original if self.download else files_only)(str(self.root), train=train, download=self.download)
        except ForbiddenGlobal as exc:
            raise MtlbenchError(
                f"refused to load CIFAR-10 from {self.root / 'cifar-10-batches-py'}: a batch file "
                f"is not plain data ({exc}); nothing was run. Replace the folder with the "
                f"official files"
            ) from None
        except (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            raise MtlbenchError(f"CIFAR-10 not found or unreadable ({exc}); expected {self.layout()}") from None
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255.0  # the official input: [0, 1]
        if self.normalize:
            x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        return x, torch.tensor(ds.targets)

    def load(self, data_seed: int) -> DatasetBundle:
        x, y = self._split(train=True)
        keep = torch.cat([torch.nonzero(y == c)[: self.per_class, 0] for c in range(10)]).sort().values
        x, y = x[keep], y[keep]
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(VALIDATION_SEED))
        n_val = max(1, int(round(self.val_fraction * len(x))))
        va, tr = perm[:n_val], perm[n_val:]
        test_x, test_y = self._split(train=False)
        one_vs_rest = lambda labels: [(labels == c).long() for c in range(10)]  # noqa: E731
        tasks = [TaskSpec(n, "binary") for n in CLASSES]
        network = Network(lambda: vgg16_stages(self.pretrained), cifar_head, (3, 32, 32))
        return DatasetBundle(
            TensorTaskData(x[tr], one_vs_rest(y[tr])),
            TensorTaskData(x[va], one_vs_rest(y[va])),
            TensorTaskData(test_x, one_vs_rest(test_y)),
            tasks,
            (3, 32, 32),
            network,
            info={"pretrained": self.pretrained or "none (random initialisation)"},
        )
