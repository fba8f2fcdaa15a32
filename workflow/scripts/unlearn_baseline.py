"""Unlearn one class from the base network by retraining from scratch or fine-tuning (a baseline)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.unlearn import run_unlearn_baseline

with rule_context(snakemake) as (log, device):
    w, inp, out = snakemake.wildcards, snakemake.input, snakemake.output
    run_unlearn_baseline(snakemake.params.ds, w.baseline, int(w.target), {"train": inp.train, "test": inp.test},
                         inp.base, out.json, out.model, device, log=log.info)
