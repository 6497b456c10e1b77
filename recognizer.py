"""SlowFast from Python: the classes of a video (a file, or frames you decoded), its classes along the way for a long
one, or its clip features, scored exactly as eval.py and predict.py score them.

    from recognizer import Recognizer

    rec = Recognizer.from_zoo('pyslowfast-slowfast-8x8-r50')    # downloaded, verified, converted, cached
    rec.classify('a.mp4', top_k=5)                               # [Prediction(label, probability, index), ...]
    rec = Recognizer('configs/slowfast_r50_8x8.yaml', 'weights/mine.pdparams', views=(1, 1))
    rec.classify(frames, channels='rgb', fps=25)                 # frames: uint8 [T, H, W, 3], decoded by you
    rec.timeline('match.mp4', stride='1s')                       # predict.py --timeline's record, as a dict
    rec.features('a.mp4')                                        # [C], the classifier's input

A video goes through the modules predict.py uses: its views are ``INFER.num_ensemble_views`` clips spread uniformly
x ``INFER.num_spatial_crops`` crops at short side ``INFER.target_size`` (``KineticsMultiViewDataset``: decoded once,
each needed frame resized once), normalised by ``model_inputs``, and its probabilities are the mean of its views'
softmax (``scoring.ensemble_scores``). The cost is one pass of the network per view: the default 10 x 3 views are 30
passes, ``views=(1, 1)`` (the centre clip's centre crop) is one, a thirtieth of the time, at some accuracy
(docs/EVALUATION.md). Paths go to the project's decoder (PyAV); frames you decoded are taken as they are, so the
same frames give the same probabilities either way.

What cannot be classified (a missing file, one that does not decode, frames of the wrong shape or type, or without
their channel order) raises ``errors.InputError`` naming it; weights that do not fit, ``errors.WeightsError``.
"""
import copy
import itertools
import logging
import os
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import paddle

import distributed
import model_zoo
from atomic import check_output_file
from config_utils import AttrDict, apply_override, check_config, parse_config
from errors import InputError, WeightsError
from kinetics_dataset import KineticsMultiViewDataset, model_inputs
from model import VideoNetwork
from scoring import build_scoring_model, ensemble_scores, ranked
from timeline import SlidingWindowDataset, checked_duration, plot_timeline, video_timeline
from video_io import VideoError
from video_lists import NO_LABEL, read_label_map

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.abspath(__file__))

Video = Union[str, os.PathLike, np.ndarray, Sequence[np.ndarray]]


class Prediction(NamedTuple):
    """A class of a video: its name (``DATA.label_map``; the index as text when the config names none), its
    probability (the mean over the views) and its index."""
    label: str
    probability: float
    index: int


def config_path(config: str) -> str:
    """``config`` as given when it is a file, else the shipped config of that name (``configs/slow_r50_8x8.yaml``
    from any folder); ConfigError (parse_config's) naming it when neither is."""
    if os.path.isfile(config) or os.path.isabs(config):
        return config
    shipped = os.path.join(ROOT, config)
    return shipped if os.path.isfile(shipped) else config


