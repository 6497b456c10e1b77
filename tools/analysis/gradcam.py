"""Grad-CAM for both pathways: where in a clip the network looks for a class (Selvaraju et al., ICCV 2017; the idea
of PySlowFast's gradcam_utils.py).

    python tools/analysis/gradcam.py --config slowfast.yaml --weights checkpoints/slowfast_epoch195 --video clip.mp4
    python tools/analysis/gradcam.py ... --video folder/ --label "playing guitar" --time 3.5 --layer res4

For each video one clip (centred at ``--time`` seconds, default the middle; the whole frame at short side ``--size``,
default ``INFER.target_size``) goes through the network; the gradient of the chosen class's score (the predicted
class, or ``--class_index`` / ``--label``) with respect to each pathway's output of ``--layer`` (default res5, the
last convolution block), averaged over time and space, weighs that output's channels: ``ReLU(sum_c w_c A_c)``,
brought to the clip's frames and pixels and scaled to [0, 1] per pathway. Writes ``<save_path>/<name>_gradcam.png``
(a row of the clip's frames, then each pathway's heat map over them; at most ``--columns`` frames) and
``<name>_gradcam.npz`` (``frames`` [T, H, W, 3] RGB, ``frame_indices`` [T], ``cam_slow`` / ``cam_fast`` [T, H, W],
``class_index``, ``probability``); ``save_path`` defaults to ``INFER.save_path``/gradcam. A video that does not decode
is logged and skipped; the exit status is then 1.
"""
import logging
import math
import os
import sys
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import paddle  # before setup_logging: importing Paddle 2.6 resets the root log level

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import distributed  # noqa: E402
from atomic import atomic_path, check_output_folder  # noqa: E402
from config_utils import AttrDict, build_parser, parse_args, setup_logging  # noqa: E402
from errors import ConfigError, exit_on_user_error  # noqa: E402
from kinetics_dataset import (channels_first, clip_frame_indices, clip_span, model_inputs,  # noqa: E402
                              pack_pathways)
from model import VideoNetwork  # noqa: E402
from scoring import build_eval_model  # noqa: E402
from video_io import VideoError, VideoReader  # noqa: E402
from video_lists import collect_inputs, file_stems, read_label_map  # noqa: E402

logger = logging.getLogger('gradcam')
LAYERS = ('res2', 'res3', 'res4', 'res5')
PATHWAY_NAMES = ('slow', 'fast')


def grad_cam(model: VideoNetwork, inputs: List[paddle.Tensor], layer: str = 'res5',
             class_index: Optional[int] = None) -> Tuple[List[np.ndarray], int, float]:
    """Grad-CAM of one clip (batch 1) at ``layer``'s output of every pathway.

    Returns ``(maps, class_index, probability)``: per pathway ``[T_p, h, w]`` in [0, 1] (at that layer's
    resolution: T_p the pathway's frames, h, w the input's / 4, 8, 16, 32 for res2..res5), the class explained
    (``class_index``, else the predicted one) and its probability (the eval network's).
    """
    if layer not in LAYERS:
        raise ConfigError(f'--layer must be one of {", ".join(LAYERS)}, got {layer!r}')
    stage = getattr(model, f's{LAYERS.index(layer) + 2}')
    found = []
    hook = stage.register_forward_post_hook(lambda _layer, _inputs, outputs: found.append(list(outputs)))
    try:
        maps = model.backbone(inputs)
    finally:
        hook.remove()
    activations = found[0]
    probs = model.head(maps).numpy()[0]
    if class_index is None:
        class_index = int(np.argmax(probs))
    score = model.head.projection(model.head.features(maps))[0, class_index]  # the class's logit, mean over positions
    gradients = paddle.grad(score, activations)
    cams = []
    for activation, gradient in zip(activations, gradients):
        weights = gradient.mean(axis=[2, 3, 4], keepdim=True)  # [1, C, 1, 1, 1]
        cam = paddle.nn.functional.relu((weights * activation).sum(axis=1))[0].numpy()  # [T_p, h, w]
        peak = cam.max()
        cams.append(cam / peak if peak > 0 else cam)
    return cams, class_index, float(probs[class_index])


