"""Surrogate accuracy of one KAE."""
from kaepipe.runtime import rule_context
from kaepipe.stages.surrogate import run_surrogate_accuracy

with rule_context(snakemake) as (log, device):
    inp = snakemake.input
    run_surrogate_accuracy(snakemake.params.ds, inp.kae, inp.base, inp.preprocessing,
                           {"train": inp.train, "test": inp.test}, snakemake.output[0], device, log=log.info)
