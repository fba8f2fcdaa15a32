"""The paper's analysis for any PyTorch classifier: an estimator in the style of scikit-learn and deeptime.

>>> ka = KoopmanAnalysis(model, layers=["block2", "fc1", "fc2"], pca_dim=64, seeds=(0, 1, 2))
>>> ka.fit(x_train, y_train)                    # record, preprocess, train one KAE per seed (one ensemble)
>>> ka.score(x_test, y_test)                    # the network's and each surrogate's macro accuracy
>>> ka.topology(x_test, y_test)                 # beta_0 of every layer and of every KAE iterate
>>> ka.unlearn(3, x_test, y_test)               # forget class 3 by editing K; accuracy before and after

What happens is what the pipeline does for its ResMLPs (docs/method.md sections 4-8), with the layers
named by the user (:mod:`kaepipe.network` records them with forward hooks and finds the head, the rest
of the network after the last of them):

* ``fit``: the named layers' outputs L_0 .. L_m on the training data, flattened to (n, d_l); the
  per-layer preprocessing fitted on them (:func:`kaepipe.represent.fit_preprocessing`: centre, project
  to ``pca_dim`` directions, scale to Frobenius norm ``frobenius``, rotate onto the last layer); one KAE
  per seed trained on the pairs (pre_0(L_0), pre_m(L_m)) as one ensemble
  (:func:`kaepipe.nn.ensemble.fit_kae_ensemble`, one isometry weight for all).
* ``score``: the surrogate L_0 -> pre_0 -> phi -> O_k -> psi -> pre_m^-1 -> head against the network
  (:class:`kaepipe.evaluate.Surrogate`), macro accuracy in percent.
* ``topology``: beta_0 at eps of every preprocessed layer and of every decoded KAE iterate
  psi(phi(x_0) O_t), t = 0..k (:func:`kaepipe.topology.betti0_profile`, as the topology stage).
* ``unlearn``: the closed-form edits of the k-step operator registered in
  :data:`kaepipe.unlearn.UNLEARNING_METHODS` (``paper``, ``region``), fitted on the training
  observables, and the target and retained classes' accuracy before and after on the data given.

Everything runs on ``device`` (the CPU by default); the model is moved there. Given the seeds, results
are deterministic on the CPU; the global random generators are left as they were.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kaepipe.errors import ConfigError, DataError
from kaepipe.evaluate import NetworkHead, Surrogate, accuracy_report
from kaepipe.network import HeadLike, LayeredNetwork, NetworkError
from kaepipe.nn.ensemble import train_kae_pack
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.losses import kae_metrics, loss_weights
from kaepipe.nn.train import TrainConfig
from kaepipe.represent import LayerTransform, fit_preprocessing
from kaepipe.settings import default_eps, unlearn_settings
from kaepipe.topology import betti0_profile, subset_indices
from kaepipe.unlearn import EditProblem, before_after, get_method

# The KAE's settings when not given: the paper's optimiser (AdamW, weight decay 5e-4, triangular schedule
# peaking at 20 % of the epochs, docs/method.md section 5.5) with the Yin-Yang KAEs' gradient clipping,
# MNIST's main isometry weight 1e-3 and k = 10 steps; hidden and latent widths follow from the
# preprocessed width q (`default_widths`). The config schema's `kae` block requires these keys and so
# holds no defaults for them.
KAE_DEFAULTS: dict[str, Any] = {
    "k": 10, "parametrization": "exponential", "lambda_iso": 1e-3,
    "optimizer": "adamw", "lr": 1e-2, "weight_decay": 5e-4, "epochs": 100, "batch_size": 512,
    "schedule": "triangular", "peak_frac": 0.2, "clip_grad_norm": 1.0,
}
KAE_KEYS = ({f.name for f in fields(KAEConfig)} | {f.name for f in fields(TrainConfig)}
            | {"lambda_iso", "loss_weights"}) - {"in_features", "seed"}

# beta_0's default scale: the paper's MNIST eps carried to this preprocessing's scale (what the pipeline
# gives a source without published eps of its own, Fashion-MNIST: kaepipe.settings.default_eps)
EPS_REFERENCE_SOURCE = "mnist"

DataLike = np.ndarray | torch.Tensor | DataLoader | Dataset | Iterable


def default_widths(q: int) -> dict[str, int]:
    """The KAE's widths for q preprocessed dimensions: latent p = q + min(q, 16), hidden h = p + min(q, 200).

    Both of the paper's settings follow this rule: Yin-Yang q 10 -> h 30, p 20; MNIST q 784 -> h 1000, p 800.
    """
    latent = q + min(q, 16)
    return {"hidden": latent + min(q, 200), "latent": latent}


def kae_settings(kae: Mapping[str, Any] | None, q: int) -> dict[str, Any]:
    """The KAE block: `KAE_DEFAULTS` and `default_widths(q)` under the given keys (unknown keys refused)."""
    kae = dict(kae or {})
    unknown = sorted(set(kae) - KAE_KEYS)
    if unknown:
        raise ConfigError(f"kae: unknown key(s) {unknown}; known: {sorted(KAE_KEYS)}")
    lam = kae.get("lambda_iso", KAE_DEFAULTS["lambda_iso"])
    if isinstance(lam, (list, tuple)) or not float(lam) >= 0:
        raise ConfigError(f"kae.lambda_iso: one isometry weight >= 0, got {lam!r} (a grid is the pipeline's)")
    return {**KAE_DEFAULTS, **default_widths(q), **kae}


class KoopmanAnalysis:
    """Koopman autoencoders of a classifier's layer dynamics, their surrogate accuracy, topology and edits.

    Parameters
    ----------
    model: the classifier, x (n, ...) -> logits (n, classes); moved to `device`, run in eval mode.
    layers: qualified module names (``dict(model.named_modules())``) of the representations L_0 .. L_m,
        first to last (at least two); each module must run once per forward pass and return a tensor.
    head: the network after the last layer, a module or callable taking that module's output in its own
        shape; None: cut from the model's torch.fx graph. Either is checked on the first training
        samples against model(x) (NetworkError when it does not reproduce the logits).
    pca_dim: directions kept per layer (None: all); the first and last layers must end up with the same
        width q = min(pca_dim, d_l, n_train), so pca_dim <= the smaller of their widths when they differ.
    frobenius: the Frobenius norm of every preprocessed training layer (the paper's 100).
    kae: the KAE's architecture and training, keys of `KAEConfig` (hidden, latent, k, parametrization,
        ...) and `TrainConfig` (epochs, batch_size, lr, optimizer, weight_decay, schedule, clip_grad_norm,
        ...), `lambda_iso` (one isometry weight) and `loss_weights`; missing keys from `KAE_DEFAULTS` and
        `default_widths`.
    seeds: one KAE per seed (its initialisation and batch order), trained together as one ensemble.
    device: where the network and the KAEs run ("cpu", "cuda", a torch.device).
    batch_size: samples per forward pass when recording layers and evaluating.
    tolerance: `score` warns when a surrogate's macro accuracy differs from the network's by more
        than this many percentage points.
    log: a function taking progress lines (e.g. print); None: silent.

    Fitted attributes (after `fit`)
    -------------------------------
    network_: the `LayeredNetwork` (module, layers, head, per-layer output shapes).
    n_classes_: the number of logits. layer_widths_: flattened width d_l of each layer.
    preprocessing_: one `LayerTransform` per layer, fitted on the training split.
    q_: the preprocessed width of the first and last layers (the KAE's input and output width).
    kae_config_, train_config_, lambda_iso_: the KAE settings used (`KAEConfig`, `TrainConfig`, float).
    kaes_: one trained `KoopmanAutoencoder` per seed (eval mode, on `device`).
    loss_curves_: one per-epoch loss DataFrame per seed (epoch, lr, recon, state, latent, iso, total).
    train_metrics_: each KAE's final loss terms on the whole training split and their fractions of
        variance unexplained (`kaepipe.nn.losses.kae_metrics`).
    x0_train_, y_train_: the preprocessed first layer of the training data (n, q) float32 and its labels
        (the edits are fitted on them). n_train_: n. fit_seconds_: wall time of the KAE training.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], head: HeadLike | None = None, *,
                 pca_dim: int | None = None, frobenius: float = 100.0, kae: Mapping[str, Any] | None = None,
                 seeds: Sequence[int] = (0, 1, 2), device: str | torch.device = "cpu", batch_size: int = 4096,
                 tolerance: float = 10.0, log: Callable[[str], None] | None = None) -> None:
        self.model, self.layers, self.head = model, list(layers), head
        self.pca_dim, self.frobenius, self.kae = pca_dim, float(frobenius), dict(kae or {})
        self.seeds, self.device, self.batch_size = [int(s) for s in seeds], torch.device(device), int(batch_size)
        self.tolerance, self.log = float(tolerance), log
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds repeated: {self.seeds}")
        if pca_dim is not None and int(pca_dim) < 1:
            raise ConfigError(f"pca_dim must be a positive integer or None, got {pca_dim!r}")
        kae_settings(self.kae, 1)  # unknown keys and a grid of isometry weights are refused before any work
        self._problems: dict[int, EditProblem] = {}

    # -- fitting ----------------------------------------------------------------------------------

    def fit(self, X: DataLike, y: np.ndarray | torch.Tensor | None = None) -> KoopmanAnalysis:
        """Record the layers of the training data, fit the preprocessing, train one KAE per seed.

        X: inputs (n, ...) as a numpy array or tensor with labels y (n,), or a DataLoader (or Dataset, or
        iterable of batches) yielding (x, y) batches with y None. Returns self.
        """
        x, labels = self._data(X, y, "fit")
        if len(x) < 2:
            raise DataError(f"fit needs at least two training samples, got {len(x)}")
        self.model.to(self.device)
        if isinstance(self.head, nn.Module):
            self.head.to(self.device)
        example = x[:64].to(self.device)
        self.network_ = LayeredNetwork.from_module(self.model, self.layers, example, head=self.head)
        self.layer_widths_ = self.network_.widths
        reps, logits = self._record(x, with_output=True)
        self.n_classes_ = logits.shape[1]
        self._check_labels(labels, "training")
        self.n_train_ = len(x)
        self._say(f"recorded {len(reps)} layers of {len(x)} training samples, widths {self.layer_widths_}")
        self.preprocessing_: list[LayerTransform] = fit_preprocessing(reps, self.pca_dim, self.frobenius)
        q0, qm = (len(self.preprocessing_[i].directions) for i in (0, -1))
        if q0 != qm:
            raise ConfigError(
                f"the first layer {self.layers[0]!r} (width {self.layer_widths_[0]}) is preprocessed to {q0} "
                f"dimensions and the last layer {self.layers[-1]!r} (width {self.layer_widths_[-1]}) to {qm}; the "
                f"KAE maps one onto the other and needs one width: set pca_dim <= {min(q0, qm)} (the smaller "
                f"width; pca_dim={self.pca_dim!r} now)")
        self.q_ = q0
        x0 = self.preprocessing_[0].apply(reps[0]).astype(np.float32)
        xl = self.preprocessing_[-1].apply(reps[-1]).astype(np.float32)
        self.x0_train_, self.y_train_ = x0, labels
        self._train_kaes(x0, xl)
        self._problems = {}
        return self

    def _train_kaes(self, x0: np.ndarray, xl: np.ndarray) -> None:
        kae = kae_settings(self.kae, self.q_)
        self.lambda_iso_ = float(kae["lambda_iso"])
        weights = kae.get("loss_weights")
        x0_t, xl_t = torch.as_tensor(x0, device=self.device), torch.as_tensor(xl, device=self.device)
        with _own_random_state():
            ens, self.loss_curves_, self.kae_config_, self.train_config_, self.fit_seconds_ = train_kae_pack(
                kae, x0_t, xl_t, [self.lambda_iso_] * len(self.seeds), self.seeds, self.device, self.log)
        self.kaes_: list[KoopmanAutoencoder] = ens.models()
        w = loss_weights(weights, self.lambda_iso_)
        self.train_metrics_ = [kae_metrics(m, x0_t, xl_t, w, seed=s) for m, s in zip(self.kaes_, self.seeds)]

    # -- evaluation -------------------------------------------------------------------------------

    def surrogate(self, i: int = 0, kae: KoopmanAutoencoder | None = None) -> Surrogate:
        """The surrogate of KAE i (or of `kae`, e.g. an edited one): preprocessed first layer (n, q) ->
        psi(phi(x0) O_k) -> undo the last layer's preprocessing -> the network's head -> logits (n, classes)."""
        self._check_fitted()
        model = kae if kae is not None else self.kaes_[i]
        return Surrogate(model, NetworkHead(self.preprocessing_[-1], self.network_.head), self.device, self.batch_size)

    def transform(self, X: DataLike, layers: Sequence[int] | None = None) -> list[np.ndarray]:
        """The preprocessed layers of inputs X: one (n, q_l) float64 array per layer (all, or the indices given)."""
        self._check_fitted()
        x, _ = self._data(X, None, "transform", labels=False)
        reps = self._record(x)
        wanted = range(len(reps)) if layers is None else layers
        return [self.preprocessing_[i].apply(reps[i]) for i in wanted]

    def score(self, X: DataLike, y: np.ndarray | torch.Tensor | None = None) -> pd.DataFrame:
        """Macro accuracy (percent) of the network and of each seed's surrogate on (X, y).

        Returns one row per model: ``network``, ``surrogate`` (one per seed), then ``surrogate mean`` and
        ``surrogate std`` (population std over seeds, as the paper); columns model, seed, macro,
        accuracy (plain), n, class_0 .. class_{C-1} (per-class accuracy, NaN for a class absent from y).
        Warns when a surrogate is more than `tolerance` points from the network.
        """
        self._check_fitted()
        x, labels = self._data(X, y, "score")
        self._check_labels(labels, "scored")
        (layer0,), logits = self._record(x, [0], with_output=True)  # one forward pass: layer 0 and the logits
        pred_net = logits.argmax(1)
        x0 = self.preprocessing_[0].apply(layer0)
        rows = [self._row("network", None, accuracy_report(pred_net, labels, self.n_classes_))]
        for i, s in enumerate(self.seeds):
            rows.append(self._row("surrogate", s, accuracy_report(self.surrogate(i).predict(x0), labels,
                                                                  self.n_classes_)))
        df = pd.DataFrame(rows)
        sur = df[df["model"] == "surrogate"].drop(columns=["model", "seed"])
        for name, agg in (("surrogate mean", sur.mean()), ("surrogate std", sur.std(ddof=0))):
            df.loc[len(df)] = {"model": name, "seed": None, **agg.to_dict()}
        df["seed"] = df["seed"].astype("Int64")
        net = float(df.loc[0, "macro"])
        far = [(s, m) for s, m in zip(self.seeds, df["macro"][1:1 + len(self.seeds)]) if abs(m - net) > self.tolerance]
        if far:
            warnings.warn(
                f"the KAE does not reproduce the network: surrogate macro accuracy "
                f"{', '.join(f'{m:.2f} (seed {s})' for s, m in far)} against the network's {net:.2f}, more than "
                f"{self.tolerance:g} points apart. The KAE may be undertrained (raise kae epochs or lr; see "
                f"loss_curves_ and train_metrics_: state_fvu near 0 is a good fit) or the head may not fit "
                "the last layer.", UserWarning, stacklevel=2)
        return df

    def _row(self, model: str, seed: int | None, report: Mapping[str, Any]) -> dict[str, Any]:
        per_class = {f"class_{c}": np.nan if v is None else v for c, v in enumerate(report["per_class"])}
        return {"model": model, "seed": seed, "macro": report["macro"], "accuracy": report["accuracy"],
                "n": report["n"], **per_class}

    # -- topology ---------------------------------------------------------------------------------

    def default_eps(self) -> dict[str, float]:
        """beta_0's default scales {"layers", "iterates"}: the paper's MNIST eps (0.166, 0.14 for a fit on
        60,000 points at Frobenius norm 100) at the same scale relative to this fit's points, whose RMS radius
        is frobenius / sqrt(n_train) (`kaepipe.settings.default_eps`; the pipeline's choice for a source
        without published eps). A starting point: beta_0 depends on eps, and `topology(curves=True)`
        gives beta_0 at every eps."""
        self._check_fitted()
        return default_eps({"name": "KoopmanAnalysis", "source": EPS_REFERENCE_SOURCE,
                            "splits": {"train": {"size": self.n_train_}},
                            "preprocess": {"frobenius": self.frobenius}})

    def topology(self, X: DataLike, y: np.ndarray | torch.Tensor | None = None, *, eps: float | None = None,
                 eps_iterates: float | None = None, points: int | None = 1000, seed: int = 0,
                 metric: str = "euclidean", k: int = 10, precision: str = "float64",
                 curves: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
        """beta_0 (connected components at scale eps) of every preprocessed layer and of every decoded KAE
        iterate psi(phi(x0) O_t), t = 0..k, of a fixed random subset of `points` samples of X.

        y is not used (beta_0 needs no labels); it is accepted so that the (X, y) of `score` or a loader of
        (x, y) batches can be passed as they are. eps: the layers' scale (default `default_eps()`);
        eps_iterates: the iterates' (default: eps when given, else the default). metric: euclidean or
        knn_geodesic (hops on the k-nearest-neighbour graph). Returns a DataFrame with columns source
        ("layer" or "kae"), layer (the layer's name, or None), seed (the KAE's, or None), step (layer index
        or iterate t), n, eps, betti0; with `curves`, also the whole step functions beta_0(eps) (source,
        layer, seed, step, eps, betti0).
        """
        self._check_fitted()
        x, _ = self._data(X, y, "topology", labels=False)
        defaults = self.default_eps() if eps is None or eps_iterates is None else {}
        eps_layers = float(eps) if eps is not None else defaults["layers"]
        eps_it = float(eps_iterates) if eps_iterates is not None else (eps_layers if eps is not None
                                                                      else defaults["iterates"])
        idx = subset_indices(len(x), points, seed)
        reps = self._record(x[torch.as_tensor(idx)])
        clouds = {i: self.preprocessing_[i].apply(r) for i, r in enumerate(reps)}
        tables, curve_parts = [], []
        table, curve = betti0_profile(clouds, eps_layers, metric, k, self.log, "layer", precision)
        names = dict(enumerate(self.layers))
        tables.append(table.assign(source="layer", layer=table["step"].map(names), seed=None))
        curve_parts.append(curve.assign(source="layer", layer=curve["step"].map(names), seed=None))
        for kae, s in zip(self.kaes_, self.seeds):
            for t, Xt in kae.iterates(clouds[0]):
                table, curve = betti0_profile({t: Xt}, eps_it, metric, k, self.log, f"seed {s} iterate", precision)
                tables.append(table.assign(source="kae", layer=None, seed=s))
                curve_parts.append(curve.assign(source="kae", layer=None, seed=s))
        cols = ["source", "layer", "seed", "step"]
        out = pd.concat(tables, ignore_index=True)
        out = out[cols + ["n", "eps", "betti0"]].astype({"seed": "Int64"})
        if not curves:
            return out
        return out, pd.concat(curve_parts, ignore_index=True)[cols + ["eps", "betti0"]].astype({"seed": "Int64"})

    # -- unlearning -------------------------------------------------------------------------------

    def edit(self, target_class: int, method: str = "region", settings: Mapping[str, Any] | None = None
             ) -> list[KoopmanAutoencoder]:
        """Each seed's KAE with its k-step operator edited to forget `target_class` by a registered method
        (`kaepipe.unlearn.UNLEARNING_METHODS`: paper, region), fitted on the training observables.

        settings: the pipeline's `unlearn` block or part of it (e.g. {"reg": 0.3} for paper,
        {"region": {"reg": 1.0}} for region), over the config schema's defaults."""
        self._check_fitted()
        return self._edit(self._check_class(target_class), method, settings)[1]

    def _edit(self, target_class: int, method: str, settings: Mapping[str, Any] | None
              ) -> tuple[Mapping[str, Any], list[KoopmanAutoencoder]]:
        """The method's resolved settings and each seed's edited KAE."""
        m = get_method(method)
        s = m.settings(unlearn_settings({"unlearn": dict(settings or {})}))
        return s, [kae.with_operator(m.edit(self._problem(i), target_class, s)) for i, kae in enumerate(self.kaes_)]

    def unlearn(self, target_class: int, X: DataLike, y: np.ndarray | torch.Tensor | None = None, *,
                methods: Sequence[str] = ("paper", "region"), settings: Mapping[str, Any] | None = None
                ) -> pd.DataFrame:
        """Forget `target_class` by editing every KAE's operator with each method; surrogate accuracy on
        (X, y) (held-out data) before and after.

        Returns one row per method and seed: method, seed, target_class, target_before, target_after (the
        target class's accuracy), retained_before, retained_after (mean accuracy of the other classes),
        macro_before, macro_after (percent), edit_seconds (wall time of one KAE's edit, its shared
        preparation apart), settings; per-class lists in per_class_before, per_class_after.
        """
        self._check_fitted()
        target_class = self._check_class(target_class)
        x, labels = self._data(X, y, "unlearn")
        self._check_labels(labels, "evaluation")
        x0 = self.preprocessing_[0].apply(self._record(x, [0])[0])
        before = [accuracy_report(self.surrogate(i).predict(x0), labels, self.n_classes_)
                  for i in range(len(self.kaes_))]
        for i in range(len(self.kaes_)):
            self._problem(i)  # prepared once per KAE (observables, Gram matrices), not in the edits' time
        rows = []
        for method in methods:
            t0 = time.perf_counter()
            s, edited = self._edit(target_class, method, settings)
            seconds = (time.perf_counter() - t0) / len(edited)
            for i, (kae, seed) in enumerate(zip(edited, self.seeds)):
                after = accuracy_report(self.surrogate(kae=kae).predict(x0), labels, self.n_classes_)
                ba = before_after(before[i], after, target_class)
                rows.append({"method": method, "seed": seed, "target_class": target_class,
                             **{k: ba[k] for k in ("target_before", "target_after", "retained_before",
                                                   "retained_after", "macro_before", "macro_after",
                                                   "per_class_before", "per_class_after")},
                             "edit_seconds": seconds, "settings": s})
                self._say(f"{method}, seed {seed}: class {target_class} {ba['target_before']:.2f} -> "
                          f"{ba['target_after']:.2f}, retained {ba['retained_before']:.2f} -> {ba['retained_after']:.2f}")
        return pd.DataFrame(rows)

    def _problem(self, i: int) -> EditProblem:
        """What every edit of KAE i shares (operator, training observables, Gram matrices), computed once."""
        if i not in self._problems:
            kae = self.kaes_[i]
            self._problems[i] = EditProblem(kae.operator_matrix(), kae.observables(self.x0_train_), self.y_train_)
        return self._problems[i]

    # -- helpers ----------------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        if self.log:
            self.log(line)

    def _check_fitted(self) -> None:
        if not hasattr(self, "kaes_"):
            raise RuntimeError("this KoopmanAnalysis is not fitted yet; call fit(X, y) first")

    def _check_class(self, target_class: int) -> int:
        c = int(target_class)
        if c != target_class or not 0 <= c < self.n_classes_:
            raise DataError(f"target class {target_class!r} is not a class of this network: it has "
                            f"{self.n_classes_} classes, 0..{self.n_classes_ - 1}")
        return c

    def _check_labels(self, labels: np.ndarray, what: str) -> None:
        bad = np.unique(labels[(labels < 0) | (labels >= self.n_classes_)])
        if len(bad):
            raise DataError(f"{what} labels {bad[:10].tolist()} are outside the network's classes "
                            f"0..{self.n_classes_ - 1} ({self.n_classes_} logits)")

    def _record(self, x: torch.Tensor, which: Sequence[int] | None = None, with_output: bool = False
                ) -> list[np.ndarray] | tuple[list[np.ndarray], np.ndarray]:
        """The flattened layers of inputs x (on the CPU), as float32 arrays, recorded on the device in chunks;
        with `with_output`, also the network's logits (n, classes) of the same forward passes."""
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(x), self.batch_size):
            layers, logits = self.network_.record(x[start:start + self.batch_size].to(self.device), self.batch_size,
                                                  with_output=True)
            kept = [layers[i].float().cpu().numpy() for i in (which if which is not None else range(len(layers)))]
            parts.append([*kept, logits.float().cpu().numpy()])
        arrays = [np.concatenate(chunks) for chunks in zip(*parts)]
        return (arrays[:-1], arrays[-1]) if with_output else arrays[:-1]

    def _data(self, X: DataLike, y, what: str, labels: bool = True) -> tuple[torch.Tensor, np.ndarray | None]:
        """Inputs as one CPU tensor (floating inputs in the model's dtype) and labels as an int64 array."""
        if isinstance(X, (np.ndarray, torch.Tensor)):
            x = torch.as_tensor(X)
            if y is None and labels:
                raise DataError(f"{what}: give the labels y with array inputs (or a DataLoader of (x, y) batches)")
        else:
            if y is not None:
                raise DataError(f"{what}: y must be None when X is a DataLoader or Dataset (its batches hold the labels)")
            x, y = _from_batches(X, what, labels)
        x = x.detach().cpu()
        ref = next((p for p in self.model.parameters() if p.is_floating_point()), None)
        if x.is_floating_point():
            x = x.to(ref.dtype if ref is not None else torch.float32)
        if y is None:
            return x, None
        lab = torch.as_tensor(y).detach().cpu().numpy()
        if lab.ndim != 1 or len(lab) != len(x):
            raise DataError(f"{what}: labels must be one integer per sample, shape ({len(x)},), got {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer) and not np.all(np.mod(lab, 1) == 0):
            raise DataError(f"{what}: labels must be class indices (integers), got dtype {lab.dtype}")
        return x, lab.astype(np.int64)


def _from_batches(data: DataLike, what: str, labels: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the (x, y) batches of a DataLoader, a Dataset (its samples) or an iterable of batches;
    where no labels are needed, batches of x alone too."""
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = DataLoader(data, batch_size=1024)
    xs, ys = [], []
    try:
        for batch in data:
            if isinstance(batch, torch.Tensor) and not labels:
                xs.append(batch)
                continue
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise DataError(f"{what}: batches must be (x, y) pairs, got {type(batch).__name__}")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
    except TypeError as exc:
        raise DataError(f"{what}: X must be an array, a tensor, a DataLoader or a Dataset of (x, y), got "
                        f"{type(data).__name__} ({exc})") from exc
    if not xs:
        raise DataError(f"{what}: the data loader yielded no batch")
    return torch.cat(xs), (torch.cat(ys) if len(ys) == len(xs) else None)


class _own_random_state:
    """Leave torch's and numpy's global generators as they were (KAE initialisation seeds them)."""

    def __enter__(self) -> None:
        self.torch_state, self.np_state = torch.random.get_rng_state(), np.random.get_state()

    def __exit__(self, *exc) -> None:
        torch.random.set_rng_state(self.torch_state)
        np.random.set_state(self.np_state)


__all__ = ["KAE_DEFAULTS", "KoopmanAnalysis", "NetworkError", "default_widths", "kae_settings"]
