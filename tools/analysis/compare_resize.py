"""How much the resize filter changes what a network sees: OpenCV's bilinear on uint8 (this code's), PIL's bilinear
(PaddleVideo's, antialiased when shrinking) and torch's bilinear on floats (PySlowFast's, when torch is installed).

    python tools/analysis/compare_resize.py --videos a.mp4 b.mp4 --short_sides 256 224
    python tools/analysis/compare_resize.py --videos a.mp4 --config configs/slowfast_r50_8x8.yaml \
        --weights weights/paddlevideo-slowfast-8x8 -o TEST.target_size=224

Pixels: frames spread over each video, scaled to each short side by each filter; per pair of filters the mean and
99th-percentile absolute difference (0-255) and the PSNR. With ``--weights``: each video's 10x3-view probabilities
(eval.py's views and ensemble) with the views scaled by OpenCV and again by PIL: the largest probability change, the
mean absolute change and whether the top-1 class is the same.
"""
import argparse
import importlib.util
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import video_io  # noqa: E402
from atomic import check_output_file, write_json  # noqa: E402
from config_utils import parse_config, setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from video_io import VideoReader, scaled_size  # noqa: E402

logger = logging.getLogger('compare_resize')
Resize = Callable[[np.ndarray, Tuple[int, int]], np.ndarray]  # (uint8 [H, W, 3], (h, w)) -> [h, w, 3]


def opencv_linear(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def pil_bilinear(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def torch_bilinear(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """PySlowFast's: ``F.interpolate(bilinear, align_corners=False)`` on floats, rounded back for the comparison."""
    import torch

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    y = torch.nn.functional.interpolate(x, size=size, mode='bilinear', align_corners=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def filters() -> Dict[str, Resize]:
    found = {'opencv': opencv_linear, 'pil': pil_bilinear}
    if importlib.util.find_spec('torch') is not None:
        found['torch'] = torch_bilinear
    else:
        logger.info('torch is not installed: PySlowFast\'s filter left out')
    return found


def compare_pixels(paths: List[str], short_sides: List[int], frames: int) -> List[Dict]:
    rows = []
    resizers = filters()
    names = list(resizers)
    for path in paths:
        with VideoReader(path, 30.0) as video:
            picks = np.linspace(0, video.num_frames - 1, frames).round().astype(int)
            images = list(video.read(sorted(set(picks.tolist()))))
            height, width = video.height, video.width
        for short in short_sides:
            size = scaled_size(height, width, short)
            scaled = {n: np.stack([resizers[n](image, size).astype(np.float64) for image in images]) for n in names}
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    diff = np.abs(scaled[a] - scaled[b])
                    mse = float((diff ** 2).mean())
                    rows.append(dict(video=os.path.basename(path), source=f'{width}x{height}', short_side=short,
                                     pair=f'{a} vs {b}', mean_abs=float(diff.mean()),
                                     p99_abs=float(np.percentile(diff, 99)),
                                     psnr=float(10 * np.log10(255 ** 2 / mse)) if mse else float('inf')))
    return rows


def video_probabilities(cfg, weights: str, paths: List[str], resize: Optional[Resize]) -> np.ndarray:
    """``[videos, K]``: each video's mean 10x3-view probabilities, through eval.py's dataset and ensemble, with the
    views scaled by ``resize`` instead of OpenCV's filter when given."""
    from kinetics_dataset import KineticsMultiViewDataset, model_inputs
    from scoring import build_eval_model, score_videos

    model = build_eval_model(cfg, weights)
    dataset = KineticsMultiViewDataset(cfg, 'infer', samples=[(p, -1) for p in paths], source='--videos')
    original = video_io.resize_to
    if resize is not None:  # where every decoded frame is scaled (video_io's frame sink)
        video_io.resize_to = lambda image, size, out=None: _into(resize(image, tuple(size)), out)
    try:
        scores = score_videos(model, dataset, lambda clips: model_inputs(clips, cfg), cfg.INFER.batch_size, 0,
                              cfg.MODEL.num_classes, 0, 1)
    finally:
        video_io.resize_to = original
    return scores.sums / dataset.num_views


def _into(image: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    if out is None:
        return image
    out[...] = image
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--videos', nargs='+', required=True)
    parser.add_argument('--short_sides', type=int, nargs='+', default=[256, 224])
    parser.add_argument('--frames', type=int, default=16, help='frames compared per video (default: %(default)s)')
    parser.add_argument('--config', default='slowfast.yaml')
    parser.add_argument('--weights', help='also compare the 10x3-view probabilities of these weights')
    parser.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args(argv)
    setup_logging()
    if args.json:
        check_output_file(args.json, '--json')
    result = {'pixels': compare_pixels(args.videos, args.short_sides, args.frames)}
    logger.info('pixels (0-255), frames scaled to each short side:\n%s', '\n'.join(
        f'  {r["video"]:<24} {r["source"]:>9} -> {r["short_side"]:3d}  {r["pair"]:<16} mean |d| {r["mean_abs"]:5.2f}  '
        f'p99 |d| {r["p99_abs"]:5.1f}  PSNR {r["psnr"]:5.1f} dB' for r in result['pixels']))
    if args.weights:
        cfg = parse_config(args.config, args.override)
        ours = video_probabilities(cfg, args.weights, args.videos, None)
        pil = video_probabilities(cfg, args.weights, args.videos, pil_bilinear)
        change = np.abs(ours - pil)
        result['probabilities'] = [
            dict(video=os.path.basename(p), max_abs=float(change[n].max()), mean_abs=float(change[n].mean()),
                 top1_opencv=int(ours[n].argmax()), top1_pil=int(pil[n].argmax()),
                 p_top1_opencv=float(ours[n].max()), p_top1_pil=float(pil[n, ours[n].argmax()]))
            for n, p in enumerate(args.videos)]
        logger.info('10x3-view probabilities with OpenCV- vs PIL-scaled views (%s):\n%s', args.weights, '\n'.join(
            f'  {r["video"]:<24} max |dp| {r["max_abs"]:.4f}  mean |dp| {r["mean_abs"]:.5f}  top-1 '
            f'{r["top1_opencv"]} (p {r["p_top1_opencv"]:.3f}) vs {r["top1_pil"]} (p of that class '
            f'{r["p_top1_pil"]:.3f})' for r in result['probabilities']))
        same = sum(r['top1_opencv'] == r['top1_pil'] for r in result['probabilities'])
        logger.info('top-1 the same for %d of %d videos', same, len(args.videos))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