def to_clip(cam: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
    """A pathway's map ``[T_p, h, w]`` -> ``[frames, height, width]``: linear in time (the pathway's frames are
    ``linspace(0, frames - 1, T_p)`` of the clip, ``pack_pathways``), bilinear in space."""
    positions = np.linspace(0, frames - 1, len(cam))
    t = np.arange(frames, dtype=np.float64)
    below = np.clip(np.searchsorted(positions, t, side='right') - 1, 0, len(cam) - 1)
    above = np.minimum(below + 1, len(cam) - 1)
    span = np.where(above > below, positions[above] - positions[below], 1.0)
    weight = ((t - positions[below]) / span).astype(np.float32)[:, None, None]
    timed = cam[below] * (1 - weight) + cam[above] * weight
    return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in timed]).clip(0, 1)


def read_clip(path: str, cfg: AttrDict, short_side: int, time: Optional[float]) -> Tuple[np.ndarray, np.ndarray]:
    """``(frame indices [T], BGR frames [T, H, W, 3])`` of the clip centred at ``time`` seconds (None: the middle),
    sampled as the test's clips (``num_frames`` over ``num_frames * sampling_rate`` frames at ``target_fps``)."""
    m = cfg.MODEL

    def sample(length: int, fps: float) -> np.ndarray:
        span = clip_span(m, fps)
        centre = length / 2 if time is None else time * fps
        start = math.ceil(min(max(centre - span / 2, 0.0), max(length - span, 0.0)))
        # the test's offsets, as the sliding windows place a clip at its start
        return np.minimum(start + clip_frame_indices(math.ceil(span), span, m.num_frames, 0.0), length - 1)

    with VideoReader(path, m.target_fps) as video:
        return video.read_sampled(sample, short_side)


def explain_video(model: VideoNetwork, cfg: AttrDict, path: str, short_side: int, layer: str,
                  class_index: Optional[int], time: Optional[float]) -> Dict:
    """Grad-CAM of one video's clip: ``{'frames' [T, H, W, 3] RGB, 'frame_indices', 'cam_slow' (and 'cam_fast')
    [T, H, W], 'class_index', 'probability'}``."""
    indices, frames = read_clip(path, cfg, short_side, time)
    if min(frames.shape[1:3]) < cfg.MODEL.crop_size:
        raise ConfigError(f'--size {short_side} is smaller than MODEL.crop_size {cfg.MODEL.crop_size}')
    pathways = pack_pathways(channels_first(frames), cfg.MODEL.alpha, 2 if cfg.MODEL.name == 'SLOWFAST' else 1)
    inputs = model_inputs([paddle.to_tensor(p[None]) for p in pathways], cfg)
    cams, class_index, probability = grad_cam(model, inputs, layer, class_index)
    out = {'frames': np.ascontiguousarray(frames[..., ::-1]), 'frame_indices': indices, 'class_index': class_index,
           'probability': probability}
    for name, cam in zip(PATHWAY_NAMES, cams):
        out[f'cam_{name}'] = to_clip(cam, len(frames), frames.shape[1], frames.shape[2])
    return out


