"""Class unlearning by editing the Koopman operator (METHOD section 8), its evaluation and its baselines.

Row-vector convention throughout: the k-step operator is O = (K^k)^T, so the outputs of observables
Z (n x p) are Y = Z O. An edit returns a new p x p matrix O' and never touches the KAE; `EditedKAE`
wraps a KAE with O' in place of its k-step operator and classifies like any other surrogate.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kaepipe.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("paper", "region")
TARGET_MODES = ("nearest", "shared", "centroid", "neighbour")
BASELINES = ("retrain", "finetune")


# ---------------------------------------------------------------------------------------------
# The operator and the observables
# ---------------------------------------------------------------------------------------------

def operator_matrix(kae) -> np.ndarray:
    """The k-step operator of a KAE in the row-vector convention, O = (K^k)^T, in float64."""
    op = copy.deepcopy(kae.koopman).double().cpu()
    with torch.no_grad():
        return op.power(kae.cfg.k).T.numpy().copy()


@torch.no_grad()
def observables(kae, x0: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Z = phi(x0) for preprocessed first-layer inputs, as float64 (phi runs in the KAE's own dtype,
    as in the surrogate path)."""
    dtype = next(kae.encoder.parameters()).dtype
    device = next(kae.encoder.parameters()).device
    x = torch.as_tensor(np.asarray(x0), dtype=dtype)
    return torch.cat([kae.encode(x[s:s + batch_size].to(device)).cpu()
                      for s in range(0, len(x), batch_size)]).double().numpy()


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

    nearest:   (METHOD 8.3) for each forgotten sample, the output Y of its nearest clean sample in
               observable space (the observables Z = phi(x0), Euclidean).
    shared:    one target for all: the target of the first forgotten sample, i.e. the output of the
               clean sample nearest to it (METHOD: "the one of the first forgotten sample", the
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


def paper_edit(O, Z, labels: np.ndarray, target_class: int, reg: float = 0.1,
               targets: str = "nearest") -> np.ndarray:
    """The paper's edit (METHOD 8): O' = O + Delta in float64; the inputs (and the KAE) are not modified.

    O = (K^k)^T, Z = phi(pre(x0)) on the training set, labels its classes: the forget set F is the
    target class, the clean set C the rest, targets T per `targets` (nearest | shared), R = T - H O with
    H = Z[F], and Delta the regularised closed form (`closed_form_delta`).
    """
    if targets not in ("nearest", "shared"):
        raise ConfigError(f"the paper's edit uses nearest or shared targets, got '{targets}'")
    return edit_operator(O, Z, labels, target_class, targets, reg)


def region_edit(O, Z, labels: np.ndarray, target_class: int, reg: float = 0.3, strength: float = 1.0,
                targets: str = "centroid") -> np.ndarray:
    """The improved edit: the paper's closed form with targets inside a retained class's region.

    Each forgotten sample is sent to the centroid of the outputs of a retained class (`centroid`: the
    class whose centroid is nearest to its output; `neighbour`: the class of its nearest clean sample),
    i.e. deep into a neighbouring class rather than onto the decision boundary. The least-squares
    shrinkage of the over-determined constraint then no longer leaves forgotten samples on the target
    side, and the margin allows a larger `reg`, which keeps the clean outputs closer to unchanged.
    """
    if targets not in ("centroid", "neighbour"):
        raise ConfigError(f"the region edit uses centroid or neighbour targets, got '{targets}'")
    return edit_operator(O, Z, labels, target_class, targets, reg, strength)


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

class EditedKAE(nn.Module):
    """A KAE whose k-step operator is replaced by O' (row convention): x0 -> psi(phi(x0) O')."""

    def __init__(self, kae, operator: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        self.kae = kae
        op = torch.as_tensor(np.asarray(operator), dtype=torch.float64)  # kept exact; cast per call
        p = kae.cfg.latent
        if op.shape != (p, p):
            raise DataError(f"edited operator has shape {tuple(op.shape)}, expected ({p}, {p})")
        self.register_buffer("operator", op.clone())
        self.cfg = kae.cfg

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.kae.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.kae.decode(z)

    def advance(self, z: torch.Tensor, t: int | None = None) -> torch.Tensor:
        """The edited k-step map z -> z O'; only t = k is defined (the edit replaces K^k, not K)."""
        if t is not None and t != self.cfg.k:
            raise ValueError(f"an edited KAE only defines the k-step operator (t = {self.cfg.k}), got t = {t}")
        return z @ self.operator.to(z.dtype)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.decode(self.advance(self.encode(x0)))


def save_edited(kae, operators: Mapping[str, np.ndarray], path: str | Path, extra: Mapping | None = None) -> None:
    """Save a KAE with one or more edited k-step operators (float64, tensors `edited_operator.<name>`)."""
    from kaepipe.io import save_safetensors
    from kaepipe.models import state_dict_for_save

    tensors = {f"kae.{k}": v for k, v in state_dict_for_save(kae).items()}
    for name, op in operators.items():
        tensors[f"edited_operator.{name}"] = torch.from_numpy(np.ascontiguousarray(op, dtype=np.float64))
    meta = {"model_class": "EditedKoopmanAutoencoder", "architecture": kae.cfg.to_dict(),
            "operators": sorted(operators), "convention": "outputs = phi(x0) @ operator (= (K^k)^T before the edit)",
            **(extra or {})}
    save_safetensors(tensors, path, meta)


def load_edited(path: str | Path, name: str) -> tuple[EditedKAE, dict]:
    """Load one edited model saved by `save_edited` and the file's metadata."""
    from kaepipe.io import decode_metadata, load_safetensors
    from kaepipe.kae import KAEConfig, KoopmanAutoencoder

    tensors, raw = load_safetensors(path)
    meta = decode_metadata(raw)
    if meta.get("model_class") != "EditedKoopmanAutoencoder":
        raise DataError(f"{path}: not an edited-KAE checkpoint (model_class {meta.get('model_class')!r})")
    key = f"edited_operator.{name}"
    if key not in tensors:
        raise DataError(f"{path}: no edited operator '{name}'; it holds {meta.get('operators')}")
    kae = KoopmanAutoencoder(KAEConfig(**meta["architecture"]))
    kae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("kae.")})
    return EditedKAE(kae.eval(), tensors[key].numpy()).eval(), meta


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


