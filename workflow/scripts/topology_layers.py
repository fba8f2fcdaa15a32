"""beta_0 of every preprocessed base layer of one dataset."""
from kaepipe.runtime import rule_context
from kaepipe.stages.topology import run_layer_topology, use_threads

with rule_context(snakemake, uses_torch=False) as (log, _device):
    log.info(use_threads(snakemake.threads))
    inp, out = snakemake.input, snakemake.output
    table = run_layer_topology(snakemake.params.ds, inp.reps, inp.preprocessing, out.table, out.curves, log=log.info)
    log.info("layer topology:\n%s", table.to_string(index=False))
