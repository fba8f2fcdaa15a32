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

from tests.conftest import REPO, TINY_CONFIGS, offline_mnist

IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
       "t10k-labels-idx1-ubyte.gz")


def snakemake(workdir: Path, *args: str, config: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The tiny config in `workdir` (targets and options first: --config swallows what follows)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args,
           "--configfile", *TINY_CONFIGS, "--config", *config]
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
def test_changed_idx_file_reruns_the_split_and_its_dependants_and_a_damaged_one_is_refused(tmp_path):
    root = tmp_path / "mnist"
    root.mkdir()
    for name in (*IDX, "MD5SUMS"):
        shutil.copyfile(offline_mnist() / name, root / name)
    work = tmp_path / "work"
    work.mkdir()
    target = "results/mnist/base/metrics.json"
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
    other = planned_jobs(snakemake(work, target, "-n", config=(f"mnist_root={offline_mnist()}", "run=[mnist]")))
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


def test_a_missing_idx_file_stops_the_dry_run_naming_it(tmp_path):
    root = tmp_path / "mnist"
    root.mkdir()
    for name in IDX[1:]:
        shutil.copyfile(offline_mnist() / name, root / name)
    proc = snakemake(tmp_path, "results/mnist/data/train.parquet", "-n", config=(f"mnist_root={root}", "run=[mnist]"))
    assert proc.returncode != 0
    assert f"{root / IDX[0]}: file not found" in proc.stdout + proc.stderr
