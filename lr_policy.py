"""Learning-rate policy: linear warmup into a half-period cosine (PySlowFast ``get_lr_at_epoch`` with
``lr_func_cosine``; the original materialised the same curve as a 718k-entry piecewise table).

    lr(e) = base_lr * (cos(pi * e / max_epoch) + 1) / 2                        for e >= warmup_epochs
    lr(e) = warmup_start_lr + e * (lr_cos(warmup_epochs) - warmup_start_lr) / warmup_epochs   otherwise

``e`` is fractional: ``epoch + iteration / iters_per_epoch``, so the LR changes every iteration.
"""
import math

import paddle

from config_utils import AttrDict


def warmup_cosine_lr(epoch: float, base_lr: float, max_epoch: float, warmup_epochs: float,
                     warmup_start_lr: float) -> float:
    """The LR at fractional ``epoch``; continuous at ``warmup_epochs``."""
    def cosine(e: float) -> float:
        return base_lr * (math.cos(math.pi * e / max_epoch) + 1.0) * 0.5

    if epoch < warmup_epochs:
        return warmup_start_lr + epoch * (cosine(warmup_epochs) - warmup_start_lr) / warmup_epochs
    return cosine(epoch)


def lr_at_epoch(cfg: AttrDict, epoch: float) -> float:
    """The LR of ``cfg.TRAIN`` at fractional ``epoch``; for ``slowfast.yaml``: 0.01 at 0, 0.092757 at 34, 0.05 at 98."""
    t = cfg.TRAIN
    return warmup_cosine_lr(epoch, t.base_lr, t.epoch, t.warmup_epochs, t.warmup_start_lr)


class WarmupCosineLR(paddle.optimizer.lr.LRScheduler):
    """``lr_at_epoch`` as a Paddle scheduler, stepped once per optimizer iteration.

    ``last_epoch`` counts iterations (Paddle's name); it and ``last_lr`` make up ``state_dict()``, which the optimizer
    checkpoint carries, so a resumed run continues the schedule where it stopped.
    """

    def __init__(self, cfg: AttrDict, iters_per_epoch: int, last_epoch: int = -1):
        if iters_per_epoch <= 0:
            raise ValueError(f'iters_per_epoch must be positive, got {iters_per_epoch}')
        t = cfg.TRAIN
        self.iters_per_epoch = iters_per_epoch
        self.schedule = dict(base_lr=t.base_lr, max_epoch=t.epoch, warmup_epochs=t.warmup_epochs,
                             warmup_start_lr=t.warmup_start_lr)
        super().__init__(learning_rate=t.base_lr, last_epoch=last_epoch)

    def get_lr(self) -> float:
        return warmup_cosine_lr(self.last_epoch / self.iters_per_epoch, **self.schedule)
