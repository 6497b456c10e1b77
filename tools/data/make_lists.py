"""Make the video lists train.py, eval.py and predict.py read (``path,label`` CSV lines) and ``classes.txt``.

Kinetics-400/600/700 from the official annotation CSVs (``label,youtube_id,time_start,time_end,split[,is_cc]``; the
test split may have no label) and the folder of downloaded videos, in any layout and container: files are found by
their YouTube id, named ``{youtube_id}_{start:06d}_{end:06d}.mp4`` or ``{youtube_id}.mp4``, flat or in class folders:

    python tools/data/make_lists.py kinetics --annotations k400/annotations --videos k400/videos --out data

writes ``data/train.csv``, ``data/val.csv`` (and ``data/test.csv`` when a test CSV is given), ``data/classes.txt``,
and ``data/missing_{split}.csv`` with the annotation rows whose video is not there. Class ids follow the shipped
``kinetics400_labels.txt`` (the published checkpoints' order) whenever every annotated class is a Kinetics-400 class
(a subset keeps the 400 ids, so a published model scores it), else the alphabetical order of the annotated classes
(Kinetics-600/700's ids); ``--class_ids alphabetical`` asks for the latter, ``--labels FILE`` for your own.

Your own dataset, one folder per class (``root/<class>/<video>``, or ``root/train/<class>/...`` and
``root/val/<class>/...``): classes in alphabetical order, and without split folders a seeded ``--val_fraction`` of
each class for validation:

    python tools/data/make_lists.py folders --videos my_videos --out data/mine

Paths are written absolute (``--relative``: relative to ``--out``, for lists that move with the videos). The files
are written together once every split has succeeded (an error writes nothing), and a re-run replaces the whole set:
a file of an earlier run that this one does not make (a split, a missing list) is removed. The last line prints the
``-o`` overrides that point train.py, eval.py and predict.py at them.
"""
import argparse
import collections
import csv
import logging
import os
import random
import re
import shlex
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from atomic import atomic_path, check_output_folder  # noqa: E402
from config_utils import setup_logging  # noqa: E402
from errors import ListError, exit_on_user_error  # noqa: E402
from video_io import VIDEO_EXTENSIONS  # noqa: E402
from video_lists import KINETICS400_LABELS, find_videos  # noqa: E402

logger = logging.getLogger('make_lists')

SPLITS = ('train', 'val', 'test')
# {youtube_id}[_{start}_{end}]: a YouTube id is 11 characters of [A-Za-z0-9_-]
VIDEO_NAME = re.compile(r'^(?P<id>[A-Za-z0-9_-]{11})(?:_(?P<start>\d+)_(?P<end>\d+))?$')


class Clip(NamedTuple):
    youtube_id: str
    start: Optional[int]   # whole seconds, as in the file names; None when the file name has no times
    label: Optional[str]   # None: a test row without a label
    row: Dict[str, str]    # the annotation row as read


def class_key(name: str) -> str:
    """Class names compare without case, quotes and the underscores some copies put for spaces."""
    return name.strip().strip('"').replace('_', ' ').lower()


def split_of(path: str) -> str:
    name = os.path.basename(path).lower()
    for split, words in (('train', ('train',)), ('val', ('val',)), ('test', ('test',))):
        if any(word in name for word in words):
            return split
    raise ListError(f'{path}: cannot tell the split from the file name (expected train, val/validate or test in it)')


def annotation_files(given: Sequence[str]) -> Dict[str, str]:
    """``{split: csv path}`` from the files and folders given."""
    files = []
    for path in given:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith('.csv'))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ListError(f'annotations not found: {path}')
    found = {}
    for path in files:
        split = split_of(path)
        if split in found:
            raise ListError(f'two annotation files for the {split} split: {found[split]} and {path}')
        found[split] = path
    if not found:
        raise ListError(f'no annotation CSV in {", ".join(given)}')
    return found


