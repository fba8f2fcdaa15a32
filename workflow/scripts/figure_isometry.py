"""Figure 2: the isometry study (3-D PCA of x_L and phi(x_L), Betti curves)."""
from kaepipe.config import lambda_tag
from kaepipe.runtime import rule_context
from kaepipe.stages.figures import run_isometry_figure, use_cpu_threads

with rule_context(snakemake, uses_torch=False) as (log, _device):
    use_cpu_threads(snakemake.threads)
    inp, out = snakemake.input, snakemake.output
    lambdas = [float(x) for x in snakemake.params.lambdas]
    run_isometry_figure(snakemake.params.ds, {s: inp[f"reps_{s}"] for s in ("train", "test")}, inp.preprocessing,
                        {lam: inp[f"kae_{lambda_tag(lam)}"] for lam in lambdas},
                        {lam: inp[f"curves_{lambda_tag(lam)}"] for lam in lambdas}, out.png, out.pdf, log=log.info)
