"""What predict.py --timeline makes of a long video's window scores: per-window top-k, merged segments, the timeline
picture and the annotated video.

The label at time ``t`` is the top-1 of the window whose centre is nearest ``t`` (``window_at``): segments, the
picture and the annotated video all follow that rule, so a segment boundary falls half-way between the centres of
the last window of one label and the first of the next.
"""
import logging
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from atomic import atomic_path
from video_io import VideoReader, resize_short_side, write_video

logger = logging.getLogger(__name__)

# matplotlib's tab10: one colour per class (cycling), the same in the picture and the annotated video
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def class_colour(index: int) -> tuple:
    """RGB colour of class ``index``."""
    return PALETTE[index % len(PALETTE)]


def class_name(index: int, names: Optional[Sequence[str]]) -> str:
    return names[index] if names else str(index)


def window_edges(times: np.ndarray, duration: float) -> np.ndarray:
    """``[W + 1]``: window ``w`` (``times [W, 2]``, start/end seconds) is the nearest one from ``edges[w]`` to
    ``edges[w + 1]``, half-way between its centre and its neighbours' (0 and ``duration`` at the ends)."""
    centres = times.mean(axis=1)
    return np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [duration]])


def window_at(times: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the window whose centre is nearest each time ``t`` (ties: the earlier window)."""
    return np.searchsorted(window_edges(times, 0.0)[1:-1], t, side='left')


def smooth(probs: np.ndarray, size: int) -> np.ndarray:
    """Each window's probabilities ``[W, K]`` averaged with its neighbours: over ``size`` consecutive windows
    centred on it (fewer at the ends), as mmaction2's long-video demo averages its latest clips. 1: unchanged."""
    if size <= 1 or len(probs) < 2:
        return probs
    before, after = (size - 1) // 2, size // 2
    sums = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0)])
    index = np.arange(len(probs))
    first, last = np.maximum(index - before, 0), np.minimum(index + after + 1, len(probs))
    return (sums[last] - sums[first]) / (last - first)[:, None]


def make_timeline(probs: np.ndarray, times: np.ndarray, duration: float, names: Optional[Sequence[str]],
                  top_k: int, threshold: float) -> Dict:
    """``probs [W, K]`` (each window's mean view probabilities) at ``times [W, 2]`` -> ``{'windows': [...],
    'segments': [...]}``.

    A window: ``start``, ``end`` (seconds), ``top_k_indices``, ``top_k_values`` (and ``top_k_labels`` with class
    names). A segment: consecutive windows with the same top-1 whose probability is at least ``threshold``:
    ``label_index`` (``label``), ``start``, ``end`` (where the nearest window changes, the video's start and end at
    the ends), ``score`` (mean top-1 probability over its windows) and ``windows`` (first, last).
    """
    order = np.argsort(-probs, axis=1, kind='stable')[:, :top_k]
    windows = []
    for w, classes in enumerate(order):
        entry = {'start': round(float(times[w, 0]), 4), 'end': round(float(times[w, 1]), 4),
                 'top_k_indices': [int(k) for k in classes],
                 'top_k_values': [round(float(probs[w, k]), 6) for k in classes]}
        if names:
            entry['top_k_labels'] = [names[k] for k in classes]
        windows.append(entry)
    edges = window_edges(times, duration)
    top1, score = order[:, 0], probs[np.arange(len(probs)), order[:, 0]]
    segments, first = [], None
    for w in range(len(probs) + 1):
        ends = w == len(probs) or score[w] < threshold or (first is not None and top1[w] != top1[first])
        if first is not None and ends:
            segment = {'label_index': int(top1[first]), 'start': round(float(edges[first]), 4),
                       'end': round(float(edges[w]), 4), 'score': round(float(score[first:w].mean()), 6),
                       'windows': [first, w - 1]}
            if names:
                segment['label'] = names[top1[first]]
            segments.append(segment)
            first = None
        if w < len(probs) and first is None and score[w] >= threshold:
            first = w
    return {'windows': windows, 'segments': segments}