class SurrogateHead:
    """The surrogate after the operator: outputs Y -> psi -> undo the last layer's preprocessing -> output layer.

    The same arithmetic as `kaepipe.evaluate.surrogate_predictions` after K^k, for outputs computed
    outside the KAE (e.g. Z O' for many candidate operators without re-encoding).
    """

    def __init__(self, kae, base, pre_last, device: torch.device | None = None, batch_size: int = 4096) -> None:
        self.kae, self.base, self.pre_last = kae, base, pre_last
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size

    @torch.no_grad()
    def logits(self, Y) -> np.ndarray:
        """Logits of the base network's output layer for outputs Y (n x p)."""
        kae, base = self.kae.to(self.device).eval(), self.base.to(self.device).eval()
        Y = _f64(Y)
        out = []
        for s in range(0, len(Y), self.batch_size):
            xl_hat = kae.decode(Y[s:s + self.batch_size].to(self.device, torch.float32))
            raw = self.pre_last.invert(xl_hat.double().cpu().numpy())
            out.append(base.output_layer(torch.as_tensor(raw, dtype=torch.float32, device=self.device)).double().cpu())
        return torch.cat(out).numpy() if out else np.empty((0, base.cfg.classes))

    def predict(self, Y) -> np.ndarray:
        return self.logits(Y).argmax(1)


def edit_diagnostics(O, O_new, Z, labels: np.ndarray, target_class: int, targets: str,
                     head: SurrogateHead | None = None) -> dict:
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
        "delta_rank_99": int((energy < 0.99).sum()) + 1,
        "delta_singular_values": [float(v) for v in sv[:10]],
        "n_forget": int(forget.sum()), "n_clean": int((~forget).sum()),
        "targets_distinct": len(torch.unique(pick)),  # how many different points the targets are
    }
    if head is not None:
        lt = head.logits(T)
        pt = lt.argmax(1)
        gap = lt[np.arange(len(lt)), pt] - lt[:, target_class]
        after = head.predict(H @ O_new)
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

