#!/usr/bin/env bash
# The whole system on a generated motion-only dataset: make the data (or reuse it), train a narrow SlowFast with the
# K400 code path (warmup + cosine LR, precise BN, validation, checkpoints, VisualDL), then 10x3-view eval.py and
# predict.py on the val split. CPU by default; the GPU when Paddle has CUDA.
#   bash run_demo.sh                    # reuses data/demo and continues an interrupted run in output/demo
#   bash run_demo.sh --fresh            # regenerates the data and starts over
#   bash run_demo.sh -o TRAIN.epoch=2   # extra -o overrides go to train.py, eval.py and predict.py
# Environment: DEMO_DATA (data/demo), DEMO_OUT (output/demo), DEMO_DATA_ARGS (extra tools/make_demo_data.py flags),
# USE_GPU (auto), OMP_NUM_THREADS (2).
set -euo pipefail
cd "$(dirname "$0")"
DATA=${DEMO_DATA:-data/demo}
OUT=${DEMO_OUT:-output/demo}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fresh=()
overrides=()
while (($#)); do
    case $1 in
        --fresh) fresh=(--fresh); shift ;;
        -o) overrides+=(-o "$2"); shift 2 ;;
        *) echo "usage: bash run_demo.sh [--fresh] [-o SECTION.key=value ...]" >&2; exit 2 ;;
    esac
done
trap 'echo; echo "interrupted: the data and every finished checkpoint are kept; run bash run_demo.sh again to continue"; exit 130' INT
USE_GPU=${USE_GPU:-$(python -c 'import paddle; print(paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0)' 2>/dev/null)}
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

step "1/4 demo data in $DATA"
# shellcheck disable=SC2086
python tools/make_demo_data.py --out "$DATA" "${fresh[@]}" ${DEMO_DATA_ARGS:-}
if ((${#fresh[@]})); then rm -rf "$OUT"; fi
DATA=$(cd "$DATA" && pwd)
common=(--config slowfast-demo.yaml --use_gpu "$USE_GPU" -o "TRAIN.filelist=$DATA/train.txt"
        -o "VALID.filelist=$DATA/val.txt" -o "TEST.filelist=$DATA/val.txt" -o "DATA.label_map=$DATA/classes.txt"
        "${overrides[@]}")

step "2/4 training (checkpoints in $OUT/checkpoints; an interrupted run continues from the last one)"
python train.py "${common[@]}" --save_dir "$OUT/checkpoints" --resume True --use_visualdl True \
    --vd_logdir "$OUT/vdl" --log_interval 10
weights=$(python -c "import sys; sys.path.insert(0, '.'); from checkpoint import find_resume_checkpoint; \
print(find_resume_checkpoint('$OUT/checkpoints'))" 2>/dev/null)

step "3/4 10x3-view evaluation of $weights on $DATA/val.txt"
python eval.py "${common[@]}" --weights "$weights" --save_path "$OUT/eval"

step "4/4 prediction of $DATA/val.txt"
predicted=0
python predict.py "${common[@]}" --weights "$weights" --filelist "$DATA/val.txt" --save_path "$OUT/predict" \
    || predicted=$?

top1=$(python -c "import json; print(json.load(open('$OUT/eval/eval_result.json'))['top1'])")
cat <<DONE

== demo finished in $(( $(date +%s) - start )) s: multi-view top-1 on $DATA/val.txt = $top1 (chance 0.25)
   checkpoints      $OUT/checkpoints (train.log beside them)
   curves           $OUT/vdl   ->  visualdl --logdir $OUT/vdl --host 127.0.0.1 --port 8040 --disable-telemetry
                                   then open http://127.0.0.1:8040
   evaluation       $OUT/eval/eval_result.json, confusion_matrix.png, video_scores.npy
   predictions      $OUT/predict/result.json
DONE
exit "$predicted"
