"""The final aggregation: every table against the published values, the configuration and the library
versions, written to results/summary.md (+ CSV/Markdown/LaTeX tables); and apart from it, every measured
time (the wall time of each stage, the edits' and baselines' seconds and speed-ups) in results/timings.md,
so that a rerun on the same machine and software gives a byte-identical summary.

Published numbers are those of docs/method.md section 11: accuracy (11.1), topology (11.2), editing
(11.3). `difference` is always ours - published (in the table's units).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kaepipe.config import base_seeds, dataset_sources
from kaepipe.io import to_jsonable
from kaepipe.published import PROTOCOL, published_accuracy, published_editing, published_topology
from kaepipe.report.tables import cell, mean_std, to_markdown

TABLE_TITLES = {
    "accuracy": "Surrogate accuracy (docs/method.md section 6)",
    "topology": "beta_0 of base layers and KAE iterates (docs/method.md section 7)",
    "isometry": "Isometry study: phi(x_L) against x_L (docs/method.md section 7.4)",
    "editing": "Class unlearning by editing K (docs/method.md section 8)",
    "baselines": "Unlearning baselines",
}


def _num(v: Any) -> float:
    """A float, NaN for None/missing."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _cell(mean: float, std: float | None, digits: int = 2) -> str:
    """'mean (std)', 'mean' without a std, '-' for NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return cell(mean, std, digits)


def _basis(r: Mapping[str, Any], kae: bool) -> dict[str, float]:
    """How many models, base draws and KAE seeds a row of a stage table rests on (tables of older runs without
    `draws`/`seeds`: one draw, and `n_seeds` KAE seeds for KAE rows)."""
    n = int(_num(r.get("n_seeds", 1)))
    draws = r.get("draws")
    seeds = r.get("seeds")
    return {"n_seeds": n, "draws": int(_num(draws)) if draws is not None and not pd.isna(draws) else 1,
            "seeds": (_num(seeds) if seeds is not None else float(n)) if kae else float("nan")}


def _round(df: pd.DataFrame, digits: int = 6) -> pd.DataFrame:
    """Round float columns so the CSV, Markdown and the summary print the same numbers."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(digits)
    return out


# ---------------------------------------------------------------------------------------------
# Comparison tables
# ---------------------------------------------------------------------------------------------

