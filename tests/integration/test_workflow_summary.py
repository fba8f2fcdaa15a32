"""End to end on the tiny run: the figures, the summary and its tables, and the Snakemake report."""

from __future__ import annotations

import re
import zipfile

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from kaepipe.report.summary import HIDDEN, parse_markdown_tables
from kaepipe.report.tables import fmt
from tests.conftest import run_snakemake

pytestmark = pytest.mark.slow

DATASETS = ("yinyang", "mnist")
# what the tiny config (tests/config/tiny.yaml over config.yaml) makes, counted by hand
FIGURES = [f"{kind}_{d}" for kind in ("layers", "training", "path", "isometry", "topology", "editing") for d in DATASETS]
SUMMARY_TABLES = ["accuracy", "topology", "isometry", "editing", "baselines"]
JOBS = {
    "dataset": 4,  # 2 datasets x 2 splits
    "base_model": 2, "representations": 2,
    "kae": 6, "surrogate_accuracy": 6,  # Yin-Yang 2 lambda_iso x 2 seeds, MNIST 1 x 2
    "tables": 3,  # accuracy, topology, isometry
    "topology_layers": 2, "topology_iterates": 4, "isometry_original": 2, "isometry": 3,  # main lambda x seeds; lambdas
    "unlearn_edit": 4, "unlearn_study": 2, "unlearn_baseline": 3, "unlearn_tables": 1,  # MNIST: no study, no retrain
    "figures": 12,
}
# the Yin-Yang palette (the paper's colours): every class is drawn in the layers figure
YINYANG_COLOURS = ("#fc9918", "#a779aa", "#4c3191")


def test_figures_are_the_expected_ones_and_draw_the_classes(tiny_run):
    fig_dir = tiny_run / "results" / "figures"
    assert sorted(p.name for p in fig_dir.iterdir()) == sorted(f"{n}.{e}" for n in FIGURES for e in ("png", "pdf"))
    for name in FIGURES:
        png = matplotlib.image.imread(fig_dir / f"{name}.png")[..., :3]
        colours = np.unique((png * 255).round().reshape(-1, 3), axis=0)
        assert png.shape[0] >= 300 and png.shape[1] >= 600 and len(colours) > 200, name  # drawn, not blank
        pdf = (fig_dir / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF"), name
    layers = (matplotlib.image.imread(fig_dir / "layers_yinyang.png")[..., :3] * 255).round()
    for colour in YINYANG_COLOURS:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(layers - rgb).max(-1) <= 3).sum() >= 20, colour  # markers of that class
    md = (tiny_run / "results" / "summary.md").read_text()
    listed = md.split("## Figures")[1]
    assert all(f"`results/figures/{n}.png`" in listed and f"`results/figures/{n}.pdf`" in listed for n in FIGURES)


def test_summary_tables_parse_and_match_summary_md(tiny_run):
    res = tiny_run / "results"
    md = (res / "summary.md").read_text()
    for section in ("## Configuration", "## Library versions", "## Figures"):
        assert section in md
    assert "Wall time" not in md  # measured times: results/timings.md
    names = SUMMARY_TABLES
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
    topo = pd.read_csv(res / "topology.csv")
    st = pd.read_csv(res / "summary_topology.csv")
    assert len(st) == len(topo.groupby(["dataset", "source", "lambda_iso", "step"], dropna=False))
    layers = topo[topo.source == "mlp"].sort_values(["dataset", "step"])
    np.testing.assert_allclose(st[st.model == "mlp"].sort_values(["dataset", "step"]).ours_mean, layers.betti0)
    # wall time (results/timings.md): every job's Snakemake benchmark, summed here per stage (the summary's
    # job too; the timings' own job comes after it)
    seconds: dict[str, list[float]] = {}
    for tsv in sorted((tiny_run / "results" / "benchmarks").glob("*/*.tsv")):
        if tsv.name != "timings.tsv":
            seconds.setdefault(tsv.parent.name, []).append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[0]))
    assert {stage: len(s) for stage, s in seconds.items()} == {**JOBS, "summary": 1}
    wall = pd.read_csv(res / "timings_walltime.csv").set_index("stage")
    assert sorted(wall.index) == sorted([*JOBS, "summary", "all"])
    for stage, s in seconds.items():
        assert wall.loc[stage, "jobs"] == len(s)
        assert wall.loc[stage, "total_s"] == pytest.approx(sum(s), abs=0.01)
        assert wall.loc[stage, "max_s"] == pytest.approx(max(s), abs=0.01)
    all_s = [v for s in seconds.values() for v in s]
    assert wall.loc["all", "jobs"] == len(all_s) and wall.loc["all", "total_s"] == pytest.approx(sum(all_s), abs=0.01)
    md = (tiny_run / "results" / "summary.md").read_text()
    assert "main_lambda_iso" in md and re.search(r"^\| torch +\|", md, flags=re.MULTILINE)


def test_report_builds(tiny_run, tmp_path, mnist_root):
    out = tmp_path / "report.zip"
    run_snakemake(tiny_run, "--report", str(out), mnist_root=mnist_root)
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
    assert any(n.endswith("report.html") for n in names)
    for name in FIGURES:
        assert any(n.endswith(f"{name}.png") for n in names), name
    assert any(n.endswith("summary.md") for n in names)
