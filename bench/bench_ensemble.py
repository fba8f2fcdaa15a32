"""Time per training step of M KAEs trained as one ensemble (fit_kae_ensemble) against one KAE (fit_kae).

    python bench/bench_ensemble.py --members 30 --shape yinyang --device cpu --threads 1 --compare-single
    python bench/bench_ensemble.py --members 30 --shape mnist --device cuda --compare-single --seconds 240

Synthetic data of the shape's sizes (yinyang: 5000 pairs, q 10, hidden 30, p 20, batch 1024;
mnist: 60000 pairs, q 784, hidden 1000, p 800, k 4, batch 512; --samples takes fewer), AdamW with
clipping, isometry weight 1 for every member but the last (0). Both loops are timed as the pipeline
runs them (whole calls of fit_kae_ensemble / fit_kae, which read the losses once per epoch) after a
warm-up call; a one-step probe sizes the timed runs to fit --seconds (fewer epochs, or fewer samples
when one epoch would not fit: then the per-step numbers are still true, the per-epoch ones are not).

FLOPs per step are a nominal count, printed with the result: the dense matrix products of the
forward pass x 3 (forward + backward), and per isometry call (two a member) the three n x n products
of the full-matrix form 2 n^2 (q + 2) + 2 n^2 (p + 2) + 2 n^2 (p + 1) (the CPU kernel does about half
of the first two on the upper triangle). GFLOP/s = nominal FLOPs / time. The matrix exponential is
left out of that count (its degree and squarings depend on W: near W = I, at the start, it costs
almost nothing); an upper bound, 24 p x p products a member (~8 forward, 16 backward), is printed
beside it, so the GFLOP/s is a lower bound of the rate achieved.

--iso default|none|MODULE:NAME: the isometry term by the default fused kernel (kaepipe.nn.isometry), not
at all (every weight 0: the model and optimiser alone), or by a batched kernel iso_fn(x (M, n, q),
z (M, n, p)) -> (M,) imported from MODULE (a class is instantiated first).

CUDA graphs / torch.compile(mode="reduce-overhead") are not offered: choosing the degree of the
matrix exponential reads norms on the host (torch.linalg.matrix_exp and kaepipe.linalg.expm both do),
which graph capture does not allow.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import time

import torch

from kaepipe.nn.ensemble import KAEEnsemble, fit_kae_ensemble
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.train import TrainConfig, configure_torch, fit_kae, seed_all

SHAPES = {  # name: (n_train, q, h, p, k, batch, lambda_iso)
    "yinyang": (5000, 10, 30, 20, 100, 1024, 1.0),
    "mnist": (60000, 784, 1000, 800, 4, 512, 1.0),
}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings are true."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def quiet(_msg: str) -> None:
    pass


def nominal_flops(q: int, h: int, p: int, b: int, members: int, iso_members: int) -> dict[str, float]:
    """Nominal FLOPs of one training step of `members` KAEs (see the module docstring)."""
    model = 3 * (2 * (2 * b) * (q * h + h * p) + 2 * (3 * b) * (p * h + h * q) + 2 * b * p * p)
    expm = 24 * 2 * p ** 3
    iso_call = 2 * b * b * (q + 2) + 2 * b * b * (p + 2) + 2 * b * b * (p + 1)
    out = {"model": members * model, "iso": iso_members * 2 * iso_call}
    out["total"] = out["model"] + out["iso"]
    out["expm_upper_bound"] = members * expm  # not in the total
    return out


def load_iso_fn(spec: str):
    """The iso_fn of --iso (None for the default)."""
    if spec in ("default", "none"):
        return None
    module, _, name = spec.partition(":")
    obj = getattr(importlib.import_module(module), name)
    return obj() if isinstance(obj, type) else obj


def timed(run, device: torch.device, n: int, batch: int, epochs: int, seconds: float, label: str) -> dict:
    """Seconds per step of run(samples, epochs), after a warm-up, within a time budget.

    run(samples, epochs) trains on the first `samples` pairs for `epochs` epochs.
    """
    t0 = time.perf_counter()
    run(batch, 1)  # warm-up: allocations, BLAS / cuBLAS set-up, optimiser state
    sync(device)
    t1 = time.perf_counter()
    run(batch, 1)  # one-step probe
    sync(device)
    t_probe = time.perf_counter() - t1
    left = seconds - (time.perf_counter() - t0)
    steps_epoch = n // batch + (n % batch >= 2)
    max_steps = max(1, int(left / max(t_probe, 1e-6)))
    note = ""
    if steps_epoch * epochs <= max_steps:
        samples = n
    elif steps_epoch <= max_steps:
        samples, epochs = n, max(1, max_steps // steps_epoch)
        note = f"epochs cut to {epochs} by --seconds"
    else:
        samples, epochs = max_steps * batch, 1
        note = f"one epoch on {samples} of {n} samples (--seconds)"
    steps = (samples // batch + (samples % batch >= 2)) * epochs
    print(f"  {label}: probe {1e3 * t_probe:.1f} ms/step; timing {epochs} epoch(s), {steps} steps"
          + (f" [{note}]" if note else ""), flush=True)
    sync(device)
    t2 = time.perf_counter()
    run(samples, epochs)
    sync(device)
    secs = time.perf_counter() - t2
    return {"steps": steps, "epochs": epochs, "samples": samples, "seconds": secs, "step_s": secs / steps,
            "probe_step_s": t_probe, "note": note}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (fewer if --seconds runs out)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--shape", default="yinyang", choices=sorted(SHAPES))
    ap.add_argument("--samples", type=int, help="training pairs (default: the shape's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compare-single", action="store_true", help="also time one KAE trained by fit_kae")
    ap.add_argument("--seconds", type=float, default=300.0, help="time budget, split between the runs")
    ap.add_argument("--iso", default="default", help="default | none | MODULE:NAME (batched iso_fn)")
    ap.add_argument("--parametrization", default="exponential", choices=["exponential", "linear", "eigen"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    device = configure_torch(args.threads, args.device)
    dtype = getattr(torch, args.dtype)
    n, q, h, p, k, batch, lam = SHAPES[args.shape]
    n = args.samples or n
    m = args.members
    lambdas = [0.0] * m if args.iso == "none" else [lam] * (m - 1) + [0.0]
    seeds = list(range(m))
    iso_members = sum(v > 0 for v in lambdas)
    cfg = KAEConfig(q, h, p, k, parametrization=args.parametrization)
    tcfg = TrainConfig(epochs=1, batch_size=batch, lr=1e-3, optimizer="adamw", weight_decay=5e-4, clip_grad_norm=1.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, q, generator=g).to(device, dtype)
    xl = (torch.tanh(x0.cpu() @ torch.randn(q, q, generator=g, dtype=dtype) / math.sqrt(q))).to(device)
    iso_fn = load_iso_fn(args.iso)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"device {device} {gpu}  threads {torch.get_num_threads()}  load average {load}  torch {torch.__version__}")
    print(f"shape {args.shape}: n {n}, q {q}, hidden {h}, p {p}, k {k}, batch {batch}, {args.parametrization}, "
          f"{args.dtype}; {m} members, {iso_members} with the isometry term (iso: {args.iso})", flush=True)

    def run_ensemble(samples: int, epochs: int) -> None:
        ens = KAEEnsemble.from_seeds(cfg, seeds, device=device, dtype=dtype)
        fit_kae_ensemble(ens, x0[:samples], xl[:samples], TrainConfig(**{**tcfg.to_dict(), "epochs": epochs}),
                         lambdas, seeds, iso_fn=iso_fn, log=quiet)

    def run_single(samples: int, epochs: int) -> None:
        seed_all(0)
        model = KoopmanAutoencoder(cfg).to(device, dtype)
        fit_kae(model, x0[:samples], xl[:samples], TrainConfig(**{**tcfg.to_dict(), "epochs": epochs}),
                lambdas[0], log=quiet)

    share = args.seconds / (2 if args.compare_single else 1)
    res = {"args": vars(args), "device_name": gpu or str(device), "load": load, "torch": torch.__version__}
    res["ensemble"] = timed(run_ensemble, device, n, batch, args.epochs, share, f"ensemble of {m}")
    fl_ens = nominal_flops(q, h, p, batch, m, iso_members)
    res["ensemble"]["gflops_per_step"] = fl_ens["total"] / 1e9
    res["ensemble"]["gflop_s"] = fl_ens["total"] / 1e9 / res["ensemble"]["step_s"]
    if args.compare_single:
        res["single"] = timed(run_single, device, n, batch, args.epochs, share, "single KAE")
        fl_one = nominal_flops(q, h, p, batch, 1, int(lambdas[0] > 0))
        res["single"]["gflops_per_step"] = fl_one["total"] / 1e9
        res["single"]["gflop_s"] = fl_one["total"] / 1e9 / res["single"]["step_s"]

    e = res["ensemble"]
    print(f"\nnominal GFLOP per ensemble step: {fl_ens['total'] / 1e9:.3f} (model {fl_ens['model'] / 1e9:.3f}, "
          f"iso {fl_ens['iso'] / 1e9:.3f}; expm not counted, at most {fl_ens['expm_upper_bound'] / 1e9:.3f})")
    print(f"{'':24s} {'ms/step':>10s} {'ms/member-step':>15s} {'GFLOP/s':>9s}")
    print(f"{'ensemble of ' + str(m):24s} {1e3 * e['step_s']:10.2f} {1e3 * e['step_s'] / m:15.3f} {e['gflop_s']:9.2f}")
    if args.compare_single:
        s = res["single"]
        print(f"{'single KAE':24s} {1e3 * s['step_s']:10.2f} {1e3 * s['step_s']:15.3f} {s['gflop_s']:9.2f}")
        res["speedup_per_member"] = s["step_s"] * m / e["step_s"]
        print(f"speed-up of the ensemble per member-step: {res['speedup_per_member']:.2f}x "
              f"(the single run's member with lambda {lambdas[0]})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
