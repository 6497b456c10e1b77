#!/usr/bin/env bash
# Train on one GPU (GPU 0 unless CUDA_VISIBLE_DEVICES says otherwise), or on the CPU with USE_GPU=False.
#   CONFIG=slowfast-single.yaml USE_GPU=True bash run_train_single.sh [extra train.py arguments, e.g. -o TRAIN.epoch=1]
# SIGTERM / SIGINT / SIGUSR1 stop it at a checkpoint with exit status 75 (launch.sh); then add --resume.
set -euo pipefail
cd "$(dirname "$0")"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
CONFIG=${CONFIG:-slowfast-single.yaml}
USE_GPU=${USE_GPU:-True}
source launch.sh
start=$(date +%s)
status=0
run_stoppable 1 python train.py --config="$CONFIG" --use_gpu="$USE_GPU" --use_data_parallel=False "$@" || status=$?
echo "1 process, $CONFIG: training took $(( ($(date +%s) - start) / 60 ))min $(( ($(date +%s) - start) % 60 ))s," \
    "exit status $status"
exit "$status"
