"""The published Kinetics-400 checkpoints of the shipped configs (``ENTRIES``: address, config, the publisher's
figures and test protocol) and how one becomes weights here: ``get`` downloads (or takes a file), verifies and
converts it. Used by tools/weights/zoo.py (its command line), recognizer.py (``Recognizer.from_zoo``), hubconf.py
and tools/data/get_kinetics.py.

A download goes to ``OUT/downloads/`` through a ``.part`` file: an interrupted one resumes where it stopped (HTTP
Range) when asked again, and the file appears under its name only when complete and verified (its SHA-256 against
the one given or recorded; the publishers give none). The converted weights are ``OUT/NAME.pdparams``. The figures
are each publisher's own for that file (10x3 views, K400 validation); this project has not re-measured them (no
weights can be downloaded where it is built).
"""
import logging
import os
import shlex
import urllib.parse
from typing import List, NamedTuple, Optional, Sequence, Tuple

from atomic import check_output_folder
from config_utils import parse_config
from download import download as fetch, sha256_of
from errors import WeightsError
from weight_conversion import UnreadableCheckpoint, convert_file

logger = logging.getLogger('zoo')

ROOT = os.path.dirname(os.path.abspath(__file__))

PYSLOWFAST = 'https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400'
PYTORCHVIDEO = 'https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics'
PADDLEVIDEO = 'https://videotag.bj.bcebos.com/PaddleVideo/SlowFast'
PAGES = {'PySlowFast': 'https://github.com/facebookresearch/SlowFast/blob/main/MODEL_ZOO.md',
         'pytorchvideo': 'https://github.com/facebookresearch/pytorchvideo/blob/main/docs/source/model_zoo.md',
         'PaddleVideo': 'https://github.com/PaddlePaddle/PaddleVideo/blob/develop/docs/en/model_zoo/recognition/'
                        'slowfast.md'}


class Protocol(NamedTuple):
    """How the publisher tested the file for its figures, as its own config says: frames and stride of the clip, the
    frame-rate ratio (1: Slow-only), the short side the frames are scaled to and the crop side, clips x crops per
    video, the resize, and where that config is (repository and path). Every publisher normalises with mean 0.45 and
    std 0.225 over RGB / 255, as the shipped configs do."""
    frames: int
    rate: int
    alpha: int
    short_side: int
    crop: int
    resize: str
    source: str
    views: Tuple[int, int] = (10, 3)


SF = 'facebookresearch/SlowFast'
PV = 'PaddlePaddle/PaddleVideo'
TORCH_RESIZE = 'bilinear (torch interpolate, no antialias)'
PIL_RESIZE = 'bilinear (PIL, antialiased when shrinking)'


def _c2(name: str, frames: int, rate: int, alpha: int) -> Protocol:
    return Protocol(frames, rate, alpha, 256, 256, TORCH_RESIZE, f'{SF}/configs/Kinetics/c2/{name}.yaml')


def _ptv(name: str, frames: int, rate: int, alpha: int) -> Protocol:
    # PySlowFast's ptvkinetics test: ShortSideScale(TRAIN_JITTER_SCALES[0] = 256), UniformCropVideo(256)
    return Protocol(frames, rate, alpha, 256, 256, TORCH_RESIZE, f'{SF}/configs/Kinetics/pytorchvideo/{name}.yaml')


class Entry(NamedTuple):
    name: str
    source: str              # the publisher (a key of PAGES)
    url: str                 # the address as the publisher gives it
    config: str              # the shipped config the weights fit, relative to the repository
    top1: float              # the publisher's K400 figures for this very file
    top5: float
    protocol: Protocol       # the publisher's test protocol for these figures
    note: str = ''
    sha256: Optional[str] = None  # recorded checksum; None: the publisher gives none and none was recorded


