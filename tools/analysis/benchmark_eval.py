"""Evaluation and training as a user runs them, measured side by side in one run: where the time of a view goes, what
shared memory and RSS a run takes, and what items through pipes instead of shared memory cost.

    python tools/analysis/benchmark_eval.py [--measures speed memory pipes train] [--videos 2] [--json out.json]

``speed``: eval.py's scoring loop (``scoring.score_videos`` on ``KineticsMultiViewDataset``: decode in DataLoader
workers, views, normalisation, network, scores) on 10-second 340x256 videos at the recipe's 30 views (``--config``,
default slowfast.yaml: 4x16 R50, 32 frames, 256 pixels), with the exported network (Paddle Inference) and in dygraph;
the network alone on the same batches; the parts of a view's time: waiting for the loader, normalisation
(``model_inputs``), network, the rest (scores). ``train``: a training step as train.py runs it at the recipe's clip
(32 x 224, ``TRAIN.batch_size`` of slowfast-single.yaml, 8): reader wait, normalisation, forward + backward + step.
``memory``: eval.py itself (a subprocess) at the 4x16 and 16x8 views with a width-8 network (the views' bytes do not
depend on the width), sampling the main process's RSS, its workers' and the space used in /dev/shm every 10 ms,
against the bound ``2 x workers x prefetch x one batch``. ``pipes``: items of one view and of a batch of views through
a DataLoader with 2 workers, shared memory against pipes (``use_shared_memory=False``): ms per item and per MiB more.
``needs`` (not measured, counted): what each shipped config's loaders keep in /dev/shm (docs/TRAINING.md).
"""
import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

import numpy as np
import paddle

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import ROOT, machine_info, median_ms, report  # noqa: E402
from benchmark_data import bench_frames  # noqa: E402
from atomic import check_output_file  # noqa: E402
from config_utils import parse_config, setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from shared_memory import HELD, MIB, PREFETCH, free_bytes  # noqa: E402
from video_io import write_video  # noqa: E402

logger = logging.getLogger('benchmark_eval')


