#!/usr/bin/env bash
# Multi-crop evaluation on one GPU (or the CPU with USE_GPU=False).
#   WEIGHTS=checkpoints/slowfast_epoch195 CONFIG=slowfast-single.yaml bash run_eval_single.sh [extra eval.py arguments]
set -euo pipefail
cd "$(dirname "$0")"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
python eval.py --config="${CONFIG:-slowfast-single.yaml}" --use_gpu="${USE_GPU:-True}" --use_data_parallel=False \
    --weights="${WEIGHTS:-checkpoints/slowfast_epoch195}" "$@"
