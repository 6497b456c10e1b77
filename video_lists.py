"""Video lists: reading them (one video per line, ``path label`` (whitespace) or ``path,label`` (CSV); relative paths
resolve against ``DATA.path_prefix`` or else the list file's folder; infer lists may hold paths only), checking that
their files exist, the inputs of predict.py and Grad-CAM, and the class names of ``DATA.label_map``.
"""
import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, NamedTuple, Optional, Sequence, Tuple

from config_utils import AttrDict
from errors import ListError
from video_io import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

NO_LABEL = -1  # label of an infer-list line that holds only a path


class ListEntry(NamedTuple):
    path: str    # resolved video path
    label: int   # NO_LABEL when the line holds only a path
    line: int    # 1-based line number in the list file
    text: str    # the line as written
    given: str   # the path as written


def parse_video_list(list_path: str, num_classes: int, path_prefix: str = '',
                     labels_required: bool = True) -> List[ListEntry]:
    """The entries of a list file, in order; see ``read_video_list``."""
    if not os.path.isfile(list_path):
        raise ListError(f'video list not found: {list_path}')
    root = path_prefix or os.path.dirname(os.path.abspath(list_path))
    with open(list_path, encoding='utf-8-sig') as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith('#')]
    if not lines:
        raise ListError(f'video list is empty: {list_path}')
    first = next(csv.reader([lines[0][1]]))
    is_csv = len(first) == 2
    if is_csv and not _is_int(first[1]) and labels_required:
        lines = lines[1:]  # a header row such as "path,label"
    entries = []
    for n, line in lines:
        fields = [x.strip() for x in (next(csv.reader([line])) if is_csv else line.rsplit(None, 1))]
        if len(fields) == 2 and _is_int(fields[1]):
            path, label = fields[0], int(fields[1])
            if not 0 <= label < num_classes:
                raise ListError(f'{list_path}:{n}: label {label} is outside [0, {num_classes}) '
                                f'(MODEL.num_classes={num_classes})')
        elif not labels_required:
            path, label = fields[0] if is_csv else line, NO_LABEL
        else:
            raise ListError(f"{list_path}:{n}: expected 'path label' (or 'path,label') with an integer label, "
                            f'got {line!r}')
        entries.append(ListEntry(os.path.join(root, os.path.expanduser(path)), label, n, line, path))
    return entries


def check_listed_files(samples: Sequence[Tuple[str, int]], source: str, path_prefix: str) -> None:
    """Stat every listed video before anything heavy starts (threads: a network filesystem answers many requests at
    once; 250k local entries take about a second, docs/BENCHMARKS.md). When more than half of them are missing, most
    likely ``DATA.path_prefix`` or the list is wrong: ListError naming how many, the first as resolved and the
    prefix. When fewer are missing, a warning with the count (they are then skipped or substituted as undecodable)."""
    paths = list(dict.fromkeys(path for path, _ in samples))
    if not paths:  # recognizer.py's views of videos given one at a time
        return
    threads = min(32, len(paths))
    with ThreadPoolExecutor(max_workers=threads) as pool:  # a share each (one task per path costs more than a stat)
        shares = list(pool.map(lambda share: [p for p in share if not os.path.isfile(p)],
                               [paths[i::threads] for i in range(threads)]))
    missing = sorted((p for share in shares for p in share), key={p: i for i, p in enumerate(paths)}.get)
    if not missing:
        return
    what = f'{source}: {len(missing)} of {len(paths)} listed videos do not exist (the first: {missing[0]})'
    prefix = (f'DATA.path_prefix is {path_prefix!r}' if path_prefix
              else "DATA.path_prefix is '' (relative paths resolve against the list's folder)")
    if 2 * len(missing) > len(paths):
        raise ListError(f'{what}; {prefix}: check it and the list')
    logger.warning('%s; they will be reported as undecodable (%s)', what, prefix)


def read_video_list(list_path: str, num_classes: int, path_prefix: str = '',
                    labels_required: bool = True) -> List[Tuple[str, int]]:
    """``[(video path, label)]`` from a list file; label is NO_LABEL for path-only lines when labels are optional.

    Raises ListError naming the file (and line) for a missing or empty list, a malformed line or a label outside
    ``[0, num_classes)``.
    """
    return [(e.path, e.label) for e in parse_video_list(list_path, num_classes, path_prefix, labels_required)]


def find_videos(root: str) -> List[str]:
    """The video files (by extension) under folder ``root``, recursively, sorted by path: what predict.py,
    tools/analysis/gradcam.py, tools/data/make_lists.py and tools/data/resize_videos.py take from a folder. Folders
    reached through symbolic links are walked, each real folder once (a link back up ends there); hidden files and
    folders (``.name``, e.g. the ``._clip.mp4`` files macOS leaves on shared drives) are skipped. ListError when
    ``root`` is not a folder; [] when it holds no videos."""
    if not os.path.isdir(root):
        raise ListError(f'video folder not found: {root}')
    found, walked = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found += [os.path.join(folder, f) for f in files
                  if not f.startswith('.') and f.lower().endswith(VIDEO_EXTENSIONS)]
    return sorted(found)


def collect_inputs(listing: Optional[str], videos: Sequence[str],
                   cfg: AttrDict) -> Tuple[List[Tuple[str, int]], List[str]]:
    """What predict.py and tools/analysis/gradcam.py run on: ``(samples, video_ids)`` in input order, the ``listing``'s
    videos (labels optional), then each of ``videos`` (a folder: its videos, find_videos; a missing file is kept, to be
    reported as undecodable). ListError for an empty folder or no input at all."""
    samples, ids = [], []
    if listing:
        for entry in parse_video_list(listing, cfg.MODEL.num_classes, cfg.DATA.path_prefix, labels_required=False):
            samples.append((entry.path, entry.label))
            ids.append(entry.given)
    for given in videos:
        if os.path.isdir(given):
            found = find_videos(given)
            if not found:
                raise ListError(f'--video {given}: no video files in this folder')
        else:
            found = [given]
        samples += [(path, NO_LABEL) for path in found]
        ids += found
    if not samples:
        raise ListError('nothing to predict: give --video or INFER.filelist')
    return samples, ids


def file_stems(paths: Sequence[str]) -> List[str]:
    """A name per input for the files made from it: its file name without extension, numbered where two inputs
    share one."""
    stems = [os.path.splitext(os.path.basename(p))[0] or 'video' for p in paths]
    return [f'{s}_{n}' if stems.count(s) > 1 else s for n, s in enumerate(stems)]


# The 400 Kinetics class names shipped beside the code: the configs' default DATA.label_map
KINETICS400_LABELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kinetics400_labels.txt')


def read_label_map(path: str, num_classes: int) -> Optional[List[str]]:
    """Class names, one per line (``DATA.label_map``); None when no map is configured, and when the map is the
    shipped Kinetics-400 one (the configs' default) but the model has another class count (a fine-tuned model:
    logged). Any other map must hold ``num_classes`` names (ListError naming both numbers)."""
    if not path:
        return None
    if not os.path.isfile(path):
        raise ListError(f'label map not found: {path}')
    with open(path, encoding='utf-8-sig') as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != num_classes and os.path.realpath(path) == os.path.realpath(KINETICS400_LABELS):
        logger.info('no class names: the default label map holds the 400 Kinetics names, MODEL.num_classes is %d '
                    '(set DATA.label_map to a file of %d names to have them)', num_classes, num_classes)
        return None
    if len(names) != num_classes:
        raise ListError(f'label map {path} has {len(names)} names, MODEL.num_classes is {num_classes}')
    return names


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False
