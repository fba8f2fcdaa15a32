"""The paper authors' released checkpoints: read them into kaepipe models, write kaepipe models back.

The format (docs/method.md section 10) is that of the reference implementation (`koopmann`), which saves
with `safetensors.torch.save_model` and stores every metadata value as `str(value)` (so `"True"`,
`"[10, 10, 10, 10, 10]"`). Keys map to kaepipe's modules as follows:

- ResMLP: `components.input_layer.components.{linear,batchnorm}.*` -> `input_layer.{linear,bn}.*`;
  `components.residual_block_{n}.components.fc{1,2}.components.linear.*` -> `blocks[n-1].fc{1,2}.*` and
  `...fc{1,2}.components.batchnorm.*` -> `blocks[n-1].bn{1,2}.*`;
  `components.output_layer.components.linear.*` -> `output_layer.*`.
- KAE: `components.encoder.encoder_0` -> `encoder.0` (q -> h), `encoder_1` -> `encoder.2` (h -> p),
  `components.decoder.decoder_1` -> `decoder.0` (p -> h, applied first), `decoder_0` -> `decoder.2`
  (h -> q, applied last), `components.koopman_matrix.components.linear.parametrizations.weight.original`
  (exponential: the layer's weight is expm(W / k_steps)) or `...linear.weight` (linear) -> `koopman.weight`;
  the authors' later eigendecomposition class (same model_class, K = V^-1 expm(diag(D) / k_steps) V,
  applied as z -> z K^T) stores `_V.weight` -> `koopman.weight` and `_D` -> `koopman.rates` (eigen).

`evaluate_reference` recomputes the accuracy table of a folder of released checkpoints.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from kaepipe.errors import DataError, KaepipeError
from kaepipe.evaluate import accuracy_report, surrogate_predictions
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.resmlp import ResMLP, ResMLPConfig, predict, record_layers
from kaepipe.report.tables import cell, mean_std
from kaepipe.represent import load_preprocessing
from kaepipe.tensor_io import load_safetensors, safetensors_header, save_safetensors

BASE_CLASS = "ResMLP"
KAE_CLASS_EXPONENTIAL = "ExponentialKoopmanAutencoder"  # sic: the reference code's spelling
KAE_CLASS_LINEAR = "KoopmanAutoencoder"
KOOPMAN_EXP_KEY = "components.koopman_matrix.components.linear.parametrizations.weight.original"
KOOPMAN_LINEAR_KEY = "components.koopman_matrix.components.linear.weight"
KOOPMAN_EIGEN_KEYS = {"_V.weight": "koopman.weight", "_D": "koopman.rates"}
BN_BUFFERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
REFERENCE_BN_EPS = 1e-5
REFERENCE_LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU() default, which the reference code uses


class UnsupportedReferenceError(KaepipeError, NotImplementedError):
    """A reference checkpoint uses a feature kaepipe does not implement (e.g. active whitening)."""


# ---------------------------------------------------------------------------------------------
# Key maps
# ---------------------------------------------------------------------------------------------

def base_key_map(blocks: int) -> dict[str, str]:
    """Reference ResMLP tensor name -> kaepipe ResMLP state-dict name, in the reference module order."""
    out: dict[str, str] = {}
    pre = "components.input_layer.components"
    for p in ("weight", "bias"):
        out[f"{pre}.linear.{p}"] = f"input_layer.linear.{p}"
    for b in BN_BUFFERS:
        out[f"{pre}.batchnorm.{b}"] = f"input_layer.bn.{b}"
    for n in range(1, blocks + 1):
        for j in (1, 2):
            pre = f"components.residual_block_{n}.components.fc{j}.components"
            for p in ("weight", "bias"):
                out[f"{pre}.linear.{p}"] = f"blocks.{n - 1}.fc{j}.{p}"
            for b in BN_BUFFERS:
                out[f"{pre}.batchnorm.{b}"] = f"blocks.{n - 1}.bn{j}.{b}"
    for p in ("weight", "bias"):
        out[f"components.output_layer.components.linear.{p}"] = f"output_layer.{p}"
    return out


def kae_key_map(parametrization: str = "exponential") -> dict[str, str]:
    """Reference KAE tensor name -> kaepipe KoopmanAutoencoder state-dict name (decoder_1 before decoder_0)."""
    out: dict[str, str] = {}
    for ref, ours in (("encoder.encoder_0", "encoder.0"), ("encoder.encoder_1", "encoder.2"),
                      ("decoder.decoder_1", "decoder.0"), ("decoder.decoder_0", "decoder.2")):
        for p in ("weight", "bias"):
            out[f"components.{ref}.components.linear.{p}"] = f"{ours}.{p}"
    if parametrization == "exponential":
        out[KOOPMAN_EXP_KEY] = "koopman.weight"
    elif parametrization == "linear":
        out[KOOPMAN_LINEAR_KEY] = "koopman.weight"
    elif parametrization == "eigen":
        out.update(KOOPMAN_EIGEN_KEYS)
    else:
        raise ValueError(f"unknown parametrization '{parametrization}'")
    return out


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A reference metadata string as a Python value ('True', '[30]', '20'); other text stays a string."""
    for parse in (ast.literal_eval, json.loads):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, json.JSONDecodeError, MemoryError, RecursionError):
            continue
    return text


