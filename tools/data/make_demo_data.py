"""Write a small synthetic video dataset that only motion separates, in the Kinetics list format.

Every video is a random static textured background cluttered with random shapes, and more random shapes (kind,
colour, size, count) drifting across it with wrap-around, plus sensor noise. The class is the drift direction
(right, left, down, up). Start positions are uniform and motion wraps around the frame, so every single frame of
every class comes from the same distribution: a model must use time to beat chance.

    python tools/data/make_demo_data.py --out data/demo     # reuses a complete dataset made with the same settings
    python tools/data/make_demo_data.py --out data/demo --fresh    # regenerate
    python tools/data/make_demo_data.py --out data/demo-shuffled --shuffle_frames   # the control: no motion left

``--shuffle_frames`` writes the same videos with their frames in a random order (one permutation per video): every
frame is kept, the order is destroyed. The frames of a shuffled video still show the shapes at positions along one
line, so a model may tell the axis (horizontal or vertical) but not the direction along it: its top-1 is at most 0.5
(the control experiment; docs/RESULTS.md).

Writes ``OUT/{train,val}.txt`` (``videos/<split>/<name>.mp4 <label>``, relative to OUT), ``OUT/classes.txt`` and
``OUT/videos/``. Interrupted runs leave no partial video (each is written to a temporary name, then renamed) and
resume where they stopped.
"""
import argparse
import json
import logging
import os
import shutil
import sys
from typing import Dict, List, Optional

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from atomic import check_output_folder  # noqa: E402
from config_utils import setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from video_io import write_video  # noqa: E402
from video_pool import map_videos  # noqa: E402  (beside this file)

logger = logging.getLogger('make_demo_data')

GENERATOR_VERSION = 3  # bump when make_video changes: a dataset made by another version is regenerated
CLASSES = {'right': (0, 1), 'left': (0, -1), 'down': (1, 0), 'up': (-1, 0)}  # (dy, dx) unit direction


