"""Tables: mean (population std) over base-network draws and KAE seeds, the accuracy table, and Markdown/LaTeX
renderings.

Every aggregated row says what it rests on: `n_seeds`, the number of models averaged (KAE rows: every
(draw, KAE seed) pair; MLP and baseline rows: every draw), `draws`, the number of base-network draws, and
`seeds`, the number of KAE seeds (NaN, shown '-', for rows without a KAE). Records without a `draw` (files of
older runs) count as one draw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kaepipe.io import write_json, write_text
from kaepipe.published import editing_text, published_topology
from kaepipe.settings import BASELINES


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof = 0), as in the paper's tables."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=0))


def cell(mean: float, std: float, digits: int = 2) -> str:
    """Format like the paper: '98.75 (0.15)'."""
    return f"{mean:.{digits}f} ({std:.{digits}f})"


def counts(draws: Iterable[Any], seeds: Iterable[Any] | None = None) -> dict[str, float]:
    """What a cell rests on: {"n_seeds": models, "draws": distinct base draws, "seeds": distinct KAE seeds}
    of the records' (draw, seed) values; `seeds` None (rows without a KAE): NaN seeds, one model per draw."""
    draws = list(draws)
    if seeds is None:
        return {"n_seeds": len(draws), "draws": len(set(draws)), "seeds": np.nan}
    seeds = list(seeds)
    return {"n_seeds": len(seeds), "draws": len(set(draws)), "seeds": len(set(seeds))}


