"""Download the four official IDX files of a source into the cache and check their MD5 sums."""
from pathlib import Path

from kaepipe.data import download_idx, get_source
from kaepipe.runtime import rule_context

with rule_context(snakemake, uses_torch=False) as (log, _device):
    folder = Path(snakemake.output[0]).parent
    download_idx(get_source(snakemake.wildcards.source), folder)
    log.info("%s: %s in %s", snakemake.wildcards.source, ", ".join(Path(f).name for f in snakemake.output), folder)
