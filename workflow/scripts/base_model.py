"""Train the base ResMLP of a dataset."""
from kaepipe.base import run_base_training
from kaepipe.runtime import rule_context

with rule_context(snakemake) as (log, device):
    out = snakemake.output
    run_base_training(snakemake.params.ds, {"train": snakemake.input.train, "test": snakemake.input.test},
                      out.model, out.curve, out.metrics, device, log=log.info)
