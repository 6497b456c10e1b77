"""Classification metrics on score matrices ``[N, K]`` and integer labels ``[N]`` (NumPy only; scoring.py makes the
scores)."""
from typing import Dict, List, Sequence

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
