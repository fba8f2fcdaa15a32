"""Write the isometry table: mean (population std) over seeds per dataset and lambda_iso."""
from kaepipe.runtime import rule_context
from kaepipe.stages.tables import run_isometry_tables

with rule_context(snakemake, uses_torch=False) as (log, _device):
    table = run_isometry_tables(list(snakemake.input), snakemake.output)
    log.info("isometry table:\n%s", table.to_string(index=False))
