"""Edit KAE k-step operators to forget a class and evaluate the surrogate before and after: one edit, or
every edit of a dataset (a pack: the lists of KAEs, targets and outputs run in order)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.unlearn import run_unlearn_edit

with rule_context(snakemake) as (log, device):
    inp, out, params = snakemake.input, snakemake.output, snakemake.params
    packed = not isinstance(inp.kae, str)
    kaes = list(inp.kae) if packed else [inp.kae]
    targets = list(params.targets) if packed else [int(snakemake.wildcards.target)]
    jsons, models = (list(out.json), list(out.model)) if packed else ([out.json], [out.model])
    for kae, target, json_path, model_path in zip(kaes, targets, jsons, models, strict=True):
        run_unlearn_edit(params.ds, int(target), kae, inp.base, inp.preprocessing, {"train": inp.train, "test": inp.test},
                         json_path, model_path, device, log=log.info)
