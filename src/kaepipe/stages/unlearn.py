"""The unlearning stages: edit a KAE's operator to forget a class, the trade-off study, the baselines."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.spatial  # noqa: F401  (the edits' nearest-neighbour search: imported before any timing)
import torch

from kaepipe.config import draw_of, merged
from kaepipe.data import read_split
from kaepipe.evaluate import Surrogate, accuracy_report, evaluate_model, surrogate_predictions
from kaepipe.io import provenance, write_json, write_parquet
from kaepipe.network import LayeredNetwork
from kaepipe.nn.base import explicit_head, load_base, save_base
from kaepipe.nn.checkpoints import kae_expectation, load_kae
from kaepipe.nn.kae import KoopmanAutoencoder
from kaepipe.represent import load_preprocessing, load_reps
from kaepipe.settings import STUDY_DEFAULTS, check_target, settings_text, unlearn_settings
from kaepipe.unlearn import (
    EditProblem,
    UnlearningMethod,
    _f64,
    baseline_train_config,
    before_after,
    edit_diagnostics,
    get_method,
    save_edited,
    study_rows,
    unlearn_baseline,
)


def run_unlearn_baseline(ds: Mapping, kind: str, target_class: int, split_paths: Mapping[str, str],
                         base_path: str, out_json: str, out_model: str, device: torch.device,
                         log: Callable[[str], None] = print) -> dict:
    """One baseline for one target class: per-class accuracy of the base network before and after."""

    check_target(ds, target_class)
    splits = {s: read_split(p, ds["classes"], s) for s, p in split_paths.items()}
    base = load_base(base_path, ds)
    before = {s: evaluate_model(base.module, x, y, ds["classes"], device) for s, (x, y) in splits.items()}
    model, timing = unlearn_baseline(ds, kind, target_class, base.module, *splits["train"], device, log)
    after = {s: evaluate_model(model, x, y, ds["classes"], device) for s, (x, y) in splits.items()}
    protocols = {p: {"split": s, **before_after(before[s], after[s], target_class)}
                 for p, s in ds["evaluation"].items()}
    for p, r in protocols.items():
        log(f"{kind}, class {target_class}, {p} protocol: target {r['target_before']:.2f} -> {r['target_after']:.2f}, "
            f"retained {r['retained_before']:.2f} -> {r['retained_after']:.2f}")
    cfg = baseline_train_config(ds, kind)
    prov = provenance({"dataset": ds["name"], "base": ds["base"], "unlearn": unlearn_settings(ds)})
    out = {"dataset": ds["name"], "draw": draw_of(ds), "method": kind, "target_class": target_class,
           "seconds": timing["seconds"],
           "cpu_seconds": timing["cpu_seconds"],
           "train": cfg.to_dict(), "device": str(device), "protocols": protocols, "provenance": prov}
    trained = LayeredNetwork.with_shapes(model.cpu(), base.layers, base.shapes, explicit_head(ds, model))
    save_base(trained, ds, out_model, {"dataset": ds["name"], "draw": draw_of(ds), "unlearning_baseline": kind,
                                       "target_class": target_class, "train": cfg.to_dict(), "provenance": prov})
    write_json(out, out_json)
    return out


def timed_edit(method: UnlearningMethod, problem: EditProblem, target_class: int, settings: Mapping, repeats: int = 5,
               min_total: float = 0.2, max_repeats: int = 50) -> tuple[np.ndarray, dict]:
    """Run an edit at least `repeats` times (more, up to `max_repeats`, until `min_total` seconds have
    passed); return O' and its timing: median and fastest wall time, median CPU time of this thread.

    The time covers everything specific to the target class (forget set, targets, H^T H, the solve),
    not the per-KAE preparation (`EditProblem`: observables, Y, Gram, centroids), which is timed apart.
    On a shared machine the median wall time includes other processes' load, like a baseline's single
    run does; the CPU time does not.
    """
    method.edit(problem, target_class, settings)  # warm-up, untimed: first-call library initialisation
    walls, cpus, O_new = [], [], None
    while len(walls) < max(1, repeats) or (sum(walls) < min_total and len(walls) < max_repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        O_new = method.edit(problem, target_class, settings)
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - t0)
    return O_new, {"seconds": float(np.median(walls)), "seconds_min": float(min(walls)),
                   "cpu_seconds": float(np.median(cpus)), "repeats": len(walls)}


@dataclass
class EditInputs:
    """What every edit and study of one dataset shares: the base network, the first and last layers'
    preprocessing and the representations of the splits (loaded once per job)."""

    base: LayeredNetwork
    pre: Mapping[int, Any]
    last: int
    data: Mapping[str, tuple[np.ndarray, np.ndarray]]


def load_edit_inputs(ds: Mapping, base_path: str, preprocessing: str, reps: Mapping[str, str]) -> EditInputs:
    """The shared inputs of a dataset's edits: the training split (the edits are fitted on it) and the
    splits of the evaluation protocols."""
    base = load_base(base_path, ds)
    last = len(base.layers) - 1
    needed = {"train", *ds["evaluation"].values()}
    return EditInputs(base, load_preprocessing(preprocessing, [0, last]), last,
                      {s: load_reps(p) for s, p in reps.items() if s in needed})


def run_unlearn_edit(ds: Mapping, target_class: int, kae_path: str, base_path: str, preprocessing: str,
                     reps: Mapping[str, str], out_json: str, out_model: str, device: torch.device | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """Edit one KAE to forget one class with every configured method; surrogate accuracy before and after."""
    return run_unlearn_edits(ds, [(target_class, kae_path, out_json, out_model)], base_path, preprocessing, reps,
                             device, log)[0]


def run_unlearn_edits(ds: Mapping, edits: Sequence[tuple[int, str, str, str]], base_path: str, preprocessing: str,
                      reps: Mapping[str, str], device: torch.device | None = None,
                      log: Callable[[str], None] = print) -> list[dict]:
    """Every edit of a list (target class, KAE file, output JSON, output model) of one dataset: the base
    network and the data are loaded once, each KAE's preparation (observables, operator, Gram matrices,
    accuracy before the edit) is done once for all its target classes."""
    for target_class, *_ in edits:
        check_target(ds, target_class)
    device = device or torch.device("cpu")
    inputs = load_edit_inputs(ds, base_path, preprocessing, reps)
    prepared: dict[str, _PreparedKAE] = {}
    out = []
    for target_class, kae_path, out_json, out_model in edits:
        if kae_path not in prepared:
            prepared[kae_path] = _prepare_kae(ds, kae_path, inputs, device)
        out.append(_edit_one(ds, target_class, prepared[kae_path], inputs, out_json, out_model, device, log))
    return out


@dataclass
class _PreparedKAE:
    """One KAE's share of its edits: the model, its metadata, the edit problem and the accuracy before."""

    path: str
    kae: KoopmanAutoencoder
    meta: Mapping[str, Any]
    problem: EditProblem
    prepare_seconds: float
    before: Mapping[str, dict]
    head: Surrogate


