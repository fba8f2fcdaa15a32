"""Class unlearning by editing the Koopman operator (docs/method.md section 8), its evaluation and its baselines.

Row-vector convention throughout: the k-step operator is O = (K^k)^T, so the outputs of observables
Z (n x p) are Y = Z O. An edit returns a new p x p matrix O' and never touches the KAE; `KoopmanAutoencoder.with_operator`
wraps a KAE with O' in place of its k-step operator and classifies like any other surrogate.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from kaepipe.errors import ConfigError, DataError
from kaepipe.evaluate import Surrogate, per_class_accuracy
from kaepipe.nn.base import build_base
from kaepipe.nn.checkpoints import state_dict_for_save
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.train import TrainConfig, seed_all, train_classifier
from kaepipe.registry import Registry
from kaepipe.settings import TARGET_MODES, unlearn_settings
from kaepipe.tensor_io import decode_metadata, load_safetensors, save_safetensors

if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------------------------------------
# The operator and the observables
# ---------------------------------------------------------------------------------------------

def _f64(a) -> torch.Tensor:
    """A float64 CPU tensor view of an array or tensor (no copy when it already is one)."""
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def nearest_indices(queries, pool, chunk: int = 2048, kdtree_below: int = 64,
                    exclude: np.ndarray | None = None) -> np.ndarray:
    """For each query row, the index of its nearest row of `pool` (exact Euclidean, float64), never
    one of the rows where `exclude` is True.

    A k-d tree for low dimensions (p < kdtree_below; the observables of a trained KAE lie near a
    low-dimensional manifold, where it is ~10x faster) over the allowed rows, else chunked
    |x|^2 - 2 q.x (+ |q|^2, constant per query) in torch with excluded rows at +inf (no copy of the pool).
    """
    q_all, pool = _f64(queries), _f64(pool)
    if len(q_all) == 0:
        return np.empty(0, dtype=np.int64)
    keep = None if exclude is None else np.flatnonzero(~np.asarray(exclude, dtype=bool))
    if pool.shape[1] < kdtree_below:
        from scipy.spatial import cKDTree

        tree = cKDTree((pool if keep is None else pool[torch.from_numpy(keep)]).numpy())
        idx = np.asarray(tree.query(q_all.numpy(), k=1)[1], dtype=np.int64)
        return idx if keep is None else keep[idx]
    sq_pool = torch.einsum("ij,ij->i", pool, pool)
    if exclude is not None:
        sq_pool.masked_fill_(torch.as_tensor(np.asarray(exclude, dtype=bool)), float("inf"))
    out = [torch.addmm(sq_pool[None, :], q_all[s:s + chunk], pool.T, alpha=-2.0).argmin(1)
           for s in range(0, len(q_all), chunk)]
    return torch.cat(out).numpy()


def class_centroids(Y, labels: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """The classes present in `labels` and the mean output Y of each (float64, one row per class)."""
    Y = _f64(Y)
    classes, which = torch.unique(torch.as_tensor(np.asarray(labels)), return_inverse=True)
    sums = torch.zeros(len(classes), Y.shape[1], dtype=torch.float64).index_add_(0, which, Y)
    return classes.numpy(), sums / torch.bincount(which, minlength=len(classes)).to(torch.float64)[:, None]


def nearest_clean(queries, Z, forget: np.ndarray) -> torch.Tensor:
    """For each query row, the index (into Z) of its nearest clean row of Z (forget[i] False)."""
    return torch.from_numpy(nearest_indices(queries, Z, exclude=forget))


def target_table(Z, Y, forget: np.ndarray, mode: str = "nearest", labels: np.ndarray | None = None,
                 centroids: tuple[np.ndarray, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets of the forgotten rows as a small table of distinct rows and one index per forgotten
    sample (T = table[pick]); see `edit_targets` for the modes."""
    Z, Y = _f64(Z), _f64(Y)
    forget = np.asarray(forget, dtype=bool)
    forget_t = torch.from_numpy(forget)
    # the forgotten observables whose nearest clean sample is needed (shared: only the first one's)
    ZF = Z[forget_t] if mode in ("nearest", "neighbour") else Z[torch.from_numpy(np.flatnonzero(forget)[:1])]
    if mode in ("nearest", "shared"):
        nn = nearest_clean(ZF, Z, forget)
        rows, pick = torch.unique(nn, return_inverse=True)
        if mode == "shared":
            pick = torch.zeros(int(forget.sum()), dtype=torch.long)
        return Y[rows], pick
    if mode in ("centroid", "neighbour"):
        if labels is None:
            raise ValueError(f"{mode} targets need the labels of the samples")
        labels = np.asarray(labels)
        classes, cents = centroids if centroids is not None else class_centroids(Y, labels)
        keep = ~np.isin(classes, np.unique(labels[forget]))  # the retained classes
        classes, cents = classes[keep], cents[torch.from_numpy(keep)]
        if mode == "centroid":
            pick = nearest_indices(Y[forget_t], cents, kdtree_below=0)
        else:
            nn_label = labels[nearest_clean(ZF, Z, forget).numpy()]
            pick = np.searchsorted(classes, nn_label)
        return cents, torch.as_tensor(np.asarray(pick), dtype=torch.long)
    raise ConfigError(f"unlearn targets must be one of {list(TARGET_MODES)}, got '{mode}'")


