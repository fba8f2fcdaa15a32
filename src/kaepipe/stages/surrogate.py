"""The surrogate-accuracy stage: classify every split through a KAE and the base network's head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kaepipe.config import draw_of
from kaepipe.evaluate import accuracy_report, surrogate_predictions
from kaepipe.io import write_json
from kaepipe.nn.base import load_base
from kaepipe.nn.checkpoints import kae_expectation, load_kae
from kaepipe.represent import load_preprocessing, load_reps


def run_surrogate_accuracy(ds, kae_path: str, base_path: str, preprocessing: str, reps: dict,
                           out_json: str, device=None, log=print) -> dict:
    """Per-class and macro surrogate accuracy of one KAE under every evaluation protocol."""
    return run_surrogate_pack(ds, [kae_path], base_path, preprocessing, reps, [out_json], device, log)[0]


def run_surrogate_pack(ds, kae_paths: Sequence[str], base_path: str, preprocessing: str, reps: dict,
                       out_jsons: Sequence[str], device=None, log=print) -> list[dict]:
    """Surrogate accuracy of several KAEs of one dataset (a pack), each written to its own JSON file;
    the base network, the preprocessing and the representations are loaded once."""
    base = load_base(base_path, ds)
    last = len(base.layers) - 1
    pre = load_preprocessing(preprocessing, [0, last])
    data = {split: load_reps(path) for split, path in reps.items()}
    return [_surrogate_one(ds, kae_path, base, pre, last, data, out_json, device, log)
            for kae_path, out_json in zip(kae_paths, out_jsons, strict=True)]


def _surrogate_one(ds, kae_path: str, base, pre, last: int, data: Mapping, out_json: str, device, log) -> dict:
    kae, meta = load_kae(kae_path, kae_expectation(ds["kae"]) if "kae" in ds else None)
    log(f"{kae_path}: lambda_iso {meta.get('lambda_iso')}, seed {meta.get('seed')}")
    splits = {}
    for split, (layers, labels) in data.items():
        pred = surrogate_predictions(kae, base, pre[0], pre[last], layers[0], device)
        splits[split] = accuracy_report(pred, labels, ds["classes"])
    protocols = {p: {"split": s, **splits[s]} for p, s in ds["evaluation"].items()}
    for p, r in protocols.items():
        log(f"{p} protocol ({r['split']}): surrogate macro accuracy {r['macro']:.2f}")
    out = {"dataset": ds["name"], "draw": draw_of(ds), "lambda_iso": meta.get("lambda_iso"), "seed": meta.get("seed"),
           "splits": splits, "protocols": protocols}
    write_json(out, out_json)
    return out
