"""Record the base network's layer representations and fit the preprocessing."""
from kaepipe.runtime import rule_context
from kaepipe.stages.represent import run_representations

with rule_context(snakemake) as (log, device):
    inp, out = snakemake.input, snakemake.output
    run_representations(
        snakemake.params.ds, inp.model, {"train": inp.train, "test": inp.test},
        {"train": out.train_parquet, "test": out.test_parquet},
        {"train": out.train_pt, "test": out.test_pt}, out.preprocessing, device, log=log.info)