def edit_targets(Z, Y, forget: np.ndarray, mode: str = "nearest", labels: np.ndarray | None = None,
                 centroids: tuple[np.ndarray, torch.Tensor] | None = None) -> np.ndarray:
    """Targets T for the forgotten rows, float64.

    nearest:   (docs/method.md section 8.3) for each forgotten sample, the output Y of its nearest clean sample in
               observable space (the observables Z = phi(x0), Euclidean).
    shared:    one target for all: the target of the first forgotten sample, i.e. the output of the
               clean sample nearest to it (docs/method.md section 8.3; the
               paper's MNIST runs).
    centroid:  (beyond the paper) for each forgotten sample, the centroid of the outputs of the
               retained class whose centroid is nearest to its own output Y: a point deep inside a
               neighbouring class rather than one on the decision boundary.
    neighbour: (beyond the paper) the centroid of the class of its nearest clean sample (as `nearest`
               picks it, in observable space).
    `centroid` and `neighbour` need `labels`; `centroids` (from `class_centroids(Y, labels)`) may be
    passed when precomputed: the clean classes' centroids do not depend on which class is forgotten.
    """
    table, pick = target_table(Z, Y, forget, mode, labels, centroids)
    return table[pick].numpy()


# ---------------------------------------------------------------------------------------------
# The closed-form edit
# ---------------------------------------------------------------------------------------------

def closed_form_delta(ZC: np.ndarray, H: np.ndarray, R: np.ndarray, reg: float, form: str = "auto") -> np.ndarray:
    """Delta = C0^-1 H^T (H C0^-1 H^T + reg I)^-1 R with C0 = Z_C^T Z_C + reg I, in float64.

    The minimiser of tr(Delta^T C0 Delta) + ||H Delta - R||^2 / reg: keep the clean outputs Z_C O,
    move the forgotten ones by R; as reg -> 0 the constraint H Delta = R holds exactly (when feasible).
    `form`: "dual" solves the m x m system exactly as written (m forgotten samples); "primal" uses the
    identical push-through form Delta = (reg C0 + H^T H)^-1 H^T R, a p x p system; "auto" takes the
    smaller. Computed with torch in float64, so the rule's thread count applies.
    """
    if not reg > 0:
        raise ConfigError(f"unlearn.reg must be > 0, got {reg}")
    ZC, H, R = _f64(ZC), _f64(H), _f64(R)
    p, m = ZC.shape[1], H.shape[0]
    if form == "auto":
        form = "primal" if m > p else "dual"
    eye_p = torch.eye(p, dtype=torch.float64)
    C0 = ZC.T @ ZC + reg * eye_p
    if form == "primal":
        return _spd_solve(reg * C0 + H.T @ H, H.T @ R).numpy()
    if form == "dual":
        C0_inv_Ht = _spd_solve(C0, H.T.contiguous())  # p x m
        G = H @ C0_inv_Ht + reg * torch.eye(m, dtype=torch.float64)  # m x m
        return (C0_inv_Ht @ _spd_solve(G, R)).numpy()
    raise ValueError(f"form must be auto, primal or dual, got '{form}'")


