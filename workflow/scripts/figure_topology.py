"""Figure 3: beta_0 of base layers and KAE iterates, and 3-D PCA of selected iterates."""
from kaepipe.runtime import rule_context
from kaepipe.stages.figures import run_topology_figure, use_cpu_threads

with rule_context(snakemake, uses_torch=False) as (log, _device):
    use_cpu_threads(snakemake.threads)
    inp, out = snakemake.input, snakemake.output
    run_topology_figure(snakemake.params.ds, inp.layers, list(inp.iterates), inp.kae,
                        {s: inp[f"reps_{s}"] for s in ("train", "test")}, inp.preprocessing,
                        out.png, out.pdf, log=log.info)
