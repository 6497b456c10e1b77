# Sourced by run_*_multi.sh: builds "${launch[@]}", the paddle.distributed.launch command for this machine, and $nproc,
# the number of processes it starts here.
#   USE_GPU=True (default): the GPUs of CUDA_VISIBLE_DEVICES (default 0,...,7), NCCL.
#   USE_GPU=False: NPROC CPU processes (default 2), gloo.
#   MASTER=ip:port NNODES=N: several nodes (run the script on each; NODE_RANK=i on node i fixes their order).
#   LOG_DIR: per-rank logs (default logs).
USE_GPU=${USE_GPU:-True}
launch=(python -m paddle.distributed.launch --log_dir "${LOG_DIR:-logs}")
case "$USE_GPU" in
    True|true|1)
        export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1,2,3,4,5,6,7}
        launch+=(--gpus "$CUDA_VISIBLE_DEVICES")
        nproc=$(( $(tr -cd , <<< "$CUDA_VISIBLE_DEVICES" | wc -c) + 1 )) ;;
    *)
        unset CUDA_VISIBLE_DEVICES  # launch counts the visible GPUs; the CPU run needs none
        nproc=${NPROC:-2}
        launch+=(--nproc_per_node "$nproc") ;;
esac
if [ -n "${MASTER:-}" ]; then
    launch+=(--master "$MASTER" --nnodes "${NNODES:-1}")
    if [ -n "${NODE_RANK:-}" ]; then  # node 0 hosts rank 0 (without it, nodes are numbered as they join)
        launch+=(--rank "$NODE_RANK")
    fi
fi