ENTRIES = (
    Entry('pyslowfast-slowfast-4x16-r50', 'PySlowFast', f'{PYSLOWFAST}/SLOWFAST_4x16_R50.pkl', 'slowfast.yaml',
          75.6, 92.0, _c2('SLOWFAST_4x16_R50', 32, 2, 8), 'Caffe2; the original recipe'),
    Entry('pyslowfast-slowfast-8x8-r50', 'PySlowFast', f'{PYSLOWFAST}/SLOWFAST_8x8_R50.pkl',
          'configs/slowfast_r50_8x8.yaml', 77.0, 92.6, _c2('SLOWFAST_8x8_R50', 32, 2, 4), 'Caffe2'),
    Entry('pyslowfast-slow-4x16-r50', 'PySlowFast', f'{PYSLOWFAST}/SLOWONLY_4x16_R50.pkl',
          'configs/slow_r50_4x16.yaml', 72.7, 90.3, _c2('SLOW_4x16_R50', 4, 16, 1), 'Caffe2'),
    Entry('pyslowfast-slow-8x8-r50', 'PySlowFast', f'{PYSLOWFAST}/SLOWONLY_8x8_R50.pkl', 'configs/slow_r50_8x8.yaml',
          74.8, 91.6, _c2('SLOW_8x8_R50', 8, 8, 1), 'Caffe2'),
    Entry('pytorchvideo-slowfast-4x16-r50', 'pytorchvideo', f'{PYTORCHVIDEO}/SLOWFAST_4x16_R50.pyth',
          'slowfast.yaml', 75.34, 91.89, _ptv('SLOWFAST_4x16_R50', 32, 2, 8), 'trained with PySlowFast'),
    Entry('pytorchvideo-slowfast-r50', 'pytorchvideo', f'{PYTORCHVIDEO}/SLOWFAST_8x8_R50.pyth',
          'configs/slowfast_r50_8x8.yaml', 76.94, 92.69, _ptv('SLOWFAST_8x8_R50', 32, 2, 4), 'hub: slowfast_r50'),
    Entry('pytorchvideo-slowfast-r101', 'pytorchvideo', f'{PYTORCHVIDEO}/SLOWFAST_8x8_R101.pyth',
          'configs/slowfast_r101_8x8.yaml', 77.90, 93.27, _ptv('SLOWFAST_8x8_R101', 32, 2, 4), 'hub: slowfast_r101'),
    Entry('pytorchvideo-slowfast-16x8-r101-50-50', 'pytorchvideo', f'{PYTORCHVIDEO}/SLOWFAST_16x8_R101_50_50.pyth',
          'configs/slowfast_16x8_r101_50_50.yaml', 78.70, 93.61, _ptv('SLOWFAST_16x8_R101_50_50', 64, 2, 4),
          'hub: slowfast_16x8_r101_50_50'),
    Entry('pytorchvideo-slow-r50', 'pytorchvideo', f'{PYTORCHVIDEO}/SLOW_8x8_R50.pyth', 'configs/slow_r50_8x8.yaml',
          74.58, 91.63, _ptv('SLOW_8x8_R50', 8, 8, 1), 'hub: slow_r50'),
    Entry('pytorchvideo-slow-4x16-r50', 'pytorchvideo', f'{PYTORCHVIDEO}/SLOW_4x16_R50.pyth',
          'configs/slow_r50_4x16.yaml', 72.40, 90.18, _ptv('SLOW_4x16_R50', 4, 16, 1)),
    Entry('paddlevideo-slowfast-4x16', 'PaddleVideo', f'{PADDLEVIDEO}/SlowFast.pdparams', 'slowfast.yaml',
          74.35, 91.33, Protocol(32, 2, 8, 256, 256, PIL_RESIZE, f'{PV}/configs/recognition/slowfast/slowfast.yaml'),
          'measured on a K400 copy missing ~5 % of the videos'),
    # tested at 224 since PaddleVideo's commit f55800e1 ("fix bug, acc aligned"), as PySlowFast's multigrid config
    Entry('paddlevideo-slowfast-8x8', 'PaddleVideo', f'{PADDLEVIDEO}/SlowFast_8*8.pdparams',
          'configs/slowfast_r50_8x8.yaml', 75.84, 92.33,
          Protocol(32, 2, 4, 224, 224, PIL_RESIZE, f'{PV}/configs/recognition/slowfast/slowfast_multigrid.yaml'),
          'trained with multigrid; K400 copy missing ~5 %'),
)
NO_NETWORK_HINT = 'download it on a machine that can, then run: python tools/weights/zoo.py get {name} --file PATH'


class DownloadError(WeightsError):
    """A download that did not give a complete, verified checkpoint; the message names the address."""


def find(name: str, entries=ENTRIES) -> Entry:
    for entry in entries:
        if entry.name == name:
            return entry
    raise WeightsError(f'no published checkpoint named {name!r}; `python tools/weights/zoo.py list` names them all')


def download(url: str, dest: str, sha256: Optional[str] = None, name: str = 'NAME') -> str:
    """``download.download`` of a checkpoint: a failure is a DownloadError (a WeightsError) that names the address and
    how to go on."""
    return fetch(url, dest, sha256, error=DownloadError, unreachable=NO_NETWORK_HINT.format(name=name),
                 expected='a checkpoint', moved='the address may have moved: see the publisher\'s page linked in '
                 'docs/MODEL_ZOO.md')


def protocol_overrides(entry: Entry) -> List[str]:
    """The ``-o`` overrides that make eval.py (and predict.py) test ``entry`` as its publisher did: the keys of its
    config that differ from the protocol (the short side and crop are ``TEST.target_size``: 3 crops of the short
    side)."""
    cfg = parse_config(os.path.join(ROOT, entry.config))
    p = entry.protocol
    wanted = {'target_size': p.short_side, 'num_ensemble_views': p.views[0], 'num_spatial_crops': p.views[1]}
    return [f'{section}.{key}={value}' for section in ('TEST', 'INFER') for key, value in wanted.items()
            if cfg[section][key] != value]


