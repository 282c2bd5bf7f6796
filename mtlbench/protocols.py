"""Protocols and reconstruction choices as data, and the runs they add (issue 23).

A claim's verdict depends on how the experiment is run. A protocols file (config/protocols.yaml, or a user's)
declares two things:

- `protocols`: named ways of running an experiment beside the suite's own, `fair` (the config's runs: validation
  selection, the budgets of docs/fidelity.md, all training data). Per dataset, a protocol lists the methods it
  trains, its `settings` (typed overrides, as `mtlbench train --set`, on top of the config's), `method_settings`
  per method on top of those, which test metrics it reports (`report: selected`, the epoch its selection picked,
  or `last`, the last epoch's, as a script that prints its final iterate) and a `note` (where the settings come
  from). `published` runs the papers' experiments the way their official code runs them.
- `official`: per dataset and method, a file of the official code's outputs (official/README.md), relative to
  the protocols file: the claims table shows the official code's own result beside the verdicts
  (mtlbench/official.py);
- `choices`: reconstruction choices, a setting where a paper is silent or where paper and code differ: the
  methods it applies to (`all`: every method), the `key` and either the `values` to try or `factors`, multiples
  of each run's own value (SRDML's lambda x {1, 1/10, 1/100}). A choice is swept under the `fair` protocol
  unless it names another.

The config's `robustness` block says which protocols and which choices the pipeline trains on which dataset
(`mtlbench.protocols.plan` turns it into runs); a value that resolves to the config a run already has (a factor
of 1) is that run, not a new one. The analysis (mtlbench/robustness.py) gives every claim a verdict per protocol
and per value of each choice that touches its method or baseline.

The file is user data: read with `yaml.safe_load` only, every key checked, every problem in one message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtlbench.claims_file import parse_user_yaml
from mtlbench.errors import MtlbenchError

FAIR = "fair"
REPORTS = ("selected", "last")
FILE_KEYS = {"protocols", "choices", "official"}
PROTOCOL_KEYS = {"description", "datasets"}
DATASET_KEYS = {"methods", "settings", "method_settings", "report", "note"}
CHOICE_KEYS = {"description", "methods", "key", "values", "factors", "protocol"}
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True)
class DatasetProtocol:
    """What a protocol runs on one dataset."""

    methods: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: str = "selected"
    note: str = ""

    def settings_for(self, method: str) -> dict[str, Any]:
        return {**self.settings, **self.method_settings.get(method, {})}


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    datasets: dict[str, DatasetProtocol]


@dataclass(frozen=True)
class Choice:
    name: str
    description: str
    methods: tuple[str, ...]
    key: str
    values: tuple[Any, ...] = ()
    factors: tuple[float, ...] = ()
    protocol: str = FAIR

    def applies_to(self, method: str) -> bool:
        return "all" in self.methods or method in self.methods

    def settings(self) -> list[tuple[str, Any]]:
        """(label, what to set): a value as written, or ('x0.1', factor 0.1) for a multiple of the run's value."""
        if self.factors:
            return [(f"x{f:g}", Factor(f)) for f in self.factors]
        return [(_label(v), v) for v in self.values]


@dataclass(frozen=True)
class Factor:
    value: float


@dataclass(frozen=True)
class Robustness:
    """A protocols file: the protocols beside `fair` and the reconstruction choices."""

    protocols: dict[str, Protocol]
    choices: dict[str, Choice]
    descriptions: dict[str, str]  # `fair`'s description too, when the file gives one
    official: dict[str, dict[str, str]] = field(default_factory=dict)  # dataset -> method -> outputs file


def _label(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


# --- reading ----------------------------------------------------------------------------------------------------
def _unknown(where: str, entry: Any, valid: set[str]) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{where}: must be a mapping, got {type(entry).__name__}"]
    unknown = sorted(map(str, set(entry) - valid))
    return (
        [f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(valid))}"]
        if unknown
        else []
    )