def baseline_train_config(ds: Mapping, kind: str):
    """Training settings of a baseline: the base network's for `retrain`, the short run for `finetune`."""
    from kaepipe.train import TrainConfig

    base = dict(ds["base"])
    if kind == "retrain":
        return TrainConfig.from_dict(base)
    if kind == "finetune":
        bl = unlearn_settings(ds)["baselines"]
        return TrainConfig.from_dict({**base, "epochs": bl["finetune_epochs"], "lr": bl["finetune_lr"],
                                      "schedule": bl["finetune_schedule"]})
    raise ConfigError(f"unknown unlearning baseline '{kind}'; expected one of {list(BASELINES)}")


def unlearn_baseline(ds: Mapping, kind: str, target_class: int, base_model, x_train: np.ndarray,
                     y_train: np.ndarray, device: torch.device, log: Callable[[str], None] = print):
    """Train the baseline network without the target class; return it and its training time: wall
    seconds and CPU seconds of this thread (meaningful on the CPU with one torch thread)."""
    from kaepipe.base import model_config
    from kaepipe.models import ResMLP
    from kaepipe.train import seed_all, train_classifier

    cfg = baseline_train_config(ds, kind)
    keep = np.asarray(y_train) != target_class
    seed_all(cfg.seed)
    if kind == "retrain":
        model = ResMLP(model_config(ds, x_train.shape[1]))
    else:
        model = copy.deepcopy(base_model)
    model = model.to(device)
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


def run_unlearn_baseline(ds: Mapping, kind: str, target_class: int, split_paths: Mapping[str, str],
                         base_path: str, out_json: str, out_model: str, device: torch.device,
                         log: Callable[[str], None] = print) -> dict:
    """One baseline for one target class: per-class accuracy of the base network before and after."""
    from kaepipe.base import base_expectation, evaluate_model, load_base_model, save_base_model
    from kaepipe.data import read_split
    from kaepipe.io import provenance, write_json

    check_target(ds, target_class)
    splits = {s: read_split(p) for s, p in split_paths.items()}
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


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "target_classes": [],
    "methods": ["paper"],
    "targets": "nearest",
    "reg": 0.1,
    "region": {"targets": "centroid", "reg": 0.3, "strength": 1.0},
    "timing_repeats": 5,
    "study": None,  # {targets: [...], reg: [...], strength: [...], rank: [...], points: n}
    "baselines": {"run": list(BASELINES), "finetune_epochs": 5, "finetune_lr": None, "finetune_schedule": "constant"},
}


def unlearn_settings(ds: Mapping) -> dict:
    """The dataset's `unlearn` block over the defaults (finetune_lr null = the base network's lr)."""
    from kaepipe.config import merged

    out = merged(DEFAULTS, ds.get("unlearn") or {})
    if out["baselines"]["finetune_lr"] is None:
        out["baselines"]["finetune_lr"] = ds["base"]["lr"]
    return out


def check_target(ds: Mapping, target_class: int) -> None:
    """Raise ConfigError when a target class is not one of the dataset's classes."""
    if not 0 <= int(target_class) < int(ds["classes"]):
        raise ConfigError(f"config key 'datasets.{ds.get('name')}.unlearn.target_classes': class {target_class} "
                          f"is not a class of a dataset with {ds['classes']} classes (0..{ds['classes'] - 1})")


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

# METHOD section 8: the paper's editing table (target class, before -> after, mean (std) over 5 seeds).
PUBLISHED = {
    ("yinyang", 0): "98.78 (1.18) -> 85.01 (1.90)",
    ("yinyang", 1): "98.27 (0.21) -> 78.88 (8.53)",
    ("yinyang", 2): "99.97 (0.05) -> 62.52 (1.35)",
    ("mnist", 1): "99.23 (0.04) -> 0.0 (0.0)",
    ("mnist", 4): "98.29 (0.08) -> 0.0 (0.0)",
    ("mnist", 7): "98.01 (0.18) -> 0.0 (0.0)",
}


def transition(before: Sequence[float], after: Sequence[float], digits: int = 2) -> str:
    """'98.78 (1.18) -> 85.01 (1.90)': mean (population std) before and after."""
    from kaepipe.tables import cell, mean_std

    return f"{cell(*mean_std(before), digits)} -> {cell(*mean_std(after), digits)}"


