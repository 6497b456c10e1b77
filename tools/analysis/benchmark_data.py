"""The data pipeline's throughput, measured side by side in one run; medians over repeats; a table and optionally JSON.

    python tools/analysis/benchmark_data.py [--quick] [--resolutions 256p 720p] [--measures train test decoders]
                                            [--json out.json]

Training clips/s and 30-view test views/s of ``kinetics_dataset.py`` (``--measures test`` alone: the data side of the
30-view evaluation; on a CPU the model, not the data, bounds end-to-end evaluation) against
  * a faithful re-implementation of the original port's loader (baselines.py), and
  * the bare decode floor: seek to the clip's first frame and grab its frame span, nothing converted or kept,
on the same 10-second, 30 fps videos (x264 / VP9, default keyframe interval), per container (mp4 H.264, webm VP9,
mkv H.264), at short side 256 and at 1280x720, through ``paddle.io.DataLoader`` with 0, 1 and 2 workers.
All three use the same clip starts, scales and crops (drawn from the same (seed, epoch, index) streams).
``--measures decoders``: the two decoders side by side, OpenCV (its declared frame count and rate, a seek by frame
number: this project's previous reader) and PyAV (``video_io.VideoReader``), on the clean 256p videos and on the hard
cases of tools/data/make_hard_videos.py made from the 256p mp4 (needs the ffmpeg tool): the share of training clips
holding a full sequential decode's frames at the recipe's indices on the true length, clips not read at all, and
ms per clip (and per open).
"""
import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np
import paddle

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data'))  # hard videos
from baselines import DecodeFloor, OpenCVFrameSeeker, OriginalPipeline  # noqa: E402
from bench_common import ROOT, machine_info, report  # noqa: E402
from atomic import check_output_file  # noqa: E402
from config_utils import AttrDict, parse_config, setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from kinetics_dataset import KineticsDataset, KineticsMultiViewDataset, clip_frame_indices  # noqa: E402
from video_io import VideoError, VideoReader, write_video  # noqa: E402

logger = logging.getLogger('benchmark_data')

CONTAINERS = ('mp4', 'webm', 'mkv')
RESOLUTIONS = {'256p': (256, 340), '720p': (720, 1280)}


def bench_frames(height: int, width: int, count: int, seed: int = 0):
    """Natural-ish content: a textured background panning under moving textured blobs, plus noise."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.standard_normal((height * 2, width * 2, 3)).astype(np.float32), (0, 0), 6)
    big = ((big - big.min()) / np.ptp(big) * 255).astype(np.uint8)
    blobs = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-4, 4), rng.uniform(-3, 3),
              int(rng.uniform(0.05, 0.15) * width), tuple(int(c) for c in rng.integers(0, 255, 3))) for _ in range(6)]
    for t in range(count):
        y, x = int(height / 2 * (1 + math.sin(t / 40))), int(width / 2 * (1 + math.cos(t / 50)))
        frame = big[y:y + height, x:x + width].copy()
        for bx, by, vx, vy, r, colour in blobs:
            cv2.circle(frame, (int(bx + vx * t) % width, int(by + vy * t) % height), r, colour, -1)
        frame = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
        yield frame


def make_bench_videos(folder: str, seconds: int = 10, fps: int = 30) -> Dict[Tuple[str, str], str]:
    """``{(container, resolution): path}``, written once and reused."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for res, (height, width) in RESOLUTIONS.items():
        for container in CONTAINERS:
            path = os.path.join(folder, f'bench_{res}.{container}')
            if not os.path.isfile(path):
                logger.info('writing %s', path)
                write_video(path, bench_frames(height, width, seconds * fps), fps)
            paths[container, res] = path
    return paths


DECODERS = {'opencv': lambda path: OpenCVFrameSeeker(path), 'pyav (ours)': lambda path: VideoReader(path, 30, 1)}


def full_decode(path: str) -> np.ndarray:
    """Every frame of a sequential OpenCV read, ``[N, H, W, 3]`` BGR: the truth the decoders are held to."""
    cap, frames = cv2.VideoCapture(path), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    return np.stack(frames)


