"""Leftovers and memory: temporary files of killed writers are removed; IDX bodies are streamed (issue 17, item 10)."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaepipe.data import MNIST, load_idx_split, read_idx
from kaepipe.errors import DataError
from kaepipe.io import _HOST, TMP_SUFFIX, atomic_path, remove_stale_temps, temp_owner, write_json, write_text

# --- temporary files of a writer that was killed ------------------------------------------------------

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from kaepipe.io import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_text('{"half": ')
        os.kill(os.getpid(), signal.SIGKILL)
""")


def kill_a_writer(target: Path) -> list[Path]:
    """Run a process that SIGKILLs itself inside atomic_path(target); return what it left beside target."""
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return [p for p in target.parent.iterdir() if p.name != target.name]


def test_a_killed_writer_leaves_a_recognisable_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "metrics.json"
    left = kill_a_writer(target)
    assert len(left) == 1 and left[0].name.endswith(TMP_SUFFIX) and left[0].name.startswith(".metrics.json.")
    assert temp_owner(left[0], target)[0] == _HOST
    write_json({"v": 1}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


names = st.text(alphabet="ab.-_0", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, other=names)
def test_only_dead_writers_of_the_same_output_are_cleaned(tmp_path_factory, name, other):
    folder = tmp_path_factory.mktemp("out")
    pid = dead_pid()
    mine = folder / f".{name}.{_HOST}.{pid}.abc_123{TMP_SUFFIX}"
    theirs = folder / f".{other}.{_HOST}.{pid}.abc_123{TMP_SUFFIX}"
    live = folder / f".{name}.{_HOST}.{os.getppid()}.abc_123{TMP_SUFFIX}"  # a live process
    remote = folder / f".{name}.elsewhere.{pid}.abc_123{TMP_SUFFIX}"  # another host: cannot be asked
    for p in (mine, theirs, live, remote):
        p.write_text("half")
    write_text("done", folder / name)
    assert not mine.exists()
    assert live.exists() and remote.exists()
    assert theirs.exists() == (other != name)


def test_a_live_writer_in_this_process_is_not_disturbed(tmp_path):
    target = tmp_path / "a.parquet"
    with atomic_path(target) as outer:
        outer.write_text("writing")
        assert remove_stale_temps(target) == [] and outer.exists()
    assert target.read_text() == "writing"


def test_foreign_hidden_files_are_kept(tmp_path):
    target = tmp_path / "x.json"
    keep = [tmp_path / ".x.json.abc.tmp", tmp_path / f".x.json.{dead_pid()}{TMP_SUFFIX}", tmp_path / ".x.json.swp"]
    for p in keep:
        p.write_text("not ours")
    write_json({}, target)
    assert all(p.exists() for p in keep)


# --- IDX files: the header first, then exactly the bytes it declares ------------------------------------

def idx(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=3), delta=st.integers(-5, 5), gz=st.booleans())
def test_idx_body_must_be_exactly_what_the_header_declares(tmp_path_factory, shape, delta, gz):
    array = np.arange(int(np.prod(shape))).reshape(shape).astype(np.uint8)
    raw = idx(array)
    raw = raw[:len(raw) + delta] if delta < 0 else raw + b"\x07" * delta
    path = tmp_path_factory.mktemp("idx") / ("f.idx.gz" if gz else "f.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    header = 4 + 4 * len(shape)
    if delta == 0:
        np.testing.assert_array_equal(read_idx(path), array)
    elif delta < 0 and len(raw) < header:
        with pytest.raises(DataError, match=rf"{path.name}: (IDX header truncated|wrong IDX magic)"):
            read_idx(path)
    else:
        with pytest.raises(DataError, match=rf"{path.name}: IDX body (has \d+ bytes|is longer than)"):
            read_idx(path)


def test_a_header_claiming_too_much_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (2_000_000, 28, 28))))
    with pytest.raises(DataError, match=r"declares shape \(2000000, 28, 28\) \(1568000000 bytes\), more than the limit"):
        read_idx(path)


def test_labels_and_images_headers_are_checked_before_any_body(tmp_path):
    img, lab = MNIST.files["test"]
    (tmp_path / img).write_bytes(gzip.compress(idx(np.zeros((3, 28, 27)))))
    (tmp_path / lab).write_bytes(gzip.compress(idx(np.zeros(3))))
    with pytest.raises(DataError, match=r"images of 28 x 27 pixels, expected 28 x 28 for mnist"):
        load_idx_split(tmp_path, MNIST, "test")


def test_a_gzip_bomb_is_refused_without_decompressing_it(tmp_path):
    """Ten labels declared, then 400 MB of zeros (400 KB compressed): refused using little memory."""
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(10))
        block = bytes(1 << 22)
        for _ in range(100):
            f.write(block)
    assert path.stat().st_size < 2_000_000
    code = textwrap.dedent(f"""
        import resource
        from kaepipe.data import read_idx
        from kaepipe.errors import DataError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            read_idx({str(path)!r})
        except DataError as exc:
            print("refused", exc)
        print("grew_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "refused" in out and "IDX body is longer than the 10 bytes" in out
    assert int(out.split("grew_kb")[1]) < 50_000, out
