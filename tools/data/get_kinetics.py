"""Kinetics from the public archive (CVDF: github.com/cvdfoundation/kinetics-dataset) to videos and lists, in one
resumable command.

    python tools/data/get_kinetics.py --dataset k400 --splits val --out data/k400
    python tools/data/get_kinetics.py --dataset k400 --splits train val --out data/k400 --lists data --resize 256
    python tools/data/get_kinetics.py --dataset k400 --splits val --out data/trial --max_parts 1 --classes abseiling

For each split: the list of its ``.tar.gz`` parts (``{mirror}/400/{split}/k400_{split}_path.txt``) and its annotation
CSV (``{mirror}/400/annotations/{split}.csv``) are downloaded, then the parts, ``--connections`` at a time, each
through ``download.py`` (resumed with HTTP Range and If-Range, moved into place only complete); one progress bar for
the split. Each part is extracted as soon as it is complete, whatever its compression (one K400 part was once a plain
tar under a ``.tar.gz`` name), each video written under a temporary name and renamed, and its archive deleted
(``--keep_archives`` keeps it); a part that does not extract is downloaded once more, then reported by address. For
the train split of K400 the archive's replacements for corrupted videos supersede them (matched by YouTube id and
start time). ``--resize SHORT_SIDE`` re-encodes each video as its part is extracted (resize_videos.py's code, in
``--workers`` processes) and keeps only the re-encoded set. At the end ``make_lists.py kinetics`` writes the lists
(class ids in the published checkpoints' order), ``--check`` decodes every listed video (check_videos.py), and the
tool prints a report per split and the commands that use them. Exit status 9 names the parts that could not be had
(everything else is stored and listed); docs/DATA.md has the details.

Layout of ``--out``: ``annotations/{split}.csv``, ``videos/{split}/{youtube_id}_{start:06d}_{end:06d}.mp4``,
``lists/`` (``train.csv``, ``val.csv``, ``classes.txt``, ``missing_{split}.csv``; ``--lists DIR`` elsewhere, e.g.
``data`` where the shipped configs read them), ``archives/`` while parts are downloaded, ``replacement/`` (K400
replacements whose video is not here yet), ``.state/`` (what is done). Killed at any moment and run again, it goes on: a verified part is not
downloaded again, an extracted one not extracted again, a video is never half-written under its name. Free space is
checked at start against what the run will write. ``--mirror URL`` replaces ``https://s3.amazonaws.com/kinetics``
(a local copy with the same layout).
"""
import argparse
import collections
import concurrent.futures
import csv
import json
import logging
import os
import shlex
import shutil
import sys
import tarfile
import threading
import time
import urllib.request
import zlib
from typing import Dict, List, NamedTuple, Optional, Sequence, Set

from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from atomic import atomic_path, check_output_folder, size_text, stop_when_unwritable  # noqa: E402
from config_utils import setup_logging  # noqa: E402
from download import USER_AGENT, DownloadError, download  # noqa: E402
from errors import ListError, OutputError, exit_on_user_error  # noqa: E402
import model_zoo  # noqa: E402  (imports paddle: before logging is set up, which Paddle 2.6's import would quieten)
from video_io import VIDEO_EXTENSIONS  # noqa: E402
import check_videos  # noqa: E402  (beside this file)
import make_lists  # noqa: E402
from resize_videos import GOP, resize_one  # noqa: E402
from video_pool import map_videos  # noqa: E402

logger = logging.getLogger('get_kinetics')

CVDF = 'https://s3.amazonaws.com/kinetics'
# the archive's own addresses, in the path lists: replaced by --mirror
CVDF_PREFIXES = (CVDF, 'http://s3.amazonaws.com/kinetics')
SPLITS = ('train', 'val', 'test')
CHUNK = 1 << 20
# --resize 256: the re-encoded share of the archive's bytes, for the space check: real clips measured 0.25 (1280x720)
# to 0.87 (640x272) (docs/DATA.md); half is an estimate, and a disk that fills anyway stops the run resumably
RESIZED_SHARE = 0.5


