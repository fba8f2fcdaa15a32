"""Checks of tests/slurm/run_slurm_test.sh: outputs, and SLURM's own records of every submitted job.

Reads Snakemake's log (which SLURM job id ran which rule: "Job N has been submitted with SLURM jobid J
(log: .../slurm_logs/rule_<rule>/...)"), the jobcomp/filetxt records (one line per finished job:
JobId=, JobState=, ExitCode=, SubmitTime=, StartTime=, EndTime=, ProcCnt=, Tres= ...), slurmctld's
view of the same jobs (`scontrol -o show job`: TresPerJob=gres:gpu:1, NumCPUs=, Comment=rule_<rule>_...)
and the shipped profile.
Exits non-zero naming every failed check.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# every core rule runs, either through sbatch or, if declared a localrule, on the submitting host
CORE_RULES = {"dataset", "base_model", "representations", "kae", "surrogate_accuracy", "accuracy_table"}
OUTPUTS = [
    "results/yinyang/data/train.parquet", "results/yinyang/data/test.parquet",
    "results/yinyang/draw0/base/model.safetensors", "results/yinyang/draw0/base/metrics.json",
    "results/yinyang/draw0/reps/train.pt", "results/yinyang/draw0/reps/preprocessing.safetensors",
    "results/yinyang/draw0/kae/iso1/seed21/model.safetensors", "results/yinyang/draw0/kae/iso1/seed365/model.safetensors",
    "results/yinyang/draw0/kae/iso1/seed21/accuracy.json", "results/yinyang/draw0/kae/iso1/seed365/accuracy.json",
    "results/tables/accuracy.csv", "results/tables/accuracy.md",
]


def parse_records(path: Path, key: str = r"\w+") -> dict[str, dict[str, str]]:
    r"""One job per line of space-separated Key=Value pairs (jobcomp/filetxt, or `scontrol -o show job`
    with key=r"[\w:/]+"), by JobId."""
    records = {}
    for line in path.read_text().splitlines():
        rec = dict(re.findall(rf"({key})=(\S*)", line))
        if "JobId" in rec:
            records[rec["JobId"]] = rec
    return records


def submitted_jobs(log_text: str) -> dict[str, str]:
    """SLURM job id -> rule, from the plugin's submission messages."""
    out = {}
    for jobid, logfile in re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$",
                                     log_text, flags=re.MULTILINE):
        rule = next((p[len("rule_"):] for p in Path(logfile).parts if p.startswith("rule_")), "?")
        out[jobid] = rule
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--jobcomp", type=Path, required=True)
    ap.add_argument("--scontrol", type=Path, required=True)
    ap.add_argument("--snakemake-log", type=Path, required=True)
    ap.add_argument("--profile", type=Path, default=REPO / "profiles/slurm/profile.yaml")
    args = ap.parse_args()

    errors: list[str] = []
    for rel in OUTPUTS:
        p = args.work / rel
        if not p.is_file() or p.stat().st_size == 0:
            errors.append(f"missing output {rel}")

    log_text = args.snakemake_log.read_text()
    jobs = submitted_jobs(log_text)
    if not args.jobcomp.is_file():
        errors.append(f"no jobcomp file {args.jobcomp}")
        records = {}
    else:
        records = parse_records(args.jobcomp)

    ctl = parse_records(args.scontrol, key=r"[\w:/]+")
    profile = yaml.safe_load(args.profile.read_text())
    gpu_rules = {r for r, res in (profile.get("set-resources") or {}).items() if (res or {}).get("gpu")}

    print(f"{'slurm id':>8}  {'rule':<20} {'state':<10} {'exit':<5} {'submit':<19} {'start':<19} {'end':<19} "
          f"cpus gpu-request")
    for jobid, rule in sorted(jobs.items(), key=lambda kv: int(kv[0])):
        rec = records.get(jobid)
        if rec is None:
            errors.append(f"SLURM job {jobid} ({rule}) is not in the jobcomp records")
            print(f"{jobid:>8}  {rule:<20} (no record)")
            continue
        print(f"{jobid:>8}  {rule:<20} {rec.get('JobState', '?'):<10} {rec.get('ExitCode', '?'):<5} "
              f"{rec.get('SubmitTime', '?'):<19} {rec.get('StartTime', '?'):<19} {rec.get('EndTime', '?'):<19} "
              f"{rec.get('ProcCnt', '?'):>4} {ctl.get(jobid, {}).get('TresPerJob', '-')}")
        if rec.get("JobState") != "COMPLETED" or rec.get("ExitCode") != "0:0":
            errors.append(f"SLURM job {jobid} ({rule}): {rec.get('JobState')} exit {rec.get('ExitCode')}")
        job = ctl.get(jobid)
        if job is None:
            errors.append(f"SLURM job {jobid} ({rule}) is unknown to slurmctld")
            continue
        if not job.get("Comment", "").startswith(f"rule_{rule}_"):
            errors.append(f"SLURM job {jobid}: Comment {job.get('Comment')} does not name rule {rule}")
        has_gpu = re.search(r"gpu[:=]1\b", job.get("TresPerJob", "")) is not None
        if (rule in gpu_rules) != has_gpu:
            errors.append(f"SLURM job {jobid} ({rule}): gpu in profile {rule in gpu_rules}, "
                          f"TresPerJob {job.get('TresPerJob')}")

    rules = set(jobs.values())
    local = set(re.findall(r"^localrule (\w+):$", log_text, flags=re.MULTILINE))
    if missing := CORE_RULES - rules - local:
        errors.append(f"rules that did not run: {sorted(missing)}")
    if both := rules & local:
        errors.append(f"local rules submitted to SLURM: {sorted(both)}")
    if gpu_local := gpu_rules & local:
        errors.append(f"GPU rules ran on the submitting host: {sorted(gpu_local)}")
    if not rules:
        errors.append("no job was submitted with sbatch")
    if len({records[j].get("Name") for j in jobs if j in records}) > 1:
        errors.append("the jobs carry different job names (the plugin names them all with one run id)")

    # The node's one stand-in GPU (Gres=gpu:1) was held by one job at a time: no two GPU jobs overlap,
    # and SLURM held back at least one GPU job that was queued while another ran (the two KAEs are
    # submitted together and would fit by CPUs and memory).
    def t(j: str, key: str) -> datetime:
        return datetime.fromisoformat(records[j][key])

    gpu_jobs = sorted((j for j, r in jobs.items() if r in gpu_rules and j in records), key=lambda j: t(j, "StartTime"))
    for j1, j2 in itertools.pairwise(gpu_jobs):
        if t(j2, "StartTime") < t(j1, "EndTime"):
            errors.append(f"GPU jobs {j1} and {j2} overlapped")
    held = [(j1, j2) for j1, j2 in itertools.pairwise(gpu_jobs) if t(j2, "SubmitTime") < t(j1, "EndTime")]
    if not held:
        errors.append("no GPU job waited for another: the GPU limit was not exercised")
    spans = gpu_jobs

    print(f"{len(jobs)} jobs submitted with sbatch ({', '.join(sorted(rules))}); local: {', '.join(sorted(local))}; "
          f"{len(records)} jobcomp records; {len(spans)} GPU jobs, one at a time; queued behind another GPU job: "
          f"{', '.join(f'{b} (behind {a})' for a, b in held) or 'none'}")
    for e in errors:
        print("ERROR:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
