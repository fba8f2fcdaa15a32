"""Studies of training settings with kaepipe's own code, several runs at once (CPU or GPU).

Not pipeline stages: each run is one (variant, seed), a variant being overrides of one block of a
dataset's config; values are YAML (`null`, `10`, `1e-3`).

`kae`: reads a finished base network, its representations and preprocessing (the pipeline's
`results/<dataset>/draw<draw>/{base,reps}`, `--draw` default the dataset's first), trains one KAE per
(variant, seed) and prints the macro surrogate accuracy per protocol, mean (population std) over seeds.
`--lambda-iso` defaults to the main one.

    python bench/variants.py kae --dataset yinyang --seeds 21 365 53 74 99 --workers 2 \\
        --variant base --variant noclip clip_grad_norm=null

`base`: trains the base network per variant (overrides of `base`, at the seed of `--draw`) from the
dataset's splits, records its layers, fits the preprocessing and prints test accuracy and the beta_0 row
of the layers at the configured eps (topology stage settings), e.g. how the MNIST row depends on training
length:

    python bench/variants.py base --dataset mnist --config-set mnist_root=../shared/data/mnist-offline \\
        --variant e8 --variant e30 epochs=30

Base-network draws (other seeds of the same settings) are not variants: the pipeline runs them, every
stage and table included (`datasets.<dataset>.base.seeds`, e.g. `--configfile config/draws.yaml`), and a
`seed`/`seeds` override is refused here.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kaepipe.config import dataset_config, load_yaml, merged
from kaepipe.stages import paths as P


def draw_file(results: str, template: str, **wildcards) -> Path:
    """A pipeline file (a kaepipe.stages.paths template) under the folder `results` instead of results/."""
    return Path(results) / Path(P.fill(template, **wildcards)).relative_to(P.RESULTS)


def parse_variant(items: list[str]) -> tuple[str, dict]:
    """`name key=value ...` -> (name, overrides)."""
    name, overrides = items[0], {}
    for item in items[1:]:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {name}: '{item}' is not key=value")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def train_one(job: dict) -> dict:
    """Train one KAE of one variant and measure its surrogate accuracy (runs in a worker process)."""
    import torch

    from kaepipe.evaluate import accuracy_report, surrogate_predictions
    from kaepipe.nn.checkpoints import load_base_model
    from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
    from kaepipe.nn.train import configure_torch, fit_kae, kae_train_config, seed_all
    from kaepipe.represent import load_preprocessing, load_reps
    from kaepipe.settings import unlearn_settings
    from kaepipe.stages.kae import training_pair
    from kaepipe.unlearn import EditProblem, get_method

    device = configure_torch(1, job["device"])
    ds = job["ds"]
    kae = {**ds["kae"], **job["overrides"]}
    if job.get("base_dir"):  # a network of the `base` study: its folder holds everything
        bdir = Path(job["base_dir"])
        reps = {s: bdir / f"{s}.pt" for s in ("train", "test")}
        pre_path, base_path = bdir / "preprocessing.safetensors", bdir / "model.safetensors"
    else:  # the pipeline's draw
        w = {"dataset": ds["name"], "draw": job["draw"]}
        reps = {s: draw_file(job["results"], P.REPS, **w, split=s) for s in ("train", "test")}
        pre_path = draw_file(job["results"], P.PREPROCESSING, **w)
        base_path = draw_file(job["results"], P.BASE_MODEL, **w)
    base = load_base_model(base_path)
    last = base.cfg.blocks
    pre = load_preprocessing(pre_path, [0, last])
    data = {s: load_reps(reps[s]) for s in {"train", *ds["evaluation"].values()}}  # each split read once
    x0, xl = training_pair(data["train"][0], pre)  # preprocessed as the pipeline does
    cfg = KAEConfig.from_dict({**kae, "in_features": x0.shape[1]})
    seed_all(job["seed"])
    model = KoopmanAutoencoder(cfg).to(device)
    t0 = time.perf_counter()
    out = {"variant": job["name"], "seed": job["seed"]}
    try:
        curve = fit_kae(model, torch.as_tensor(x0, device=device), torch.as_tensor(xl, device=device),
                        kae_train_config(kae, job["seed"]), job["lambda_iso"])
    except Exception as err:  # a diverged run is a result of the study, not the end of it
        print(json.dumps({**out, "error": str(err)[:200]}), flush=True)
        return {**out, "seconds": time.perf_counter() - t0, **{p: float("nan") for p in ds["evaluation"]}}
    out["seconds"], out["final_loss"] = time.perf_counter() - t0, float(curve["total"].iloc[-1])

    def macro_and_per_class(m, split: str) -> dict:
        layers, labels = data[split]
        return accuracy_report(surrogate_predictions(m, base, pre[0], pre[last], layers[0], device), labels, ds["classes"])

    for protocol, split in ds["evaluation"].items():
        out[protocol] = macro_and_per_class(model, split)["macro"]
    if job["edit"]:  # the paper's edit (docs/method.md section 8): target-class accuracy after, paper protocol
        problem = EditProblem(model.operator_matrix(), model.observables(x0), data["train"][1])
        paper = get_method("paper")
        settings = paper.settings(unlearn_settings(ds))
        for c in job["edit"]:
            edited = model.with_operator(paper.edit(problem, c, settings))
            out[f"edit{c}"] = macro_and_per_class(edited, ds["evaluation"]["paper"])["per_class"][c]
    print(json.dumps(out), flush=True)
    return out


def train_base(job: dict) -> dict:
    """Train one base network of one variant; record its layers and their beta_0 row (worker process)."""
    from kaepipe.nn.train import configure_torch
    from kaepipe.stages.base import run_base_training
    from kaepipe.stages.represent import run_representations
    from kaepipe.stages.topology import run_layer_topology

    device = configure_torch(job["threads"], job["device"])
    ds = merged(job["ds"], {"base": job["overrides"]})
    work = Path(job["work"]) / job["name"]
    work.mkdir(parents=True, exist_ok=True)
    splits = job["splits"]
    quiet = lambda _msg: None  # noqa: E731
    t0 = time.perf_counter()
    metrics = run_base_training(ds, splits, str(work / "model.safetensors"), str(work / "curve.parquet"),
                                str(work / "metrics.json"), device, log=quiet)
    seconds = time.perf_counter() - t0
    pt = {s: str(work / f"{s}.pt") for s in splits}
    run_representations(ds, str(work / "model.safetensors"), splits, {s: str(work / f"{s}.parquet") for s in splits},
                        pt, str(work / "preprocessing.safetensors"), device, log=quiet)
    split = ds["evaluation"][ds.get("topology", {}).get("protocol", "heldout")]
    table = run_layer_topology(ds, pt[split], str(work / "preprocessing.safetensors"), str(work / "layers.parquet"),
                               str(work / "layers_curves.parquet"), log=quiet)
    out = {"variant": job["name"], "seconds": round(seconds, 1),
           **{f"acc_{s}": round(r["macro"], 2) for s, r in metrics["splits"].items()},
           "eps": float(table["eps"].iloc[0]), "betti0": table.sort_values("step")["betti0"].tolist()}
    print(json.dumps(out), flush=True)
    return out


def write_splits(ds: dict, config: dict, work: Path) -> dict[str, str]:
    """The dataset's train and test splits as Parquet under `work` (built once, shared by the runs)."""
    from kaepipe.data import get_source, write_split

    paths = {}
    for split in ("train", "test"):
        paths[split] = str(work / f"{split}.parquet")
        if not Path(paths[split]).exists():
            root = None
            root = get_source(ds["source"]).prepare(ds.get("root"), config.get("cache_dir", "results/cache"), [split])
            work.mkdir(parents=True, exist_ok=True)
            write_split(ds, split, paths[split], root)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=["kae", "base"])
    ap.add_argument("--config", nargs="+", default=["config.yaml"], help="config files, merged in order")
    ap.add_argument("--config-set", nargs="*", default=[], metavar="KEY=VALUE", help="top-level config overrides")
    ap.add_argument("--dataset", default="yinyang")
    ap.add_argument("--results", default="results", help="kae: folder holding <dataset>/draw<draw>/{base,reps}; "
                    "base: work folder (results/variants/<dataset>/<variant>)")
    ap.add_argument("--draw", type=int, default=None, help="the base-network draw (one of base.seeds; default the "
                    "first): kae: whose network; base: the seed of every variant")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="kae: default the dataset's KAE seeds")
    ap.add_argument("--lambda-iso", type=float, default=None)
    ap.add_argument("--base-dir", default=None, help="kae: use the network of a `base` study run "
                    "(<results>/variants/<dataset>/<variant>) instead of the pipeline's")
    ap.add_argument("--edit", type=int, nargs="*", default=[], metavar="CLASS",
                    help="kae: also the paper's edit forgetting CLASS (target-class accuracy after, paper protocol)")
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE ...]")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="base: torch threads per run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="CSV of every run")
    args = ap.parse_args()
    config: dict = {}
    for path in args.config:
        config = merged(config, load_yaml(path))
    config.update(parse_variant(["config", *args.config_set])[1])
    draw = P.draws(config, args.dataset)[0] if args.draw is None else args.draw
    ds = dataset_config(config, args.dataset, draw)
    variants = [parse_variant(v) for v in args.variant]
    if args.study == "base" and any({"seed", "seeds"} & set(ov) for _, ov in variants):
        raise SystemExit("--variant: base-network draws are not variants; the pipeline runs them "
                         f"(datasets.{args.dataset}.base.seeds, e.g. --configfile config/draws.yaml) or use --draw")
    if args.study == "kae":
        lam = ds["kae"]["main_lambda_iso"] if args.lambda_iso is None else args.lambda_iso
        jobs = [{"name": name, "overrides": ov, "seed": s, "ds": ds, "lambda_iso": lam, "device": args.device,
                 "results": args.results, "draw": draw, "edit": args.edit, "base_dir": args.base_dir}
                for name, ov in variants for s in args.seeds or ds["kae"]["seeds"]]
        worker = train_one
    else:
        work = Path(args.results) / "variants" / args.dataset
        splits = write_splits(ds, config, work)
        jobs = [{"name": name, "overrides": ov, "ds": ds, "splits": splits, "work": str(work), "device": args.device,
                 "threads": args.threads} for name, ov in variants]
        worker = train_base
    with mp.get_context("spawn").Pool(args.workers) as pool:
        rows = pool.map(worker, jobs, chunksize=1)
    df = pd.DataFrame(rows)
    if args.out:
        df.to_csv(args.out, index=False)
    if args.study == "kae":
        protocols = list(ds["evaluation"]) + [f"edit{c}" for c in args.edit]
        df = df.groupby("variant", sort=False).agg(
            **{p: (p, lambda v: f"{np.nanmean(v):.2f} ({np.nanstd(v):.2f}) n={np.isfinite(v).sum()}") for p in protocols},
            seconds=("seconds", "median"))
    print(df.to_string())


if __name__ == "__main__":
    main()
