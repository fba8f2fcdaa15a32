"""Write the editing table and the unlearning-baselines table."""
from kaepipe.runtime import rule_context
from kaepipe.stages.tables import run_unlearn_tables

with rule_context(snakemake, uses_torch=False) as (log, _device):
    editing, baselines = run_unlearn_tables(snakemake.config, list(snakemake.input.edits),
                                            list(snakemake.input.baselines), snakemake.output,
                                            list(snakemake.input.studies))
    log.info("editing table:\n%s", editing.to_string(index=False))
    log.info("baselines table:\n%s", baselines.to_string(index=False))
