"""The summary stage: every table against the published numbers, the configuration and the wall times."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from kaepipe.io import provenance, write_text
from kaepipe.report.summary import (
    NOTES,
    TABLE_TITLES,
    shown,
    summary_markdown,
    summary_tables,
    timings_markdown,
    walltime_table,
)
from kaepipe.report.tables import to_latex, to_markdown, write_table


def run_summary(config: Mapping, inputs: Mapping[str, str | None], out_md: str,
                out_tables: Mapping[str, Mapping[str, str]], figures: Sequence[str] = (),
                log=print) -> dict[str, pd.DataFrame]:
    """Write results/summary.md and each comparison table as CSV (every column and row), Markdown and LaTeX
    (the columns and rows summary.md shows). out_tables: name -> {"csv", "md", "tex"} paths for accuracy,
    topology, ...; a declared table whose stage wrote nothing is written empty. No measured time enters
    them (see `run_timings`): equal results give equal bytes."""

    tables = summary_tables(inputs, config)
    prov = provenance({"run": config.get("run"), "inputs": {k: v for k, v in inputs.items() if v}})
    views = {}
    for name, df in tables.items():
        views[name] = shown(name, df)
        caption = f"{TABLE_TITLES.get(name, name)}. Published vs ours; mean (population std) over seeds."
        paths = out_tables.get(name)
        if paths is None:
            log(f"table {name}: no output declared, only in summary.md")
            continue
        write_table(df, paths["csv"], provenance=prov)
        if paths.get("md"):
            write_text(to_markdown(views[name]), paths["md"])
        if paths.get("tex"):
            write_text(to_latex(views[name], caption), paths["tex"])
        log(f"{name}: {len(df)} rows")
    for name, paths in out_tables.items():
        if name not in tables:
            empty = pd.DataFrame({"note": [f"no {name} table in this workflow"]})
            write_table(empty, paths["csv"], paths.get("md"), paths.get("tex"), provenance=prov)
    notes = dict(NOTES)
    if "topology" in views and len(views["topology"]) < len(tables["topology"]):
        notes["topology"] += " Long KAE paths: 11 evenly spaced iterates shown; every step in the CSV."
    md = summary_markdown(views, notes, config, prov["versions"], prov["git_commit"], figures)
    write_text(md, out_md)
    return tables


def run_timings(benchmarks: Sequence[str], timing_tables: Mapping[str, str | None], out_md: str,
                out_walltime: Mapping[str, str], log=print) -> dict[str, pd.DataFrame]:
    """Write results/timings.md: the wall time of every stage (from the benchmark files, also as
    results/tables/timings_walltime.{csv,md}) and the timing tables of the stages that measure their own
    times (`timing_tables`: name -> CSV path, e.g. editing, baselines; None = not in this workflow)."""

    tables = {"walltime": walltime_table(benchmarks)}
    tables.update({name: pd.read_csv(path) for name, path in timing_tables.items() if path})
    write_table(tables["walltime"], out_walltime["csv"], out_walltime.get("md"))
    write_text(timings_markdown(tables), out_md)
    log(f"timings: {len(benchmarks)} benchmark files; tables {list(tables)}")
    return tables