def _spd_solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Solve A X = B for a symmetric positive definite A (Cholesky), falling back to a general solve."""
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return torch.cholesky_solve(B, L)
    return torch.linalg.solve(A, B)


class EditProblem:
    """What every edit of one KAE shares, whatever the target class: O, Z, Y = Z O, the per-class Grams
    Z_c^T Z_c (their sum is Z^T Z) and the class centroids of Y.

    Computing these once per KAE (like the observables themselves, at the cost of one Gram) leaves each
    edit with its targets and one p x p solve, in the primal form Delta = (reg C0 + H^T H)^-1 H^T R with
    H^T H = Z_t^T Z_t, C0 = Z^T Z - H^T H + reg I and H^T R = strength (H^T T - Z_t^T Y_t); the targets
    come as a table of distinct rows, so H^T T costs one pass over H.
    """

    def __init__(self, O, Z, labels: np.ndarray) -> None:
        self.O, self.Z = _f64(O), _f64(Z)
        self.labels = np.asarray(labels)
        if self.Z.shape[1] != self.O.shape[0] or self.O.shape[0] != self.O.shape[1]:
            raise DataError(f"observables {tuple(self.Z.shape)} do not fit the operator {tuple(self.O.shape)}")
        if len(self.labels) != len(self.Z):
            raise DataError(f"{len(self.labels)} labels for {len(self.Z)} observables")
        self.Y = self.Z @ self.O
        self.class_grams, self.class_cross = {}, {}
        for c in np.unique(self.labels):
            Zc = self.Z[torch.from_numpy(self.labels == c)]
            self.class_grams[int(c)] = Zc.T @ Zc  # Z_c^T Z_c
            self.class_cross[int(c)] = self.class_grams[int(c)] @ self.O  # Z_c^T Y_c
        self.gram = sum(self.class_grams.values())
        self.gram_O = sum(self.class_cross.values())  # Z^T Y
        self.centroids = class_centroids(self.Y, self.labels)

    def targets(self, forget: np.ndarray, mode: str) -> torch.Tensor:
        return _f64(edit_targets(self.Z, self.Y, forget, mode, self.labels, self.centroids))

    def delta(self, target_class: int, targets: str = "nearest", reg: float = 0.1, strength: float = 1.0,
              form: str = "auto") -> torch.Tensor:
        """Delta for one target class (float64): the closed form with R = strength * (T - H O)."""
        if not reg > 0:
            raise ConfigError(f"unlearn.reg must be > 0, got {reg}")
        forget = forget_mask(self.labels, target_class)
        f_t = torch.from_numpy(forget)
        H = self.Z[f_t]
        p, m = H.shape[1], H.shape[0]
        if form == "auto":
            form = "primal" if m > p else "dual"
        table, pick = target_table(self.Z, self.Y, forget, targets, self.labels, self.centroids)
        if form == "dual":  # exactly the formula as written, m x m
            R = strength * (table[pick] - self.Y[f_t])
            return _f64(closed_form_delta(self.Z[~f_t], H, R, reg, "dual"))
        HtH, HtY = self.class_grams[int(target_class)], self.class_cross[int(target_class)]
        HtT = torch.zeros(len(table), p, dtype=torch.float64).index_add_(0, pick, H).T @ table
        eye = torch.eye(p, dtype=torch.float64)
        A = reg * (self.gram - HtH + reg * eye) + HtH  # reg C0 + H^T H
        if strength == 1.0:
            # O' = A^-1 (A O + H^T R) = A^-1 (reg C0 O + H^T T): one solve, no p x p x p product per edit
            rhs = reg * (self.gram_O - HtY + reg * self.O) + HtT
            return _spd_solve(A, rhs) - self.O
        return _spd_solve(A, strength * (HtT - HtY))

    def edit(self, target_class: int, targets: str = "nearest", reg: float = 0.1, strength: float = 1.0,
             form: str = "auto") -> np.ndarray:
        """O' = O + Delta as a float64 array."""
        return (self.O + self.delta(target_class, targets, reg, strength, form)).numpy()


def edit_operator(O, Z, labels: np.ndarray, target_class: int, targets: str = "nearest", reg: float = 0.1,
                  strength: float = 1.0, form: str = "auto") -> np.ndarray:
    """O' = O + Delta, Delta = closed form with R = strength * (T - H O); float64, inputs untouched."""
    return EditProblem(O, Z, labels).edit(target_class, targets, reg, strength, form)


