"""The README's Python example runs as written and does what the README says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_example_runs():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Using the package without Snakemake"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    macro, per_class = out.stdout.strip().splitlines()[-2:]
    assert float(macro) > 85  # the surrogate stands in for the network's layers
    after = [float(v) for v in per_class.strip("[]").split(",")]
    assert after[2] < 5 and min(after[:2]) > 85  # class 2 forgotten, the others kept
