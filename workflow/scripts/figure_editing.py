"""Figure 4: the outputs Z O before and Z O' after the edit that forgets one class."""
from kaepipe.runtime import rule_context
from kaepipe.stages.figures import run_editing_figure, use_cpu_threads

with rule_context(snakemake, uses_torch=False) as (log, _device):
    use_cpu_threads(snakemake.threads)
    inp, out = snakemake.input, snakemake.output
    run_editing_figure(snakemake.params.ds, inp.reps, inp.preprocessing, inp.kae, inp.edited,
                       int(snakemake.params.target), out.png, out.pdf, log=log.info)
