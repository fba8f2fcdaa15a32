"""Train one KAE pack of a dataset from a pipeline's results, the way the workflow's pack job does, and time it.

    python bench/bench_pack.py --results results --dataset yinyang --pack grid --device cuda --out /tmp/pack

Reads results/<dataset>/draw<d>/reps/train.pt (d: the dataset's first base-network draw) and
preprocessing.safetensors (a finished `representations` job), takes the dataset's KAE settings from the
config files (default: config.yaml), trains the pack's members (grid: every isometry weight x seed; lambda
VALUE: the seeds of one weight) with `kaepipe.stages.kae.run_kae_pack`, writes their files under --out, and
prints the wall time, the time per KAE, and each member's final training loss.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from kaepipe.config import dataset_config, lambda_tag, load_yaml, merged
from kaepipe.nn.train import configure_torch
from kaepipe.stages import paths as P
from kaepipe.stages.kae import run_kae_pack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--dataset", default="yinyang")
    ap.add_argument("--config", nargs="+", default=["config.yaml"])
    ap.add_argument("--pack", default="grid", help="grid, or a lambda_iso value (its seeds)")
    ap.add_argument("--epochs", type=int, help="override kae.epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/kaepipe_pack")
    args = ap.parse_args()

    config: dict = {}
    for f in args.config:
        config = merged(config, load_yaml(f))
    ds = dataset_config(config, args.dataset)
    if args.epochs:
        ds["kae"]["epochs"] = args.epochs
    kae = ds["kae"]
    lams = kae["lambda_iso"] if args.pack == "grid" else [float(args.pack)]
    members = [(float(lam), int(s)) for lam in lams for s in kae["seeds"]]
    out = Path(args.out)
    outputs = []
    for lam, s in members:
        d = out / f"iso{lambda_tag(lam)}" / f"seed{s}"
        d.mkdir(parents=True, exist_ok=True)
        outputs.append({"model": str(d / "model.safetensors"), "losses": str(d / "losses.parquet"),
                        "metrics": str(d / "metrics.json")})
    device = configure_torch(args.threads, args.device)
    reps = Path(args.results) / args.dataset / f"draw{P.first_draw(config, args.dataset)}" / "reps"
    print(f"{len(members)} KAEs, {kae['epochs']} epochs, device {device}, load {os.getloadavg()}", flush=True)
    t0 = time.perf_counter()
    metrics = run_kae_pack(ds, members, str(reps / "train.pt"), str(reps / "preprocessing.safetensors"), outputs,
                           device, log=lambda msg: print(msg, flush=True))
    wall = time.perf_counter() - t0
    print(f"\npack of {len(members)}: {wall:.1f} s wall, {wall / len(members):.2f} s per KAE "
          f"(training alone {metrics[0]['pack']['seconds']:.1f} s)")
    for (lam, s), m in zip(members, metrics):
        print(f"  lambda_iso {lam:<8g} seed {s:<4d} final total {m['train_metrics']['total']:.5f}")
    summary = {"members": len(members), "wall_s": wall, "train_s": metrics[0]["pack"]["seconds"],
               "device": str(device), "final_total": {f"{lam:g}/{s}": m["train_metrics"]["total"]
                                                      for (lam, s), m in zip(members, metrics)}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