def _reports(ds: Mapping, model: KoopmanAutoencoder, inputs: EditInputs, device: torch.device) -> dict:
    pre, last = inputs.pre, inputs.last
    return {s: accuracy_report(surrogate_predictions(model, inputs.base, pre[0], pre[last], L[0], device), y,
                               ds["classes"])
            for s, (L, y) in inputs.data.items() if s in ds["evaluation"].values()}


def _prepare_kae(ds: Mapping, kae_path: str, inputs: EditInputs, device: torch.device) -> _PreparedKAE:
    kae, meta = load_kae(kae_path, kae_expectation(ds["kae"]))
    layers_train, labels = inputs.data["train"]
    t0 = time.perf_counter()
    problem = EditProblem(kae.operator_matrix(), kae.observables(inputs.pre[0].apply(layers_train[0])), labels)
    prepare_seconds = time.perf_counter() - t0  # per KAE: observables, operator, Y and the Gram
    return _PreparedKAE(kae_path, kae, meta, problem, prepare_seconds, _reports(ds, kae, inputs, device),
                        Surrogate.of_network(kae, inputs.base, inputs.pre[inputs.last], device))


def _edit_one(ds: Mapping, target_class: int, k: _PreparedKAE, inputs: EditInputs, out_json: str, out_model: str,
              device: torch.device, log: Callable[[str], None]) -> dict:
    u = unlearn_settings(ds)
    labels = k.problem.labels
    O, Z = k.problem.O.numpy(), k.problem.Z.numpy()
    log(f"{ds['name']}: forgetting class {target_class} from KAE {k.path} (lambda_iso {k.meta.get('lambda_iso')}, "
        f"seed {k.meta.get('seed')}): {int((labels == target_class).sum())} of {len(labels)} training samples, "
        f"p = {O.shape[0]}; observables, operator and Gram (once per KAE) in {k.prepare_seconds:.3f}s")
    methods, operators = {}, {}
    for method in u["methods"]:
        edit = get_method(method)
        settings = edit.settings(u)
        O_new, timing = timed_edit(edit, k.problem, target_class, settings, u["timing_repeats"])
        seconds = timing["seconds"]
        operators[method] = O_new
        after = _reports(ds, k.kae.with_operator(O_new), inputs, device)
        protocols = {p: {"split": s, **before_after(k.before[s], after[s], target_class)}
                     for p, s in ds["evaluation"].items()}
        diag = edit_diagnostics(O, O_new, Z, labels, target_class, settings["targets"], k.head)
        methods[method] = {"settings": settings, "settings_text": settings_text(settings), "edit_seconds": seconds,
                           "edit_cpu_seconds": timing["cpu_seconds"], "edit_seconds_min": timing["seconds_min"],
                           "timing_repeats": timing["repeats"], "prepare_seconds": k.prepare_seconds,
                           "protocols": protocols, "diagnostics": diag}
        for p, r in protocols.items():
            log(f"{method} ({settings_text(settings)}), {p} protocol ({r['split']}): target "
                f"{r['target_before']:.2f} -> {r['target_after']:.2f}, retained {r['retained_before']:.2f} -> "
                f"{r['retained_after']:.2f}; edit {seconds * 1e3:.1f} ms")
        log(f"{method} diagnostics: " + ", ".join(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}"
                                                  for key, v in diag.items() if key != "delta_singular_values"))
    prov = provenance({"dataset": ds["name"], "unlearn": u, "kae": ds["kae"], "target_class": target_class})
    extra = {"dataset": ds["name"], "draw": draw_of(ds), "target_class": target_class,
             "lambda_iso": k.meta.get("lambda_iso"), "seed": k.meta.get("seed"), "source_kae": str(k.path),
             "settings": {m: methods[m]["settings"] for m in methods}, "provenance": prov}
    save_edited(k.kae, operators, out_model, extra)
    out = {"dataset": ds["name"], "draw": draw_of(ds), "target_class": target_class,
           "lambda_iso": k.meta.get("lambda_iso"), "seed": k.meta.get("seed"),
           "n_forget": int((labels == target_class).sum()), "n_train": len(labels),
           "latent": int(O.shape[0]), "device": str(device), "methods": methods, "provenance": prov}
    write_json(out, out_json)
    return out


