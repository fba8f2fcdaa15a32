"""kaepipe.report.summary: every compared number says how many base-network draws and KAE seeds it rests on."""

from __future__ import annotations

import math

import pandas as pd

from kaepipe.report.summary import accuracy_comparison, draws_text, summary_markdown, topology_comparison


def test_accuracy_comparison_names_draws_and_seeds():
    acc = pd.DataFrame([
        {"dataset": "yinyang", "protocol": "paper", "split": "train", "model": "MLP", "lambda_iso": float("nan"),
         "n_seeds": 5, "draws": 5, "seeds": float("nan"), "acc_mean": 99.27, "acc_std": 0.07, "cell": "99.27 (0.07)"},
        {"dataset": "yinyang", "protocol": "paper", "split": "train", "model": "KAE", "lambda_iso": 1.0,
         "n_seeds": 25, "draws": 5, "seeds": 5, "acc_mean": 98.60, "acc_std": 0.14, "cell": "98.60 (0.14)"},
        {"dataset": "mnist", "protocol": "paper", "split": "test", "model": "MLP", "lambda_iso": float("nan"),
         "n_seeds": 1, "draws": 1, "seeds": float("nan"), "acc_mean": 96.5, "acc_std": 0.0, "cell": "96.50"},
    ])
    t = accuracy_comparison(acc, {"yinyang": "yinyang", "mnist": "mnist"})
    assert t.draws.tolist() == [5, 5, 1] and math.isnan(t.seeds[0]) and t.seeds[1] == 5 and t.n_seeds[1] == 25
    assert t.ours.tolist() == ["99.27 (0.07)", "98.60 (0.14)", "96.50"]  # the std of the draws when there are several


def test_topology_comparison_over_draws():
    long = pd.DataFrame([{"dataset": "yy", "source": "mlp", "draw": d, "seed": d, "step": 0, "eps": 0.25, "betti0": b,
                          "lambda_iso": float("nan"), "n": 100, "metric": "euclidean"} for d, b in ((0, 5), (1, 7))])
    row = topology_comparison(long).iloc[0]
    assert (row.draws, row.n_seeds, row.ours) == (2, 2, "6.0 (1.0)") and math.isnan(row.seeds)


def test_summary_says_what_the_numbers_rest_on():
    config = {"run": ["yinyang", "mnist"],
              "datasets": {"yinyang": {"base": {"seeds": [0, 1, 2]}, "kae": {"seeds": [21, 365]}},
                           "mnist": {"base": {"seed": 4}, "kae": {"seeds": [21]}}}}
    text = draws_text(config)
    assert "yinyang: 3 base-network draws (0, 1, 2) x 2 KAE seeds" in text
    assert "mnist: 1 base-network draw (4) x 1 KAE seed" in text
    md = summary_markdown({}, {}, config, {"torch": "x"}, "abc", ["results/figures/layers_yinyang.png"])
    assert text in md and "first base-network draw (yinyang: draw 0, mnist: draw 4)" in md
