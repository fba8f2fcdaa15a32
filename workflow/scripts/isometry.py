"""Isometry study of the KAEs of one lambda_iso: phi(x_L) against x_L (the encoder runs on the CPU)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.topology import run_isometry, use_threads

with rule_context(snakemake, uses_torch=False) as (log, _device):
    log.info(use_threads(snakemake.threads))
    inp, out = snakemake.input, snakemake.output
    run_isometry(snakemake.params.ds, list(inp.kae), inp.reps, inp.preprocessing, inp.original, out.diagrams,
                 out.curves, out.metrics, log=log.info)
