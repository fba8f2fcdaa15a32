#!/usr/bin/env bash
# GPU checks in one go: CUDA tests, KAE throughput on the GPU and a Yin-Yang KAE study (about 7 min on
# one H200: 20 KAEs share the card). Needs results/yinyang/{base,reps} from a pipeline run.
#   OUT=/tmp/gpu bash bench/gpu_check.sh
# MNIST_BASE=1 adds the MNIST base-network study (needs $KAEPIPE_MNIST_ROOT, the MNIST IDX folder; its
# representations and topology run on the CPU and take several minutes per variant).
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
step() { echo; echo "=== $* ($(date +%T))"; }
step device
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
step CUDA tests
$PY -m pytest -q -p no:cacheprovider tests/unit/nn/test_kae.py tests/unit/test_linalg.py -k cuda -rs
step KAE throughput
$PY bench/bench_kae.py --device cuda --epochs 3
step Yin-Yang KAE variants, lambda_iso 1, 5 seeds
$PY bench/variants.py kae --device cuda --workers "${KAE_WORKERS:-10}" --out "$OUT/yinyang_kae_variants.csv" \
    --variant clip1 --variant noclip clip_grad_norm=null --variant kaiming init=kaiming \
    --variant kaiming_noclip init=kaiming clip_grad_norm=null ${KAE_VARIANTS:-}
[ "${MNIST_BASE:-0}" = 1 ] || { step done; exit 0; }
step MNIST base network: training length vs the layer beta_0 row
$PY bench/variants.py base --dataset mnist --config-set "mnist_root=$KAEPIPE_MNIST_ROOT" --device cuda \
    --workers 4 --threads 2 --results /tmp/gpu_check_work --out "$OUT/mnist_base_variants.csv" \
    --variant e8 --variant e30 epochs=30 --variant e100 epochs=100 --variant paper_steps lr=0.001 epochs=293 \
    --variant paper_steps_noclip lr=0.001 epochs=293 clip_grad_norm=null \
    ${BASE_VARIANTS:-}
step done