def make_videos(folder: str, count: int) -> str:
    """``count`` 10-second 30 fps 340x256 H.264 videos and a test list of them; returns the list's path."""
    lines = []
    for i in range(count):
        path = os.path.join(folder, f'bench{i}.mp4')
        write_video(path, list(bench_frames(256, 340, 300, seed=i)), 30)
        lines.append(f'{path} {i % 4}')
    listing = os.path.join(folder, 'test.txt')
    with open(listing, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return listing


class Timed:
    """Wraps a callable or an iterator and sums the seconds spent in it."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.inner(*args)  # on the CPU the values are there when a Paddle op returns
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def __iter__(self):
        items = iter(self.inner)
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            self.seconds += time.perf_counter() - start
            self.calls += 1
            yield item


def normalisation(cfg, batch: int, repeats: int) -> Dict:
    """A batch of test views normalised as ``model_inputs`` does it and as it did until 2026-12-04 (a cast, then a
    broadcast multiply and a broadcast add: three single-threaded CPU kernels), ms per batch, medians."""
    from kinetics_dataset import model_inputs

    m, size = cfg.MODEL, cfg.TEST.target_size
    clips = [paddle.to_tensor(np.random.default_rng(0).integers(0, 256, [batch, 3, t, size, size], dtype=np.uint8))
             for t in (m.num_frames // m.alpha, m.num_frames)]
    scale = paddle.to_tensor([1 / (255 * s) for s in m.image_std], 'float32').reshape([1, 3, 1, 1, 1])
    shift = paddle.to_tensor([-a / s for a, s in zip(m.image_mean, m.image_std)], 'float32').reshape([1, 3, 1, 1, 1])

    def before():
        return [x.astype('float32') * scale + shift for x in clips]

    now = median_ms(lambda: model_inputs(clips, cfg), repeats)
    old = median_ms(before, repeats)
    same = max(float((a - b).abs().max()) for a, b in zip(model_inputs(clips, cfg), before()))
    row = {'engine': 'normalisation of a batch', 'batch': batch, 'ms model_inputs': now,
           'ms before (multiply + add)': old, 'max difference': same}
    logger.info('normalisation: %s', row)
    return row


def bench_speed(args, folder: str, listing: str) -> List[Dict]:
    from inference import export
    from kinetics_dataset import KineticsMultiViewDataset, model_inputs
    from model import build_model
    from scoring import build_scoring_model, ensemble_scores

    cfg = parse_config(args.config, [f'TEST.filelist={listing}', f'DATA.num_workers={args.workers}',
                                     'MODEL.num_classes=400', 'DATA.label_map='] + args.override)
    batch = args.batch
    paddle.seed(0)
    model = build_model(cfg)
    weights = os.path.join(folder, 'random.pdparams')
    paddle.save(model.state_dict(), weights)
    model.eval()  # (Paddle 2.6's Layer.eval returns None: not chained)
    export(model, cfg, cfg.TEST.target_size, os.path.join(folder, 'export'))
    del model
    rows = [normalisation(cfg, batch, args.repeats)]
    for engine, use_inference in (('Paddle Inference (the export)', True), ('Paddle dygraph', False)):
        cfg.INFER.use_inference, cfg.INFER.model_dir = use_inference, os.path.join(folder, 'export')
        net, _ = build_scoring_model(cfg, weights, cfg.TEST.target_size, 'cpu')
        dataset = KineticsMultiViewDataset(cfg, 'test')
        timed_net = Timed(net)
        normalise = Timed(lambda clips: model_inputs(clips, cfg))
        start = time.perf_counter()
        batches = Timed(dataset.view_batches(batch, args.workers))
        ensemble_scores(timed_net, batches, normalise, len(dataset), dataset.num_views, cfg.MODEL.num_classes)
        total = time.perf_counter() - start
        views = dataset.views_here
        # the network alone: the same batch shape, in this process, nothing else running
        clips = [paddle.to_tensor(np.random.default_rng(0).integers(0, 256, [batch, 3, t, s, s], dtype=np.uint8))
                 for t, s in ((cfg.MODEL.num_frames // cfg.MODEL.alpha, cfg.TEST.target_size),
                              (cfg.MODEL.num_frames, cfg.TEST.target_size))]
        inputs = model_inputs(clips, cfg)
        alone = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with paddle.no_grad():
                net(inputs).numpy()
            alone.append(time.perf_counter() - t0)
        row = {'engine': engine, 'views': views, 'batch': batch, 'workers': args.workers,
               'ms/view end to end': total / views * 1000, 'ms/view network alone': statistics.median(alone) / batch * 1000,
               'ms/view loader wait': batches.seconds / views * 1000,
               'ms/view normalisation': normalise.seconds / views * 1000,
               'ms/view network in the loop': timed_net.seconds / views * 1000}
        row['ms/view rest'] = row['ms/view end to end'] - row['ms/view loader wait'] - row[
            'ms/view normalisation'] - row['ms/view network in the loop']
        row['data side share'] = 1 - row['ms/view network in the loop'] / row['ms/view end to end']
        logger.info('%s: %s', engine, {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
        rows.append(row)
        del net
    return rows


def bench_train(args, folder: str) -> Dict:
    """Steps of train.py's loop at the recipe's clip: reader wait, normalisation, step."""
    from kinetics_dataset import KineticsDataset, clip_bytes, model_inputs
    from lr_policy import build_optimizer
    from model import build_model
    from shared_memory import loader_plan

    listing = make_videos(folder, (args.train_steps + 1) * args.train_batch)
    cfg = parse_config(os.path.join(ROOT, 'slowfast-single.yaml'), [
        f'TRAIN.filelist={listing}', 'MODEL.num_classes=400', 'DATA.label_map=', f'DATA.num_workers={args.workers}',
        f'TRAIN.batch_size={args.train_batch}'] + args.override)
    dataset = KineticsDataset(cfg, 'train')
    plan = loader_plan('training batches', args.train_batch * clip_bytes(
        cfg.MODEL.num_frames, cfg.TRAIN.target_size, cfg.MODEL.alpha, 2), 1, args.workers)
    sampler = paddle.io.BatchSampler(dataset, batch_size=args.train_batch, shuffle=False, drop_last=True)
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers,
                                  prefetch_factor=plan.prefetch_factor, use_shared_memory=plan.use_shared_memory)
    paddle.seed(0)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)[0]
    waits, norms, steps = [], [], []
    tick = time.perf_counter()
    for *clips, labels, _ in loader:
        waits.append(time.perf_counter() - tick)
        t0 = time.perf_counter()
        inputs = model_inputs(clips, cfg)
        inputs[0].numpy()
        t1 = time.perf_counter()
        loss = paddle.nn.functional.cross_entropy(model(inputs), labels.reshape([-1, 1]))
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
        steps.append(time.perf_counter() - t1)
        norms.append(t1 - t0)
        tick = time.perf_counter()
    first = slice(1, None)  # the first batch waits for the workers to start
    result = {'batch': args.train_batch, 'workers': args.workers, 'steps': len(steps) - 1,
              's reader wait': statistics.median(waits[first]), 's normalisation': statistics.median(norms[first]),
              's step': statistics.median(steps[first])}
    logger.info('training: %s', result)
    return result


def sample(pid: int, out: Dict, stop: threading.Event) -> None:
    """Peak RSS of ``pid`` and of its children (summed), and the peak of /dev/shm's used bytes, every 10 ms."""
    base = free_bytes()

    def rss(p):
        try:
            with open(f'/proc/{p}/status') as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmRSS'))
        except (OSError, StopIteration):
            return 0

    def children(p):
        try:
            return [int(c) for t in os.listdir(f'/proc/{p}/task')
                    for c in open(f'/proc/{p}/task/{t}/children').read().split()]
        except OSError:
            return []

    while not stop.is_set():
        out['main'] = max(out.get('main', 0), rss(pid))
        out['workers'] = max(out.get('workers', 0), sum(rss(c) for c in children(pid)))
        free = free_bytes()
        if base is not None and free is not None:
            out['shm'] = max(out.get('shm', 0), base - free)
        time.sleep(0.01)


NETWORK_ALONE = '''
import sys
sys.path.insert(0, {root!r})
import numpy as np, paddle
from config_utils import parse_config
from kinetics_dataset import model_inputs
from model import build_model
cfg = parse_config({config!r}, {overrides!r})
paddle.set_device('cpu')
model = build_model(cfg)
model.eval()
m = cfg.MODEL
s = cfg.TEST.target_size
clips = [paddle.to_tensor(np.zeros([{batch}, 3, t, s, s], np.uint8)) for t in (m.num_frames // m.alpha, m.num_frames)]
with paddle.no_grad():
    model(model_inputs(clips, cfg)).numpy()
print(next(int(line.split()[1]) * 1024 for line in open('/proc/self/status') if line.startswith('VmHWM')))
'''


def network_peak(overrides: List[str], batch: int) -> int:
    """Peak RSS of a fresh process that builds the network and scores one batch of views: what eval.py would take
    with no data side at all."""
    code = NETWORK_ALONE.format(root=ROOT, config=os.path.join(ROOT, 'slowfast-single.yaml'), overrides=overrides,
                                batch=batch)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1])


