"""Training speed and memory, measured side by side: seconds per training iteration (forward, cross-entropy,
backward, SGD step with Nesterov momentum and weight decay, clear) on random clips, and the peak resident memory, for
the full 4x16 R50 at its 224 crop and batch 1 (``full``) and the demo network at batch 8 (``tiny``); engines: Paddle
dygraph, dygraph under ``paddle.jit.to_static``, dygraph with ``FLAGS_use_mkldnn``, and PyTorch eager (pytorchvideo,
same settings, same threads) when installed. Each engine runs in a fresh process so its peak memory is its own.
``--profile`` adds the top operators of the dygraph step (``paddle.profiler``); ``--conv_layouts`` times three
representative 3D convolutions channels-first against channels-last (and in PyTorch).

    python tools/analysis/benchmark_train.py [--cases full tiny] [--engines ...] [--rounds 3] [--profile]
                                             [--conv_layouts] [--json out.json]
"""
import argparse
import json
import logging
import os
import re
import statistics
import sys
from typing import Callable, Dict, List

import numpy as np
import paddle

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from bench_common import NO_TORCH, ROOT, machine_info, median_ms, report, torch_reference_available  # noqa: E402
from atomic import check_output_file  # noqa: E402
from config_utils import parse_config, setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from distributed import tune_cpu_blas  # noqa: E402

logger = logging.getLogger('benchmark_train')


TRAIN_CASES = {'full': ('slowfast.yaml', 1), 'tiny': ('configs/slowfast_demo.yaml', 8)}  # config, batch
TRAIN_ENGINES = ('dygraph', 'conv3d_stem', 'mkl_default', 'to_static', 'onednn', 'torch')
ENGINE_NAMES = {'dygraph': 'Paddle dygraph', 'conv3d_stem': 'Paddle dygraph, fast stem as Paddle conv3d',
                'mkl_default': "Paddle dygraph, MKL's default CPU path",
                'to_static': 'Paddle dygraph + jit.to_static', 'onednn': 'Paddle dygraph + FLAGS_use_mkldnn',
                'torch': 'PyTorch eager (pytorchvideo)'}


