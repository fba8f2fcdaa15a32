# Topology of representations and KAE iterates, and the isometry study (docs/method.md section 7).
# Per dataset and base-network draw: beta_0 of every base layer; per KAE at the main lambda_iso: beta_0
# of every decoded iterate; per KAE of the grid: Rips diagrams of phi(x_L) against x_L. Settings: the
# optional `topology` block of a dataset (defaults: the config schema). Networks run on the CPU.


rule topology_layers:
    """beta_0 at eps_layers (and the whole beta_0(eps) curve) of every preprocessed base layer."""
    input:
        reps=lambda w: P.topology_reps_path(config, w.dataset, w.draw),
        preprocessing=P.PREPROCESSING,
    output:
        table=P.TOPOLOGY_LAYERS,
        curves=P.TOPOLOGY_LAYER_CURVES,
    log:
        "results/logs/topology_layers/{dataset}_draw{draw}.log",
    benchmark:
        "results/benchmarks/topology_layers/{dataset}_draw{draw}.tsv"
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
        kae=P.KAE_MODEL,
        reps=lambda w: P.topology_reps_path(config, w.dataset, w.draw),
        preprocessing=P.PREPROCESSING,
    output:
        table=P.TOPOLOGY_ITERATES,
        curves=P.TOPOLOGY_ITERATE_CURVES,
    log:
        "results/logs/topology_iterates/{dataset}_draw{draw}_iso{lam}_seed{seed}.log",
    benchmark:
        "results/benchmarks/topology_iterates/{dataset}_draw{draw}_iso{lam}_seed{seed}.tsv"
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
        reps=lambda w: P.topology_reps_path(config, w.dataset, w.draw),
        preprocessing=P.PREPROCESSING,
    output:
        P.ISOMETRY_ORIGINAL,
    log:
        "results/logs/isometry_original/{dataset}_draw{draw}.log",
    benchmark:
        "results/benchmarks/isometry_original/{dataset}_draw{draw}.tsv"
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
    """phi(x_L) of the KAEs of one draw and lambda_iso (every seed) against x_L: diagrams, distances, Betti curves."""
    input:
        kae=lambda w: P.kae_paths(
            config, [w.dataset], P.KAE_MODEL, lambda_tags=[w.lam], only_draws=[w.draw]
        ),
        reps=lambda w: P.topology_reps_path(config, w.dataset, w.draw),
        preprocessing=P.PREPROCESSING,
        original=P.ISOMETRY_ORIGINAL,
    output:
        diagrams=P.ISOMETRY_DIAGRAMS,
        curves=P.ISOMETRY_CURVES,
        metrics=P.ISOMETRY_RESULTS,
    log:
        "results/logs/isometry/{dataset}_draw{draw}_iso{lam}.log",
    benchmark:
        "results/benchmarks/isometry/{dataset}_draw{draw}_iso{lam}.tsv"
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
    """The long beta_0 table (layers and KAE iterates) and its summary over draws and seeds."""
    input:
        layers=P.draw_paths(config, DATASETS, P.TOPOLOGY_LAYERS),
        iterates=P.kae_paths(config, DATASETS, P.TOPOLOGY_ITERATES, main_only=True),
    output:
        csv=P.table("topology.csv"),
        summary=P.table("topology_summary.csv"),
        md=P.table("topology_summary.md"),
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
    """The isometry table: mean (population std) over (draw, seed) pairs per dataset and lambda_iso."""
    input:
        P.kae_paths(config, DATASETS, P.ISOMETRY_RESULTS),
    output:
        csv=P.table("isometry.csv"),
        md=P.table("isometry.md"),
        long=P.table("isometry_long.csv"),
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