def bench_memory(args, folder: str, listing: str) -> List[Dict]:
    from kinetics_dataset import clip_bytes
    from model import build_model

    rows = []
    for name, frames, alpha in (('4x16', 32, 8), ('16x8', 64, 4)):
        overrides = ['MODEL.num_classes=400', 'DATA.label_map=', 'MODEL.width_per_group=8', f'MODEL.num_frames={frames}',
                     f'MODEL.alpha={alpha}', f'TEST.filelist={listing}', f'DATA.num_workers={args.workers}',
                     f'TEST.batch_size={args.batch}'] + args.override
        cfg = parse_config(os.path.join(ROOT, 'slowfast-single.yaml'), overrides)
        paddle.seed(0)
        weights = os.path.join(folder, f'w8_{name}.pdparams')
        paddle.save(build_model(cfg).state_dict(), weights)
        command = [sys.executable, os.path.join(ROOT, 'eval.py'), '--config',
                   os.path.join(ROOT, 'slowfast-single.yaml'), '--use_gpu', 'False', '--weights', weights,
                   '--save_path', os.path.join(folder, f'eval_{name}')] + [a for o in overrides for a in ('-o', o)]
        peaks: Dict[str, int] = {}
        stop = threading.Event()
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        watcher = threading.Thread(target=sample, args=(process.pid, peaks, stop))
        watcher.start()
        log = process.communicate()[0]
        stop.set()
        watcher.join()
        if process.returncode:
            raise RuntimeError(f'eval.py exited {process.returncode}: {log[-2000:]}')
        network = network_peak(overrides, args.batch)
        frames, alpha = cfg.MODEL.num_frames, cfg.MODEL.alpha
        view = clip_bytes(frames, cfg.TEST.target_size, alpha, 2)
        bound = 2 * args.workers * PREFETCH * args.batch * view
        views = cfg.TEST.num_ensemble_views * cfg.TEST.num_spatial_crops
        row = {'model': name, 'frames': frames, 'views/video': views, 'view MiB': view / MIB,
               'batch MiB': args.batch * view / MIB, 'video MiB': views * view / MIB, 'workers': args.workers,
               'bound MiB': bound / MIB, 'in flight planned MiB': (args.workers * PREFETCH + HELD) * args.batch * view / MIB,
               'shm peak MiB': peaks.get('shm', 0) / MIB, 'main RSS peak MiB': peaks['main'] / MIB,
               'workers RSS peak MiB': peaks['workers'] / MIB, 'network alone RSS peak MiB': network / MIB,
               'main RSS beyond the network MiB': (peaks['main'] - network) / MIB,
               'seconds': time.perf_counter() - start}
        logger.info('memory: %s', {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
        rows.append(row)
    return rows


class Items(paddle.io.Dataset):
    def __init__(self, nbytes: int, count: int):
        self.array, self.count = np.full(nbytes, 7, np.uint8), count

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        return self.array.copy()  # as a dataset makes each item anew


def bench_pipes(args) -> List[Dict]:
    from kinetics_dataset import clip_bytes

    view = clip_bytes(32, 256, 8, 2)
    rows = []
    for name, nbytes in (('one view (4x16, 256)', view), ('a batch of 8 views', 8 * view)):
        times = {}
        for _ in range(args.rounds):
            for shm in (True, False):
                loader = paddle.io.DataLoader(Items(nbytes, args.items), batch_size=None, num_workers=2,
                                              use_shared_memory=shm)
                it = iter(loader)
                next(it)  # workers started
                start = time.perf_counter()
                n = sum(1 for _ in it)
                times.setdefault(shm, []).append((time.perf_counter() - start) / n * 1000)
        shm_ms, pipe_ms = statistics.median(times[True]), statistics.median(times[False])
        row = {'item': name, 'MiB': nbytes / MIB, 'ms/item shared memory': shm_ms, 'ms/item pipes': pipe_ms,
               'ms more per MiB': (pipe_ms - shm_ms) / (nbytes / MIB)}
        logger.info('pipes: %s', row)
        rows.append(row)
    return rows


def shared_memory_needs() -> List[Dict]:
    """What each shipped config's loaders keep in /dev/shm with its own DATA.num_workers and batch per GPU
    (``TRAIN.num_gpus`` ranks on a machine), as ``shared_memory.loader_plan`` counts it (``in_flight`` items:
    training batches, the largest shape of a multigrid schedule; validation batches; test and predict views in
    batches): per rank and for the machine."""
    import glob

    from kinetics_dataset import clip_bytes
    from multigrid import stage_batches, training_plan
    from shared_memory import in_flight

    rows = []
    for path in [os.path.join(ROOT, 'slowfast.yaml'), os.path.join(ROOT, 'slowfast-single.yaml')] + sorted(
            glob.glob(os.path.join(ROOT, 'configs', '*.yaml'))):
        cfg = parse_config(path, [])
        m, ranks, workers = cfg.MODEL, cfg.TRAIN.num_gpus, cfg.DATA.num_workers
        pathways = 1 if m.name.upper() == 'SLOW' else 2
        micro = cfg.TRAIN.batch_size // ranks // cfg.TRAIN.accumulate_steps
        train = max(batch * clip_bytes(stage.frames, crop, m.alpha, pathways) for stage in training_plan(cfg).stages
                    for batch, crop in stage_batches(cfg, stage, micro))
        items = {'train': train,
                 'valid': cfg.VALID.batch_size // ranks * clip_bytes(m.num_frames, cfg.VALID.target_size, m.alpha,
                                                                     pathways),
                 'test': cfg.TEST.batch_size // ranks * clip_bytes(m.num_frames, cfg.TEST.target_size, m.alpha,
                                                                   pathways),
                 'infer': cfg.INFER.batch_size // ranks * clip_bytes(m.num_frames, cfg.INFER.target_size, m.alpha,
                                                                     pathways)}
        row = {'config': os.path.relpath(path, ROOT), 'ranks': ranks, 'workers': workers}
        for name, item in items.items():
            row[f'{name} MiB per rank'] = in_flight(workers, PREFETCH) * item / MIB
        # the training and validation loaders take turns: one's workers are done before the other's start
        row['training machine MiB'] = ranks * max(row['train MiB per rank'], row['valid MiB per rank'])
        row['eval machine MiB'] = ranks * row['test MiB per rank']
        rows.append(row)
    return rows


