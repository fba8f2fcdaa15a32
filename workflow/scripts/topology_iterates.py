"""beta_0 of every decoded iterate of one KAE (the KAE runs on the CPU)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.topology import run_iterate_topology, use_threads

with rule_context(snakemake, uses_torch=False) as (log, _device):
    log.info(use_threads(snakemake.threads))
    inp, out = snakemake.input, snakemake.output
    table = run_iterate_topology(snakemake.params.ds, inp.kae, inp.reps, inp.preprocessing, out.table, out.curves,
                                 log=log.info)
    log.info("iterate topology:\n%s", table.to_string(index=False))
