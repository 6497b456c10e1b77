"""Convert a published SlowFast checkpoint into this project's ``.pdparams``.

    python tools/weights/convert_weights.py --src SLOWFAST_8x8_R50.pyth --dst weights/slowfast_8x8.pdparams
    python tools/weights/convert_weights.py --src slowfast_16x8_r101_50_50.pyth --dst weights/sf16x8.pdparams \
        --config configs/slowfast_16x8_r101_50_50.yaml

Without ``--config`` the model is recognised from the file's tensors (depth, temporal kernels, fusion kernel,
widths, classes) among the shipped configs (``slowfast.yaml``, ``configs/*.yaml``), and the log names the config to
evaluate it with; the frame-rate ratio ``alpha`` is not in the weights and comes from that config.

Formats (PySlowFast .pyth and Caffe2 .pkl, pytorchvideo .pyth, PaddleVideo and the original port's .pdparams), how
every tensor is mapped and checked, and why no file runs code (``--allow_pickle`` lifts that for a file you trust):
weight_conversion.py, which this command runs.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from atomic import check_output_file  # noqa: E402
from config_utils import setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from weight_conversion import ARCHS, FORMATS, ROOT, convert_file  # noqa: E402

logger = logging.getLogger('convert_weights')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--src', required=True, help='checkpoint to convert (.pyth, .pth, .pkl, .pdparams)')
    parser.add_argument('--dst', required=True, help='output .pdparams')
    parser.add_argument('--arch', choices=sorted(ARCHS), help='4x16 (alpha 8, fusion kernel 5) or 8x8 (4, 7); '
                        'default: as the config')
    parser.add_argument('--config', help='config whose MODEL the weights must fit (default: recognised from the '
                        'weights among the shipped ones; slowfast.yaml with --arch)')
    parser.add_argument('--format', default='auto', choices=('auto',) + FORMATS, help='source format (detected)')
    parser.add_argument('--allow_pickle', '--allow-pickle', action='store_true',
                        help='read a .pyth or .pdparams holding objects other than tensors with torch.load / '
                             'paddle.load, which can run code from the file (trusted files only)')
    parser.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value')
    args = parser.parse_args(argv)
    setup_logging()
    overrides = list(args.override)
    if args.arch:
        overrides += [f'MODEL.{k}={v}' for k, v in ARCHS[args.arch].items()]
    config = args.config or (os.path.join(ROOT, 'slowfast.yaml') if args.arch else None)
    check_output_file(args.dst if args.dst.endswith('.pdparams') else args.dst + '.pdparams', '--dst')
    convert_file(args.src, args.dst, config, overrides, args.format, args.allow_pickle)
    return 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
