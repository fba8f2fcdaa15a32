"""The unlearning stages: edit a KAE's operator to forget a class, the trade-off study, the baselines."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch

from kaepipe.config import merged
from kaepipe.data import read_split
from kaepipe.evaluate import Surrogate, accuracy_report, evaluate_model, surrogate_predictions
from kaepipe.io import provenance, write_json, write_parquet
from kaepipe.nn.checkpoints import base_expectation, kae_expectation, load_base_model, load_kae, save_base_model
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
    base = load_base_model(base_path, base_expectation(ds))
    before = {s: evaluate_model(base, x, y, ds["classes"], device) for s, (x, y) in splits.items()}
    model, timing = unlearn_baseline(ds, kind, target_class, base, *splits["train"], device, log)
    after = {s: evaluate_model(model, x, y, ds["classes"], device) for s, (x, y) in splits.items()}
    protocols = {p: {"split": s, **before_after(before[s], after[s], target_class)}
                 for p, s in ds["evaluation"].items()}
    for p, r in protocols.items():
        log(f"{kind}, class {target_class}, {p} protocol: target {r['target_before']:.2f} -> {r['target_after']:.2f}, "
            f"retained {r['retained_before']:.2f} -> {r['retained_after']:.2f}")
    cfg = baseline_train_config(ds, kind)
    prov = provenance({"dataset": ds["name"], "base": ds["base"], "unlearn": unlearn_settings(ds)})
    out = {"dataset": ds["name"], "method": kind, "target_class": target_class, "seconds": timing["seconds"],
           "cpu_seconds": timing["cpu_seconds"],
           "train": cfg.to_dict(), "device": str(device), "protocols": protocols, "provenance": prov}
    save_base_model(model.cpu(), out_model, {"dataset": ds["name"], "unlearning_baseline": kind,
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


def run_unlearn_edit(ds: Mapping, target_class: int, kae_path: str, base_path: str, preprocessing: str,
                     reps: Mapping[str, str], out_json: str, out_model: str, device: torch.device | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """Edit one KAE to forget one class with every configured method; surrogate accuracy before and after."""

    check_target(ds, target_class)
    u = unlearn_settings(ds)
    device = device or torch.device("cpu")
    kae, meta = load_kae(kae_path, kae_expectation(ds["kae"]))
    base = load_base_model(base_path, base_expectation(ds))
    last = base.cfg.blocks
    pre = load_preprocessing(preprocessing, [0, last])
    needed = {"train", *ds["evaluation"].values()}  # the edit is fitted on train; protocols read their split
    data = {s: load_reps(p) for s, p in reps.items() if s in needed}
    layers_train, labels = data["train"]
    n_classes = ds["classes"]

    import scipy.spatial  # noqa: F401  (imported before any timing)

    t0 = time.perf_counter()
    Z = kae.observables(pre[0].apply(layers_train[0]))
    O = kae.operator_matrix()
    problem = EditProblem(O, Z, labels)
    prepare_seconds = time.perf_counter() - t0  # per KAE: observables, operator, Y and the Gram
    log(f"{ds['name']}: forgetting class {target_class} from KAE {kae_path} (lambda_iso {meta.get('lambda_iso')}, "
        f"seed {meta.get('seed')}): {int((labels == target_class).sum())} of {len(labels)} training samples, "
        f"p = {O.shape[0]}; observables, operator and Gram (once per KAE) in {prepare_seconds:.3f}s")

    def reports(model) -> dict:
        return {s: accuracy_report(surrogate_predictions(model, base, pre[0], pre[last], L[0], device), y, n_classes)
                for s, (L, y) in data.items() if s in ds["evaluation"].values()}

    before = reports(kae)
    head = Surrogate.of_resmlp(kae, base, pre[last], device)
    methods, operators = {}, {}
    for method in u["methods"]:
        edit = get_method(method)
        settings = edit.settings(u)
        O_new, timing = timed_edit(edit, problem, target_class, settings, u["timing_repeats"])
        seconds = timing["seconds"]
        operators[method] = O_new
        after = reports(kae.with_operator(O_new))
        protocols = {p: {"split": s, **before_after(before[s], after[s], target_class)}
                     for p, s in ds["evaluation"].items()}
        diag = edit_diagnostics(O, O_new, Z, labels, target_class, settings["targets"], head)
        methods[method] = {"settings": settings, "settings_text": settings_text(settings), "edit_seconds": seconds,
                           "edit_cpu_seconds": timing["cpu_seconds"], "edit_seconds_min": timing["seconds_min"],
                           "timing_repeats": timing["repeats"], "prepare_seconds": prepare_seconds,
                           "protocols": protocols, "diagnostics": diag}
        for p, r in protocols.items():
            log(f"{method} ({settings_text(settings)}), {p} protocol ({r['split']}): target "
                f"{r['target_before']:.2f} -> {r['target_after']:.2f}, retained {r['retained_before']:.2f} -> "
                f"{r['retained_after']:.2f}; edit {seconds * 1e3:.1f} ms")
        log(f"{method} diagnostics: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in diag.items() if k != "delta_singular_values"))
    prov = provenance({"dataset": ds["name"], "unlearn": u, "kae": ds["kae"], "target_class": target_class})
    extra = {"dataset": ds["name"], "target_class": target_class, "lambda_iso": meta.get("lambda_iso"),
             "seed": meta.get("seed"), "source_kae": str(kae_path),
             "settings": {m: methods[m]["settings"] for m in methods}, "provenance": prov}
    save_edited(kae, operators, out_model, extra)
    out = {"dataset": ds["name"], "target_class": target_class, "lambda_iso": meta.get("lambda_iso"),
           "seed": meta.get("seed"), "n_forget": int((labels == target_class).sum()), "n_train": len(labels),
           "latent": int(O.shape[0]), "device": str(device), "methods": methods, "provenance": prov}
    write_json(out, out_json)
    return out


def run_unlearn_study(ds: Mapping, target_class: int, kae_path: str, base_path: str, preprocessing: str,
                      reps: Mapping[str, str], out_parquet: str, device: torch.device | None = None,
                      log: Callable[[str], None] = print):
    """The trade-off study of one KAE and target class: every combination of the `unlearn.study` grid."""


    check_target(ds, target_class)
    u = unlearn_settings(ds)
    grid = merged(STUDY_DEFAULTS, u.get("study") or {})
    device = device or torch.device("cpu")
    kae, meta = load_kae(kae_path, kae_expectation(ds["kae"]))
    base = load_base_model(base_path, base_expectation(ds))
    last = base.cfg.blocks
    pre = load_preprocessing(preprocessing, [0, last])
    data = {s: load_reps(p) for s, p in reps.items()}
    layers_train, labels = data["train"]
    problem = EditProblem(kae.operator_matrix(), kae.observables(pre[0].apply(layers_train[0])), labels)
    head = Surrogate.of_resmlp(kae, base, pre[last], device)
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
    df.insert(0, "dataset", ds["name"])
    log(f"study of class {target_class}: {len(df)} rows in {time.perf_counter() - t0:.1f}s "
        f"(grid { {k: grid[k] for k in ('targets', 'reg', 'strength', 'rank')} }, points {grid['points']})")
    prov = provenance({"dataset": ds["name"], "unlearn": u, "kae": ds["kae"], "target_class": target_class})
    write_parquet(df, out_parquet, {"dataset": ds["name"], "target_class": target_class, "seed": meta.get("seed"),
                                    "grid": grid, "provenance": prov})
    return df