# ---------------------------------------------------------------------------------------------
# Unlearning methods: a registry (the workflow edits with every method of `unlearn.methods`)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnlearningMethod:
    """An edit of the k-step operator: its settings from the dataset's merged `unlearn` block, and the edit.

    settings(u) -> dict of keyword arguments of `EditProblem.edit` (targets, reg, strength); `targets`:
    the target modes the method accepts. A new method is one `register_method` here (or in a module
    that this one imports), its settings in the config schema's `unlearn` block, and tests.
    """

    name: str
    settings: Callable[[Mapping], dict]
    targets: tuple[str, ...]
    doc: str = ""

    def edit(self, problem: EditProblem, target_class: int, settings: Mapping) -> np.ndarray:
        """O' (float64) that forgets `target_class`; the problem (and the KAE) are left untouched."""
        if settings["targets"] not in self.targets:
            raise ConfigError(f"unlearning method '{self.name}' takes targets {list(self.targets)}, "
                              f"got '{settings['targets']}'")
        return problem.edit(target_class, **settings)


UNLEARNING_METHODS: Registry[UnlearningMethod] = Registry("unlearning method")
register_method = UNLEARNING_METHODS.register
get_method = UNLEARNING_METHODS.lookup


register_method(UnlearningMethod(
    "paper", lambda u: {"targets": u["targets"], "reg": float(u["reg"]), "strength": 1.0}, ("nearest", "shared"),
    "the paper's edit (docs/method.md section 8.4): targets the nearest clean sample's output (or one shared "
    "target), the regularised least-squares closed form"))
register_method(UnlearningMethod(
    "region", lambda u: {"targets": u["region"]["targets"], "reg": float(u["region"]["reg"]),
                         "strength": float(u["region"]["strength"])}, ("centroid", "neighbour"),
    "the improved edit: the same closed form with targets deep inside a retained class (the centroid of "
    "the retained class nearest to each forgotten output), so the least-squares shrinkage no longer "
    "leaves forgotten samples on the target side and a larger reg keeps the clean outputs in place"))


def edit_with(method: str, O, Z, labels: np.ndarray, target_class: int, **overrides) -> np.ndarray:
    """O' by a registered method at its default settings (`overrides` replace some): a one-call form."""
    m = get_method(method)
    settings = {**m.settings(unlearn_settings({})), **overrides}
    return m.edit(EditProblem(O, Z, labels), target_class, settings)

def forget_mask(labels: np.ndarray, target_class: int) -> np.ndarray:
    """Boolean mask of the samples to forget; both it and its complement must be non-empty."""
    forget = np.asarray(labels) == target_class
    if not forget.any():
        raise DataError(f"no training sample has the target class {target_class}")
    if forget.all():
        raise DataError("every training sample has the target class; nothing would be retained")
    return forget


# ---------------------------------------------------------------------------------------------
# The edited model
# ---------------------------------------------------------------------------------------------

def save_edited(kae, operators: Mapping[str, np.ndarray], path: str | Path, extra: Mapping | None = None) -> None:
    """Save a KAE with one or more edited k-step operators (float64, tensors `edited_operator.<name>`)."""

    tensors = {f"kae.{k}": v for k, v in state_dict_for_save(kae).items()}
    for name, op in operators.items():
        tensors[f"edited_operator.{name}"] = torch.from_numpy(np.ascontiguousarray(op, dtype=np.float64))
    meta = {"model_class": "EditedKoopmanAutoencoder", "architecture": kae.cfg.to_dict(),
            "operators": sorted(operators), "convention": "outputs = phi(x0) @ operator (= (K^k)^T before the edit)",
            **(extra or {})}
    save_safetensors(tensors, path, meta)