def accuracy_comparison(accuracy: pd.DataFrame, sources: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The accuracy table (MLP and KAE at the main lambda_iso) with the published value and the difference.
    `sources`: each dataset's data source (default: its name), which the published numbers belong to."""
    rows = []
    for r in accuracy.itertuples(index=False):
        pub_mean, pub_std = published_accuracy((sources or {}).get(r.dataset, r.dataset), r.model, r.protocol)
        basis = _basis(r._asdict(), r.model == "KAE")
        ours_std = float(r.acc_std) if r.model == "KAE" or basis["draws"] > 1 else None
        rows.append({"dataset": r.dataset, "protocol": r.protocol, "split": r.split, "model": r.model,
                     "lambda_iso": _num(r.lambda_iso), **basis,
                     "published": _cell(pub_mean, pub_std), "ours": _cell(float(r.acc_mean), ours_std),
                     "published_mean": pub_mean, "ours_mean": float(r.acc_mean),
                     "ours_std": float(r.acc_std), "difference": float(r.acc_mean) - pub_mean})
    return _round(pd.DataFrame(rows))


def topology_comparison(long: pd.DataFrame, n_train: Mapping[str, int] | None = None,
                        sources: Mapping[str, str] | None = None) -> pd.DataFrame:
    """beta_0 per dataset, model (mlp layer / kae iterate) and step: mean (population std) and min-max over
    the base draws (layers) or every (draw, KAE seed) pair (iterates), the published value and the difference.
    `long`: results/tables/topology.csv; n_train: the training-set size per dataset (the preprocessing's fit,
    for the paper's eps)."""
    long = long.copy()
    long["lambda_iso"] = pd.to_numeric(long["lambda_iso"], errors="coerce")
    if "metric" not in long:
        long["metric"] = "euclidean"
    if "draw" not in long:
        long["draw"] = -1  # a table of an older run: one draw
    keys = ["dataset", "source", "lambda_iso", "eps", "metric", "step"]
    rows = []
    for key, g in long.groupby(keys, dropna=False, sort=False):
        dataset, source, lam, eps, metric, step = key
        m, s = mean_std(g["betti0"])
        pub = published_topology((sources or {}).get(dataset, dataset), source, int(step), float(eps), metric,
                                 (n_train or {}).get(dataset))
        draws = int(g["draw"].nunique(dropna=False))
        seeds = float(g["seed"].nunique(dropna=False)) if source != "mlp" else float("nan")
        rows.append({"dataset": dataset, "model": source, "lambda_iso": _num(lam), "eps": float(eps),
                     "step": int(step), "n_seeds": len(g), "draws": draws, "seeds": seeds,
                     "published": "-" if math.isnan(pub) else f"{pub:g}",
                     "ours": _cell(m, s if source != "mlp" or draws > 1 else None, 1), "published_mean": pub,
                     "ours_mean": m,
                     "ours_std": s, "ours_min": float(g["betti0"].min()), "ours_max": float(g["betti0"].max()),
                     "difference": m - pub})
    out = pd.DataFrame(rows)
    out = out.sort_values(["dataset", "model", "lambda_iso", "step"], ascending=[True, False, True, True],
                          kind="mergesort", na_position="first").reset_index(drop=True)
    return _round(out)


def topology_rows_shown(df: pd.DataFrame, max_steps: int = 11) -> pd.DataFrame:
    """The rows of the topology table shown in summary.md: every base layer, and for KAEs with more than
    `max_steps` iterates an evenly spaced selection (always t = 0 and t = k); the CSV keeps every step."""
    keep = []
    for _, g in df.groupby(["dataset", "model", "lambda_iso"], dropna=False, sort=False):
        steps = np.sort(g["step"].unique())
        if len(steps) > max_steps:
            chosen = set(steps[np.unique(np.round(np.linspace(0, len(steps) - 1, max_steps)).astype(int))])
            g = g[g["step"].isin(chosen)]
        keep.append(g)
    return pd.concat(keep).loc[lambda d: d.index.sort_values()] if keep else df


ISOMETRY_SHOWN = ("distortion", "bottleneck_h0", "bottleneck_h1", "betti0_curve_l1", "betti1_curve_l1")


def isometry_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The isometry table as mean (population std) cells; the paper publishes no numbers, only the trend
    (the stronger the penalty, the closer phi(x) to x), so `published` is '-'."""
    rows = []
    for r in table.to_dict("records"):
        row = {"dataset": r["dataset"], "lambda_iso": _num(r["lambda_iso"]), **_basis(r, True),
               "points": int(r.get("points", 0)), "published": "-"}
        for m in ISOMETRY_SHOWN:
            if f"{m}_mean" in r:
                row[m] = _cell(_num(r[f"{m}_mean"]), _num(r.get(f"{m}_std")), 4)
        for m in ISOMETRY_SHOWN:
            if f"{m}_mean" in r:
                row[f"{m}_mean"] = _num(r[f"{m}_mean"])
        rows.append(row)
    return _round(pd.DataFrame(rows))


def editing_comparison(editing: pd.DataFrame, sources: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The editing table of the unlearning stage (results/tables/editing.csv: one row per dataset, protocol,
    method and target class with target_/retained_{before,after}_{mean,std} over seeds) against docs/method.md section 11.3.

    Published values apply to the `paper` method and protocol; the retained classes are not published."""
    rows = []
    for r in editing.to_dict("records"):
        target = int(r["target_class"])
        pub = published_editing((sources or {}).get(r["dataset"], r["dataset"]), target, r.get("method", "paper"),
                                r.get("protocol", PROTOCOL))
        (pbm, pbs), (pam, pas) = pub if pub else ((math.nan, math.nan), (math.nan, math.nan))
        bm, bs, am, as_ = (_num(r[f"target_{w}"]) for w in ("before_mean", "before_std", "after_mean", "after_std"))
        row = {k: r[k] for k in ("dataset", "protocol", "split", "method") if k in r}
        row.update({"target": target, **_basis(r, True),
                    "published_before": _cell(pbm, pbs), "ours_before": _cell(bm, bs),
                    "published_after": _cell(pam, pas), "ours_after": _cell(am, as_),
                    "difference_before": bm - pbm, "difference_after": am - pam})
        if "retained_before_mean" in r:
            row["ours_retained"] = (f"{_cell(_num(r['retained_before_mean']), _num(r.get('retained_before_std')))} -> "
                                    f"{_cell(_num(r['retained_after_mean']), _num(r.get('retained_after_std')))}")
        row.update({"before_mean": bm, "before_std": bs, "after_mean": am, "after_std": as_})
        rows.append(row)
    return _round(pd.DataFrame(rows))


# ---------------------------------------------------------------------------------------------
# Wall time
# ---------------------------------------------------------------------------------------------

def read_benchmark(path: str | Path) -> float:
    """Wall seconds of one job: the first column `s` of a Snakemake benchmark TSV (mean over repeats)."""
    df = pd.read_csv(path, sep="\t")
    if df.empty or "s" not in df:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column)")
    return float(df["s"].mean())


