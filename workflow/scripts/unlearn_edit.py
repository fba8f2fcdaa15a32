"""Edit one KAE's k-step operator to forget one class and evaluate the surrogate before and after."""
from kaepipe.runtime import rule_context
from kaepipe.stages.unlearn import run_unlearn_edit

with rule_context(snakemake) as (log, device):
    w, inp, out = snakemake.wildcards, snakemake.input, snakemake.output
    run_unlearn_edit(snakemake.params.ds, int(w.target), inp.kae, inp.base, inp.preprocessing,
                     {"train": inp.train, "test": inp.test}, out.json, out.model, device, log=log.info)
