"""What a CPU-only machine cannot check, for a CUDA machine: mixed precision and Paddle Inference on the GPU.

    python tools/analysis/check_gpu.py [--config slowfast.yaml] [--batch 8] [--steps 50] [--json gpu.json]

1. Seconds per training iteration of the network of ``--config`` (the full 4x16 R50 by default, 224x224 crops) in
   float32 and with ``TRAIN.use_amp`` in float16 (and bfloat16 when the GPU supports it), side by side, each the
   median of ``--steps`` steps after three warm-up steps, on one fixed random batch.
2. The AMP runs' loss stays finite over those steps and falls (the fixed batch is learnt).
3. The model exported for Paddle Inference, run on the GPU, gives the dygraph network's probabilities within 1e-4.

The steps are the training step's own: ``model_utils.autocast`` and, for float16, dynamic loss scaling as
train.py does. Without CUDA it says so and exits 0. Exit status 1 when a check fails.
"""
import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import paddle  # before setup_logging: importing Paddle 2.6 resets the root log level
import paddle.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from atomic import check_output_file  # noqa: E402
from config_utils import input_shapes, parse_config, setup_logging  # noqa: E402
from distributed import cuda_available  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from inference import InferenceModel, export  # noqa: E402
from lr_policy import apply_step  # noqa: E402
from model import build_model  # noqa: E402
from model_utils import autocast  # noqa: E402

logger = logging.getLogger('check_gpu')
TOLERANCE = 1e-4


def synchronize() -> None:
    if paddle.device.get_device().startswith('gpu'):
        paddle.device.cuda.synchronize()


def train_steps(cfg, amp_dtype, steps: int, batch: int, seed: int = 0):
    """``(seconds of each step, loss of each step)``: ``steps`` + 3 training steps of the network ``cfg`` builds on
    one random batch, in float32 (``amp_dtype`` None) or under the training step's autocast in ``amp_dtype``."""
    paddle.seed(seed)
    model = build_model(cfg)
    model.train()
    optimizer = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, use_nesterov=True,
                                          parameters=model.parameters())
    scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 16) if amp_dtype == 'float16' else None
    rng = np.random.default_rng(seed)
    inputs = [paddle.to_tensor(rng.standard_normal([batch] + shape).astype(np.float32))
              for shape in input_shapes(cfg, cfg.MODEL.crop_size)]
    labels = paddle.to_tensor(rng.integers(0, cfg.MODEL.num_classes, (batch, 1)))
    seconds, losses = [], []
    for _ in range(steps + 3):
        synchronize()
        start = time.perf_counter()
        with autocast(amp_dtype is not None, amp_dtype or 'float16'):
            loss = F.cross_entropy(model(inputs).astype('float32'), labels)
        (scaler.scale(loss) if scaler else loss).backward()
        apply_step(optimizer, scaler)
        losses.append(float(loss))
        synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds[3:], losses


def inference_difference(cfg, size: int, gpu_id) -> float:
    """Max abs difference between the dygraph eval network and its export under Paddle Inference (on ``gpu_id``, or
    the CPU when None), on two random clips."""
    model = build_model(cfg)
    model.eval()
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal([2] + shape).astype(np.float32) for shape in input_shapes(cfg, size)]
    with paddle.no_grad():
        expected = model([paddle.to_tensor(c) for c in clips]).numpy()
    with tempfile.TemporaryDirectory() as folder:
        export(model, cfg, size, folder)
        got = InferenceModel(folder, gpu_id=gpu_id)(clips).numpy()
    return float(np.abs(got - expected).max())


def bf16_supported() -> bool:
    try:
        return paddle.amp.is_bfloat16_supported()
    except (AttributeError, RuntimeError):
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--config', default=os.path.join(ROOT, 'slowfast.yaml'))
    parser.add_argument('--batch', type=int, default=8, help='clips per step (default: %(default)s)')
    parser.add_argument('--steps', type=int, default=50, help='timed steps per precision (default: %(default)s)')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value')
    args = parser.parse_args(argv)
    setup_logging()
    if args.json:  # before the measuring
        check_output_file(args.json, '--json')
    if not cuda_available():
        logger.info('no CUDA device in this Paddle (compiled with CUDA: %s): nothing to check on this machine',
                    paddle.device.is_compiled_with_cuda())
        return 0
    paddle.set_device('gpu')
    cfg = parse_config(args.config, args.override)
    result = {'device': paddle.device.cuda.get_device_name(), 'paddle': paddle.__version__, 'batch': args.batch,
              'steps': args.steps, 'config': args.config, 'runs': {}}
    failed = []
    for dtype in [None, 'float16'] + (['bfloat16'] if bf16_supported() else []):
        seconds, losses = train_steps(cfg, dtype, args.steps, args.batch)
        name = dtype or 'float32'
        result['runs'][name] = {'s_per_iter': statistics.median(seconds), 'first_loss': losses[0],
                                'last_loss': losses[-1], 'finite': all(np.isfinite(losses))}
        logger.info('%s: %.4f s / iteration (median of %d), loss %.4f -> %.4f', name,
                    result['runs'][name]['s_per_iter'], args.steps, losses[0], losses[-1])
        if dtype and not (result['runs'][name]['finite'] and losses[-1] < losses[0]):
            failed.append(f'{name}: the loss is not finite or did not fall ({losses[0]:.4f} -> {losses[-1]:.4f})')
    fp32 = result['runs']['float32']['s_per_iter']
    for name, run in result['runs'].items():
        logger.info('%s: %.2fx the float32 step time', name, run['s_per_iter'] / fp32)
    result['inference_difference'] = inference_difference(cfg, cfg.INFER.target_size, gpu_id=0)
    logger.info('Paddle Inference on the GPU vs dygraph: max abs difference %.2e', result['inference_difference'])
    if not result['inference_difference'] <= TOLERANCE:
        failed.append(f'Paddle Inference differs by {result["inference_difference"]:.2e} (> {TOLERANCE})')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    for message in failed:
        logger.error(message)
    return 1 if failed else 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
