"""Reliability, round two: what the outputs carry. Every Parquet file has its provenance; a rerun gives
byte-identical result tables, summary and checkpoints (measurements of time live in files of their own)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch

from kaepipe.io import parquet_metadata
from kaepipe.report.tables import is_timing
from kaepipe.tensor_io import load_safetensors, load_torch, save_safetensors, save_torch
from tests.conftest import REPO, run_snakemake

PROVENANCE_KEYS = {"config", "git_commit", "code_dirty", "versions"}


# --- item 5: provenance in every Parquet file ------------------------------------------------------

@pytest.mark.slow
def test_every_parquet_output_carries_its_provenance(tiny_run):
    files = sorted((tiny_run / "results").rglob("*.parquet"))
    missing = [str(p.relative_to(tiny_run)) for p in files
               if not set(parquet_metadata(p).get("provenance") or {}) >= PROVENANCE_KEYS]
    assert not missing, f"Parquet files without provenance: {missing}"
    names = {p.name for p in files} | {p.parent.name + "/" + p.name for p in files}
    # the kinds of the issue: KAE losses, base curve, representations, isometry diagrams and Betti curves,
    # the unlearning study (and the data splits and topology tables that had it already)
    for kind in ("losses.parquet", "base/curve.parquet", "reps/train.parquet", "reps/test.parquet",
                 "diagrams.parquet", "betti_curves.parquet", "study.parquet", "data/train.parquet",
                 "layers.parquet", "original_diagram.parquet"):
        assert kind in names, kind
    prov = parquet_metadata(tiny_run / "results/mnist/draw0/kae/iso0.001/seed21/losses.parquet")["provenance"]
    assert prov["config"]["seed"] == 21 and prov["config"]["kae"]["hidden"] == 48
    assert "torch" in prov["versions"]


# --- item 8: equal results, equal bytes; measured times apart ---------------------------------------

SAVE = """
import sys
import torch
from kaepipe.tensor_io import save_safetensors, save_torch
t = {"a.weight": torch.arange(12.0).reshape(3, 4), "b": torch.ones(2, dtype=torch.float64), "c": torch.arange(5)}
meta = {"architecture": {"width": 10, "blocks": 5}, "dataset": "yinyang", "seed": 21, "provenance": {"x": [1, 2]},
        "lambda_iso": 0.001, "model_class": "ResMLP", "train": {"lr": 0.1}, "zeta": "plain text",
        "k": 100, "epochs": 3, "target_class": 2}
