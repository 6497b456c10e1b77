#!/usr/bin/env bash
# Data-parallel training: 8 GPUs by default (CUDA_VISIBLE_DEVICES honoured), or NPROC CPU processes (gloo) with
# USE_GPU=False. Per-rank logs go to $LOG_DIR/workerlog.N.
#   bash run_train_multi.sh [extra train.py arguments]
#   USE_GPU=False NPROC=2 bash run_train_multi.sh -o TRAIN.epoch=1
#   Multi-node: run on every node with MASTER=ip:port NNODES=N (paddle.distributed.launch --master/--nnodes).
set -euo pipefail
cd "$(dirname "$0")"
CONFIG=${CONFIG:-slowfast.yaml}
USE_GPU=${USE_GPU:-True}
LOG_DIR=${LOG_DIR:-logs}
launch=(python -m paddle.distributed.launch --log_dir "$LOG_DIR")
if [ "$USE_GPU" = "True" ] || [ "$USE_GPU" = "true" ] || [ "$USE_GPU" = "1" ]; then
    export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1,2,3,4,5,6,7}
    launch+=(--gpus "$CUDA_VISIBLE_DEVICES")
else
    unset CUDA_VISIBLE_DEVICES  # launch counts the visible GPUs; the CPU run needs none
    launch+=(--nproc_per_node "${NPROC:-2}")
fi
if [ -n "${MASTER:-}" ]; then
    launch+=(--master "$MASTER" --nnodes "${NNODES:-1}")
fi
start=$(date +%s)
"${launch[@]}" train.py --config="$CONFIG" --use_gpu="$USE_GPU" --use_data_parallel=True "$@"
echo "$CONFIG: training took $(( ($(date +%s) - start) / 60 ))min $(( ($(date +%s) - start) % 60 ))s"
