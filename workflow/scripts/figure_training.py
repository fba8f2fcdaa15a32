"""Training curves of the base network and the KAEs of one dataset."""
from kaepipe.runtime import rule_context
from kaepipe.stages.figures import run_training_figure

with rule_context(snakemake, uses_torch=False) as (log, _device):
    run_training_figure(snakemake.params.ds, snakemake.input.curve, list(snakemake.input.losses),
                        snakemake.output.png, snakemake.output.pdf, log=log.info)
