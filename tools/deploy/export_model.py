"""Export trained weights as a Paddle Inference model, check it against the dygraph network, optionally to ONNX.

    python tools/deploy/export_model.py --config slowfast.yaml --weights checkpoints/slowfast_epoch195 \
        --save_dir inference
    python predict.py --config slowfast.yaml --video my.mp4 -o INFER.use_inference=True -o INFER.model_dir=inference

The model takes its pathways' float32 clips (``[slow, fast]``; ``[slow]`` for Slow-only), normalised as in
training, of any batch size, with the config's frames and ``--size`` pixels (default ``INFER.target_size``, the test
view size), and returns class probabilities averaged over spatial positions, as the eval network does.
``--onnx`` also writes ``slowfast.onnx`` through paddle2onnx and checks it with onnxruntime (both optional:
``pip install paddle2onnx onnxruntime``).
"""
import argparse
import logging
import os
import sys

import numpy as np
import paddle  # before setup_logging: importing Paddle 2.6 resets the root log level

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from atomic import check_output_folder  # noqa: E402
from config_utils import input_shapes, parse_config, setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from inference import NAME, InferenceModel, export, model_files  # noqa: E402
from scoring import build_eval_model  # noqa: E402

logger = logging.getLogger('export_model')
TOLERANCE = 1e-4


def export_onnx(save_dir: str, clips, expected) -> float:
    """Write ``slowfast.onnx`` beside the Paddle model; returns the onnxruntime max abs difference."""
    import onnxruntime
    import paddle2onnx

    program, params, meta = model_files(save_dir)
    onnx_file = os.path.join(save_dir, NAME + '.onnx')
    paddle2onnx.export(program, params, onnx_file, opset_version=13)
    session = onnxruntime.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    got = session.run(None, dict(zip(meta['inputs'], clips)))[0]
    return float(np.abs(got - expected).max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--config', default='slowfast.yaml', help='config of the network (default: %(default)s)')
    parser.add_argument('--weights', required=True, help='.pdparams to export (the extension may be left out)')
    parser.add_argument('--save_dir', help='output folder (default: INFER.model_dir)')
    parser.add_argument('--size', type=int, help='view size in pixels (default: INFER.target_size)')
    parser.add_argument('--onnx', action='store_true', help='also export slowfast.onnx (needs paddle2onnx)')
    parser.add_argument('--allow_pickle', action='store_true',
                        help='read the weights with paddle.load, which can run code from the file (trusted files '
                             'only)')
    parser.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value')
    args = parser.parse_args(argv)
    setup_logging()
    cfg = parse_config(args.config, args.override)
    size = args.size or cfg.INFER.target_size
    save_dir = args.save_dir or cfg.INFER.model_dir
    if size < cfg.MODEL.crop_size:
        parser.error(f'--size {size} is smaller than MODEL.crop_size {cfg.MODEL.crop_size}')
    check_output_folder(save_dir, '--save_dir', '' if args.save_dir else 'not given: INFER.model_dir')

    paddle.set_device('cpu')
    model = build_eval_model(cfg, args.weights, args.allow_pickle)
    meta = export(model, cfg, size, save_dir, weights=args.weights)

    rng = np.random.default_rng(0)
    clips = [rng.standard_normal([2] + shape).astype(np.float32) for shape in input_shapes(cfg, size)]
    with paddle.no_grad():
        expected = model([paddle.to_tensor(c) for c in clips]).numpy()
    got = InferenceModel(save_dir)(clips).numpy()
    diff = float(np.abs(got - expected).max())
    logger.info('exported %s to %s: clips %s, any batch, %d batch norms folded into their convolutions, %d pools '
                'run as 2D pools; Paddle Inference vs dygraph max abs difference %.2e', args.weights, save_dir,
                ' + '.join(str(s) for s in input_shapes(cfg, size)), meta['folded_batch_norms'], meta['pools_as_2d'],
                diff)
    if not diff <= TOLERANCE:
        logger.error('the exported model differs from the dygraph network by %.2e (> %g)', diff, TOLERANCE)
        return 1
    if args.onnx:
        try:
            onnx_diff = export_onnx(save_dir, clips, expected)
        except ImportError as error:
            logger.error('--onnx needs paddle2onnx and onnxruntime (pip install paddle2onnx onnxruntime): %s', error)
            return 1
        logger.info('ONNX: %s, onnxruntime vs dygraph max abs difference %.2e', os.path.join(save_dir, 'slowfast.onnx'),
                    onnx_diff)
        if not onnx_diff <= TOLERANCE:
            logger.error('the ONNX model differs from the dygraph network by %.2e (> %g)', onnx_diff, TOLERANCE)
            return 1
    return 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
