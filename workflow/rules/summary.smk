# The final aggregation: results/summary.md with every table against the published values, the
# configuration, the library versions and the wall time of each stage. Include this file last: the
# summary waits for every other final target, and picks up the tables of the stages present.


# Stage tables the summary compares with the paper, when their stage is in this workflow.
SUMMARY_INPUTS = P.summary_inputs(config)
SUMMARY_TABLES = [*SUMMARY_INPUTS, "walltime"]


rule summary:
    """Write results/summary.md and results/tables/summary_<table>.{csv,md,tex} (published vs ours)."""
    input:
        **SUMMARY_INPUTS,
        # every other final target: the summary runs last, so its wall-time table sees every stage
        upstream=lambda w: P.final_outputs(config, summary=False),
    output:
        md=report(P.SUMMARY, caption="../report/summary.rst", category="Summary"),
        csv=[
            report(
                P.table(f"summary_{name}.csv"),
                caption="../report/summary_table.rst",
                category="Summary",
                labels={"table": name},
            )
            for name in SUMMARY_TABLES
        ],
        md_tables=[P.table(f"summary_{name}.md") for name in SUMMARY_TABLES],
        tex=[P.table(f"summary_{name}.tex") for name in SUMMARY_TABLES],
    log:
        "results/logs/summary/summary.log",
    benchmark:
        "results/benchmarks/summary/summary.tsv"
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        tables=SUMMARY_TABLES,
        benchmarks="results/benchmarks",
    script:
        "../scripts/summary.py"
