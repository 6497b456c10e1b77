"""Time to accuracy with and without multigrid training, measured side by side over several seeds: the demo network
(configs/slowfast_demo.yaml) trained by train.py on a demo set per seed, once per variant, one after the other on this
machine. Every few epochs a checkpoint is written (on the clock, as any run's) and, after the run, scored by eval.py
(10 x 3 views, off the clock), so each variant has a curve of multi-view top-1 against training seconds. Reports per
seed and as mean and spread over the seeds: the wall time at which each variant first reaches the plain recipe's
final top-1 (within one validation video) and fixed levels (0.90, 0.95), against the plain recipe's whole wall time;
and a plot of the curves (PNG).

    python tools/analysis/benchmark_multigrid.py --out output/bench_multigrid --json multigrid.json
    python tools/analysis/benchmark_multigrid.py --step_costs      # what one iteration of each stage's shape costs here

Variants (``--variants``):
  plain      configs/slowfast_demo.yaml at 25 epochs (the demo runs 16): warmup + cosine
  steps      the same 25 epochs with the step LR multigrid cuts its stages from (the LR policy alone)
  multigrid  that step recipe with the long and short cycles (MULTIGRID section below): 25 x epoch_factor epochs
  long_cycle the long cycle alone
Seeds (``--seeds``, default 3 chosen before any run of this tool; no setting was chosen on them): each makes its own
demo set (``make_demo_data.py --seed``) and trains with it (``train.py --seed``). Only the wall time of train.py
counts (its start-up, training, precise BN, checkpoints and one validation at the end); the data is made before.
``-o`` overrides apply to every variant: the figures in docs/BENCHMARKS.md train at 64-pixel crops of the demo videos
(``--crop``, default 64), where the network's compute, not decoding, dominates a step.
"""
import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tools', 'data'))  # make_demo_data

from bench_common import machine_info, report  # noqa: E402  (beside this file)
from atomic import check_output_file, check_output_folder  # noqa: E402
from config_utils import setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402

logger = logging.getLogger('benchmark_multigrid')

# Every variant's schedule is cut from 25 epochs of the demo recipe (the demo itself runs 16; the figures in
# docs/BENCHMARKS.md were measured at 25).
SCHEDULE = ['TRAIN.epoch=25']
# The demo recipe's steps for the step-LR variants: 0.1 x at epochs 15 and 21 of 25 (PaddleVideo's 94 / 154 of
# 196 in proportion, then a shorter last step).
STEPS = ['TRAIN.lr_policy=steps', 'TRAIN.lr_steps=[0, 15, 21]']
# The demo clip is 8 frames of 32 pixels with alpha 4: a stage may halve the frames (4, slow pathway 1 frame), not
# quarter them. PaddleVideo's crop factors; the batch grows as the clip shrinks (x4, x2, x1).
MULTIGRID = STEPS + ['MULTIGRID.long_cycle=True', 'MULTIGRID.short_cycle=True',
                     'MULTIGRID.long_cycle_factors=[[0.5, 0.7071], [0.5, 1], [1, 1]]', 'TRAIN.bn_group=8']
VARIANTS = {'plain': [], 'steps': STEPS, 'multigrid': MULTIGRID,
            'long_cycle': [o for o in MULTIGRID if o != 'MULTIGRID.short_cycle=True']}
SEEDS = [1001, 1002, 1003]  # fixed before this tool first ran them: no setting of any variant was chosen on them
LEVELS = (0.90, 0.95)  # fixed top-1 levels whose time to reach is reported beside the plain recipe's final top-1


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


def checkpoint_times(folder: str, start: float) -> List[Tuple[int, float]]:
    """``(epoch, seconds)`` of every end-of-epoch checkpoint in ``folder``, in epoch order: seconds from ``start``
    (a ``time.time()``) to the moment its parameters file was written (its modification time)."""
    found = []
    for name in os.listdir(folder):
        match = re.fullmatch(r'slowfast_epoch(\d+)\.pdparams', name)
        if match:
            found.append((int(match.group(1)), os.path.getmtime(os.path.join(folder, name)) - start))
    return sorted(found)


def time_to_target(curve: Sequence[Dict], target: float) -> Optional[float]:
    """The training seconds of the first point of ``curve`` (``{'seconds', 'top1'}`` in time order) whose top-1 is at
    least ``target``; None when none is."""
    return next((point['seconds'] for point in curve if point['top1'] >= target - 1e-9), None)


