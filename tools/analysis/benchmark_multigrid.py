"""Time to accuracy with and without multigrid training, measured side by side: the demo network
(configs/slowfast_demo.yaml) trained on one demo set by train.py, once per variant, one after the other on this machine,
each to the end of its schedule, then scored by eval.py (10 x 3 views). Reports the training wall time, epochs,
iterations and multi-view top-1 of each variant and the time ratio to the plain recipe.

    python tools/analysis/benchmark_multigrid.py --out output/bench_multigrid --json multigrid.json
    python tools/analysis/benchmark_multigrid.py --step_costs      # what one iteration of each stage's shape costs here

Variants (``--variants``):
  plain      configs/slowfast_demo.yaml as shipped: 25 epochs, warmup + cosine
  steps      the same 25 epochs with the step LR multigrid cuts its stages from (the LR policy alone)
  multigrid  that step recipe with the long and short cycles (MULTIGRID section below): 25 x epoch_factor epochs
  long_cycle the long cycle alone
Only the wall time of train.py counts (its start-up, training, precise BN and one validation at the end); the demo
data is made once, before. ``-o`` overrides apply to every variant: the figures in docs/BENCHMARKS.md train at
64-pixel crops of the demo videos (``--crop``, default 64), where the network's compute, not decoding, dominates a step.
"""
import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tools', 'data'))  # make_demo_data

from bench_common import machine_info, report  # noqa: E402  (beside this file)
from config_utils import setup_logging  # noqa: E402

logger = logging.getLogger('benchmark_multigrid')

# The demo recipe's steps for the step-LR variants: 0.1 x at epochs 15 and 21 of 25 (PaddleVideo's 94 / 154 of
# 196 in proportion, then a shorter last step).
STEPS = ['TRAIN.lr_policy=steps', 'TRAIN.lr_steps=[0, 15, 21]']
# The demo clip is 8 frames of 32 pixels with alpha 4: a stage may halve the frames (4, slow pathway 1 frame), not
# quarter them. PaddleVideo's crop factors; the batch grows as the clip shrinks (x4, x2, x1).
MULTIGRID = STEPS + ['MULTIGRID.long_cycle=True', 'MULTIGRID.short_cycle=True',
                     'MULTIGRID.long_cycle_factors=[[0.5, 0.7071], [0.5, 1], [1, 1]]', 'MULTIGRID.bn_base_size=8']
VARIANTS = {'plain': [], 'steps': STEPS, 'multigrid': MULTIGRID,
            'long_cycle': [o for o in MULTIGRID if o != 'MULTIGRID.short_cycle=True']}


def run(command: List[str], log_path: str) -> float:
    """Run ``command`` (its output to ``log_path``); its wall time in seconds. Exits on failure, naming the log."""
    start = time.perf_counter()
    with open(log_path, 'w') as log:
        status = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if status:
        sys.exit(f'{" ".join(command[:3])} ... failed with status {status}: see {log_path}')
    return time.perf_counter() - start


def crop_overrides(crop: int) -> List[str]:
    """The demo recipe at ``crop``-pixel crops: short sides of crop..1.25 crop in training, crop in tests."""
    if crop == 32:
        return []
    return [f'MODEL.crop_size={crop}', f'TRAIN.target_size={crop}', f'TRAIN.min_size={crop}',
            f'TRAIN.max_size={crop * 5 // 4}', f'VALID.target_size={crop}', f'VALID.min_size={crop}',
            f'VALID.max_size={crop}', f'TEST.target_size={crop}', f'INFER.target_size={crop}']


def bench_variant(name: str, args, data: str) -> Dict:
    folder = os.path.join(args.out, name)
    os.makedirs(folder, exist_ok=True)
    flags = ['--config', os.path.join(ROOT, 'configs', 'slowfast_demo.yaml'), '--use_gpu', 'False', '-o',
             'MODEL.num_classes=4',
             '-o', f'DATA.label_map={data}/classes.txt', '-o', f'TRAIN.filelist={data}/train.txt', '-o',
             f'VALID.filelist={data}/val.txt', '-o', f'TEST.filelist={data}/val.txt']
    flags += [a for o in crop_overrides(args.crop) + VARIANTS[name] + args.override for a in ('-o', o)]
    logger.info('%s: training (%s)', name,
                ' '.join(VARIANTS[name] + args.override) or 'configs/slowfast_demo.yaml as is')
    seconds = run([sys.executable, 'train.py', *flags, '--save_dir', os.path.join(folder, 'checkpoints'),
                   '--log_interval', '100', '--valid_interval', '100000', '--seed', str(args.seed)],
                  os.path.join(folder, 'train.log'))
    log = open(os.path.join(folder, 'train.log')).read()
    epochs = len(re.findall(r'\[Epoch \d+ end\]', log))
    iterations = sum(int(n) for n in re.findall(r'\[Epoch \d+, iter (\d+)/\1\]', log))
    weights = os.path.join(folder, 'checkpoints', f'slowfast_epoch{epochs - 1}')
    run([sys.executable, 'eval.py', *flags, '--weights', weights, '--save_path', os.path.join(folder, 'eval')],
        os.path.join(folder, 'eval.log'))
    top1 = json.load(open(os.path.join(folder, 'eval', 'eval_result.json')))['top1']
    row = dict(variant=name, seconds=round(seconds, 1), epochs=epochs, iterations=iterations, top1=top1,
               overrides=VARIANTS[name] + args.override)
    logger.info('%s: %.0f s, %d epochs, %d iterations, 10x3-view top-1 %.3f', name, seconds, epochs, iterations, top1)
    return row


