# The final aggregation: results/summary.md with every table against the published values, the
# configuration and the library versions; and results/timings.md with every measured time (wall time of
# each stage, the edits' and baselines' seconds), kept apart so that a rerun's summary is byte-identical.
# Include this file last: both wait for every other final target, and pick up the tables of the stages present.


# Stage tables the summary compares with the paper, when their stage is in this workflow.
SUMMARY_INPUTS = {
    name: path
    for name, path in {
        "accuracy": "results/tables/accuracy.csv",
        "topology": "results/tables/topology.csv",
        "isometry": "results/tables/isometry.csv",
        "editing": "results/tables/editing.csv",
        "baselines": "results/tables/unlearning_baselines.csv",
    }.items()
    if any(str(f) == path for r in workflow.rules for f in r.output)
}
SUMMARY_TABLES = list(SUMMARY_INPUTS)
# Timing tables of the stages that measure their own times, when their stage is in this workflow.
TIMING_INPUTS = {
    name: path
    for name, path in {
        "editing": "results/tables/timings_editing.csv",
        "baselines": "results/tables/timings_unlearning_baselines.csv",
    }.items()
    if any(str(f) == path for r in workflow.rules for f in r.output)
}


rule summary:
    """Write results/summary.md and results/tables/summary_<table>.{csv,md,tex} (published vs ours)."""
    input:
        **SUMMARY_INPUTS,
        # every other final target: the summary runs last and lists the figures
        upstream=lambda w: [t for t in FINAL_TARGETS if t not in ("results/summary.md", "results/timings.md")],
    output:
        md=report("results/summary.md", caption="../report/summary.rst", category="Summary"),
        csv=[
            report(f"results/tables/summary_{name}.csv", caption="../report/summary_table.rst",
                   category="Summary", labels={"table": name})
            for name in SUMMARY_TABLES
        ],
        md_tables=expand("results/tables/summary_{name}.md", name=SUMMARY_TABLES),
        tex=expand("results/tables/summary_{name}.tex", name=SUMMARY_TABLES),
    params:
        tables=SUMMARY_TABLES,
    log:
        "results/logs/summary/summary.log",
    benchmark:
        "results/benchmarks/summary/summary.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    script:
        "../scripts/summary.py"


FINAL_TARGETS.append("results/summary.md")


rule timings:
    """Write results/timings.md (wall time per stage from the benchmark files, the edits' and baselines' times)."""
    input:
        **TIMING_INPUTS,
        # every other final target (the summary too): the wall-time table sees every stage
        upstream=lambda w: [t for t in FINAL_TARGETS if t != "results/timings.md"],
    output:
        md=report("results/timings.md", caption="../report/timings.rst", category="Summary"),
        csv="results/tables/timings_walltime.csv",
        md_table="results/tables/timings_walltime.md",
    params:
        benchmarks="results/benchmarks",
    log:
        "results/logs/summary/timings.log",
    benchmark:
        "results/benchmarks/summary/timings.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    script:
        "../scripts/timings.py"


FINAL_TARGETS.append("results/timings.md")
