"""Scoring videos: for eval.py and predict.py the model the views go through (the dygraph network, or the exported
model run by Paddle Inference) and the multi-view ensemble over a dataset and its ranks (per video, the sum of its
views' softmax, the original's), with the clip features before the classifier when asked; for train.py the
validation of one centre view per video.
"""
import logging
from typing import NamedTuple, Optional, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm

import distributed
from checkpoint import load_weights, weights_file
from config_utils import AttrDict
from errors import WeightsError
from kinetics_dataset import UNDECODABLE
from metrics import topk_errors
from model import VideoNetwork, build_model

logger = logging.getLogger(__name__)


def build_eval_model(cfg: AttrDict, weights: Optional[str], allow_pickle: bool = False) -> VideoNetwork:
    """The network of ``cfg`` with ``weights`` loaded strictly (``checkpoint.load_weights``), in eval mode.

    Raises WeightsError for missing weights or naming the keys that do not fit.
    """
    if not weights:
        raise WeightsError('no weights: give --weights (or TEST.weights / INFER.weights)')
    model = build_model(cfg)
    load_weights(model, weights, strict=True, allow_pickle=allow_pickle)
    model.eval()
    return model


def scoring_source(cfg: AttrDict, weights: Optional[str]) -> str:
    """What eval.py and predict.py will score with, checked before any work: ``INFER.model_dir`` with
    ``INFER.use_inference``, else the weights file (WeightsError when none is given, it is missing, or it is a
    folder: ``checkpoint.weights_file``)."""
    if cfg.INFER.use_inference:
        return cfg.INFER.model_dir
    if not weights:
        raise WeightsError('no weights: give --weights (or TEST.weights / INFER.weights)')
    weights_file(weights)
    return weights


def build_scoring_model(cfg: AttrDict, weights: Optional[str], size: int, device: str, allow_pickle: bool = False):
    """What eval.py and predict.py score views with, and its name for the logs: with ``INFER.use_inference`` the
    exported model in ``INFER.model_dir`` run by Paddle Inference on ``device`` (``'cpu'`` or ``'gpu:N'``; checked
    against ``cfg`` and the view ``size``), else the network of ``cfg`` with ``weights`` (``build_eval_model``).
    Returns ``(model, source)``.
    """
    if cfg.INFER.use_inference:
        from inference import InferenceModel

        gpu_id = int(device.split(':')[1]) if device.startswith('gpu:') else (0 if device == 'gpu' else None)
        model = InferenceModel(cfg.INFER.model_dir, gpu_id=gpu_id, use_tensorrt=cfg.INFER.use_tensorrt)
        model.check(cfg, size)
        return model, cfg.INFER.model_dir
    return build_eval_model(cfg, weights, allow_pickle), weights


