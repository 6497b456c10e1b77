"""Fine-tuning regularisers on the training targets: label smoothing, and mixup / CutMix of clip pairs.

As PySlowFast's ``MixUp`` (and pytorchvideo's ``MixVideo``): each batch is mixed with itself reversed along the batch
axis. Mixup (Zhang et al. 2018): ``x = lam * x + (1 - lam) * x[::-1]`` with ``lam ~ Beta(mixup_alpha, mixup_alpha)``.
CutMix (Yun et al. 2019): a box of about ``1 - lam`` of the frame, the same in every frame and every pathway, is
pasted from ``x[::-1]``, and ``lam`` becomes the area actually kept. Targets mix the same way:
``y = lam * smooth(onehot(label)) + (1 - lam) * smooth(onehot(label[::-1]))``, with
``smooth(t) = (1 - label_smoothing) * t + label_smoothing / K``. A CutMix box of zero height or width (``lam`` close
to 1) leaves the batch as it is, with ``lam`` 1, as PySlowFast's empty slice does. Every draw comes from the
generator given (train.py: ``(seed, epoch, iteration)``), so a resumed run mixes as the uninterrupted one did.
"""
from typing import List, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F


def soft_targets(labels: paddle.Tensor, num_classes: int, smoothing: float = 0.0) -> paddle.Tensor:
    """``labels [N] or [N, 1]`` -> ``[N, K]``: one-hot, smoothed towards the uniform distribution."""
    onehot = F.one_hot(labels.reshape([-1]), num_classes).astype('float32')
    return onehot * (1.0 - smoothing) + smoothing / num_classes


def soft_cross_entropy(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """Mean over the batch of ``-sum_k targets_k * log softmax(logits)_k``."""
    return -(targets * F.log_softmax(logits.astype('float32'), axis=-1)).sum(axis=-1).mean()


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: a box of about ``(1 - lam)`` of the frame, centred uniformly, clipped to the frame."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(y0), int(y1), int(x0), int(x1)


class MixUp:
    """Mixes a batch of normalised clips ``[slow, fast]`` (or ``[slow]``) and makes its soft targets.

    Args:
        num_classes: K.
        mixup_alpha: Beta parameter of mixup; 0 turns it off.
        cutmix_alpha: Beta parameter of CutMix; 0 turns it off.
        switch_prob: with both on, the probability of CutMix for a batch (else mixup).
        mix_prob: the probability that a batch is mixed at all.
        label_smoothing: epsilon of the targets (also when a batch is not mixed).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 switch_prob: float = 0.5, mix_prob: float = 1.0, label_smoothing: float = 0.0):
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.switch_prob, self.mix_prob, self.label_smoothing = switch_prob, mix_prob, label_smoothing

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, clips: Sequence[paddle.Tensor], labels: paddle.Tensor,
                 rng: np.random.Generator) -> Tuple[List[paddle.Tensor], paddle.Tensor, float]:
        """``(mixed clips, soft targets [N, K], lam)``; lam 1.0 when the batch is left unmixed."""
        targets = soft_targets(labels, self.num_classes, self.label_smoothing)
        if not self.mixes or rng.uniform() >= self.mix_prob:
            return list(clips), targets, 1.0
        cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.uniform() < self.switch_prob)
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if cutmix:
            height, width = clips[0].shape[-2:]
            y0, y1, x0, x1 = cutmix_box(height, width, lam, rng)
            if y0 == y1 or x0 == x1:  # lam close to 1: an empty box pastes nothing (PySlowFast: lam 1, unmixed)
                return list(clips), targets, 1.0
            mixed = []
            for x in clips:  # [N, C, T, H, W]: the same box in every frame of every pathway
                pasted = x.flip(0)[:, :, :, y0:y1, x0:x1]
                x = x.clone()
                x[:, :, :, y0:y1, x0:x1] = pasted
                mixed.append(x)
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
        else:
            mixed = [x * lam + x.flip(0) * (1.0 - lam) for x in clips]
        return mixed, targets * lam + targets.flip(0) * (1.0 - lam), lam
