"""Office-31 and Office-Home: one task per domain, each a classification over the same classes.

Layout: `root/<domain>/<class>/<image>` (Office-Home) or `root/<domain>/images/<class>/<image>` (Office-31).
Optional split lists `root/splits/<domain>_{train,val,test}.txt` with lines "<path relative to root> <label>";
without them each domain is split 60/20/20 with seed 688. A sample belongs to its domain's task only (the other
tasks see label -1 and ignore it), so one batch can mix domains. Network (DSMTL's Office setting): a ResNet
encoder followed by a 1024-d hidden layer, one linear classifier per domain.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from mtlbench.data import DatasetBundle, DatasetProvider
from mtlbench.data.files import inside
from mtlbench.errors import MtlbenchError
from mtlbench.nets import Network
from mtlbench.registry import DATASETS
from mtlbench.tasks import TaskSpec

SPLIT_SEED = 688
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
Sample = tuple[Path, int, int]  # image path, domain index, class label


class DomainImages(Dataset):
    def __init__(self, samples: list[Sample], n_domains: int, image_size: int):
        from torchvision import transforms

        self.samples, self.n_domains = samples, n_domains
        self.transform = transforms.Compose(
            [
                transforms.Resize((image_size, image_size)),
                transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        from PIL import Image

        path, domain, label = self.samples[i]
        image = self.transform(Image.open(path).convert("RGB"))
        return image, [torch.tensor(label if d == domain else -1) for d in range(self.n_domains)]


def resnet_hidden_stages(backbone: str) -> nn.Sequential:
    from torchvision import models

    net = getattr(models, backbone)(weights=None)
    width = net.fc.in_features
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    hidden = nn.Sequential(net.avgpool, nn.Flatten(), nn.Linear(width, 1024), nn.ReLU())
    return nn.Sequential(stem, net.layer2, net.layer3, net.layer4, hidden)


class OfficeDomains(DatasetProvider):
    domains: ClassVar[tuple[str, ...]]
    obtain: ClassVar[str]
    train_defaults = {"epochs": 50, "batch_size": 64, "optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-5}

    def __init__(
        self, root: str = "data/office", image_size: int = 224, backbone: Literal["resnet50", "resnet18"] = "resnet50"
    ):
        self.root, self.image_size, self.backbone = Path(root), image_size, backbone

    def layout(self) -> str:
        return (
            f"{self.root}/<domain>/[images/]<class>/<image> for the domains {', '.join(self.domains)}, "
            f"optionally {self.root}/splits/<domain>_{{train,val,test}}.txt; obtain the images from {self.obtain}"
        )

    def domain_dir(self, domain: str) -> Path:
        base = self.root / domain
        return base / "images" if (base / "images").is_dir() else base

    def classes(self) -> list[str]:
        return sorted(p.name for p in self.domain_dir(self.domains[0]).iterdir() if p.is_dir())

    def check(self) -> tuple[list[str], list[str]]:
        problems = [f"missing domain folder {self.root / d}" for d in self.domains if not (self.root / d).is_dir()]
        if not problems:
            reference = self.classes()
            for d in self.domains:
                classes = sorted(p.name for p in self.domain_dir(d).iterdir() if p.is_dir())
                if classes != reference:
                    problems.append(
                        f"{self.domain_dir(d)} has {len(classes)} class folders, "
                        f"{self.domain_dir(self.domains[0])} has {len(reference)}"
                    )
                elif not any(p.suffix.lower() in IMAGE_SUFFIXES for p in self.domain_dir(d).rglob("*")):
                    problems.append(f"no images under {self.domain_dir(d)}")
            problems += self._check_lists(len(reference))
        if problems:
            problems.append(f"expected {self.layout()}")
        return problems, []

    def _check_lists(self, n_classes: int) -> list[str]:
        out = []
        for d in self.domains:
            for split in ("train", "val", "test"):
                path = self.root / "splits" / f"{d}_{split}.txt"
                if not path.exists():
                    continue
                try:
                    rows = self._read_list(path)
                except MtlbenchError as exc:
                    out.append(str(exc))
                    continue
                for line_no, (image, label) in enumerate(rows, 1):
                    if not image.is_file():
                        out.append(f"{path}:{line_no}: no image {image}")
                    elif not 0 <= label < n_classes:
                        out.append(f"{path}:{line_no}: label {label} outside 0..{n_classes - 1}")
        return out[:20]

    def _read_list(self, path: Path) -> list[tuple[Path, int]]:
        """Lines '<path relative to root> <label>'; a malformed line, or a path outside the dataset folder, is
        one error naming the file and line."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise MtlbenchError(f"cannot read the split list {path} ({exc})") from None
        rows = []
        for line_no, line in enumerate(lines, 1):
            fields = line.rsplit(maxsplit=1)
            if not line.strip():
                continue
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise MtlbenchError(f"{path}:{line_no}: expected '<image path> <label>', got {line[:80]!r}")
            rows.append((inside(self.root, fields[0], f"{path}:{line_no}"), int(fields[1])))
        return rows

    def _splits(self, classes: list[str]) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
        g = torch.Generator().manual_seed(SPLIT_SEED)
        for d_idx, d in enumerate(self.domains):
            lists = {s: self.root / "splits" / f"{d}_{s}.txt" for s in out}
            if all(p.exists() for p in lists.values()):
                for split, path in lists.items():
                    out[split] += [(image, d_idx, label) for image, label in self._read_list(path)]
                continue
            samples = [
                (p, d_idx, c_idx)
                for c_idx, c in enumerate(classes)
                for p in sorted((self.domain_dir(d) / c).iterdir())
                if p.suffix.lower() in IMAGE_SUFFIXES
            ]
            perm = torch.randperm(len(samples), generator=g).tolist()
            n_train, n_val = int(0.6 * len(samples)), int(0.2 * len(samples))
            out["train"] += [samples[i] for i in perm[:n_train]]
            out["val"] += [samples[i] for i in perm[n_train : n_train + n_val]]
            out["test"] += [samples[i] for i in perm[n_train + n_val :]]
        return out

    def load(self, data_seed: int) -> DatasetBundle:
        problems, _ = self.check()
        if problems:
            raise MtlbenchError(f"{type(self).__name__} data is missing or malformed: {'; '.join(problems[:4])}")
        classes = self.classes()
        splits = self._splits(classes)
        tasks = [TaskSpec(d, "classification", len(classes)) for d in self.domains]
        shape = (3, self.image_size, self.image_size)
        network = Network(
            lambda: resnet_hidden_stages(self.backbone), lambda task: nn.Linear(1024, task.num_outputs), shape
        )
        data = {s: DomainImages(v, len(self.domains), self.image_size) for s, v in splits.items()}
        return DatasetBundle(data["train"], data["val"], data["test"], tasks, shape, network, info={"classes": classes})


@DATASETS.register("office31", "Office-31: amazon, dslr, webcam as tasks, 31 classes (tier 2)")
class Office31(OfficeDomains):
    domains = ("amazon", "dslr", "webcam")
    obtain = "the Office-31 release (Saenko et al. 2010)"

    def __init__(
        self, root: str = "data/office31", image_size: int = 224, backbone: Literal["resnet50", "resnet18"] = "resnet50"
    ):
        super().__init__(root, image_size, backbone)


@DATASETS.register("office_home", "Office-Home: Art, Clipart, Product, Real_World as tasks, 65 classes (tier 2)")
class OfficeHome(OfficeDomains):
    domains = ("Art", "Clipart", "Product", "Real_World")
    obtain = "the Office-Home release (Venkateswara et al. 2017)"

    def __init__(
        self,
        root: str = "data/office_home",
        image_size: int = 224,
        backbone: Literal["resnet50", "resnet18"] = "resnet50",
    ):
        super().__init__(root, image_size, backbone)