class Recognizer:
    """A network and the views it is tested with.

    Args:
        config: a config file (a shipped one by its path in the repository, e.g. ``'configs/slowfast_r50_8x8.yaml'``,
            from any folder) or a parsed config (``config_utils.parse_config``).
        weights: the network's ``.pdparams`` (the extension may be left out), or a network already built and loaded
            (``paddle.hub.load(...)``); None with ``INFER.use_inference``: the exported model in ``INFER.model_dir``.
        overrides: ``SECTION.key=value`` strings, as the scripts' ``-o``.
        views: ``(clips, crops)`` per video instead of the config's ``(INFER.num_ensemble_views,
            INFER.num_spatial_crops)``; crops are 1 (centre) or 3 (along the long side).
        use_gpu: None: the GPU when Paddle has CUDA, else the CPU (the scripts' ``--use_gpu``).
        batch_size: views per forward pass (default ``INFER.batch_size``).
        num_workers: DataLoader workers of ``timeline`` (0: it decodes in this process; at most 1 is used).
        allow_pickle: read a weights file holding objects other than tensors (trusted files only).
    """

    def __init__(self, config: Union[str, AttrDict] = 'slowfast.yaml',
                 weights: Union[None, str, os.PathLike, VideoNetwork] = None, overrides: Sequence[str] = (),
                 views: Optional[Tuple[int, int]] = None, use_gpu: Optional[bool] = None,
                 batch_size: Optional[int] = None, num_workers: int = 0, allow_pickle: bool = False):
        if isinstance(config, dict):
            cfg = parse_config_copy(config, overrides)
        else:
            cfg = parse_config(config_path(os.fspath(config)), list(overrides))
        if views is not None:
            clips, crops = views
            if int(clips) < 1 or int(crops) not in (1, 3):
                raise ValueError(f'views must be (clips >= 1, crops 1 or 3), got {views}')
            cfg.INFER.num_ensemble_views, cfg.INFER.num_spatial_crops = int(clips), int(crops)
        self.cfg = cfg
        self.device, _, _ = distributed.setup(use_gpu, False)
        if isinstance(weights, paddle.nn.Layer):
            self.model, self.source = weights, type(weights).__name__
            self.model.eval()
        else:
            if weights is None and not cfg.INFER.use_inference:
                raise WeightsError('Recognizer: give weights (a .pdparams file, or a loaded network), or use '
                                   'Recognizer.from_zoo(name)')
            weights = None if weights is None else os.fspath(weights)
            self.model, self.source = build_scoring_model(cfg, weights, cfg.INFER.target_size, self.device,
                                                          allow_pickle)
        self.names = read_label_map(cfg.DATA.label_map, cfg.MODEL.num_classes)
        self.batch_size = batch_size or cfg.INFER.batch_size
        self.num_workers = num_workers
        self.views = KineticsMultiViewDataset(cfg, 'infer', samples=[])  # cuts the views of one video at a time
        self.num_views = self.views.num_views

    @classmethod
    def from_zoo(cls, name: str, cache_dir: Optional[str] = None, file: Optional[str] = None,
                 url: Optional[str] = None, sha256: Optional[str] = None, **kwargs) -> 'Recognizer':
        """The published checkpoint ``name`` (``python tools/weights/zoo.py list``) with its config and its
        publisher's test protocol (short side, crop, views; ``model_zoo.protocol_overrides``).

        The weights are downloaded (resuming an interrupted download), verified and converted once into ``cache_dir``
        (default ``model_zoo.cache_dir()``: ``$SLOWFAST_CACHE``, else ``~/.cache/slowfast_paddle``), then read from
        there. Offline: ``file``, the publisher's file fetched elsewhere; ``url``: a mirror. ``kwargs``: as
        ``Recognizer`` (``views``, ``use_gpu``, ``batch_size``, ...); ``views`` replaces the publisher's."""
        entry = model_zoo.find(name)
        weights = model_zoo.cached(entry, cache_dir, file, url, sha256, kwargs.get('allow_pickle', False))
        overrides = model_zoo.protocol_overrides(entry) + list(kwargs.pop('overrides', ()))
        return cls(os.path.join(ROOT, entry.config), weights, overrides, **kwargs)

    # ---- one video -------------------------------------------------------------------------------------------------

    def probabilities(self, video: Video, channels: Optional[str] = None, fps: Optional[float] = None) -> np.ndarray:
        """``[num_classes]`` float64: the mean of the views' probabilities (what eval.py sums per video, over the
        views). ``video``: a file, or frames ``[T, H, W, 3]`` uint8 with ``channels`` ``'rgb'`` or ``'bgr'`` and
        their ``fps`` (default ``MODEL.target_fps``: the clip then spans ``num_frames x sampling_rate`` of them)."""
        return self._score(video, channels, fps, None)[0]

    def classify(self, video: Video, top_k: int = 5, channels: Optional[str] = None,
                 fps: Optional[float] = None) -> List[Prediction]:
        """The ``top_k`` classes of ``video`` (as ``probabilities`` takes it), best first."""
        probs = self.probabilities(video, channels, fps)
        return [Prediction(self.names[k] if self.names else str(k), float(probs[k]), int(k))
                for k in ranked(probs, top_k)]

    def features(self, video: Video, channels: Optional[str] = None, fps: Optional[float] = None,
                 per_view: bool = False) -> np.ndarray:
        """The clip features the classifier sees (averaged over positions): their mean over the views ``[C]``
        (float64), or each view's ``[views, C]`` (float32, in ``temporal * crops + spatial`` order) with ``per_view``;
        predict.py --features writes the same."""
        _, found = self._score(video, channels, fps, 'view' if per_view else 'video')
        return found[0] if per_view else found[0] / self.num_views

    def _score(self, video: Video, channels: Optional[str], fps: Optional[float],
               features: Optional[str]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        decoded = self._decode(video, channels, fps)
        views = self.views.cut_views(decoded, 0, self.num_views)
        sums, counts, found = ensemble_scores(self.model, batches_of(views, self.batch_size), self._inputs, 1,
                                              self.num_views, self.cfg.MODEL.num_classes, features=features)
        assert counts[0] == self.num_views, (counts, self.num_views)
        return sums[0] / self.num_views, found

    def _decode(self, video: Video, channels: Optional[str], fps: Optional[float]):
        if isinstance(video, (str, os.PathLike)):
            if channels is not None or fps is not None:
                raise InputError(f'{os.fspath(video)}: channels and fps describe frames given as an array; a file\'s '
                                 'come from the file')
            try:
                return self.views.decode(video_file(video))
            except VideoError as error:
                raise InputError(f'cannot classify {error.path}: {error.reason}') from None
        frames = checked_frames(video, channels)
        fps = float(self.cfg.MODEL.target_fps if fps is None else fps)
        if not (np.isfinite(fps) and fps > 0):
            raise InputError(f'fps must be a positive number, got {fps}')
        return self.views.frames_decoded(frames, fps)

    def _inputs(self, pathways: List[paddle.Tensor]) -> List[paddle.Tensor]:
        """A batch's uint8 pathways as the network's normalised input (eval.py's and predict.py's)."""
        return model_inputs(pathways, self.cfg)

    # ---- a long video ----------------------------------------------------------------------------------------------

    def timeline(self, path: Union[str, os.PathLike], stride: str = '1s', window: Optional[str] = None,
                 clips: int = 1, crops: int = 1, smooth: int = 1, top_k: int = 5, threshold: float = 0.5,
                 picture: Optional[str] = None) -> Dict:
        """The classes along a long video, as predict.py --timeline (same arguments, same windows, same record):
        a window every ``stride`` (seconds ``'2.5'``/``'2.5s'`` or frames ``'16f'``) of ``window`` (default one
        clip), each scored by ``clips`` x ``crops`` views, ``smooth``-ed over that many windows. Returns the record
        predict.py writes to ``<name>.json`` (``windows`` with their top-``top_k``, ``segments`` of one top-1 at
        least ``threshold``, ``fps``, ``duration``, ...) plus ``probabilities``, every window's ``[W, K]``; with
        ``picture``, the timeline picture is written there (.png). The video is decoded once, forward."""
        for name, value in (('stride', stride), ('window', window)):
            if value is not None:
                try:
                    checked_duration(value)
                except ValueError as error:
                    raise ValueError(f'{name}: {error}') from None
        path = video_file(path)
        if picture:
            check_output_file(picture, 'picture')  # before the work, not after it
        dataset = SlidingWindowDataset(self.cfg, [(path, NO_LABEL)], stride, window, clips, crops, source=path)
        sums, counts, _ = ensemble_scores(self.model, dataset.view_batches(self.batch_size, self.num_workers),
                                          self._inputs, dataset.num_rows, dataset.num_views,
                                          self.cfg.MODEL.num_classes)
        layout = dataset.layouts[0]
        if layout is None or dataset.failures.flags()[0] or (counts != dataset.num_views).any():
            reason = dataset.failures.reasons.get(0, 'it did not decode to its end (the reason is logged above)')
            raise InputError(f'cannot classify {path}: {reason}')
        record, window_probs = video_timeline(path, layout, sums / dataset.num_views, self.names, stride, smooth,
                                              dataset.num_views, top_k, threshold)
        if picture:
            plot_timeline(window_probs, layout.times(), record['duration'], record['segments'], self.names, path,
                          picture)
        return dict(record, probabilities=window_probs)


def parse_config_copy(cfg: AttrDict, overrides: Sequence[str]) -> AttrDict:
    """A copy of a parsed config with ``overrides`` applied and checked (the caller's stays as it is)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        apply_override(cfg, item)
    check_config(cfg)
    return cfg


def video_file(video: Union[str, os.PathLike]) -> str:
    """The path of a video file; InputError naming a folder or a missing file."""
    path = os.fspath(video)
    if os.path.isdir(path):
        raise InputError(f'cannot classify {path}: a folder, not a video (predict.py --video takes folders)')
    if not os.path.isfile(path):
        raise InputError(f'cannot classify {path}: file not found')
    return path


def checked_frames(video, channels: Optional[str]) -> np.ndarray:
    """Frames given as an array (or a list of equal frames) as BGR uint8 ``[T, H, W, 3]`` (a view of them, not a
    copy); InputError naming what is wrong."""
    if not isinstance(video, (np.ndarray, list, tuple)):
        raise InputError(f'expected a video file (a path) or frames (an array [T, H, W, 3]), got '
                         f'{type(video).__name__}')
    channels = channels.lower() if isinstance(channels, str) else channels
    if channels not in ('rgb', 'bgr'):
        raise InputError("frames need their channel order: channels='rgb' (PIL, imageio, decord, torchvision) or "
                         f"channels='bgr' (OpenCV), got {channels!r}")
    try:
        frames = np.asarray(video)
    except ValueError as error:  # a list of frames of different sizes
        raise InputError(f'frames of different shapes cannot make a video: {error}') from None
    if frames.dtype == object or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise InputError(f'expected a video file or frames [T, H, W, 3] (time, height, width, {channels.upper()}), '
                         f'got {type(video).__name__} of shape {getattr(frames, "shape", "?")}')
    if frames.dtype != np.uint8:
        raise InputError(f'frames must be uint8 (0-255, as decoders give them), got {frames.dtype}: for floats in '
                         '[0, 1], pass (frames * 255).round().astype(np.uint8)')
    return frames[..., ::-1] if channels == 'rgb' else frames


def batches_of(views: Iterator[Tuple[np.ndarray, ...]], size: int) -> Iterator[Tuple[List[paddle.Tensor], np.ndarray]]:
    """One video's views (pathways each) as batches ``(pathways [B, 3, T, S, S] uint8 tensors, view_ids [B])`` of
    ``size`` views (the last may be smaller), as the DataLoader gives them to eval.py and predict.py."""
    start = 0
    while True:
        chunk = list(itertools.islice(views, size))
        if not chunk:
            return
        yield [paddle.to_tensor(np.stack(p)) for p in zip(*chunk)], np.arange(start, start + len(chunk))
        start += len(chunk)