def load_edited(path: str | Path, name: str) -> tuple[KoopmanAutoencoder, dict]:
    """Load one edited model saved by `save_edited` and the file's metadata."""

    tensors, raw = load_safetensors(path)
    meta = decode_metadata(raw)
    if meta.get("model_class") != "EditedKoopmanAutoencoder":
        raise DataError(f"{path}: not an edited-KAE checkpoint (model_class {meta.get('model_class')!r})")
    key = f"edited_operator.{name}"
    if key not in tensors:
        raise DataError(f"{path}: no edited operator '{name}'; it holds {meta.get('operators')}")
    kae = KoopmanAutoencoder(KAEConfig(**meta["architecture"]))
    kae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("kae.")})
    return kae.eval().with_operator(tensors[key].numpy()).eval(), meta


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def class_summary(per_class: Sequence[float | None], target_class: int) -> dict:
    """Target-class accuracy and the retained classes' mean accuracy (classes absent from the data skipped)."""
    pc = np.array([np.nan if v is None else v for v in per_class], dtype=np.float64)
    retained = np.delete(pc, target_class)
    return {"target": float(pc[target_class]), "retained": float(np.nanmean(retained))}


def before_after(before: Mapping, after: Mapping, target_class: int) -> dict:
    """Per-class accuracy reports before and after an edit, summarised for the target and the retained classes."""
    b, a = class_summary(before["per_class"], target_class), class_summary(after["per_class"], target_class)
    return {"per_class_before": before["per_class"], "per_class_after": after["per_class"],
            "macro_before": before["macro"], "macro_after": after["macro"],
            "target_before": b["target"], "target_after": a["target"],
            "retained_before": b["retained"], "retained_after": a["retained"]}


def edit_diagnostics(O, O_new, Z, labels: np.ndarray, target_class: int, targets: str,
                     head: Surrogate | None = None) -> dict:
    """Why an edit works or not (training set): how far the forgotten outputs moved toward their targets,
    the targets' own classes and margins, where the forgotten samples went, and the rank of Delta."""
    O, O_new, Z = _f64(O), _f64(O_new), _f64(Z)
    forget = forget_mask(labels, target_class)
    f_t = torch.from_numpy(forget)
    H = Z[f_t]
    Y = Z @ O
    table, pick = target_table(Z, Y, forget, targets, labels)
    T = table[pick]
    delta = O_new - O
    R, moved = T - H @ O, H @ delta
    sv = torch.linalg.svdvals(delta)
    energy = torch.cumsum(sv ** 2, 0) / (sv ** 2).sum().clamp_min(1e-300)
    clean_before = Y[~f_t]
    out = {
        # <H Delta, R> / ||R||^2: 1 = every forgotten output reaches its target, 0 = none moves
        "fit_fraction": float((moved * R).sum() / (R * R).sum().clamp_min(1e-300)),
        "constraint_residual": float(torch.linalg.norm(moved - R) / torch.linalg.norm(R).clamp_min(1e-300)),
        "clean_relative_change": float(torch.linalg.norm(Z[~f_t] @ delta) / torch.linalg.norm(clean_before)),
        "delta_rank": int((sv > sv[0] * 1e-8).sum()) if len(sv) and sv[0] > 0 else 0,
        # the fewest singular directions holding 99 % of ||Delta||_F^2 (0 for no edit)
        "delta_rank_99": int((energy < 0.99).sum()) + 1 if len(sv) and sv[0] > 0 else 0,
        "delta_singular_values": [float(v) for v in sv[:10]],
        "n_forget": int(forget.sum()), "n_clean": int((~forget).sum()),
        "targets_distinct": len(torch.unique(pick)),  # how many different points the targets are
    }
    if head is not None:
        lt = head.output_logits(T)
        pt = lt.argmax(1)
        gap = lt[np.arange(len(lt)), pt] - lt[:, target_class]
        after = head.predict_outputs(H @ O_new)
        n_classes = lt.shape[1]
        out.update({
            "targets_classified_target": float(100.0 * (pt == target_class).mean()),
            "targets_logit_gap_mean": float(gap.mean()),   # logit(predicted) - logit(target class) at T
            "forgotten_after_counts": np.bincount(after, minlength=n_classes).tolist(),
        })
    return out


# ---------------------------------------------------------------------------------------------
# Baselines: retrain without the class (gold standard), fine-tune on the retained classes
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Baseline:
    """A baseline that changes the base network itself: its training settings and its starting network."""

    name: str
    train_config: Callable[[Mapping], TrainConfig]
    start: Callable[[Mapping, nn.Module, int], nn.Module]  # (dataset settings, trained base, n inputs)
    doc: str = ""


BASELINE_METHODS: Registry[Baseline] = Registry("unlearning baseline")
register_baseline = BASELINE_METHODS.register


