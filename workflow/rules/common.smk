# Config loading and validation, and the helpers every rule file uses.
import kaepipe
from kaepipe.config import check_semantics, config_subset, dataset_config, lambda_tag, validate_config
from kaepipe.data import idx_inputs
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")

try:
    validate(config, SCHEMA)
except WorkflowError:
    validate_config(config, SCHEMA)  # raises ConfigError naming every bad key
    raise
check_semantics(config)

DATASETS = list(config["run"])
SPLITS = ["train", "test"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    split="|".join(SPLITS),
    lam=r"[0-9][0-9.e+-]*",
    seed=r"\d+",


def ds(wildcards):
    """The settings of the rule's dataset, with its IDX folder resolved."""
    return dataset_config(config, wildcards.dataset)


def ds_subset(*keys, drop=()):
    """Params function: the dataset's identity plus only the config blocks a rule depends on.

    A rule's params are part of its rerun triggers, so a change to e.g. the KAE settings must not
    retrain the base network. `drop` removes sub-blocks the rule ignores ("unlearn.baselines").
    """

    def params(wildcards):
        return config_subset(dataset_config(config, wildcards.dataset), keys, drop)

    return params


def source_files(wildcards):
    """Input function of the dataset rule: the IDX files (and MD5SUMS) a split is read from (none for Yin-Yang),
    so a changed or damaged file reruns the split and what depends on it (kaepipe.data.idx_inputs)."""
    ds = dataset_config(config, wildcards.dataset)
    return idx_inputs(ds["source"], ds["root"], config.get("cache_dir", "results/cache"), wildcards.split)


def data_paths(wildcards):
    return {s: f"results/{wildcards.dataset}/data/{s}.parquet" for s in SPLITS}


def kae_outputs(name, datasets=None):
    """One file per KAE of the grid: results/{dataset}/kae/iso{lam}/seed{seed}/<name>."""
    out = []
    for d in datasets or DATASETS:
        kae = config["datasets"][d]["kae"]
        out += expand(f"results/{d}/kae/iso{{lam}}/seed{{seed}}/{name}",
                      lam=[lambda_tag(x) for x in kae["lambda_iso"]], seed=kae["seeds"])
    return out


# Each rule file adds its final outputs here; `rule all` (Snakefile) asks for all of them.
FINAL_TARGETS = []
