# Config loading and validation, and the helpers every rule file uses.
from kaepipe.config import config_subset, dataset_config
from kaepipe.settings import check_config, validate_config
from kaepipe.stages import paths as P
from kaepipe.data import get_source
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")

try:
    validate(config, SCHEMA)
except WorkflowError:
    validate_config(config, SCHEMA)  # raises ConfigError naming every bad key
    raise
check_config(config)

DATASETS = list(config["run"])
SPLITS = ["train", "test"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    draw=r"\d+",
    split="|".join(SPLITS),
    lam=r"[0-9][0-9.e+-]*",
    seed=r"\d+",


def ds(wildcards):
    """The settings of the rule's dataset (of its draw, when the rule has one), with its IDX folder resolved."""
    return dataset_config(config, wildcards.dataset, wildcards.get("draw"))


def ds_subset(*keys, drop=()):
    """Params function: the dataset's identity plus only the config blocks a rule depends on.

    A rule's params are part of its rerun triggers, so a change to e.g. the KAE settings must not
    retrain the base network. `drop` removes sub-blocks the rule ignores ("unlearn.baselines"). A rule
    with a {draw} wildcard gets that draw's settings (kaepipe.config.draw_settings: `draw`, and
    base.seed = the draw), so adding draws leaves the params of the others unchanged.
    """

    def params(wildcards):
        return config_subset(ds(wildcards), keys, drop)

    return params


def ds_params(dataset, *keys, draw=None, drop=()):
    """The same as ds_subset, for a rule without wildcards (one rule per dataset, or per dataset and draw)."""
    return config_subset(dataset_config(config, dataset, draw), keys, drop)


def source_files(wildcards):
    """Input function of the dataset rule: the IDX files (and MD5SUMS) a split is read from (none for Yin-Yang),
    so a changed or damaged file reruns the split and what depends on it (DataSource.inputs).
    """
    ds = dataset_config(config, wildcards.dataset)
    return get_source(ds["source"]).inputs(
        ds["root"], config.get("cache_dir", "results/cache"), wildcards.split, ds=ds
    )


def base_weights(wildcards):
    """The trained network a dataset starts from (`base.weights`), when given: a changed file reruns the base rule."""
    weights = dataset_config(config, wildcards.dataset)["base"].get("weights")
    return [weights] if weights else []


def data_paths(wildcards):
    """The dataset's splits, shared by its draws (input function)."""
    return {s: P.fill(P.SPLIT, dataset=wildcards.dataset, split=s) for s in SPLITS}


def first_draw(template, **wildcards):
    """Input function of a figure: the template filled for the dataset's first draw (the one figures show)."""
    return lambda w: P.first_draw_file(config, template, w.dataset, **wildcards)


def paper_reps(wildcards):
    """The reps file of the split the paper shows, first draw (input function of the figures)."""
    return P.first_draw_file(
        config,
        P.REPS,
        wildcards.dataset,
        split=P.paper_split(config, wildcards.dataset),
    )


def kae_outputs(template, datasets=None, draws=None):
    """A KAE template (P.KAE_*) filled for every KAE of the grid of the datasets (default: all of `run`) and
    their draws (default: every draw)."""
    return P.kae_paths(config, datasets or DATASETS, template, only_draws=draws)


def get_final_output():
    """Everything `snakemake` without a target builds (kaepipe.stages.paths.final_outputs), the summary last."""
    return P.final_outputs(config)