def _finetune_config(ds: Mapping) -> TrainConfig:
    bl = unlearn_settings(ds)["baselines"]
    return TrainConfig.from_dict({**ds["base"], "epochs": bl["finetune_epochs"], "lr": bl["finetune_lr"],
                                  "schedule": bl["finetune_schedule"]})


register_baseline(Baseline("retrain", lambda ds: TrainConfig.from_dict(dict(ds["base"])),
                           lambda ds, _base, n_in: build_base(ds, n_in),
                           "the gold standard: the base network trained again without the class"))
register_baseline(Baseline("finetune", _finetune_config, lambda _ds, base, _n: copy.deepcopy(base),
                           "the trained base network fine-tuned for a few epochs on the retained classes"))


def baseline_train_config(ds: Mapping, kind: str) -> TrainConfig:
    """Training settings of a baseline (the base network's for `retrain`, the short run for `finetune`)."""
    return BASELINE_METHODS.lookup(kind).train_config(ds)


def unlearn_baseline(ds: Mapping, kind: str, target_class: int, base_model, x_train: np.ndarray,
                     y_train: np.ndarray, device: torch.device, log: Callable[[str], None] = print):
    """Train the baseline network without the target class; return it and its training time: wall
    seconds and CPU seconds of this thread (meaningful on the CPU with one torch thread)."""

    cfg = baseline_train_config(ds, kind)
    keep = np.asarray(y_train) != target_class
    seed_all(cfg.seed)
    model = BASELINE_METHODS[kind].start(ds, base_model, x_train.shape[1]).to(device)
    x = torch.as_tensor(x_train[keep], device=device)
    y = torch.as_tensor(y_train[keep], device=device)
    log(f"{kind}: {len(x)} samples without class {target_class}, {cfg.epochs} epochs, lr {cfg.lr}, "
        f"schedule {cfg.schedule}, device {device}")
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.thread_time()
    train_classifier(model, x, y, cfg, log_every=max(1, cfg.epochs // 5), log=log)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model.eval(), {"seconds": time.perf_counter() - t0, "cpu_seconds": time.thread_time() - c0}


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Stage entry point: one edit
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Stage entry point: the trade-off study (targets x reg x strength x rank of the edit)
# ---------------------------------------------------------------------------------------------


def truncate_rank(delta: torch.Tensor, rank: int | None) -> torch.Tensor:
    """The best rank-r approximation of Delta (SVD); None keeps it whole."""
    if rank is None or rank >= min(delta.shape):
        return delta
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def study_rows(problem: EditProblem, head: Surrogate, target_class: int, evaluation: Mapping[str, tuple],
               grid: Mapping) -> list[dict]:
    """Target and retained accuracy for every combination of the grid; `evaluation` maps protocol ->
    (split, Z of the split, labels). Delta is linear in the strength, so one solve serves all strengths."""

    rows = []
    n_classes = len(problem.centroids[0])
    cache: dict[str, np.ndarray] = {}

    def summary(O_new: torch.Tensor, split: str, Zs: torch.Tensor, ys: np.ndarray, key: str) -> dict:
        if key not in cache:
            cache[key] = per_class_accuracy(head.predict_outputs(Zs @ O_new), ys, max(n_classes, int(ys.max()) + 1))
        return class_summary(list(cache[key]), target_class)

    for protocol, (split, Zs, ys) in evaluation.items():
        b = summary(problem.O, split, Zs, ys, f"before/{split}")
        for targets in grid["targets"]:
            for reg in grid["reg"]:
                delta = problem.delta(target_class, targets, float(reg))
                for rank in grid["rank"]:
                    d_r = truncate_rank(delta, rank)
                    for strength in grid["strength"]:
                        key = f"{targets}/{reg}/{rank}/{strength}/{split}"
                        a = summary(problem.O + float(strength) * d_r, split, Zs, ys, key)
                        rows.append({"protocol": protocol, "split": split, "targets": targets, "reg": float(reg),
                                     "strength": float(strength), "rank": -1 if rank is None else int(rank),
                                     "target_before": b["target"], "target_after": a["target"],
                                     "retained_before": b["retained"], "retained_after": a["retained"]})
    return rows


# ---------------------------------------------------------------------------------------------
# Workflow paths (used by workflow/rules/unlearn.smk)
# ---------------------------------------------------------------------------------------------


