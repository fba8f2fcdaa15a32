"""Train one KAE pack of a dataset from a pipeline's results, the way the workflow's pack job does, and time it.

    python bench/bench_pack.py --results results --dataset yinyang --pack grid --device cuda --out /tmp/pack

Reads results/<dataset>/draw<d>/reps/train.pt (d: the dataset's first base-network draw) and
preprocessing.safetensors (a finished `representations` job), takes the dataset's KAE settings from the
config files (default: config.yaml), trains the pack's members (grid: every isometry weight x seed; lambda
VALUE: the seeds of one weight) with `kaepipe.stages.kae.run_kae_pack`, writes their files under --out, and
prints the wall time, the time per KAE, and each member's final training loss.

--seeds replaces the config's seeds; --accuracy also measures every member's surrogate accuracy (the
`surrogate_accuracy` stage) and prints, per protocol, the mean (std) over all seeds and how far a mean over
five of them strays: the seed-to-seed spread a five-seed table cell carries. The spread study of the
README (Yin-Yang, lambda_iso 1, 29 seeds, about 6 min on one core):

    python bench/bench_pack.py --pack 1 --seeds 21 365 53 74 99 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 \
        20 22 23 24 25 --accuracy --out /tmp/spread
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

from kaepipe.config import dataset_config, lambda_tag, load_yaml, merged
from kaepipe.nn.train import configure_torch
from kaepipe.stages import paths as P
from kaepipe.stages.kae import run_kae_pack
from kaepipe.stages.surrogate import run_surrogate_pack


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
    ap.add_argument("--seeds", type=int, nargs="+", help="override kae.seeds")
    ap.add_argument("--accuracy", action="store_true", help="also the surrogate accuracy of every member")
    args = ap.parse_args()

    config: dict = {}
    for f in args.config:
        config = merged(config, load_yaml(f))
    ds = dataset_config(config, args.dataset)
    if args.epochs:
        ds["kae"]["epochs"] = args.epochs
    kae = ds["kae"]
    if args.seeds:
        kae["seeds"] = args.seeds
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
    if args.accuracy:
        summary["accuracy"] = accuracy(ds, config, args, members, outputs, reps, device)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def accuracy(ds: dict, config: dict, args, members, outputs, reps: Path, device) -> dict:
    """Every member's surrogate macro accuracy per protocol; mean, std and the spread of five-seed means."""
    base = P.fill(P.BASE_MODEL, dataset=args.dataset, draw=P.first_draw(config, args.dataset))
    base = Path(args.results) / Path(base).relative_to("results")
    jsons = [str(Path(o["metrics"]).with_name("accuracy.json")) for o in outputs]
    accs = run_surrogate_pack(ds, [o["model"] for o in outputs], str(base), str(reps / "preprocessing.safetensors"),
                              {split: str(reps / f"{split}.pt") for split in ("train", "test")}, jsons, device,
                              log=lambda _msg: None)
    result: dict = {}
    rng = random.Random(0)
    for protocol in accs[0]["protocols"]:
        values = [a["protocols"][protocol]["macro"] for a in accs]
        line = f"{protocol}: mean {statistics.mean(values):.3f} (std {statistics.pstdev(values):.3f}) over {len(values)}"
        result[protocol] = {f"{lam:g}/{s}": v for (lam, s), v in zip(members, values)}
        if len(values) >= 10:
            fives = [statistics.mean(rng.sample(values, 5)) for _ in range(20000)]
            mean = statistics.mean(values)
            line += (f"; a mean of 5 of them: std {statistics.pstdev(fives):.3f}, more than 0.15 from the mean in "
                     f"{100 * sum(abs(f - mean) > 0.15 for f in fives) / len(fives):.0f} % of draws")
        print(line)
        for (lam, s), v in zip(members, values):
            print(f"  lambda_iso {lam:<8g} seed {s:<4d} {v:.2f}")
    return result


if __name__ == "__main__":
    main()