def _names(where: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        return [f"{where}: must be a name or a non-empty list of names, got {value!r:.60}"]
    return []


def _settings_problems(where: str, value: Any) -> list[str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and "." in k for k in value):
        return [f"{where}: must map section.key to a value (as `mtlbench train --set`), got {value!r:.60}"]
    nested = [k for k, v in value.items() if isinstance(v, (dict, list))]
    return [f"{where}.{k}: must be a single value" for k in nested]


def _dataset_problems(where: str, entry: Any) -> list[str]:
    problems = _unknown(where, entry, DATASET_KEYS)
    if problems:
        return problems
    problems += _names(f"{where}.methods", entry.get("methods"))
    problems += _settings_problems(f"{where}.settings", entry.get("settings", {}))
    per_method = entry.get("method_settings", {})
    if not isinstance(per_method, dict):
        problems.append(f"{where}.method_settings: must map a method to its settings")
    else:
        for method, settings in per_method.items():
            problems += _settings_problems(f"{where}.method_settings.{method}", settings)
    if entry.get("report", "selected") not in REPORTS:
        problems.append(f"{where}.report: {entry.get('report')!r} is none of {', '.join(REPORTS)}")
    return problems


def _entry_problems(kind: str, name: Any, entry: Any, keys: set[str]) -> list[str]:
    """A protocol's or a choice's name and keys: a name of letters, digits, '_' and '-', no unknown key."""
    if set(str(name)) - NAME_CHARS:
        return [f"{kind}s.{name}: a {kind}'s name is letters, digits, '_' and '-'"]
    return _unknown(f"{kind}s.{name}", entry, keys)


def _protocol_problems(name: str, entry: Any) -> list[str]:
    where = f"protocols.{name}"
    problems = _entry_problems("protocol", name, entry, PROTOCOL_KEYS)
    if problems:
        return problems
    datasets = entry.get("datasets", {})
    if name == FAIR and datasets:
        return [f"{where}.datasets: `fair` is the config's own runs; it takes a description only"]
    if not isinstance(datasets, dict):
        return [f"{where}.datasets: must map a dataset to what the protocol runs there"]
    for dataset, spec in datasets.items():
        problems += _dataset_problems(f"{where}.datasets.{dataset}", spec)
    return problems


def _choice_problems(name: str, entry: Any, protocols: set[str]) -> list[str]:
    where = f"choices.{name}"
    problems = _entry_problems("choice", name, entry, CHOICE_KEYS)
    if problems:
        return problems
    problems += _names(f"{where}.methods", entry.get("methods"))
    key = entry.get("key")
    if not (isinstance(key, str) and "." in key):
        problems.append(f"{where}.key: must be section.key (as `mtlbench train --set`), got {key!r:.60}")
    has_values, has_factors = "values" in entry, "factors" in entry
    if has_values == has_factors:
        problems.append(f"{where}: give either `values` or `factors`")
    tried = entry.get("values", entry.get("factors"))
    if not isinstance(tried, list) or len(tried) < 2 or any(isinstance(v, (dict, list)) for v in tried):
        problems.append(f"{where}: `values` / `factors` must list at least two single values")
    elif has_factors and not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in tried):
        problems.append(f"{where}.factors: must be positive numbers")
    if entry.get("protocol", FAIR) not in protocols | {FAIR}:
        problems.append(f"{where}.protocol: {entry.get('protocol')!r} is no protocol of the file")
    return problems


def robustness_problems(data: Any) -> list[str]:
    """Every problem of a parsed protocols file, one line each, naming where it is."""
    if data is None:
        return []
    problems = _unknown("the file", data, FILE_KEYS)
    if problems:
        return problems
    protocols, choices = data.get("protocols") or {}, data.get("choices") or {}
    if not isinstance(protocols, dict) or not isinstance(choices, dict):
        return ["`protocols` and `choices` must be mappings by name"]
    for name, entry in protocols.items():
        problems += _protocol_problems(name, entry)
    for name, entry in choices.items():
        problems += _choice_problems(name, entry, set(protocols))
    return problems + _official_problems(data.get("official") or {})