def _meta(path: Path, meta: Mapping[str, str], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in meta:
        raise DataError(f"{path}: missing metadata key '{key}' (found {sorted(meta)})")
    value = parse_value(meta[key])
    if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
        raise DataError(f"{path}: metadata '{key}' = {meta[key]!r} is not a valid {getattr(kind, '__name__', kind)}")
    return value


def _flag(path: Path, meta: Mapping[str, str], key: str, expected: bool) -> None:
    """Check an optional boolean metadata entry (bias, batchnorm) against what kaepipe implements."""
    if key in meta and parse_value(meta[key]) is not expected:
        raise UnsupportedReferenceError(f"{path}: metadata '{key}' = {meta[key]!r}; kaepipe supports only "
                                        f"{key} = {expected}")


def _load_mapped(path: Path, tensors: Mapping[str, torch.Tensor], key_map: Mapping[str, str],
                 model: torch.nn.Module, optional: tuple[str, ...] = ()) -> None:
    """Copy reference tensors into `model` through `key_map`, checking presence, extras and shapes."""
    state = model.state_dict()
    unexpected = sorted(set(tensors) - set(key_map))
    if unexpected:
        raise DataError(f"{path}: unexpected tensor(s) {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''} "
                        f"for {type(model).__name__} {model.cfg.to_dict()}")
    new_state = {}
    for ref, ours in key_map.items():
        if ref not in tensors:
            if ours.endswith(optional):
                new_state[ours] = state[ours]
                continue
            raise DataError(f"{path}: missing tensor '{ref}' (kaepipe {ours}, expected shape "
                            f"{tuple(state[ours].shape)})")
        t = tensors[ref]
        if tuple(t.shape) != tuple(state[ours].shape):
            raise DataError(f"{path}: tensor '{ref}' has shape {tuple(t.shape)}, expected "
                            f"{tuple(state[ours].shape)} from the metadata")
        if not torch.isfinite(t.double()).all():
            raise DataError(f"{path}: tensor '{ref}' holds non-finite values")
        new_state[ours] = t.to(state[ours].dtype)
    model.load_state_dict(new_state)


# ---------------------------------------------------------------------------------------------
# Base network
# ---------------------------------------------------------------------------------------------

def load_reference_base(path: str | Path) -> ResMLP:
    """A ResMLP from a reference `resmlp*.safetensors` checkpoint (metadata and shapes checked), in eval mode."""

    path = Path(path)
    tensors, meta = load_safetensors(path)
    cls = meta.get("model_class")
    if cls is not None and cls != BASE_CLASS:
        raise DataError(f"{path}: model_class is '{cls}', expected '{BASE_CLASS}'")
    in_features = _meta(path, meta, "in_features", int)
    out_features = _meta(path, meta, "out_features", int)
    hidden = _meta(path, meta, "hidden_config", (list, tuple))
    if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
        raise DataError(f"{path}: metadata 'hidden_config' = {meta['hidden_config']!r} must list positive widths")
    if len(set(hidden)) != 1:
        raise UnsupportedReferenceError(f"{path}: hidden_config {hidden} has unequal widths; a ResMLP's residual "
                                        "blocks share one width")
    _flag(path, meta, "bias", True)
    _flag(path, meta, "batchnorm", True)
    nonlin = meta.get("nonlinearity", "relu")
    if nonlin != "relu":
        raise UnsupportedReferenceError(f"{path}: nonlinearity '{nonlin}'; kaepipe's ResMLP uses relu")
    cfg = ResMLPConfig(in_features=in_features, width=hidden[0], blocks=len(hidden), classes=out_features,
                       bn_eps=REFERENCE_BN_EPS)
    model = ResMLP(cfg)
    # num_batches_tracked only counts training steps; tolerate files written without it.
    _load_mapped(path, tensors, base_key_map(cfg.blocks), model, optional=("num_batches_tracked",))
    return model.eval()


def reference_base_tensors(model: ResMLP) -> dict[str, torch.Tensor]:
    """The reference tensors of a kaepipe ResMLP (contiguous CPU copies)."""
    state = model.state_dict()
    return {ref: state[ours].detach().cpu().contiguous().clone() for ref, ours in base_key_map(model.cfg.blocks).items()}


def reference_base_metadata(model: ResMLP) -> dict[str, str]:
    """The reference metadata strings of a kaepipe ResMLP."""
    cfg = model.cfg
    return {"in_features": str(cfg.in_features), "out_features": str(cfg.classes),
            "hidden_config": str([cfg.width] * cfg.blocks), "bias": "True", "batchnorm": "True",
            "nonlinearity": "relu", "stochastic_depth_prob": "0.0", "stochastic_depth_mode": "batch",
            "model_class": BASE_CLASS}


def save_reference_base(model: ResMLP, path: str | Path) -> None:
    """Write a kaepipe ResMLP in the reference format (`resmlp5_yinyang.safetensors` layout)."""

    if model.cfg.bn_eps != REFERENCE_BN_EPS:
        raise UnsupportedReferenceError(f"BatchNorm eps {model.cfg.bn_eps}: the reference format assumes "
                                        f"{REFERENCE_BN_EPS}")
    save_safetensors(reference_base_tensors(model), path, reference_base_metadata(model))


# ---------------------------------------------------------------------------------------------
# Koopman autoencoder
# ---------------------------------------------------------------------------------------------

def _kae_parametrization(path: Path, meta: Mapping[str, str], names: set[str]) -> str:
    cls = meta.get("model_class", "")
    if "Decomp" in cls or names & set(KOOPMAN_EIGEN_KEYS):
        return "eigen"
    if "Exponential" in cls:
        return "exponential"
    if cls == KAE_CLASS_LINEAR:
        return "linear"
    if KOOPMAN_EXP_KEY in names:
        return "exponential"
    if KOOPMAN_LINEAR_KEY in names:
        return "linear"
    raise DataError(f"{path}: missing tensor '{KOOPMAN_EXP_KEY}' (or '{KOOPMAN_LINEAR_KEY}' for a linear KAE); "
                    f"model_class '{cls or '(none)'}'")


def load_reference_kae(path: str | Path) -> KoopmanAutoencoder:
    """A KoopmanAutoencoder from a reference KAE checkpoint (metadata and shapes checked), in eval mode."""

    path = Path(path)
    tensors, meta = load_safetensors(path)
    cls = meta.get("model_class")
    if cls is not None and "Autencoder" not in cls and "Autoencoder" not in cls:
        raise DataError(f"{path}: model_class is '{cls}', expected a Koopman autoencoder")
    parametrization = _kae_parametrization(path, meta, set(tensors))
    in_features = _meta(path, meta, "in_features", int)
    latent = _meta(path, meta, "latent_features", int)
    k = _meta(path, meta, "k_steps", int)
    hidden = _meta(path, meta, "hidden_config", (list, tuple, type(None)))
    if not hidden or len(hidden) != 1 or not isinstance(hidden[0], int):
        raise UnsupportedReferenceError(f"{path}: hidden_config {meta['hidden_config']!r}; kaepipe's KAE has exactly "
                                        "one hidden layer in the encoder and the decoder (e.g. '[30]')")
    _flag(path, meta, "bias", True)
    _flag(path, meta, "batchnorm", False)
    nonlin = meta.get("nonlinearity", "leaky_relu")
    if nonlin != "leaky_relu":
        raise UnsupportedReferenceError(f"{path}: nonlinearity '{nonlin}'; kaepipe's KAE uses leaky_relu")
    try:
        cfg = KAEConfig(in_features=in_features, hidden=hidden[0], latent=latent, k=k,
                        parametrization=parametrization, negative_slope=REFERENCE_LEAKY_SLOPE)
    except KaepipeError as exc:
        raise DataError(f"{path}: invalid KAE metadata ({exc})") from exc
    model = KoopmanAutoencoder(cfg)
    _load_mapped(path, tensors, kae_key_map(parametrization), model)
    return model.eval()


def reference_kae_tensors(model: KoopmanAutoencoder) -> dict[str, torch.Tensor]:
    """The reference tensors of a kaepipe KAE (contiguous CPU copies, decoder_1 before decoder_0)."""
    state = model.state_dict()
    return {ref: state[ours].detach().cpu().contiguous().clone()
            for ref, ours in kae_key_map(model.cfg.parametrization).items()}


def reference_kae_metadata(model: KoopmanAutoencoder) -> dict[str, str]:
    """The reference metadata strings of a kaepipe KAE."""
    cfg = model.cfg
    cls = KAE_CLASS_LINEAR if cfg.parametrization == "linear" else KAE_CLASS_EXPONENTIAL
    return {"in_features": str(cfg.in_features), "latent_features": str(cfg.latent),
            "hidden_config": str([cfg.hidden]), "bias": "True", "batchnorm": "False",
            "nonlinearity": "leaky_relu", "k_steps": str(cfg.k), "model_class": cls}


def save_reference_kae(model: KoopmanAutoencoder, path: str | Path) -> None:
    """Write a kaepipe KAE in the reference format (`..._model_seed_{seed}.safetensors` layout)."""

    if model.cfg.negative_slope != REFERENCE_LEAKY_SLOPE:
        raise UnsupportedReferenceError(f"LeakyReLU slope {model.cfg.negative_slope}: the reference format "
                                        f"assumes {REFERENCE_LEAKY_SLOPE}")
    save_safetensors(reference_kae_tensors(model), path, reference_kae_metadata(model))


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------

def preprocessing_layers(path: str | Path) -> list[int]:
    """The layer indices i with a `means_i` tensor in a preprocessing file."""
    _, names = safetensors_header(path)
    return sorted(int(m.group(1)) for k in names if (m := re.fullmatch(r"means_(\d+)", k)))


def load_reference_preprocessing(path: str | Path, layers: list[int] | None = None):
    """Reference preprocessing transforms {layer: LayerTransform}; refuses active whitening (wh_alpha != 1)."""

    path = Path(path)
    tensors, _ = load_safetensors(path)
    for key, t in tensors.items():
        if key.startswith("wh_alpha"):
            values = t.double().reshape(-1)
            if values.numel() and not torch.allclose(values, torch.ones_like(values)):
                raise UnsupportedReferenceError(
                    f"{path}: whitening is active ('{key}' = {values.tolist()[:4]}, not 1); kaepipe's "
                    "preprocessing has no whitening (off in the paper)")
    out = load_preprocessing(path, layers)
    for i, t in out.items():
        q, d = t.directions.shape
        if t.mean.shape != (d,):
            raise DataError(f"{path}: 'means_{i}' has {t.mean.size} entries but 'directions_{i}' is {q} x {d}")
        if t.align.shape != (q, q):
            raise DataError(f"{path}: 'align_{i}' has shape {t.align.shape}, expected ({q}, {q})")
        if not np.isfinite(t.scale) or t.scale <= 0:
            raise DataError(f"{path}: 'norm_{i}' = {t.scale} must be a positive number")
    return out


# ---------------------------------------------------------------------------------------------
# Finding the files of a release
# ---------------------------------------------------------------------------------------------

def checkpoint_kind(path: str | Path) -> str | None:
    """'base', 'kae', 'preprocessing' or None for a safetensors file, by metadata model_class and tensor names."""
    meta, names = safetensors_header(path)
    cls = meta.get("model_class", "")
    if cls == BASE_CLASS:
        return "base"
    if "Autencoder" in cls or "Autoencoder" in cls:
        return "kae"
    if "means_0" in names:
        return "preprocessing"
    return None


def seed_of(path: str | Path) -> int | None:
    """The seed in a file name (`..._seed_21.safetensors` -> 21), or None."""
    found = re.findall(r"seed_(\d+)", Path(path).name)
    return int(found[-1]) if found else None


def _common_prefix(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))  # noqa: RUF071 (a character prefix is what is wanted)


