"""Reliability, round two: what the outputs carry. Every Parquet file has its provenance; a rerun gives
byte-identical result tables, summary and checkpoints (measurements of time live in files of their own)."""

from __future__ import annotations

import pytest

from kaepipe.io import parquet_metadata

pytestmark = pytest.mark.slow

PROVENANCE_KEYS = {"config", "git_commit", "code_dirty", "versions"}


# --- item 5: provenance in every Parquet file ------------------------------------------------------

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
    prov = parquet_metadata(tiny_run / "results/mnist/kae/iso0.001/seed21/losses.parquet")["provenance"]
    assert prov["config"]["seed"] == 21 and prov["config"]["kae"]["hidden"] == 48
    assert "torch" in prov["versions"]