def plot_timeline(probs: np.ndarray, times: np.ndarray, duration: float, segments: List[Dict],
                  names: Optional[Sequence[str]], title: str, path: str, max_classes: int = 12) -> None:
    """The timeline picture: the segments as coloured bars over time, and below them the probability of the classes
    that matter (every window's top-1 first, then the highest others, at most ``max_classes``) as a heat map."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    top1 = list(dict.fromkeys(np.argmax(probs, axis=1).tolist()))  # in order of appearance
    others = [k for k in np.argsort(-probs.max(axis=0), kind='stable').tolist() if k not in top1]
    shown = (top1 + others)[:max(max_classes, 1)]
    fig, (bar, heat) = plt.subplots(2, 1, figsize=(12, 1.6 + 0.3 * len(shown)), sharex=True,
                                    gridspec_kw={'height_ratios': [1, max(2, len(shown) * 0.4)]})
    for s in segments:
        colour = np.array(class_colour(s['label_index'])) / 255
        bar.broken_barh([(s['start'], s['end'] - s['start'])], (0, 1), facecolors=colour)
        bar.text((s['start'] + s['end']) / 2, 0.5, class_name(s['label_index'], names), ha='center', va='center',
                 fontsize=8, clip_on=True)
    if not segments:
        bar.text(duration / 2, 0.5, 'no window reaches the threshold', ha='center', va='center', fontsize=8)
    bar.set_ylim(0, 1)
    bar.set_yticks([])
    bar.set_title(title, fontsize=10)
    image = heat.pcolormesh(window_edges(times, duration), np.arange(len(shown) + 1), probs[:, shown].T,
                            cmap='viridis', vmin=0, vmax=1)
    heat.set_yticks(np.arange(len(shown)) + 0.5)
    heat.set_yticklabels([class_name(k, names) for k in shown], fontsize=8)
    heat.invert_yaxis()
    heat.set_xlim(0, duration)
    heat.set_xlabel('time (s)')
    fig.colorbar(image, ax=[bar, heat], fraction=0.02, pad=0.01, label='probability')
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format='png', bbox_inches='tight')
    plt.close(fig)


def annotate_video(path: str, out: str, probs: np.ndarray, times: np.ndarray, names: Optional[Sequence[str]],
                   top_k: int, fallback_fps: float, short_side: Optional[int] = None) -> int:
    """Write ``out`` (.mp4, the project's encoder): every frame of ``path`` (resized to ``short_side``; an odd side
    loses its last row or column, as H.264 needs even sizes) at its fps, with the top-``top_k`` classes and
    probabilities of the window at that frame's time (``window_at``) drawn top left and a bar in the top-1 class's
    colour along the bottom. Returns the frames written."""
    order = np.argsort(-probs, axis=1, kind='stable')[:, :top_k]
    with VideoReader(path, fallback_fps) as video:
        fps, total = video.fps, video.num_frames

        def drawn():
            for index, frame in enumerate(video.frames()):
                frame = resize_short_side(frame, short_side)
                frame = frame[:frame.shape[0] // 2 * 2, :frame.shape[1] // 2 * 2]
                w = int(window_at(times, (index + 0.5) / fps))
                yield draw_labels(frame[..., ::-1], [(class_name(k, names), probs[w, k], class_colour(k))
                                                     for k in order[w]])
                bar.update()

        with tqdm(total=total, desc=f'annotating {out}', unit='frame', mininterval=5) as bar:
            count = write_video(out, drawn(), fps)
    return count


def draw_labels(rgb: np.ndarray, labels: List[tuple]) -> np.ndarray:
    """``labels`` (name, probability, colour), best first, drawn on a copy of an RGB frame: one white line each on a
    dark box top left, the first after a swatch of its colour, and a bar of that colour along the bottom (an eighth of
    the height)."""
    image = np.ascontiguousarray(rgb)
    height, width = image.shape[:2]
    bar = max(2, height // 8)
    image[height - bar:] = labels[0][2]
    scale = max(0.3, height / 720)
    thickness = max(1, int(round(scale * 1.5)))
    lines = [f'{name} {p:.2f}' for name, p, _ in labels]
    sizes = [cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0] for line in lines]
    text_height = max(h for _, h in sizes)
    step, swatch = text_height + 2 * thickness + 2, text_height + 2
    box = image[:min(height - bar, step * len(lines) + 4), :min(width, max(w for w, _ in sizes) + swatch + 10)]
    box[...] = (box * 0.4).astype(np.uint8)
    image[step - text_height - 1:step + 1, 4:4 + swatch] = labels[0][2]
    for n, line in enumerate(lines):
        cv2.putText(image, line, (8 + swatch, step * (n + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return image