def _official_problems(official: Any) -> list[str]:
    if not isinstance(official, dict) or not all(
        isinstance(files, dict) and all(isinstance(f, str) and f for f in files.values()) for files in official.values()
    ):
        return ["official: must map a dataset to {method: its official outputs file}"]
    return []


def _as_tuple(value: Any) -> tuple[str, ...]:
    return tuple([value] if isinstance(value, str) else value)


def _protocol(name: str, entry: dict[str, Any]) -> Protocol:
    datasets = {
        dataset: DatasetProtocol(
            methods=_as_tuple(spec["methods"]),
            settings=dict(spec.get("settings") or {}),
            method_settings={m: dict(s) for m, s in (spec.get("method_settings") or {}).items()},
            report=spec.get("report", "selected"),
            note=str(spec.get("note", "")),
        )
        for dataset, spec in (entry.get("datasets") or {}).items()
    }
    return Protocol(name, str(entry.get("description", "")), datasets)


def _choice(name: str, entry: dict[str, Any]) -> Choice:
    return Choice(
        name=name,
        description=str(entry.get("description", "")),
        methods=_as_tuple(entry["methods"]),
        key=entry["key"],
        values=tuple(entry.get("values", ())),
        factors=tuple(float(f) for f in entry.get("factors", ())),
        protocol=entry.get("protocol", FAIR),
    )


def load_robustness(path: Path | str) -> Robustness:
    """A protocols file, checked whole: one message listing every problem."""
    data = parse_user_yaml(Path(path), "protocols file")
    problems = robustness_problems(data)
    if problems:
        raise MtlbenchError(f"{path}: {len(problems)} problem(s) in the protocols file:\n  " + "\n  ".join(problems))
    data = data or {}
    protocols = {n: _protocol(n, e) for n, e in (data.get("protocols") or {}).items() if n != FAIR}
    choices = {n: _choice(n, e) for n, e in (data.get("choices") or {}).items()}
    descriptions = {n: str((e or {}).get("description", "")) for n, e in (data.get("protocols") or {}).items()}
    folder = Path(path).resolve().parent
    official = {d: {m: str(folder / f) for m, f in files.items()} for d, files in (data.get("official") or {}).items()}
    return Robustness(protocols, choices, descriptions, official)


# --- the runs a config adds -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One (dataset, method) trained under a protocol or at one value of a choice, for every seed."""

    name: str  # 'published', 'srdml_lambda=x0.1', 'published:synthetic_loss=broadcast'
    dataset: str
    method: str
    settings: dict[str, Any]  # on top of the config's own overrides for the run
    report: str = "selected"

    @property
    def directory(self) -> str:
        """The variant's folder name (path-safe)."""
        return variant_directory(self.name)


def variant_directory(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-=+" else "_" for c in name)


def variant_name(protocol: str, choice: str = "", label: str = "") -> str:
    """'' for the fair protocol's runs, the protocol's name for its own runs, `choice=label` for a value swept
    under `fair`, `protocol:choice=label` under another protocol."""
    if not choice:
        return "" if protocol == FAIR else protocol
    return (f"{protocol}:" if protocol != FAIR else "") + f"{choice}={label}"


@dataclass
class Sweep:
    """One choice swept on one dataset: each value's variant ('' = the fair runs; the protocol's name = its
    runs), for the analysis."""

    choice: str
    description: str
    protocol: str
    dataset: str
    key: str
    methods: list[str]
    values: list[dict[str, str]]  # {'label': 'x0.1', 'variant': 'srdml_lambda=x0.1'}


@dataclass
class ProtocolPlan:
    name: str
    description: str
    datasets: dict[str, dict[str, Any]]  # dataset -> {methods, report, note, run}


@dataclass
class Plan:
    """What the config trains beside its own runs, and what the analysis needs to know of it."""

    protocols: list[ProtocolPlan]
    sweeps: list[Sweep]
    variants: list[Variant]
    fair_description: str = ""
    official: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "fair_description": self.fair_description,
            "official": self.official,
            "protocols": [asdict(p) for p in self.protocols],
            "sweeps": [asdict(s) for s in self.sweeps],
            "variants": {v.name: v.report for v in self.variants},
        }


