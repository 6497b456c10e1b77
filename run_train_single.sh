#!/usr/bin/env bash
# Train on one GPU (GPU 0 unless CUDA_VISIBLE_DEVICES says otherwise), or on the CPU with USE_GPU=False.
#   CONFIG=slowfast-single.yaml USE_GPU=True bash run_train_single.sh [extra train.py arguments, e.g. -o TRAIN.epoch=1]
set -euo pipefail
cd "$(dirname "$0")"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
CONFIG=${CONFIG:-slowfast-single.yaml}
USE_GPU=${USE_GPU:-True}
start=$(date +%s)
python train.py --config="$CONFIG" --use_gpu="$USE_GPU" --use_data_parallel=False "$@"
echo "1 process, $CONFIG: training took $(( ($(date +%s) - start) / 60 ))min $(( ($(date +%s) - start) % 60 ))s"
