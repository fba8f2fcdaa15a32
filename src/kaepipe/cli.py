"""The `kaepipe` command line: tools beside the Snakemake pipeline.

    kaepipe --version
    kaepipe evaluate-reference FOLDER --dataset yinyang [--config config.yaml] [--mnist-root DIR]
                                      [--device auto] [--out results.csv]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kaepipe import __version__
from kaepipe.config import dataset_config, load_yaml
from kaepipe.data import get_source, make_split
from kaepipe.errors import DataError, KaepipeError
from kaepipe.io import write_text
from kaepipe.nn.train import resolve_device
from kaepipe.reference import evaluate_reference, find_reference_checkpoints, summarise
from kaepipe.settings import validate_config

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_config(path: str | Path) -> dict:
    """Read a kaepipe config and validate it against the schema when the repository's schema is present."""

    config = load_yaml(path)
    if SCHEMA.is_file():
        validate_config(config, SCHEMA)
    return config


def build_splits(config: dict, name: str, splits: Sequence[str], hint: str | None = None) -> dict:
    """The named splits of a configured dataset: Yin-Yang regenerated, IDX data from its (verified) folder.

    `hint` says how to pass an IDX folder (default: the config's `<source>_root` key).
    """

    ds = dataset_config(config, name)
    root = None
    hint = hint or f"the `{ds['source']}_root` key of the config file"
    root = get_source(ds["source"]).prepare(ds.get("root"), config.get("cache_dir", "results/cache"), list(splits),
                                            hint=hint, ds=ds)
    return {s: make_split(ds, s, root) for s in splits}


def cmd_evaluate_reference(args: argparse.Namespace) -> int:
    """Accuracy of the authors' released base network and KAEs on a dataset's evaluation splits."""

    if args.out and Path(args.out).is_dir():
        raise DataError(f"--out {args.out}: is a folder; give the CSV file to write, e.g. "
                        f"{Path(args.out) / 'reference.csv'}")
    config = load_config(args.config)
    if args.mnist_root:
        config["mnist_root"] = args.mnist_root
    ds = dataset_config(config, args.dataset)
    find_reference_checkpoints(args.folder)  # before any download or data: the folder must hold a release
    device = resolve_device(args.device or config.get("device", "auto"))
    needed = list(dict.fromkeys(ds["evaluation"].values()))
    hint = "`--mnist-root DIR`" if ds["source"] == "mnist" else f"the `{ds['source']}_root` key of {args.config}"
    splits = build_splits(config, args.dataset, needed, hint)
    for s, (x, _) in splits.items():
        print(f"{args.dataset} {s}: {len(x)} samples x {x.shape[1]} features")
    df = evaluate_reference(args.folder, ds, splits, device)
    summary = summarise(df)
    show = df.drop(columns=["checkpoint"])
    print("\nPer seed (macro and per-class accuracy, %):")
    print(show.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-"))
    print("\nMean (population std) over seeds:")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        write_text(df.to_csv(index=False, float_format="%.6g", lineterminator="\n"), args.out)
        print(f"\nwrote {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of `kaepipe`."""
    p = argparse.ArgumentParser(prog="kaepipe", description="Koopman autoencoders of neural representation "
                                "dynamics: tools beside the Snakemake pipeline.")
    p.add_argument("--version", action="version", version=f"kaepipe {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    ev = sub.add_parser("evaluate-reference", help="accuracy table of the paper authors' released checkpoints",
                        description="Recompute the accuracy table (base MLP and KAE surrogate, macro %) from a "
                        "folder of the authors' safetensors checkpoints: one base network, KAEs named "
                        "*seed_<n>*, and a preprocessing file.")
    ev.add_argument("folder", help="folder with the reference .safetensors files")
    ev.add_argument("--dataset", required=True, help="dataset name in the config (e.g. yinyang, mnist)")
    ev.add_argument("--config", default="config.yaml", help="kaepipe config file (default: config.yaml)")
    ev.add_argument("--mnist-root", default=None, help="folder with the four MNIST IDX files (overrides the config)")
    ev.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                    help="where networks run (default: the config's device)")
    ev.add_argument("--out", default=None, help="write the per-seed table to this CSV file")
    ev.set_defaults(func=cmd_evaluate_reference)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kaepipe` console script; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except KaepipeError as exc:
        print(f"kaepipe: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
