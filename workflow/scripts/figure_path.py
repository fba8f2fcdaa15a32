"""The decoded KAE path of a few samples next to the network's layers."""
from kaepipe.runtime import rule_context
from kaepipe.stages.figures import run_path_figure, use_cpu_threads

with rule_context(snakemake, uses_torch=False) as (log, _device):
    use_cpu_threads(snakemake.threads)
    inp, out = snakemake.input, snakemake.output
    run_path_figure(snakemake.params.ds, inp.reps, inp.preprocessing, inp.kae, out.png, out.pdf, log=log.info)
