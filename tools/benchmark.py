"""Benchmarks, measured side by side in one run; medians over repeats; results as a table and optionally JSON.

    python tools/benchmark.py data [--quick] [--resolutions 256p 720p] [--measures train test decoders] [--json F]
    python tools/benchmark.py eval [--resolutions 256p 720p] [--json out.json]
    python tools/benchmark.py infer [--size 256] [--batches 1 8] [--repeats 5] [--json out.json]
    python tools/benchmark.py train [--cases full tiny] [--engines ...] [--profile] [--conv-layouts] [--json out.json]

``infer``: milliseconds per view of the full network (``--config``, default slowfast.yaml: the 4x16 R50) at
``--size`` pixels, batch 1 and 8: Paddle dygraph (eval mode, no grad), Paddle Inference on the exported model
(oneDNN), and, when torch and pytorchvideo are importable, PyTorch eager (``create_slowfast`` with the same
settings), all with the same input and thread count; random weights (timing does not depend on them).

``train``: seconds per training iteration (forward, cross-entropy, backward, SGD step with Nesterov momentum and
weight decay, clear) on random clips, and the peak resident memory, for the full 4x16 R50 at its 224 crop and
batch 1 (``full``) and the demo network at batch 8 (``tiny``); engines: Paddle dygraph, dygraph under
``paddle.jit.to_static``, dygraph with ``FLAGS_use_mkldnn``, and PyTorch eager (pytorchvideo, same settings, same
threads) when installed. Each engine runs in a fresh process so its peak memory is its own. ``--profile`` adds the
top operators of the dygraph step (``paddle.profiler``); ``--conv-layouts`` times three representative 3D
convolutions channels-first against channels-last (and in PyTorch).

``eval``: the data side of the 30-view evaluation: views/s of ``KineticsMultiViewDataset`` (each video decoded once)
against the original's one-decode-per-view dataset (= ``data --measures test``). On a CPU the model, not the data,
bounds end-to-end evaluation (a width-8 SlowFast runs ~1.2 views/s at 256x256 here), so only the data side tells
pipelines apart.

``data``: training clips/s and 30-view test views/s of ``kinetics_dataset.py`` against
  * a faithful re-implementation of the original port's loader (spec 1.4: OpenCV seek for .mp4 only, whole decode of
    other containers, every decoded frame converted, PIL resize, one decode per test view), and
  * the bare decode floor: seek to the clip's first frame and grab its frame span, nothing converted or kept,
on the same 10-second, 30 fps videos (x264 / VP9, default keyframe interval), per container (mp4 H.264, webm VP9,
mkv H.264), at short side 256 and at 1280x720, through ``paddle.io.DataLoader`` with 0, 1 and 2 workers.
All three use the same clip starts, scales and crops (drawn from the same (seed, epoch, index) streams).
``--measures decoders``: the two decoders side by side, OpenCV (its declared frame count and rate, a seek by frame
number: this project's previous reader) and PyAV (``video_io.VideoReader``), on the clean 256p videos and on the hard
cases of tools/make_hard_videos.py made from the 256p mp4 (needs the ffmpeg tool): the share of training clips
holding a full sequential decode's frames at the recipe's indices on the true length, clips not read at all, and
ms per clip (and per open).
"""
import argparse
import json
import logging
import math
import os
import platform
import re
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import av
import cv2
import numpy as np
import paddle

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from config_utils import AttrDict, parse_config, setup_logging  # noqa: E402
from distributed import tune_cpu_blas  # noqa: E402
from kinetics_dataset import (KineticsDataset, KineticsMultiViewDataset, clip_frame_indices,  # noqa: E402
                              crop_offset)
from video_io import VideoError, VideoReader, scaled_size, write_video  # noqa: E402

logger = logging.getLogger('benchmark')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONTAINERS = ('mp4', 'webm', 'mkv')
RESOLUTIONS = {'256p': (256, 340), '720p': (720, 1280)}


# ----------------------------------------------------------------------------------------------------------------
# Machine