def bench_variant(name: str, args, data: str, seed: int) -> Dict:
    """Train variant ``name`` on ``data`` with ``seed`` (a checkpoint every ``--score_every`` epochs), then score
    every checkpoint: the row with its curve."""
    folder = os.path.join(args.out, f'seed{seed}', name)
    os.makedirs(folder, exist_ok=True)
    flags = ['--config', os.path.join(ROOT, 'configs', 'slowfast_demo.yaml'), '--use_gpu', 'False', '-o',
             'MODEL.num_classes=4',
             '-o', f'DATA.label_map={data}/classes.txt', '-o', f'TRAIN.filelist={data}/train.txt', '-o',
             f'VALID.filelist={data}/val.txt', '-o', f'TEST.filelist={data}/val.txt']
    flags += [a for o in crop_overrides(args.crop) + SCHEDULE + VARIANTS[name] + args.override for a in ('-o', o)]
    checkpoints = os.path.join(folder, 'checkpoints')
    logger.info('seed %d, %s: training (%s)', seed, name,
                ' '.join(VARIANTS[name] + args.override) or 'the demo recipe')
    start = time.time()
    seconds = run([sys.executable, 'train.py', *flags, '-o', f'TRAIN.save_interval={args.score_every}',
                   '--save_dir', checkpoints, '--start_over', '--log_interval', '100', '--valid_interval', '100000',
                   '--seed', str(seed)], os.path.join(folder, 'train.log'))  # a run before this one: moved aside
    log = open(os.path.join(folder, 'train.log')).read()
    epochs = len(re.findall(r'\[Epoch \d+ end\]', log))
    iterations = sum(int(n) for n in re.findall(r'\[Epoch \d+, iter (\d+)/\1\]', log))
    curve = []
    for epoch, at in checkpoint_times(checkpoints, start):  # scored after the run: off the clock
        scored = os.path.join(folder, f'eval_epoch{epoch}')
        run([sys.executable, 'eval.py', *flags, '--weights', os.path.join(checkpoints, f'slowfast_epoch{epoch}'),
             '--save_path', scored], os.path.join(folder, f'eval_epoch{epoch}.log'))
        top1 = json.load(open(os.path.join(scored, 'eval_result.json')))['top1']
        curve.append(dict(epoch=epoch, seconds=round(at, 1), top1=top1))
        logger.info('seed %d, %s: epoch %d at %.0f s: 10x3-view top-1 %.3f', seed, name, epoch, at, top1)
    row = dict(variant=name, seed=seed, seconds=round(seconds, 1), epochs=epochs, iterations=iterations,
               top1=curve[-1]['top1'], curve=curve, overrides=VARIANTS[name] + args.override)
    logger.info('seed %d, %s: %.0f s, %d epochs, %d iterations, final 10x3-view top-1 %.3f', seed, name, seconds,
                epochs, iterations, row['top1'])
    return row


def summarize(rows: Sequence[Dict], num_val: int) -> List[Dict]:
    """Per seed and variant: the time to reach the plain run's final top-1 of that seed (within one of the
    ``num_val`` validation videos) and each of LEVELS (None: never reached), and these times and the whole run's over
    the plain run's whole wall time (``spread`` makes the mean over seeds)."""
    plain = {r['seed']: r for r in rows if r['variant'] == 'plain'}
    out = []
    for r in rows:
        base = plain.get(r['seed'])
        target = base['top1'] - 1.0 / num_val if base else None
        times = {'plain_final': time_to_target(r['curve'], target) if base else None}
        times.update({f'{level:.2f}': time_to_target(r['curve'], level) for level in LEVELS})
        out.append(dict(variant=r['variant'], seed=r['seed'], seconds=r['seconds'], top1=r['top1'], target=target,
                        times=times, ratios={k: (v / base['seconds'] if base and v is not None else None)
                                             for k, v in times.items()},
                        time_ratio=r['seconds'] / base['seconds'] if base else None))
    return out


def spread(values: Sequence[Optional[float]]) -> Dict:
    """Mean, min and max of the values that are not None, and how many of them there are."""
    got = [v for v in values if v is not None]
    if not got:
        return dict(mean=None, min=None, max=None, reached=0, of=len(values))
    return dict(mean=sum(got) / len(got), min=min(got), max=max(got), reached=len(got), of=len(values))


