"""Train one KAE."""
from kaepipe.config import lambda_value
from kaepipe.runtime import rule_context
from kaepipe.stages.kae import run_kae_training

with rule_context(snakemake) as (log, device):
    w, inp, out, ds = snakemake.wildcards, snakemake.input, snakemake.output, snakemake.params.ds
    lam = lambda_value(ds["kae"], w.lam, f"datasets.{ds['name']}.kae.lambda_iso")  # the configured value
    run_kae_training(ds, lam, int(w.seed), inp.reps, inp.preprocessing,
                     out.model, out.losses, out.metrics, device, log=log.info)
