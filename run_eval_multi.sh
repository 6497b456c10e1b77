#!/usr/bin/env bash
# Multi-crop evaluation over 8 GPUs (CUDA_VISIBLE_DEVICES honoured), or NPROC CPU processes with USE_GPU=False.
#   WEIGHTS=checkpoints/slowfast_epoch195 bash run_eval_multi.sh [extra eval.py arguments]
set -euo pipefail
cd "$(dirname "$0")"
source launch.sh
build_launch
"${launch[@]}" eval.py --config="${CONFIG:-slowfast.yaml}" --use_gpu="$USE_GPU" --use_data_parallel=True \
    --weights="${WEIGHTS:-checkpoints/slowfast_epoch195}" "$@"