OverridesFor = Callable[[str, str], dict[str, Any]]


class Planner:
    """Turns the config's `robustness` block into runs: `overrides_for(dataset, method)` gives the config's own
    overrides of a run; a setting is checked by resolving the run's config (an unknown key is one message)."""

    def __init__(self, file: Robustness, datasets: list[str], methods: list[str], overrides_for: OverridesFor):
        self.file, self.datasets, self.methods, self.overrides_for = file, datasets, methods, overrides_for
        self._resolved: dict[str, dict[str, Any]] = {}  # each run's config is resolved once (workflow start-up)

    def resolved(self, dataset: str, method: str, settings: dict[str, Any]) -> dict[str, Any]:
        from mtlbench.config import resolve_config

        key = json.dumps([dataset, method, settings], sort_keys=True, default=str)
        if key not in self._resolved:
            cfg = resolve_config(dataset, method, 0, {**self.overrides_for(dataset, method), **settings})
            self._resolved[key] = {k: v for k, v in cfg.items() if k != "tracking"}
        return self._resolved[key]

    def protocol_settings(self, protocol: str, dataset: str, method: str) -> dict[str, Any]:
        if protocol == FAIR:
            return {}
        return self.file.protocols[protocol].datasets[dataset].settings_for(method)

    def protocol_methods(self, protocol: str, dataset: str) -> list[str]:
        if protocol == FAIR:
            return list(self.methods)
        return [m for m in self.file.protocols[protocol].datasets[dataset].methods if m in self.methods]

    def report(self, protocol: str, dataset: str) -> str:
        return "selected" if protocol == FAIR else self.file.protocols[protocol].datasets[dataset].report

    def value_settings(self, choice: Choice, dataset: str, method: str, value: Any) -> dict[str, Any]:
        """The protocol's settings with the choice's key at `value` (a Factor multiplies the run's own value)."""
        base = self.protocol_settings(choice.protocol, dataset, method)
        if isinstance(value, Factor):
            section, _, key = choice.key.partition(".")
            own = self.resolved(dataset, method, base).get(section, {}).get(key)
            if not isinstance(own, (int, float)) or isinstance(own, bool):
                raise MtlbenchError(
                    f"choices.{choice.name}: factors need a number, but {choice.key} of {dataset}/{method} is {own!r}"
                )
            scaled = own * value.value
            value = round(scaled) if isinstance(own, int) and float(scaled).is_integer() else scaled
        return {**base, choice.key: value}


def _listed_problems(group: str, dataset: str, names: Any, known: dict[str, Any], datasets: set[str]) -> list[str]:
    """What is wrong with `robustness.<group>.<dataset>`: a dataset or a name the file does not know."""
    where = f"robustness.{group}.{dataset}"
    problems = (
        []
        if dataset in datasets
        else [f"{where}: no dataset is named {dataset!r}; valid: {', '.join(sorted(datasets))}"]
    )
    if not isinstance(names, list):
        return problems + [f"{where} must be a list of names"]
    unknown = [n for n in names if n not in known]
    if unknown:
        problems.append(
            f"{where} names {', '.join(map(repr, unknown))}, which the protocols file does not declare; "
            f"declared: {', '.join(sorted(known)) or 'none'}"
        )
    if group == "protocols":
        problems += [
            f"{where}: protocol {n!r} declares no runs on {dataset}"
            for n in names
            if n in known and dataset not in known[n].datasets
        ]
    return problems


