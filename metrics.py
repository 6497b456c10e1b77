"""Classification metrics on score matrices ``[N, K]`` and integer labels ``[N]`` (NumPy), and the multi-view
ensemble that turns a DataLoader of test views into per-video scores (sum of view softmaxes, the original's)."""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
from tqdm import tqdm

import distributed

logger = logging.getLogger(__name__)


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``[N]``: the label is among the ``k`` highest scores (k capped at the class count)."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return (top == np.asarray(labels).reshape(-1, 1)).any(axis=1)


def topk_errors(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> List[int]:
    """Number of samples whose label is not among the top k, for each k."""
    return [int((~topk_correct(scores, labels, k)).sum()) for k in ks]


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def classification_report(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> Dict:
    """top1, top5, per-class accuracy (None for classes without samples), their mean, and the confusion matrix."""
    labels = np.asarray(labels)
    matrix = confusion_matrix(scores.argmax(axis=1), labels, num_classes)
    support = matrix.sum(axis=1)
    per_class = [float(matrix[c, c] / support[c]) if support[c] else None for c in range(num_classes)]
    present = [a for a in per_class if a is not None]
    return {'top1': float(topk_correct(scores, labels, 1).mean()) if len(labels) else 0.0,
            'top5': float(topk_correct(scores, labels, 5).mean()) if len(labels) else 0.0,
            'mean_class_acc': float(np.mean(present)) if present else 0.0,
            'per_class_acc': per_class, 'confusion': matrix}


def ensemble_scores(model: paddle.nn.Layer, loader, to_inputs, num_videos: int, num_views: int, num_classes: int,
                    progress: Optional[object] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Run ``model`` (eval mode: probabilities) over every view of the loader; per video, the sum of its views'
    probabilities ``[num_videos, K]`` (float64) and how many views it got ``[num_videos]``.

    ``to_inputs(pathways)`` makes the model input from a batch's pathways; ``progress`` (a tqdm bar) is advanced
    per view.
    """
    sums = np.zeros((num_videos, num_classes), dtype=np.float64)
    counts = np.zeros(num_videos, dtype=np.int64)
    with paddle.no_grad():
        for *clips, _, view_ids in loader:
            probs = model(to_inputs(clips)).numpy().astype(np.float64)
            videos = view_ids.numpy().reshape(-1) // num_views
            np.add.at(sums, videos, probs)
            np.add.at(counts, videos, 1)
            if progress is not None:
                progress.set_postfix_str(f'{int((counts == num_views).sum())} videos done', refresh=False)
                progress.update(len(videos))
    return sums, counts


def score_videos(model: paddle.nn.Layer, dataset, to_inputs, batch_size: int, num_workers: int, num_classes: int,
                 rank: int, world: int) -> Tuple[np.ndarray, np.ndarray]:
    """``ensemble_scores`` over a multi-view dataset split over ranks, summed over ranks: every rank gets the
    summed view probabilities ``[num_videos, K]`` and view counts of every video. Progress bar on rank 0."""
    loader = paddle.io.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    bar = tqdm(total=len(dataset), desc='views', unit='view', disable=rank != 0, mininterval=5)
    sums, counts = ensemble_scores(model, loader, to_inputs, len(dataset.samples), dataset.num_views, num_classes,
                                   bar)
    bar.close()
    return distributed.all_reduce_sum(sums, world), distributed.all_reduce_sum(counts, world).astype(np.int64)