def find_reference_checkpoints(folder: str | Path) -> tuple[Path, dict[int, Path], dict[int | None, Path]]:
    """(base network, {seed: KAE}, {seed or None: preprocessing}) of a folder of reference checkpoints.

    Kinds are read from the metadata `model_class` and the tensor names; seeds from `seed_<n>` in the
    file names. One preprocessing file is shared by every KAE ({None: path}); with several, each KAE
    gets the one whose file name shares the longest prefix with its own ({seed: path}).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder of reference checkpoints not found")
    found: dict[str, list[Path]] = {"base": [], "kae": [], "preprocessing": []}
    for path in sorted(folder.glob("*.safetensors")):
        kind = checkpoint_kind(path)
        if kind is not None:
            found[kind].append(path)
    if len(found["base"]) != 1:
        raise DataError(f"{folder}: expected exactly one base network (metadata model_class '{BASE_CLASS}'), found "
                        f"{[p.name for p in found['base']] or 'none'}")
    if not found["kae"]:
        raise DataError(f"{folder}: no KAE checkpoint (metadata model_class '*Autoencoder*' or '*Autencoder*')")
    if not found["preprocessing"]:
        raise DataError(f"{folder}: no preprocessing file (a safetensors file with a 'means_0' tensor)")
    kaes: dict[int, Path] = {}
    for path in found["kae"]:
        seed = seed_of(path)
        if seed is None:
            raise DataError(f"{path}: no 'seed_<n>' in the KAE file name")
        if seed in kaes:
            raise DataError(f"{folder}: two KAE checkpoints for seed {seed}: {kaes[seed].name} and {path.name}")
        kaes[seed] = path
    kaes = dict(sorted(kaes.items()))
    pres = found["preprocessing"]
    if len(pres) == 1:
        pre_map: dict[int | None, Path] = {None: pres[0]}
    else:
        pre_map = {}
        for seed, path in kaes.items():
            scores = [_common_prefix(p.name, path.name) for p in pres]
            best = max(scores)
            if scores.count(best) > 1:
                ties = [p.name for p, s in zip(pres, scores) if s == best]
                raise DataError(f"{folder}: cannot tell which preprocessing file belongs to {path.name}: {ties}")
            pre_map[seed] = pres[scores.index(best)]
    return found["base"][0], kaes, pre_map


def preprocessing_for(seed: int, pre_map: Mapping[int | None, Path]) -> Path:
    """The preprocessing file of one KAE seed from `find_reference_checkpoints`' map."""
    return pre_map[seed] if seed in pre_map else pre_map[None]