def editing_tables(edits: Sequence[Mapping], sources: Mapping[str, str]):
    """The editing table (one row per dataset, protocol, method and target class) and its per-class table."""
    import pandas as pd

    from kaepipe.tables import mean_std

    groups: dict[tuple, list[tuple[Mapping, Mapping]]] = {}
    for e in edits:
        for method, m in e["methods"].items():
            for protocol, r in m["protocols"].items():
                key = (e["dataset"], protocol, r["split"], method, int(e["target_class"]))
                groups.setdefault(key, []).append((m, r))
    rows, per_class = [], []
    for (dataset, protocol, split, method, target), items in sorted(groups.items()):
        ms, rs = [m for m, _ in items], [r for _, r in items]
        col = {k: [r[k] for r in rs] for k in ("target_before", "target_after", "retained_before", "retained_after")}
        secs = [m["edit_seconds"] for m in ms]
        row = {"dataset": dataset, "protocol": protocol, "split": split, "method": method, "target_class": target,
               "n_seeds": len(rs),
               "target": transition(col["target_before"], col["target_after"]),
               "retained": transition(col["retained_before"], col["retained_after"]),
               "edit_seconds": round(mean_std(secs)[0], 6),
               "published": (PUBLISHED.get((sources.get(dataset, dataset), target), "")
                             if method == "paper" and protocol == "paper" else "")}
        for k, v in col.items():
            row[f"{k}_mean"], row[f"{k}_std"] = (round(x, 6) for x in mean_std(v))
        row["edit_cpu_seconds"] = round(mean_std([m.get("edit_cpu_seconds", np.nan) for m in ms])[0], 6)
        row["prepare_seconds"] = round(mean_std([m["prepare_seconds"] for m in ms])[0], 6)
        row["settings"] = ms[0]["settings_text"]
        rows.append(row)
        n_classes = len(rs[0]["per_class_before"])
        for c in range(n_classes):
            b = [r["per_class_before"][c] for r in rs]
            a = [r["per_class_after"][c] for r in rs]
            if any(v is None for v in a + b):
                continue
            per_class.append({"dataset": dataset, "protocol": protocol, "split": split, "method": method,
                              "target_class": target, "class": c, "is_target": c == target, "n_seeds": len(rs),
                              "cell": transition(b, a),
                              **dict(zip(("before_mean", "before_std"), mean_std(b))),
                              **dict(zip(("after_mean", "after_std"), mean_std(a)))})
    return pd.DataFrame(rows), pd.DataFrame(per_class)


def ratio(num: float, den: float) -> float:
    """num / den rounded to 0.1, NaN when either is missing or den is not positive."""
    num, den = float(num), float(den)
    return round(num / den, 1) if np.isfinite(num) and np.isfinite(den) and den > 0 else float("nan")


def baseline_table(baselines: Sequence[Mapping], editing) -> pd.DataFrame:
    """Baselines and edits side by side per dataset, protocol and target class, with the edits' speed-ups."""
    import pandas as pd

    rows = []
    for b in baselines:
        for protocol, r in b["protocols"].items():
            rows.append({"dataset": b["dataset"], "protocol": protocol, "split": r["split"],
                         "method": b["method"], "target_class": int(b["target_class"]), "n_seeds": 1,
                         "target": transition([r["target_before"]], [r["target_after"]]),
                         "retained": transition([r["retained_before"]], [r["retained_after"]]),
                         "seconds": round(b["seconds"], 6), "cpu_seconds": round(b.get("cpu_seconds", np.nan), 6)})
    base_df = pd.DataFrame(rows)
    for e in editing.itertuples(index=False):
        row = {"dataset": e.dataset, "protocol": e.protocol, "split": e.split, "method": f"edit:{e.method}",
               "target_class": e.target_class, "n_seeds": e.n_seeds, "target": e.target, "retained": e.retained,
               "seconds": e.edit_seconds, "cpu_seconds": e.edit_cpu_seconds, "prepare_seconds": e.prepare_seconds}
        for kind in BASELINES:
            match = base_df[(base_df.dataset == e.dataset) & (base_df.protocol == e.protocol)
                            & (base_df.target_class == e.target_class) & (base_df.method == kind)] \
                if len(base_df) else base_df
            ok = len(match) > 0
            row[f"speedup_vs_{kind}"] = ratio(match.seconds.iloc[0] if ok else np.nan, e.edit_seconds)
            row[f"speedup_vs_{kind}_cpu"] = ratio(match.cpu_seconds.iloc[0] if ok else np.nan, e.edit_cpu_seconds)
            row[f"speedup_vs_{kind}_with_prepare"] = ratio(match.seconds.iloc[0] if ok else np.nan,
                                                          e.edit_seconds + e.prepare_seconds)
        rows.append(row)
    out = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(BASELINES)}
    out["_o"] = [order.get(m, len(order)) for m in out.method]
    out = out.sort_values(["dataset", "protocol", "target_class", "_o", "method"], kind="mergesort")
    return out.drop(columns="_o").reset_index(drop=True)


