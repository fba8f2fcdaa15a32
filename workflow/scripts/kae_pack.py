"""Train a pack of KAEs of one dataset as one ensemble and write every member's files."""
from kaepipe.config import lambda_value
from kaepipe.runtime import rule_context
from kaepipe.stages.kae import run_kae_pack

with rule_context(snakemake) as (log, device):
    out, ds = snakemake.output, snakemake.params.ds
    where = f"datasets.{ds['name']}.kae.lambda_iso"
    members = [(lambda_value(ds["kae"], tag, where), int(seed)) for tag, seed in snakemake.params.members]
    outputs = [{"model": m, "losses": lo, "metrics": me} for m, lo, me in zip(out.model, out.losses, out.metrics)]
    run_kae_pack(ds, members, snakemake.input.reps, snakemake.input.preprocessing, outputs, device, log=log.info)