def plot(rows: Sequence[Dict], path: str) -> None:
    """Multi-view top-1 against training seconds: one colour per variant, one marker per seed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r['variant'] for r in rows))
    seeds = list(dict.fromkeys(r['seed'] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for r in rows:
        ax.plot([0] + [p['seconds'] for p in r['curve']], [0.25] + [p['top1'] for p in r['curve']],
                color=f'C{variants.index(r["variant"])}', marker='os^vD<>'[seeds.index(r['seed']) % 7], markersize=4,
                label=f'{r["variant"]}, seed {r["seed"]}')
    ax.set_xlabel('training wall time (s)')
    ax.set_ylabel('10x3-view top-1 (chance 0.25 at 0 s)')
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
             for splits in sorted({1, bn_splits(batch, cfg.TRAIN.bn_group)})]
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
    summary = result['summary']
    machine = result['machine']

    def cell(seconds, ratio):
        return 'not reached' if seconds is None else f'{seconds:.0f} s ({ratio:.2f}x)'

    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores, Paddle {machine['paddle']}, OMP_NUM_THREADS "
             f"{machine['OMP_NUM_THREADS']}, {machine['date']}; per seed: {result['videos']}",
             '',
             '| seed | variant | epochs | iterations | wall time | vs plain | final top-1 | to plain\'s final | '
             + ' | '.join(f'to {level:.2f}' for level in LEVELS) + ' |',
             '|---:|---|---:|---:|---:|---:|---:|---:|' + '---:|' * len(LEVELS)]
    for r, t in zip(result['rows'], summary):
        lines.append(f"| {r['seed']} | {r['variant']} | {r['epochs']} | {r['iterations']} | {r['seconds']:.0f} s | "
                     f"{t['time_ratio']:.2f}x | {r['top1']:.3f} | "
                     + ' | '.join(cell(t['times'][k], t['ratios'][k]) for k in t['times']) + ' |')
    lines += ['', '(times: the first scored checkpoint at or above the target; in brackets, over the plain run\'s '
              'whole wall time of the same seed; the plain run\'s final top-1 counts as reached within one '
              'validation video)', '',
              '| variant | seeds | final top-1, mean (min-max) | wall time vs plain | to plain\'s final top-1 vs plain '
              '| ' + ' | '.join(f'to {level:.2f} vs plain' for level in LEVELS) + ' |',
              '|---|---:|---:|---:|---:|' + '---:|' * len(LEVELS)]

    def mean_range(d, fmt):
        return 'not reached' if d['mean'] is None else (
            f"{d['mean']:{fmt}} ({d['min']:{fmt}}-{d['max']:{fmt}})" + (f", {d['reached']} of {d['of']}"
                                                                        if d['reached'] < d['of'] else ''))

    for variant in dict.fromkeys(r['variant'] for r in result['rows']):
        mine = [s for s in summary if s['variant'] == variant]
        lines.append(f"| {variant} | {len(mine)} | {mean_range(spread([s['top1'] for s in mine]), '.3f')} | "
                     f"{mean_range(spread([s['time_ratio'] for s in mine]), '.2f')} | "
                     + ' | '.join(mean_range(spread([s['ratios'][k] for s in mine]), '.2f') for k in mine[0]['ratios'])
                     + ' |')
    return '\n'.join(lines)


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--out', default=os.path.join(ROOT, 'output', 'bench_multigrid'))
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--train_per_class', '--train-per-class', type=int, default=60)
    parser.add_argument('--val_per_class', '--val-per-class', type=int, default=25,
                        help='validation videos per class (default: %(default)s: 100 videos, one is 1 point)')
    parser.add_argument('--seeds', type=int, nargs='+', default=SEEDS,
                        help='data and training seeds, one run of every variant each (default: %(default)s)')
    parser.add_argument('--score_every', '--score-every', type=int, default=5,
                        help='a checkpoint every N epochs (and the last), each scored after the run (default: 5)')
    parser.add_argument('--plot', help='the curves\' PNG (default: OUT/curves.png)')
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
    if args.json:  # before the measuring
        check_output_file(args.json, '--json')
    check_output_folder(args.out, '--out')
    if args.plot:
        check_output_file(args.plot, '--plot')
    os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count()))
    if args.step_costs:
        rows = step_costs(args)
        print(step_table(rows))
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(dict(machine=machine_info(), crop=args.crop, rows=rows), f, indent=1)
        return
    from make_demo_data import main as make_demo_data  # tools/data/make_demo_data.py
    rows = []
    for seed in args.seeds:
        data = os.path.abspath(os.path.join(args.out, f'seed{seed}', 'data'))
        make_demo_data(['--out', data, '--train_per_class', str(args.train_per_class), '--val_per_class',
                        str(args.val_per_class), '--frames', '48', '--seed', str(seed)])
        rows += [bench_variant(name, args, data, seed) for name in args.variants]
        with open(os.path.join(args.out, 'rows.json'), 'w') as f:  # the seeds done so far, should a later one fail
            json.dump(rows, f, indent=1)
    result = dict(machine=machine_info(), rows=rows, crop=args.crop, seeds=args.seeds,
                  summary=summarize(rows, 4 * args.val_per_class),
                  videos=f'{4 * args.train_per_class} training and {4 * args.val_per_class} validation videos, '
                         f'96x128, 48 frames; {args.crop}-pixel crops')
    plot(rows, args.plot or os.path.join(args.out, 'curves.png'))
    report(result, table(result), args.json)

if __name__ == '__main__':
    exit_on_user_error(main, logger)