def rss_mib() -> float:
    """Resident memory of this process now, MiB."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def time_train_step(engine: str, config: str, batch: int, repeats: int, threads: int, profile: bool) -> Dict:
    """Median seconds of one training iteration (forward, cross-entropy, backward, optimizer step, clear) of the
    network of ``config`` at its crop size on random clips, in this process; and its peak resident memory.

    Run in a fresh process per engine (:func:`bench_train`) so the peak memory is the engine's own."""
    import resource

    from config_utils import input_shapes

    cfg = parse_config(config, [])
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal([batch] + shape).astype(np.float32)
             for shape in input_shapes(cfg, cfg.MODEL.crop_size)]
    labels = rng.integers(0, cfg.MODEL.num_classes, batch)
    if engine == 'torch':
        import torch
        from torch_reference import build_reference

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = build_reference(cfg, train=True).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=cfg.TRAIN.momentum, nesterov=True,
                                    weight_decay=cfg.TRAIN.l2_weight_decay)
        inputs, target = [torch.from_numpy(c) for c in clips], torch.from_numpy(labels)

        def step():  # pytorchvideo's fusion writes into the list it is given: a new list each call
            loss = torch.nn.functional.cross_entropy(model(list(inputs)), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    else:
        import paddle.nn.functional as F

        from model import build_model
        from lr_policy import build_optimizer

        if engine == 'mkl_default':  # the ablation of distributed.tune_cpu_blas (a no-op off AMD CPUs)
            os.environ.pop('MKL_DEBUG_CPU_TYPE', None)
        else:
            tune_cpu_blas()  # as train.py on a CPU
        if engine == 'conv3d_stem':  # the ablation of frame_conv.FrameConv3D, in this process only
            from frame_conv import FrameConv3D
            FrameConv3D.forward = paddle.nn.Conv3D.forward
        paddle.set_device('cpu')
        if engine == 'onednn':
            paddle.set_flags({'FLAGS_use_mkldnn': True})
        paddle.seed(0)
        model = build_model(cfg)
        model.train()
        optimizer, _ = build_optimizer(cfg, model)
        forward = paddle.jit.to_static(model) if engine == 'to_static' else model
        inputs, target = [paddle.to_tensor(c) for c in clips], paddle.to_tensor(labels)

        def step():
            loss = F.cross_entropy(forward(inputs), target)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
    before = rss_mib()
    seconds = median_ms(step, repeats) / 1000
    result = {'engine': ENGINE_NAMES[engine], 'config': os.path.relpath(config, ROOT), 'batch': batch,
              'crop': cfg.MODEL.crop_size, 'frames': cfg.MODEL.num_frames, 's_per_iter': round(seconds, 3),
              'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              'rss_before_steps_mib': round(before),
              'MKL_DEBUG_CPU_TYPE': os.environ.get('MKL_DEBUG_CPU_TYPE', 'unset')}
    if profile and engine == 'dygraph':
        result['profile'] = profile_step(step)
    return result


def profile_step(step: Callable[[], None], top: int = 15) -> List[Dict]:
    """The ``top`` operators of two training steps by total CPU time (``paddle.profiler``, read back from its
    Chrome trace), in ms per step with their share of all operator time."""
    import tempfile

    import paddle.profiler as profiler

    with tempfile.TemporaryDirectory() as folder:
        trace = os.path.join(folder, 'trace.json')
        with profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda _: None) as prof:
            for _ in range(2):
                step()
                prof.step()
        prof.export(trace, format='json')
        with open(trace) as f:
            events = json.load(f)['traceEvents']
    totals: Dict[str, float] = {}
    for event in events:
        if event.get('cat') == 'Operator' and event.get('ph') == 'X':
            name = re.sub(r'\[.*\]$', '', event['name']).strip()  # 'conv3d dygraph[1.2 ms]' -> 'conv3d dygraph'
            totals[name] = totals.get(name, 0.0) + event['dur'] / 1000  # us -> ms
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{'op': name, 'ms': round(ms / 2, 1), 'share': round(ms / whole, 3)} for name, ms in ranked]


# representative 3D convolutions of the 4x16 R50 at 224 (batch 1): (name, C_in, C_out, kernel, [T, H, W], stride)
CONV_LAYERS = (('fast stem 5x7x7, 3->8, 32x224x224', 3, 8, (5, 7, 7), (32, 224, 224), (1, 2, 2)),
               ('slow res3 1x3x3, 128->128, 8x28x28', 128, 128, (1, 3, 3), (8, 28, 28), (1, 1, 1)),
               ('fast res4 3x1x1, 32->32, 32x14x14', 32, 32, (3, 1, 1), (32, 14, 14), (1, 1, 1)))


