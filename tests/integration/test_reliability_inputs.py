"""Reliability, round two: the workflow's inputs. A changed IDX file reruns what depends on it and a
damaged one is then refused; a dataset the schema accepts runs whatever optional block it leaves out."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_CONFIGS

IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
       "t10k-labels-idx1-ubyte.gz")


def snakemake(workdir: Path, *args: str, config: tuple[str, ...] = (), overlay: str | None = None
              ) -> subprocess.CompletedProcess:
    """The tiny config (+ an overlay file) in `workdir` (targets first: --config swallows what follows)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args,
           "--configfile", *TINY_CONFIGS, *([overlay] if overlay else []), "--config", *config]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: count} of the 'Job stats' table of a dry run ({} when there is nothing to do)."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    if "Job stats:" not in text:
        assert "Nothing to be done" in text, text[-4000:]
        return {}
    stats = text.split("Job stats:", 1)[1].splitlines()
    jobs = {}
    for line in stats[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m or m.group(1) == "total":
            break
        jobs[m.group(1)] = int(m.group(2))
    return jobs


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_md5sums(root: Path) -> None:
    (root / "MD5SUMS").write_text("".join(f"{md5(root / n)}  {n}\n" for n in IDX))


# --- item 7: changed or damaged data triggers a rerun --------------------------------------------

@pytest.mark.slow
def test_changed_idx_file_reruns_the_split_and_its_dependants_and_a_damaged_one_is_refused(tmp_path, mnist_root):
    root = tmp_path / "mnist"
    root.mkdir()
    for name in (*IDX, "MD5SUMS"):
        shutil.copyfile(mnist_root / name, root / name)
    work = tmp_path / "work"
    work.mkdir()
    target = "results/mnist/draw0/base/metrics.json"
    config = (f"mnist_root={root}", "run=[mnist]")

    def dry() -> dict[str, int]:
        return planned_jobs(snakemake(work, target, "-n", config=config))

    first = snakemake(work, target, "--cores", "2", config=config)
    assert first.returncode == 0, first.stderr[-4000:]
    assert dry() == {}

    # another valid file (the same labels, compressed differently) with its checksum: reruns and is accepted
    labels = root / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    write_md5sums(root)  # MD5SUMS is an input of both splits
    assert dry() == {"dataset": 2, "base_model": 1}
    before = (work / "results/mnist/data/train.parquet").stat().st_mtime_ns
    rerun = snakemake(work, target, "--cores", "2", config=config)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert (work / "results/mnist/data/train.parquet").stat().st_mtime_ns > before
    assert dry() == {}

    # another folder (the offline copy, same files but another path): params and input files changed
    other = planned_jobs(snakemake(work, target, "-n", config=(f"mnist_root={mnist_root}", "run=[mnist]")))
    assert other == {"dataset": 2, "base_model": 1}

    # a truncated file: its split (only) runs again, and the MD5 check refuses the file, naming it
    images = root / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:5000])
    assert dry() == {"dataset": 1, "base_model": 1}
    failed = snakemake(work, target, "--cores", "2", config=config)
    assert failed.returncode != 0
    log = (work / "results/logs/dataset/mnist_test.log").read_text()
    for text in (failed.stderr, log):
        assert f"{images}: MD5 checksum mismatch" in text, text[-3000:]


def test_without_a_folder_the_download_is_a_rule_whose_files_the_dataset_rule_reads(tmp_path):
    proc = snakemake(tmp_path, "results/mnist/data/train.parquet", "-n", config=("run=[mnist]",))  # no folder given
    assert planned_jobs(proc) == {"download_idx": 1, "dataset": 1}
    text = proc.stdout + proc.stderr
    assert "input: results/cache/mnist/train-images-idx3-ubyte.gz, results/cache/mnist/train-labels-idx1-ubyte.gz" \
        in text


def test_a_missing_idx_file_stops_the_dry_run_naming_it(tmp_path, mnist_root):
    root = tmp_path / "mnist"
    root.mkdir()
    for name in IDX[1:]:
        shutil.copyfile(mnist_root / name, root / name)
    proc = snakemake(tmp_path, "results/mnist/data/train.parquet", "-n", config=(f"mnist_root={root}", "run=[mnist]"))
    assert proc.returncode != 0
    assert f"{root / IDX[0]}: file not found" in proc.stdout + proc.stderr


# --- item 14: every dataset the schema accepts runs ---------------------------------------------

