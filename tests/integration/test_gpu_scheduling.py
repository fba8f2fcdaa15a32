"""GPU-aware scheduling and the cluster files.

* The rules that train or run networks declare the `gpu` resource, and the shipped SLURM profile
  (profiles/slurm) requests a GPU for exactly those rules.
* `snakemake --cores 8 --resources gpu=1` never runs two GPU jobs at once, while CPU jobs run beside
  each other: a real run of the tiny config, read from Snakemake's log, in which every job's block
  ("rule X: ... jobid: N ... resources: ..., gpu=1") is printed when the scheduler starts it and
  "Finished jobid: N" once its process has exited and its resources are freed.
* environment.yml and the `slurm` extra name what a cluster needs.

The real SLURM run is tests/slurm/run_slurm_test.sh (called from .ci/run).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, snakemake_cmd

NETWORK_RULES = {"base_model", "representations", "kae", "surrogate_accuracy"}
CPU_RULES = {"dataset", "accuracy_table"}
PROFILE = REPO / "profiles" / "slurm" / "profile.yaml"


def snakemake(workdir: Path, *args: str, mnist_root: Path) -> str:
    """Run the Snakefile on the tiny config in `workdir`; return Snakemake's log (stderr + stdout)."""
    proc = subprocess.run(snakemake_cmd(workdir, *args, mnist_root=mnist_root), capture_output=True, text=True,
                          cwd=workdir, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc.stderr + proc.stdout


def job_blocks(log: str) -> list[dict]:
    """Every job block of a Snakemake log, in order: rule, jobid and resources (strings)."""
    jobs, cur = [], None
    for line in log.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            cur = {"rule": m.group(1), "resources": {}}
            jobs.append(cur)
        elif cur is not None and (m := re.match(r"^\s+jobid: (\d+)$", line)):
            cur["jobid"] = int(m.group(1))
        elif cur is not None and (m := re.match(r"^\s+resources: (.*)$", line)):
            cur["resources"] = dict(kv.split("=", 1) for kv in m.group(1).split(", ") if "=" in kv)
        elif not line.startswith(" "):
            cur = None
    return jobs


def job_events(log: str) -> list[tuple[str, int, str, int]]:
    """('start' | 'end', jobid, rule, gpus) in the order the scheduler logged them."""
    events, blocks = [], {}
    cur = None
    for line in log.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            cur = {"rule": m.group(1)}
        elif cur is not None and (m := re.match(r"^\s+jobid: (\d+)$", line)):
            cur["jobid"] = int(m.group(1))
        elif cur is not None and (m := re.match(r"^\s+resources: (.*)$", line)):
            res = dict(kv.split("=", 1) for kv in m.group(1).split(", ") if "=" in kv)
            cur["gpu"] = int(res.get("gpu", 0))
            blocks[cur["jobid"]] = cur
            events.append(("start", cur["jobid"], cur["rule"], cur["gpu"]))
            cur = None
        elif m := re.search(r"Finished jobid: (\d+) \(Rule: (\w+)\)", line):
            jobid = int(m.group(1))
            events.append(("end", jobid, m.group(2), blocks[jobid]["gpu"]))
    return events


def concurrency(events: list[tuple[str, int, str, int]]) -> tuple[int, int, list[str]]:
    """Most jobs running at once, most GPUs in use at once, and a note for each GPU overlap."""
    running: dict[int, tuple[str, int]] = {}
    most_jobs = most_gpus = 0
    overlaps = []
    for kind, jobid, rule, gpus in events:
        if kind == "start":
            if gpus and any(g for _, g in running.values()):
                overlaps.append(f"{rule} (job {jobid}) started while GPU jobs "
                                f"{[f'{r}:{j}' for j, (r, g) in running.items() if g]} ran")
            running[jobid] = (rule, gpus)
            most_jobs = max(most_jobs, len(running))
            most_gpus = max(most_gpus, sum(g for _, g in running.values()))
        else:
            running.pop(jobid)
    return most_jobs, most_gpus, overlaps


# --------------------------------------------------------------------------------------------- static

@pytest.fixture(scope="module")
def dry_run_blocks(tmp_path_factory, mnist_root) -> list[dict]:
    """The job blocks of a dry run of the whole tiny pipeline."""
    return job_blocks(snakemake(tmp_path_factory.mktemp("dry"), "-n", "--cores", "8", mnist_root=mnist_root))


def test_network_rules_declare_one_gpu_and_cpu_rules_none(dry_run_blocks):
    gpu = {b["rule"]: b["resources"].get("gpu") for b in dry_run_blocks}
    assert gpu.keys() >= NETWORK_RULES and gpu.keys() >= CPU_RULES, sorted(gpu)
    for rule in NETWORK_RULES:
        assert gpu[rule] == "1", f"rule {rule} declares gpu={gpu[rule]}"
    for rule in CPU_RULES:
        assert gpu[rule] is None, f"CPU rule {rule} declares gpu={gpu[rule]}"


def declared_gpu_rules() -> set[str]:
    """Named rules of workflow/rules/*.smk (at any indentation, e.g. inside an `if`) whose resources include
    gpu=1, included in the Snakefile or not. Rules generated in loops (`rule:` with `name:`, the KAE packs)
    carry gpu=1 in their own resources and are checked in the dry run."""
    rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        lines = smk.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)rule (\w+):$", line)
            if not m:
                continue
            indent, body = len(m.group(1)), []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                body.append(nxt)
            if any(re.match(r"^\s+gpu\s*=\s*1\s*,?\s*$", b) for b in body):
                rules.add(m.group(2))
    return rules