def bench_decoders(videos: Dict[str, str], cfg: AttrDict, clips: int, repeats: int) -> List[Dict]:
    """Per video and decoder: the share of training clips whose frames are a full decode's frames at the recipe's
    indices on the true length (and the clips it could not read), and the median ms per clip (resized as in
    training). Each decoder decides the length and rate the indices are computed on, as the dataset would."""
    m, t = cfg.MODEL, cfg.TRAIN
    rows = []
    for name, path in videos.items():
        truth = full_decode(path)
        with VideoReader(path, m.target_fps) as video:
            truth_fps = video.fps  # the rule under test is the length; the rate rule is checked in the tests
        draws = np.random.default_rng(0).uniform(size=(clips, 2))  # clip position, scale
        for decoder, open_decoder in DECODERS.items():
            exact = failed = 0
            declared = None
            for position, _ in draws:
                want = clip_frame_indices(len(truth), m.num_frames * m.sampling_rate * truth_fps / m.target_fps,
                                          m.num_frames, position)
                try:
                    reader = open_decoder(path)
                    declared = reader.num_frames
                    got = reader.read(clip_frame_indices(
                        reader.num_frames, m.num_frames * m.sampling_rate * reader.fps / m.target_fps,
                        m.num_frames, position))
                    reader.close()
                except VideoError:
                    failed += 1
                    continue
                exact += bool(got.shape == truth[want].shape and
                              np.abs(got.astype(np.int16) - truth[want]).mean(axis=(1, 2, 3)).max() < 1.0)
            times, opening = [], []
            for _ in range(repeats):
                for position, scale in draws:
                    start = time.perf_counter()
                    try:
                        reader = open_decoder(path)
                        opened = time.perf_counter()
                        reader.read(clip_frame_indices(
                            reader.num_frames, m.num_frames * m.sampling_rate * reader.fps / m.target_fps,
                            m.num_frames, position), int(round(t.min_size + scale * (t.max_size - t.min_size))))
                        reader.close()
                    except VideoError:
                        continue
                    times.append(time.perf_counter() - start)
                    opening.append(opened - start)
            rows.append(dict(video=name, decoder=decoder, frames=len(truth), declared=declared, clips=clips,
                             exact=exact, failed=failed, ms=statistics.median(times) * 1000 if times else None,
                             open_ms=statistics.median(opening) * 1000 if opening else None))
            logger.info('%s', _decoder_row_text(rows[-1]))
    return rows


def _decoder_row_text(row: Dict) -> str:
    ms = ''.join(f'{row[k]:8.2f}' if row[k] is not None else f'{"-":>8}' for k in ('ms', 'open_ms'))
    return (f'{row["video"]:<40} {row["decoder"]:<12} {row["frames"]:>6} {str(row["declared"]):>8} '
            f'{row["exact"]:>3}/{row["clips"]:<3} {row["failed"]:>6} {ms}')


def decoder_table(rows: List[Dict]) -> str:
    head = (f'{"video":<40} {"decoder":<12} {"frames":>6} {"its len":>8} {"exact":>7} {"failed":>6} '
            f'{"ms/clip":>8}{"open ms":>8}')
    return '\n'.join([head, '-' * len(head)] + [_decoder_row_text(r) for r in rows] + [
        'frames: a full sequential decode\'s count; its len: the length the decoder reads from the video; exact: '
        'training clips whose frames are the full decode\'s at the recipe\'s indices on the true length; failed: '
        'clips the decoder could not read (the video would be replaced in training, dropped in evaluation); '
        'ms/clip: median, resized to a training scale, one decoding thread; open ms: of which opening the video '
        '(ours: with its packet index)'])


def items_per_second(dataset, workers: int, batch_size: int = 1) -> float:
    """Iterate a DataLoader over the whole dataset (a multi-view dataset: its ``view_batches``, as eval.py does);
    items (clips or views) per second, worker start-up included."""
    start = time.perf_counter()
    if hasattr(dataset, 'view_batches'):
        count = sum(len(view_ids) for _, view_ids in dataset.view_batches(batch_size, workers))
    else:
        loader = paddle.io.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
        count = sum(batch[0].shape[0] for batch in loader)
    return count / (time.perf_counter() - start)


def median_rate(make: Callable[[], object], workers: int, repeats: int, batch_size: int = 1) -> float:
    return statistics.median(items_per_second(make(), workers, batch_size) for _ in range(repeats))