def machine_info() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    if os.path.isfile('/proc/cpuinfo'):
        names = [line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')]
        cpu = names[0] if names else cpu
    return {'cpu': cpu, 'cores': str(os.cpu_count()), 'python': platform.python_version(),
            'paddle': paddle.__version__, 'opencv': cv2.__version__, 'pyav': av.__version__,
            'ffmpeg (pyav)': '.'.join(map(str, av.library_versions['libavcodec'])) + ' (libavcodec)',
            'numpy': np.__version__,
            'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', 'unset'),
            'MKL_DEBUG_CPU_TYPE': os.environ.get('MKL_DEBUG_CPU_TYPE', 'unset'),
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}


# ----------------------------------------------------------------------------------------------------------------
# Videos

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


# ----------------------------------------------------------------------------------------------------------------
# The original pipeline (spec 1.4), and the decode floor

class OriginalPipeline(paddle.io.Dataset):
    """The original port's ``KineticsDataset`` decoding and transforms, faithfully (OpenCV + PIL).

    Train: ``.mp4`` seeks to the clip start and reads to its end; other containers decode every frame. Test: one
    item per view, each decoding the video again. Random draws replayed from our (seed, epoch, index) streams.
    """

    def __init__(self, samples: List[str], cfg: AttrDict, mode: str, seed: int = 0):
        self.samples, self.cfg, self.mode, self.seed = samples, cfg, mode, seed
        m = cfg.MODEL
        self.num_frames, self.alpha, self.sampling_rate, self.target_fps = (m.num_frames, m.alpha,
                                                                            m.sampling_rate, m.target_fps)
        self.mean, self.std = np.array(m.image_mean, np.float32), np.array(m.image_std, np.float32)
        self.num_views = cfg.TEST.num_ensemble_views * cfg.TEST.num_spatial_crops if mode == 'test' else 1

    def __len__(self) -> int:
        return len(self.samples) * self.num_views

    def __getitem__(self, index: int):
        from PIL import Image

        index = int(index)
        path = self.samples[index // self.num_views]
        rng = np.random.default_rng([self.seed, 0, index])
        if self.mode == 'train':
            t = self.cfg.TRAIN
            size = int(round(rng.uniform(t.min_size, t.max_size)))
            crop_size, temporal_idx, spatial_idx, num_views = t.target_size, -1, -1, 1
        else:
            size = crop_size = self.cfg.TEST.target_size
            temporal_idx, spatial_idx = divmod(index % self.num_views, self.cfg.TEST.num_spatial_crops)
            num_views = self.cfg.TEST.num_ensemble_views
        cap = cv2.VideoCapture(path)
        videolen = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        clip_size = self.num_frames * self.sampling_rate * cap.get(cv2.CAP_PROP_FPS) / self.target_fps
        frames = []
        if path.endswith('mp4'):
            delta = max(videolen - clip_size, 0)
            start = rng.uniform(0, delta) if temporal_idx == -1 else delta * temporal_idx / num_views
            end = start + clip_size - 1
            cap.set(cv2.CAP_PROP_POS_FRAMES, math.ceil(start))
            for i in range(videolen):
                if i < start:
                    continue
                ok, frame = cap.read()
                if not ok:
                    continue
                if i <= end + 1:
                    frames.append(frame[:, :, ::-1])
                else:
                    break
            start_f, end_f = 0, clip_size - 1
        else:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame[:, :, ::-1])
            delta = max(len(frames) - clip_size, 0)
            start_f = rng.uniform(0, delta) if temporal_idx == -1 else delta * temporal_idx / num_views
            end_f = start_f + clip_size - 1
        cap.release()
        idx = np.clip(np.linspace(start_f, end_f, self.num_frames).astype(np.int64), 0, len(frames) - 1)
        imgs = [Image.fromarray(np.ascontiguousarray(frames[i]), mode='RGB') for i in idx]
        w, h = imgs[0].size
        if min(w, h) != size:
            ow, oh = (size, int(h / w * size)) if w <= h else (int(w / h * size), size)
            imgs = [img.resize((ow, oh), Image.BILINEAR) for img in imgs]
        w, h = imgs[0].size
        y, x = crop_offset(h, w, crop_size, spatial_idx, self.cfg.TEST.num_spatial_crops, rng)
        imgs = [img.crop((x, y, x + crop_size, y + crop_size)) for img in imgs]
        if spatial_idx == -1 and rng.uniform() < 0.5:
            imgs = [img.transpose(Image.FLIP_LEFT_RIGHT) for img in imgs]
        clip = (np.stack([np.asarray(img) for img in imgs]).astype('float32') / 255.0 - self.mean) / self.std
        slow = clip[np.linspace(0, len(clip) - 1, len(clip) // self.alpha).astype(np.int64)]
        return slow.transpose(3, 0, 1, 2), clip.transpose(3, 0, 1, 2)


def opencv_capture(path: str) -> cv2.VideoCapture:
    """As KineticsDataset threads its decoder: one FFmpeg thread inside a DataLoader worker, one per core outside."""
    if paddle.io.get_worker_info() is None:
        return cv2.VideoCapture(path)
    return cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])


