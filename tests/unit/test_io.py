"""kaepipe.io: what killed atomic writers leave behind, found and removed before a job writes again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from kaepipe.io import TMP_SUFFIX, atomic_path, remove_stale_temporaries


def leftovers(path):
    return sorted(path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"))


def test_a_writer_killed_mid_write_leaves_a_temporary_that_the_next_job_removes(tmp_path):
    target = tmp_path / "iso0.001" / "losses.parquet"
    code = ("import sys, time; from kaepipe.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half'); print(tmp, flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        tmp = proc.stdout.readline().strip()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not target.exists() and [str(p) for p in leftovers(target)] == [tmp]
    other = tmp_path / "iso0.001" / "model.safetensors"  # another output of the folder: untouched
    with atomic_path(other) as t:
        t.write_bytes(b"done")
    foreign = tmp_path / "iso0.001" / f".model.safetensors.otherhost.1.x1y2{TMP_SUFFIX}"  # another host's writer
    foreign.write_bytes(b"")
    assert [p.name for p in remove_stale_temporaries([target])] == [tmp.rsplit("/", 1)[1]]
    assert leftovers(target) == [] and leftovers(other) == [foreign] and other.read_bytes() == b"done"
    assert remove_stale_temporaries([tmp_path / "nowhere" / "x.json"]) == []  # a folder not made yet


def test_provenance_names_kaepipes_own_commit_from_inside_another_repository(tmp_path):
    """Run from inside another git repository, the recorded commit and dirty flag are those of the checkout
    that holds the kaepipe package, not of the working directory's repository."""
    import shutil
    from pathlib import Path

    import pytest

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    import kaepipe

    pkg = Path(kaepipe.__file__).resolve().parent
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=pkg, capture_output=True, text=True)
    if top.returncode != 0:
        pytest.skip("kaepipe is not in a git checkout here")
    other = tmp_path / "other"
    other.mkdir()
    for cmd in (["init", "-q"], ["-c", "user.email=a@b", "-c", "user.name=n", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *cmd], cwd=other, check=True)
    code = "from kaepipe.io import provenance; p = provenance({}); print(p['git_commit'], p['code_dirty'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=other, capture_output=True, text=True, check=True).stdout.split()
    ours = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pkg, capture_output=True, text=True).stdout.strip()
    theirs = subprocess.run(["git", "rev-parse", "HEAD"], cwd=other, capture_output=True, text=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", top.stdout.strip()],
                            cwd=pkg, capture_output=True, text=True).stdout
    assert out[0] == ours != theirs
    assert out[1] == str(bool(status.strip()))
