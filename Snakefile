# kaepipe: Koopman autoencoders of neural representation dynamics.
# `snakemake --cores 2` runs everything for the datasets listed under `run` in config.yaml.
# The rules' scripts import the installed `kaepipe` package (`pip install -e .`, see README.md).


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/represent.smk"
include: "workflow/rules/kae.smk"
include: "workflow/rules/tables.smk"


rule all:
    input:
        FINAL_TARGETS,
    default_target: True
