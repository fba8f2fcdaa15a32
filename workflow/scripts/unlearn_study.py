"""The unlearning trade-off study (targets x reg x strength x rank) of every KAE and target class the rule
lists (one, or all of a dataset's in a pack)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.unlearn import run_unlearn_studies

with rule_context(snakemake) as (log, device):
    inp = snakemake.input
    studies = list(zip(snakemake.params.targets, inp.kae, snakemake.output, strict=True))
    run_unlearn_studies(snakemake.params.ds, studies, inp.base, inp.preprocessing, {"train": inp.train, "test": inp.test},
                        device, log=log.info)