class DecodeFloor(paddle.io.Dataset):
    """Seek to the training clip's first frame and grab its span: the least any OpenCV pipeline must do."""

    def __init__(self, samples: List[str], cfg: AttrDict, seed: int = 0):
        self.samples, self.cfg, self.seed = samples, cfg, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        index = int(index)
        t, m = self.cfg.TRAIN, self.cfg.MODEL
        rng = np.random.default_rng([self.seed, 0, index])
        rng.uniform(t.min_size, t.max_size)  # keep the stream in step with KineticsDataset's draws
        cap = opencv_capture(self.samples[index])
        clip_size = m.num_frames * m.sampling_rate * cap.get(cv2.CAP_PROP_FPS) / m.target_fps
        indices = clip_frame_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), clip_size, m.num_frames, None, rng)
        if indices[0] > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(indices[0]))
        for _ in range(int(indices[-1] - indices[0]) + 1):
            cap.grab()
        cap.release()
        return np.zeros(1, np.float32)


class OpenCVFrameSeeker:
    """This project's previous reader, kept to compare decoders: OpenCV's declared frame count and rate, a seek by
    frame number (``CAP_PROP_POS_FRAMES``), grab forward, convert and resize only the kept frames; a stream that ends
    well before the declared count is an error (it took such files for truncated)."""

    def __init__(self, path: str, threads: int = 1):
        self.path = path
        self.cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
        if not self.cap.isOpened():
            raise VideoError(path, 'OpenCV cannot open it')
        self.fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.num_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.num_frames <= 0:
            self.num_frames = 0
            while self.cap.grab():
                self.num_frames += 1
            self.cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])

    def read(self, indices: np.ndarray, short_side: Optional[int] = None) -> np.ndarray:
        first, last = int(indices[0]), int(indices[-1])  # sorted, as clip indices are
        position = first if first > 0 and self.cap.set(cv2.CAP_PROP_POS_FRAMES, first) else 0
        kept, wanted = {}, set(indices.tolist())
        for index in range(position, last + 1):
            if not self.cap.grab():
                if index < self.num_frames - max(3, self.num_frames // 50):
                    raise VideoError(self.path, f'stream ends at frame {index} of {self.num_frames} declared')
                break
            if index in wanted:
                frame = self.cap.retrieve()[1]
                if short_side:
                    height, width = scaled_size(frame.shape[0], frame.shape[1], short_side)
                    frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
                kept[index] = frame
        if not kept:
            raise VideoError(self.path, f'no frame decodes in [{first}, {last}]')
        last_kept = kept[max(kept)]
        return np.stack([kept.get(int(i), last_kept) for i in indices])

    def close(self) -> None:
        self.cap.release()


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


# ----------------------------------------------------------------------------------------------------------------
# Measuring

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
    videos = make_bench_videos(args.video_dir)
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
    decoders = []
    if 'decoders' in args.measures:
        clean = {f'clean {c} 256p (this benchmark\'s)': videos[c, '256p'] for c in CONTAINERS}
        decoders = bench_decoders({**clean, **hard_bench_videos(videos['mp4', '256p'], args.video_dir)}, cfg,
                                  clips, args.repeats)
    return {'benchmark': 'data', 'machine': machine_info(), 'clips_per_measure': clips, 'repeats': args.repeats,
            'rows': rows, 'decoders': decoders}


def hard_bench_videos(source: str, folder: str) -> Dict[str, str]:
    """The cases of tools/make_hard_videos.py made from a benchmark video (needs the ffmpeg tool), once."""
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


# ----------------------------------------------------------------------------------------------------------------
# Inference

def median_ms(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


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

        def dygraph(clips):
            with paddle.no_grad():
                return model([paddle.to_tensor(c) for c in clips]).numpy()

        engines['Paddle dygraph'] = dygraph
        engines['Paddle Inference (oneDNN)'] = lambda clips: exported(clips).numpy()
        if torch_reference_available():
            import torch
            from torch_reference import build_reference, run_reference

            torch.set_num_threads(threads)
            reference = build_reference(cfg).eval()

            def torch_eager(clips):
                with torch.no_grad():
                    return run_reference(reference, clips).numpy()

            engines[ENGINE_NAMES['torch']] = torch_eager
        else:
            logger.info(NO_TORCH)
        rows = []
        rng = np.random.default_rng(0)
        for batch in args.batches:
            clips = [rng.standard_normal([batch] + shape).astype(np.float32) for shape in input_shapes(cfg, args.size)]
            for name, run in engines.items():
                ms = median_ms(lambda: run(clips), args.repeats) / batch
                rows.append({'engine': name, 'batch': batch, 'ms_per_view': round(ms, 1)})
                logger.info('%s, batch %d: %.1f ms per view', name, batch, ms)
    return {'benchmark': 'infer', 'machine': machine_info(), 'config': ' '.join([args.config] + args.override),
            'size': args.size, 'threads': threads, 'repeats': args.repeats, 'rows': rows}


def infer_table(result: Dict) -> str:
    lines = [f"infer: {result['config']}, {result['size']}x{result['size']} views, {result['threads']} threads, "
             f"median of {result['repeats']}", '| engine | batch | ms / view | vs Paddle Inference |',
             '|---|---|---|---|']
    base = {r['batch']: r['ms_per_view'] for r in result['rows'] if r['engine'].startswith('Paddle Inference')}
    for r in result['rows']:
        lines.append(f"| {r['engine']} | {r['batch']} | {r['ms_per_view']:.1f} | "
                     f"{r['ms_per_view'] / base[r['batch']]:.2f}x |")
    lines.append('machine: ' + ', '.join(f'{k} {v}' for k, v in result['machine'].items()))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Training step

TRAIN_CASES = {'full': ('slowfast.yaml', 1), 'tiny': ('slowfast-demo.yaml', 8)}  # config, batch
TRAIN_ENGINES = ('dygraph', 'conv3d_stem', 'mkl_default', 'to_static', 'onednn', 'torch')
ENGINE_NAMES = {'dygraph': 'Paddle dygraph', 'conv3d_stem': 'Paddle dygraph, fast stem as Paddle conv3d',
                'mkl_default': "Paddle dygraph, MKL's default CPU path",
                'to_static': 'Paddle dygraph + jit.to_static', 'onednn': 'Paddle dygraph + FLAGS_use_mkldnn',
                'torch': 'PyTorch eager (pytorchvideo)'}


def rss_mib() -> float:
    """Resident memory of this process now, MiB."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def time_train_step(engine: str, config: str, batch: int, repeats: int, threads: int, profile: bool) -> Dict:
    """Median seconds of one training iteration (forward, cross-entropy, backward, optimizer step, clear) of the
    network of ``config`` at its crop size on random clips, in this process; and its peak resident memory.

    Run in a fresh process per engine (:func:`bench_train`) so the peak memory is the engine's own."""
    import resource

    from config_utils import input_shapes

    cfg = parse_config(config, [])
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal([batch] + shape).astype(np.float32)
             for shape in input_shapes(cfg, cfg.MODEL.crop_size)]
    labels = rng.integers(0, cfg.MODEL.num_classes, batch)
    if engine == 'torch':
        import torch
        from torch_reference import build_reference

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = build_reference(cfg, train=True).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=cfg.TRAIN.momentum, nesterov=True,
                                    weight_decay=cfg.TRAIN.l2_weight_decay)
        inputs, target = [torch.from_numpy(c) for c in clips], torch.from_numpy(labels)

        def step():  # pytorchvideo's fusion writes into the list it is given: a new list each call
            loss = torch.nn.functional.cross_entropy(model(list(inputs)), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    else:
        import paddle.nn.functional as F

        from model import build_model
        from lr_policy import build_optimizer

        if engine == 'mkl_default':  # the ablation of distributed.tune_cpu_blas (a no-op off AMD CPUs)
            os.environ.pop('MKL_DEBUG_CPU_TYPE', None)
        else:
            tune_cpu_blas()  # as train.py on a CPU
        if engine == 'conv3d_stem':  # the ablation of frame_conv.FrameConv3D, in this process only
            from frame_conv import FrameConv3D
            FrameConv3D.forward = paddle.nn.Conv3D.forward
        paddle.set_device('cpu')
        if engine == 'onednn':
            paddle.set_flags({'FLAGS_use_mkldnn': True})
        paddle.seed(0)
        model = build_model(cfg)
        model.train()
        optimizer, _ = build_optimizer(cfg, model)
        forward = paddle.jit.to_static(model) if engine == 'to_static' else model
        inputs, target = [paddle.to_tensor(c) for c in clips], paddle.to_tensor(labels)

        def step():
            loss = F.cross_entropy(forward(inputs), target)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
    before = rss_mib()
    seconds = median_ms(step, repeats) / 1000
    result = {'engine': ENGINE_NAMES[engine], 'config': os.path.basename(config), 'batch': batch,
              'crop': cfg.MODEL.crop_size, 'frames': cfg.MODEL.num_frames, 's_per_iter': round(seconds, 3),
              'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              'rss_before_steps_mib': round(before),
              'MKL_DEBUG_CPU_TYPE': os.environ.get('MKL_DEBUG_CPU_TYPE', 'unset')}
    if profile and engine == 'dygraph':
        result['profile'] = profile_step(step)
    return result


def profile_step(step: Callable[[], None], top: int = 15) -> List[Dict]:
    """The ``top`` operators of two training steps by total CPU time (``paddle.profiler``, read back from its
    Chrome trace), in ms per step with their share of all operator time."""
    import tempfile

    import paddle.profiler as profiler

    with tempfile.TemporaryDirectory() as folder:
        trace = os.path.join(folder, 'trace.json')
        with profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda _: None) as prof:
            for _ in range(2):
                step()
                prof.step()
        prof.export(trace, format='json')
        with open(trace) as f:
            events = json.load(f)['traceEvents']
    totals: Dict[str, float] = {}
    for event in events:
        if event.get('cat') == 'Operator' and event.get('ph') == 'X':
            name = re.sub(r'\[.*\]$', '', event['name']).strip()  # 'conv3d dygraph[1.2 ms]' -> 'conv3d dygraph'
            totals[name] = totals.get(name, 0.0) + event['dur'] / 1000  # us -> ms
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{'op': name, 'ms': round(ms / 2, 1), 'share': round(ms / whole, 3)} for name, ms in ranked]


