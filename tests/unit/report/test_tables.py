"""kaepipe.report.tables: the topology, isometry and study tables over base-network draws and KAE seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kaepipe.report.tables import ISOMETRY_METRICS, TABLE_COLUMNS, isometry_tables, study_table, topology_tables


def part(source: str, draw: int, seed: int, values: list[float], lam: float | None = None) -> pd.DataFrame:
    """A per-job topology table as the stage writes it (layers: seed = the draw)."""
    n = len(values)
    return pd.DataFrame({"dataset": "yy", "source": source, "draw": pd.array([draw] * n, "Int64"),
                         "seed": pd.array([seed] * n, "Int64"), "step": range(n), "eps": 0.25, "betti0": values,
                         "lambda_iso": np.nan if lam is None else lam, "n": 100, "metric": "euclidean"})


def test_topology_summary_over_draws_and_seeds():
    parts = [part("mlp", 0, 0, [5, 3]), part("mlp", 1, 1, [7, 5]),
             part("kae", 0, 21, [10, 1], 1.0), part("kae", 0, 53, [20, 2], 1.0),
             part("kae", 1, 21, [30, 3], 1.0), part("kae", 1, 53, [40, 4], 1.0)]
    long, summary = topology_tables(parts)
    assert list(long.columns) == TABLE_COLUMNS and len(long) == 2 * 2 + 4 * 2
    mlp = summary[summary.source == "mlp"].set_index("step")
    assert mlp.loc[0, "betti0_mean"] == 6 and (mlp["draws"] == 2).all() and (mlp["n_seeds"] == 2).all()
    assert mlp["seeds"].isna().all()
    kae = summary[summary.source == "kae"].set_index("step")
    assert kae.loc[0, "betti0_mean"] == 25 and kae.loc[0, "betti0_min"] == 10 and kae.loc[0, "betti0_max"] == 40
    assert (kae["draws"] == 2).all() and (kae["seeds"] == 2).all() and (kae["n_seeds"] == 4).all()


def test_topology_parts_without_a_draw_are_one_draw():
    old = part("kae", 0, 21, [10, 1], 1.0).drop(columns="draw")
    long, summary = topology_tables([old, part("kae", 0, 53, [20, 2], 1.0).drop(columns="draw")])
    assert long["draw"].isna().all() and (summary["draws"] == 1).all() and (summary["seeds"] == 2).all()


def test_isometry_table_over_draws_and_seeds():
    results = []
    for draw, seed, d in ((0, 21, 0.1), (0, 53, 0.3), (1, 21, 0.5), (1, 53, 0.7)):
        r = {"dataset": "yy", "draw": draw, "lambda_iso": 1.0, "seed": seed, "points": 50, "common_threshold": 1.0,
             "threshold": {"original": 1.0, "encoded": 2.0}}
        r.update(dict.fromkeys(ISOMETRY_METRICS, d))
        results.append(r)
    long, table, _ = isometry_tables(results)
    assert long[["draw", "seed"]].values.tolist() == [[0, 21], [0, 53], [1, 21], [1, 53]]
    row = table.iloc[0]
    assert (row.n_seeds, row.draws, row.seeds) == (4, 2, 2)
    assert row.distortion_mean == pytest.approx(0.4) and row.distortion_std == pytest.approx(math.sqrt(0.05))


def test_study_table_counts_draws_and_seeds():
    frames = []
    for draw, seed, after in ((0, 21, 10.0), (0, 53, 20.0), (1, 21, 30.0), (1, 53, 40.0)):
        frames.append(pd.DataFrame([{"dataset": "yy", "draw": draw, "seed": seed, "target_class": 2,
                                     "protocol": "paper", "split": "train", "targets": "nearest", "reg": 0.1,
                                     "strength": 1.0, "rank": -1, "target_before": 100.0, "target_after": after,
                                     "retained_before": 98.0, "retained_after": 97.0}]))
    row = study_table(frames).iloc[0]
    assert (row.n_seeds, row.draws, row.seeds) == (4, 2, 2)
    assert row.target_after_mean == 25.0 and row.target_after_std == pytest.approx(round(math.sqrt(125), 4))
    one = study_table([f.drop(columns="draw") for f in frames[:2]]).iloc[0]  # files of a run before draws
    assert (one.n_seeds, one.draws, one.seeds) == (2, 1, 2)