def step_costs(args) -> List[Dict]:
    """Seconds per training iteration (forward, loss, backward, SGD step; random clips; median of ``--repeats``
    rounds over all shapes after a warm-up round) at the recipe's shape and at each (frames, batch, crop) the
    multigrid variant trains, with and without its BN sub-batches: multigrid assumes they all cost about the same."""
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from config_utils import parse_config
    from distributed import tune_cpu_blas
    from model import build_model
    from model_utils import set_bn_splits
    from multigrid import bn_splits, stage_batches, training_plan

    tune_cpu_blas()  # as train.py on a CPU
    paddle.set_device('cpu')
    cfg = parse_config(os.path.join(ROOT, 'configs', 'slowfast_demo.yaml'),
                       crop_overrides(args.crop) + MULTIGRID + args.override)
    paddle.seed(0)
    model = build_model(cfg)
    model.train()
    model.head.global_pool_in_training = True
    optimizer = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=model.parameters())
    shapes = {(stage.frames, batch, crop) for stage in training_plan(cfg).stages
              for batch, crop in stage_batches(cfg, stage, cfg.TRAIN.batch_size)}
    shapes = sorted(shapes, key=lambda s: (-s[0] * s[2] ** 2, s[1]))  # the recipe's first
    cases = [(frames, batch, crop, splits) for frames, batch, crop in shapes
             for splits in sorted({1, bn_splits(batch, cfg.MULTIGRID.bn_base_size)})]
    seconds = {case: [] for case in cases}
    for _ in range(args.repeats + 1):  # rounds over every shape, so the machine's drift touches them alike
        for frames, batch, crop, splits in cases:
            set_bn_splits(model, splits)
            clips = [paddle.randn([batch, 3, frames // cfg.MODEL.alpha, crop, crop]),
                     paddle.randn([batch, 3, frames, crop, crop])]
            labels = paddle.randint(0, cfg.MODEL.num_classes, [batch])
            start = time.perf_counter()
            F.cross_entropy(model(clips), labels).backward()
            optimizer.step()
            optimizer.clear_grad()
            seconds[frames, batch, crop, splits].append(time.perf_counter() - start)
    rows = []
    for (frames, batch, crop, splits), times in seconds.items():
        rows.append(dict(frames=frames, batch=batch, crop=crop, bn_splits=splits,
                         pixels=batch * frames * crop * crop, seconds=float(np.median(times[1:]))))  # round 1: warm-up
        logger.info('%d clips of %d x %d px, %d BN sub-batches: %.3f s', batch, frames, crop, splits,
                    rows[-1]['seconds'])
    return rows


def step_table(rows: List[Dict]) -> str:
    base = rows[0]
    lines = ['| clips x frames x crop | BN sub-batches | pixels vs recipe | s per iteration | vs recipe |',
             '|---|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['batch']} x {r['frames']} x {r['crop']}² | {r['bn_splits']} | "
                     f"{r['pixels'] / base['pixels']:.2f} | {r['seconds']:.3f} | "
                     f"{r['seconds'] / base['seconds']:.2f}x |")
    return '\n'.join(lines)


def table(result: Dict) -> str:
    rows = result['rows']
    base = next((r for r in rows if r['variant'] == 'plain'), rows[0])
    lines = [f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, Paddle "
             f"{result['machine']['paddle']}, OMP_NUM_THREADS {result['machine']['OMP_NUM_THREADS']}, "
             f"{result['machine']['date']}; demo set: {result['videos']}",
             '',
             '| variant | epochs | iterations | training wall time | vs plain | 10x3-view top-1 |',
             '|---|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['variant']} | {r['epochs']} | {r['iterations']} | {r['seconds']:.0f} s | "
                     f"{r['seconds'] / base['seconds']:.2f}x | {r['top1']:.3f} |")
    return '\n'.join(lines)


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--out', default=os.path.join(ROOT, 'output', 'bench_multigrid'))
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--train_per_class', '--train-per-class', type=int, default=60)
    parser.add_argument('--val_per_class', '--val-per-class', type=int, default=10)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--crop', type=int, default=64, help='training and test crop (and short side up to +25%%) '
                        'instead of the demo\'s 32 pixels; a multiple of 32 (default: %(default)s)')
    parser.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value',
                        help='a config override for every variant (e.g. TRAIN.epoch=10 for a quick look)')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--step_costs', '--step-costs', action='store_true',
                        help='only time one training iteration per shape the '
                        'multigrid variant trains (random clips; no data, no training run)')
    parser.add_argument('--repeats', type=int, default=5, help='--step_costs: timed iterations per shape')
    args = parser.parse_args(argv)
    setup_logging()
    os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count()))
    if args.step_costs:
        rows = step_costs(args)
        print(step_table(rows))
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(dict(machine=machine_info(), crop=args.crop, rows=rows), f, indent=1)
        return
    data = os.path.join(args.out, 'data')
    from make_demo_data import main as make_demo_data  # tools/data/make_demo_data.py
    make_demo_data(['--out', data, '--train_per_class', str(args.train_per_class), '--val_per_class',
                    str(args.val_per_class), '--frames', '48'])
    rows = [bench_variant(name, args, os.path.abspath(data)) for name in args.variants]
    result = dict(machine=machine_info(), rows=rows, crop=args.crop,
                  videos=f'{4 * args.train_per_class} training and {4 * args.val_per_class} validation videos, '
                         f'96x128, 48 frames; {args.crop}-pixel crops')
    report(result, table(result), args.json)


if __name__ == '__main__':
    main()
