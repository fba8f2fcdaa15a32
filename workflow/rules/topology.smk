# Topology of representations and KAE iterates, and the isometry study (METHOD.md section 7).
# Per dataset: beta_0 of every base layer; per KAE at the main lambda_iso: beta_0 of every decoded
# iterate; per KAE of the grid: Rips diagrams of phi(x_L) against x_L. Settings: the optional
# `topology` block of a dataset (defaults in kaepipe.topology_stage.DEFAULTS). Networks run on the CPU.
from kaepipe.stages.paths import kae_paths, topology_reps_path


rule topology_layers:
    """beta_0 at eps_layers (and the whole beta_0(eps) curve) of every preprocessed base layer."""
    input:
        reps=lambda w: topology_reps_path(config, w.dataset),
        preprocessing="results/{dataset}/reps/preprocessing.safetensors",
    output:
        table="results/{dataset}/topology/layers.parquet",
        curves="results/{dataset}/topology/layers_curves.parquet",
    log:
        "results/logs/topology_layers/{dataset}.log",
    benchmark:
        "results/benchmarks/topology_layers/{dataset}.tsv"
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        ds=ds_subset("base", "topology"),
    script:
        "../scripts/topology_layers.py"


rule topology_iterates:
    """beta_0 at eps_iterates (and the whole curve) of every decoded iterate t = 0..k of one KAE."""
    input:
        kae="results/{dataset}/kae/iso{lam}/seed{seed}/model.safetensors",
        reps=lambda w: topology_reps_path(config, w.dataset),
        preprocessing="results/{dataset}/reps/preprocessing.safetensors",
    output:
        table="results/{dataset}/topology/iterates/iso{lam}/seed{seed}.parquet",
        curves="results/{dataset}/topology/iterates/iso{lam}/seed{seed}_curves.parquet",
    log:
        "results/logs/topology_iterates/{dataset}_iso{lam}_seed{seed}.log",
    benchmark:
        "results/benchmarks/topology_iterates/{dataset}_iso{lam}_seed{seed}.tsv"
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        ds=ds_subset("kae", "topology"),
    script:
        "../scripts/topology_iterates.py"


rule isometry_original:
    """Rips diagram (H0 exact, H1 up to the threshold) of the preprocessed last layer of the isometry points."""
    input:
        reps=lambda w: topology_reps_path(config, w.dataset),
        preprocessing="results/{dataset}/reps/preprocessing.safetensors",
    output:
        "results/{dataset}/topology/isometry/original_diagram.parquet",
    log:
        "results/logs/isometry_original/{dataset}.log",
    benchmark:
        "results/benchmarks/isometry_original/{dataset}.tsv"
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        ds=ds_subset("topology"),
    script:
        "../scripts/isometry_original.py"


rule isometry:
    """phi(x_L) of the KAEs of one lambda_iso (every seed) against x_L: diagrams, distances, Betti curves."""
    input:
        kae=lambda w: kae_paths(
            config,
            [w.dataset],
            "results/{d}/kae/iso{lam}/seed{seed}/model.safetensors",
            lambda_tags=[w.lam],
        ),
        reps=lambda w: topology_reps_path(config, w.dataset),
        preprocessing="results/{dataset}/reps/preprocessing.safetensors",
        original="results/{dataset}/topology/isometry/original_diagram.parquet",
    output:
        diagrams="results/{dataset}/topology/isometry/iso{lam}/diagrams.parquet",
        curves="results/{dataset}/topology/isometry/iso{lam}/betti_curves.parquet",
        metrics="results/{dataset}/topology/isometry/iso{lam}/metrics.json",
    log:
        "results/logs/isometry/{dataset}_iso{lam}.log",
    benchmark:
        "results/benchmarks/isometry/{dataset}_iso{lam}.tsv"
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        ds=ds_subset("kae", "topology"),
    script:
        "../scripts/isometry.py"


rule topology_table:
    """The long beta_0 table (layers and KAE iterates) and its summary over seeds."""
    input:
        layers=expand("results/{dataset}/topology/layers.parquet", dataset=DATASETS),
        iterates=kae_paths(
            config,
            DATASETS,
            "results/{d}/topology/iterates/iso{lam}/seed{seed}.parquet",
            main_only=True,
        ),
    output:
        csv="results/tables/topology.csv",
        summary="results/tables/topology_summary.csv",
        md="results/tables/topology_summary.md",
    log:
        "results/logs/tables/topology.log",
    benchmark:
        "results/benchmarks/tables/topology.tsv"
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/topology_table.py"


rule isometry_table:
    """The isometry table: mean (population std) over seeds per dataset and lambda_iso."""
    input:
        kae_paths(
            config, DATASETS, "results/{d}/topology/isometry/iso{lam}/metrics.json"
        ),
    output:
        csv="results/tables/isometry.csv",
        md="results/tables/isometry.md",
        long="results/tables/isometry_long.csv",
    log:
        "results/logs/tables/isometry.log",
    benchmark:
        "results/benchmarks/tables/isometry.tsv"
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/isometry_table.py"


FINAL_TARGETS.extend(["results/tables/topology.csv", "results/tables/isometry.csv"])
