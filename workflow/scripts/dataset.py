"""Write one split of a dataset to Parquet."""
from kaepipe.data import get_source, write_split
from kaepipe.io import provenance
from kaepipe.runtime import rule_context

with rule_context(snakemake, uses_torch=False) as (log, _device):
    ds, split = snakemake.params.ds, snakemake.wildcards.split
    # the files are the rule's inputs; a download happened in rule download_idx
    root = get_source(ds["source"]).prepare(ds.get("root"), snakemake.params.cache_dir, [split], download=False,
                                            ds=ds)
    if root is not None:
        log.info("reading %s from %s", ds["source"], root)
    prov = provenance({"dataset": ds["name"], "source": ds["source"], "root": root, "split": split,
                       "spec": ds["splits"][split]})
    df = write_split(ds, split, snakemake.output[0], root, {"dataset": ds["name"], "split": split, "provenance": prov})
    log.info("%s/%s: %d samples, class counts %s", ds["name"], split, len(df),
             df["label"].value_counts().sort_index().tolist())
