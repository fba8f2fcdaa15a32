"""Benchmark the topology stage on a finished run: beta_0 of layers and KAE iterates, and the isometry study.

Usage: python bench/bench_topology.py --results results [--dataset mnist] [--precision float64 float32]
       [--threads 1] [--skip-iterates] [--skip-isometry]

Reads results/{dataset}/draw{d}/reps/test.pt, reps/preprocessing.safetensors and the first KAE at the main
lambda_iso found under results/{dataset}/draw{d}/kae/ (d: the dataset's first base-network draw), with the
dataset's settings from config.yaml (or --configfile). Prints one line per measurement with wall-clock and
CPU seconds (CPU seconds are the better guide on a shared machine: wall time grows with the machine's load,
which is printed too).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kaepipe.config import dataset_config, lambda_tag, load_yaml
from kaepipe.settings import evaluation_split
from kaepipe.stages import paths as P
from kaepipe.stages.topology import (
    run_isometry,
    run_isometry_original,
    run_iterate_topology,
    run_layer_topology,
    use_threads,
)


def timed(label: str, fn: Callable[[], object]) -> object:
    """Run fn once and print wall and CPU seconds (and the 1-minute load average before and after)."""
    load0 = os.getloadavg()[0]
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"{label:<58s} wall {wall:7.1f} s   cpu {cpu:7.1f} s   load {load0:4.1f} -> {os.getloadavg()[0]:4.1f}",
          flush=True)
    return result


def main() -> None:
    """Run the benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="the run's results folder")
    parser.add_argument("--configfile", default="config.yaml")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--precision", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--skip-iterates", action="store_true")
    parser.add_argument("--skip-isometry", action="store_true")
    args = parser.parse_args()
    threads = use_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {threads}")

    config = load_yaml(args.configfile)
    draw = P.first_draw(config, args.dataset)
    ds = dataset_config(config, args.dataset, draw)
    res = Path(args.results) / args.dataset / f"draw{draw}"
    reps = str(res / "reps" / f"{evaluation_split(ds)}.pt")
    pre = str(res / "reps" / "preprocessing.safetensors")
    lam = lambda_tag(ds["kae"]["main_lambda_iso"])
    kaes = sorted((res / "kae" / f"iso{lam}").glob("seed*/model.safetensors"))
    quiet = lambda *_: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for precision in args.precision:
            dsp = {**ds, "topology": {**(ds.get("topology") or {}), "precision": precision}}
            timed(f"{args.dataset} layers ({precision})",
                  lambda: run_layer_topology(dsp, reps, pre, out / "l.parquet", out / "lc.parquet", log=quiet))
            if kaes and not args.skip_iterates:
                timed(f"{args.dataset} iterates of {kaes[0].parent.name} ({precision})",
                      lambda: run_iterate_topology(dsp, str(kaes[0]), reps, pre, out / "i.parquet",
                                                     out / "ic.parquet", log=quiet))
        if kaes and not args.skip_isometry:
            timed(f"{args.dataset} isometry original",
                  lambda: run_isometry_original(ds, reps, pre, out / "o.parquet", log=quiet))
            timed(f"{args.dataset} isometry of {kaes[0].parent.name}",
                  lambda: run_isometry(ds, [str(kaes[0])], reps, pre, str(out / "o.parquet"), out / "d.parquet",
                                         out / "c.parquet", out / "m.json", log=quiet))


if __name__ == "__main__":
    main()
