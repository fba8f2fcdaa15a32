"""Tables: mean (population std) over seeds, the accuracy table, and Markdown/LaTeX renderings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kaepipe.io import write_json, write_text


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof = 0), as in the paper's tables."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=0))


def cell(mean: float, std: float, digits: int = 2) -> str:
    """Format like the paper: '98.75 (0.15)'."""
    return f"{mean:.{digits}f} ({std:.{digits}f})"


def accuracy_tables(base: Mapping[str, Mapping], kae: Sequence[Mapping],
                    main_lambda: Mapping[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The accuracy table (MLP vs KAE at each dataset's main lambda) and the long table of every lambda.

    `base` maps dataset -> base-model metrics JSON; `kae` holds the surrogate-accuracy JSON of every KAE.
    """
    rows = []
    for ds, m in base.items():
        for protocol, r in m["protocols"].items():
            rows.append({"dataset": ds, "protocol": protocol, "split": r["split"], "model": "MLP",
                         "lambda_iso": np.nan, "n_seeds": 1, "acc_mean": r["macro"], "acc_std": 0.0})
    groups: dict[tuple, list[float]] = {}
    for k in kae:
        for protocol, r in k["protocols"].items():
            key = (k["dataset"], protocol, r["split"], float(k["lambda_iso"]))
            groups.setdefault(key, []).append(r["macro"])
    for (ds, protocol, split, lam), accs in groups.items():
        m, s = mean_std(accs)
        rows.append({"dataset": ds, "protocol": protocol, "split": split, "model": "KAE", "lambda_iso": lam,
                     "n_seeds": len(accs), "acc_mean": m, "acc_std": s})
    long = pd.DataFrame(rows)
    long["acc_mean"] = long["acc_mean"].round(6)
    long["acc_std"] = long["acc_std"].round(6)
    long["cell"] = [cell(m, s) if mod == "KAE" else f"{m:.2f}"
                    for m, s, mod in zip(long.acc_mean, long.acc_std, long.model)]
    long = long.sort_values(["dataset", "protocol", "model", "lambda_iso"], ascending=[True, True, False, False],
                            na_position="first", kind="mergesort").reset_index(drop=True)
    is_main = long.apply(lambda r: r.model == "MLP" or r.lambda_iso == float(main_lambda[r.dataset]), axis=1)
    return long[is_main].reset_index(drop=True), long


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, caption: str = "") -> str:
    """A booktabs LaTeX tabular of the table."""
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\toprule",
             " & ".join(esc(c) for c in df.columns) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(esc(fmt(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + esc(caption) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


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


def run_accuracy_table(config: Mapping, base_metrics: Mapping[str, str], kae_accuracy: Sequence[str],
                       out: Mapping[str, str]) -> pd.DataFrame:
    """Aggregate the base-model and surrogate accuracies of every dataset into the accuracy tables."""
    from kaepipe.io import provenance, read_json

    base = {ds: read_json(p) for ds, p in base_metrics.items()}
    kae = [read_json(p) for p in kae_accuracy]
    main = {ds: config["datasets"][ds]["kae"]["main_lambda_iso"] for ds in base}
    table, long = accuracy_tables(base, kae, main)
    prov = provenance({"datasets": {ds: config["datasets"][ds] for ds in base}})
    write_table(table, out["csv"], out["md"], out["tex"],
                "Macro accuracy (%) of the base MLP and of the KAE surrogate, mean (population std) over seeds.",
                prov)
    write_table(long, out["long"], provenance=prov)
    return table