save_safetensors(t, sys.argv[1] + ".safetensors", meta)
save_torch({"layers": t["a.weight"], "labels": t["c"]}, sys.argv[1] + ".pt")
"""


def test_checkpoints_are_byte_identical_across_processes(tmp_path):
    """safetensors orders its metadata by a per-process hash seed, torch names the zip's folder after the
    (random) temporary file: both are made canonical, so equal tensors and metadata give equal bytes."""
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", SAVE, str(tmp_path / name)], check=True, cwd=REPO)
    for ext in ("safetensors", "pt"):
        data = {(tmp_path / f"{n}.{ext}").read_bytes() for n in ("a", "b")}
        assert len(data) == 1, ext
    tensors, meta = load_safetensors(tmp_path / "a.safetensors")
    assert torch.equal(tensors["a.weight"], torch.arange(12.0).reshape(3, 4)) and tensors["c"].dtype == torch.int64
    assert meta["zeta"] == "plain text"
    raw = (tmp_path / "a.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == sorted(meta)  # in the file: sorted (safe_open returns a HashMap)
    assert torch.equal(load_torch(tmp_path / "a.pt")["labels"], torch.arange(5))


def test_safetensors_header_stays_readable_by_safetensors(tmp_path):
    from safetensors.torch import load_file

    t = {"w": torch.randn(3, 3, generator=torch.Generator().manual_seed(0)), "é": torch.zeros(1)}
    save_safetensors(t, tmp_path / "x.safetensors", {"ü": "ß", "k": {"a": 1}})
    loaded = load_file(str(tmp_path / "x.safetensors"))
    assert torch.equal(loaded["w"], t["w"]) and set(loaded) == {"w", "é"}
    assert (len((tmp_path / "x.safetensors").read_bytes()[8:]) - sum(v.numel() * 4 for v in t.values())) % 8 == 0
    save_torch(t, tmp_path / "x.pt")
    assert torch.equal(load_torch(tmp_path / "x.pt")["w"], t["w"])


def _outputs(root):
    """Every output a rerun must reproduce byte for byte: the tables (but the timing tables), summary.md, the
    checkpoints, representations and Parquet files, and the figures."""
    res = root / "results"
    files = [p for p in (res / "tables").iterdir() if not p.name.startswith("timings_")] + [res / "summary.md"]
    files += [p for p in res.rglob("*") if p.suffix in (".safetensors", ".pt", ".parquet", ".png", ".pdf")
              and "cache" not in p.parts]
    return sorted(p.relative_to(root) for p in files)


@pytest.mark.slow
def test_a_rerun_gives_byte_identical_tables_summary_and_checkpoints(tiny_run, tmp_path, mnist_root):
    run_snakemake(tmp_path, "--cores", "2", mnist_root=mnist_root)
    ours, theirs = _outputs(tmp_path), _outputs(tiny_run)
    assert ours == theirs
    kinds = {p.suffix for p in ours}
    assert {".csv", ".md", ".tex", ".json", ".safetensors", ".pt", ".parquet", ".png", ".pdf"} <= kinds
    differ = [str(p) for p in ours if (tmp_path / p).read_bytes() != (tiny_run / p).read_bytes()]
    assert not differ, f"files that differ between two runs: {differ}"
    # the measured times are in files of their own, and only there
    res = tiny_run / "results"
    for p in (res / "tables").glob("*.csv"):
        timing = [c for c in pd.read_csv(p).columns if is_timing(c)]
        assert bool(timing) == p.name.startswith("timings_"), (p.name, timing)
    assert "Wall time" not in (res / "summary.md").read_text()
    assert "## Wall time per stage" in (res / "timings.md").read_text()
    for name in ("timings_walltime", "timings_editing", "timings_unlearning_baselines"):
        assert (res / "tables" / f"{name}.csv").is_file() and (res / "tables" / f"{name}.md").is_file()


def test_run_timings_writes_every_measured_time_apart(tmp_path):
    from kaepipe.report.tables import split_timings
    from kaepipe.stages.summary import run_timings

    bench = tmp_path / "benchmarks" / "kae" / "x.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\n12.5\t0:00:12\n")
    table = pd.DataFrame({"dataset": ["yy"], "method": ["edit:paper"], "target": ["99 -> 0"], "seconds": [0.001],
                          "speedup_vs_retrain": [9000.0], "cpu_seconds": [0.001]})
    results, times = split_timings(table)
    assert list(results.columns) == ["dataset", "method", "target"]
    assert list(times.columns) == ["dataset", "method", "seconds", "speedup_vs_retrain", "cpu_seconds"]
    times.to_csv(tmp_path / "timings_baselines.csv", index=False)
    out = {"csv": str(tmp_path / "timings_walltime.csv"), "md": str(tmp_path / "timings_walltime.md")}
    run_timings([str(bench)], {"baselines": str(tmp_path / "timings_baselines.csv"), "editing": None},
                str(tmp_path / "timings.md"), out, log=lambda *_: None)
    md = (tmp_path / "timings.md").read_text()
    assert "## Wall time per stage" in md and re.search(r"^\| kae +\| 1 +\| 12\.5 +\| 12\.5 +\| 12\.5 +\|", md, flags=re.MULTILINE) and "9000" in md
    assert "Edits:" not in md  # no editing timings in this workflow
    assert pd.read_csv(out["csv"]).total_s.tolist() == [12.5, 12.5]
