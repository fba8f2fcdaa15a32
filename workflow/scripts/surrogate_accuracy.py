"""Surrogate accuracy of every KAE the rule lists (one, or a pack's), one JSON file each."""
from kaepipe.runtime import rule_context
from kaepipe.stages.surrogate import run_surrogate_pack

with rule_context(snakemake) as (log, device):
    inp = snakemake.input
    run_surrogate_pack(snakemake.params.ds, list(inp.kae), inp.base, inp.preprocessing,
                       {"train": inp.train, "test": inp.test}, list(snakemake.output), device, log=log.info)
