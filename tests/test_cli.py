"""The command line as a user meets it: listings, overrides, and one clear message per mistake."""

from __future__ import annotations

import json

import pytest

from mtlbench.record import RunRecord
from tests.conftest import run_cli


def _error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_list_names_every_dataset_and_method():
    result = run_cli("list")
    assert result.returncode == 0
    for name in ("multimnist", "synthetic_relations", "stl", "hps"):
        assert name in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "mnistt", "--method", "hps"], ["unknown dataset 'mnistt'", "multimnist", "synthetic_relations"]),
        (["--dataset", "multimnist", "--method", "hsp"], ["unknown method 'hsp'", "hps", "stl"]),
        (
            ["--dataset", "multimnist", "--method", "hps", "--set", "train.epoch=3"],
            ["unknown config key 'train.epoch'", "train.epochs", "train.lr"],
        ),
        (["--dataset", "multimnist", "--method", "hps", "--set", "bogus=1"], ["unknown config key 'bogus'", "seed"]),
        (
            ["--dataset", "multimnist", "--method", "hps", "--set", "train.epochs=three"],
            ["train.epochs", "expected int", "'three'"],
        ),
        (
            ["--dataset", "multimnist", "--method", "hps", "--set", "train.optimizer=rmsprop"],
            ["train.optimizer", "'adam'", "'sgd'"],
        ),
        (
            [
                "--dataset",
                "multimnist",
                "--method",
                "hps",
                "--set",
                "dataset.source=torchvision",
                "--set",
                "dataset.root=/nonexistent/mnist",
                "--no-tracking",
            ],
            ["/nonexistent/mnist/MNIST/raw", "train-images-idx3-ubyte"],
        ),
        (["--dataset", "multimnist", "--method", "nosuchpkg.mod:Thing"], ["cannot import module 'nosuchpkg.mod'"]),
        (["--dataset", "multimnist", "--method", "hps", "--epochs", "0"], ["train.epochs", "must be >= 1"]),
        # issue 26.7: values outside their domain were accepted, or a traceback
        (["--dataset", "synthetic_relations", "--method", "hps", "--seed", "99999999999999999999"], ["seed: must be"]),
        (["--dataset", "synthetic_relations", "--method", "hps", "--seed", "-1"], ["seed: must be >= 0"]),
        (["--dataset", "synthetic_relations", "--method", "srdml", "--set", "rule.lam=-1"], ["rule.lam: must be >= 0"]),
        (
            ["--dataset", "synthetic_relations", "--method", "hps", "--set", "train.lr=0x10"],
            ["write numbers in decimal"],
        ),
        (["--dataset", "synthetic_relations", "--method", "hps", "--set", "train.lr=0"], ["train.lr: must be > 0"]),
        (["--dataset", "synthetic_relations", "--method", "hps", "--set", "train.batch_size=-1"], ["must be >= 0"]),
        (
            [
                "--dataset",
                "multimnist",
                "--method",
                "mgda",
                "--set",
                "arch.name=cross_stitch",
                "--no-tracking",
                "--set",
                "dataset.n_train=16",
            ],
            ["update rule 'mgda'", "shares none"],
        ),
    ],
)
def test_user_mistakes_get_one_clear_message(args, expected):
    message = _error(run_cli("train", *args))
    for fragment in expected:
        assert fragment in message


def test_set_overrides_are_typed_and_reach_the_config():
    result = run_cli(
        "train",
        "--dataset",
        "multimnist",
        "--method",
        "hps",
        "--print-config",
        "--set",
        "train.lr=0.01",
        "--set",
        "train.epochs=4",
        "--set",
        "dataset.n_train=100",
    )
    assert result.returncode == 0, result.stderr
    cfg = json.loads(result.stdout)
    assert cfg["train"]["lr"] == 0.01 and cfg["train"]["epochs"] == 4 and cfg["dataset"]["n_train"] == 100
    assert isinstance(cfg["train"]["lr"], float)


def test_train_writes_a_record(tmp_path):
    result = run_cli(
        "train",
        "--dataset",
        "synthetic_relations",
        "--method",
        "stl",
        "--seed",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "5",
        "--no-tracking",
    )
    assert result.returncode == 0, result.stderr
    record = RunRecord.read(tmp_path / "run" / "record.json")
    assert record.seed == 1 and record.config["train"]["epochs"] == 5


def test_version_and_every_option_described_with_its_default():
    """Issue 26.5: no --version; most options of the pipeline stages had no description."""
    import mtlbench
    from mtlbench.cli import _parser

    assert run_cli("--version").stdout.strip() == f"mtlbench {mtlbench.__version__}"
    parser = _parser()
    commands = [a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)][0].choices
    undocumented = []
    for name, sub in commands.items():
        subs = [a for a in sub._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
        for command in [sub, *(c for a in subs for c in a.choices.values())]:
            for action in command._actions:
                if action.option_strings and action.dest != "help" and not action.help:
                    undocumented.append(f"{name} {action.option_strings[0]}")
    assert not undocumented
    assert "(default: 0.05)" in run_cli("aggregate", "--help").stdout