def walltime_table(benchmarks: Sequence[str | Path]) -> pd.DataFrame:
    """Per stage (the benchmark folder, i.e. results/benchmarks/<stage>/<job>.tsv): jobs, total, max
    and mean wall seconds; a last row 'all' with the totals."""
    rows = []
    for p in benchmarks:
        p = Path(p)
        try:
            rows.append({"stage": p.parent.name, "job": p.stem, "s": read_benchmark(p)})
        except (ValueError, OSError, pd.errors.ParserError):
            continue
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "total_s", "max_s", "mean_s"])
    df = pd.DataFrame(rows)
    out = (df.groupby("stage", sort=True)["s"].agg(jobs="size", total_s="sum", max_s="max", mean_s="mean")
           .reset_index())
    total = pd.DataFrame([{"stage": "all", "jobs": len(df), "total_s": df["s"].sum(), "max_s": df["s"].max(),
                           "mean_s": df["s"].mean()}])
    return _round(pd.concat([out, total], ignore_index=True), 2)


# ---------------------------------------------------------------------------------------------
# The summary document
# ---------------------------------------------------------------------------------------------

def config_yaml(config: Mapping) -> str:
    """The configuration as YAML (only the datasets that ran, plus the global keys)."""
    import yaml


    cfg = to_jsonable(dict(config))
    run = cfg.get("run") or list(cfg.get("datasets", {}))
    cfg["datasets"] = {k: v for k, v in cfg.get("datasets", {}).items() if k in run}
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=110)


def _draws(config: Mapping) -> dict[str, list[int]]:
    """The base-network draws of each dataset of `run`."""
    datasets = config.get("datasets", {})
    return {d: base_seeds({**datasets[d], "name": d}) for d in config.get("run") or [] if d in datasets}


def draws_text(config: Mapping) -> str:
    """What every number of the summary rests on: the base-network draws and KAE seeds of each dataset."""
    parts = []
    for d, draws in _draws(config).items():
        seeds = (config["datasets"][d].get("kae") or {}).get("seeds") or []
        parts.append(f"{d}: {len(draws)} base-network draw{'s' if len(draws) != 1 else ''} ({', '.join(map(str, draws))})"
                     f" x {len(seeds)} KAE seed{'s' if len(seeds) != 1 else ''}")
    return ("Every number rests on the models its row counts: `n_seeds` models, from `draws` base-network draws "
            "(`base.seeds`; MLP rows: mean (std) over the draws, one draw: the network alone) and `seeds` KAE seeds "
            "(KAE rows: mean (std) over every (draw, seed) pair)." + (" " + "; ".join(parts) + "." if parts else ""))


# Numeric helper columns kept in the CSV but not repeated in the Markdown and LaTeX (their cells are shown).
HIDDEN = ("published_mean", "ours_mean", "ours_std", "ours_min", "ours_max", "before_mean", "before_std",
          "after_mean", "after_std")


