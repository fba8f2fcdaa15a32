"""Every number the paper publishes, in one place, with one lookup rule (docs/method.md section 11).

Published values belong to a data *source* (``yinyang``, ``mnist``: a dataset's ``source`` key, not its
name) under the paper's setting: the ``paper`` evaluation protocol, the paper's edit (``method: paper``),
and for MNIST topology the paper's eps and Euclidean metric, where eps may be carried to a
preprocessing fitted on fewer training digits (:func:`paper_eps_scale`). Every lookup answers NaN
(or None) outside that setting. Tables, the summary and the figures all read them from here.
"""

from __future__ import annotations

import math

#: The evaluation protocol the published numbers were measured under.
PROTOCOL = "paper"

#: Macro accuracy (%), protocol ``paper``: (mean, population std over seeds; None for the single MLP).
ACCURACY: dict[tuple[str, str], tuple[float, float | None]] = {
    ("yinyang", "MLP"): (99.31, None),
    ("yinyang", "KAE"): (98.75, 0.15),
    ("mnist", "MLP"): (99.03, None),
    ("mnist", "KAE"): (98.53, 0.04),
}

#: MNIST beta_0 of all 10k test digits (training fit on 60k digits): base layers L0..L4 at eps 0.166,
#: the mean over KAE seeds of the decoded iterates t = 0..10 at eps 0.14.
TOPOLOGY: dict[str, dict] = {
    "mnist": {
        "mlp": {"eps": 0.166, "values": (368, 10, 1, 1, 1)},
        "kae": {"eps": 0.14, "values": (8633, 7655, 5153, 2305, 692, 206, 49, 19, 11, 9, 9)},
    },
}

#: The number of training digits the paper's MNIST preprocessing was fitted on.
MNIST_PAPER_TRAIN = 60000

#: Target-class accuracy (%) before -> after the paper's edit: ((mean, std), (mean, std)) over five KAEs.
EDITING: dict[tuple[str, int], tuple[tuple[float, float], tuple[float, float]]] = {
    ("yinyang", 0): ((98.78, 1.18), (85.01, 1.90)),
    ("yinyang", 1): ((98.27, 0.21), (78.88, 8.53)),
    ("yinyang", 2): ((99.97, 0.05), (62.52, 1.35)),
    ("mnist", 1): ((99.23, 0.04), (0.0, 0.0)),
    ("mnist", 4): ((98.29, 0.08), (0.0, 0.0)),
    ("mnist", 7): ((98.01, 0.18), (0.0, 0.0)),
}


def paper_eps(source: str) -> dict[str, float] | None:
    """The paper's eps for a source's layers and iterates ({"layers", "iterates"}), or None if unpublished."""
    pub = TOPOLOGY.get(source)
    return None if pub is None else {"layers": pub["mlp"]["eps"], "iterates": pub["kae"]["eps"]}


def paper_eps_scale(n_train: int | None) -> float:
    """Factor that carries the paper's eps to a preprocessing fitted on n_train points instead of 60k.

    The preprocessing scales the training matrix to Frobenius norm 100, so the points' RMS radius is
    100 / sqrt(n_train): the same relative scale is eps * sqrt(60000 / n_train)."""
    return math.sqrt(MNIST_PAPER_TRAIN / n_train) if n_train else 1.0


def published_accuracy(source: str, model: str, protocol: str) -> tuple[float, float | None]:
    """(mean, std) of the published macro accuracy of `model` (MLP | KAE), else (NaN, None)."""
    if protocol != PROTOCOL:
        return math.nan, None
    return ACCURACY.get((source, model), (math.nan, None))


def published_topology(source: str, model: str, step: int, eps: float, metric: str = "euclidean",
                       n_train: int | None = None) -> float:
    """The published beta_0 of a row (model mlp: layer `step`; kae: iterate `step`), else NaN.

    Only for a source with published topology, the Euclidean metric and the paper's eps, either as
    published or carried to a preprocessing fitted on n_train points (`paper_eps_scale`)."""
    pub = TOPOLOGY.get(source, {}).get(model)
    if pub is None or metric != "euclidean":
        return math.nan
    candidates = [pub["eps"], pub["eps"] * paper_eps_scale(n_train)]
    if not any(math.isclose(float(eps), c, rel_tol=2e-3) for c in candidates):
        return math.nan
    return float(pub["values"][step]) if 0 <= step < len(pub["values"]) else math.nan


def published_editing(source: str, target: int, method: str = "paper", protocol: str = PROTOCOL
                      ) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """((before mean, std), (after mean, std)) of the target class under the paper's edit, else None."""
    if method != "paper" or protocol != PROTOCOL:
        return None
    return EDITING.get((source, int(target)))


def editing_text(source: str, target: int, method: str = "paper", protocol: str = PROTOCOL) -> str:
    """The published editing cell as the paper prints it, "98.78 (1.18) -> 85.01 (1.90)", or ""."""
    pub = published_editing(source, target, method, protocol)
    if pub is None:
        return ""

    def cell(mean: float, std: float) -> str:
        return f"{mean} ({std:.2f})" if std else f"{mean} (0.0)"

    return f"{cell(*pub[0])} -> {cell(*pub[1])}"