class Dataset(NamedTuple):
    folder: str                 # below the mirror
    prefix: str                 # of the path lists' names
    replacement: Optional[str]  # the archive of replacements for corrupted train videos


DATASETS = {'k400': Dataset('400', 'k400', 'replacement_for_corrupted_k400.tgz'),
            'k700-2020': Dataset('700_2020', 'k700_2020', None)}


class Part(NamedTuple):
    split: str
    url: str
    name: str  # the archive's file name


class Stopped(Exception):
    """A download thread told to stop (the run ends on another error)."""


class BadArchive(Exception):
    """A part that does not extract (a corrupt or cut stream)."""


def rebase(url: str, mirror: str) -> str:
    """An address of the archive at ``mirror`` instead."""
    for prefix in CVDF_PREFIXES:
        if url.startswith(prefix + '/'):
            return mirror.rstrip('/') + url[len(prefix):]
    return url


class Getter:
    """One run: ``args`` as parsed; ``out``'s layout in the module docstring."""

    def __init__(self, args):
        self.args, self.out = args, args.out
        self.dataset = DATASETS[args.dataset]
        self.base = f'{args.mirror.rstrip("/")}/{self.dataset.folder}'
        self.state = os.path.join(self.out, '.state')
        self.lists_dir = args.lists or os.path.join(self.out, 'lists')
        self.failures: List[str] = []  # parts reported by address
        self.stats = collections.defaultdict(lambda: collections.Counter())
        self.lock = threading.Lock()
        self.stop = threading.Event()  # set: the download threads stop

    # ---- small files --------------------------------------------------------------------------------------------
    def fetch_small(self, url: str, dest: str) -> str:
        """A path list or annotation file, downloaded once (a rerun uses the copy it has)."""
        if not os.path.isfile(dest):
            logger.info('downloading %s', url)
            download(url, dest, progress=lambda n: None)
        return dest

    def parts(self, split: str) -> List[Part]:
        listing = self.fetch_small(f'{self.base}/{split}/{self.dataset.prefix}_{split}_path.txt',
                                   os.path.join(self.state, f'{self.dataset.prefix}_{split}_path.txt'))
        with open(listing, encoding='utf-8') as f:
            urls = [rebase(line.strip(), self.args.mirror) for line in f if line.strip()]
        if not urls:
            raise ListError(f'{listing}: the list of {split} parts is empty')
        parts = [Part(split, url, os.path.basename(urllib.request.urlparse(url).path)) for url in urls]
        return parts[:self.args.max_parts] if self.args.max_parts else parts

    def annotations(self, split: str) -> str:
        return self.fetch_small(f'{self.base}/annotations/{split}.csv',
                                os.path.join(self.out, 'annotations', f'{split}.csv'))

    # ---- what to keep -------------------------------------------------------------------------------------------
    def chosen_ids(self, split: str, annotations: str) -> Optional[Set[str]]:
        """With --classes: the YouTube ids of the split's clips of those classes (None: every clip)."""
        if not self.args.classes:
            return None
        clips = make_lists.read_annotations(annotations)
        keys = {make_lists.class_key(c) for c in self.args.classes}
        known = {make_lists.class_key(c.label) for c in clips if c.label}
        unknown = sorted(c for c in self.args.classes if make_lists.class_key(c) not in known)
        if unknown and split != 'test':
            raise ListError(f'--classes: {", ".join(unknown)} not in {annotations} (its classes are e.g. '
                            f'{", ".join(sorted(known)[:5])})')
        return {c.youtube_id for c in clips if c.label and make_lists.class_key(c.label) in keys}

    def done_file(self, part: Part) -> str:
        return os.path.join(self.state, part.split, part.name + '.done')

    # ---- parts --------------------------------------------------------------------------------------------------
    def get_split(self, split: str) -> None:
        annotations = self.annotations(split)
        keep = self.chosen_ids(split, annotations)
        parts = self.parts(split)
        todo = [p for p in parts if not os.path.isfile(self.done_file(p))]
        logger.info('%s: %d parts, %d done before, %d to get', split, len(parts), len(parts) - len(todo), len(todo))
        self.stats[split]['parts'] = len(parts)
        if not todo:
            return
        sizes = self.remote_sizes(todo)
        self.check_space(split, todo, sizes, keep, annotations)
        os.makedirs(os.path.join(self.out, 'videos', split), exist_ok=True)
        known = sum(s for s in sizes.values() if s)
        bar = tqdm(total=known or None, unit='B', unit_scale=True, unit_divisor=1024, desc=f'{split} parts',
                   mininterval=1)
        start = time.time()
        with concurrent.futures.ThreadPoolExecutor(self.args.connections) as pool:
            def progress(count: int) -> None:  # per chunk, in the download threads
                if self.stop.is_set():
                    raise Stopped()  # the part stays as it is, for the next run to resume
                bar.update(count)

            futures = {pool.submit(self.download_part, p, progress): p for p in todo}
            try:
                for future in concurrent.futures.as_completed(futures):
                    part = futures[future]
                    try:
                        future.result()
                    except DownloadError as error:
                        self.failure(part, str(error))
                        continue
                    self.extract_part(part, keep, retry=True)
            except BaseException:  # a full disk, Ctrl-C: no part starts, those under way stop at their next chunk
                self.stop.set()
                for future in futures:
                    future.cancel()
                raise
        bar.close()
        self.stats[split]['seconds'] += time.time() - start

    def remote_sizes(self, parts: Sequence[Part]) -> Dict[str, Optional[int]]:
        """The parts' sizes the server announces (HEAD; None where it does not)."""
        def head(part: Part) -> Optional[int]:
            try:
                request = urllib.request.Request(part.url, method='HEAD', headers={'User-Agent': USER_AGENT})
                with urllib.request.urlopen(request, timeout=60) as response:
                    length = response.headers.get('Content-Length')
                    return int(length) if length and length.isdigit() else None
            except OSError:
                return None  # the download itself will say why
        with concurrent.futures.ThreadPoolExecutor(self.args.connections) as pool:
            return dict(zip((p.name for p in parts), pool.map(head, parts)))

    def check_space(self, split: str, parts: Sequence[Part], sizes: Dict[str, Optional[int]],
                    keep: Optional[Set[str]], annotations: str) -> None:
        """Stop before the work when ``out`` cannot hold what this split writes: the videos (about the archives'
        size: video files do not compress), and the archives too with --keep_archives, else those in flight."""
        known = [s for s in sizes.values() if s]
        if not known:
            logger.warning('%s: the server announces no part sizes: free space not checked', split)
            return
        each = sorted(known)[len(known) // 2]
        total = sum(s or each for s in sizes.values())
        videos = total * (RESIZED_SHARE if self.args.resize else 1.0)
        if keep is not None:  # --classes: that share of the split's clips
            videos = total * len(keep) / max(1, len(make_lists.read_annotations(annotations)))
        archives = total if self.args.keep_archives else min(len(parts), self.args.connections + 1) * max(known)
        if self.args.resize:  # a part's originals while they are re-encoded (all of them with --keep_originals)
            archives += total if self.args.keep_originals else max(known)
        need = int(videos + archives)
        free = shutil.disk_usage(self.out).free
        logger.info('%s: %d parts, %s to download; this run writes about %s (videos %s, archives %s); %s free in %s',
                    split, len(parts), size_text(total), size_text(need), size_text(videos), size_text(archives),
                    size_text(free), self.out)
        if need > free:
            raise OutputError(f'--out {self.out}: {size_text(free)} free, the {split} split needs about '
                              f'{size_text(need)} ({size_text(videos)} of videos, {size_text(archives)} of archives '
                              'at once): free some space, give another --out, or fewer parts (--splits, '
                              '--max_parts)')

    def archive_path(self, part: Part) -> str:
        return os.path.join(self.out, 'archives', part.split, part.name)

    def download_part(self, part: Part, progress) -> None:
        path = self.archive_path(part)
        if os.path.isfile(path):  # verified in an earlier run, not yet extracted
            progress(os.path.getsize(path))
            return
        download(part.url, path, progress=progress)
        with self.lock:  # several download threads
            self.stats[part.split]['bytes'] += os.path.getsize(path)
        logger.info('%s: downloaded %s (%s)', part.split, part.name, size_text(os.path.getsize(path)))

    def extract_part(self, part: Part, keep: Optional[Set[str]], retry: bool) -> None:
        archive = self.archive_path(part)
        videos = os.path.join(self.out, 'videos', part.split)
        try:
            names = extract(archive, self.originals(part.split) if self.args.resize else videos,
                            os.path.join(self.state, 'staging'), keep)
        except BadArchive as error:
            os.remove(archive)
            if not retry:
                self.failure(part, f'{part.url} does not extract after a second download ({error})')
                return
            logger.warning('%s: %s does not extract (%s): downloading it again', part.split, part.url, error)
            try:
                download(part.url, archive, progress=lambda n: None)
            except DownloadError as failure:
                self.failure(part, str(failure))
                return
            self.extract_part(part, keep, retry=False)
            return
        if self.args.resize:
            names = self.resize(part, names)
        os.makedirs(os.path.dirname(self.done_file(part)), exist_ok=True)
        with atomic_path(self.done_file(part)) as tmp:
            with open(tmp, 'w', encoding='utf-8') as f:
                f.write(''.join(name + '\n' for name in names))
        if not self.args.keep_archives:
            os.remove(archive)
        self.stats[part.split]['extracted'] += len(names)
        logger.info('%s: %s: %d videos%s', part.split, part.name, len(names),
                    '' if self.args.keep_archives else ', archive deleted')

    def originals(self, split: str) -> str:
        """Where --resize extracts the archive's videos: kept with --keep_originals, else removed once resized."""
        return os.path.join(self.out, 'originals', split) if self.args.keep_originals else os.path.join(
            self.state, 'originals', split)

    def resize(self, part: Part, names: List[str]) -> List[str]:
        """--resize: ``part``'s extracted videos re-encoded into ``videos/{split}`` by resize_videos.py's code (its
        keyframe interval, ``--workers`` processes; each written under a temporary name and renamed); returns the
        names written. A video that does not decode is left out and named in ``.state/{split}/unreadable.txt``."""
        source, dest = self.originals(part.split), os.path.join(self.out, 'videos', part.split)
        jobs = [(os.path.join(source, n), os.path.join(dest, os.path.splitext(n)[0] + '.mp4'), self.args.resize, 23,
                 GOP) for n in names]
        results = map_videos(resize_one, jobs, self.args.workers, f'{part.name}: resizing to {self.args.resize}')
        unwritten = [reason for status, reason in results if status == 'unwritten']
        if unwritten:
            raise OutputError(f'{unwritten[0]} (resizing {part.name}): free some space, then run the same command '
                              'again (it goes on where it stopped)')
        failed = [(src, reason) for (src, *_), (status, reason) in zip(jobs, results) if status == 'failed']
        if failed:
            os.makedirs(os.path.join(self.state, part.split), exist_ok=True)
            with open(os.path.join(self.state, part.split, 'unreadable.txt'), 'a', encoding='utf-8') as f:
                f.writelines(f'{os.path.basename(src)}\t{reason}\n' for src, reason in failed)
            for src, reason in failed:
                logger.warning('%s: %s does not decode (%s): left out', part.split, os.path.basename(src), reason)
        if not self.args.keep_originals:
            for name in names:
                os.remove(os.path.join(source, name))
        bad = {src for src, _ in failed}
        return [os.path.basename(dst) for src, dst, *_ in jobs if src not in bad]

    def failure(self, part: Part, message: str) -> None:
        logger.error('%s: %s', part.split, message)
        self.failures.append(message)
        self.stats[part.split]['failed parts'] += 1

    # ---- replacements -------------------------------------------------------------------------------------------
    def replace_corrupted(self) -> None:
        """K400 train: the archive's replacements supersede the corrupted videos they are named after (YouTube id
        and start time); those whose video is not here yet wait in ``replacement/`` for the run that brings it."""
        name = self.dataset.replacement
        folder = os.path.join(self.out, 'replacement')
        done = os.path.join(self.state, name + '.done')
        if not os.path.isfile(done):
            archive = os.path.join(self.out, 'archives', name)
            if not os.path.isfile(archive):
                logger.info('downloading the replacements for corrupted train videos: %s/%s', self.base, name)
                download(f'{self.base}/{name}', archive)
            try:
                extract(archive, folder, os.path.join(self.state, 'staging'), None)
            except BadArchive as error:
                os.remove(archive)
                raise DownloadError(f'{self.base}/{name} does not extract ({error}): run the command again to '
                                    'download it again') from None
            with atomic_path(done) as tmp:
                open(tmp, 'w').close()
            if not self.args.keep_archives:
                os.remove(archive)
        train = os.path.join(self.out, 'videos', 'train')
        here = {}
        for name in os.listdir(train) if os.path.isdir(train) else ():
            key = clip_key(name)
            if key:
                here[key] = os.path.join(train, name)
        replaced = 0
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            target = here.get(clip_key(name))
            if not target:
                continue
            source = os.path.join(folder, name)
            if self.args.resize:  # re-encoded as the set is, beside its target, then in its place
                resized = os.path.join(self.state, 'staging', 'resized_' + os.path.basename(target))
                status, reason = resize_one((source, resized, self.args.resize, 23, GOP))
                if status != 'done':
                    logger.warning('train: the replacement %s was not re-encoded (%s): the video stays', name, reason)
                    continue
                os.remove(source)
                source = resized
            os.replace(source, target)  # atomic: the old file or the new, never half
            replaced += 1
        with open(os.path.join(self.state, 'replaced.txt'), 'a', encoding='utf-8') as f:
            f.write(f'{replaced}\n')
        if replaced:
            logger.info('train: %d corrupted videos replaced by the archive\'s replacements', replaced)

    def unreadable(self, split: str) -> int:
        """Videos that did not decode: left out by --resize, or dropped by --check."""
        count = count_lines(os.path.join(self.state, split, 'unreadable.txt'))
        report = os.path.join(self.lists_dir, f'check_{split}.json')
        if os.path.isfile(report):
            with open(report, encoding='utf-8') as f:
                count += len(json.load(f)['dropped'])
        return count

    def check(self, written: Dict[str, str]) -> None:
        """--check: tools/data/check_videos.py on each list (a report ``lists/check_{split}.json`` and the list
        without the broken videos, ``{split}.csv.clean``)."""
        for split in SPLITS:
            if split in written:
                check_videos.main([written[split], '--report', os.path.join(self.lists_dir, f'check_{split}.json'),
                                   '--workers', str(self.args.workers)])

    def replaced_total(self) -> int:
        path = os.path.join(self.state, 'replaced.txt')
        if not os.path.isfile(path):
            return 0
        return sum(int(line) for line in open(path, encoding='utf-8') if line.strip())

    # ---- lists and report ---------------------------------------------------------------------------------------
    def lists(self, splits: Sequence[str]) -> Dict[str, str]:
        """``make_lists.py kinetics`` on the videos stored (with --classes, on those classes' annotation rows)."""
        annotations = []
        for split in splits:
            path = os.path.join(self.out, 'annotations', f'{split}.csv')
            if self.args.classes:
                path = self.subset_annotations(path, split)
            annotations.append(path)
        args = argparse.Namespace(annotations=annotations, labels=None, class_ids='kinetics400',
                                  videos=os.path.join(self.out, 'videos'), out=self.lists_dir, relative=False)
        check_output_folder(args.out, '--out')
        return make_lists.make_kinetics(args)

    def subset_annotations(self, path: str, split: str) -> str:
        keys = {make_lists.class_key(c) for c in self.args.classes}
        subset = os.path.join(self.state, 'annotations', f'{split}.csv')
        os.makedirs(os.path.dirname(subset), exist_ok=True)
        with open(path, newline='', encoding='utf-8-sig') as f:
            reader = csv.DictReader(f)
            rows = [row for row in reader if make_lists.class_key(row.get('label') or '') in keys]
            fields = reader.fieldnames
        with atomic_path(subset) as tmp:
            with open(tmp, 'w', newline='', encoding='utf-8') as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
        return subset

    def report(self, splits: Sequence[str], written: Dict[str, str]) -> str:
        lines = ['split   annotated   found   missing   replaced   unreadable   parts   failed parts   downloaded   '
                 'minutes']
        for split in splits:
            listed = count_lines(written.get(split))
            missing = count_lines(os.path.join(self.lists_dir, f'missing_{split}.csv'), header=True)
            stats = self.stats[split]
            lines.append(f'{split:<7} {listed + missing:>9}   {listed:>5}   {missing:>7}   '
                         f'{self.replaced_total() if split == "train" else 0:>8}   '
                         f'{self.unreadable(split):>10}   {stats["parts"]:>5}   '
                         f'{stats["failed parts"]:>12}   {size_text(stats["bytes"]):>10}   '
                         f'{stats["seconds"] / 60:>7.1f}')
        return '\n'.join(lines)


def count_lines(path: Optional[str], header: bool = False) -> int:
    if not path or not os.path.isfile(path):
        return 0
    with open(path, encoding='utf-8') as f:
        return max(0, sum(1 for line in f if line.strip()) - header)


def clip_key(name: str):
    """``(youtube_id, start)`` of a video file named ``{youtube_id}_{start:06d}_{end:06d}.ext`` (None otherwise)."""
    stem, ext = os.path.splitext(name)
    match = make_lists.VIDEO_NAME.match(stem)
    if ext.lower() not in VIDEO_EXTENSIONS or match is None:
        return None
    return match.group('id'), None if match.group('start') is None else int(match.group('start'))


READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)  # OSError: gzip.BadGzipFile, a cut file