def test_slurm_profile_requests_a_gpu_for_every_gpu_rule(dry_run_blocks):
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert isinstance(profile["jobs"], int) and profile["jobs"] > 0
    assert {"mem_mb", "runtime"} <= set(profile["default-resources"])
    set_res = profile["set-resources"]
    declared = declared_gpu_rules()
    in_dag = {b["rule"] for b in dry_run_blocks if b["resources"].get("gpu", "0") != "0"}
    assert NETWORK_RULES <= in_dag <= declared
    profile_gpu = {rule for rule, res in set_res.items() if res.get("gpu")}
    assert profile_gpu == declared, "profiles/slurm/profile.yaml set-resources must map exactly the gpu=1 rules"
    for rule in profile_gpu:
        assert set_res[rule]["gpu"] == 1 and set_res[rule]["cpus_per_gpu"] >= 1, rule
    # the plugin rejects GPU (and other managed) flags inside slurm_extra
    for rule, res in set_res.items():
        assert not re.search(r"--(gres|gpus)\b|-G\b", str(res.get("slurm_extra", ""))), rule


def test_slurm_profile_is_valid_for_snakemake(tmp_path, mnist_root):
    """Snakemake accepts the profile (dry run: the executor is replaced, every key must parse)."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]'")
    log = snakemake(tmp_path, "results/yinyang/draw0/kae/iso1/seed21/model.safetensors", "--profile", str(PROFILE.parent),
                    "-n", mnist_root=mnist_root)
    assert re.search(r"^kae\s+1$", log, flags=re.MULTILINE), log[-3000:]


def test_environment_yml_names_what_a_cluster_needs():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    names = {re.split(r"[<>=! \[]", d, maxsplit=1)[0] for d in env["dependencies"] if isinstance(d, str)}
    assert names & {"pytorch", "pytorch-gpu"}, "no PyTorch"
    for pkg in ("python", "snakemake", "snakemake-executor-plugin-slurm", "gudhi", "numpy", "pandas",
                "pyarrow", "scipy", "seaborn", "safetensors", "pyyaml", "jsonschema", "threadpoolctl", "pot", "pip"):
        assert pkg in names, pkg
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("snakemake-executor-plugin-slurm") for d in extras["slurm"])


def test_overlap_detection_on_a_synthetic_log():
    """The log reader sees two GPU jobs running together when they do."""
    block = "rule {r}:\n    jobid: {j}\n    resources: tmpdir=/tmp, mem_mb=4000, runtime=240{g}\n"
    log = (block.format(r="kae", j=1, g=", gpu=1") + block.format(r="dataset", j=2, g="")
           + block.format(r="kae", j=3, g=", gpu=1") + "Finished jobid: 1 (Rule: kae)\n"
           + "Finished jobid: 3 (Rule: kae)\nFinished jobid: 2 (Rule: dataset)\n")
    most_jobs, most_gpus, overlaps = concurrency(job_events(log))
    assert (most_jobs, most_gpus) == (3, 2) and len(overlaps) == 1
    serial = log.replace("Finished jobid: 1 (Rule: kae)\n", "").replace(
        block.format(r="kae", j=3, g=", gpu=1"), "Finished jobid: 1 (Rule: kae)\n" + block.format(r="kae", j=3, g=", gpu=1"))
    assert concurrency(job_events(serial))[1:] == (1, [])


# --------------------------------------------------------------------------------------------- real run

@pytest.mark.slow
def test_resources_gpu_1_runs_one_gpu_job_at_a_time(tmp_path, mnist_root):
    """Two Yin-Yang KAEs (ready together) and both datasets' splits with 8 cores and one GPU."""
    targets = ["results/yinyang/draw0/kae/iso1/seed21/model.safetensors",
               "results/yinyang/draw0/kae/iso1/seed365/model.safetensors",
               "results/mnist/data/train.parquet", "results/mnist/data/test.parquet"]
    log = snakemake(tmp_path, *targets, "--cores", "8", "--resources", "gpu=1", mnist_root=mnist_root)
    events = job_events(log)
    started = [(rule, gpus) for kind, _, rule, gpus in events if kind == "start"]
    assert sorted(r for r, _ in started) == sorted(["dataset"] * 4 + ["base_model", "representations", "kae", "kae"])
    assert len([e for e in events if e[0] == "end"]) == len(started), "a job start or finish is missing from the log"
    most_jobs, most_gpus, overlaps = concurrency(events)
    assert not overlaps, overlaps
    assert most_gpus == 1
    assert most_jobs >= 2, "no two jobs ran at once: the run did not exercise parallel scheduling"
    for t in targets:
        assert (tmp_path / t).stat().st_size > 0, t
