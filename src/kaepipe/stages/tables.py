"""The table stages: gather per-job results into results/tables (accuracy, topology, isometry, unlearning)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from kaepipe.config import dataset_sources
from kaepipe.errors import DataError
from kaepipe.io import provenance, read_json, read_parquet, write_json, write_text
from kaepipe.report.tables import (
    TABLE_COLUMNS,
    accuracy_tables,
    baseline_table,
    editing_tables,
    isometry_markdown,
    isometry_tables,
    split_timings,
    study_table,
    topology_tables,
    write_table,
)


def run_topology_tables(layer_tables: Sequence[str], iterate_tables: Sequence[str], out: Mapping[str, str],
                        config: Mapping | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collect the per-dataset and per-KAE Parquet tables into results/tables/topology*.csv (+ .md)."""

    parts = [read_parquet(p, TABLE_COLUMNS) for p in [*layer_tables, *iterate_tables]]
    datasets = (config or {}).get("datasets", {})
    n_train = {d: ((c.get("splits") or {}).get("train") or {}).get("size") for d, c in datasets.items()}
    long, summary = topology_tables(parts, dataset_sources(config or {}), n_train)
    prov = provenance({"topology": {d: (config or {}).get("datasets", {}).get(d, {}).get("topology")
                                    for d in long["dataset"].unique()}})
    write_table(long, out["csv"], provenance=prov)
    write_table(summary, out["summary"], out.get("md"), provenance=prov)
    return long, summary


def run_isometry_tables(metrics_paths: Sequence[str], out: Mapping[str, str]) -> pd.DataFrame:
    """Collect per-KAE isometry metrics into results/tables/isometry.{csv,md} and isometry_long.csv."""

    results = [r for p in metrics_paths for r in read_json(p)["results"]]
    long, table, trend = isometry_tables(results)
    prov = provenance({"inputs": list(metrics_paths)})
    write_table(table, out["csv"], provenance=prov)
    write_table(long, out["long"], provenance=prov)

    write_text(isometry_markdown(table, trend), out["md"])
    write_json({"spearman_lambda_vs_distance": trend}, str(out["csv"]) + ".trend.json")
    return table


def read_accuracy(path: str, required: Sequence[str]) -> dict:
    """An accuracy JSON (base metrics or a KAE's accuracy.json), naming the file and the key it lacks."""

    record = read_json(path)
    if not isinstance(record, dict):
        raise DataError(f"{path}: expected a JSON object with keys {list(required)}")
    missing = [k for k in required if k not in record]
    if missing:
        raise DataError(f"{path}: missing key(s) {missing}; found {sorted(record)[:12]}")
    protocols = record["protocols"]
    if not isinstance(protocols, dict) or not protocols:
        raise DataError(f"{path}: key 'protocols' must map each protocol to its split and accuracy")
    for name, r in protocols.items():
        for key, kind in (("split", str), ("macro", (int, float))):
            if not isinstance(r, dict) or key not in r:
                raise DataError(f"{path}: missing key 'protocols.{name}.{key}'")
            if not isinstance(r[key], kind) or isinstance(r[key], bool):
                raise DataError(f"{path}: key 'protocols.{name}.{key}' = {r[key]!r} is not a "
                                f"{'string' if kind is str else 'number'}")
    if "lambda_iso" in required and (isinstance(record["lambda_iso"], bool)
                                     or not isinstance(record["lambda_iso"], (int, float))):
        raise DataError(f"{path}: key 'lambda_iso' = {record['lambda_iso']!r} is not a number")
    return record


def run_accuracy_table(config: Mapping, base_metrics: Sequence[str], kae_accuracy: Sequence[str],
                       out: Mapping[str, str]) -> pd.DataFrame:
    """Aggregate the base-model (every draw's metrics.json) and surrogate accuracies of every dataset into the
    accuracy tables: MLP rows over the draws, KAE rows over every (draw, KAE seed) pair."""

    base = [read_accuracy(p, ("dataset", "protocols")) for p in base_metrics]
    kae = [read_accuracy(p, ("dataset", "lambda_iso", "protocols")) for p in kae_accuracy]
    datasets = list(dict.fromkeys(m["dataset"] for m in base))
    main = {ds: config["datasets"][ds]["kae"]["main_lambda_iso"] for ds in datasets}
    table, long = accuracy_tables(base, kae, main)
    prov = provenance({"datasets": {ds: config["datasets"][ds] for ds in datasets}})
    write_table(table, out["csv"], out["md"], out["tex"],
                "Macro accuracy (%) of the base MLP and of the KAE surrogate: mean (population std) over the "
                "base-network draws (MLP) and over every (draw, KAE seed) pair (KAE); draws and seeds say how many.",
                prov)
    write_table(long, out["long"], provenance=prov)
    return table


def run_unlearn_tables(config: Mapping, edit_paths: Sequence[str], baseline_paths: Sequence[str],
                       out: Mapping[str, str], study_paths: Sequence[str] = ()):
    """Aggregate every edit and baseline into the editing, per-class and baseline tables (and the study).

    The measured times (edit, preparation and baseline seconds, the edits' speed-ups) go to the timing
    tables `out["timings_editing"]` and `out["timings_baselines"]` (+ `_md`), not to the result tables."""

    edits = [read_json(p) for p in edit_paths]
    baselines = [read_json(p) for p in baseline_paths]
    datasets = sorted({e["dataset"] for e in edits} | {b["dataset"] for b in baselines})
    sources = {d: config["datasets"][d]["source"] for d in datasets}
    editing, per_class = editing_tables(edits, sources)
    table = baseline_table(baselines, editing)
    editing, editing_times = split_timings(editing)
    table, table_times = split_timings(table)
    prov = provenance({"datasets": {d: {"unlearn": config["datasets"][d].get("unlearn"),
                                        "kae": config["datasets"][d]["kae"]} for d in datasets}})
    write_table(editing, out["editing"], out["editing_md"], out["editing_tex"],
                "Class unlearning by editing the KAE's k-step operator: surrogate accuracy (%) of the target class "
                "and mean of the retained classes, before -> after, mean (population std) over every (base draw, KAE "
                "seed) pair.", prov)
    write_table(per_class, out["per_class"], provenance=prov)
    study_out = _get(out, "study")
    if study_out:
        write_table(study_table([read_parquet(p) for p in study_paths]), study_out, provenance=prov)
    write_table(table, out["baselines"], out["baselines_md"], out["baselines_tex"],
                "Unlearning baselines on the base network (retrain without the class, fine-tune on the retained "
                "classes; mean (population std) over the base draws) against the edits.", prov)
    for name, times in (("timings_editing", editing_times), ("timings_baselines", table_times)):
        if _get(out, name):
            write_table(times, _get(out, name), _get(out, f"{name}_md"), provenance=prov)
    return editing, table


def _get(out: Mapping[str, str], name: str) -> str | None:
    """An output path by name, None when not declared (a dict, or a Snakemake Namedlist)."""
    try:
        return out[name]
    except (KeyError, IndexError, AttributeError):
        return None
