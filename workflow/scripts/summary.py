"""Write results/summary.md and the comparison tables (published vs ours)."""
from kaepipe.runtime import rule_context
from kaepipe.stages.summary import run_summary

with rule_context(snakemake, uses_torch=False) as (log, _device):
    inp, out, params = snakemake.input, snakemake.output, snakemake.params
    tables = list(params.tables)
    inputs = {name: inp[name] for name in tables if name in inp.keys()}  # noqa: SIM118 (a Snakemake Namedlist)
    outs = {name: {"csv": csv, "md": md, "tex": tex}
            for name, csv, md, tex in zip(tables, out.csv, out.md_tables, out.tex)}
    figures = sorted(f for f in inp.upstream if f.startswith("results/figures/"))
    run_summary(snakemake.config, inputs, out.md, outs, figures, log=log.info)
