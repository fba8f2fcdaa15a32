"""The unlearning trade-off study (targets x reg x strength x rank) of one KAE and target class, or of every
studied edit of a dataset (a pack)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.unlearn import run_unlearn_study

with rule_context(snakemake) as (log, device):
    inp, params = snakemake.input, snakemake.params
    packed = not isinstance(inp.kae, str)
    kaes = list(inp.kae) if packed else [inp.kae]
    targets = list(params.targets) if packed else [int(snakemake.wildcards.target)]
    for kae, target, out in zip(kaes, targets, list(snakemake.output), strict=True):
        run_unlearn_study(params.ds, int(target), kae, inp.base, inp.preprocessing, {"train": inp.train, "test": inp.test},
                          out, device, log=log.info)
