"""Surrogate accuracy of one KAE, or of every KAE of a pack (one JSON file each)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.surrogate import run_surrogate_pack

with rule_context(snakemake) as (log, device):
    inp = snakemake.input
    kaes = [inp.kae] if isinstance(inp.kae, str) else list(inp.kae)
    run_surrogate_pack(snakemake.params.ds, kaes, inp.base, inp.preprocessing, {"train": inp.train, "test": inp.test},
                       list(snakemake.output), device, log=log.info)
