# Sourced by the run_*.sh scripts, not run itself.
#
# build_launch: sets "${launch[@]}", the paddle.distributed.launch command for this machine, and $nproc, the number of
# processes it starts here (run_*_multi.sh).
#   USE_GPU=True (default): the GPUs of CUDA_VISIBLE_DEVICES (default 0,...,7), NCCL.
#   USE_GPU=False: NPROC CPU processes (default 2), gloo.
#   MASTER=ip:port NNODES=N: several nodes (run the script on each; NODE_RANK=i on node i fixes their order).
#   LOG_DIR: per-rank logs (default logs).
build_launch() {
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
}

# run_stoppable N COMMAND... (run_train_*.sh): runs a training command that starts N training processes on
# this machine so that a stop request reaches it and its exit status says what happened.
#   - SIGTERM, SIGINT or SIGUSR1 sent to this script (Kubernetes signals PID 1 only, Slurm's --signal=B:USR1 the batch
#     shell only) is passed on to COMMAND as SIGTERM: train.py finishes its step, writes a checkpoint and exits 75
#     (paddle.distributed.launch passes SIGTERM on to its ranks and waits up to 30 s for them).
#   - The status is that of the N training processes when they all ended with the same one (75: stopped at a
#     checkpoint; 0: done), even though paddle.distributed.launch exits with the signal's number when it was
#     signalled itself (Slurm and Ctrl-C signal every process): each process appends its exit status to
#     $SLOWFAST_STATUS_FILE (errors.exit_on_user_error). When they differ, the first input error's (2-8) if a rank
#     had one (the others then fail or are stopped), else the launcher's.
#   until bash run_train_multi.sh --resume; [ $? -ne 75 ]; do :; done   # a restart loop
run_stoppable() {
    local expected=$1 statuses status=0 child
    shift
    statuses=$(mktemp)
    SLOWFAST_STATUS_FILE=$statuses "$@" &
    child=$!
    trap 'kill -TERM "$child" 2> /dev/null || true' TERM INT USR1
    # Poll rather than wait for COMMAND alone: paddle.distributed.launch can outlive its ranks for good (a second stop
    # signal during its shutdown exits its main thread without stopping the KV server thread of the node that hosts
    # it), so once every training process has ended it gets $SLOWFAST_LAUNCH_GRACE seconds (30), then SIGKILL.
    local ended='' grace=${SLOWFAST_LAUNCH_GRACE:-30}
    while kill -0 "$child" 2> /dev/null; do
        if [ -z "$ended" ] && [ "$(wc -l < "$statuses")" -ge "$expected" ]; then
            ended=$SECONDS
        elif [ -n "$ended" ] && (( SECONDS - ended > grace )); then
            echo "run_stoppable: the $expected training processes ended $((SECONDS - ended)) s ago and $1 is still" \
                 "running: killing it" >&2
            kill -KILL "$child" 2> /dev/null || true
        fi
        sleep 1 & wait $! || true  # a trapped signal interrupts this wait at once
    done
    wait "$child" || status=$?
    trap - TERM INT USR1
    if [ "$(wc -l < "$statuses")" -eq "$expected" ] && [ "$(sort -u "$statuses" | wc -l)" -eq 1 ]; then
        status=$(head -n 1 "$statuses")
    elif user_error=$(grep -m 1 -x '[2-8]' "$statuses"); then
        status=$user_error  # the first rank's input error (errors.py), which the other ranks' failures followed
    fi
    rm -f "$statuses"
    return "$status"
}