def accuracy_tables(base: Sequence[Mapping] | Mapping[str, Mapping], kae: Sequence[Mapping],
                    main_lambda: Mapping[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The accuracy table (MLP vs KAE at each dataset's main lambda) and the long table of every lambda.

    `base` holds the base-model metrics JSON of every draw (keys dataset, draw, protocols; or a mapping
    dataset -> the one draw's metrics); `kae` the surrogate-accuracy JSON of every KAE of every draw. MLP
    rows: mean (population std) over the draws; KAE rows: over every (draw, KAE seed) pair. With one draw
    the MLP cell is its accuracy alone, as in the paper.
    """
    if isinstance(base, Mapping):
        base = [{**m, "dataset": ds} for ds, m in base.items()]
    mlp: dict[tuple, list[tuple[Any, float]]] = {}
    for m in base:
        for protocol, r in m["protocols"].items():
            mlp.setdefault((m["dataset"], protocol, r["split"]), []).append((m.get("draw"), r["macro"]))
    rows = []
    for (ds, protocol, split), items in mlp.items():
        m, s = mean_std(acc for _, acc in items)
        rows.append({"dataset": ds, "protocol": protocol, "split": split, "model": "MLP", "lambda_iso": np.nan,
                     **counts(d for d, _ in items), "acc_mean": m, "acc_std": s})
    groups: dict[tuple, list[tuple[Any, Any, float]]] = {}
    for k in kae:
        for protocol, r in k["protocols"].items():
            key = (k["dataset"], protocol, r["split"], float(k["lambda_iso"]))
            groups.setdefault(key, []).append((k.get("draw"), k.get("seed"), r["macro"]))
    for (ds, protocol, split, lam), items in groups.items():
        m, s = mean_std(acc for *_, acc in items)
        rows.append({"dataset": ds, "protocol": protocol, "split": split, "model": "KAE", "lambda_iso": lam,
                     **counts([d for d, *_ in items], [sd for _, sd, _ in items]), "acc_mean": m, "acc_std": s})
    long = pd.DataFrame(rows)
    long["acc_mean"] = long["acc_mean"].round(6)
    long["acc_std"] = long["acc_std"].round(6)
    long["cell"] = [cell(m, s) if mod == "KAE" or n > 1 else f"{m:.2f}"
                    for m, s, mod, n in zip(long.acc_mean, long.acc_std, long.model, long.draws)]
    long = long.sort_values(["dataset", "protocol", "model", "lambda_iso"], ascending=[True, True, False, False],
                            na_position="first", kind="mergesort").reset_index(drop=True)
    is_main = long.apply(lambda r: r.model == "MLP" or r.lambda_iso == float(main_lambda[r.dataset]), axis=1)
    return long[is_main].reset_index(drop=True), long


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table: pandas' writer, each value as `fmt` prints it."""
    return df.map(fmt).to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


def to_latex(df: pd.DataFrame, caption: str = "") -> str:
    """A booktabs LaTeX table (pandas' writer: \\toprule, \\midrule, \\bottomrule), each value as `fmt`
    prints it, special characters escaped."""
    text = df.map(fmt).to_latex(index=False, escape=True, position="t",
                                caption=_latex_escape(caption) if caption else None)
    return text if text.endswith("\n") else text + "\n"


def _latex_escape(text: str) -> str:
    return "".join({"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$"}.get(c, c) for c in str(text))


def fmt(v) -> str:
    """Text of one table value: floats with up to 6 significant digits, NaN as '-'."""
    if isinstance(v, (float, np.floating)):
        return "-" if np.isnan(v) else f"{v:.6g}"
    return str(v)


def write_table(df: pd.DataFrame, csv_path: str | Path, md_path: str | Path | None = None,
                tex_path: str | Path | None = None, caption: str = "", provenance: Mapping | None = None) -> None:
    """Write a table as CSV (+ Markdown and LaTeX), with a provenance sidecar `<csv>.provenance.json`."""
    write_text(df.to_csv(index=False, float_format="%.6g", lineterminator="\n"), csv_path)
    if md_path:
        write_text(to_markdown(df), md_path)
    if tex_path:
        write_text(to_latex(df, caption), tex_path)
    if provenance is not None:
        write_json(provenance, str(csv_path) + ".provenance.json")


# draw: the base network's draw; seed: the KAE's seed (for base layers: the draw's, the network's seed)
TABLE_COLUMNS = ["dataset", "source", "draw", "seed", "step", "eps", "betti0", "lambda_iso", "n", "metric"]


# The columns that name a row of the unlearning tables, repeated in their timing tables.
TIMING_KEYS = ("dataset", "protocol", "split", "method", "target_class", "n_seeds", "draws", "seeds")


def is_timing(column: str) -> bool:
    """A column that measures time: seconds (wall, CPU, preparation; `*_s` in the wall-time table) and the
    speed-ups derived from them."""
    return "seconds" in column or column.startswith("speedup") or column.endswith("_s")


def split_timings(df: pd.DataFrame, keys: Sequence[str] = TIMING_KEYS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the table without its timing columns, the keys and the timing columns): results are equal from run
    to run on the same machine and software, measured times are not, so they are written to files apart."""
    timing = [c for c in df.columns if is_timing(c)]
    return df.drop(columns=timing), df[[k for k in keys if k in df.columns] + timing]


ISOMETRY_METRICS = [
    "bottleneck_h0", "bottleneck_h1", "wasserstein_h0", "wasserstein_h1", "distortion",
    "betti0_curve_l1", "betti1_curve_l1",
]


def topology_tables(parts: Sequence[pd.DataFrame], sources: Mapping[str, str] | None = None,
                    n_train: Mapping[str, int | None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long table (one row per model, draw, seed and step) and the summary over draws and seeds.

    Summary: per dataset, source, lambda_iso and step, beta_0 mean, min and max over the base draws (layers)
    or every (draw, KAE seed) pair (iterates), with `n_seeds` (models), `draws` and `seeds` (KAE seeds; NaN
    for layers), and the published value (`kaepipe.published.published_topology`: the dataset's data source
    `sources[dataset]`, default its name, and its training size `n_train`). Parts without a `draw` column
    count as one draw.
    """
    parts = [p if "draw" in p else p.assign(draw=pd.array([pd.NA] * len(p), dtype="Int64")) for p in parts]
    long = pd.concat(list(parts), ignore_index=True)[TABLE_COLUMNS]
    long = long.sort_values(["dataset", "source", "lambda_iso", "draw", "seed", "step"],
                            ascending=[True, False, True, True, True, True],
                            kind="mergesort", na_position="first").reset_index(drop=True)
    keys = ["dataset", "source", "lambda_iso", "eps", "metric", "step"]
    summary = (long.groupby(keys, dropna=False, sort=False)
               .agg(n=("n", "first"), n_seeds=("betti0", "size"),
                    draws=("draw", lambda v: v.nunique(dropna=False)),
                    seeds=("seed", lambda v: v.nunique(dropna=False)),
                    betti0_mean=("betti0", "mean"), betti0_min=("betti0", "min"), betti0_max=("betti0", "max"))
               .reset_index())
    summary["seeds"] = summary["seeds"].where(summary["source"] != "mlp").astype(float)
    sources, n_train = sources or {}, n_train or {}
    summary["published"] = [published_topology(sources.get(r.dataset, r.dataset), r.source, int(r.step), float(r.eps),
                                               r.metric, n_train.get(r.dataset)) for r in summary.itertuples()]
    return long, summary


def isometry_tables(results: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-KAE rows and the table of mean (population std) over every (draw, KAE seed) pair per dataset and
    lambda_iso (with `n_seeds`, `draws` and `seeds`).

    Also returns, per dataset and metric, Spearman's rank correlation between lambda_iso and the
    mean distance (negative: the distance shrinks as lambda_iso grows, as the paper claims).
    """
    rows = []
    for r in results:
        row = {"dataset": r["dataset"], "lambda_iso": float(r["lambda_iso"]), "draw": r.get("draw"),
               "seed": int(r["seed"]),
               "points": r["points"], "threshold_original": r["threshold"]["original"],
               "threshold_encoded": r["threshold"]["encoded"], "common_threshold": r["common_threshold"]}
        row.update({m: float(r.get(m, float("nan"))) for m in ISOMETRY_METRICS})
        rows.append(row)
    long = pd.DataFrame(rows)
    long["draw"] = long["draw"].astype("Int64")
    long = long.sort_values(["dataset", "lambda_iso", "draw", "seed"], ascending=[True, False, True, True],
                            kind="mergesort", na_position="first").reset_index(drop=True)
    agg = []
    for (dataset, lam), g in long.groupby(["dataset", "lambda_iso"], sort=False):
        row = {"dataset": dataset, "lambda_iso": lam, **counts(g["draw"].tolist(), g["seed"].tolist()),
               "points": int(g["points"].iloc[0]),
               "threshold_original": float(g["threshold_original"].iloc[0]),
               "threshold_encoded_mean": float(g["threshold_encoded"].mean())}
        for m in ISOMETRY_METRICS:
            v = g[m].to_numpy(np.float64)
            row[f"{m}_mean"] = float(np.mean(v))
            row[f"{m}_std"] = float(np.std(v, ddof=0))
        agg.append(row)
    table = pd.DataFrame(agg)
    trend: dict[str, dict[str, float]] = {}
    for dataset, g in table.groupby("dataset", sort=False):
        trend[dataset] = {}
        for m in ISOMETRY_METRICS:
            if len(g) >= 2 and g[f"{m}_mean"].notna().all() and g[f"{m}_mean"].nunique() > 1:
                trend[dataset][m] = float(g["lambda_iso"].rank().corr(g[f"{m}_mean"].rank()))  # Spearman
            else:
                trend[dataset][m] = float("nan")
    return long, table, trend


def isometry_markdown(table: pd.DataFrame, trend: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """Markdown: mean (std) cells per dataset and lambda_iso, then the rank correlations with lambda_iso."""

    cells = table[["dataset", "lambda_iso", "n_seeds", "draws", "seeds", "points", "threshold_original",
                   "threshold_encoded_mean"]].copy()
    for m in ISOMETRY_METRICS:
        cells[m] = [f"{a:.{digits}g} ({b:.{digits}g})" if np.isfinite(a) else "-"
                    for a, b in zip(table[f"{m}_mean"], table[f"{m}_std"])]
    lines = ["Isometry study: phi(x_L) against x_L, mean (population std) over every (base draw, KAE seed) pair.", "",
             to_markdown(cells), "Spearman rank correlation between lambda_iso and the mean "
             "(negative: closer to the original as lambda_iso grows, the paper's claim).", ""]
    corr = pd.DataFrame([{"dataset": d, **dict(t)} for d, t in trend.items()])
    lines.append(to_markdown(corr) if len(corr) else "(no data)\n")
    return "\n".join(lines)


def transition(before: Sequence[float], after: Sequence[float], digits: int = 2) -> str:
    """'98.78 (1.18) -> 85.01 (1.90)': mean (population std) before and after."""

    return f"{cell(*mean_std(before), digits)} -> {cell(*mean_std(after), digits)}"


def editing_tables(edits: Sequence[Mapping], sources: Mapping[str, str]):
    """The editing table (one row per dataset, protocol, method and target class: mean (population std) over
    every edit, i.e. every (base draw, KAE seed) pair) and its per-class table."""

    groups: dict[tuple, list[tuple[Mapping, Mapping, Mapping]]] = {}
    for e in edits:
        for method, m in e["methods"].items():
            for protocol, r in m["protocols"].items():
                key = (e["dataset"], protocol, r["split"], method, int(e["target_class"]))
                groups.setdefault(key, []).append((m, r, e))
    rows, per_class = [], []
    for (dataset, protocol, split, method, target), items in sorted(groups.items()):
        ms, rs = [m for m, _, _ in items], [r for _, r, _ in items]
        n = counts([e.get("draw") for *_, e in items], [e.get("seed") for *_, e in items])
        col = {k: [r[k] for r in rs] for k in ("target_before", "target_after", "retained_before", "retained_after")}
        secs = [m["edit_seconds"] for m in ms]
        row = {"dataset": dataset, "protocol": protocol, "split": split, "method": method, "target_class": target,
               **n,
               "target": transition(col["target_before"], col["target_after"]),
               "retained": transition(col["retained_before"], col["retained_after"]),
               "edit_seconds": round(mean_std(secs)[0], 6),
               "published": editing_text(sources.get(dataset, dataset), target, method, protocol)}
        for k, v in col.items():
            row[f"{k}_mean"], row[f"{k}_std"] = (round(x, 6) for x in mean_std(v))
        row["edit_cpu_seconds"] = round(mean_std([m.get("edit_cpu_seconds", np.nan) for m in ms])[0], 6)
        row["prepare_seconds"] = round(mean_std([m["prepare_seconds"] for m in ms])[0], 6)
        row["settings"] = ms[0]["settings_text"]
        rows.append(row)
        n_classes = len(rs[0]["per_class_before"])
        for c in range(n_classes):
            b = [r["per_class_before"][c] for r in rs]
            a = [r["per_class_after"][c] for r in rs]
            if any(v is None for v in a + b):
                continue
            per_class.append({"dataset": dataset, "protocol": protocol, "split": split, "method": method,
                              "target_class": target, "class": c, "is_target": c == target, **n,
                              "cell": transition(b, a),
                              **dict(zip(("before_mean", "before_std"), mean_std(b))),
                              **dict(zip(("after_mean", "after_std"), mean_std(a)))})
    return pd.DataFrame(rows), pd.DataFrame(per_class)


def ratio(num: float, den: float) -> float:
    """num / den rounded to 0.1, NaN when either is missing or den is not positive."""
    num, den = float(num), float(den)
    return round(num / den, 1) if np.isfinite(num) and np.isfinite(den) and den > 0 else float("nan")


def baseline_table(baselines: Sequence[Mapping], editing) -> pd.DataFrame:
    """Baselines and edits side by side per dataset, protocol and target class, with the edits' speed-ups.

    A baseline row is the mean (population std) over the base draws (one baseline per draw); its seconds
    the mean over them."""

    groups: dict[tuple, list[tuple[Mapping, Mapping]]] = {}
    for b in baselines:
        for protocol, r in b["protocols"].items():
            key = (b["dataset"], protocol, r["split"], b["method"], int(b["target_class"]))
            groups.setdefault(key, []).append((b, r))
    rows = []
    for (dataset, protocol, split, method, target), items in groups.items():
        bs, rs = [b for b, _ in items], [r for _, r in items]
        rows.append({"dataset": dataset, "protocol": protocol, "split": split, "method": method,
                     "target_class": target, **counts(b.get("draw") for b in bs),
                     "target": transition([r["target_before"] for r in rs], [r["target_after"] for r in rs]),
                     "retained": transition([r["retained_before"] for r in rs], [r["retained_after"] for r in rs]),
                     "seconds": round(mean_std(b["seconds"] for b in bs)[0], 6),
                     "cpu_seconds": round(mean_std(b.get("cpu_seconds", np.nan) for b in bs)[0], 6)})
    base_df = pd.DataFrame(rows)
    for e in editing.itertuples(index=False):
        row = {"dataset": e.dataset, "protocol": e.protocol, "split": e.split, "method": f"edit:{e.method}",
               "target_class": e.target_class, "n_seeds": e.n_seeds, "draws": e.draws, "seeds": e.seeds,
               "target": e.target, "retained": e.retained,
               "seconds": e.edit_seconds, "cpu_seconds": e.edit_cpu_seconds, "prepare_seconds": e.prepare_seconds}
        for kind in BASELINES:
            match = base_df[(base_df.dataset == e.dataset) & (base_df.protocol == e.protocol)
                            & (base_df.target_class == e.target_class) & (base_df.method == kind)] \
                if len(base_df) else base_df
            ok = len(match) > 0
            row[f"speedup_vs_{kind}"] = ratio(match.seconds.iloc[0] if ok else np.nan, e.edit_seconds)
            row[f"speedup_vs_{kind}_cpu"] = ratio(match.cpu_seconds.iloc[0] if ok else np.nan, e.edit_cpu_seconds)
            row[f"speedup_vs_{kind}_with_prepare"] = ratio(match.seconds.iloc[0] if ok else np.nan,
                                                          e.edit_seconds + e.prepare_seconds)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:  # no baseline and no edit (no dataset with an `unlearn` block)
        return pd.DataFrame(columns=["dataset", "protocol", "split", "method", "target_class", "n_seeds", "draws",
                                     "seeds", "target", "retained"])
    order = {m: i for i, m in enumerate(BASELINES)}
    out["_o"] = [order.get(m, len(order)) for m in out.method]
    out = out.sort_values(["dataset", "protocol", "target_class", "_o", "method"], kind="mergesort")
    return out.drop(columns="_o").reset_index(drop=True)


def study_table(frames: Sequence) -> pd.DataFrame:
    """Mean (population std) over every (base draw, KAE seed) pair of every study setting, with the retained
    classes' loss and whether the setting meets the goal (target <= 5 %, retained loss <= 1 point, both on
    average)."""

    if not frames:
        return pd.DataFrame()
    df = pd.concat([f if "draw" in f else f.assign(draw=None) for f in frames], ignore_index=True)
    df["retained_loss"] = df["retained_before"] - df["retained_after"]
    df["model"] = [f"{d}/{s}" for d, s in zip(df["draw"], df["seed"])]
    keys = ["dataset", "protocol", "split", "target_class", "targets", "reg", "strength", "rank"]
    agg = df.groupby(keys, sort=True).agg(
        n_seeds=("model", "nunique"), draws=("draw", lambda v: v.nunique(dropna=False)),
        seeds=("seed", "nunique"), target_before=("target_before", "mean"),
        target_after_mean=("target_after", "mean"), target_after_std=("target_after", lambda v: v.std(ddof=0)),
        retained_before=("retained_before", "mean"), retained_after_mean=("retained_after", "mean"),
        retained_after_std=("retained_after", lambda v: v.std(ddof=0)),
        retained_loss_mean=("retained_loss", "mean"), retained_loss_max=("retained_loss", "max"),
        target_after_max=("target_after", "max")).reset_index()
    agg["meets_goal"] = (agg.target_after_mean <= 5.0) & (agg.retained_loss_mean <= 1.0)
    num = agg.select_dtypes("float").columns
    agg[num] = agg[num].round(4)
    return agg
