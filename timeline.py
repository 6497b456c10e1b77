"""Long videos for predict.py --timeline: the windows along them (``SlidingWindowDataset``) and what is made of the
windows' scores: per-window top-k, merged segments, the timeline picture and the annotated video.

The label at time ``t`` is the top-1 of the window whose centre is nearest ``t`` (``window_at``): segments, the
picture and the annotated video all follow that rule, so a segment boundary falls half-way between the centres of
the last window of one label and the first of the next.
"""
import logging
import math
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle
from tqdm import tqdm

from atomic import atomic_path
from config_utils import AttrDict
from errors import checked
from kinetics_dataset import VideoDataset, clip_bytes, clip_frame_indices, rebatch
from shared_memory import loader_plan
from video_io import VideoError, VideoReader, resize_short_side, write_video

logger = logging.getLogger(__name__)

# matplotlib's tab10: one colour per class (cycling), the same in the picture and the annotated video
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


# ---- windows ---------------------------------------------------------------------------------------------------

def span_frames(span: str, fps: float) -> float:
    """A duration given as seconds (``'2.5'``, ``'2.5s'``) or source frames (``'16f'``) -> source frames at ``fps``.
    ValueError for anything else (or a non-positive duration)."""
    text = str(span).strip().lower()
    frames = text.endswith('f')
    value = float(text[:-1] if frames or text.endswith('s') else text)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f'a duration must be positive, got {span!r}')
    return value if frames else value * fps


def checked_duration(text: str) -> str:
    """``text`` when ``span_frames`` reads it (``--stride``, ``--window``); ValueError saying what a duration is
    otherwise."""
    try:
        span_frames(text, 1.0)
    except ValueError:
        raise ValueError(f'expected seconds (2.5 or 2.5s) or frames (16f), got {text!r}') from None
    return text


class WindowLayout(NamedTuple):
    """Where one video's windows are: ``starts`` (first source frame of each), ``window`` (source frames each spans),
    the video's ``num_frames`` and ``fps``."""
    starts: np.ndarray
    window: float
    num_frames: int
    fps: float

    def times(self) -> np.ndarray:
        """``[windows, 2]`` start and end of each window in seconds (the end capped at the video's end)."""
        ends = np.minimum(self.starts + self.window, self.num_frames)
        return np.stack([self.starts, ends], axis=1) / self.fps


