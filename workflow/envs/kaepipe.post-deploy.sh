#!/usr/bin/env bash
# Runs inside the freshly created rule environment (Snakemake's post-deploy hook): install kaepipe from this
# checkout (the folder two levels above this script), editable so that the rules always run this
# checkout's code, without touching the conda-provided dependencies.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python -m pip install --no-deps --no-build-isolation --editable "$repo"