def _check_names(file: Robustness, config: dict[str, Any], known_datasets: set[str]) -> None:
    problems = []
    for group, known in (("protocols", file.protocols), ("sensitivity", file.choices)):
        for dataset, names in (config.get(group) or {}).items():
            problems += _listed_problems(group, dataset, names, known, known_datasets)
    if problems:
        raise MtlbenchError("; ".join(problems))


def _protocol_plans(planner: Planner, wanted: dict[str, list[str]]) -> list[ProtocolPlan]:
    plans = []
    for name, protocol in planner.file.protocols.items():
        datasets = {
            d: {
                "methods": list(spec.methods),
                "report": spec.report,
                "note": spec.note,
                "run": name in (wanted.get(d) or []),
            }
            for d, spec in protocol.datasets.items()
        }
        plans.append(ProtocolPlan(name, protocol.description, datasets))
    return plans


def _protocol_variants(planner: Planner, wanted: dict[str, list[str]]) -> list[Variant]:
    variants = []
    for dataset, names in wanted.items():
        for name in names or []:
            for method in planner.protocol_methods(name, dataset):
                settings = planner.protocol_settings(name, dataset, method)
                planner.resolved(dataset, method, settings)  # an unknown or ill-typed key: one message
                variants.append(Variant(name, dataset, method, settings, planner.report(name, dataset)))
    return variants


def _sweep(planner: Planner, choice: Choice, dataset: str) -> tuple[Sweep, list[Variant]]:
    methods = [m for m in planner.protocol_methods(choice.protocol, dataset) if choice.applies_to(m)]
    values, variants = [], []
    for label, value in choice.settings():
        name = variant_name(choice.protocol, choice.name, label)
        same = True
        for method in methods:
            settings = planner.value_settings(choice, dataset, method, value)
            base = planner.protocol_settings(choice.protocol, dataset, method)
            if planner.resolved(dataset, method, settings) != planner.resolved(dataset, method, base):
                same = False
                variants.append(Variant(name, dataset, method, settings, planner.report(choice.protocol, dataset)))
        values.append({"label": label, "variant": variant_name(choice.protocol) if same else name})
    sweep = Sweep(choice.name, choice.description, choice.protocol, dataset, choice.key, methods, values)
    return sweep, variants


def plan(
    file: Robustness, config: dict[str, Any], datasets: list[str], methods: list[str], overrides_for: OverridesFor
) -> Plan:
    """The runs the config's `robustness` block adds ({protocols: {dataset: [names]}, sensitivity: {dataset:
    [choices]}}), the protocols' coverage and each sweep's values, for the workflow and the analysis."""
    from mtlbench.registry import DATASETS

    _check_names(file, config, {*DATASETS.names(), *datasets})
    planner = Planner(file, datasets, methods, overrides_for)
    # a dataset this config does not run is left out (a user config inherits the default config's block)
    wanted = {d: names for d, names in (config.get("protocols") or {}).items() if d in datasets}
    variants = _protocol_variants(planner, wanted)
    sweeps = []
    for dataset, names in (config.get("sensitivity") or {}).items():
        for name in names if dataset in datasets else []:
            choice = planner.file.choices[name]
            if choice.protocol != FAIR and choice.protocol not in (wanted.get(dataset) or []):
                raise MtlbenchError(
                    f"robustness.sensitivity.{dataset}: choice {name!r} is swept under protocol "
                    f"{choice.protocol!r}, which robustness.protocols.{dataset} does not run"
                )
            sweep, runs = _sweep(planner, choice, dataset)
            if not sweep.methods:
                continue  # none of the choice's methods is trained here
            sweeps.append(sweep)
            variants += runs
    official = {d: files for d, files in file.official.items() if d in datasets}
    return Plan(_protocol_plans(planner, wanted), sweeps, variants, file.descriptions.get(FAIR, ""), official)
