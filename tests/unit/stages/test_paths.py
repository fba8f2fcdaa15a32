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


def two_draws() -> dict:
    """The default config with two base-network draws of Yin-Yang (3 and 0) and MNIST's one."""
    cfg = default_config()
    cfg["datasets"]["yinyang"]["base"]["seeds"] = [3, 0]
    return cfg


def test_fill_and_partial():
    assert P.fill(P.KAE_MODEL, dataset="mnist", draw=0, lam="0.001", seed=21) == \
        "results/mnist/draw0/kae/iso0.001/seed21/model.safetensors"
    assert P.partial(P.REPS, split="train") == "results/{dataset}/draw{draw}/reps/train.pt"
    assert P.figure("layers", "png", "yinyang") == "results/figures/layers_yinyang.png"


def test_every_result_after_the_data_lives_under_a_draw():
    """The data splits are shared by the draws; every other per-dataset result path has a {draw} level."""
    templates = {name: t for name, t in vars(P).items() if isinstance(t, str) and t.startswith("results/{dataset}/")}
    assert templates.pop("SPLIT") == "results/{dataset}/data/{split}.parquet"
    assert len(templates) > 20
    for name, t in templates.items():
        assert t.startswith("results/{dataset}/draw{draw}"), name


def test_paths_expand_over_the_draws():
    """Two draws: every base network, representation, KAE, edit and baseline twice, in distinct files, from
    the same data splits; MNIST keeps its one draw."""
    cfg = two_draws()
    assert P.draws(cfg, "yinyang") == [3, 0] and P.draws(cfg, "mnist") == [0] and P.first_draw(cfg, "yinyang") == 3
    one = default_config()
    for template in (P.KAE_MODEL, P.KAE_ACCURACY, P.TOPOLOGY_ITERATES, P.ISOMETRY_RESULTS):
        paths = P.kae_paths(cfg, ["yinyang"], template)
        assert len(paths) == len(set(paths)) == 2 * len(P.kae_paths(one, ["yinyang"], template))
        assert {p.split("/")[2] for p in paths} == {"draw3", "draw0"}
    assert P.kae_paths(cfg, ["yinyang"], P.KAE_MODEL, only_draws=[0]) == P.kae_paths(one, ["yinyang"], P.KAE_MODEL)
    out = P.final_outputs(cfg)
    assert len(out) == len(set(out))
    for draw in (3, 0):
        assert P.fill(P.BASE_METRICS, dataset="yinyang", draw=draw) in out
        assert P.fill(P.REPS, dataset="yinyang", draw=draw, split="test") in out
    assert not any("draw3" in f for f in out if "/mnist/" in f)
    assert not any("/data/" in f for f in out)  # the splits are inputs of both draws, made once
    edits = [p for p in P.edit_paths(cfg, P.EDIT) if "/yinyang/" in p]
    assert len(edits) == len(set(edits)) == 2 * len([p for p in P.edit_paths(one, P.EDIT) if "/yinyang/" in p])
    for d in (3, 0):
        items = P.edit_items(cfg, "yinyang", d)
        assert items and all(f"/draw{d}/" in i["kae"] and f"/draw{d}/" in i["edit"] for i in items)
    baselines = P.baseline_paths(cfg, P.BASELINE_METRICS)
    yy = [p for p in baselines if "/yinyang/" in p]
    assert len(yy) == len(set(yy)) == 2 * len([p for p in P.baseline_paths(one, P.BASELINE_METRICS) if "/yinyang/" in p])


def test_figures_show_the_first_draw():
    cfg = two_draws()
    first = "results/yinyang/draw3/"
    assert P.main_kae_file(cfg, "yinyang").startswith(first)
    assert P.edited_file(cfg, "yinyang").startswith(first)
    assert all(p.startswith(first) for p in P.iterate_tables(cfg, "yinyang"))
    assert all(p.startswith(first) for p in P.reps_files(cfg, "yinyang").values())
    assert all(p.startswith(first) for p in P.isometry_inputs(cfg, "yinyang").values())
    assert P.first_draw_file(cfg, P.BASE_CURVE, "mnist") == "results/mnist/draw0/base/curve.parquet"


def test_final_outputs_cover_every_stage_and_end_with_the_summary_and_the_timings():
    cfg = default_config()
    out = P.final_outputs(cfg)
    assert out[-2:] == [P.SUMMARY, P.TIMINGS] and len(out) == len(set(out))
    for d in cfg["run"]:
        assert P.fill(P.BASE_METRICS, dataset=d, draw=0) in out
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
    assert P.fill(P.KAE_MODEL, dataset="yinyang", draw=0, lam=lambda_tag(kae["lambda_iso"][0]),
                  seed=kae["seeds"][0]) == paths[0]


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
