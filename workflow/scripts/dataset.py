"""Write one split of a dataset to Parquet."""
from kaepipe.data import get_source, write_split
from kaepipe.io import provenance
from kaepipe.runtime import rule_context

with rule_context(snakemake, uses_torch=False) as (log, _device):
    ds, split = snakemake.params.ds, snakemake.wildcards.split
    root = get_source(ds["source"]).prepare(ds.get("root"), snakemake.params.cache_dir, [split])
    if root is not None:
        log.info("reading %s from %s", ds["source"], root)
    df = write_split(ds, split, snakemake.output[0], root,
                     provenance({"dataset": ds["name"], "split": split, "spec": ds["splits"][split]}))
    log.info("%s/%s: %d samples, class counts %s", ds["name"], split, len(df),
             df["label"].value_counts().sort_index().tolist())
