"""Configuration: loading, schema validation with errors that name the key, and derived settings."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import yaml

from kaepipe.errors import ConfigError


class DictConfig:
    """Mixin for dataclass configs: build from a config mapping (ignoring other keys), dump to a dict."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Build from a mapping, ignoring keys that are not fields of this config."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        """Plain dict, e.g. for metadata."""
        return asdict(self)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file, naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = "; ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        raise ConfigError(f"{where}: not valid YAML ({what or exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    return data


def key_path(parts) -> str:
    """Dotted name of a config key from a jsonschema path, e.g. datasets.mnist.base.epochs."""
    return ".".join(str(p) for p in parts) or "(top level)"


def schema_errors(config: Mapping, schema: Mapping) -> list[str]:
    """Every schema violation of `config`, one line each, naming the key and the allowed values."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    lines = []
    for err in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        where = key_path(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            lines.append(f"config key '{where}': {err.message}" + (f"; allowed keys: {allowed}" if allowed else ""))
        elif err.validator == "enum":
            lines.append(f"config key '{where}': {err.instance!r} is not one of the allowed values {err.validator_value}")
        else:
            lines.append(f"config key '{where}': {err.message}")
    return lines


def validate_config(config: Mapping, schema_path: str | Path) -> None:
    """Validate a config against the JSON schema and the cross-key rules; raise ConfigError listing all problems."""
    problems = schema_errors(config, load_yaml(schema_path))
    if not problems:
        problems = semantic_errors(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def semantic_errors(config: Mapping) -> list[str]:
    """Problems a JSON schema cannot express: cross references between keys."""
    problems = non_finite_errors(config)
    datasets = config.get("datasets", {})
    for name in config.get("run", []):
        if name not in datasets:
            problems.append(f"config key 'run': unknown dataset '{name}'; defined datasets: {sorted(datasets)}")
    for name, ds in datasets.items():
        if isinstance(ds.get("base"), Mapping):
            problems += base_seed_errors(ds["base"], f"datasets.{name}.base")
        kae = ds.get("kae")
        if kae:
            problems += lambda_grid_errors(kae, f"datasets.{name}.kae")
        if kae and kae.get("main_lambda_iso") not in kae.get("lambda_iso", []):
            problems.append(f"config key 'datasets.{name}.kae.main_lambda_iso': {kae.get('main_lambda_iso')} "
                            f"is not in the grid datasets.{name}.kae.lambda_iso = {kae.get('lambda_iso')}")
        for split, spec in (ds.get("splits") or {}).items():
            size, least = (spec or {}).get("size"), MIN_PER_CLASS * int(ds.get("classes") or 1)
            if isinstance(size, int) and size < least:
                problems.append(f"config key 'datasets.{name}.splits.{split}.size': {size} samples are too few; at "
                                f"least {MIN_PER_CLASS} per class, {least} for {ds.get('classes')} classes")
        targets = (ds.get("unlearn") or {}).get("target_classes") or []
        bad = [c for c in targets if not (isinstance(c, int) and 0 <= c < int(ds.get("classes") or 0))]
        if bad:
            problems.append(f"config key 'datasets.{name}.unlearn.target_classes': {bad} not among the dataset's "
                            f"classes 0..{int(ds.get('classes') or 0) - 1} (datasets.{name}.classes = {ds.get('classes')})")
    return problems


MIN_PER_CLASS = 2  # a split needs at least this many samples per class (on average)


def non_finite_errors(node: Any, where: tuple = ()) -> list[str]:
    """Every NaN or infinite number in a config (YAML's .nan, .inf), naming its key; a schema lets them through."""
    if isinstance(node, Mapping):
        return [p for k, v in node.items() for p in non_finite_errors(v, (*where, k))]
    if isinstance(node, (list, tuple)):
        return [p for i, v in enumerate(node) for p in non_finite_errors(v, (*where, i))]  # as the schema: key.1
    if isinstance(node, float) and not math.isfinite(node):
        return [f"config key '{key_path(where)}': {node} is not a finite number"]
    return []


def lambda_grid_errors(kae: Mapping, where: str) -> list[str]:
    """Isometry weights that cannot name a result folder, or that share one with another weight."""
    problems, seen = [], {}
    for value in kae.get("lambda_iso") or []:
        if isinstance(value, float) and not math.isfinite(value):
            continue  # named by non_finite_errors
        why = lambda_tag_problem(value)
        if why:
            problems.append(f"config key '{where}.lambda_iso': {why}")
            continue
        tag = lambda_tag(value)
        if tag in seen:
            problems.append(f"config key '{where}.lambda_iso': {seen[tag]!r} and {value!r} are the same weight "
                            f"(both the folder 'iso{tag}'); list each weight once")
        seen.setdefault(tag, value)
    return problems


DEFAULT_DRAW = 0  # the base network's seed when a dataset gives neither base.seeds nor base.seed (TrainConfig's)


def base_seed_errors(base: Mapping, where: str) -> list[str]:
    """Problems of a dataset's base-network draws: `seeds` (a non-empty list of distinct non-negative
    integers) and its shorthand `seed: N` (= `seeds: [N]`), never both."""
    if "seed" in base and "seeds" in base:
        return [f"config key '{where}.seeds': give either {where}.seeds (the base-network draws, a list) or its "
                f"shorthand {where}.seed (one draw), not both (seed {base['seed']!r}, seeds {base['seeds']!r})"]
    if "seeds" not in base:
        seed = base.get("seed", DEFAULT_DRAW)
        return [] if _is_seed(seed) else [f"config key '{where}.seed': {seed!r} is not a non-negative integer"]
    seeds = base["seeds"]
    if not isinstance(seeds, (list, tuple)) or not seeds:
        return [f"config key '{where}.seeds': {seeds!r} is not a non-empty list of base-network seeds"]
    bad = [s for s in seeds if not _is_seed(s)]
    if bad:
        return [f"config key '{where}.seeds': {bad} are not non-negative integers"]
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        return [f"config key '{where}.seeds': {repeated} listed more than once; each draw once"]
    if base.get("weights") and len(seeds) > 1:
        return [f"config key '{where}.seeds': {list(seeds)} asks for {len(seeds)} draws, but {where}.weights is one "
                "trained network (one draw); give one seed, or drop weights to train the draws"]
    return []


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def base_seeds(ds: Mapping[str, Any]) -> list[int]:
    """The base-network draws of a dataset's settings, in config order: `base.seeds`, or `[base.seed]` (the
    shorthand), or `[0]` when neither is given. The one place that reads them; ConfigError when they are bad."""
    base = ds.get("base") or {}
    problems = base_seed_errors(base, f"datasets.{ds.get('name', '?')}.base")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return [int(s) for s in base["seeds"]] if "seeds" in base else [int(base.get("seed", DEFAULT_DRAW))]


def draw_settings(ds: Mapping[str, Any], draw: int | str) -> dict[str, Any]:
    """The settings of one base-network draw of a dataset: `draw` set (the draw's seed), and the base block
    with `seed` = that draw and no `seeds`, so every stage that trains from the base block (the base network,
    the retrain baseline) uses the draw's seed, and a draw's settings do not change when draws are added."""
    draw = int(draw)
    if draw not in base_seeds(ds):
        raise ConfigError(f"config key 'datasets.{ds.get('name', '?')}.base.seeds': no draw {draw} among "
                          f"{base_seeds(ds)}")
    out = copy.deepcopy(dict(ds))
    out["draw"] = draw
    base = {k: v for k, v in (out.get("base") or {}).items() if k != "seeds"}
    out["base"] = {**base, "seed": draw}
    return out


def draw_of(ds: Mapping[str, Any]) -> int | None:
    """The draw a dataset's settings belong to: its `draw` (set by draw_settings), else its one base seed;
    None when that is not one draw (several base seeds, or no base block)."""
    if ds.get("draw") is not None:
        return int(ds["draw"])
    if not ds.get("base"):
        return None
    seeds = base_seeds(ds)
    return seeds[0] if len(seeds) == 1 else None


def check_semantics(config: Mapping) -> None:
    """Raise ConfigError for cross-key problems (used after snakemake.utils.validate)."""
    problems = semantic_errors(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


LAMBDA_TAG_PATTERN = re.compile(r"[0-9][0-9.e+-]*")  # the {lam} wildcard of the rules (common.smk)


def lambda_tag(value: float) -> str:
    """Path-friendly text of an isometry weight that reads back as exactly that weight.

    The short form (1, 0.1, 0.001, 0.0001, 0) where it round-trips, else Python's shortest
    round-trip repr (0.1000001), so two distinct weights never share a result folder.
    """
    x = float(value)
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


def lambda_tag_problem(value: Any) -> str | None:
    """Why an isometry weight cannot name a result folder (None when it can)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return f"{value!r} is not a number"
    tag = lambda_tag(x)
    if not math.isfinite(x):
        return f"{value!r} is not a finite number"
    if x == 0 and math.copysign(1.0, x) < 0:
        return "-0.0 (negative zero) would name a folder 'iso-0'; write 0"
    if not LAMBDA_TAG_PATTERN.fullmatch(tag) or float(tag) != value:
        return f"{value!r} cannot be written exactly as a folder name (it would be 'iso{tag}')"
    return None


def lambda_value(kae: Mapping, tag: str, where: str = "kae.lambda_iso") -> float:
    """The configured isometry weight whose result folder is `iso<tag>` (never the tag parsed back)."""
    matches = [x for x in kae.get("lambda_iso", []) if lambda_tag(x) == tag]
    if len(matches) != 1:
        raise ConfigError(f"config key '{where}': {'no' if not matches else 'more than one'} weight of the grid "
                          f"{kae.get('lambda_iso')} has the folder name 'iso{tag}'")
    return float(matches[0])


def dataset_root(config: Mapping, name: str) -> str | None:
    """The IDX folder of a dataset: the top-level `<source>_root` override, else its `root` key."""
    ds = config["datasets"][name]
    override = config.get(f"{ds['source']}_root")
    return override or ds.get("root")


def merged(base: Mapping, override: Mapping) -> dict:
    """Deep-merge two mappings (override wins); used to derive tiny test configs from the default."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        out[k] = merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out


def dataset_config(config: Mapping, name: str, draw: int | str | None = None) -> dict[str, Any]:
    """The settings of one dataset with its resolved IDX root and the global device; with `draw`, those of
    that base-network draw (see draw_settings)."""
    if name not in config.get("datasets", {}):
        raise ConfigError(f"unknown dataset '{name}'; defined datasets: {sorted(config.get('datasets', {}))}")
    ds = copy.deepcopy(config["datasets"][name])
    ds["name"] = name
    ds["root"] = dataset_root(config, name)
    return ds if draw is None else draw_settings(ds, draw)


IDENTITY_KEYS = ("name", "source", "classes", "evaluation", "draw")

# Blocks whose defaults are derived from other blocks bring those along: a topology block without eps
# takes them from the training size and the preprocessing (kaepipe.settings.default_eps).
DERIVED_FROM = {"topology": ("splits", "preprocess", "represent")}


def config_subset(ds: Mapping, keys: tuple[str, ...], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The blocks of a dataset's settings that one rule depends on (its rerun-triggering params).

    Always the dataset's identity (`IDENTITY_KEYS`), plus `keys` (and the blocks their defaults are
    derived from, `DERIVED_FROM`), less the sub-blocks named in
    `drop` as "block.key" (e.g. "unlearn.baselines" for a rule that ignores the baselines).
    """
    keys = (*keys, *(k for key in keys for k in DERIVED_FROM.get(key, ())))
    out = {k: copy.deepcopy(ds[k]) for k in (*IDENTITY_KEYS, *keys) if k in ds}
    for path in drop:
        block, _, key = path.partition(".")
        if not key:
            raise ConfigError(f"config_subset: '{path}' is not of the form block.key")
        if isinstance(out.get(block), dict):
            out[block].pop(key, None)
    return out


def dataset_sources(config: Mapping) -> dict[str, str]:
    """Each configured dataset's data source (its ``source`` key, default its name)."""
    return {name: (c or {}).get("source", name) for name, c in (config.get("datasets") or {}).items()}