def study_table(frames: Sequence) -> pd.DataFrame:
    """Mean (population std) over seeds of every study setting, with the retained classes' loss and
    whether the setting meets the goal (target <= 5 %, retained loss <= 1 point, both on average)."""
    import pandas as pd

    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df["retained_loss"] = df["retained_before"] - df["retained_after"]
    keys = ["dataset", "protocol", "split", "target_class", "targets", "reg", "strength", "rank"]
    agg = df.groupby(keys, sort=True).agg(
        n_seeds=("seed", "nunique"), target_before=("target_before", "mean"),
        target_after_mean=("target_after", "mean"), target_after_std=("target_after", lambda v: v.std(ddof=0)),
        retained_before=("retained_before", "mean"), retained_after_mean=("retained_after", "mean"),
        retained_after_std=("retained_after", lambda v: v.std(ddof=0)),
        retained_loss_mean=("retained_loss", "mean"), retained_loss_max=("retained_loss", "max"),
        target_after_max=("target_after", "max")).reset_index()
    agg["meets_goal"] = (agg.target_after_mean <= 5.0) & (agg.retained_loss_mean <= 1.0)
    num = agg.select_dtypes("float").columns
    agg[num] = agg[num].round(4)
    return agg


def run_unlearn_tables(config: Mapping, edit_paths: Sequence[str], baseline_paths: Sequence[str],
                       out: Mapping[str, str], study_paths: Sequence[str] = ()):
    """Aggregate every edit and baseline into the editing, per-class and baseline tables (and the study)."""
    from kaepipe.io import provenance, read_json, read_parquet
    from kaepipe.tables import write_table

    edits = [read_json(p) for p in edit_paths]
    baselines = [read_json(p) for p in baseline_paths]
    datasets = sorted({e["dataset"] for e in edits} | {b["dataset"] for b in baselines})
    sources = {d: config["datasets"][d]["source"] for d in datasets}
    editing, per_class = editing_tables(edits, sources)
    table = baseline_table(baselines, editing)
    prov = provenance({"datasets": {d: {"unlearn": config["datasets"][d].get("unlearn"),
                                        "kae": config["datasets"][d]["kae"]} for d in datasets}})
    write_table(editing, out["editing"], out["editing_md"], out["editing_tex"],
                "Class unlearning by editing the KAE's k-step operator: surrogate accuracy (%) of the target class "
                "and mean of the retained classes, before -> after, mean (population std) over KAE seeds.", prov)
    write_table(per_class, out["per_class"], provenance=prov)
    try:
        study_out = out["study"]
    except (KeyError, IndexError, AttributeError):
        study_out = None
    if study_out:
        write_table(study_table([read_parquet(p) for p in study_paths]), study_out, provenance=prov)
    write_table(table, out["baselines"], out["baselines_md"], out["baselines_tex"],
                "Unlearning baselines on the base network (retrain without the class, fine-tune on the retained "
                "classes) against the edits; seconds of wall time and the edits' speed-ups.", prov)
    return editing, table


def method_settings(u: Mapping, method: str) -> dict:
    """Targets, reg and strength of an edit method from the (merged) unlearn settings."""
    if method == "paper":
        return {"targets": u["targets"], "reg": float(u["reg"]), "strength": 1.0}
    if method == "region":
        r = u["region"]
        return {"targets": r["targets"], "reg": float(r["reg"]), "strength": float(r["strength"])}
    raise ConfigError(f"unknown unlearning method '{method}'; expected one of {list(METHODS)}")


