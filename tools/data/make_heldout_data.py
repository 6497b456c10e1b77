"""Write motion-only datasets from generators the demo recipe was not tuned on, to check that it learns them.

``tools/data/make_demo_data.py`` draws shapes drifting over clutter; the kinds here share none of its code or settings
(112x112 frames, 40 frames at 25 fps, other textures):

- ``spin``: a textured canvas rotating clockwise or counter-clockwise, or zooming in or out (the kind of motion,
  not its direction; every pixel moves). Both zoom classes pass through the same range of scales, in opposite orders.
- ``pan``: a camera panning over a textured canvas towards one of 4 diagonal directions (the scene flows the other
  way; at the canvas edge the view wraps around).
- ``object``: one blob (5-17 % of the frame), textured like the background it crosses (camouflaged: visible only by
  its motion), moving east, west, south or north with wrap-around.

Start angles, scales and positions are uniform, so single frames carry no class. Then train the demo settings on it:

    python tools/data/make_heldout_data.py --kind spin --out data/heldout-spin
    bash run_demo.sh --data data/heldout-spin

Writes ``OUT/{train,val}.txt`` (``clips/<name>.mp4 <label>``), ``OUT/classes.txt`` and ``OUT/clips/``; OUT must be
new or empty.
"""
import argparse
import logging
import os
import sys
from typing import List

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from atomic import check_output_folder  # noqa: E402
from config_utils import setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from video_io import write_video  # noqa: E402

logger = logging.getLogger('make_heldout_data')

CLASSES = {'spin': ['cw', 'ccw', 'zoom_in', 'zoom_out'], 'pan': ['ne', 'nw', 'se', 'sw'],
           'object': ['east', 'west', 'south', 'north']}
CANVAS = 448  # the texture the frames are cut from, 4x the frame size


def canvas(rng: np.random.Generator) -> np.ndarray:
    """Band-limited colour noise under 20-60 random discs and bars, ``[CANVAS, CANVAS, 3]`` uint8."""
    noise = rng.standard_normal((CANVAS // 4, CANVAS // 4, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.7, 2.5))
    noise = cv2.resize(noise, (CANVAS, CANVAS), interpolation=cv2.INTER_CUBIC)
    noise = (noise - noise.mean()) / (noise.std() + 1e-6)
    image = np.clip(rng.uniform(60, 200, 3) + noise * rng.uniform(25, 60), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(20, 60))):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        x, y = (int(v) for v in rng.uniform(0, CANVAS, 2))
        r = int(rng.uniform(6, 30))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), r, colour, -1)
        else:
            cv2.rectangle(image, (x - r, y - r // 2), (x + r, y + r // 2), colour, -1)
    return image


def warp(image: np.ndarray, size: int, angle: float, zoom: float) -> np.ndarray:
    """The ``size`` x ``size`` view of the canvas centre, turned by ``angle`` degrees, ``zoom`` canvas pixels each."""
    matrix = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), angle, 1 / zoom)
    matrix[:, 2] += size / 2 - CANVAS / 2
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)


def make_video(kind: str, seed: int, label: int, size: int, frames: int) -> List[np.ndarray]:
    """RGB frames of one video of class ``label`` of ``kind``."""
    rng = np.random.default_rng([seed, label])
    image = canvas(rng)
    out = []
    if kind == 'spin':
        angle, zoom = rng.uniform(0, 360), rng.uniform(1.4, 2.6)
        turn = rng.uniform(1.0, 3.0) * (-1 if label == 0 else 1)  # degrees a frame; cv2's angles turn anticlockwise
        low, high = np.log(1.35), np.log(2.75)
        rate = min(rng.uniform(0.006, 0.015), 0.9 * (high - low) / frames)  # log-zoom a frame
        start = rng.uniform(low, high - rate * frames)
        for t in range(frames):
            if label < 2:
                out.append(warp(image, size, angle + turn * t, zoom))
            else:  # zoom in: the view shrinks over the canvas
                step = t if label == 3 else frames - 1 - t
                out.append(warp(image, size, angle, np.exp(start + rate * step)))
    elif kind == 'pan':
        dy, dx = [(-1, 1), (-1, -1), (1, 1), (1, -1)][label]
        speed = rng.uniform(0.7, 2.2)
        y, x = rng.uniform(0, CANVAS - size, 2)
        for t in range(frames):
            shift = np.float32([[1, 0, -((x + dx * speed * t) % (CANVAS - size))],
                                [0, 1, -((y + dy * speed * t) % (CANVAS - size))]])
            out.append(cv2.warpAffine(image, shift, (size, size), flags=cv2.INTER_LINEAR))
    else:
        background = cv2.resize(image[:CANVAS // 2, :CANVAS // 2], (size, size), interpolation=cv2.INTER_AREA)
        texture = cv2.resize(canvas(rng)[:CANVAS // 2, :CANVAS // 2], (size, size), interpolation=cv2.INTER_AREA)
        corners = rng.uniform(-1, 1, (7, 2)) * rng.uniform(0.125, 0.23) * size + size / 2
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [cv2.convexHull(corners.astype(np.int32))], 255)
        dy, dx = [(0, 1), (0, -1), (1, 0), (-1, 0)][label]
        speed = rng.uniform(1.0, 3.0)
        y, x = rng.uniform(0, size, 2)
        for t in range(frames):
            shift = (int(round(y + dy * speed * t)), int(round(x + dx * speed * t)))
            inside = np.roll(mask, shift, axis=(0, 1))[..., None] > 0
            out.append(np.where(inside, np.roll(texture, shift, axis=(0, 1)), background))
    return [np.clip(f + rng.normal(0, 2, f.shape), 0, 255).astype(np.uint8) for f in out]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--kind', choices=sorted(CLASSES), required=True)
    parser.add_argument('--out', required=True, help='a new or empty folder')
    parser.add_argument('--train_per_class', '--train-per-class', type=int, default=60)
    parser.add_argument('--val_per_class', '--val-per-class', type=int, default=15)
    parser.add_argument('--frames', type=int, default=40, help='frames per video')
    parser.add_argument('--fps', type=float, default=25.0)
    parser.add_argument('--size', type=int, default=112, help='frame height and width (even)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    if args.size % 2:
        parser.error('--size must be even (H.264 4:2:0)')
    if os.path.isdir(args.out) and os.listdir(args.out):
        logger.error('%s is not empty: choose a new folder', args.out)
        sys.exit(2)
    check_output_folder(os.path.join(args.out, 'clips'), '--out')
    names = CLASSES[args.kind]
    lists = {'train': [], 'val': []}
    jobs = [(split, i, label) for split, count in (('train', args.train_per_class), ('val', args.val_per_class))
            for i in range(count) for label in range(len(names))]
    for split, i, label in tqdm(jobs, desc=f'{args.kind} videos', unit='video'):
        rel = f'clips/{split}_{names[label]}_{i:04d}.mp4'
        seed = args.seed * 10 ** 7 + (10 ** 6 if split == 'val' else 0) + i
        write_video(os.path.join(args.out, rel), make_video(args.kind, seed, label, args.size, args.frames), args.fps)
        lists[split].append(f'{rel} {label}\n')
    for split, lines in lists.items():  # the lists last: a folder with lists is complete
        with open(os.path.join(args.out, f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    with open(os.path.join(args.out, 'classes.txt'), 'w') as f:
        f.writelines(f'{name}\n' for name in names)
    logger.info('wrote %d %s videos (%s) to %s', len(jobs), args.kind, ', '.join(names), args.out)


if __name__ == '__main__':
    exit_on_user_error(main, logger)