def commands(entry: Entry, weights: str, overrides: Sequence[str] = ()) -> str:
    """What to run next, printed by ``get``: every line runs as printed (the fine-tune lines once ``my_videos`` holds
    your videos, a folder per class)."""
    model = ''.join(f' -o {shlex.quote(o)}' for o in overrides)
    protocol = ''.join(f' -o {o}' for o in protocol_overrides(entry))
    p = entry.protocol
    lists = 'data/mine'
    return '\n'.join((
        f'evaluate on Kinetics-400 as {entry.source} did ({p.frames} frames x {p.rate}, short side {p.short_side}, '
        f'{p.views[0]}x{p.views[1]} views; lists: tools/data/make_lists.py kinetics):',
        f'    python eval.py --config {entry.config} --weights {shlex.quote(weights)}{model}{protocol} '
        '-o TEST.filelist=data/val.csv',
        'fine-tune on your classes (my_videos/<class>/<video>):',
        f'    python tools/data/make_lists.py folders --videos my_videos --out {lists}',
        f'    python train.py --config {entry.config} --weights {shlex.quote(weights)}{model} '
        f'-o MODEL.num_classes=$(grep -c . {lists}/classes.txt) -o DATA.label_map={lists}/classes.txt '
        f'-o TRAIN.filelist={lists}/train.csv -o VALID.filelist={lists}/val.csv'))


def get(entry: Entry, out: str, file: Optional[str] = None, url: Optional[str] = None,
        sha256: Optional[str] = None, allow_pickle: bool = False) -> str:
    """Download (unless ``file``) and convert ``entry``; returns the converted weights' path without extension.
    ``out`` is checked for writing first (``atomic.check_output_folder``)."""
    check_output_folder(os.path.join(out, 'downloads') if file is None else out, '--out')
    sha256 = sha256 or entry.sha256
    downloaded = file is None
    if file is None:
        url = url or entry.url
        file_name = urllib.parse.unquote(os.path.basename(urllib.parse.urlsplit(entry.url).path))
        file = os.path.join(out, 'downloads', file_name)
        if os.path.isfile(file) and (sha256 is None or sha256_of(file) == sha256.lower()):
            logger.info('%s is already downloaded', file)
        else:
            logger.info('downloading %s from %s', entry.name, url)
            digest = download(url, file, sha256, entry.name)
            logger.info('%s: SHA-256 %s%s', file, digest, ' (verified)' if sha256 else '')
    elif not os.path.isfile(file):
        raise WeightsError(f'{file}: no such file')
    weights = os.path.join(out, entry.name)
    try:
        config, overrides = convert_file(file, weights + '.pdparams', os.path.join(ROOT, entry.config),
                                         allow_pickle=allow_pickle)
    except UnreadableCheckpoint as error:
        if not downloaded:
            raise
        # a body cut short without a Content-Length looks complete: move it aside, or every run would stop here
        aside = '.unreadable'.join(os.path.splitext(file))  # the extension kept: still read as its format
        os.replace(file, aside)
        raise DownloadError(f'{error}. The download does not load (cut short by a server that did not announce its '
                            f'size?): it was moved to {aside}; run the same command again to download it '
                            'again') from None
    logger.info('%s: %s top-1 %.2f, top-5 %.2f (the publisher\'s)\n%s', entry.name, entry.source, entry.top1,
                entry.top5, commands(entry, weights, overrides))
    return weights


def cache_dir() -> str:
    """Where ``Recognizer.from_zoo`` and hubconf.py keep the downloads and converted weights: ``$SLOWFAST_CACHE``,
    else ``~/.cache/slowfast_paddle``."""
    return os.environ.get('SLOWFAST_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'slowfast_paddle')


def cached(entry: Entry, out: Optional[str] = None, file: Optional[str] = None, url: Optional[str] = None,
           sha256: Optional[str] = None, allow_pickle: bool = False) -> str:
    """``entry``'s converted weights in ``out`` (default ``cache_dir()``), without extension: those converted
    before when they are there (and no ``file`` is given), else ``get``'s."""
    out = out or cache_dir()
    weights = os.path.join(out, entry.name)
    if file is None and os.path.isfile(weights + '.pdparams'):
        logger.info('%s: converted weights from %s', entry.name, weights + '.pdparams')
        return weights
    return get(entry, out, file, url, sha256, allow_pickle)


def table(entries=ENTRIES) -> str:
    rows = [('name', 'source', 'config', 'top-1', 'top-5', 'address')]
    rows += [(e.name, e.source, e.config, f'{e.top1:.2f}', f'{e.top5:.2f}', e.url) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(row, widths)) + '  ' + row[-1] for row in rows)