def read_annotations(path: str) -> List[Clip]:
    with open(path, newline='', encoding='utf-8-sig') as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        needed = {'youtube_id', 'time_start'}
        if not needed <= columns:
            raise ListError(f'{path}: not a Kinetics annotation CSV (columns {sorted(columns)}; expected '
                            'label,youtube_id,time_start,time_end,split)')
        column = reader.fieldnames.index('time_start') + 1
        clips = []
        for row in reader:
            label = (row.get('label') or '').strip() or None
            try:
                start = int(float(row['time_start']))
            except (TypeError, ValueError):
                raise ListError(f'{path}:{reader.line_num}: time_start (column {column}) is {row["time_start"]!r}, '
                                'not a number of seconds') from None
            clips.append(Clip(row['youtube_id'].strip(), start, label, row))
    return clips


def index_videos(paths: Sequence[str]) -> Tuple[Dict[str, List[Tuple[Optional[int], str]]], List[str]]:
    """``({youtube_id: [(start or None, path)]}, paths whose names hold no YouTube id)``."""
    index, unnamed = collections.defaultdict(list), []
    for path in paths:
        match = VIDEO_NAME.match(os.path.splitext(os.path.basename(path))[0])
        if match is None:
            unnamed.append(path)
            continue
        start = match.group('start')
        index[match.group('id')].append((None if start is None else int(start), path))
    return index, unnamed


