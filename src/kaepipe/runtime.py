"""Glue for workflow scripts: logging to the rule's log file, threads and device from the rule."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kaepipe.io import remove_stale_temporaries
from kaepipe.nn.train import configure_torch


@contextlib.contextmanager
def rule_context(smk: Any, uses_torch: bool = True) -> Iterator[tuple[logging.Logger, Any]]:
    """Inside a Snakemake `script:`: log to the rule's log, set torch threads and pick the device, and
    remove the temporary files that a killed earlier run of the job left beside its outputs.

    Rules that run no network pass `uses_torch=False` and get `None` as device (torch is not imported).
    """
    log_path = Path(smk.log[0]) if len(smk.log) else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    logger = logging.getLogger(f"kaepipe.{smk.rule}")
    device = None
    if uses_torch:

        device = configure_torch(smk.threads, smk.config.get("device", "auto"))
    logger.info("rule %s, wildcards %s, %d thread(s), device %s", smk.rule, dict(smk.wildcards),
                smk.threads, device)
    for tmp in remove_stale_temporaries([str(f) for f in smk.output]):  # left by an earlier run of this job, killed
        logger.info("removed %s, left by a killed writer", tmp)
    try:
        yield logger, device
    except Exception:
        logger.exception("rule %s failed", smk.rule)
        raise
