"""Result paths: one set of templates (kaepipe.stages.paths) drives the rules and the final outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from kaepipe.config import lambda_tag
from kaepipe.stages import paths as P

REPO = Path(__file__).resolve().parents[3]


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_fill_and_partial():
    assert P.fill(P.KAE_MODEL, dataset="mnist", lam="0.001", seed=21) == "results/mnist/kae/iso0.001/seed21/model.safetensors"
    assert P.partial(P.REPS, split="train") == "results/{dataset}/reps/train.pt"
    assert P.figure("layers", "png", "yinyang") == "results/figures/layers_yinyang.png"


def test_final_outputs_cover_every_stage_and_end_with_the_summary_and_the_timings():
    cfg = default_config()
    out = P.final_outputs(cfg)
    assert out[-2:] == [P.SUMMARY, P.TIMINGS] and len(out) == len(set(out))
    for d in cfg["run"]:
        assert P.fill(P.BASE_METRICS, dataset=d) in out
        for name in ("layers", "training", "path", "isometry", "topology", "editing"):
            assert P.figure(name, "pdf", d) in out
    assert {P.table("accuracy.csv"), P.table("editing.csv"), P.table("unlearning_baselines.csv")} <= set(out)
    cfg["datasets"]["yinyang"].pop("unlearn")
    cfg["datasets"]["mnist"].pop("unlearn")
    out = P.final_outputs(cfg)
    assert P.table("editing.csv") not in out and not any("editing_" in f for f in out)
    assert "editing" not in P.summary_inputs(cfg)


def test_kae_grid_expansion_matches_the_config():
    cfg = default_config()
    kae = cfg["datasets"]["yinyang"]["kae"]
    paths = P.kae_paths(cfg, ["yinyang"], P.KAE_MODEL)
    assert len(paths) == len(kae["lambda_iso"]) * len(kae["seeds"])
    assert P.fill(P.KAE_MODEL, dataset="yinyang", lam=lambda_tag(kae["lambda_iso"][0]), seed=kae["seeds"][0]) == paths[0]


def test_the_rule_files_spell_no_result_path():
    """Every results/ path in workflow/rules comes from kaepipe.stages.paths (logs and benchmarks aside)."""
    offenders = []
    for f in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if '"results/' in line and "results/logs/" not in line and "results/benchmarks" not in line \
                    and "results/cache" not in line:
                offenders.append(f"{f.name}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_parse_time_imports_are_light():
    """What the Snakefile imports at parse time (config, paths, settings, the data-source registry) pulls in
    neither torch nor scipy nor matplotlib (numpy and pandas are cheap next to Snakemake itself)."""
    code = ("import sys, kaepipe.config, kaepipe.stages.paths, kaepipe.settings, kaepipe.published;"
            "print(sorted(m for m in ('torch', 'scipy', 'matplotlib', 'gudhi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
