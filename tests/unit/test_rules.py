"""Every rule that runs a job has what the workflow's conventions ask: a log, a benchmark, threads and
resources (the SLURM profile and `--resources gpu=1` read the resources)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DIRECTIVES = ("log:", "benchmark:", "threads:", "resources:")


def rule_blocks(text: str) -> list[tuple[str, str]]:
    """(name, body) of every `rule` statement: the lines after it indented deeper than it."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)rule(\s+\w+)?\s*:", line)
        if not m:
            continue
        indent, body = len(m.group(1)), []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        text_body = "\n".join(body)
        name = (m.group(2) or "").strip() or re.search(r"name:\s*\n\s*(.+)", text_body).group(1).strip()
        blocks.append((name, text_body))
    return blocks


def test_every_job_rule_has_log_benchmark_threads_and_resources():
    files = sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "Snakefile"]
    blocks = [(f.name, name, body) for f in files for name, body in rule_blocks(f.read_text())]
    assert len(blocks) > 20  # the parser found the rules
    jobs = [(f, n, b) for f, n, b in blocks if re.search(r"^\s*(script|shell|run):", b, re.M)]
    assert len(jobs) == len(blocks) - 1  # only the target rule `all` runs nothing
    missing = [f"{f}: rule {n} lacks {', '.join(d for d in DIRECTIVES if d not in b)}"
               for f, n, b in jobs if any(d not in b for d in DIRECTIVES)]
    assert not missing, "\n".join(missing)