PLAIN = """
run: [plain]
datasets:
  plain:                        # no `unlearn` block, a `topology` block without eps
    source: yinyang
    classes: 3
    splits: {train: {size: 600, seed: 42}, test: {size: 300, seed: 40}}
    evaluation: {paper: train, heldout: test}
    base: {width: 10, blocks: 5, epochs: 60, batch_size: 128, lr: 0.05}
    preprocess: {pca_dim: 10}
    kae: {hidden: 30, latent: 20, k: 100, lambda_iso: [1], main_lambda_iso: 1, seeds: [21], epochs: 20,
          batch_size: 256, lr: 0.05}
    topology: {isometry: {points: 200, max_edges: 4000}}
"""


def plain_config(tmp_path: Path, text: str = PLAIN) -> str:
    path = tmp_path / "plain.yaml"
    path.write_text(text)
    return str(path)


def test_a_dataset_without_unlearn_plans_no_editing_rules(tmp_path):
    """Dry run of a dataset without `unlearn`: no edit, baseline, study, editing table or figure; the
    summary and the other stages are planned."""
    proc = snakemake(tmp_path, "-n", overlay=plain_config(tmp_path))
    jobs = planned_jobs(proc)
    assert not [r for r in jobs if r.startswith("unlearn") or r == "figure_editing"], jobs
    assert {"summary", "topology_layers", "isometry", "figure_topology"} <= set(jobs)
    assert any(r == "kae" or r.startswith("kae_plain") for r in jobs), jobs  # one KAE per job, or a pack
    # next to a dataset with an `unlearn` block, the editing rules cover that dataset only
    both = planned_jobs(snakemake(tmp_path, "-n", overlay=plain_config(tmp_path), config=("run=[plain,yinyang]",)))
    assert both["unlearn_edit"] == 2 and both["figure_editing"] == 1  # yinyang: 2 seeds x class 2


def test_a_dataset_without_kae_is_refused_before_any_job(tmp_path):
    text = PLAIN.replace("    kae: {hidden: 30, latent: 20, k: 100, lambda_iso: [1], main_lambda_iso: 1, seeds: [21], "
                         "epochs: 20,\n          batch_size: 256, lr: 0.05}\n", "")
    assert "kae:" not in text
    proc = snakemake(tmp_path, "-n", overlay=plain_config(tmp_path, text))
    assert proc.returncode != 0
    assert "config key 'datasets.plain': 'kae' is a required property" in proc.stdout + proc.stderr


def test_default_eps_follows_the_source_and_the_size_of_the_preprocessing_fit():
    from kaepipe.errors import ConfigError
    from kaepipe.published import paper_eps_scale
    from kaepipe.settings import default_eps, topology_settings

    heldout = {"paper": "test", "heldout": "test"}

    def ds(source, size=None, **topology):
        return {"name": "d", "source": source, "evaluation": heldout, "splits": {"train": {"size": size, "seed": 0}},
                "topology": topology}

    assert default_eps(ds("mnist")) == {"layers": 0.166, "iterates": 0.14}  # 60k digits: the paper's
    assert default_eps(ds("mnist", 10000)) == {"layers": 0.4066, "iterates": 0.3429}  # the default config's
    assert default_eps(ds("mnist", 10000))["layers"] == pytest.approx(0.166 * paper_eps_scale(10000), rel=1e-3)
    assert default_eps(ds("fashion_mnist", 10000)) == default_eps(ds("mnist", 10000))
    assert default_eps(ds("yinyang", 5000)) == {"layers": 0.25, "iterates": 0.25}
    assert default_eps(ds("yinyang", 600))["layers"] == pytest.approx(0.25 * (5000 / 600) ** 0.5, rel=1e-3)
    assert default_eps({**ds("yinyang", 5000), "preprocess": {"frobenius": 10}})["layers"] == 0.025
    s = topology_settings(ds("yinyang", 600, eps_layers=0.5))
    assert s["eps_layers"] == 0.5 and s["eps_iterates"] == default_eps(ds("yinyang", 600))["iterates"]
    assert topology_settings(ds("yinyang", 600, metric="knn_geodesic"))["eps_layers"] == 1.0  # hops
    with pytest.raises(ConfigError, match=r"datasets\.d\.topology\.eps_layers"):
        default_eps(ds("cifar"))


@pytest.mark.slow
def test_a_dataset_without_unlearn_runs_to_the_summary(tmp_path):
    """`run` of a dataset without `unlearn` (and no eps): every job succeeds and summary.md is written."""
    proc = snakemake(tmp_path, "--cores", "2", overlay=plain_config(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = tmp_path / "results"
    md = (res / "summary.md").read_text()
    assert "Class unlearning" not in md and "Surrogate accuracy" in md
    assert not (res / "tables" / "editing.csv").exists()
    import pandas as pd

    layers = pd.read_parquet(res / "plain/draw0/topology/layers.parquet")
    assert layers["eps"].unique().tolist() == [0.7217]  # 0.25 x sqrt(5000 / 600)