class SlidingWindowDataset(VideoDataset, paddle.io.IterableDataset):
    """Long videos as windows (predict.py --timeline): a window of ``window`` (default: one clip's span) every
    ``stride`` (``span_frames`` strings), each scored by ``clips_per_window`` clips placed as the test's
    ``num_ensemble_views`` are inside it x ``num_crops`` crops at short side ``INFER.target_size``.

    Each video is decoded once, forward from its start (``VideoReader.read_forward``): only the windows' frames are
    converted and kept, and only until the last window that needs them is out, so memory stays at about one window's
    frames whatever the length. Items ``(*pathways, label [1], view_id [1])`` with ``view_id = row * num_views +
    view``; ``row`` numbers the windows of all videos in order (``rows(video)``). Every rank opens every video (the
    packet index: its length and fps) to know the rows; videos go to ranks by their window counts, balanced, and are
    read by one DataLoader worker (``view_batches``). A video that does not open has no rows and is recorded in
    ``failures``; one that stops decoding part-way yields the windows before that point only.
    """

    def __init__(self, cfg: AttrDict, samples: List[Tuple[str, int]], stride: str, window: Optional[str] = None,
                 clips_per_window: int = 1, num_crops: int = 1, rank: int = 0, world_size: int = 1,
                 source: str = 'the inputs'):
        super().__init__(cfg, samples, source, rank, world_size)
        self.target_size = cfg.INFER.target_size
        self.clips_per_window, self.num_crops = clips_per_window, num_crops
        self.num_views = clips_per_window * num_crops
        self.layouts: List[Optional[WindowLayout]] = []
        for index, (path, _) in enumerate(samples):
            try:
                with self.open_video(path, self.target_fps) as video:
                    self.layouts.append(self.layout(video.num_frames, video.fps, stride, window))
            except VideoError as error:
                self.failures.record(index, error)
                self.layouts.append(None)
        counts = [0 if layout is None else len(layout.starts) for layout in self.layouts]
        self.offsets = np.cumsum([0] + counts)
        loads, owners = [0] * world_size, {}
        for index in sorted(range(len(samples)), key=lambda i: -counts[i]):  # the longest first, to the least loaded
            if counts[index]:
                owners[index] = int(np.argmin(loads))
                loads[owners[index]] += counts[index]
        self.video_indices = [i for i in range(len(samples)) if owners.get(i) == rank]

    def layout(self, num_frames: int, fps: float, stride: str, window: Optional[str]) -> WindowLayout:
        """Windows every ``stride`` from frame 0 while they fit in the video (one window for a shorter video)."""
        span = max(self.clip_size(fps), span_frames(window, fps) if window else 0.0)
        step = span_frames(stride, fps)
        count = int(math.floor(max(num_frames - span, 0.0) / step + 1e-9)) + 1
        return WindowLayout(np.round(np.arange(count) * step).astype(np.int64), span, num_frames, fps)

    row_name = 'windows'  # what the rows of the scores are

    @property
    def num_rows(self) -> int:
        return int(self.offsets[-1])

    def rows(self, video_index: int) -> slice:
        return slice(int(self.offsets[video_index]), int(self.offsets[video_index + 1]))

    @property
    def row_videos(self) -> np.ndarray:
        """``[num_rows]``: the video of each row (window)."""
        return np.repeat(np.arange(len(self.samples)), np.diff(self.offsets))

    @property
    def views_here(self) -> int:
        """Views this rank yields when every video decodes."""
        return sum(self.rows(i).stop - self.rows(i).start for i in self.video_indices) * self.num_views

    def __len__(self) -> int:
        return self.views_here

    def view_batches(self, batch_size: int, num_workers: int) -> Iterator[Tuple[List[paddle.Tensor], np.ndarray]]:
        """This rank's views as the model's batches ``(pathways [B, 3, T, S, S] uint8 tensors, view_ids [B])``.

        At most one DataLoader worker, decoding with a thread per core: a long video is one sequential decode, which
        more workers would not share, and Paddle's multi-worker loader of an IterableDataset loses batches when its
        workers run out at different times. Its items are parts of a batch where /dev/shm is short
        (``shared_memory.loader_plan``)."""
        if not self.video_indices:  # a rank with no window
            return iter(())
        workers = min(num_workers, 1)
        plan = loader_plan('timeline windows', clip_bytes(self.num_frames, self.target_size, self.alpha,
                                                          self.pathways), batch_size, workers, splittable=True)
        loader = paddle.io.DataLoader(self, batch_size=plan.units, num_workers=workers,
                                      prefetch_factor=plan.prefetch_factor, use_shared_memory=plan.use_shared_memory)
        items = ((list(pathways), view_ids.numpy().reshape(-1))
                 for *pathways, _, view_ids in checked(loader, self.errors))
        return rebatch(items, batch_size)

    def open_video(self, path: str, fallback_fps: float) -> VideoReader:
        return VideoReader(path, fallback_fps)  # the only worker: FFmpeg's threads fill the cores

    def clip_indices(self, layout: WindowLayout) -> np.ndarray:
        """``[windows, clips_per_window, T]`` source-frame indices of every clip of every window."""
        clips = np.stack([clip_frame_indices(math.ceil(layout.window), self.clip_size(layout.fps), self.num_frames,
                                             j / self.clips_per_window) for j in range(self.clips_per_window)])
        return np.minimum(layout.starts[:, None, None] + clips[None], layout.num_frames - 1)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, ...]]:
        for video_index in self.video_indices:  # in one process (view_batches: one worker at most)
            path, label = self.samples[video_index]
            label = np.array([label], dtype=np.int64)
            first_row = self.rows(video_index).start
            try:
                for window, views in enumerate(self.window_views(path, self.layouts[video_index])):
                    for view, clips in enumerate(views):
                        row = first_row + window
                        yield (*clips, label, np.array([row * self.num_views + view], dtype=np.int64))
            except VideoError as error:
                self.failures.record(video_index, error)
            except Exception as error:  # to the loop through ``errors`` (raised here, Paddle's loader hangs)
                self.errors.record(error)
                return

    def window_views(self, path: str, layout: WindowLayout) -> Iterator[Iterator[Tuple[np.ndarray, ...]]]:
        """Per window, in order, its views; the frames come from one forward decode."""
        indices = self.clip_indices(layout)  # [W, clips, T]
        needed = np.unique(indices)
        last_needed = indices.reshape(len(indices), -1).max(axis=1)  # a window is complete once this frame is in
        first_needed = indices.reshape(len(indices), -1).min(axis=1)
        kept, window = {}, 0

        def views(w: int):
            for clip in indices[w]:
                yield from self.crop_views(np.stack([kept[i] for i in clip]), self.target_size, self.num_crops)

        with self.open_video(path, self.target_fps) as video:
            for index, frame in video.read_forward(needed, self.target_size):
                kept[index] = frame
                while window < len(indices) and last_needed[window] <= index:
                    yield views(window)
                    window += 1
                    if window < len(indices):  # frames no later window needs are dropped
                        for old in [i for i in kept if i < first_needed[window]]:
                            del kept[old]
            if window < len(indices):  # the stream ended before the packet index said
                if not kept:
                    raise VideoError(path, 'no frame decodes')
                last = max(kept)
                logger.warning('%s: the stream ended before frame %d although its index counts %d frames: the last '
                               '%d windows read frame %d in place of the missing ones', path,
                               needed[np.searchsorted(needed, last) + 1], layout.num_frames, len(indices) - window,
                               last)
                indices = np.minimum(indices, last)
                for frame_index in np.unique(indices[window:]):
                    if frame_index not in kept:
                        raise VideoError(path, f'frame {frame_index} did not decode')
                for w in range(window, len(indices)):
                    yield views(w)


# ---- timelines --------------------------------------------------------------------------------------------------

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


def video_timeline(video_id: str, layout: WindowLayout, probs: np.ndarray, names: Optional[Sequence[str]],
                   stride: str, smooth_size: int, views: int, top_k: int, threshold: float) -> Tuple[Dict, np.ndarray]:
    """One video's timeline as predict.py --timeline writes it (``<name>.json``) from its windows' mean view
    probabilities ``probs [W, K]`` (``smooth``-ed over ``smooth_size`` windows, then ``make_timeline``): the video's
    ``fps``, ``num_frames``, ``duration`` and the settings, ``windows`` and ``segments``; and the smoothed
    probabilities ``[W, K]`` it was made of."""
    window_probs = smooth(probs, smooth_size)
    duration = layout.num_frames / layout.fps
    timeline = make_timeline(window_probs, layout.times(), duration, names, top_k, threshold)
    return {'video_id': video_id, 'fps': layout.fps, 'num_frames': layout.num_frames, 'duration': duration,
            'window_seconds': layout.window / layout.fps, 'stride': stride, 'smooth': smooth_size,
            'views_per_window': views, 'threshold': threshold, **timeline}, window_probs


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
