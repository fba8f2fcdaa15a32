"""The unlearning trade-off study of one KAE and target class (targets x reg x strength x rank)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.unlearn import run_unlearn_study

with rule_context(snakemake) as (log, device):
    w, inp = snakemake.wildcards, snakemake.input
    run_unlearn_study(snakemake.params.ds, int(w.target), inp.kae, inp.base, inp.preprocessing,
                      {"train": inp.train, "test": inp.test}, snakemake.output[0], device, log=log.info)
