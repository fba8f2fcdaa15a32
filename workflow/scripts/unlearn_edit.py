"""Edit KAE k-step operators to forget a class and evaluate the surrogate before and after: every edit the
rule lists (one, or all of a dataset's in a pack)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.unlearn import run_unlearn_edits

with rule_context(snakemake) as (log, device):
    inp, out = snakemake.input, snakemake.output
    edits = list(zip(snakemake.params.targets, inp.kae, out.json, out.model, strict=True))
    run_unlearn_edits(snakemake.params.ds, edits, inp.base, inp.preprocessing, {"train": inp.train, "test": inp.test},
                      device, log=log.info)