# representative 3D convolutions of the 4x16 R50 at 224 (batch 1): (name, C_in, C_out, kernel, [T, H, W], stride)
CONV_LAYERS = (('fast stem 5x7x7, 3->8, 32x224x224', 3, 8, (5, 7, 7), (32, 224, 224), (1, 2, 2)),
               ('slow res3 1x3x3, 128->128, 8x28x28', 128, 128, (1, 3, 3), (8, 28, 28), (1, 1, 1)),
               ('fast res4 3x1x1, 32->32, 32x14x14', 32, 32, (3, 1, 1), (32, 14, 14), (1, 1, 1)))


def bench_conv_layouts(repeats: int, threads: int) -> List[Dict]:
    """ms of forward + backward of each of CONV_LAYERS in Paddle dygraph, channels-first vs channels-last vs
    ``conv3d_by_frames`` (the network's fast stem on a CPU), and in PyTorch (channels-first) when installed."""
    from frame_conv import conv3d_by_frames

    tune_cpu_blas()
    paddle.set_device('cpu')
    torch = None
    if torch_reference_available():
        import torch
        torch.set_num_threads(threads)
    rows = []
    for name, dim_in, dim_out, kernel, (t, h, w), stride in CONV_LAYERS:
        row = {'layer': name}
        padding = [k // 2 for k in kernel]
        for layout in ('NCDHW', 'NDHWC'):
            conv = paddle.nn.Conv3D(dim_in, dim_out, kernel, stride=stride, padding=padding, data_format=layout)
            x = paddle.randn([1, dim_in, t, h, w] if layout == 'NCDHW' else [1, t, h, w, dim_in])
            x.stop_gradient = False

            def step():
                conv(x).sum().backward()
                conv.clear_gradients()
            row[layout] = round(median_ms(step, repeats), 1)
        weight = paddle.create_parameter([dim_out, dim_in] + list(kernel), 'float32')
        x = paddle.randn([1, dim_in, t, h, w])
        x.stop_gradient = False

        def by_frames_step():
            conv3d_by_frames(x, weight, stride, padding).sum().backward()
            weight.clear_gradient()
        row['by_frames'] = round(median_ms(by_frames_step, repeats), 1)
        if torch is not None:
            torch_conv = torch.nn.Conv3d(dim_in, dim_out, kernel, stride=stride, padding=padding)
            torch_x = torch.randn(1, dim_in, t, h, w, requires_grad=True)

            def torch_step():
                torch_conv(torch_x).sum().backward()
                torch_conv.zero_grad()
            row['torch'] = round(median_ms(torch_step, repeats), 1)
        rows.append(row)
        logger.info('%s: %s', name, ', '.join(f'{k} {v} ms' for k, v in row.items() if k != 'layer'))
    return rows


def _train_worker(queue, *args) -> None:
    try:
        queue.put(time_train_step(*args))
    except Exception as error:  # reported as the row's error, the other engines still run
        queue.put({'engine': ENGINE_NAMES[args[0]], 'error': f'{type(error).__name__}: {error}'})


def _run_train_engine(context, engine: str, case: str, repeats: int, threads: int, profile: bool) -> Dict:
    """One engine and case in a fresh process: its row (or an error row)."""
    from queue import Empty

    config, batch = TRAIN_CASES[case]
    queue = context.Queue()
    worker = context.Process(target=_train_worker, args=(queue, engine, os.path.join(ROOT, config), batch, repeats,
                                                         threads, profile))
    worker.start()
    row = None
    while row is None:
        try:
            row = queue.get(timeout=5)
        except Empty:  # still running, or died without a word (a crash in a kernel)
            if not worker.is_alive() and queue.empty():
                row = {'engine': ENGINE_NAMES[engine], 'error': f'exited with code {worker.exitcode}'}
    worker.join()
    row['case'] = case
    return row


def bench_train(args) -> Dict:
    """Seconds per training iteration and peak memory, each engine and case in its own fresh process. With
    ``args.rounds`` > 1 the engines take turns, round after round, and a row's time is the median of its rounds'
    medians: a slow spell of a shared machine then hits every engine instead of the one that ran during it."""
    import multiprocessing

    threads = int(os.environ.get('OMP_NUM_THREADS', 0)) or os.cpu_count()
    os.environ['OMP_NUM_THREADS'] = str(threads)  # the children's Paddle reads it at import
    context = multiprocessing.get_context('spawn')
    engines = [e for e in args.engines if e != 'torch' or torch_reference_available()]
    if len(engines) < len(args.engines):
        logger.info(NO_TORCH)
    rows = []
    for case in args.cases:
        runs = {engine: [] for engine in engines}
        for turn in range(args.rounds):
            for engine in engines:
                row = _run_train_engine(context, engine, case, args.repeats, threads, args.profile and turn == 0)
                runs[engine].append(row)
                logger.info('%s, %s, round %d/%d: %s', case, row['engine'], turn + 1, args.rounds,
                            row.get('error') or f"{row['s_per_iter']:.3f} s per iteration, "
                                                f"peak {row['peak_rss_mib']} MiB")
        for engine in engines:
            failed = [r for r in runs[engine] if 'error' in r]
            if failed:
                rows.append(failed[0])
                continue
            row = dict(runs[engine][0])
            row['round_s_per_iter'] = [r['s_per_iter'] for r in runs[engine]]
            row['s_per_iter'] = statistics.median(row['round_s_per_iter'])  # memory: the first round's
            rows.append(row)
    layouts = bench_conv_layouts(args.repeats, threads) if args.conv_layouts else []
    return {'benchmark': 'train', 'machine': machine_info(), 'threads': threads, 'repeats': args.repeats,
            'rounds': args.rounds, 'rows': rows, 'conv_layouts': layouts}


NO_TORCH = 'PyTorch reference not timed: torch or pytorchvideo is not installed'


def torch_reference_available() -> bool:
    """Whether torch and pytorchvideo are installed (without importing them into this process)."""
    from importlib.util import find_spec

    return find_spec('torch') is not None and find_spec('pytorchvideo') is not None


def train_table(result: Dict) -> str:
    lines = [f"train: seconds per iteration (forward, loss, backward, SGD step) on random clips, "
             f"{result['threads']} threads, median of {result['repeats']}"
             + (f", median of {result['rounds']} rounds in turn" if result.get('rounds', 1) > 1 else ''),
             '| case | engine | batch | s / iter | vs Paddle dygraph | vs PyTorch | peak RSS MiB | of which steps |',
             '|---|---|---|---|---|---|---|---|']
    for case in dict.fromkeys(r['case'] for r in result['rows']):
        rows = [r for r in result['rows'] if r['case'] == case]
        ok = {r['engine']: r for r in rows if 'error' not in r}
        base = ok.get(ENGINE_NAMES['dygraph'])
        torch_row = ok.get(ENGINE_NAMES['torch'])
        for r in rows:
            if 'error' in r:
                lines.append(f"| {case} | {r['engine']} | | failed: {r['error'][:120]} | | | | |")
                continue
            vs_base = f"{r['s_per_iter'] / base['s_per_iter']:.2f}x" if base else ''
            vs_torch = f"{r['s_per_iter'] / torch_row['s_per_iter']:.2f}x" if torch_row else ''
            lines.append(f"| {case} ({r['config']}, {r['frames']} frames, {r['crop']}px) | {r['engine']} | "
                         f"{r['batch']} | {r['s_per_iter']:.3f} | {vs_base} | {vs_torch} | {r['peak_rss_mib']} | "
                         f"{r['peak_rss_mib'] - r['rss_before_steps_mib']} |")
    for r in result['rows']:
        if r.get('profile'):
            lines.append(f"\nPaddle dygraph, {r['case']}: operators by CPU time per iteration (paddle.profiler)")
            lines.append('| operator | ms | share |')
            lines.append('|---|---|---|')
            lines.extend(f"| {p['op']} | {p['ms']} | {p['share']:.1%} |" for p in r['profile'])
    if result.get('conv_layouts'):
        lines += ['\none 3D convolution, forward + backward (input gradient included), batch 1: Paddle dygraph '
                  'conv3d channels-first / channels-last, conv3d_by_frames, PyTorch eager',
                  '| layer | NCDHW ms | NDHWC ms | by frames ms | PyTorch ms | NCDHW / PyTorch | '
                  'by frames / PyTorch |', '|---|---|---|---|---|---|---|']
        for r in result['conv_layouts']:
            torch_ms = r.get('torch')
            versus = [f"{r[key] / torch_ms:.2f}x" if torch_ms else '' for key in ('NCDHW', 'by_frames')]
            lines.append(f"| {r['layer']} | {r['NCDHW']} | {r['NDHWC']} | {r['by_frames']} | {torch_ms or ''} | "
                         f"{versus[0]} | {versus[1]} |")
    lines.append('machine: ' + ', '.join(f'{k} {v}' for k, v in result['machine'].items()))
    return '\n'.join(lines)


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    data = sub.add_parser('data', help='data pipeline throughput vs the original pipeline and the decode floor')
    evaluation = sub.add_parser('eval', help='the data side of the 30-view evaluation (data --measures test)')
    for p in (data, evaluation):
        p.add_argument('--video-dir', default=os.path.join(ROOT, 'data', 'bench_videos'),
                       help='where the benchmark videos are written once (default: %(default)s)')
        p.add_argument('--repeats', type=int, default=3)
        p.add_argument('--quick', action='store_true', help='fewer clips and worker settings')
        p.add_argument('--resolutions', nargs='+', default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
        p.add_argument('--json', help='also write the results here')
    data.add_argument('--measures', nargs='+', default=['train', 'test', 'decoders'],
                      choices=['train', 'test', 'decoders'],
                      help='decoders: OpenCV frame seeking vs PyAV (ours) for exactness and speed on clean and '
                           'hard videos (tools/make_hard_videos.py; needs the ffmpeg tool)')
    evaluation.set_defaults(measures=['test'])
    infer = sub.add_parser('infer', help='ms per view: dygraph, Paddle Inference, PyTorch eager')
    infer.add_argument('--config', default=os.path.join(ROOT, 'slowfast.yaml'))
    infer.add_argument('--size', type=int, default=256, help='view size in pixels (default: %(default)s)')
    infer.add_argument('--batches', type=int, nargs='+', default=[1, 8])
    infer.add_argument('--repeats', type=int, default=5)
    infer.add_argument('--json', help='also write the results here')
    infer.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value',
                       help='config override, e.g. -o MODEL.alpha=4 -o MODEL.fusion_kernel_size=7 (8x8)')
    train = sub.add_parser('train', help='s per training iteration and peak memory: Paddle variants, PyTorch eager')
    train.add_argument('--cases', nargs='+', default=list(TRAIN_CASES), choices=list(TRAIN_CASES),
                       help='full: slowfast.yaml (4x16 R50, 224 crop) at batch 1; tiny: slowfast-demo.yaml at '
                            'batch 8 (default: both)')
    train.add_argument('--engines', nargs='+', default=list(TRAIN_ENGINES), choices=TRAIN_ENGINES)
    train.add_argument('--repeats', type=int, default=5, help='timed steps per process (default: %(default)s)')
    train.add_argument('--rounds', type=int, default=1,
                       help='run the engines in turn this many times; the table shows the median of the rounds '
                            '(default: %(default)s)')
    train.add_argument('--profile', action='store_true', help='also list the Paddle dygraph step\'s top operators')
    train.add_argument('--conv-layouts', action='store_true',
                       help='also time representative 3D convolutions channels-first vs channels-last')
    train.add_argument('--json', help='also write the results here')
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == 'infer':
        result = bench_infer(args)
        print(infer_table(result))
    elif args.command == 'train':
        result = bench_train(args)
        print(train_table(result))
    else:
        result = bench_data(args)  # eval: the test-view rows of the data benchmark
        print(table(result))
        if result['decoders']:
            print('\n' + decoder_table(result['decoders']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