def ranked(probs: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` classes of highest probability in ``probs [K]``, best first (ties: the lower index first)."""
    return np.argsort(-probs, kind='stable')[:k]


def ensemble_scores(model, batches, to_inputs, num_videos: int, num_views: int, num_classes: int,
                    progress: Optional[object] = None, features: Optional[str] = None
                    ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Run ``model`` (eval mode: probabilities) over ``batches`` of views ``(pathways, view_ids)``; per video (or any
    row the views' ``view_id // num_views`` names: predict.py's windows), the sum of its views' probabilities
    ``[num_videos, K]`` (float64), how many views it got ``[num_videos]`` and the clip features
    (``model.scores_and_features``: one pass gives both): with ``features='video'`` their sum over each video's views
    ``[num_videos, C]`` (float64), with ``'view'`` each view's ``[num_videos, num_views, C]`` (float32, zeros for
    views not seen), else None.

    ``to_inputs(pathways)`` makes the model input from a batch's pathways; ``progress`` (a tqdm bar) is advanced
    per view.
    """
    sums = np.zeros((num_videos, num_classes), dtype=np.float64)
    counts = np.zeros(num_videos, dtype=np.int64)
    width = model.feature_dim if features else 0  # the classifier's input width
    shape = {'video': (num_videos, width), 'view': (num_videos, num_views, width)}.get(features)
    found = np.zeros(shape, dtype=np.float64 if features == 'video' else np.float32) if shape else None
    with paddle.no_grad():
        for clips, view_ids in batches:
            videos = view_ids // num_views
            if features:
                probs, feats = (x.numpy() for x in model.scores_and_features(to_inputs(clips)))
                probs = probs.astype(np.float64)
                if features == 'video':
                    np.add.at(found, videos, feats.astype(np.float64))
                else:
                    found[videos, view_ids % num_views] = feats
            else:
                probs = model(to_inputs(clips)).numpy().astype(np.float64)
            np.add.at(sums, videos, probs)
            np.add.at(counts, videos, 1)
            if progress is not None:
                progress.set_postfix_str(f'{int((counts == num_views).sum())} done', refresh=False)
                progress.update(len(videos))
    return sums, counts, found


class Scores(NamedTuple):
    """Every row's (video's or window's) summed view probabilities ``[rows, K]``, view count ``[rows]`` and clip
    features (``ensemble_scores``), and which videos did not decode ``[videos]``, over all ranks."""
    sums: np.ndarray
    counts: np.ndarray
    features: Optional[np.ndarray]
    failed: np.ndarray


def score_videos(model, dataset, to_inputs, batch_size: int, num_workers: int, num_classes: int, rank: int,
                 world: int, features: Optional[str] = None) -> Scores:
    """``ensemble_scores`` over a multi-view dataset split over ranks (its ``view_batches``), summed over ranks:
    every rank gets the scores of every video (each view is scored on one rank) and the decode failures of every
    rank. A row of a video that decoded but lacks views is a defect, not a broken video: RuntimeError. Progress bar
    on rank 0."""
    bar = tqdm(total=dataset.views_here, desc=f'views of {dataset.num_rows} {dataset.row_name}', unit='view',
               disable=rank != 0, mininterval=5)
    sums, counts, found = ensemble_scores(model, dataset.view_batches(batch_size, num_workers), to_inputs,
                                          dataset.num_rows, dataset.num_views, num_classes, bar, features)
    bar.close()
    if features:
        found = distributed.all_reduce_sum(found, world).astype(found.dtype)
    sums = distributed.all_reduce_sum(sums, world)
    counts = distributed.all_reduce_sum(counts, world).astype(np.int64)
    failed = distributed.all_reduce_sum(dataset.failures.flags().astype(np.float64), world) > 0
    lost = (counts != dataset.num_views) & ~failed[dataset.row_videos]
    if lost.any():
        row = int(np.flatnonzero(lost)[0])
        raise RuntimeError(f'{int(lost.sum())} {dataset.row_name} got {counts[row]} of {dataset.num_views} views '
                           f'without a decode failure (first: {dataset.samples[dataset.row_videos[row]][0]}, row '
                           f'{row}): views were lost between the loader and the scores')
    return Scores(sums, counts, found, failed)


@paddle.no_grad()
def validate(model: paddle.nn.Layer, loader, to_inputs, world: int) -> Tuple[float, float, float, int, int]:
    """train.py's validation: loss and top-1/top-5 error of one centre view per val video (``loader``'s batches,
    ``to_inputs`` making the model input), summed over ranks, and the number of val videos that did not decode
    (dropped, never substituted; each is logged by the dataset with its reason)."""
    model.eval()
    loss_sum = err1 = err5 = count = skipped = 0.0
    for *clips, labels, _ in loader:
        decoded = np.flatnonzero(labels.numpy().ravel() != UNDECODABLE)
        skipped += labels.shape[0] - len(decoded)
        if len(decoded) == 0:
            continue
        if len(decoded) < labels.shape[0]:
            keep = paddle.to_tensor(decoded)
            clips, labels = [paddle.gather(x, keep) for x in clips], paddle.gather(labels, keep)
        probs = model(to_inputs(clips))
        loss_sum += F.nll_loss(paddle.log(probs.clip(min=1e-12)), labels.reshape([-1]), reduction='sum').item()
        e1, e5 = topk_errors(probs.numpy(), labels.numpy())
        err1, err5, count = err1 + e1, err5 + e5, count + probs.shape[0]
    loss_sum, err1, err5, count, skipped = distributed.all_reduce_sum([loss_sum, err1, err5, count, skipped], world)
    model.train()
    return loss_sum / max(count, 1), err1 / max(count, 1), err5 / max(count, 1), int(count), int(skipped)
