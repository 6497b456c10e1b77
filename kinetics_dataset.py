"""Video lists (``video_lists.py``) -> SlowFast inputs (the original's sampling and transforms, spec section 1.4).

    KineticsDataset(cfg, 'train' | 'valid')        map-style; items (*pathways, label [1], index [1])
    KineticsMultiViewDataset(cfg, 'test' | 'infer') map-style over videos; every video decoded once, its
                                                   num_ensemble_views x num_spatial_crops views cut from that decode;
                                                   items (*pathways [V, ...], label [1], view_ids [V]),
                                                   view_id = video_index * num_views + view

``KineticsMultiViewDataset.view_batches(batch_size, num_workers)`` gives the model's batches (timeline.py's
``SlidingWindowDataset`` too, for long videos), its DataLoader's items parts of a batch (``shared_memory``).

The pathways are the model's (``MODEL.name``): SlowFast ``slow [3, T/alpha, S, S], fast [3, T, S, S]``; Slow-only
``slow [3, T, S, S]``; RGB uint8. ``model_inputs`` turns a batch's pathways into the model's normalised float32
input on its device (a quarter of the bytes through the DataLoader and to the GPU).
Frame ``i`` of a video is the ``i``-th frame of a full sequential decode and its length is the number of frames that
decode (``video_io.VideoReader``), whatever its container declares. Random draws come from ``(seed, epoch, index)``
only, so an epoch's clips do not depend on the number of workers or ranks.
"""
import logging
import math
import multiprocessing
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import paddle

from config_utils import PATHWAYS, AttrDict
from errors import ListError, WorkerErrors, checked
from multigrid import sampling_rates
from shared_memory import loader_plan
from video_io import VideoError, VideoReader, resize_to, scaled_size
from video_lists import check_listed_files, read_video_list

logger = logging.getLogger(__name__)

UNDECODABLE = -2  # label of the placeholder item a validation video that does not decode yields (to be dropped)


# ----------------------------------------------------------------------------------------------------------------
# Sampling and transforms (the original's numbers, spec 1.4)