def bench_conv_layouts(repeats: int, threads: int) -> List[Dict]:
    """ms of forward + backward of each of CONV_LAYERS in Paddle dygraph, channels-first vs channels-last vs
    ``conv3d_by_frames`` (the network's fast stem on a CPU), and in PyTorch (channels-first) when installed."""
    from frame_conv import conv3d_by_frames

    tune_cpu_blas()
    paddle.set_device('cpu')
    torch = None
    if torch_reference_available():
        import torch
        torch.set_num_threads(threads)
    rows = []
    for name, dim_in, dim_out, kernel, (t, h, w), stride in CONV_LAYERS:
        row = {'layer': name}
        padding = [k // 2 for k in kernel]
        for layout in ('NCDHW', 'NDHWC'):
            conv = paddle.nn.Conv3D(dim_in, dim_out, kernel, stride=stride, padding=padding, data_format=layout)
            x = paddle.randn([1, dim_in, t, h, w] if layout == 'NCDHW' else [1, t, h, w, dim_in])
            x.stop_gradient = False

            def step():
                conv(x).sum().backward()
                conv.clear_gradients()
            row[layout] = round(median_ms(step, repeats), 1)
        weight = paddle.create_parameter([dim_out, dim_in] + list(kernel), 'float32')
        x = paddle.randn([1, dim_in, t, h, w])
        x.stop_gradient = False

        def by_frames_step():
            conv3d_by_frames(x, weight, stride, padding).sum().backward()
            weight.clear_gradient()
        row['by_frames'] = round(median_ms(by_frames_step, repeats), 1)
        if torch is not None:
            torch_conv = torch.nn.Conv3d(dim_in, dim_out, kernel, stride=stride, padding=padding)
            torch_x = torch.randn(1, dim_in, t, h, w, requires_grad=True)

            def torch_step():
                torch_conv(torch_x).sum().backward()
                torch_conv.zero_grad()
            row['torch'] = round(median_ms(torch_step, repeats), 1)
        rows.append(row)
        logger.info('%s: %s', name, ', '.join(f'{k} {v} ms' for k, v in row.items() if k != 'layer'))
    return rows


def _train_worker(queue, *args) -> None:
    try:
        queue.put(time_train_step(*args))
    except Exception as error:  # reported as the row's error, the other engines still run
        queue.put({'engine': ENGINE_NAMES[args[0]], 'error': f'{type(error).__name__}: {error}'})


def _run_train_engine(context, engine: str, case: str, repeats: int, threads: int, profile: bool) -> Dict:
    """One engine and case in a fresh process: its row (or an error row)."""
    from queue import Empty

    config, batch = TRAIN_CASES[case]
    queue = context.Queue()
    worker = context.Process(target=_train_worker, args=(queue, engine, os.path.join(ROOT, config), batch, repeats,
                                                         threads, profile))
    worker.start()
    row = None
    while row is None:
        try:
            row = queue.get(timeout=5)
        except Empty:  # still running, or died without a word (a crash in a kernel)
            if not worker.is_alive() and queue.empty():
                row = {'engine': ENGINE_NAMES[engine], 'error': f'exited with code {worker.exitcode}'}
    worker.join()
    row['case'] = case
    return row


def bench_train(args) -> Dict:
    """Seconds per training iteration and peak memory, each engine and case in its own fresh process. With
    ``args.rounds`` > 1 the engines take turns, round after round, and a row's time is the median of its rounds'
    medians: a slow spell of a shared machine then hits every engine instead of the one that ran during it."""
    import multiprocessing

    threads = int(os.environ.get('OMP_NUM_THREADS', 0)) or os.cpu_count()
    os.environ['OMP_NUM_THREADS'] = str(threads)  # the children's Paddle reads it at import
    context = multiprocessing.get_context('spawn')
    engines = [e for e in args.engines if e != 'torch' or torch_reference_available()]
    if len(engines) < len(args.engines):
        logger.info(NO_TORCH)
    rows = []
    for case in args.cases:
        runs = {engine: [] for engine in engines}
        for turn in range(args.rounds):
            for engine in engines:
                row = _run_train_engine(context, engine, case, args.repeats, threads, args.profile and turn == 0)
                runs[engine].append(row)
                logger.info('%s, %s, round %d/%d: %s', case, row['engine'], turn + 1, args.rounds,
                            row.get('error') or f"{row['s_per_iter']:.3f} s per iteration, "
                                                f"peak {row['peak_rss_mib']} MiB")
        for engine in engines:
            failed = [r for r in runs[engine] if 'error' in r]
            if failed:
                rows.append(failed[0])
                continue
            row = dict(runs[engine][0])
            row['round_s_per_iter'] = [r['s_per_iter'] for r in runs[engine]]
            row['s_per_iter'] = statistics.median(row['round_s_per_iter'])  # memory: the first round's
            rows.append(row)
    layouts = bench_conv_layouts(args.repeats, threads) if args.conv_layouts else []
    return {'benchmark': 'train', 'machine': machine_info(), 'threads': threads, 'repeats': args.repeats,
            'rounds': args.rounds, 'rows': rows, 'conv_layouts': layouts}


def train_table(result: Dict) -> str:
    lines = [f"train: seconds per iteration (forward, loss, backward, SGD step) on random clips, "
             f"{result['threads']} threads, median of {result['repeats']}"
             + (f", median of {result['rounds']} rounds in turn" if result.get('rounds', 1) > 1 else ''),
             '| case | engine | batch | s / iter | vs Paddle dygraph | vs PyTorch | peak RSS MiB | of which steps |',
             '|---|---|---|---|---|---|---|---|']
    for case in dict.fromkeys(r['case'] for r in result['rows']):
        rows = [r for r in result['rows'] if r['case'] == case]
        ok = {r['engine']: r for r in rows if 'error' not in r}
        base = ok.get(ENGINE_NAMES['dygraph'])
        torch_row = ok.get(ENGINE_NAMES['torch'])
        for r in rows:
            if 'error' in r:
                lines.append(f"| {case} | {r['engine']} | | failed: {r['error'][:120]} | | | | |")
                continue
            vs_base = f"{r['s_per_iter'] / base['s_per_iter']:.2f}x" if base else ''
            vs_torch = f"{r['s_per_iter'] / torch_row['s_per_iter']:.2f}x" if torch_row else ''
            lines.append(f"| {case} ({r['config']}, {r['frames']} frames, {r['crop']}px) | {r['engine']} | "
                         f"{r['batch']} | {r['s_per_iter']:.3f} | {vs_base} | {vs_torch} | {r['peak_rss_mib']} | "
                         f"{r['peak_rss_mib'] - r['rss_before_steps_mib']} |")
    for r in result['rows']:
        if r.get('profile'):
            lines.append(f"\nPaddle dygraph, {r['case']}: operators by CPU time per iteration (paddle.profiler)")
            lines.append('| operator | ms | share |')
            lines.append('|---|---|---|')
            lines.extend(f"| {p['op']} | {p['ms']} | {p['share']:.1%} |" for p in r['profile'])
    if result.get('conv_layouts'):
        lines += ['\none 3D convolution, forward + backward (input gradient included), batch 1: Paddle dygraph '
                  'conv3d channels-first / channels-last, conv3d_by_frames, PyTorch eager',
                  '| layer | NCDHW ms | NDHWC ms | by frames ms | PyTorch ms | NCDHW / PyTorch | '
                  'by frames / PyTorch |', '|---|---|---|---|---|---|---|']
        for r in result['conv_layouts']:
            torch_ms = r.get('torch')
            versus = [f"{r[key] / torch_ms:.2f}x" if torch_ms else '' for key in ('NCDHW', 'by_frames')]
            lines.append(f"| {r['layer']} | {r['NCDHW']} | {r['NDHWC']} | {r['by_frames']} | {torch_ms or ''} | "
                         f"{versus[0]} | {versus[1]} |")
    lines.append('machine: ' + ', '.join(f'{k} {v}' for k, v in result['machine'].items()))
    return '\n'.join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--cases', nargs='+', default=list(TRAIN_CASES), choices=list(TRAIN_CASES),
                        help='full: slowfast.yaml (4x16 R50, 224 crop) at batch 1; tiny: configs/slowfast_demo.yaml '
                             'at batch 8 (default: both)')
    parser.add_argument('--engines', nargs='+', default=list(TRAIN_ENGINES), choices=TRAIN_ENGINES)
    parser.add_argument('--repeats', type=int, default=5, help='timed steps per process (default: %(default)s)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='run the engines in turn this many times; the table shows the median of the rounds '
                             '(default: %(default)s)')
    parser.add_argument('--profile', action='store_true', help='also list the Paddle dygraph step\'s top operators')
    parser.add_argument('--conv_layouts', '--conv-layouts', action='store_true',
                        help='also time representative 3D convolutions channels-first vs channels-last')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args(argv)
    setup_logging()
    if args.json:  # before the measuring
        check_output_file(args.json, '--json')
    result = bench_train(args)
    report(result, train_table(result), args.json)


if __name__ == '__main__':
    exit_on_user_error(main, logger)