def median_item_ms(dataset, repeats: int) -> float:
    """Median time of ``dataset[i]`` in this process: the pipeline's own cost, no DataLoader transfer."""
    times = []
    for _ in range(repeats):
        for i in range(len(dataset)):
            start = time.perf_counter()
            dataset[i]
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_data(args) -> Dict:
    cfg = parse_config(os.path.join(ROOT, 'slowfast.yaml'), ['DATA.num_workers=0'])
    videos = make_bench_videos(args.video_dir) if {'train', 'test', 'decoders'} & set(args.measures) else {}
    clips = 8 if args.quick else 16
    workers_list = (0, 2) if args.quick else (0, 1, 2)
    rows = []
    for (container, res), path in videos.items():
        if res not in args.resolutions:
            continue
        listing = os.path.join(args.video_dir, f'list_{container}_{res}.txt')
        with open(listing, 'w') as f:
            f.writelines(f'{path} 0\n' for _ in range(clips))
        cfg.TRAIN.filelist = cfg.TEST.filelist = listing
        if 'train' in args.measures:
            samples = [path] * clips
            ours = median_item_ms(KineticsDataset(cfg, 'train'), args.repeats)
            original = median_item_ms(OriginalPipeline(samples, cfg, 'train'), args.repeats)
            floor = median_item_ms(DecodeFloor(samples, cfg), args.repeats)
            rows.append(dict(kind='train ms/clip', container=container, resolution=res, workers='-',
                             ours=ours, original=original, floor=floor))
            logger.info('%s', _row_text(rows[-1]))
            for workers in workers_list:
                ours = median_rate(lambda: KineticsDataset(cfg, 'train'), workers, args.repeats)
                original = median_rate(lambda: OriginalPipeline(samples, cfg, 'train'), workers, args.repeats)
                floor = median_rate(lambda: DecodeFloor(samples, cfg), workers, args.repeats)
                rows.append(dict(kind='train clips/s', container=container, resolution=res, workers=workers,
                                 ours=ours, original=original, floor=floor))
                logger.info('%s', _row_text(rows[-1]))
        if 'test' in args.measures:
            # 30-view test data: each video decoded once (ours, 6 videos so worker start-up is a small share) vs
            # once per view (the original: its rate does not depend on the number of videos, 2 are measured)
            with open(listing, 'w') as f:
                f.writelines(f'{path} 0\n' for _ in range(6))
            workers = max(workers_list)
            ours = median_rate(lambda: KineticsMultiViewDataset(cfg, 'test'), workers, args.repeats, batch_size=8)
            original = median_rate(lambda: OriginalPipeline([path] * 2, cfg, 'test'), workers, args.repeats,
                                   batch_size=8)
            rows.append(dict(kind='test views/s', container=container, resolution=res, workers=workers, ours=ours,
                             original=original, floor=None))
            logger.info('%s', _row_text(rows[-1]))
    gops = bench_gops(cfg, args.video_dir, clips, args.repeats) if 'gop' in args.measures else []
    decoders = []
    if 'decoders' in args.measures:
        clean = {f'clean {c} 256p (this benchmark\'s)': videos[c, '256p'] for c in CONTAINERS}
        decoders = bench_decoders({**clean, **hard_bench_videos(videos['mp4', '256p'], args.video_dir)}, cfg,
                                  clips, args.repeats)
    return {'benchmark': 'data', 'machine': machine_info(), 'clips_per_measure': clips, 'repeats': args.repeats,
            'rows': rows, 'decoders': decoders, 'gops': gops}


GOPS = (None, 64, 32, 16, 8)  # None: x264's default keyframe interval (250 frames)


def bench_gops(cfg: AttrDict, folder: str, clips: int, repeats: int) -> List[Dict]:
    """Training-clip read time (the pipeline alone, in this process) from 10-second 256p H.264 copies of one video
    encoded with each keyframe interval of GOPS, and each copy's size."""
    rows = []
    for gop in GOPS:
        path = os.path.join(folder, f'bench_256p_gop{gop or "default"}.mp4')
        if not os.path.isfile(path):
            logger.info('writing %s', path)
            write_video(path, bench_frames(*RESOLUTIONS['256p'], 300), 30, gop=gop)
        listing = os.path.join(folder, f'list_gop{gop or "default"}.txt')
        with open(listing, 'w') as f:
            f.writelines(f'{path} 0\n' for _ in range(clips))
        cfg.TRAIN.filelist = listing
        rows.append(dict(gop=gop or 250, bytes=os.path.getsize(path),
                         ms_per_clip=median_item_ms(KineticsDataset(cfg, 'train'), repeats)))
        logger.info('GOP %s: %.1f ms per training clip, %d bytes', gop or '250 (default)', rows[-1]['ms_per_clip'],
                    rows[-1]['bytes'])
    return rows


