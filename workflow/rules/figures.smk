# The paper's figures (METHOD.md section 9) and diagnostics: results/figures/<name>_<dataset>.{png,pdf}.
# Every figure is drawn on the CPU with matplotlib's Agg backend; equal inputs give equal bytes.
# Figures that need the topology or unlearning stage exist only when that stage's rules are defined,
# so include this file after the stages (the Snakefile does). Input helpers: kaepipe.figures.
from kaepipe.stages import paths as P

FIGURES_TOPOLOGY = all(
    rules.has(r) for r in ("topology_layers", "topology_iterates", "isometry")
)


rule figure_layers:
    """Figure 1: top-3 principal components of every base layer (q = 3 preprocessing), 2000 points."""
    input:
        reps=lambda w: f"results/{w.dataset}/reps/{P.paper_split(config, w.dataset)}.pt",
    output:
        png=report(
            "results/figures/layers_{dataset}.png",
            caption="../report/figure_layers.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"figure": "layers", "dataset": "{dataset}"},
        ),
        pdf="results/figures/layers_{dataset}.pdf",
    log:
        "results/logs/figures/layers_{dataset}.log",
    benchmark:
        "results/benchmarks/figures/layers_{dataset}.tsv"
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        ds=ds_subset(),
    script:
        "../scripts/figure_layers.py"


rule figure_training:
    """Training curves: base network loss/accuracy, KAE total loss per lambda_iso and loss terms."""
    input:
        curve="results/{dataset}/base/curve.parquet",
        losses=lambda w: kae_outputs("losses.parquet", [w.dataset]),
    output:
        png=report(
            "results/figures/training_{dataset}.png",
            caption="../report/figure_training.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"figure": "training", "dataset": "{dataset}"},
        ),
        pdf="results/figures/training_{dataset}.pdf",
    log:
        "results/logs/figures/training_{dataset}.log",
    benchmark:
        "results/benchmarks/figures/training_{dataset}.tsv"
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        ds=ds_subset("kae"),
    script:
        "../scripts/figure_training.py"


rule figure_path:
    """The decoded KAE path psi(K^t phi(x0)) of a few samples next to the network's layers."""
    input:
        reps=lambda w: f"results/{w.dataset}/reps/{P.paper_split(config, w.dataset)}.pt",
        preprocessing="results/{dataset}/reps/preprocessing.safetensors",
        kae=lambda w: P.main_kae_file(config, w.dataset),
    output:
        png=report(
            "results/figures/path_{dataset}.png",
            caption="../report/figure_path.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"figure": "path", "dataset": "{dataset}"},
        ),
        pdf="results/figures/path_{dataset}.pdf",
    log:
        "results/logs/figures/path_{dataset}.log",
    benchmark:
        "results/benchmarks/figures/path_{dataset}.tsv"
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        ds=ds_subset(),
    script:
        "../scripts/figure_path.py"


FINAL_TARGETS.extend(P.figure_files(["layers", "training", "path"], DATASETS))


if FIGURES_TOPOLOGY:

    rule figure_isometry:
        """Figure 2: 3-D PCA of x_L and of phi(x_L) for three lambda_iso, and the beta_0/beta_1 curves."""
        input:
            unpack(lambda w: P.isometry_inputs(config, w.dataset)),
            unpack(lambda w: P.reps_files(w.dataset)),
            preprocessing="results/{dataset}/reps/preprocessing.safetensors",
        output:
            png=report(
                "results/figures/isometry_{dataset}.png",
                caption="../report/figure_isometry.rst",
                category="Figures",
                subcategory="{dataset}",
                labels={"figure": "isometry", "dataset": "{dataset}"},
            ),
            pdf="results/figures/isometry_{dataset}.pdf",
        log:
            "results/logs/figures/isometry_{dataset}.log",
        benchmark:
            "results/benchmarks/figures/isometry_{dataset}.tsv"
        localrule: True
        conda:
            "../envs/kaepipe.yaml"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        params:
            ds=ds_subset("kae", "topology"),
            lambdas=lambda w: P.isometry_lambdas(config, w.dataset),
        script:
            "../scripts/figure_isometry.py"

    rule figure_topology:
        """Figure 3: beta_0 per base layer and per KAE iterate (mean, min-max over seeds), iterates in 3-D PCA."""
        input:
            unpack(lambda w: P.reps_files(w.dataset)),
            layers="results/{dataset}/topology/layers.parquet",
            iterates=lambda w: P.iterate_tables(config, w.dataset),
            kae=lambda w: P.main_kae_file(config, w.dataset),
            preprocessing="results/{dataset}/reps/preprocessing.safetensors",
        output:
            png=report(
                "results/figures/topology_{dataset}.png",
                caption="../report/figure_topology.rst",
                category="Figures",
                subcategory="{dataset}",
                labels={"figure": "topology", "dataset": "{dataset}"},
            ),
            pdf="results/figures/topology_{dataset}.pdf",
        log:
            "results/logs/figures/topology_{dataset}.log",
        benchmark:
            "results/benchmarks/figures/topology_{dataset}.tsv"
        localrule: True
        conda:
            "../envs/kaepipe.yaml"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        params:
            ds=ds_subset("kae", "topology", "splits"),
        script:
            "../scripts/figure_topology.py"

    FINAL_TARGETS.extend(P.figure_files(["isometry", "topology"], DATASETS))


FIGURES_EDITING = (
    P.edited_datasets(config, DATASETS) if rules.has("unlearn_edit") else []
)

if FIGURES_EDITING:

    rule figure_editing:
        """Figure 4: 3-D PCA of the observables' outputs Z O before and Z O' after forgetting one class."""
        input:
            reps=lambda w: f"results/{w.dataset}/reps/{P.paper_split(config, w.dataset)}.pt",
            preprocessing="results/{dataset}/reps/preprocessing.safetensors",
            kae=lambda w: P.main_kae_file(config, w.dataset),
            edited=lambda w: P.edited_file(config, w.dataset),
        output:
            png=report(
                "results/figures/editing_{dataset}.png",
                caption="../report/figure_editing.rst",
                category="Figures",
                subcategory="{dataset}",
                labels={"figure": "editing", "dataset": "{dataset}"},
            ),
            pdf="results/figures/editing_{dataset}.pdf",
        log:
            "results/logs/figures/editing_{dataset}.log",
        benchmark:
            "results/benchmarks/figures/editing_{dataset}.tsv"
        localrule: True
        conda:
            "../envs/kaepipe.yaml"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        params:
            ds=ds_subset(),
            target=lambda w: P.editing_target(config, w.dataset),
        script:
            "../scripts/figure_editing.py"

    FINAL_TARGETS.extend(P.figure_files(["editing"], FIGURES_EDITING))
