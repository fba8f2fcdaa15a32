"""Surrogate accuracy of one KAE."""
from kaepipe.evaluate import run_surrogate_accuracy
from kaepipe.runtime import rule_context

with rule_context(snakemake) as (log, device):
    inp = snakemake.input
    run_surrogate_accuracy(snakemake.params.ds, inp.kae, inp.base, inp.preprocessing,
                           {"train": inp.train, "test": inp.test}, snakemake.output[0], device, log=log.info)
