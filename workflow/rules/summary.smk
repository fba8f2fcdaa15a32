# The final aggregation: results/summary.md with every table against the published values, the
# configuration and the library versions; results/timings.md with every measured time (wall time per
# stage, the edits' and baselines' times), apart from the results so that reruns give equal bytes.


# Stage tables the summary compares with the paper, and the timing tables, of the stages this config runs.
SUMMARY_INPUTS = P.summary_inputs(config)
SUMMARY_TABLES = list(SUMMARY_INPUTS)
TIMING_INPUTS = P.timing_inputs(config)


rule summary:
    """Write results/summary.md and results/tables/summary_<table>.{csv,md,tex} (published vs ours)."""
    input:
        **SUMMARY_INPUTS,
        # every other final target: the summary runs last and lists the figures
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
    script:
        "../scripts/summary.py"


rule timings:
    """Write results/timings.md (wall time per stage from the benchmark files, the edits' and baselines' times)."""
    input:
        **TIMING_INPUTS,
        # every other final target (the summary too): the wall-time table sees every stage
        upstream=lambda w: [t for t in P.final_outputs(config) if t != P.TIMINGS],
    output:
        md=report(P.TIMINGS, caption="../report/timings.rst", category="Summary"),
        csv=P.table("timings_walltime.csv"),
        md_table=P.table("timings_walltime.md"),
    log:
        "results/logs/summary/timings.log",
    benchmark:
        "results/benchmarks/summary/timings.tsv"
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        benchmarks="results/benchmarks",
    script:
        "../scripts/timings.py"
