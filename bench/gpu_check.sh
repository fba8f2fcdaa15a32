#!/usr/bin/env bash
# GPU checks in one go (about 6 min on one H200): the CUDA tests, the fused isometry term on CUDA, the Yin-Yang
# grid (30 KAEs, paper settings) trained as one pack, and an MNIST-paper-shaped pack of five KAEs.
#   OUT=/tmp/gpu bash bench/gpu_check.sh [RESULTS]
# RESULTS holds yinyang/draw0/reps/{train.pt,preprocessing.safetensors} of a pipeline run (default: results).
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu_check}
RESULTS=${1:-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
step() { echo; echo "=== $* ($(date +%T))"; }
step device
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, numba; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numba', numba.__version__)"
step CUDA tests
$PY -m pytest -q -p no:cacheprovider tests/unit/nn/test_kae.py tests/unit/test_linalg.py tests/unit/nn/test_isometry.py tests/unit/nn/test_ensemble.py \
    -k cuda -rs
step isometry term on CUDA: Yin-Yang shape, 60 calls in one, and MNIST shape
$PY bench/bench_isometry.py --device cuda --members 60 --repeats 10
$PY bench/bench_isometry.py --device cuda --n 512 --q 784 --p 800 --members 10 --repeats 5
step Yin-Yang grid, paper settings: 30 KAEs x 1000 epochs as one pack
$PY bench/bench_pack.py --results "$RESULTS" --dataset yinyang --pack grid --device cuda --out "$OUT/yy_grid" \
    | grep -v "^20..-\|epoch "
step MNIST-paper shape, five KAEs together vs one alone
$PY bench/bench_ensemble.py --shape mnist --members 5 --device cuda --compare-single --seconds 70 --epochs 1 \
    --json "$OUT/mnist5.json"
step done