def gop_table(rows: List[Dict]) -> str:
    base = rows[0]
    lines = ['keyframe interval (256p H.264, 10 s)  size   vs 250   ms/clip   speedup vs 250']
    for row in rows:
        lines.append(f"{row['gop']:>34}  {row['bytes'] / 1e6:5.2f}M  {row['bytes'] / base['bytes']:5.2f}x  "
                     f"{row['ms_per_clip']:8.1f}   {base['ms_per_clip'] / row['ms_per_clip']:5.2f}x")
    return '\n'.join(lines)


def hard_bench_videos(source: str, folder: str) -> Dict[str, str]:
    """The cases of tools/data/make_hard_videos.py made from a benchmark video (needs the ffmpeg tool), once."""
    from make_hard_videos import hard_videos

    folder = os.path.join(folder, 'hard')
    done = os.path.join(folder, 'done')
    if os.path.isfile(done):
        return dict(json.load(open(done)))
    cases = hard_videos(source, folder)
    with open(done, 'w') as f:
        json.dump(sorted(cases.items()), f)
    return cases


def _row_text(row: Dict) -> str:
    """Rates (items/s) or times (ms): speedup = how many times faster ours is; t/floor = our time / the floor's."""
    times = row['kind'].endswith('ms/clip')
    speedup = row['original'] / row['ours'] if times else row['ours'] / row['original']
    if row['floor']:
        ratio = row['ours'] / row['floor'] if times else row['floor'] / row['ours']
        floor = f'{row["floor"]:8.2f} {ratio:6.2f}x'
    else:
        floor = f'{"-":>8} {"-":>7}'
    return (f'{row["kind"]:<16} {row["container"]:<5} {row["resolution"]:<5} {row["workers"]:>3}  '
            f'{row["ours"]:8.2f} {row["original"]:8.2f} {speedup:6.2f}x {floor}')


def table(result: Dict) -> str:
    head = (f'{"measure":<16} {"cont.":<5} {"res.":<5} {"wk":>3}  {"ours":>8} {"original":>8} {"speedup":>7} '
            f'{"floor":>8} {"t/floor":>7}')
    lines = [head, '-' * len(head)] + [_row_text(r) for r in result['rows']]
    lines += ['', 'ms/clip: dataset[i] in one process (the pipeline alone); clips/s, views/s: through '
              'paddle.io.DataLoader with wk workers, batch 1 (test: 8), start-up included',
              'speedup: how many times faster ours is than the original; t/floor: our time per clip / the floor\'s',
              'ours: uint8 clips and views (normalised on the device); the original: float32 (normalised in the '
              'workers)',
              'machine: ' + ', '.join(f'{k} {v}' for k, v in result['machine'].items())]
    return '\n'.join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--video_dir', '--video-dir', default=os.path.join(ROOT, 'data', 'bench_videos'),
                        help='where the benchmark videos are written once (default: %(default)s)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--quick', action='store_true', help='fewer clips and worker settings')
    parser.add_argument('--resolutions', nargs='+', default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
    parser.add_argument('--measures', nargs='+', default=['train', 'test', 'decoders'],
                        choices=['train', 'test', 'decoders', 'gop'],
                        help='test: the 30-view evaluation\'s data side; decoders: OpenCV frame seeking vs PyAV (ours) '
                             'for exactness and speed on clean and hard videos (needs the ffmpeg tool); gop: training '
                             'clip reads from copies with keyframes every 250 (x264\'s default), 64, 32, 16, 8 frames')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args(argv)
    setup_logging()
    if args.json:  # before the measuring
        check_output_file(args.json, '--json')
    result = bench_data(args)
    report(result, table(result) + ('\n\n' + decoder_table(result['decoders']) if result['decoders'] else '') +
           ('\n\n' + gop_table(result['gops']) if result['gops'] else ''), args.json)


if __name__ == '__main__':
    exit_on_user_error(main, logger)