def run_unlearn_study(ds: Mapping, target_class: int, kae_path: str, base_path: str, preprocessing: str,
                      reps: Mapping[str, str], out_parquet: str, device: torch.device | None = None,
                      log: Callable[[str], None] = print):
    """The trade-off study of one KAE and target class: every combination of the `unlearn.study` grid."""
    return run_unlearn_studies(ds, [(target_class, kae_path, out_parquet)], base_path, preprocessing, reps,
                               device, log)[0]


def run_unlearn_studies(ds: Mapping, studies: Sequence[tuple[int, str, str]], base_path: str, preprocessing: str,
                        reps: Mapping[str, str], device: torch.device | None = None,
                        log: Callable[[str], None] = print) -> list[pd.DataFrame]:
    """Every study of a list (target class, KAE file, output Parquet) of one dataset, the base network and
    the data loaded once."""
    for target_class, *_ in studies:
        check_target(ds, target_class)
    device = device or torch.device("cpu")
    inputs = load_edit_inputs(ds, base_path, preprocessing, reps)
    return [_study_one(ds, target_class, kae_path, inputs, out_parquet, device, log)
            for target_class, kae_path, out_parquet in studies]


def _study_one(ds: Mapping, target_class: int, kae_path: str, inputs: EditInputs, out_parquet: str,
               device: torch.device, log: Callable[[str], None]) -> pd.DataFrame:
    u = unlearn_settings(ds)
    grid = merged(STUDY_DEFAULTS, u.get("study") or {})
    kae, meta = load_kae(kae_path, kae_expectation(ds["kae"]))
    pre, data = inputs.pre, inputs.data
    layers_train, labels = data["train"]
    problem = EditProblem(kae.operator_matrix(), kae.observables(pre[0].apply(layers_train[0])), labels)
    head = Surrogate.of_network(kae, inputs.base, pre[inputs.last], device)
    rng = np.random.default_rng(grid["seed"])
    evaluation, zs = {}, {}
    for protocol, split in ds["evaluation"].items():
        if split not in zs:
            L, y = data[split]
            idx = np.arange(len(y))
            if grid["points"] and grid["points"] < len(y):
                idx = np.sort(rng.choice(len(y), grid["points"], replace=False))
            zs[split] = (_f64(kae.observables(pre[0].apply(L[0][idx]))), y[idx])
        evaluation[protocol] = (split, *zs[split])
    t0 = time.perf_counter()
    rows = study_rows(problem, head, target_class, evaluation, grid)
    df = pd.DataFrame(rows)
    df.insert(0, "target_class", int(target_class))
    df.insert(0, "seed", meta.get("seed"))
    df.insert(0, "draw", draw_of(ds))
    df.insert(0, "dataset", ds["name"])
    log(f"study of class {target_class}: {len(df)} rows in {time.perf_counter() - t0:.1f}s "
        f"(grid { {k: grid[k] for k in ('targets', 'reg', 'strength', 'rank')} }, points {grid['points']})")
    prov = provenance({"dataset": ds["name"], "unlearn": u, "kae": ds["kae"], "target_class": target_class})
    write_parquet(df, out_parquet, {"dataset": ds["name"], "draw": draw_of(ds), "target_class": target_class,
                                    "seed": meta.get("seed"), "grid": grid, "provenance": prov})
    return df