def extract(archive: str, dest: str, staging: str, keep: Optional[Set[str]]) -> List[str]:
    """The videos of the tar ``archive`` (any compression, told from its content) into ``dest``, by file name (the
    archive's folders dropped; only regular files with a video extension, of the YouTube ids ``keep`` when given),
    each written in ``staging`` and renamed into place. BadArchive when the archive does not read to its end;
    OutputError when a video cannot be written (a full disk)."""
    os.makedirs(dest, exist_ok=True)
    os.makedirs(staging, exist_ok=True)

    def read(what, *args):
        try:
            return what(*args)
        except READ_ERRORS as error:
            raise BadArchive(f'{type(error).__name__}: {error}') from None

    names = []
    tar = read(tarfile.open, archive, 'r:*')
    with tar:
        members = iter(tar)
        while True:
            member = read(next, members, None)
            if member is None:
                break
            name = os.path.basename(member.name)
            if not member.isfile() or os.path.splitext(name)[1].lower() not in VIDEO_EXTENSIONS:
                continue
            if keep is not None and name[:11] not in keep:
                continue
            source, tmp = read(tar.extractfile, member), os.path.join(staging, name)
            with stop_when_unwritable(tmp, f'extracting {archive}; run the command again when there is room (it goes '
                                      'on where it stopped)'):
                with open(tmp, 'wb') as target:
                    for block in iter(lambda: read(source.read, CHUNK), b''):
                        target.write(block)
                os.replace(tmp, os.path.join(dest, name))
            names.append(name)
    return names


