"""Train the base ResMLP of a dataset."""
from kaepipe.runtime import rule_context
from kaepipe.stages.base import run_base_training

with rule_context(snakemake) as (log, device):
    out = snakemake.output
    run_base_training(snakemake.params.ds, {"train": snakemake.input.train, "test": snakemake.input.test},
                      out.model, out.curve, out.metrics, device, log=log.info)
