"""Inference speed, measured side by side in one run: milliseconds per view of the full network (``--config``, default
slowfast.yaml: the 4x16 R50) at ``--size`` pixels, batch 1 and 8: Paddle dygraph (eval mode, no grad), Paddle
Inference on the exported model (oneDNN; and on an export without its rewrites: batch norms kept, 3D pools), and,
when torch and pytorchvideo are importable, PyTorch eager (``create_slowfast`` with the same settings), all with the
same input and thread count; random weights (timing does not depend on them).

    python tools/analysis/benchmark_infer.py [--size 256] [--batches 1 8] [--repeats 5] [--rounds 3] [--json out.json]
"""
import argparse
import logging
import os
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

logger = logging.getLogger('benchmark_infer')


def bench_infer(args) -> Dict:
    """ms per view for each engine and batch size, measured in turns in one process."""
    import tempfile

    from inference import InferenceModel, export
    from config_utils import input_shapes
    from model import build_model

    threads = int(os.environ.get('OMP_NUM_THREADS', 0)) or os.cpu_count()
    cfg = parse_config(args.config, args.override)
    tune_cpu_blas()  # as eval.py and predict.py on a CPU
    paddle.set_device('cpu')
    paddle.seed(0)
    model = build_model(cfg)
    model.eval()
    engines: Dict[str, Callable] = {}
    with tempfile.TemporaryDirectory() as folder:
        export(model, cfg, args.size, os.path.join(folder, 'model'))
        exported = InferenceModel(os.path.join(folder, 'model'), threads=threads)
        export(model, cfg, args.size, os.path.join(folder, 'unfolded'), fold=False)
        unfolded = InferenceModel(os.path.join(folder, 'unfolded'), threads=threads)

        def dygraph(clips):
            with paddle.no_grad():
                return model([paddle.to_tensor(c) for c in clips]).numpy()

        engines['Paddle dygraph'] = dygraph
        engines['Paddle Inference (oneDNN)'] = lambda clips: exported(clips).numpy()
        engines['Paddle Inference, export not rewritten'] = lambda clips: unfolded(clips).numpy()
        if torch_reference_available():
            import torch
            from torch_reference import build_reference, run_reference

            torch.set_num_threads(threads)
            reference = build_reference(cfg).eval()

            def torch_eager(clips):
                with torch.no_grad():
                    return run_reference(reference, clips).numpy()

            engines['PyTorch eager (pytorchvideo)'] = torch_eager
        else:
            logger.info(NO_TORCH)
        rows = []
        rng = np.random.default_rng(0)
        for batch in args.batches:
            clips = [rng.standard_normal([batch] + shape).astype(np.float32) for shape in input_shapes(cfg, args.size)]
            times: Dict[str, List[float]] = {name: [] for name in engines}
            for round_ in range(args.rounds):  # the engines take turns: a slow spell of the machine hits all
                for name, run in engines.items():
                    times[name].append(median_ms(lambda: run(clips), args.repeats) / batch)
                    logger.info('%s, batch %d, round %d/%d: %.1f ms per view', name, batch, round_ + 1, args.rounds,
                                times[name][-1])
            rows += [{'engine': name, 'batch': batch, 'ms_per_view': round(float(np.median(ms)), 1),
                      'rounds': [round(m, 1) for m in ms]} for name, ms in times.items()]
    return {'benchmark': 'infer', 'machine': machine_info(), 'config': ' '.join([args.config] + args.override),
            'size': args.size, 'threads': threads, 'repeats': args.repeats, 'rounds': args.rounds,
            'rows': rows}


def infer_table(result: Dict) -> str:
    lines = [f"infer: {result['config']}, {result['size']}x{result['size']} views, {result['threads']} threads, "
             f"median of {result['repeats']}" + (f", median of {result['rounds']} rounds in turn"
                                                 if result.get('rounds', 1) > 1 else ''),
             '| engine | batch | ms / view | vs Paddle Inference |', '|---|---|---|---|']
    base = {r['batch']: r['ms_per_view'] for r in result['rows'] if r['engine'] == 'Paddle Inference (oneDNN)'}
    for r in result['rows']:
        lines.append(f"| {r['engine']} | {r['batch']} | {r['ms_per_view']:.1f} | "
                     f"{r['ms_per_view'] / base[r['batch']]:.2f}x |")
    lines.append('machine: ' + ', '.join(f'{k} {v}' for k, v in result['machine'].items()))
    return '\n'.join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--config', default=os.path.join(ROOT, 'slowfast.yaml'))
    parser.add_argument('--size', type=int, default=256, help='view size in pixels (default: %(default)s)')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per engine and round (default: 5)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='the engines take turns this many times; the table shows the median of the rounds')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value',
                        help='config override, e.g. -o MODEL.alpha=4 -o MODEL.fusion_kernel_size=7 (8x8)')
    args = parser.parse_args(argv)
    setup_logging()
    if args.json:  # before the measuring
        check_output_file(args.json, '--json')
    result = bench_infer(args)
    report(result, infer_table(result), args.json)


if __name__ == '__main__':
    exit_on_user_error(main, logger)