def shown(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """The part of a comparison table shown in Markdown/LaTeX and summary.md: without the numeric helper
    columns, and for topology at most 11 iterates per KAE (the CSV has everything)."""
    if name == "topology" and len(df):
        df = topology_rows_shown(df)
    if name == "isometry":
        return df[[c for c in df.columns if not c.endswith("_mean")]]
    return df[[c for c in df.columns if c not in HIDDEN]]


def summary_markdown(tables: Mapping[str, pd.DataFrame], notes: Mapping[str, str], config: Mapping,
                     versions: Mapping[str, str], git_commit: str, figures: Sequence[str] = ()) -> str:
    """The text of results/summary.md."""
    lines = ["# kaepipe summary", "",
             "Reproduction of *Koopman Autoencoders Learn Neural Representation Dynamics* (Aswani & Jabari, 2025).",
             "Each table gives the published value, ours and the difference (ours - published); mean (population "
             "std) over seeds as in the paper. The same tables are in `results/tables/summary_<name>.{csv,md,tex}`.",
             "", draws_text(config), ""]
    for name, df in tables.items():
        lines += [f"## {TABLE_TITLES.get(name, name)}", ""]
        if notes.get(name):
            lines += [notes[name], ""]
        lines += [to_markdown(df) if len(df) else "(no rows)\n", ""]
    if figures:
        lines += ["## Figures", "", "Each figure shows its dataset's first base-network draw "
                  f"({', '.join(f'{d}: draw {s[0]}' for d, s in _draws(config).items())}).", ""]
        lines += [f"- `{f}`" for f in figures] + [""]
    lines += ["## Configuration", "", "```yaml", config_yaml(config).rstrip(), "```", "",
              "## Library versions", "", f"git commit: `{git_commit}`", ""]
    lines += [to_markdown(pd.DataFrame({"library": list(versions), "version": list(versions.values())})), ""]
    return "\n".join(lines)


NOTES = {
    "accuracy": ("Macro accuracy (%). Published values apply to the `paper` protocol (Yin-Yang: its training "
                 "set; MNIST: the test set) at the paper's full settings; a reduced configuration is not expected "
                 "to match them."),
    "topology": ("beta_0 (number of connected components at scale eps). Published: MNIST, all 10k test points, "
                 "base layers at eps 0.166, KAE iterates (mean over seeds) at eps 0.14; other rows have none."),
    "isometry": ("Mean (population std) over seeds. The paper publishes no numbers here, only that phi(x) gets "
                 "closer to x (smaller distances) as lambda_iso grows."),
    "editing": "Accuracy (%) of the target class before and after the edit of K^k.",
    "baselines": "No published numbers (the paper has no unlearning baselines); times in results/timings.md.",
}


def summary_tables(inputs: Mapping[str, str | None], config: Mapping | None = None) -> dict[str, pd.DataFrame]:
    """The comparison tables of every stage table present: keys accuracy, topology, isometry, editing,
    baselines (CSV paths; None or missing = stage not in this workflow)."""
    out: dict[str, pd.DataFrame] = {}
    sources = dataset_sources(config or {})
    if inputs.get("accuracy"):
        out["accuracy"] = accuracy_comparison(pd.read_csv(inputs["accuracy"]), sources)
    if inputs.get("topology"):
        n_train = {d: (c.get("splits", {}).get("train") or {}).get("size")
                   for d, c in (config or {}).get("datasets", {}).items()}
        out["topology"] = topology_comparison(pd.read_csv(inputs["topology"]), n_train, sources)
    if inputs.get("isometry"):
        out["isometry"] = isometry_comparison(pd.read_csv(inputs["isometry"]))
    if inputs.get("editing"):
        out["editing"] = editing_comparison(pd.read_csv(inputs["editing"]), sources)
    if inputs.get("baselines"):  # no published numbers: the table as the unlearning stage wrote it
        df = pd.read_csv(inputs["baselines"])
        out["baselines"] = _round(df.fillna({c: "-" for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])}))
    return out


# ---------------------------------------------------------------------------------------------
# Measured times: results/timings.md
# ---------------------------------------------------------------------------------------------

TIMING_TITLES = {
    "walltime": "Wall time per stage (benchmark files)",
    "editing": "Edits: seconds per edit and per KAE's preparation",
    "baselines": "Unlearning baselines against the edits: seconds and speed-ups",
}

TIMING_NOTES = {
    "walltime": ("Seconds of wall time per stage (sum over its jobs), from every results/benchmarks/<stage>/*.tsv "
                 "(the first column `s`; files of earlier runs that are still there count too)."),
    "editing": ("Median wall and CPU seconds of one edit over `unlearn.timing_repeats` runs, and of the per-KAE "
                "preparation (observables, operator, Gram matrices); mean over seeds (results/tables/"
                "timings_editing.csv)."),
    "baselines": ("Seconds of the baselines (one run) and of the edits, and the edits' speed-ups over them "
                  "(results/tables/timings_unlearning_baselines.csv)."),
}


def timings_markdown(tables: Mapping[str, pd.DataFrame]) -> str:
    """The text of results/timings.md: every measured time of the run, which varies from run to run."""
    lines = ["# kaepipe timings", "",
             "Measured times of this run: they change from run to run (machine load, clocks), unlike the results "
             "in results/summary.md and results/tables/, which is why they are kept here.", ""]
    for name, df in tables.items():
        lines += [f"## {TIMING_TITLES.get(name, name)}", ""]
        if TIMING_NOTES.get(name):
            lines += [TIMING_NOTES[name], ""]
        lines += [to_markdown(df) if len(df) else "(no rows)\n", ""]
    return "\n".join(lines)


def parse_markdown_tables(text: str) -> list[pd.DataFrame]:
    """Every pipe table of a Markdown text as a DataFrame of strings (used by the tests)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            header = [c.strip() for c in block[0].strip("|").split("|")]
            rows = [[c.strip() for c in b.strip("|").split("|")] for b in block[2:]]
            tables.append(pd.DataFrame(rows, columns=header))
            block = []
    return tables