def settings_text(settings: Mapping) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())


def timed_edit(problem: EditProblem, target_class: int, settings: Mapping, repeats: int = 5,
               min_total: float = 0.2, max_repeats: int = 50) -> tuple[np.ndarray, dict]:
    """Run an edit at least `repeats` times (more, up to `max_repeats`, until `min_total` seconds have
    passed); return O' and its timing: median and fastest wall time, median CPU time of this thread.

    The time covers everything specific to the target class (forget set, targets, H^T H, the solve),
    not the per-KAE preparation (`EditProblem`: observables, Y, Gram, centroids), which is timed apart.
    On a shared machine the median wall time includes other processes' load, like a baseline's single
    run does; the CPU time does not.
    """
    problem.edit(target_class, **settings)  # warm-up, untimed: first-call library initialisation
    walls, cpus, O_new = [], [], None
    while len(walls) < max(1, repeats) or (sum(walls) < min_total and len(walls) < max_repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        O_new = problem.edit(target_class, **settings)
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - t0)
    return O_new, {"seconds": float(np.median(walls)), "seconds_min": float(min(walls)),
                   "cpu_seconds": float(np.median(cpus)), "repeats": len(walls)}


# ---------------------------------------------------------------------------------------------
# Stage entry point: one edit
# ---------------------------------------------------------------------------------------------