def tables(result: Dict) -> str:
    out = []
    for key, rows in result.items():
        if key == 'machine' or not rows:
            continue
        rows = rows if isinstance(rows, list) else [rows]
        out.append(f'{key}:')
        for row in rows:
            out.append('  ' + ', '.join(f'{k} {v:.3g}' if isinstance(v, float) else f'{k} {v}' for k, v in row.items()))
    return '\n'.join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--measures', nargs='+', default=['pipes', 'memory', 'speed', 'train'],
                        choices=['pipes', 'memory', 'speed', 'train', 'needs'])
    parser.add_argument('--config', default=os.path.join(ROOT, 'slowfast.yaml'), help='the network of `speed`')
    parser.add_argument('--videos', type=int, default=2, help='test videos of 30 views (default: %(default)s)')
    parser.add_argument('--batch', type=int, default=8, help='views per batch (default: %(default)s)')
    parser.add_argument('--train_batch', type=int, default=8, help='clips per training batch (default: %(default)s)')
    parser.add_argument('--train_steps', type=int, default=3, help='timed training steps after the first '
                        '(default: %(default)s)')
    parser.add_argument('--workers', type=int, default=2, help='DataLoader workers (default: %(default)s)')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs of the network alone (default: 3)')
    parser.add_argument('--rounds', type=int, default=3, help='rounds of `pipes` (default: %(default)s)')
    parser.add_argument('--items', type=int, default=40, help='items per round of `pipes` (default: %(default)s)')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value',
                        help='config overrides for `speed`, `train` and `memory`, after their own settings (to '
                             'shrink them, e.g. for a test)')
    args = parser.parse_args(argv)
    setup_logging()
    if args.json:
        check_output_file(args.json, '--json')
    from distributed import tune_cpu_blas
    tune_cpu_blas()  # as the scripts on a CPU
    paddle.set_device('cpu')
    result = {'machine': machine_info()}
    with tempfile.TemporaryDirectory() as folder:
        listing = make_videos(folder, args.videos) if {'memory', 'speed'} & set(args.measures) else ''
        if 'pipes' in args.measures:
            result['pipes'] = bench_pipes(args)
        if 'memory' in args.measures:
            result['memory'] = bench_memory(args, folder, listing)
        if 'speed' in args.measures:
            result['speed'] = bench_speed(args, folder, listing)
        if 'train' in args.measures:
            result['train'] = bench_train(args, folder)
        if 'needs' in args.measures:
            result['needs'] = shared_memory_needs()
    report(result, tables(result), args.json)


if __name__ == '__main__':
    exit_on_user_error(main, logger)
