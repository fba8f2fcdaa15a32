"""Write the beta_0 tables: results/tables/topology.csv and the summary over seeds."""
from kaepipe.runtime import rule_context
from kaepipe.stages.tables import run_topology_tables

with rule_context(snakemake, uses_torch=False) as (log, _device):
    inp = snakemake.input
    _long, summary = run_topology_tables(list(inp.layers), list(inp.iterates), snakemake.output, snakemake.config)
    log.info("topology summary:\n%s", summary.to_string(index=False))
