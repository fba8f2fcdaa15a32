"""Rips diagram of the preprocessed last layer of the isometry points of one dataset."""
from kaepipe.runtime import rule_context
from kaepipe.stages.topology import run_isometry_original, use_threads

with rule_context(snakemake, uses_torch=False) as (log, _device):
    log.info(use_threads(snakemake.threads))
    run_isometry_original(snakemake.params.ds, snakemake.input.reps, snakemake.input.preprocessing,
                          snakemake.output[0], log=log.info)