def random_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random colour texture, ``[H, W, 3]`` uint8."""
    scale = rng.uniform(2, 12)
    noise = rng.standard_normal((height, width, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), scale)
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-6)
    base, spread = rng.uniform(0, 255, 3), rng.uniform(30, 160)
    return np.clip(base + (noise - 0.5) * spread, 0, 255).astype(np.uint8)


def draw_shapes(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray, count: int) -> None:
    """Draw ``count`` random filled shapes on ``canvas`` (and 255 on ``mask`` where they are)."""
    height, width = canvas.shape[:2]
    for _ in range(count):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        cy, cx = int(rng.uniform(0, height)), int(rng.uniform(0, width))
        size = int(rng.uniform(0.06, 0.16) * min(height, width)) + 2
        kind = rng.integers(0, 3)
        for target, value in ((canvas, colour), (mask, 255)):
            if kind == 0:
                cv2.circle(target, (cx, cy), size, value, -1)
            elif kind == 1:
                cv2.rectangle(target, (cx - size, cy - size // 2), (cx + size, cy + size // 2), value, -1)
            else:
                pts = np.array([[cx, cy - size], [cx - size, cy + size], [cx + size, cy + size]], np.int32)
                cv2.fillPoly(target, [pts], value)


def make_video(seed: int, label: int, height: int, width: int, frames: int, shuffle_frames: bool = False,
               masks: Optional[List[np.ndarray]] = None) -> List[np.ndarray]:
    """RGB frames of one video of class ``label`` (in a random order if ``shuffle_frames``).

    ``masks``: a list that receives, per frame, ``[H, W]`` uint8: 2 where the moving shapes are, 1 where only the
    static clutter is, 0 elsewhere (for the Grad-CAM test)."""
    rng = np.random.default_rng(seed)
    background = random_texture(rng, height, width)
    clutter = np.zeros((height, width), np.uint8)
    draw_shapes(rng, background, clutter, int(rng.integers(15, 30)))  # static clutter
    layer = random_texture(rng, height, width)
    mask = np.zeros((height, width), np.uint8)
    draw_shapes(rng, layer, mask, int(rng.integers(10, 20)))  # a third of the frame or more: see docs/RESULTS.md
    dy, dx = list(CLASSES.values())[label]
    speed = rng.uniform(1.5, 4.0)  # pixels per frame
    start = rng.uniform(0, height), rng.uniform(0, width)  # uniform start: no frame reveals the direction
    out = []
    for t in range(frames):
        shift = (int(round(start[0] + dy * speed * t)), int(round(start[1] + dx * speed * t)))
        moved, alpha = np.roll(layer, shift, axis=(0, 1)), np.roll(mask, shift, axis=(0, 1))[..., None] > 0
        frame = np.where(alpha, moved, background).astype(np.float32)
        if masks is not None:
            masks.append(np.where(alpha[..., 0], 2, clutter > 0).astype(np.uint8))
        frame = frame + rng.normal(0, 3, frame.shape)  # sensor noise
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    if shuffle_frames:
        order = np.random.default_rng([seed, 1]).permutation(frames)
        out = [out[i] for i in order]
        if masks is not None:
            masks[-frames:] = [masks[-frames:][i] for i in order]
    return out


def write_one(job) -> None:
    """Make and write one video: ``(path, label, seed, args)``."""
    path, label, seed, args = job
    write_video(path, make_video(seed, label, args.height, args.width, args.frames, args.shuffle_frames), args.fps)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/demo', help='output folder (default: %(default)s)')
    parser.add_argument('--train_per_class', '--train-per-class', type=int, default=60)
    parser.add_argument('--val_per_class', '--val-per-class', type=int, default=15)
    parser.add_argument('--frames', type=int, default=48, help='frames per video')
    parser.add_argument('--fps', type=float, default=30.0)
    parser.add_argument('--height', type=int, default=96)
    parser.add_argument('--width', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--shuffle_frames', '--shuffle-frames', action='store_true',
                        help='write every video\'s frames in a random order (the frame-shuffle control)')
    parser.add_argument('--fresh', action='store_true', help='delete OUT and regenerate')
    parser.add_argument('--workers', type=int, default=os.cpu_count(), help='parallel processes')
    args = parser.parse_args(argv)
    setup_logging()
    if args.height % 2 or args.width % 2:
        parser.error('--height and --width must be even (H.264 4:2:0)')

    settings = {k: getattr(args, k) for k in ('train_per_class', 'val_per_class', 'frames', 'fps', 'height',
                                              'width', 'seed')}
    if args.shuffle_frames:  # only then, so datasets written before the flag existed are still reused
        settings['shuffle_frames'] = True
    settings['classes'] = list(CLASSES)
    settings['generator_version'] = GENERATOR_VERSION
    settings_file = os.path.join(args.out, 'settings.json')
    done_file = os.path.join(args.out, 'DONE')
    if os.path.isdir(args.out) and os.listdir(args.out) and not os.path.isfile(settings_file):
        logger.error('%s exists and was not written by this tool (no settings.json): refusing to replace it; '
                     'choose another --out (to train on your own dataset: bash run_demo.sh --data %s)',
                     args.out, args.out)
        sys.exit(2)
    if os.path.isdir(args.out) and not args.fresh:
        previous = json.load(open(settings_file)) if os.path.isfile(settings_file) else None  # None: empty folder
        if previous == settings and os.path.isfile(done_file):
            logger.info('reusing the demo dataset in %s (--fresh regenerates it)', args.out)
            return
        if previous != settings:
            logger.info('%s holds a demo dataset made with other settings: regenerating it', args.out)
            args.fresh = True
    if args.fresh and os.path.isdir(args.out):
        shutil.rmtree(args.out)
    check_output_folder(args.out, '--out')
    with open(settings_file, 'w') as f:
        json.dump(settings, f, indent=1)

    jobs: Dict[str, List] = {}
    for split, per_class, offset in (('train', args.train_per_class, 0), ('val', args.val_per_class, 10 ** 6)):
        os.makedirs(os.path.join(args.out, 'videos', split), exist_ok=True)
        jobs[split] = [(f'videos/{split}/{name}_{i:04d}.mp4', label, args.seed * 10 ** 7 + offset + i * 8 + label)
                       for label, name in enumerate(CLASSES) for i in range(per_class)]
    total = sum(len(v) for v in jobs.values())
    todo = [(os.path.join(args.out, rel), label, seed, args) for items in jobs.values() for rel, label, seed in items
            if not os.path.isfile(os.path.join(args.out, rel))]  # finished videos of an interrupted run are kept
    # every video has its own seed: the same files for any --workers
    map_videos(write_one, todo, args.workers, f'demo videos ({total - len(todo)} of {total} kept)')
    for split, items in jobs.items():
        with open(os.path.join(args.out, f'{split}.txt'), 'w') as f:
            f.writelines(f'{rel} {label}\n' for rel, label, _ in items)
    with open(os.path.join(args.out, 'classes.txt'), 'w') as f:
        f.writelines(f'{name}\n' for name in CLASSES)
    open(done_file, 'w').close()
    logger.info('wrote %d videos (%s classes: %s) to %s', total, len(CLASSES), ', '.join(CLASSES), args.out)


if __name__ == '__main__':
    exit_on_user_error(main, logger)
