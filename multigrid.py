"""Multigrid training (Wu et al., "A Multigrid Method for Efficiently Training Video Models", CVPR 2020): which clip
shape and batch each epoch and iteration trains at, and the step learning rate that follows. The numbers are
PySlowFast's ``MultigridSchedule`` and ``ShortCycleBatchSampler`` (PaddleVideo ships the same), so a config of theirs
gives the same stages here.

Long cycle (paper Sec. 3.2): the recipe's step schedule is split, inside every LR step, into stages of smaller clips
``(T x t_factor, S x s_factor)`` with a batch ``round(T S^2 / (t s^2))`` times larger, so an iteration costs about the
same; each stage gets epochs in proportion to its (mean) batch factor, the whole is scaled to ``epoch_factor`` times
the recipe's epochs, and a last, fine-tuning stage at the full shape follows. Short cycle (Sec. 3.3): inside a stage,
iterations cycle through the crops ``S0 x short_factor[0]``, ``S0 x short_factor[1]`` and the stage's own, the batch
growing as the crop's area shrinks.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np


class Stage(NamedTuple):
    """One long-cycle stage: LR step ``lr_step``, clips of ``frames`` x ``crop`` pixels, ``batch_factor`` times the
    recipe's batch, until epoch ``end_epoch`` (exclusive)."""
    lr_step: int
    batch_factor: int
    frames: int
    crop: int
    end_epoch: int


def long_cycle_schedule(num_frames: int, crop_size: int, steps: Sequence[int], max_epoch: int,
                        long_cycle_factors: Sequence[Sequence[float]], epoch_factor: float,
                        short_cycle_factors: Optional[Sequence[float]] = None) -> List[Stage]:
    """The stages of a long-cycle run of a recipe with step LR boundaries ``steps`` (epochs, from 0) and
    ``max_epoch`` epochs (PySlowFast's ``get_long_cycle_schedule``)."""
    full = float(num_frames * crop_size ** 2)
    shapes_per_cycle, mean_batch = [], []
    for t_factor, s_factor in long_cycle_factors:
        frames, crop = int(round(num_frames * t_factor)), int(round(crop_size * s_factor))
        shapes = [(frames, crop)]
        if short_cycle_factors:  # the short cycle's crops count in the stage's mean batch
            shapes = [(frames, crop_size * f) for f in short_cycle_factors] + shapes
        batches = [int(round(full / (t * s * s))) for t, s in shapes]
        shapes_per_cycle.append((batches[-1], frames, crop))
        mean_batch.append(float(np.mean(batches)))
    stages, iterations = [], 0.0
    for step in range(len(steps) - 1):
        span = steps[step + 1] - steps[step]
        for cycle, factor in enumerate(mean_batch):
            epochs = span * factor / sum(mean_batch)
            iterations += epochs / factor
            stages.append((step, shapes_per_cycle[cycle], epochs))
    saving = steps[-1] / iterations  # iterations of the recipe's steps per iteration of these stages
    # the fine-tuning stage (after the last step) saves as many iterations as the rest, at the last cycle's shape
    stages.append((len(steps) - 1, shapes_per_cycle[-1], (max_epoch - steps[-1]) / saving * mean_batch[-1]))
    scale = max_epoch * epoch_factor / sum(epochs for *_, epochs in stages)
    out, total = [], 0.0
    for step, (batch, frames, crop), epochs in stages:
        total += epochs * scale
        out.append(Stage(step, batch, frames, crop, int(round(total))))
    return out


def step_lr(schedule: Sequence[Stage], gamma: float) -> Tuple[List[int], List[float]]:
    """The step LR of a long-cycle run: boundaries (epochs) and the LR relative to the base LR in each, ``gamma`` per
    recipe step times the stage's batch factor (the linear scaling rule); the fine-tuning stage is split in two
    halves, at the last stage's LR and then at ``gamma`` of it (PySlowFast's ``init_multigrid``)."""
    boundaries = [0] + [stage.end_epoch for stage in schedule]
    boundaries[-1] = (boundaries[-2] + boundaries[-1]) // 2
    values = [gamma ** stage.lr_step * stage.batch_factor for stage in schedule]
    values = values[:-1] + [values[-2], values[-1]]
    return boundaries, values


def stage_at(schedule: Sequence[Stage], epoch: int) -> Stage:
    """The stage epoch ``epoch`` trains in (the last one after the schedule's end)."""
    return next((stage for stage in schedule if epoch < stage.end_epoch), schedule[-1])


def short_cycle(batch: int, crop: int, default_crop: int, short_cycle_factors: Sequence[float]
                ) -> List[Tuple[int, int]]:
    """``[(batch, crop)]`` of the three iterations a short cycle repeats inside a stage of ``batch`` clips of
    ``crop`` pixels: the recipe's crop ``default_crop`` times each factor, with the batch scaled by the area saved
    (rounded, as PySlowFast's ``ShortCycleBatchSampler``), then the stage's own."""
    out = []
    for factor in short_cycle_factors:
        size = int(round(default_crop * factor))
        out.append((batch * int(round((crop / (factor * default_crop)) ** 2)), size))
    return out + [(batch, crop)]
