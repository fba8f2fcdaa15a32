# The paper's figures (docs/method.md section 9) and diagnostics: results/figures/<name>_<dataset>.{png,pdf}.
# Every figure is drawn on the CPU with matplotlib's Agg backend; equal inputs give equal bytes. A figure
# shows the dataset's first base-network draw (base.seeds[0]): its inputs are that draw's files.
# Figures that need the topology or unlearning stage exist only when that stage's rules are defined,
# so include this file after the stages (the Snakefile does). Paths and input helpers: kaepipe.stages.paths.


rule figure_layers:
    """Figure 1: top-3 principal components of every base layer (q = 3 preprocessing), 2000 points."""
    input:
        reps=paper_reps,
    output:
        png=report(
            P.figure("layers", "png"),
            caption="../report/figure_layers.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"figure": "layers", "dataset": "{dataset}"},
        ),
        pdf=P.figure("layers", "pdf"),
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
        curve=first_draw(P.BASE_CURVE),
        losses=lambda w: kae_outputs(
            P.KAE_LOSSES, [w.dataset], [P.first_draw(config, w.dataset)]
        ),
    output:
        png=report(
            P.figure("training", "png"),
            caption="../report/figure_training.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"figure": "training", "dataset": "{dataset}"},
        ),
        pdf=P.figure("training", "pdf"),
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
        reps=paper_reps,
        preprocessing=first_draw(P.PREPROCESSING),
        kae=lambda w: P.main_kae_file(config, w.dataset),
    output:
        png=report(
            P.figure("path", "png"),
            caption="../report/figure_path.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"figure": "path", "dataset": "{dataset}"},
        ),
        pdf=P.figure("path", "pdf"),
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


rule figure_isometry:
    """Figure 2: 3-D PCA of x_L and of phi(x_L) for three lambda_iso, and the beta_0/beta_1 curves."""
    input:
        unpack(lambda w: P.isometry_inputs(config, w.dataset)),
        unpack(lambda w: P.reps_files(config, w.dataset)),
        preprocessing=first_draw(P.PREPROCESSING),
    output:
        png=report(
            P.figure("isometry", "png"),
            caption="../report/figure_isometry.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"figure": "isometry", "dataset": "{dataset}"},
        ),
        pdf=P.figure("isometry", "pdf"),
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
        unpack(lambda w: P.reps_files(config, w.dataset)),
        layers=first_draw(P.TOPOLOGY_LAYERS),
        iterates=lambda w: P.iterate_tables(config, w.dataset),
        kae=lambda w: P.main_kae_file(config, w.dataset),
        preprocessing=first_draw(P.PREPROCESSING),
    output:
        png=report(
            P.figure("topology", "png"),
            caption="../report/figure_topology.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"figure": "topology", "dataset": "{dataset}"},
        ),
        pdf=P.figure("topology", "pdf"),
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


FIGURES_EDITING = P.edited_datasets(config, DATASETS)

if FIGURES_EDITING:

    rule figure_editing:
        """Figure 4: 3-D PCA of the observables' outputs Z O before and Z O' after forgetting one class."""
        input:
            reps=paper_reps,
            preprocessing=first_draw(P.PREPROCESSING),
            kae=lambda w: P.main_kae_file(config, w.dataset),
            edited=lambda w: P.edited_file(config, w.dataset),
        output:
            png=report(
                P.figure("editing", "png"),
                caption="../report/figure_editing.rst",
                category="Figures",
                subcategory="{dataset}",
                labels={"figure": "editing", "dataset": "{dataset}"},
            ),
            pdf=P.figure("editing", "pdf"),
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
