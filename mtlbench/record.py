"""The run record: one JSON per run, everything aggregation needs (it never re-trains or reads MLflow)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, TypedDict, Union, cast, get_args, get_origin, get_type_hints, is_typeddict

import mtlbench
from mtlbench.errors import MtlbenchError

# metrics a finished run may leave undefined (NaN): an AUC on a split with one class; Delta_m leaves them out
MAY_BE_UNDEFINED = frozenset({"auc"})
MAX_RECORD_BYTES = 64 * 2**20  # a 300-epoch record with its history is well under 1 MB
RECORD_VERSION = 1  # the layout below; a record without `record_version` predates the field and has this layout

TaskMetrics = dict[str, dict[str, float]]  # task -> metric -> value


class MethodState(TypedDict, total=False):
    """What a method learned, in human-readable form: every key a built-in method writes, declared here (a test
    checks each registered method against this list; a new method adds its keys here)."""

    relation: list[list[float]]  # SRDML: the learned task-relation matrix omega (T x T)
    relation_tasks: list[str]  # the task order of `relation`
    gates: dict[str, Any]  # DSMTL: per task, {public, private} (IL/JL) or one public weight per stage (AL)
    architecture: dict[str, list[str]]  # DSMTL-AL after derive: per task, "public" or "private" per stage
    task_weights: dict[str, float]  # the task weights a rule used (mean over the last epoch) or chose
    cross_stitch: list[Any]  # cross-stitch units' mixing matrices
    extra: dict[str, Any]  # a user method's own state (JSON), under keys of its choosing
    tuning: dict[str, Any]  # static_weights: the candidates tried and their validation scores


class EpochEntry(TypedDict, total=False):
    """One epoch of a run's history."""

    epoch: int
    train_loss: list[float]
    val: TaskMetrics
    val_loss: list[float]
    rule: dict[str, Any]  # what the update rule logs per epoch (task weights, stage)


@dataclass
class Process:
    """The training process that wrote the record (one per job; a job can train several seeds)."""

    pid: int
    started_at: float
    threads: int = 1


@dataclass
class Timing:
    train_seconds: float = 0.0  # every stage included (DSMTL-AL's search)
    seconds_per_epoch: float | None = None
    seconds_per_step: float | None = None
    steps: int = 0
    epoch_seconds: list[float] = field(default_factory=list)
    breakdown: dict[str, float] = field(default_factory=dict)  # seconds by kind (startup, data, training, ...)
    started_at: float | None = None
    ended_at: float | None = None
    process: Process | None = None


@dataclass
class Params:
    total: int = 0  # every trained parameter, the update rule's own included
    inference: int = 0  # what a prediction uses


@dataclass
class Metrics:
    val: TaskMetrics = field(default_factory=dict)  # at the selected epoch
    test: TaskMetrics = field(default_factory=dict)  # the selected epoch's model on the test split
    test_last: TaskMetrics = field(default_factory=dict)  # the last epoch's model on the test split

    def split(self, name: str) -> TaskMetrics:
        if name not in SPLITS:
            raise KeyError(f"no split {name!r} in a run record (splits: {', '.join(SPLITS)})")
        return cast(TaskMetrics, getattr(self, name))


SPLITS = ("val", "test", "test_last")


@dataclass
class Schedule:
    epochs_total: int  # the epochs the loop planned: the budget, plus a stage outside it (DSMTL-AL's search)
    first_selectable_epoch: int = 0
    stages: dict[str, int] = field(default_factory=dict)  # stage name -> epochs, in order


@dataclass
class Convergence:
    """Whether the run was still improving at the end of its budget, by the rule of mtlbench.convergence."""

    still_improving: bool
    window: int  # epochs of the fitted tail
    relative_fall: float  # the fitted fall of the summed validation loss over the window, as a share of its mean
    p: float  # one-sided p of a falling slope against the tail's scatter
    rule: str = ""


