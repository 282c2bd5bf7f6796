"""The resolved run config: one nested dict, every value typed and defaulted, and a hash of it.

Precedence (later wins): component defaults (constructor signatures) < dataset training defaults <
the named method's defaults < the method's per-dataset paper defaults < the user's overrides.
Sections: `dataset`, `arch`, `rule`, `train`, `tracking`, plus `method`, `seed` and `data_seed`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any, Literal

from mtlbench.errors import MtlbenchError
from mtlbench.params import NON_NEGATIVE, POSITIVE, SEED, Interval, Param, coerce, signature_params


@dataclass
class TrainConfig:
    epochs: Annotated[int, Interval(low=1)] = 10
    batch_size: Annotated[int, NON_NEGATIVE] = 256  # 0: the whole training split as one batch (full batch)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: Annotated[float, POSITIVE] = 1e-3
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    momentum: Annotated[float, Interval(low=0, high=1, high_open=True)] = 0.0
    lr_step: Annotated[int, NON_NEGATIVE] = 0  # StepLR period in epochs; 0 keeps the lr constant
    lr_gamma: Annotated[float, POSITIVE] = 0.5
    selection: Literal["loss", "metric"] = "loss"  # what picks the epoch on validation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # CPU threads of PyTorch: float sums are ordered by thread, so results depend on it (hashed); the pipeline's
    # jobs and a hand run both use this value
    threads: Annotated[int, Interval(low=1)] = 1
    # memory layout of conv weights and activations: channels_last makes PyTorch's CPU convolutions (oneDNN)
    # about twice as fast on MultiLeNet (measured, docs/fidelity.md); auto = channels_last on CPU, the
    # default layout elsewhere. Float sums are ordered differently by layout, so it is hashed
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    progress: Literal["auto", "on", "off"] = "auto"
    checkpoint: bool = True
    # 0: after every epoch; else at most one per this many seconds (and the last)
    checkpoint_every_s: Annotated[float, NON_NEGATIVE] = 0.0


@dataclass
class TrackingConfig:
    enabled: bool = True
    # true: the training process logs while it trains; false: only the run record is written, and
    # `mtlbench tracking log` (the pipeline's train_tracking_log rule) logs it afterwards, same content
    live: bool = True
    uri: str = "sqlite:///results/mlflow.db"
    artifacts: str = "results/mlartifacts"
    experiment: str = "mtlbench"
    # per-epoch metrics every k epochs; 0 = automatic, at most ~50 points per metric (long tier-0 runs of
    # tiny epochs would otherwise spend more time writing SQLite rows than training)
    log_every: Annotated[int, NON_NEGATIVE] = 0


# Keys that change how a run is executed or observed, not what it computes: left out of the hash.
UNHASHED = {("train", "device"), ("train", "progress"), ("train", "checkpoint"), ("train", "checkpoint_every_s")}


def dataclass_params(cls: type) -> dict[str, Param]:
    return signature_params(cls)


def section_params(cfg: dict[str, Any], section: str) -> dict[str, Param]:
    """Typed parameters of one section of a config (as far as the section's component is known)."""
    from mtlbench.method import get_method  # noqa: F401  (registers user components on demand)
    from mtlbench.registry import ARCHITECTURES, DATASETS, UPDATE_RULES

    if section == "train":
        return dataclass_params(TrainConfig)
    if section == "tracking":
        return dataclass_params(TrackingConfig)
    name, skip = cfg[section]["name"], ("tasks", "network")
    if section == "dataset":
        return signature_params(DATASETS.get(name), skip=skip)
    return signature_params((ARCHITECTURES if section == "arch" else UPDATE_RULES).get(name), skip=skip)


TOP_LEVEL = {"seed": Annotated[int, SEED], "data_seed": Annotated[int, SEED]}
SECTIONS = ("dataset", "arch", "rule", "train", "tracking")


def set_key(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Apply one dotted override, checking that the key exists and the value has the declared type."""
    if key in TOP_LEVEL:
        cfg[key] = coerce(key, value, TOP_LEVEL[key])
        return
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        keys = sorted(TOP_LEVEL) + [f"{s}.<key>" for s in SECTIONS]
        raise MtlbenchError(f"unknown config key {key!r}; valid keys: {', '.join(keys)}")
    params = section_params(cfg, section)
    if name not in params:
        valid = ", ".join(f"{section}.{p}" for p in sorted(params)) or "(none)"
        raise MtlbenchError(f"unknown config key {key!r}; valid keys in {section!r}: {valid}")
    cfg[section][name] = coerce(key, value, params[name].annotation)


def resolve_config(
    dataset: str,
    method: str,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    data_seed: int = 0,
) -> dict[str, Any]:
    from mtlbench.method import get_method
    from mtlbench.registry import ARCHITECTURES, DATASETS, UPDATE_RULES

    spec = get_method(method)
    ds_cls = DATASETS.get(dataset)
    arch_cls = ARCHITECTURES.get(spec.architecture)
    rule_cls = UPDATE_RULES.get(spec.update_rule)
    skip = ("tasks", "network")
    cfg: dict[str, Any] = {
        "dataset": {"name": dataset, **{k: p.default for k, p in signature_params(ds_cls).items()}},
        "method": method,
        "arch": {"name": spec.architecture, **{k: p.default for k, p in signature_params(arch_cls, skip).items()}},
        "rule": {"name": spec.update_rule, **{k: p.default for k, p in signature_params(rule_cls, skip).items()}},
        "train": asdict(TrainConfig()),
        "tracking": asdict(TrackingConfig()),
        "seed": coerce("seed", seed, TOP_LEVEL["seed"]),
        "data_seed": coerce("data_seed", data_seed, TOP_LEVEL["data_seed"]),
    }
    layers: list[dict[str, Any]] = [
        {f"train.{k}": v for k, v in ds_cls.train_defaults.items()},
        {f"arch.{k}": v for k, v in spec.arch_params.items()},
        {f"rule.{k}": v for k, v in spec.rule_params.items()},
        {f"train.{k}": v for k, v in spec.train_params.items()},
        spec.dataset_overrides.get(dataset, {}),
        overrides or {},
    ]
    for layer in layers:
        for key, value in layer.items():
            if key in ("arch.name", "rule.name"):
                _switch_component(cfg, key, value)
            else:
                set_key(cfg, key, value)
    check_train_values(cfg["train"])
    return cfg


def _switch_component(cfg: dict[str, Any], key: str, name: Any) -> None:
    """`arch.name` / `rule.name` overrides swap the component and reset its section to its defaults."""
    from mtlbench.registry import ARCHITECTURES, UPDATE_RULES

    section = key.split(".")[0]
    registry = ARCHITECTURES if section == "arch" else UPDATE_RULES
    cls = registry.get(str(name))
    cfg[section] = {"name": name, **{k: p.default for k, p in signature_params(cls, ("tasks", "network")).items()}}


def check_train_values(train: dict[str, Any]) -> None:
    """Values that type-check but cannot train: one clear message instead of an empty or broken run (numbers
    are checked against their declared domains when set: TrainConfig's `Interval`s)."""
    check_device_name(train["device"])


DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def check_device_name(name: str) -> None:
    if not DEVICE_NAME.match(name):
        raise MtlbenchError(
            f"train.device={name!r} is not a device this suite runs on; use auto, cpu, cuda, cuda:N or mps"
        )


def component_kwargs(section: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k != "name"}


def config_hash(cfg: dict[str, Any]) -> str:
    """Hash of what determines the results (not where or how visibly they are computed)."""
    scientific = {k: v for k, v in cfg.items() if k != "tracking"}
    scientific["train"] = {k: v for k, v in cfg["train"].items() if ("train", k) not in UNHASHED}
    blob = json.dumps(scientific, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MtlbenchError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def train_config(cfg: dict[str, Any]) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in cfg["train"].items() if k in names})