def overlay(frame: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """An RGB frame with a heat map ``[H, W]`` in [0, 1] blended over it (JET: red where the map is high)."""
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (0.5 * frame + 0.5 * heat).astype(np.uint8)


def save_strip(result: Dict, title: str, path: str, columns: int) -> None:
    """The PNG: the title, a row of frames, then a row per pathway with its heat map over the same frames."""
    frames = result['frames']
    chosen = np.unique(np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int))
    rows = [np.concatenate([frames[t] for t in chosen], axis=1)]
    labels = ['frames']
    for name in PATHWAY_NAMES:
        if f'cam_{name}' in result:
            rows.append(np.concatenate([overlay(frames[t], result[f'cam_{name}'][t]) for t in chosen], axis=1))
            labels.append(f'{name} pathway')
    height = frames.shape[1]
    scale = max(0.35, height / 500)
    band = int(28 * max(scale, 0.5))
    canvas = [np.full((band, rows[0].shape[1], 3), 255, np.uint8)]
    cv2.putText(canvas[0], title, (4, band - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    for label, row in zip(labels, rows):
        row = row.copy()
        cv2.putText(row, label, (4, int(16 * max(scale, 0.5))), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
        canvas.append(row)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp + '.png', np.concatenate(canvas)[..., ::-1]):
            raise OSError(f'cannot write {path}')
        os.replace(tmp + '.png', tmp)


def main() -> int:
    parser = build_parser('infer', description=__doc__.split('\n\n')[0])
    parser.add_argument('--video', action='append', required=True, metavar='PATH',
                        help='a video file or a folder of videos; may be given many times')
    parser.add_argument('--class_index', type=int, help='explain this class (default: the predicted one)')
    parser.add_argument('--label', help='explain the class of this name in DATA.label_map')
    parser.add_argument('--layer', default='res5', choices=LAYERS, help='whose output is explained (default: res5)')
    parser.add_argument('--time', type=float, help='centre of the clip in seconds (default: the middle)')
    parser.add_argument('--size', type=int, help='short side of the frames (default: INFER.target_size)')
    parser.add_argument('--columns', type=int, default=8, help='frames shown in the PNG (default: %(default)s)')
    cfg, args = parse_args('infer', parser=parser)
    setup_logging()
    distributed.setup(args.use_gpu, False)
    if cfg.INFER.use_inference:
        raise ConfigError('Grad-CAM needs gradients: the dygraph network and --weights, not INFER.use_inference')
    names = read_label_map(cfg.DATA.label_map, cfg.MODEL.num_classes)
    class_index = args.class_index
    if args.label is not None:
        if not names or args.label not in names:
            raise ConfigError(f'--label {args.label!r} is not a class name of DATA.label_map {cfg.DATA.label_map!r}')
        class_index = names.index(args.label)
    if class_index is not None and not 0 <= class_index < cfg.MODEL.num_classes:
        raise ConfigError(f'--class_index {class_index} is outside [0, {cfg.MODEL.num_classes})')
    samples, _ = collect_inputs(None, args.video, cfg)
    paths = [path for path, _ in samples]
    save_path = args.save_path or os.path.join(cfg.INFER.save_path, 'gradcam')
    check_output_folder(save_path, '--save_path', '' if args.save_path else 'not given: INFER.save_path/gradcam')
    model = build_eval_model(cfg, cfg.INFER.weights, args.allow_pickle)
    failed, stems = 0, file_stems(paths)
    for n, path in enumerate(paths):
        try:
            result = explain_video(model, cfg, path, args.size or cfg.INFER.target_size, args.layer, class_index,
                                   args.time)
        except VideoError as error:
            logger.error('cannot decode video %s: %s', error.path, error.reason)
            failed += 1
            continue
        name = names[result['class_index']] if names else str(result['class_index'])
        stem = os.path.join(save_path, stems[n] + '_gradcam')
        save_strip(result, f'{name} (p={result["probability"]:.2f}), Grad-CAM at {args.layer}', stem + '.png',
                   args.columns)
        with atomic_path(stem + '.npz') as tmp, open(tmp, 'wb') as f:
            np.savez_compressed(f, **result)
        logger.info('%s: class %d %s (p=%.3f) -> %s.png, .npz', path, result['class_index'], name,
                    result['probability'], stem)
    logger.info('Grad-CAM of %d videos in %s (%d failed)', len(paths) - failed, save_path, failed)
    return 1 if failed else 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