def run_unlearn_edit(ds: Mapping, target_class: int, kae_path: str, base_path: str, preprocessing: str,
                     reps: Mapping[str, str], out_json: str, out_model: str, device: torch.device | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """Edit one KAE to forget one class with every configured method; surrogate accuracy before and after."""
    from kaepipe.base import base_expectation, load_base_model
    from kaepipe.evaluate import accuracy_report, surrogate_predictions
    from kaepipe.io import provenance, write_json
    from kaepipe.kae import kae_expectation, load_kae
    from kaepipe.represent import load_preprocessing, load_reps

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
    Z = observables(kae, pre[0].apply(layers_train[0]))
    O = operator_matrix(kae)
    problem = EditProblem(O, Z, labels)
    prepare_seconds = time.perf_counter() - t0  # per KAE: observables, operator, Y and the Gram
    log(f"{ds['name']}: forgetting class {target_class} from KAE {kae_path} (lambda_iso {meta.get('lambda_iso')}, "
        f"seed {meta.get('seed')}): {int((labels == target_class).sum())} of {len(labels)} training samples, "
        f"p = {O.shape[0]}; observables, operator and Gram (once per KAE) in {prepare_seconds:.3f}s")

    def reports(model) -> dict:
        return {s: accuracy_report(surrogate_predictions(model, base, pre[0], pre[last], L[0], device), y, n_classes)
                for s, (L, y) in data.items() if s in ds["evaluation"].values()}

    before = reports(kae)
    head = SurrogateHead(kae, base, pre[last], device)
    methods, operators = {}, {}
    for method in u["methods"]:
        settings = method_settings(u, method)
        O_new, timing = timed_edit(problem, target_class, settings, u["timing_repeats"])
        seconds = timing["seconds"]
        operators[method] = O_new
        after = reports(EditedKAE(kae, O_new))
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


# ---------------------------------------------------------------------------------------------
# Stage entry point: the trade-off study (targets x reg x strength x rank of the edit)
# ---------------------------------------------------------------------------------------------

STUDY_DEFAULTS: dict[str, Any] = {"targets": ["nearest", "shared", "centroid", "neighbour"],
                                  "reg": [0.01, 0.1, 0.3, 1.0, 3.0, 10.0], "strength": [1.0, 2.0],
                                  "rank": [None], "points": None, "seed": 0}


def truncate_rank(delta: torch.Tensor, rank: int | None) -> torch.Tensor:
    """The best rank-r approximation of Delta (SVD); None keeps it whole."""
    if rank is None or rank >= min(delta.shape):
        return delta
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def study_rows(problem: EditProblem, head: SurrogateHead, target_class: int, evaluation: Mapping[str, tuple],
               grid: Mapping) -> list[dict]:
    """Target and retained accuracy for every combination of the grid; `evaluation` maps protocol ->
    (split, Z of the split, labels). Delta is linear in the strength, so one solve serves all strengths."""
    from kaepipe.evaluate import per_class_accuracy

    rows = []
    n_classes = len(problem.centroids[0])
    cache: dict[str, np.ndarray] = {}

    def summary(O_new: torch.Tensor, split: str, Zs: torch.Tensor, ys: np.ndarray, key: str) -> dict:
        if key not in cache:
            cache[key] = per_class_accuracy(head.predict(Zs @ O_new), ys, max(n_classes, int(ys.max()) + 1))
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


def run_unlearn_study(ds: Mapping, target_class: int, kae_path: str, base_path: str, preprocessing: str,
                      reps: Mapping[str, str], out_parquet: str, device: torch.device | None = None,
                      log: Callable[[str], None] = print):
    """The trade-off study of one KAE and target class: every combination of the `unlearn.study` grid."""
    import pandas as pd

    from kaepipe.base import base_expectation, load_base_model
    from kaepipe.config import merged
    from kaepipe.io import write_parquet
    from kaepipe.kae import kae_expectation, load_kae
    from kaepipe.represent import load_preprocessing, load_reps

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
    problem = EditProblem(operator_matrix(kae), observables(kae, pre[0].apply(layers_train[0])), labels)
    head = SurrogateHead(kae, base, pre[last], device)
    rng = np.random.default_rng(grid["seed"])
    evaluation, zs = {}, {}
    for protocol, split in ds["evaluation"].items():
        if split not in zs:
            L, y = data[split]
            idx = np.arange(len(y))
            if grid["points"] and grid["points"] < len(y):
                idx = np.sort(rng.choice(len(y), grid["points"], replace=False))
            zs[split] = (_f64(observables(kae, pre[0].apply(L[0][idx]))), y[idx])
        evaluation[protocol] = (split, *zs[split])
    t0 = time.perf_counter()
    rows = study_rows(problem, head, target_class, evaluation, grid)
    df = pd.DataFrame(rows)
    df.insert(0, "target_class", int(target_class))
    df.insert(0, "seed", meta.get("seed"))
    df.insert(0, "dataset", ds["name"])
    log(f"study of class {target_class}: {len(df)} rows in {time.perf_counter() - t0:.1f}s "
        f"(grid { {k: grid[k] for k in ('targets', 'reg', 'strength', 'rank')} }, points {grid['points']})")
    write_parquet(df, out_parquet, {"dataset": ds["name"], "target_class": target_class, "seed": meta.get("seed"),
                                    "grid": grid})
    return df


# ---------------------------------------------------------------------------------------------
# Workflow paths (used by workflow/rules/unlearn.smk)
# ---------------------------------------------------------------------------------------------

def unlearn_datasets(config: Mapping, study: bool = False) -> list[str]:
    """The datasets of `run` with an `unlearn` block (with a `study` too, when `study`)."""
    out = []
    for d in config["run"]:
        u = config["datasets"][d].get("unlearn")
        if u and (not study or u.get("study")):
            out.append(d)
    return out


def edit_paths(config: Mapping, name: str, study: bool = False) -> list[str]:
    """results/{dataset}/unlearn/iso{main}/seed{seed}/class{target}/<name> for every configured edit."""
    from kaepipe.config import lambda_tag

    out = []
    for d in unlearn_datasets(config, study):
        kae = config["datasets"][d]["kae"]
        lam = lambda_tag(kae["main_lambda_iso"])
        for seed in kae["seeds"]:
            for target in config["datasets"][d]["unlearn"]["target_classes"]:
                out.append(f"results/{d}/unlearn/iso{lam}/seed{seed}/class{target}/{name}")
    return out


def baseline_paths(config: Mapping, name: str) -> list[str]:
    """results/{dataset}/unlearn/baselines/{baseline}/class{target}/<name> for every configured baseline."""
    out = []
    for d in unlearn_datasets(config):
        u = unlearn_settings(config["datasets"][d])
        for kind in u["baselines"]["run"]:
            for target in u["target_classes"]:
                out.append(f"results/{d}/unlearn/baselines/{kind}/class{target}/{name}")
    return out
