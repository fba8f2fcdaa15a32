# kaepipe: Koopman autoencoders of neural representation dynamics.
# `snakemake --cores 2` runs everything for the datasets listed under `run` in config.yaml.
# The rules' scripts import the installed `kaepipe` package (`pip install -e .`, see README.md).


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/represent.smk"
include: "workflow/rules/kae.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/topology.smk"
include: "workflow/rules/unlearn.smk"
# Figures and the summary pick up the stages above: keep them after every stage, the summary last.
include: "workflow/rules/figures.smk"
include: "workflow/rules/summary.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