# ---------------------------------------------------------------------------------------------
# The accuracy table of a release
# ---------------------------------------------------------------------------------------------

def _row(ds: Mapping, protocol: str, split: str, model: str, seed, checkpoint: str, report: dict) -> dict:
    row = {"dataset": ds["name"], "protocol": protocol, "split": split, "model": model, "seed": seed,
           "checkpoint": checkpoint, "n": report["n"], "acc": report["macro"]}
    for c, v in enumerate(report["per_class"]):
        row[f"acc_class_{c}"] = np.nan if v is None else v
    return row


def evaluate_reference(folder: str | Path, ds_config: Mapping, splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
                       device: torch.device | str | None = None) -> pd.DataFrame:
    """Macro and per-class accuracy (%) of a release's base MLP and of each KAE seed's surrogate.

    One row per protocol (ds_config['evaluation']: protocol -> split) for the MLP (seed <NA>) and one per
    protocol and KAE seed. The surrogate path: base L0 -> preprocessing of layer 0 -> phi -> K^k -> psi
    -> inverse of the last layer's preprocessing -> base output layer -> argmax.
    """

    device = torch.device(device or "cpu")
    base_path, kaes, pre_map = find_reference_checkpoints(folder)
    base = load_reference_base(base_path).to(device).eval()
    classes = int(ds_config["classes"])
    if base.cfg.classes != classes:
        raise DataError(f"{base_path}: the network has {base.cfg.classes} outputs but dataset "
                        f"'{ds_config['name']}' has {classes} classes")
    protocols = dict(ds_config["evaluation"])
    missing = sorted({s for s in protocols.values() if s not in splits})
    if missing:
        raise DataError(f"evaluate_reference: split(s) {missing} of the evaluation protocols {protocols} not given")
    layer0, base_reports = {}, {}
    for split in dict.fromkeys(protocols.values()):
        x, y = splits[split]
        if x.shape[1] != base.cfg.in_features:
            raise DataError(f"{base_path}: the network takes {base.cfg.in_features} features but split '{split}' "
                            f"has {x.shape[1]}")
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
        layer0[split] = record_layers(base, xt)[0].cpu().numpy()
        base_reports[split] = accuracy_report(predict(base, xt).cpu().numpy(), y, classes)
    rows = [_row(ds_config, p, s, "MLP", pd.NA, base_path.name, base_reports[s]) for p, s in protocols.items()]
    pre_cache: dict[Path, dict] = {}
    for seed, kae_path in kaes.items():
        kae = load_reference_kae(kae_path).to(device).eval()
        pre_path = preprocessing_for(seed, pre_map)
        if pre_path not in pre_cache:
            idx = preprocessing_layers(pre_path)
            pre_cache[pre_path] = load_reference_preprocessing(pre_path, [idx[0], idx[-1]])
        pre = pre_cache[pre_path]
        first, last = pre[min(pre)], pre[max(pre)]
        _check_dims(base_path, kae_path, pre_path, base, kae, first, last)
        for split in dict.fromkeys(protocols.values()):
            pred = surrogate_predictions(kae, base, first, last, layer0[split], device)
            report = accuracy_report(pred, splits[split][1], classes)
            for p, s in protocols.items():
                if s == split:
                    rows.append(_row(ds_config, p, s, "KAE", seed, kae_path.name, report))
    df = pd.DataFrame(rows)
    df["seed"] = df["seed"].astype("Int64")
    order = {p: i for i, p in enumerate(protocols)}
    df = df.sort_values(by=["protocol", "model", "seed"], key=lambda c: c.map(order) if c.name == "protocol"
                        else (c != "MLP") if c.name == "model" else c, kind="mergesort", na_position="first")
    return df.reset_index(drop=True)


