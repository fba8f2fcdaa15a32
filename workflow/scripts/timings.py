"""Write results/timings.md: every measured time of the run (wall time per stage, edits and baselines)."""
from glob import glob
from pathlib import Path

from kaepipe.runtime import rule_context
from kaepipe.stages.summary import run_timings

with rule_context(snakemake, uses_torch=False) as (log, _device):
    inp, out, params = snakemake.input, snakemake.output, snakemake.params
    timing_tables = {name: inp[name] for name in ("editing", "baselines") if name in inp.keys()}  # noqa: SIM118
    benchmarks = sorted(glob(str(Path(params.benchmarks) / "*" / "*.tsv")))
    run_timings(benchmarks, timing_tables, out.md, {"csv": out.csv, "md": out.md_table}, log=log.info)
