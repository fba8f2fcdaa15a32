"""End to end on the tiny run: the figures, the summary and its tables, and the Snakemake report."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kaepipe.report.summary import HIDDEN, parse_markdown_tables
from kaepipe.report.tables import fmt
from tests.conftest import REPO, TINY_CONFIGS, run_snakemake

pytestmark = pytest.mark.slow

DATASETS = ("yinyang", "mnist")


def _tiny_config() -> dict:
    cfg: dict = {}
    for path in TINY_CONFIGS:
        _merge(cfg, yaml.safe_load(Path(path).read_text()))
    return cfg


def _merge(a: dict, b: dict) -> None:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v


def _included(name: str) -> bool:
    return f'include: "workflow/rules/{name}.smk"' in (REPO / "Snakefile").read_text()


def expected_figures() -> list[str]:
    names = ["layers", "training", "path"]
    if _included("topology"):
        names += ["isometry", "topology"]
    out = [f"{n}_{d}" for n in names for d in DATASETS]
    cfg = _tiny_config()
    if _included("unlearn"):
        out += [f"editing_{d}" for d in DATASETS if cfg["datasets"][d].get("unlearn")]
    return out


def test_every_figure_is_written(tiny_run):
    fig_dir = tiny_run / "results" / "figures"
    for name in expected_figures():
        png, pdf = fig_dir / f"{name}.png", fig_dir / f"{name}.pdf"
        assert png.read_bytes().startswith(b"\x89PNG"), name
        assert pdf.read_bytes().startswith(b"%PDF"), name
        assert png.stat().st_size > 5000, name
    for rule in ("figures", "summary"):
        assert list((tiny_run / "results" / "logs" / rule).glob("*.log")), rule
        assert list((tiny_run / "results" / "benchmarks" / rule).glob("*.tsv")), rule


def test_summary_tables_parse_and_match_summary_md(tiny_run):
    res = tiny_run / "results"
    md = (res / "summary.md").read_text()
    for section in ("## Configuration", "## Library versions", "## Figures"):
        assert section in md
    assert "Wall time" not in md  # measured times: results/timings.md
    names = ["accuracy"] + (["topology", "isometry"] if _included("topology") else [])
    if _included("unlearn") and any(c.get("unlearn") for c in _tiny_config()["datasets"].values()):
        names += ["editing", "baselines"]
    sections = {}
    for block in md.split("\n## ")[1:]:
        tables = parse_markdown_tables(block)
        if tables:
            sections[block.splitlines()[0]] = tables[0]
    by_name = {n: next(t for title, t in sections.items() if title.lower().startswith(
        {"accuracy": "surrogate accuracy", "topology": "beta_0", "isometry": "isometry",
         "editing": "class unlearning", "baselines": "unlearning baselines"}[n])) for n in names}
    for name in names:
        csv = pd.read_csv(res / "tables" / f"summary_{name}.csv")
        assert len(csv), name
        assert (res / "tables" / f"summary_{name}.md").read_text().startswith("|")
        assert "\\begin{tabular}" in (res / "tables" / f"summary_{name}.tex").read_text()
        shown = by_name[name]
        cols = list(shown.columns)
        assert set(cols) <= set(csv.columns), name
        if name == "topology":  # summary.md shows a subset of the iterates: match rows by key
            keys = ["dataset", "model", "lambda_iso", "step"]
            text = csv.assign(**{k: [fmt(v) for v in csv[k]] for k in keys}).set_index(keys)
            for row in shown.itertuples(index=False):
                r = dict(zip(cols, row))
                ref = text.loc[tuple(r[k] for k in keys)]
                assert all(r[c] == fmt(ref[c]) for c in cols if c not in keys), r
        else:
            assert len(shown) == len(csv), name
            for col in cols:
                assert shown[col].tolist() == [fmt(v) for v in csv[col]], (name, col)
        assert not set(cols) & set(HIDDEN)


def test_summary_numbers_equal_the_stage_tables(tiny_run):
    res = tiny_run / "results" / "tables"
    acc = pd.read_csv(res / "accuracy.csv")
    summ = pd.read_csv(res / "summary_accuracy.csv")
    assert summ.ours.tolist() == acc.cell.tolist()
    np.testing.assert_allclose(summ.ours_mean, acc.acc_mean, atol=1e-6)
    paper = summ[(summ.protocol == "paper")].set_index(["dataset", "model"])
    assert paper.loc[("yinyang", "KAE"), "published"] == "98.75 (0.15)"
    assert paper.loc[("mnist", "MLP"), "difference"] == pytest.approx(paper.loc[("mnist", "MLP"), "ours_mean"] - 99.03,
                                                                      abs=1e-5)
    if _included("topology"):
        topo = pd.read_csv(res / "topology.csv")
        st = pd.read_csv(res / "summary_topology.csv")
        assert len(st) == len(topo.groupby(["dataset", "source", "lambda_iso", "step"], dropna=False))
        layers = topo[topo.source == "mlp"].sort_values(["dataset", "step"])
        np.testing.assert_allclose(st[st.model == "mlp"].sort_values(["dataset", "step"]).ours_mean, layers.betti0)
    wall = pd.read_csv(res / "timings_walltime.csv").set_index("stage")
    assert {"kae", "base_model", "figures"} <= set(wall.index)
    assert wall.loc["all", "total_s"] == pytest.approx(wall.drop(index="all").total_s.sum(), abs=0.05)
    md = (tiny_run / "results" / "summary.md").read_text()
    assert "main_lambda_iso" in md and "| torch |" in md


def test_report_builds(tiny_run, tmp_path):
    out = tmp_path / "report.zip"
    run_snakemake(tiny_run, "--report", str(out))
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
    assert any(n.endswith("report.html") for n in names)
    for name in expected_figures():
        assert any(n.endswith(f"{name}.png") for n in names), name
    assert any(n.endswith("summary.md") for n in names)