def read_names(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise ListError(f'class list not found: {path}')
    with open(path, encoding='utf-8-sig') as f:
        return [line.strip() for line in f if line.strip()]


def class_list(clips: Sequence[Clip], labels: Optional[str], class_ids: str = 'kinetics400') -> Tuple[List[str], str]:
    """``(class names in id order, where they come from)``: ``labels`` (a file) when given; else the published
    checkpoints' Kinetics-400 ids (all 400 names, so that a 400-class model scores a subset with its own ids) when
    every annotated class is a Kinetics-400 class, unless ``class_ids`` is ``alphabetical``; else (Kinetics-600/700,
    or asked) the alphabetical order of the annotated classes."""
    if labels:
        return read_names(labels), labels
    names = {}
    for clip in clips:
        if clip.label is not None:
            names.setdefault(class_key(clip.label), clip.label.strip().strip('"'))
    if not names:
        raise ListError('the annotations hold no labels: give --labels')
    kinetics400 = read_names(KINETICS400_LABELS)
    if class_ids == 'kinetics400' and set(names) <= {class_key(n) for n in kinetics400}:
        subset = '' if len(names) == len(kinetics400) else f'; the annotations hold {len(names)} of its classes'
        return kinetics400, ('the Kinetics-400 class ids of the published checkpoints (kinetics400_labels.txt)'
                             f'{subset}')
    why = 'as --class_ids alphabetical asks' if class_ids == 'alphabetical' else 'not all are Kinetics-400 classes'
    return [names[k] for k in sorted(names)], f'the alphabetical order of the {len(names)} annotated classes ({why})'


def write_list(path: str, rows: Sequence[Tuple[str, Optional[int]]], out: str, relative: bool) -> None:
    with atomic_path(path) as tmp, open(tmp, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        for video, label in rows:
            video = os.path.relpath(video, out) if relative else os.path.abspath(video)
            writer.writerow([video] if label is None else [video, label])


def write_missing(path: str, missing: Sequence[Clip]) -> None:
    with atomic_path(path) as tmp, open(tmp, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=list(missing[0].row))
        writer.writeheader()
        writer.writerows(clip.row for clip in missing)


def write_set(out: str, lists: Dict[str, List[Tuple[str, Optional[int]]]], classes: Sequence[str], relative: bool,
              missing: Optional[Dict[str, List[Clip]]] = None) -> Dict[str, str]:
    """The whole output set in ``out``, written once every split has succeeded (nothing is written before): a list
    per split, ``missing_{split}.csv`` where clips are missing, ``classes.txt``. Files of an earlier set that this
    one does not hold (a split no longer made, a missing list now empty) are removed, so the folder never mixes two
    runs. Returns ``{split: path, 'classes': path}``."""
    written = {}
    for split, rows in lists.items():
        written[split] = os.path.join(out, f'{split}.csv')
        write_list(written[split], rows, out, relative)
    for split, clips in (missing or {}).items():
        if clips:
            write_missing(os.path.join(out, f'missing_{split}.csv'), clips)
    written['classes'] = os.path.join(out, 'classes.txt')
    with atomic_path(written['classes']) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        f.write(''.join(name + '\n' for name in classes))
    stale = [os.path.join(out, f'{split}.csv') for split in SPLITS if split not in lists]
    stale += [os.path.join(out, f'missing_{split}.csv') for split in SPLITS if not (missing or {}).get(split)]
    for path in stale:
        if os.path.isfile(path):
            os.remove(path)
            logger.info('removed %s (of an earlier run: this one makes no such file)', path)
    return written


def match_clips(clips: Sequence[Clip], index) -> Tuple[List[Tuple[Clip, str]], List[Clip], List[Clip]]:
    """``(found (clip, path), missing clips, clips with several files)``; of several files the first path in sorted
    order is taken. A file name with times matches only the clip starting at that second."""
    found, missing, several = [], [], []
    for clip in clips:
        paths = sorted(path for start, path in index.get(clip.youtube_id, ())
                       if start is None or start == clip.start)
        if not paths:
            missing.append(clip)
            continue
        if len(paths) > 1:
            several.append(clip)
        found.append((clip, paths[0]))
    return found, missing, several


def make_kinetics(args) -> Dict[str, str]:
    splits = annotation_files(args.annotations)
    annotated = {split: read_annotations(path) for split, path in splits.items()}
    classes, origin = class_list([c for clips in annotated.values() for c in clips], args.labels, args.class_ids)
    ids = {class_key(name): i for i, name in enumerate(classes)}
    paths = find_videos(args.videos)
    index, unnamed = index_videos(paths)
    logger.info('%d video files under %s (%d without a YouTube id in their name); %d classes: %s',
                len(paths), args.videos, len(unnamed), len(classes), origin)
    lists, missing_clips, used = {}, {}, set()
    for split in SPLITS:
        if split not in annotated:
            continue
        found, missing, several = match_clips(annotated[split], index)
        rows = []
        for clip, path in found:
            if clip.label is None and split != 'test':
                raise ListError(f'{splits[split]}: the row of youtube_id {clip.youtube_id} has no label')
            if clip.label is not None and class_key(clip.label) not in ids:
                raise ListError(f'{splits[split]}: class {clip.label!r} (youtube_id {clip.youtube_id}) is not in '
                                f'the class list ({origin})')
            rows.append((path, None if clip.label is None else ids[class_key(clip.label)]))
            used.add(path)
        if not rows:
            raise ListError(f'{split}: none of the {len(annotated[split])} annotated clips of {splits[split]} is '
                            f'under {args.videos} (expected files named {{youtube_id}}_{{start:06d}}_{{end:06d}}.mp4 '
                            'or {youtube_id}.mp4, in any folder)')
        lists[split], missing_clips[split] = rows, missing
        logger.info('%s: %d annotated, %d found (%.1f %%), %d missing%s%s', split, len(annotated[split]),
                    len(found), 100.0 * len(found) / len(annotated[split]), len(missing),
                    f' (to be listed in missing_{split}.csv)' if missing else '',
                    f', {len(several)} with several files (took the first in path order, e.g. '
                    f'{several[0].youtube_id})' if several else '')
    extra = [p for p in paths if p not in used]
    if extra:
        logger.info('%d video files are in no annotated split (e.g. %s)', len(extra), extra[0])
    return write_set(args.out, lists, classes, args.relative, missing_clips)


def class_folders(root: str) -> List[str]:
    return sorted(d for d in os.listdir(root) if not d.startswith('.') and os.path.isdir(os.path.join(root, d)))


SPLIT_FOLDERS = {'train': ('train',), 'val': ('val', 'validate', 'validation'), 'test': ('test',)}


def make_folders(args) -> Dict[str, str]:
    if not os.path.isdir(args.videos):
        raise ListError(f'video folder not found: {args.videos}')
    folders = {split: os.path.join(args.videos, name) for split, names in SPLIT_FOLDERS.items() for name in names
               if os.path.isdir(os.path.join(args.videos, name))}
    if 'train' in folders:
        classes = class_folders(folders['train'])
        videos = {split: {c: find_videos(os.path.join(folder, c)) for c in class_folders(folder)}
                  for split, folder in folders.items()}
        for split, by_class in videos.items():
            unknown = sorted(set(by_class) - set(classes))
            if unknown:
                raise ListError(f'{folders[split]}: class folders not in {folders["train"]}: {", ".join(unknown)}')
    else:
        classes = class_folders(args.videos)
        rng = random.Random(args.seed)
        videos = {'train': {}, 'val': {}}
        for c in classes:
            paths = find_videos(os.path.join(args.videos, c))
            rng.shuffle(paths)
            held = int(round(len(paths) * args.val_fraction))
            videos['val'][c], videos['train'][c] = sorted(paths[:held]), sorted(paths[held:])
    classes = [c for c in classes if any(videos[s].get(c) for s in videos)]
    if not classes:
        raise ListError(f'{args.videos}: no class folder holds a video ({", ".join(VIDEO_EXTENSIONS)})')
    lists = {}
    for split, by_class in videos.items():
        rows = [(path, classes.index(c)) for c in classes for path in by_class.get(c, ())]
        if rows:
            lists[split] = rows
            logger.info('%s: %d videos of %d classes', split, len(rows), sum(1 for c in classes if by_class.get(c)))
    unseen = [c for c in classes if not videos.get('val', {}).get(c)]
    if unseen:
        how = ('add videos to their folders under val/' if 'train' in folders else
               f'they hold too few videos for --val_fraction {args.val_fraction}: raise it, or add videos')
        logger.warning('%d of %d classes get no validation video (%s%s): %s', len(unseen), len(classes),
                       ', '.join(unseen[:10]), ' ...' if len(unseen) > 10 else '', how)
    return write_set(args.out, lists, classes, args.relative)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    modes = parser.add_subparsers(dest='mode', required=True)
    kinetics = modes.add_parser('kinetics', help='Kinetics annotation CSVs + the folder of downloaded videos')
    kinetics.add_argument('--annotations', nargs='+', required=True,
                          help='the annotation CSVs, or a folder of them (split from the name: train, val, test)')
    kinetics.add_argument('--labels', help='class names, one per line, in class-id order (default: see above)')
    kinetics.add_argument('--class_ids', '--class-ids', choices=('kinetics400', 'alphabetical'), default='kinetics400',
                          help='without --labels: kinetics400 (default) numbers classes as the published checkpoints '
                               'do whenever every annotated class is a Kinetics-400 class (a subset keeps the 400 '
                               'ids); alphabetical numbers the annotated classes 0..K-1 (to fine-tune on a subset)')
    folders = modes.add_parser('folders', help='your own dataset: one folder of videos per class')
    folders.add_argument('--val_fraction', '--val-fraction', type=float, default=0.1,
                         help='without train/ and val/ folders: this fraction of each class for validation')
    folders.add_argument('--seed', type=int, default=0, help='of the validation draw')
    for mode in (kinetics, folders):
        mode.add_argument('--videos', required=True, help='the folder of videos (searched recursively)')
        mode.add_argument('--out', default='data', help='where the lists go (default: data, as the configs read)')
        mode.add_argument('--relative', action='store_true', help='paths relative to --out instead of absolute')
    args = parser.parse_args(argv)
    setup_logging()
    check_output_folder(args.out, '--out')
    written = (make_kinetics if args.mode == 'kinetics' else make_folders)(args)
    logger.info('wrote %s', ', '.join(written.values()))
    logger.info('use them with: %s', ' '.join(f'-o {shlex.quote(o)}' for o in overrides_for(written)))
    return 0


def overrides_for(written: Dict[str, str]) -> List[str]:
    """The ``-o`` overrides that point train.py, eval.py and predict.py at the lists ``written``."""
    with open(written['classes'], encoding='utf-8-sig') as f:
        count = sum(1 for line in f if line.strip())
    overrides = [f'MODEL.num_classes={count}', f'DATA.label_map={os.path.abspath(written["classes"])}']
    return overrides + [f'{key}.filelist={os.path.abspath(written[split])}'
                        for key, split in (('TRAIN', 'train'), ('VALID', 'val'), ('TEST', 'val')) if split in written]


if __name__ == '__main__':
    exit_on_user_error(main, logger)
