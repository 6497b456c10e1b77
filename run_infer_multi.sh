#!/usr/bin/env bash
# Predict over 8 GPUs (CUDA_VISIBLE_DEVICES honoured), or NPROC CPU processes with USE_GPU=False; same result.json.
#   WEIGHTS=checkpoints/slowfast_epoch195 bash run_infer_multi.sh [extra predict.py arguments]
set -euo pipefail
cd "$(dirname "$0")"
source launch.sh
build_launch
"${launch[@]}" predict.py --config="${CONFIG:-slowfast.yaml}" --use_gpu="$USE_GPU" --use_data_parallel=True \
    --weights="${WEIGHTS:-checkpoints/slowfast_epoch195}" "$@"
