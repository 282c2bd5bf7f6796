"""The papers' numbers beside the suite's: read from published.yaml with their source, on the suite's scale."""

from __future__ import annotations

import pandas as pd
import pytest

from mtlbench.published import load_published, published_comparison, published_markdown


def test_published_numbers_are_data_with_their_source():
    table = load_published()
    srdml = table[(table.dataset == "cifar_mtl") & (table.method == "srdml")].set_index("metric").published
    assert srdml["accuracy"] == pytest.approx(0.9582) and srdml["recall"] == pytest.approx(0.7593)  # 95.82 %
    assert set(table[table.dataset == "celeba"].method) == {"stl", "hps", "mgda_ub", "pcgrad", "srdml", "srdml_pcgrad"}
    assert table.source.str.len().min() > 10 and table.protocol.str.contains("test set").any()


def test_comparison_puts_each_published_number_beside_the_suites():
    averaged = pd.DataFrame(
        [
            {"dataset": "cifar_mtl", "method": "srdml", "metric": "accuracy", "mean": 0.95, "std": 0.01, "n": 5},
            {"dataset": "multimnist", "method": "hps", "metric": "accuracy", "mean": 0.92, "std": 0.01, "n": 5},
        ]
    )
    summary = pd.DataFrame(
        [
            {
                "dataset": "nyuv2",
                "method": "hps",
                "task": "segmentation",
                "metric": "miou",
                "mean": 0.50,
                "std": 0.02,
                "n": 3,
            }
        ]
    )
    table = published_comparison(averaged, summary).set_index(["dataset", "metric"])
    assert len(table) == 2  # multimnist has no published numbers; other CIFAR metrics were not run
    assert table.loc[("cifar_mtl", "accuracy"), "difference"] == pytest.approx(0.95 - 0.9582)
    assert table.loc[("nyuv2", "segmentation.miou"), "published"] == pytest.approx(0.5410)
    text = published_markdown(published_comparison(averaged, summary))
    assert "## cifar_mtl: SRDML" in text and "test set" in text and "-0.0082" in text
    assert "No dataset of this run" in published_markdown(published_comparison(averaged.iloc[1:], summary.iloc[:0]))
