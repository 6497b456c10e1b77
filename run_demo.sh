#!/usr/bin/env bash
# The whole system on a generated motion-only dataset: make the data (or reuse it), train a narrow SlowFast with the
# K400 code path (warmup + cosine LR, precise BN, validation, checkpoints, VisualDL), then 10x3-view eval.py and
# predict.py on the val split. CPU by default; the GPU when Paddle has CUDA.
#   bash run_demo.sh                    # reuses data/demo and continues an interrupted run in output/demo
#   bash run_demo.sh --fresh            # regenerates the data and starts over
#   bash run_demo.sh -o TRAIN.epoch=2   # extra -o overrides go to train.py, eval.py and predict.py
#   bash run_demo.sh --data DIR         # the same settings on your own motion dataset: DIR/train.txt, DIR/val.txt
#                                       # (Kinetics list format, paths relative to DIR) and DIR/classes.txt (optional);
#                                       # nothing in DIR is written; output in output/demo-<DIR's name>
# Environment: DEMO_DATA (data/demo), DEMO_OUT (output/demo), DEMO_DATA_ARGS (extra tools/data/make_demo_data.py flags),
# USE_GPU (auto), OMP_NUM_THREADS (the cores less one).
set -euo pipefail
cd "$(dirname "$0")"
DATA=${DEMO_DATA:-data/demo}
OUT=${DEMO_OUT:-output/demo}
# one compute thread per core the demo config's decoding worker (DATA.num_workers: 1) leaves free: on 2 cores, two
# compute threads beside the worker made each epoch ~1.3x as long (docs/RESULTS.md)
cores=$(nproc 2>/dev/null || echo 2)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores > 1 ? cores - 1 : 1 ))}
fresh=()
overrides=()
own_data=''
while (($#)); do
    case $1 in
        --fresh) fresh=(--fresh); shift ;;
        --data) own_data=${2:?--data needs a folder}; shift 2 ;;
        -o) overrides+=(-o "$2"); shift 2 ;;
        *) echo "usage: bash run_demo.sh [--fresh] [--data DIR] [-o SECTION.key=value ...]" >&2; exit 2 ;;
    esac
done
if [[ -n $own_data ]]; then
    for list in train.txt val.txt; do
        [[ -f $own_data/$list ]] || { echo "run_demo.sh: --data $own_data has no $list" >&2; exit 2; }
    done
    DATA=$own_data
    OUT=${DEMO_OUT:-output/demo-$(basename "$(cd "$own_data" && pwd)")}
fi
stopped() {
    echo; echo "interrupted: the data and every finished checkpoint are kept; run bash run_demo.sh again to continue"
    exit "$1"
}
trap 'stopped 130' INT
USE_GPU=${USE_GPU:-$(python -c 'import paddle; print(paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0)' 2>/dev/null)}
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

if [[ -n $own_data ]]; then
    step "1/4 your dataset in $DATA (not modified)"
else
    step "1/4 demo data in $DATA"
    # shellcheck disable=SC2086
    python tools/data/make_demo_data.py --out "$DATA" "${fresh[@]}" ${DEMO_DATA_ARGS:-}
fi
if ((${#fresh[@]})); then rm -rf "$OUT"; fi
DATA=$(cd "$DATA" && pwd)
# the class count from classes.txt (one name a line), else from the largest label in the lists
if [[ -f $DATA/classes.txt ]]; then
    label_map=$DATA/classes.txt
    num_classes=$(grep -c . "$label_map")
else
    label_map=''
    num_classes=$(python -c "import re, sys; print(1 + max(int(re.split(r'[,\s]+', line.strip())[-1]) \
for name in sys.argv[1:] for line in open(name) if line.strip()))" "$DATA/train.txt" "$DATA/val.txt")
fi
common=(--config configs/slowfast_demo.yaml --use_gpu "$USE_GPU" -o "MODEL.num_classes=$num_classes"
        -o "TRAIN.filelist=$DATA/train.txt" -o "VALID.filelist=$DATA/val.txt" -o "TEST.filelist=$DATA/val.txt"
        -o "DATA.label_map=$label_map" "${overrides[@]}")

step "2/4 training with $OMP_NUM_THREADS compute thread(s) (checkpoints in $OUT/checkpoints; an interrupted run continues from the last one)"
trained=0
python train.py "${common[@]}" --save_dir "$OUT/checkpoints" --resume True --use_visualdl True \
    --vd_logdir "$OUT/vdl" --log_interval 10 || trained=$?
# 75: train.py caught the signal itself and saved where it stopped; bash then runs no INT trap (the child did not
# die of the signal), so say it here
if ((trained == 75)); then stopped 75; elif ((trained)); then exit "$trained"; fi
weights=$(python -c "import sys; sys.path.insert(0, '.'); from checkpoint import find_resume_checkpoint; \
print(find_resume_checkpoint('$OUT/checkpoints'))" 2>/dev/null)

step "3/4 10x3-view evaluation of $weights on $DATA/val.txt"
python eval.py "${common[@]}" --weights "$weights" --save_path "$OUT/eval"

step "4/4 prediction of $DATA/val.txt"
predicted=0
python predict.py "${common[@]}" --weights "$weights" --filelist "$DATA/val.txt" --save_path "$OUT/predict" \
    || predicted=$?

top1=$(python -c "import json; print(json.load(open('$OUT/eval/eval_result.json'))['top1'])")
chance=$(python -c "print(round(1 / $num_classes, 3))")
cat <<DONE

== demo finished in $(( $(date +%s) - start )) s: multi-view top-1 on $DATA/val.txt = $top1 (chance $chance)
   checkpoints      $OUT/checkpoints (train.log beside them)
   curves           $OUT/vdl   ->  visualdl --logdir $OUT/vdl --host 127.0.0.1 --port 8040 --disable-telemetry
                                   then open http://127.0.0.1:8040
   evaluation       $OUT/eval/eval_result.json, confusion_matrix.png, video_scores.npy
   predictions      $OUT/predict/result.json
DONE
exit "$predicted"
