"""kaepipe.runtime.rule_context: the glue every workflow script runs inside."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from types import SimpleNamespace

from kaepipe.io import TMP_SUFFIX
from kaepipe.runtime import rule_context


def test_rule_context_logs_to_the_rules_log_and_clears_stale_temporaries(tmp_path):
    out = tmp_path / "results" / "metrics.json"
    out.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited: what a SIGKILLed earlier run of the job leaves
    stale = out.parent / f".metrics.json.{socket.gethostname()}.{pid}.k1ll3d{TMP_SUFFIX}"
    stale.write_text('{"half": ')
    keep = out.parent / f".curve.parquet.{socket.gethostname()}.{pid}.abc{TMP_SUFFIX}"  # not this job's output
    keep.write_text("")
    smk = SimpleNamespace(log=[str(tmp_path / "logs" / "job.log")], output=[str(out)], rule="base_model",
                          threads=1, wildcards={"dataset": "toy"}, config={})
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with rule_context(smk, uses_torch=False) as (log, device):
            log.info("working")
            assert device is None
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                h.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    assert not stale.exists() and keep.exists()
    text = (tmp_path / "logs" / "job.log").read_text()
    assert "rule base_model, wildcards {'dataset': 'toy'}, 1 thread(s), device None" in text
    assert f"removed {stale}, left by a killed writer" in text and "working" in text
