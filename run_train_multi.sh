#!/usr/bin/env bash
# Data-parallel training: 8 GPUs by default (CUDA_VISIBLE_DEVICES honoured), or NPROC CPU processes (gloo) with
# USE_GPU=False. Per-rank logs go to $LOG_DIR/workerlog.N. Several nodes: MASTER=ip:port NNODES=N NODE_RANK=i on each.
#   bash run_train_multi.sh [extra train.py arguments]
#   USE_GPU=False NPROC=2 bash run_train_multi.sh -o TRAIN.epoch=1
# SIGTERM / SIGINT / SIGUSR1 stop it at a checkpoint with exit status 75 (launch.sh); then add --resume.
set -euo pipefail
cd "$(dirname "$0")"
CONFIG=${CONFIG:-slowfast.yaml}
source launch.sh
build_launch
start=$(date +%s)
status=0
run_stoppable "$nproc" "${launch[@]}" train.py --config="$CONFIG" --use_gpu="$USE_GPU" --use_data_parallel=True "$@" \
    || status=$?
echo "$CONFIG: training took $(( ($(date +%s) - start) / 60 ))min $(( ($(date +%s) - start) % 60 ))s, exit status $status"
exit "$status"
