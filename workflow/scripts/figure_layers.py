"""Figure 1: top-3 principal components of every base layer."""
from kaepipe.runtime import rule_context
from kaepipe.stages.figures import run_layers_figure

with rule_context(snakemake, uses_torch=False) as (log, _device):
    run_layers_figure(snakemake.params.ds, snakemake.input.reps, snakemake.output.png, snakemake.output.pdf,
                      log=log.info)