def clip_frame_indices(video_frames: int, clip_size: float, num_frames: int, position: Optional[float],
                       rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Source-frame indices of one clip: ``num_frames`` frames spread over ``clip_size`` source frames.

    ``position`` in [0, 1) places the clip start at ``position * max(video_frames - clip_size, 0)``; None draws it
    uniformly (training). As the original (and PySlowFast): start rounded up, ``linspace(0, clip_size - 1)`` offsets
    truncated to int, indices clamped to the video.
    """
    delta = max(video_frames - clip_size, 0.0)
    start = rng.uniform(0, delta) if position is None else delta * position
    offsets = np.linspace(0, clip_size - 1, num_frames).astype(np.int64)
    return np.clip(math.ceil(start) + offsets, 0, video_frames - 1)


def clip_span(model: AttrDict, fps: float) -> float:
    """Source frames a clip spans: ``MODEL.num_frames * sampling_rate`` at ``MODEL.target_fps``, in the video's
    ``fps``."""
    return model.num_frames * model.sampling_rate * fps / model.target_fps


def crop_offset(height: int, width: int, size: int, spatial_idx: int, num_crops: int,
                rng: Optional[np.random.Generator] = None) -> Tuple[int, int]:
    """Top-left ``(y, x)`` of a ``size`` square crop.

    ``spatial_idx`` -1: uniform random (inclusive bounds, as the original's ``random.randint``). Otherwise crop
    ``spatial_idx`` of ``num_crops`` spaced along the long side (left/centre/right, or top/centre/bottom for portrait
    video) and centred on the short side; a single crop is the centre crop.
    """
    if height < size or width < size:
        raise ValueError(f'frame {height}x{width} is smaller than the crop {size}')
    if spatial_idx == -1:
        return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    y, x = math.ceil((height - size) / 2), math.ceil((width - size) / 2)
    if num_crops == 1:
        return y, x
    along = math.ceil(((height if height > width else width) - size) / (num_crops - 1)) * spatial_idx
    if spatial_idx == num_crops - 1:
        along = (height if height > width else width) - size
    return (along, x) if height > width else (y, along)


def channels_first(frames: np.ndarray) -> np.ndarray:
    """BGR ``[T, H, W, 3]`` (any strides) -> contiguous RGB ``[3, T, H, W]``, same dtype."""
    return np.ascontiguousarray(frames[..., ::-1].transpose(3, 0, 1, 2))


def normalize_batch(x: paddle.Tensor, mean: Sequence[float], std: Sequence[float]) -> paddle.Tensor:
    """uint8 RGB ``[N, 3, T, H, W]`` -> float32 ``(x / 255 - mean) / std`` on x's device (the original's
    normalisation, done after the DataLoader: a quarter of the bytes through shared memory and to the GPU).

    One cast and one in-place scale when the channels share mean and std (every shipped config): Paddle's CPU
    kernels for a broadcast multiply and add are single-threaded, ten times the time for a batch of test views
    (docs/BENCHMARKS.md); per-channel values go through batch norm's inference form, one op."""
    if x.dtype != paddle.uint8:
        raise TypeError(f'expected a uint8 batch from the datasets, got {x.dtype}')
    scale = [1.0 / (255.0 * s) for s in std]
    shift = [-m / s for m, s in zip(mean, std)]
    out = x.astype('float32')
    if len(set(scale)) == 1 and len(set(shift)) == 1:
        return out.scale_(scale[0], shift[0])
    running_mean = paddle.to_tensor([255.0 * m for m in mean], dtype='float32')
    running_var = paddle.to_tensor([(255.0 * s) ** 2 for s in std], dtype='float32')
    return paddle.nn.functional.batch_norm(out, running_mean, running_var, training=False, epsilon=0.0)


def model_inputs(pathways: Sequence[paddle.Tensor], cfg: AttrDict) -> List[paddle.Tensor]:
    """A DataLoader batch's pathways as the model's float32 input, normalising uint8 clips on their device."""
    m = cfg.MODEL
    return [normalize_batch(x, m.image_mean, m.image_std) for x in pathways]


def clip_bytes(frames: int, size: int, alpha: int, pathways: int) -> int:
    """Bytes of one uint8 clip of ``frames`` frames at ``size`` x ``size`` as the model's pathways (``pack_pathways``)."""
    return 3 * size * size * (frames + (frames // alpha if pathways == 2 else 0))


def pack_pathways(clip: np.ndarray, alpha: int, pathways: int = 2) -> Tuple[np.ndarray, ...]:
    """``clip [3, T, H, W]`` -> ``(slow [3, T/alpha, H, W], fast = clip)``, slow taking ``linspace(0, T-1, T/alpha)``
    (PySlowFast's); with one pathway (Slow-only, alpha 1) ``(clip,)``."""
    frames = clip.shape[1]
    if pathways == 1:
        return (clip,)
    return clip[:, np.linspace(0, frames - 1, frames // alpha).astype(np.int64)], clip


# ----------------------------------------------------------------------------------------------------------------
# Decode failures, shared by DataLoader worker processes

class DecodeFailures:
    """Which videos failed to decode and how many failures happened, visible to the process that owns the dataset.

    Lives in shared memory created before the DataLoader forks its workers, so workers' records reach the trainer.
    """

    def __init__(self, num_videos: int, where: str = ''):
        self.num_videos = num_videos
        self._flags = multiprocessing.RawArray('b', max(num_videos, 1))
        self._events = multiprocessing.Value('q', 0)
        self.where = where  # 'rank N: ' in the log lines of a run of several ranks
        self.reasons: Dict[int, str] = {}  # why, for the failures recorded in this process

    def record(self, index: int, error: VideoError) -> None:
        first = not self._flags[index]
        self._flags[index] = 1
        self.reasons.setdefault(index, error.reason)
        with self._events.get_lock():
            self._events.value += 1
        if first:  # the first failure of each video is logged with its reason
            logger.warning('%scannot decode video %s: %s', self.where, error.path, error.reason)

    def flags(self) -> np.ndarray:
        """``[num_videos]`` bool: which videos failed so far."""
        return np.frombuffer(self._flags, dtype=np.int8)[:self.num_videos].astype(bool)

    def indices(self) -> List[int]:
        """Indices (into the list) of every video that failed so far."""
        return np.flatnonzero(self.flags()).tolist()

    def take_count(self) -> int:
        """Failures since the last call (per epoch, when called once an epoch)."""
        with self._events.get_lock():
            count, self._events.value = self._events.value, 0
        return count


# ----------------------------------------------------------------------------------------------------------------
# Datasets

class VideoDataset:
    """What both datasets share: the list, the clip length and the record of decode failures."""

    def __init__(self, cfg: AttrDict, samples: List[Tuple[str, int]], source: str, rank: int = 0,
                 world_size: int = 1):
        check_listed_files(samples, source, cfg.DATA.path_prefix)
        m = self.model = cfg.MODEL
        self.samples = samples
        self.num_frames, self.alpha, self.pathways = m.num_frames, m.alpha, PATHWAYS[m.name]
        self.target_fps = m.target_fps
        self.failures = DecodeFailures(len(self.samples), f'rank {rank}: ' if world_size > 1 else '')
        self.errors = WorkerErrors()  # any other error while making items, for the loop (errors.checked)

    def crop_views(self, frames: np.ndarray, size: int, num_crops: int,
                   spatial_indices: Optional[Sequence[int]] = None) -> Iterator[Tuple[np.ndarray, ...]]:
        """One clip's BGR frames ``[T, H, W, 3]`` -> its views (``crop_offset``; ``spatial_indices`` of the
        ``num_crops``, all when None), as pathways."""
        clip = channels_first(frames)  # [3, T, H, W], once per clip
        for spatial in range(num_crops) if spatial_indices is None else spatial_indices:
            y, x = crop_offset(clip.shape[2], clip.shape[3], size, spatial, num_crops)
            # a view into the clip: the DataLoader's collate makes the only copy of each crop
            yield pack_pathways(clip[:, :, y:y + size, x:x + size], self.alpha, self.pathways)

    @staticmethod
    def open_video(path: str, fallback_fps: float) -> VideoReader:
        """One decoding thread inside a DataLoader worker (the workers fill the cores), one per core outside."""
        return VideoReader(path, fallback_fps, threads=1 if paddle.io.get_worker_info() is not None else None)

    def clip_size(self, fps: float) -> float:
        return clip_span(self.model, fps)


class KineticsDataset(VideoDataset, paddle.io.Dataset):
    """Training (``mode='train'``: random clip, scale, crop, and flip unless ``TRAIN.random_flip`` is False) or
    validation (``'valid'``: centre clip, short side ``VALID.min_size``, centre crop) samples, one clip per video.

    An undecodable video is recorded in ``failures``. Training replaces it by another sample drawn from the same
    random stream, up to ``DATA.num_retries`` times; validation never substitutes: the item is an all-zero
    placeholder labelled ``UNDECODABLE``, which the validation loop drops and counts. Call ``set_epoch`` before each
    epoch.

    Multigrid training: ``shape`` ``(frames, crop)`` is a long-cycle stage's clip instead of the recipe's
    (``MODEL.num_frames``, ``TRAIN.target_size``); with fewer frames each clip draws its frame stride from
    ``sampling_rate`` to ``sampling_rate x num_frames / frames`` (PySlowFast's long-cycle sampling rate). An item
    ``(index, crop)`` (the short cycle's sampler) is cut at ``crop`` pixels. A crop other than the recipe's scales
    the jitter's short sides by ``crop / TRAIN.target_size``: the recipe's field of view on a coarser sampling grid
    (the paper's; PySlowFast and PaddleVideo scale only the smallest side, so small crops also zoom in).
    """

    def __init__(self, cfg: AttrDict, mode: str, seed: int = 0, shape: Optional[Tuple[int, int]] = None):
        if mode not in ('train', 'valid'):
            raise ValueError(f"mode must be 'train' or 'valid', got {mode!r}")
        section = cfg.TRAIN if mode == 'train' else cfg.VALID
        super().__init__(cfg, read_video_list(section.filelist, cfg.MODEL.num_classes, cfg.DATA.path_prefix),
                         section.filelist)
        self.mode, self.seed, self.epoch = mode, seed, 0
        self.min_size, self.max_size, self.target_size = section.min_size, section.max_size, section.target_size
        self.default_size, self.sampling_rates = section.target_size, (self.model.sampling_rate,) * 2
        if shape is not None and mode == 'train':
            self.num_frames, self.target_size = shape
            self.sampling_rates = sampling_rates(cfg, self.num_frames)
        self.num_retries = cfg.DATA.num_retries
        self.random_flip = mode == 'train' and cfg.TRAIN.random_flip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        index, crop = (int(index[0]), int(index[1])) if np.ndim(index) else (int(index), self.target_size)
        try:
            return self.sample(index, crop)
        except Exception as error:  # to the loop through ``errors`` (raised here, Paddle's loader hangs or hides it)
            self.errors.record(error)
            return self.placeholder(index, crop)

    def placeholder(self, index: int, crop: int) -> Tuple[np.ndarray, ...]:
        """An all-zero item labelled ``UNDECODABLE``, of the shape of the others."""
        clips = pack_pathways(np.zeros((3, self.num_frames, crop, crop), np.uint8), self.alpha, self.pathways)
        return (*clips, np.array([UNDECODABLE], dtype=np.int64), np.array([index], dtype=np.int64))

    def sample(self, index: int, crop: int) -> Tuple[np.ndarray, ...]:
        """Item ``index`` at ``crop`` pixels: its clip; for training, after a decode failure, another video drawn from
        the same stream (ListError after ``DATA.num_retries`` replacements in a row)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.mode == 'valid':
            path, label = self.samples[index]
            try:
                clips = self.load_clip(path, rng, crop)
            except VideoError as error:
                self.failures.record(index, error)
                return self.placeholder(index, self.target_size)
            return (*clips, np.array([label], dtype=np.int64), np.array([index], dtype=np.int64))
        for _ in range(self.num_retries + 1):
            path, label = self.samples[index]
            try:
                clips = self.load_clip(path, rng, crop)
                return (*clips, np.array([label], dtype=np.int64), np.array([index], dtype=np.int64))
            except VideoError as error:
                self.failures.record(index, error)
                index = int(rng.integers(0, len(self.samples)))
        raise ListError(f'{self.num_retries + 1} videos in a row failed to decode (last: {path}); check the list '
                        'and DATA.path_prefix, or clean the list with tools/data/check_videos.py')

    def load_clip(self, path: str, rng: np.random.Generator, crop: int) -> Tuple[np.ndarray, ...]:
        train = self.mode == 'train'
        low, high = self.sampling_rates
        rate = int(rng.integers(low, high + 1)) if high > low else low  # drawn only when there is a choice
        scale = crop / self.default_size  # a smaller crop: the same field of view on a coarser grid
        min_size, max_size = int(round(self.min_size * scale)), int(round(self.max_size * scale))
        short_side = int(round(rng.uniform(min_size, max_size))) if train else self.min_size
        with self.open_video(path, self.target_fps) as video:
            _, frames = video.read_sampled(  # [T, H, W, 3]
                lambda length, fps: clip_frame_indices(length, self.num_frames * rate * fps / self.target_fps,
                                                       self.num_frames, None if train else 0.5, rng), short_side)
        y, x = crop_offset(frames.shape[1], frames.shape[2], crop, -1 if train else 0, 1, rng)
        frames = frames[:, y:y + crop, x:x + crop]
        if train and rng.uniform() < 0.5 and self.random_flip:  # drawn either way: the same clips with or without
            frames = frames[:, :, ::-1]
        return pack_pathways(channels_first(frames), self.alpha, self.pathways)


class KineticsMultiViewDataset(VideoDataset, paddle.io.Dataset):
    """Test (``mode='test'``, labelled list ``TEST.filelist``) or prediction (``'infer'``, ``INFER.filelist``,
    labels optional) views: per video ``num_ensemble_views`` uniformly spaced clips x ``num_spatial_crops`` crops at
    short side ``target_size``.

    Videos are split over ranks (``rank::world_size``, no padding). Item ``i`` is every view of this rank's ``i``-th
    video, ``video_indices[i]``: ``(*pathways [V, 3, T, S, S] uint8, label [1], view_ids [V])`` with
    ``view_id = video_index * num_views + view`` (see ``normalize_batch``); ``view_part`` gives a run of them. A video
    is decoded once, each needed frame resized as it decodes; an undecodable one is recorded in ``failures`` (shared
    with the DataLoader workers) and its item is a placeholder of one ``UNDECODABLE`` view id.

    ``view_batches`` gives the model's batches: its DataLoader's items are parts of at most a batch of views
    (``ViewParts``), so what is in flight is bounded by batches, not videos (30 views of the 16x8 recipe are 380 MB).
    """

    def __init__(self, cfg: AttrDict, mode: str, rank: int = 0, world_size: int = 1,
                 samples: Optional[List[Tuple[str, int]]] = None, source: str = 'the inputs'):
        if mode not in ('test', 'infer'):
            raise ValueError(f"mode must be 'test' or 'infer', got {mode!r}")
        section = cfg.TEST if mode == 'test' else cfg.INFER
        source = section.filelist if samples is None else source  # what the check of the files names
        if samples is None:  # predict.py passes videos given on its command line instead
            samples = read_video_list(section.filelist, cfg.MODEL.num_classes, cfg.DATA.path_prefix,
                                      labels_required=mode == 'test')
        super().__init__(cfg, samples, source, rank, world_size)
        self.mode = mode
        self.target_size = section.target_size
        self.num_ensemble_views, self.num_spatial_crops = section.num_ensemble_views, section.num_spatial_crops
        self.num_views = self.num_ensemble_views * self.num_spatial_crops
        self.video_indices = list(range(rank, len(self.samples), world_size))
        self._kept: Optional[Tuple[int, Optional['DecodedVideo']]] = None  # this process's decode in use

    def __len__(self) -> int:
        """Videos of this rank."""
        return len(self.video_indices)

    @property
    def views_here(self) -> int:
        """Views this rank yields when every video decodes."""
        return len(self.video_indices) * self.num_views

    @property
    def view_bytes(self) -> int:
        return clip_bytes(self.num_frames, self.target_size, self.alpha, self.pathways)

    row_name = 'videos'  # what the rows of the scores are

    @property
    def num_rows(self) -> int:
        return len(self.samples)

    @property
    def row_videos(self) -> np.ndarray:
        """``[num_rows]``: the video of each row."""
        return np.arange(len(self.samples))

    def __getitem__(self, i: int) -> Tuple[np.ndarray, ...]:
        return self.view_part(i, 0, self.num_views)

    def view_part(self, i: int, first: int, count: int) -> Tuple[np.ndarray, ...]:
        """Views ``first`` to ``first + count - 1`` of this rank's ``i``-th video: ``(*pathways [count, ...], label
        [1], view_ids [count])``, or its placeholder when it does not decode. The decode is kept for the next part
        until the video's last view is out: asked in order, each video is decoded once per process."""
        video_index = self.video_indices[i]
        path, label = self.samples[video_index]
        if self._kept is None or self._kept[0] != i:
            self._kept = (i, None)
            try:
                self._kept = (i, self.decode(path))
            except Exception as error:
                if isinstance(error, VideoError):
                    self.failures.record(video_index, error)
                else:  # to the loop through ``errors`` (raised here, Paddle's loader hangs or hides it)
                    self.errors.record(error)
        decoded = self._kept[1]
        if first + count >= self.num_views:
            self._kept = None
        if decoded is None:
            return self.placeholder(label)
        views = list(self.cut_views(decoded, first, count))
        pathways = [np.stack(clips) for clips in zip(*views)]  # the one copy of each crop
        return (*pathways, np.array([label], np.int64),
                video_index * self.num_views + np.arange(first, first + count, dtype=np.int64))

    def placeholder(self, label: int) -> Tuple[np.ndarray, ...]:
        """An item of one ``UNDECODABLE`` view id, never shown to the model (a size-0 array would not pass through
        shared memory)."""
        empty = np.zeros((1, 3, 1, 1, 1), np.uint8)
        return (*[empty] * self.pathways, np.array([label], np.int64), np.array([UNDECODABLE], np.int64))

    def views(self) -> Iterator[Tuple[np.ndarray, ...]]:
        """Every view of this rank, in order, one at a time, in this process: ``(*pathways [3, T, S, S], label [1],
        view_id [1])``."""
        for i in range(len(self)):
            *pathways, label, view_ids = self[i]
            for n, view_id in enumerate(view_ids):
                if view_id != UNDECODABLE:
                    yield (*[p[n] for p in pathways], label, view_ids[n:n + 1])

    def view_batches(self, batch_size: int, num_workers: int) -> Iterator[Tuple[List[paddle.Tensor], np.ndarray]]:
        """This rank's views as the model's batches ``(pathways [B, 3, T, S, S] uint8 tensors, view_ids [B])`` of
        ``batch_size`` views (the last may be smaller), videos decoded by ``num_workers`` DataLoader workers. Items are
        parts of at most a batch, fewer views where /dev/shm is short (``shared_memory.loader_plan``)."""
        if not self.video_indices:  # a rank with no video
            return iter(())
        plan = loader_plan(f'{self.mode} views', self.view_bytes, batch_size, num_workers, splittable=True)
        parts = ViewParts(self, plan.units, num_workers)
        loader = paddle.io.DataLoader(parts, batch_size=None, num_workers=num_workers,
                                      prefetch_factor=plan.prefetch_factor, use_shared_memory=plan.use_shared_memory)
        items = ((list(pathways), view_ids.numpy()) for *pathways, _, view_ids in checked(loader, self.errors))
        return rebatch(items, batch_size)

    def temporal_clips(self, length: int, fps: float) -> List[np.ndarray]:
        """Source-frame indices of each of the ``num_ensemble_views`` uniformly spaced clips of a video of ``length``
        frames at ``fps``."""
        return [clip_frame_indices(length, self.clip_size(fps), self.num_frames, t / self.num_ensemble_views)
                for t in range(self.num_ensemble_views)]

    def decode(self, path: str) -> 'DecodedVideo':
        """``path``'s frames that its views need, each decoded and resized once; VideoError when it does not
        decode."""
        clips = []

        def sample(length: int, fps: float) -> np.ndarray:
            clips[:] = self.temporal_clips(length, fps)
            return np.unique(np.concatenate(clips))

        with self.open_video(path, self.target_fps) as video:
            union, frames = video.read_sampled(sample, self.target_size)  # [U, H, W, 3]
        return DecodedVideo(frames, union, clips)

    def frames_decoded(self, frames: np.ndarray, fps: float) -> 'DecodedVideo':
        """A video decoded by the caller, BGR uint8 ``[T, H, W, 3]`` at ``fps``, as ``decode`` gives a file: the frames
        its views need, resized as a decode resizes them (``video_io.resize_to`` to ``scaled_size``)."""
        clips = self.temporal_clips(len(frames), fps)
        union = np.unique(np.concatenate(clips))
        size = scaled_size(frames.shape[1], frames.shape[2], self.target_size)
        return DecodedVideo(np.stack([resize_to(np.ascontiguousarray(frames[i]), size) for i in union]), union,
                            clips)

    def cut_views(self, decoded: 'DecodedVideo', first: int, count: int) -> Iterator[Tuple[np.ndarray, ...]]:
        """Views ``first`` to ``first + count - 1`` of a decoded video as uint8 pathways, in the original's clip order
        (``temporal * num_spatial_crops + spatial``)."""
        crops = self.num_spatial_crops
        for t in range(first // crops, (first + count - 1) // crops + 1):
            spatial = range(max(first - t * crops, 0), min(first + count - t * crops, crops))
            frames = decoded.frames[np.searchsorted(decoded.union, decoded.clips[t])]
            yield from self.crop_views(frames, self.target_size, crops, spatial)


class DecodedVideo(NamedTuple):
    """A test video's needed frames: ``frames [U, H, W, 3]`` BGR at the views' short side, the source indices they
    are (``union``, sorted) and each temporal clip's source indices (``clips``)."""
    frames: np.ndarray
    union: np.ndarray
    clips: List[np.ndarray]


class ViewParts(paddle.io.Dataset):
    """``view_batches``' DataLoader items: a multi-view dataset's views in parts of at most ``part`` views, ordered so
    that each of ``workers`` workers gets whole videos.

    Paddle's DataLoader (2.6 and 3.x, as PyTorch's) hands item ``p`` of a map-style dataset to worker ``p %
    workers`` (``_try_put_indices`` cycles over the workers) and returns the items in order: position ``r * workers
    + w`` holds the ``r``-th part of worker ``w``'s videos (this rank's videos ``w, w + workers, ...``), so each
    worker decodes each of its videos once and keeps one decode at a time. Where a worker has fewer parts than the
    others, its positions hold a placeholder (``UNDECODABLE``), a few bytes each. Were items dealt otherwise, a part
    would decode its video again: slower, never wrong."""

    def __init__(self, videos: KineticsMultiViewDataset, part: int, workers: int):
        self.videos, lanes = videos, max(workers, 1)
        firsts = range(0, videos.num_views, part)
        queues = [[(i, first, min(part, videos.num_views - first)) for i in range(w, len(videos), lanes)
                   for first in firsts] for w in range(lanes)]
        rounds = max(len(queue) for queue in queues)
        self.order: List[Optional[Tuple[int, int, int]]] = [
            queue[r] if r < len(queue) else None for r in range(rounds) for queue in queues]
        while self.order and self.order[-1] is None:
            self.order.pop()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, p: int) -> Tuple[np.ndarray, ...]:
        if self.order[p] is None:
            return self.videos.placeholder(-1)
        return self.videos.view_part(*self.order[p])


def rebatch(items: Iterator[Tuple[List[paddle.Tensor], np.ndarray]],
            batch_size: int) -> Iterator[Tuple[List[paddle.Tensor], np.ndarray]]:
    """Items of views ``(pathways, view_ids)`` of at most ``batch_size`` views -> batches of ``batch_size`` views
    (the last may be smaller); items whose first view id is ``UNDECODABLE`` are dropped. An item that is a whole
    batch is passed on as it is; smaller ones are copied into the batch as they come, so that the loader's shared
    memory holds no more than the items in flight."""
    buffers: List[np.ndarray] = []
    ids: List[np.ndarray] = []
    held = 0
    for pathways, view_ids in items:
        if view_ids[0] == UNDECODABLE:
            continue
        if not held and len(view_ids) == batch_size:
            yield pathways, view_ids
            continue
        done = 0
        while done < len(view_ids):
            if not held:
                buffers = [np.empty((batch_size, *x.shape[1:]), np.uint8) for x in pathways]
            n = min(batch_size - held, len(view_ids) - done)
            for buffer, x in zip(buffers, pathways):
                buffer[held:held + n] = x[done:done + n].numpy()
            ids.append(view_ids[done:done + n])
            held, done = held + n, done + n
            if held == batch_size:
                yield [paddle.to_tensor(b) for b in buffers], np.concatenate(ids)
                buffers, ids, held = [], [], 0
    if held:
        yield [paddle.to_tensor(b[:held]) for b in buffers], np.concatenate(ids)