@dataclass
class RunRecord:
    """One training run: everything aggregation, figures, efficiency and tracking need (none of them re-trains
    or reads MLflow). Written and read only through `write` / `read` (`to_json` / `from_json`)."""

    dataset: str
    method: str
    seed: int
    status: str  # ok | diverged | incomplete
    data_seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    selected_epoch: int | None = None
    epochs_completed: int = 0
    metrics: Metrics = field(default_factory=Metrics)
    directions: dict[str, dict[str, bool]] = field(default_factory=dict)  # task -> metric -> higher is better
    timing: Timing = field(default_factory=Timing)
    params: Params = field(default_factory=Params)
    peak_memory_mb: float | None = None
    peak_memory_kind: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str = "unknown"
    device: str = "cpu"
    host: dict[str, Any] = field(default_factory=dict)
    method_state: MethodState = field(default_factory=lambda: MethodState())
    history: list[EpochEntry] = field(default_factory=list)
    task_info: dict[str, Any] = field(default_factory=dict)  # e.g. the ground-truth task relations
    mlflow_run_id: str | None = None
    schedule: Schedule | None = None
    convergence: Convergence | None = None  # None: not judged (a diverged run, a tail shorter than the rule's)
    record_version: int = RECORD_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def variant(self) -> str:
        """The protocol or choice value the run belongs to ('' = the config's own runs; mtlbench.protocols)."""
        return str(self.config.get("variant", ""))

    @property
    def epochs_planned(self) -> int:
        """The epochs the loop planned: `train.epochs`, plus a stage outside the budget (DSMTL-AL's search)."""
        if self.schedule is not None:
            return self.schedule.epochs_total
        return int(self.config.get("train", {}).get("epochs", len(self.history)))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {"record_version": data.pop("record_version"), **data}

    def text(self) -> str:
        return json_text(self.to_json())

    def write(self, path: Path) -> str:
        """Write atomically; returns the text written (a final checkpoint keeps it byte for byte)."""
        text = self.text()
        write_text_atomic(Path(path), text)
        return text

    @classmethod
    def from_json(cls, data: Any, source: str = "run record") -> RunRecord:
        """A record from its JSON form; anything else ends in one message naming `source`."""
        if not isinstance(data, dict):
            raise MtlbenchError(f"{source} is not a run record (not a JSON object); delete it and rerun to retrain")
        version = data.get("record_version", RECORD_VERSION)
        if type(version) is not int or version < 1:
            raise MtlbenchError(f"{source} has record_version {version!r}, not a version number; delete it and rerun")
        if version > RECORD_VERSION:
            raise MtlbenchError(
                f"{source} is a version-{version} run record, newer than this mtlbench reads ({RECORD_VERSION}): "
                f"update mtlbench, or delete it and rerun"
            )
        missing = [k for k in ("dataset", "method", "seed", "status") if k not in data]
        if missing:
            raise MtlbenchError(
                f"{source} is not a run record (missing {', '.join(missing)}); delete it and rerun to retrain that run"
            )
        try:
            record = _build(cls, data)
        except (TypeError, ValueError) as exc:
            raise MtlbenchError(f"{source} is not a readable run record ({exc}); delete it and rerun") from None
        problem = record.metric_problem()
        if problem:
            raise MtlbenchError(f"{source}: {problem}; delete it and rerun to retrain that run")
        return record

    def metric_problem(self) -> str | None:
        """Why the metrics cannot be aggregated as they are: an `ok` run with a non-finite metric (it would
        change other seeds' Delta_m), or a metric without its direction; None when they can."""
        for split in SPLITS:
            for task, values in getattr(self.metrics, split).items():
                for name, value in values.items():
                    if name not in self.directions.get(task, {}):
                        return f"metric {split}.{task}.{name} has no direction (directions.{task})"
                    undefined_allowed = math.isnan(value) and name in MAY_BE_UNDEFINED
                    if self.ok and not math.isfinite(value) and not undefined_allowed:
                        return f"status 'ok' with a non-finite metric {split}.{task}.{name} = {value}"
        return None

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        try:
            size = Path(path).stat().st_size
            if size > MAX_RECORD_BYTES:
                raise MtlbenchError(
                    f"{path} is {size:,} bytes, more than a run record can be ({MAX_RECORD_BYTES:,}); "
                    "delete it and rerun to retrain that run"
                )
            data = json.loads(Path(path).read_text())
        except RecursionError:
            raise MtlbenchError(f"{path} is nested too deeply to be a run record; delete it and rerun") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MtlbenchError(
                f"{path} is not a readable run record ({exc}); delete it and rerun to retrain that run"
            ) from None
        return cls.from_json(data, str(path))


def _build(cls: type, data: dict[str, Any]) -> Any:
    """A dataclass from its JSON form, nested dataclasses included; an unknown key is an error (never dropped)."""
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} in {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        args = get_args(hints[name])
        nested = [t for t in (hints[name], *args) if isinstance(t, type) and is_dataclass(t)]
        if nested and isinstance(value, dict):
            value = _build(nested[0], value)
        elif nested and not (value is None and type(None) in args):
            raise TypeError(f"{cls.__name__}.{name} is {type(value).__name__}, not an object")
        elif not nested and not _conforms(value, hints[name]):
            raise TypeError(f"{cls.__name__}.{name} is {_shape(value)}, not {_hint_name(hints[name])}")
        kwargs[name] = value
    return cls(**kwargs)


def _conforms(value: Any, hint: Any) -> bool:
    """Whether JSON data has the shape of a type hint (str, int, float, bool, None, Any, unions, dict[K, V],
    list[V], TypedDicts as objects); the record's typed fields are checked on reading, not when first used."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(v, args[1]) for v in value.values())
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if is_typeddict(hint):
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _shape(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _hint_name(hint: Any) -> str:
    name = hint.__name__ if isinstance(hint, type) and not get_args(hint) else str(hint)
    return name.replace("typing.", "").replace("mtlbench.record.", "")


def process_age() -> float:
    """Seconds since this process started (interpreter start-up and imports included); 0 where unknown."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return max(0.0, time.time() - (boot + start))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


def cpu_model() -> str:
    """The CPU's model name (results in float32 can differ between CPU kinds: see results/reference/README.md)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict[str, object]:
    """What besides the config decides a CPU run's last bits: thread count, CPU model and math backends."""
    import torch

    return {
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "openmp": torch.backends.openmp.is_available(),
    }


def versions() -> dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "mtlbench": mtlbench.__version__}


def git_commit() -> str:
    """Commit of the suite's source tree (with `-dirty` when it has uncommitted changes), or `unknown`."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n"


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json_text(data))


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file; a failed write (a full disk) leaves neither it nor a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MtlbenchError(f"cannot write {path} ({exc.strerror or exc}); is the disk full?") from None
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # a tensor or a NumPy value
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
