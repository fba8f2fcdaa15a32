"""The repository explains itself: every method reference points into docs/method.md, at a section that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "method.md"


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # an exported tree without git: every file
        out = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts]
    keep = (".py", ".smk", ".md", ".rst", ".yaml", ".yml", ".toml", ".sh")
    return [REPO / f for f in out if f.endswith(keep) or f in ("Snakefile", "Makefile")]


def section_numbers() -> set[str]:
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", DOC.read_text(), re.M)
    return set(heads)


def test_no_reference_to_a_document_that_does_not_ship():
    offenders = []
    for f in tracked_text_files():
        if f.name == "test_docs.py" or not f.exists():
            continue
        for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if re.search(r"METHOD(\.md)?,? (section )?\d|shared/spec", line):
                offenders.append(f"{f.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "references to METHOD.md, which does not ship:\n" + "\n".join(offenders)


def test_every_docs_method_section_reference_exists():
    known = section_numbers()
    assert {"1", "5", "5.4", "7", "8", "11", "12"} <= known
    missing = []
    for f in tracked_text_files():
        if not f.exists():
            continue
        for m in re.finditer(r"docs/method\.md,? sections? (\d+(?:\.\d+)?)", f.read_text(errors="replace")):
            if m.group(1) not in known:
                missing.append(f"{f.relative_to(REPO)}: section {m.group(1)}")
    assert not missing, "docs/method.md has no such section:\n" + "\n".join(missing)


def test_every_test_file_named_in_the_repository_exists():
    """A script or document that names a test file (bench/gpu_check.sh runs some by path) names one that exists."""
    missing = []
    for f in tracked_text_files():
        if not f.exists():
            continue
        for m in re.finditer(r"(?<![\w/.])tests/[\w/]+\.py", f.read_text(errors="replace")):
            if not (REPO / m.group(0)).is_file():
                missing.append(f"{f.relative_to(REPO)}: {m.group(0)}")
    assert not missing, "no such test file:\n" + "\n".join(missing)
