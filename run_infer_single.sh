#!/usr/bin/env bash
# Predict INFER.filelist (or --video PATH ...) on one GPU (or the CPU with USE_GPU=False) into result.json.
#   WEIGHTS=checkpoints/slowfast_epoch195 bash run_infer_single.sh [extra predict.py arguments]
set -euo pipefail
cd "$(dirname "$0")"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
python predict.py --config="${CONFIG:-slowfast-single.yaml}" --use_gpu="${USE_GPU:-True}" --use_data_parallel=False \
    --weights="${WEIGHTS:-checkpoints/slowfast_epoch195}" "$@"
