"""Write the accuracy tables."""
from kaepipe.runtime import rule_context
from kaepipe.stages.tables import run_accuracy_table

with rule_context(snakemake, uses_torch=False) as (log, _device):
    table = run_accuracy_table(snakemake.config, list(snakemake.input.base), list(snakemake.input.kae),
                               snakemake.output)
    log.info("accuracy table:\n%s", table.to_string(index=False))
