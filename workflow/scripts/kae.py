"""Train one KAE."""
from kaepipe.runtime import rule_context
from kaepipe.stages.kae import run_kae_training

with rule_context(snakemake) as (log, device):
    w, inp, out = snakemake.wildcards, snakemake.input, snakemake.output
    run_kae_training(snakemake.params.ds, float(w.lam), int(w.seed), inp.reps, inp.preprocessing,
                     out.model, out.losses, out.metrics, device, log=log.info)
