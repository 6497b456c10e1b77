"""Learning-rate policy: linear warmup into a half-period cosine (the recipe; PySlowFast ``get_lr_at_epoch`` with
``lr_func_cosine``; the original materialised the same curve as a 718k-entry piecewise table), or into piecewise
constant steps (``TRAIN.lr_policy: steps``; PySlowFast ``steps_with_relative_lrs``, PaddleVideo
``CustomWarmupPiecewiseDecay``: what multigrid training uses, its steps following the stages' batches).

    cosine:  lr(e) = base_lr * (cos(pi * e / max_epoch) + 1) / 2
    steps:   lr(e) = base_lr * values[k]        for boundaries[k] <= e < boundaries[k + 1]
    warmup:  lr(e) = warmup_start_lr + e * (lr(warmup_epochs) - warmup_start_lr) / warmup_epochs   for e < warmup

``e`` is fractional: ``epoch + iteration / iterations of that epoch``, so the LR changes every iteration, also when a
multigrid stage changes the iterations per epoch. ``max_epoch``, the boundaries and the values come from
``multigrid.training_plan`` (TRAIN.epoch, lr_steps and lr_gamma^k without multigrid). ``build_optimizer``: the
recipe's optimizer on this schedule.
"""
import bisect
import math
import zlib  # noqa: F401 -- loaded before paddle (Paddle 2.6.2 bug; README, Install)
from typing import Callable, Optional

import paddle

from config_utils import AttrDict
from multigrid import Plan, training_plan


def warmup_cosine_lr(epoch: float, base_lr: float, max_epoch: float, warmup_epochs: float,
                     warmup_start_lr: float) -> float:
    """The LR at fractional ``epoch``; continuous at ``warmup_epochs``."""
    return with_warmup(lambda e: base_lr * (math.cos(math.pi * e / max_epoch) + 1.0) * 0.5, epoch, warmup_epochs,
                       warmup_start_lr)


def with_warmup(policy: Callable[[float], float], epoch: float, warmup_epochs: float, warmup_start_lr: float) -> float:
    """``policy(epoch)``, or during the warmup the line from ``warmup_start_lr`` to ``policy(warmup_epochs)``."""
    if epoch < warmup_epochs:
        return warmup_start_lr + epoch * (policy(warmup_epochs) - warmup_start_lr) / warmup_epochs
    return policy(epoch)


def lr_at_epoch(cfg: AttrDict, epoch: float, plan: Optional[Plan] = None) -> float:
    """The LR of ``cfg.TRAIN`` at fractional ``epoch`` (``plan``: ``training_plan(cfg)``, given to save its
    computation). For ``slowfast.yaml``: 0.01 at 0, 0.092757 at 34, 0.05 at 98."""
    t = cfg.TRAIN
    plan = plan or training_plan(cfg)
    if t.lr_policy == 'cosine':
        return warmup_cosine_lr(epoch, t.base_lr, plan.max_epoch, t.warmup_epochs, t.warmup_start_lr)

    def steps(e: float) -> float:
        k = min(max(bisect.bisect_right(plan.lr_boundaries, e) - 1, 0), len(plan.lr_values) - 1)
        return t.base_lr * plan.lr_values[k]

    return with_warmup(steps, epoch, t.warmup_epochs, t.warmup_start_lr)


class EpochLR(paddle.optimizer.lr.LRScheduler):
    """``lr_at_epoch`` as a Paddle scheduler, stepped to the fractional epoch after every optimizer step:
    ``scheduler.step(epoch + (iteration + 1) / iterations)``.

    ``last_epoch`` is that fractional epoch; it and ``last_lr`` make up ``state_dict()``, which the optimizer
    checkpoint carries (train.py also steps a restored scheduler to the position it resumes at).
    """

    def __init__(self, cfg: AttrDict):
        self.cfg, self.plan = cfg, training_plan(cfg)
        super().__init__(learning_rate=cfg.TRAIN.base_lr, last_epoch=-1)  # its first step(): epoch 0

    def get_lr(self) -> float:
        return lr_at_epoch(self.cfg, float(self.last_epoch), self.plan)


def apply_step(optimizer, scaler=None) -> None:
    """One optimizer step, through the float16 loss scaler when there is one (it unscales the gradients and skips a
    step whose gradients overflowed), then the gradients cleared."""
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.clear_grad()


def build_optimizer(cfg: AttrDict, model: paddle.nn.Layer):
    """SGD with Nesterov momentum and L2 decay (BN parameters carry their own zero decay), LR stepped every
    iteration; the classifier's parameters learn at ``TRAIN.head_lr_scale`` times the schedule's LR."""
    t = cfg.TRAIN
    scheduler = EpochLR(cfg)
    for name, param in model.named_parameters():
        if name.startswith('head.'):
            param.optimize_attr['learning_rate'] = t.head_lr_scale
    optimizer = paddle.optimizer.Momentum(learning_rate=scheduler, momentum=t.momentum, use_nesterov=True,
                                          weight_decay=paddle.regularizer.L2Decay(t.l2_weight_decay),
                                          parameters=model.parameters())
    return optimizer, scheduler