ZOO_MODEL = 'pytorchvideo-slowfast-r50'  # README recipe 1's


def next_commands(written: Dict[str, str]) -> str:
    """What to run next: evaluate a published model on the val list (as its publisher tested it), train on the
    train list. Every line runs as printed from the repository's folder."""
    lines = ['next (from the repository\'s folder):']
    if 'val' in written:
        entry = model_zoo.find(ZOO_MODEL)
        weights = os.path.join('weights', entry.name)
        protocol = ''.join(f' -o {o}' for o in model_zoo.protocol_overrides(entry))
        lines += [f'    python tools/weights/zoo.py get {entry.name} --out weights',
                  f'    python eval.py --config {entry.config} --weights {weights}{protocol} '
                  f'-o TEST.filelist={shlex.quote(os.path.abspath(written["val"]))}']
    if 'train' in written:
        overrides = ' '.join(f'-o {shlex.quote(o)}' for o in make_lists.overrides_for(written))
        lines.append(f'    python train.py --config slowfast.yaml {overrides}')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--dataset', choices=sorted(DATASETS), default='k400')
    parser.add_argument('--splits', nargs='+', choices=SPLITS, default=['train', 'val'])
    parser.add_argument('--out', required=True, help='the dataset\'s folder (layout above)')
    parser.add_argument('--lists', help='where the lists go (default: OUT/lists; `data`: where the shipped configs '
                        'read them)')
    parser.add_argument('--mirror', default=CVDF, help='the archive\'s address (default: %(default)s)')
    parser.add_argument('--connections', type=int, default=4, help='parts downloaded at once (default: 4)')
    parser.add_argument('--keep_archives', '--keep-archives', action='store_true',
                        help='keep each part\'s archive after extracting it')
    parser.add_argument('--classes', nargs='+', metavar='NAME', help='only the videos of these classes (the parts '
                        'hold every class: each is still downloaded whole)')
    parser.add_argument('--max_parts', '--max-parts', type=int, default=0, help='only the first N parts of each split '
                        '(a trial)')
    parser.add_argument('--resize', type=int, default=0, metavar='SHORT_SIDE',
                        help='re-encode each video to this short side as it is extracted (tools/data/resize_videos.py'
                             '\'s code: H.264, a keyframe every 32 frames); 0: keep the archive\'s videos')
    parser.add_argument('--keep_originals', '--keep-originals', action='store_true',
                        help='with --resize: keep the archive\'s videos too, in originals/{split}')
    parser.add_argument('--check', action='store_true', help='decode every listed video at the end '
                        '(tools/data/check_videos.py: lists/check_{split}.json and {split}.csv.clean)')
    parser.add_argument('--workers', type=int, default=os.cpu_count(), help='processes of --resize and --check')
    args = parser.parse_args(argv)
    setup_logging()
    if args.connections < 1 or args.max_parts < 0:
        parser.error('--connections must be at least 1 and --max_parts at least 0')
    check_output_folder(args.out, '--out')
    if args.lists:
        check_output_folder(args.lists, '--lists')
    getter = Getter(args)
    for folder in (getter.state, os.path.join(getter.state, 'staging')):
        os.makedirs(folder, exist_ok=True)
    staging = os.path.join(getter.state, 'staging')
    for name in os.listdir(staging):  # what a killed extraction left
        os.remove(os.path.join(staging, name))
    for split in args.splits:
        getter.get_split(split)
    if 'train' in args.splits and getter.dataset.replacement:
        getter.replace_corrupted()
    try:
        written = getter.lists(args.splits)
    except ListError as error:  # e.g. no video of a split is here because its parts could not be had
        if not getter.failures:
            raise
        raise DownloadError(f'{len(getter.failures)} parts are not here: ' + '; '.join(getter.failures) +
                            f'; and no lists could be written ({error}). Run the same command again to retry '
                            'them') from None
    if args.check:
        getter.check(written)
    logger.info('lists in %s\n%s\n%s', getter.lists_dir, getter.report(args.splits, written),
                next_commands(written))
    if getter.failures:
        raise DownloadError(f'{len(getter.failures)} parts are not here (the rest is, and the lists hold it): '
                            + '; '.join(getter.failures) + '. Run the same command again to retry them')
    return 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
