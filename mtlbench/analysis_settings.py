"""The analysis's settings, declared once (issue 24.1): the reference Delta_m and safeness are measured against,
the baselines every method is tested and compared against, the significance level of every test and the
Bayesian comparisons' region of practical equivalence.

The pipeline builds one `AnalysisSettings` from the config's `statistics` block and each analysis command takes
it from the same options (`add_arguments`); every function below receives it, or the one value it needs, and
none restates a default.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class AnalysisSettings:
    reference: str = "stl"  # Delta_m, safeness and the figures' reference line are measured against it
    baselines: tuple[str, ...] = ("hps", "stl")  # significance tests, P(improvement), Bayesian comparisons
    alpha: float = 0.05  # the significance level of every test (claims, significance, Nemenyi's CD)
    rope: float = 1.0  # the Bayesian comparisons' region of practical equivalence, in points of Delta_m %

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AnalysisSettings:
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        if "baselines" in values:
            values["baselines"] = tuple(values["baselines"])
        return cls(**values)


HELP = {
    "reference": "the method Delta_m, safeness and the figures' reference line are measured against",
    "baselines": "the methods every method is tested and compared against (P(improvement), Bayes)",
    "alpha": "the significance level of every test",
    "rope": "the Bayesian comparisons' region of practical equivalence, in points of Delta_m %%",
}


def add_arguments(parser: argparse.ArgumentParser, *names: str) -> None:
    """The options `--reference`, `--baselines`, `--alpha`, `--rope` (those named), with the settings' defaults."""
    defaults = AnalysisSettings()
    kinds: dict[str, dict[str, Any]] = {
        "reference": {},
        "baselines": {"nargs": "+"},
        "alpha": {"type": float},
        "rope": {"type": float},
    }
    for name in names or tuple(HELP):
        default = getattr(defaults, name)
        parser.add_argument(
            f"--{name}",
            default=list(default) if isinstance(default, tuple) else default,
            help=HELP[name],
            **kinds[name],
        )
