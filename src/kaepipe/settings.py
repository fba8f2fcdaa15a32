"""Stage settings: each optional config block merged over its defaults, checked, with the key named on error."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kaepipe.config import load_yaml, merged, schema_errors, semantic_errors
from kaepipe.data import SOURCES, DataSource
from kaepipe.errors import ConfigError


def default_eps(ds: Mapping[str, Any]) -> dict[str, float]:
    """eps of layers and iterates for a dataset whose ``topology`` block gives none: the source's default
    (`kaepipe.data.DataSource.default_eps`, for a fit on `eps_train` points) at the same scale relative
    to the data. The preprocessing scales the training matrix (the recorded training points: at most
``represent.train_size``) to
    Frobenius norm ``preprocess.frobenius`` (100), so the points' RMS radius is frobenius / sqrt(n_train),
    and the default keeps its ratio to that radius: eps x sqrt(n_ref / n_train) x frobenius / 100 (for
    MNIST at 100: `kaepipe.published.paper_eps_scale`). Rounded to 4 significant digits."""
    name = ds.get("name")
    source = SOURCES.get(ds.get("source", ""))
    if source is None or not source.default_eps or not source.eps_train:
        raise ConfigError(f"config key 'datasets.{name}.topology.eps_layers': no default eps for source "
                          f"'{ds.get('source')}'; give topology.eps_layers and topology.eps_iterates")
    n_ref = source.eps_train
    n_train = ((ds.get("splits") or {}).get("train") or {}).get("size") or source.train_size or n_ref
    recorded = (ds.get("represent") or {}).get("train_size")  # the preprocessing is fitted on these
    n_train = min(int(n_train), int(recorded)) if recorded else n_train
    frobenius = float((ds.get("preprocess") or {}).get("frobenius", 100.0))
    scale = math.sqrt(n_ref / int(n_train)) * frobenius / 100.0
    return {k: float(f"{v * scale:.4g}") for k, v in source.default_eps.items()}


SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def schema_defaults(block: str, schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The `default` values of an optional dataset block of the config schema (`topology`, `unlearn`, ...),
    nested blocks as dicts: the one home of the stages' defaults (Snakemake's validation fills them too)."""
    definitions = _schema(str(schema_path))["definitions"]

    def walk(node: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key, prop in (node.get("properties") or {}).items():
            if "default" in prop:
                out[key] = copy.deepcopy(prop["default"])
            elif prop.get("type") == "object" and "properties" in prop:
                out[key] = walk(prop)
        return out

    return walk(definitions[block])


@functools.lru_cache(maxsize=4)
def _schema(path: str) -> dict[str, Any]:
    return load_yaml(path)


TOPOLOGY_DEFAULTS: dict[str, Any] = schema_defaults("topology")


def topology_settings(ds: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset's ``topology`` block merged over the defaults (eps not given: `default_eps`, from the
    source and the size of the preprocessing's fit; 1 hop for the knn_geodesic metric)."""
    block = dict(ds.get("topology") or {})
    iso = {**TOPOLOGY_DEFAULTS["isometry"], **(block.pop("isometry", None) or {})}
    out = {**TOPOLOGY_DEFAULTS, **block, "isometry": iso}
    if out.get("eps_layers") is None or out.get("eps_iterates") is None:
        # knn_geodesic counts eps in hops: 1 hop gives the components of the kNN graph (< 1: every point alone)
        eps = {"layers": 1.0, "iterates": 1.0} if out["metric"] == "knn_geodesic" else default_eps(ds)
        if out.get("eps_layers") is None:
            out["eps_layers"] = eps["layers"]
        if out.get("eps_iterates") is None:
            out["eps_iterates"] = eps["iterates"]
    for key in ("eps_layers", "eps_iterates"):
        if not float(out[key]) > 0:
            raise ConfigError(f"config key 'datasets.{ds.get('name')}.topology.{key}' must be > 0, got {out[key]}")
    if out["precision"] not in ("float64", "float32"):
        raise ConfigError(f"config key 'datasets.{ds.get('name')}.topology.precision' must be float64 or float32")
    if out["metric"] not in METRICS:
        raise ConfigError(f"config key 'datasets.{ds.get('name')}.topology.metric' must be one of {METRICS}")
    evaluation = ds.get("evaluation") or {"heldout": "test"}
    if out["protocol"] not in evaluation:
        raise ConfigError(f"config key 'datasets.{ds.get('name')}.topology.protocol': '{out['protocol']}' is not "
                          f"one of the dataset's protocols {sorted(evaluation)}")
    out["split"] = evaluation[out["protocol"]]
    return out


def evaluation_split(ds: Mapping[str, Any]) -> str:
    """The split (train or test) the topology stage measures: that of ``topology.protocol``."""
    return topology_settings(ds)["split"]


METHODS = ("paper", "region")


TARGET_MODES = ("nearest", "shared", "centroid", "neighbour")


BASELINES = ("retrain", "finetune")


UNLEARN_DEFAULTS: dict[str, Any] = {"target_classes": [], **schema_defaults("unlearn")}



def unlearn_settings(ds: Mapping) -> dict:
    """The dataset's `unlearn` block over the defaults (finetune_lr null = the base network's lr)."""

    out = merged(UNLEARN_DEFAULTS, ds.get("unlearn") or {})
    if out["baselines"]["finetune_lr"] is None and "base" in ds:
        out["baselines"]["finetune_lr"] = ds["base"]["lr"]
    return out


def check_target(ds: Mapping, target_class: int) -> None:
    """Raise ConfigError when a target class is not one of the dataset's classes."""
    if not 0 <= int(target_class) < int(ds["classes"]):
        raise ConfigError(f"config key 'datasets.{ds.get('name')}.unlearn.target_classes': class {target_class} "
                          f"is not a class of a dataset with {ds['classes']} classes (0..{ds['classes'] - 1})")


def settings_text(settings: Mapping) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())


# The study's grid when a dataset's `unlearn.study` block gives only some keys (the block itself defaults to null).
STUDY_DEFAULTS: dict[str, Any] = {
    k: copy.deepcopy(v.get("x-default"))
    for k, v in _schema(str(SCHEMA_PATH))["definitions"]["unlearn"]["properties"]["study"]["properties"].items()}


METRICS = ("euclidean", "knn_geodesic")


def pick_lambdas(grid: Sequence[float], wanted: Sequence[float] = (1.0, 1e-3, 0.0), n: int = 3) -> list[float]:
    """The isometry weights shown: the paper's {1, 1e-3, 0} where in the grid, else spread over the grid."""
    grid = sorted({float(x) for x in grid}, reverse=True)
    chosen = [w for w in wanted if w in grid]
    if len(chosen) < min(n, len(grid)):
        picks = np.unique(np.round(np.linspace(0, len(grid) - 1, min(n, len(grid)))).astype(int))
        chosen = sorted(set(chosen) | {grid[i] for i in picks}, reverse=True)[:n]
    return sorted(chosen, reverse=True)


def source_errors(config: Mapping) -> list[str]:
    """Config problems that need the data-source registry: unknown sources, a wrong number of classes."""
    problems = []
    for name, ds in (config.get("datasets") or {}).items():
        source = ds.get("source")
        if source not in SOURCES:
            problems.append(f"config key 'datasets.{name}.source': unknown data source '{source}'; "
                            f"known: {sorted(SOURCES)}")
        elif SOURCES[source].classes is not None and ds.get("classes") != SOURCES[source].classes:
            problems.append(f"config key 'datasets.{name}.classes': {source} has {SOURCES[source].classes} classes, "
                            f"got {ds.get('classes')}")
        else:
            problems += eps_errors(name, ds, SOURCES[source])
    return problems


def eps_errors(name: str, ds: Mapping, source: DataSource) -> list[str]:
    """A dataset whose source has no default topology eps must give both (the topology stage runs for every
    dataset of `run`); the knn_geodesic metric needs none (1 hop)."""
    topology = ds.get("topology") or {}
    if source.default_eps or topology.get("metric") == "knn_geodesic":
        return []
    missing = [k for k in ("eps_layers", "eps_iterates") if topology.get(k) is None]
    if not missing:
        return []
    return [f"config key 'datasets.{name}.topology.{missing[0]}': source '{source.name}' has no default eps (no known "
            f"scale); give topology.eps_layers and topology.eps_iterates (or topology.metric: knn_geodesic)"]


def check_config(config: Mapping) -> None:
    """Every check beyond the JSON schema (cross-key and data-source checks); ConfigError names each key."""
    problems = semantic_errors(config) + source_errors(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def validate_config(config: Mapping, schema_path: str | Path) -> None:
    """The whole check of a config: the JSON schema, then the cross-key and data-source rules.

    Raises ConfigError listing every problem, each naming its key (before any job runs)."""
    problems = schema_errors(config, load_yaml(schema_path))
    if not problems:
        problems = semantic_errors(config) + source_errors(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
