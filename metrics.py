"""Classification metrics on score matrices ``[N, K]`` and integer labels ``[N]`` (NumPy only; scoring.py makes the
scores), and the training loop's running sums (``Meter``)."""
import dataclasses
from typing import Dict, List, Sequence, Tuple

import numpy as np


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


@dataclasses.dataclass
class Meter:
    """One rank's sums over the iterations since it was made: loss x clips, top-1 and top-5 errors, clips; and the
    time spent per batch and reading, over ``timed`` iterations of ``timed_clips`` clips."""
    loss: float = 0.0
    err1: float = 0.0
    err5: float = 0.0
    clips: float = 0.0
    seconds: float = 0.0
    reader_seconds: float = 0.0
    timed: int = 0
    timed_clips: int = 0

    def update(self, loss: float, err1: float, err5: float, clips: int, seconds: float, reader_seconds: float):
        self.loss, self.err1, self.err5, self.clips = (self.loss + loss * clips, self.err1 + err1, self.err5 + err5,
                                                      self.clips + clips)
        self.seconds, self.reader_seconds = self.seconds + seconds, self.reader_seconds + reader_seconds
        self.timed, self.timed_clips = self.timed + 1, self.timed_clips + clips

    def sums(self) -> List[float]:
        """What a checkpoint keeps and the end of an epoch adds over ranks."""
        return [self.loss, self.err1, self.err5, self.clips]

    def averages(self) -> Tuple[float, float, float]:
        return self.loss / self.clips, self.err1 / self.clips, self.err5 / self.clips