def _check_dims(base_path, kae_path, pre_path, base: ResMLP, kae: KoopmanAutoencoder, first, last) -> None:
    q0, d0 = first.directions.shape
    ql, dl = last.directions.shape
    if d0 != base.cfg.width or dl != base.cfg.width:
        raise DataError(f"{pre_path}: preprocessing of {d0}- and {dl}-dimensional layers, but {base_path.name} "
                        f"has width {base.cfg.width}")
    if q0 != kae.cfg.in_features or ql != kae.cfg.in_features:
        raise DataError(f"{kae_path}: the KAE takes {kae.cfg.in_features} features but {pre_path.name} projects "
                        f"onto {q0} (first layer) and {ql} (last layer) directions")


def summarise(df: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Mean and population std (ddof = 0) of `acc` over seeds per dataset, protocol and model, with a
    paper-style `cell` ('98.75 (0.15)'; the MLP's single number without a std)."""

    keys = [k for k in ("dataset", "protocol", "split", "model") if k in df.columns]
    rows = []
    for key, g in df.groupby(keys, sort=False):
        m, s = mean_std(g["acc"])
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update({"n_seeds": len(g), "acc_mean": m, "acc_std": s})
        row["cell"] = f"{m:.{digits}f}" if row.get("model") == "MLP" else cell(m, s, digits)
        rows.append(row)
    return pd.DataFrame(rows)
