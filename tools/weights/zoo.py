"""Published Kinetics-400 checkpoints of the shipped configs: list them, download one, convert it, and print the
commands that evaluate and fine-tune it.

    python tools/weights/zoo.py list
    python tools/weights/zoo.py get pytorchvideo-slowfast-r50 --out weights
    python tools/weights/zoo.py get pyslowfast-slowfast-4x16-r50 --file SLOWFAST_4x16_R50.pkl   # a file you have
    python tools/weights/zoo.py get paddlevideo-slowfast-4x16 --url http://mirror.lab/SlowFast.pdparams

A download goes to ``OUT/downloads/`` through a ``.part`` file: an interrupted one resumes where it stopped (HTTP
Range) when the command is run again, and the file appears under its name only when complete and verified (its
SHA-256 against ``--sha256`` or a recorded one; the publishers give none). The converted weights are
``OUT/NAME.pdparams``. The figures are each publisher's own for that file (10x3 views, K400 validation); this
project has not re-measured them (no weights can be downloaded where it is built).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from config_utils import setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from model_zoo import find, get, table  # noqa: E402

logger = logging.getLogger('zoo')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    verbs = parser.add_subparsers(dest='verb', required=True)
    verbs.add_parser('list', help='the published checkpoints, their configs and the publishers\' figures')
    fetch = verbs.add_parser('get', help='download and convert one')
    fetch.add_argument('name', help='a name from `list`')
    fetch.add_argument('--out', default='weights', help='folder of the download and the converted weights')
    fetch.add_argument('--file', help='convert this file instead of downloading (offline)')
    fetch.add_argument('--url', help='download from this address instead (a mirror)')
    fetch.add_argument('--sha256', help='the file\'s expected SHA-256 (hex)')
    fetch.add_argument('--allow_pickle', '--allow-pickle', action='store_true',
                       help='read a file holding objects other than tensors with torch.load / paddle.load, which can '
                            'run code from it (trusted files only)')
    args = parser.parse_args(argv)
    setup_logging()
    if args.verb == 'list':
        sys.stdout.write(table() + '\n')
        return 0
    get(find(args.name), args.out, args.file, args.url, args.sha256, args.allow_pickle)
    return 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
