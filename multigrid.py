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

``training_plan(cfg)`` is what train.py follows: the stages (one, at the recipe's shape, without the long cycle), the
epochs and the LR steps; ``ShortCycleBatchSampler`` yields a stage's batches of ``(index, crop)`` items; and
``bn_splits`` says how many sub-batches a batch's BN statistics are computed over (model_utils.SubBatchNorm3D).
"""
import itertools
import logging
import math
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from config_utils import AttrDict
from preemption import ResumableBatchSampler

logger = logging.getLogger(__name__)


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


def stage_index(schedule: Sequence[Stage], epoch: int) -> int:
    """The index of the stage epoch ``epoch`` trains in (the last one after the schedule's end)."""
    return next((k for k, stage in enumerate(schedule) if epoch < stage.end_epoch), len(schedule) - 1)


def stage_start(schedule: Sequence[Stage], k: int) -> int:
    """The first epoch of stage ``k`` (the previous stage's end; a stage may round to no epochs)."""
    return schedule[k - 1].end_epoch if k else 0


def stage_at(schedule: Sequence[Stage], epoch: int) -> Stage:
    """The stage epoch ``epoch`` trains in (the last one after the schedule's end)."""
    return schedule[stage_index(schedule, epoch)]


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


class Plan(NamedTuple):
    """A training run's shape stages (consecutive, the last ending at ``max_epoch``), its epochs and its step LR:
    ``lr_boundaries`` (epochs) and ``lr_values`` (relative to TRAIN.base_lr); both empty with the cosine."""
    stages: List[Stage]
    max_epoch: int
    lr_boundaries: List[int]
    lr_values: List[float]


def training_plan(cfg: AttrDict) -> Plan:
    """The stages, epochs and LR steps ``cfg`` trains with (PySlowFast's ``init_multigrid``): the long cycle's
    schedule; the short cycle alone stretches the epochs and LR steps by ``MULTIGRID.epoch_factor``; neither: the
    recipe at its one shape."""
    t, g, m = cfg.TRAIN, cfg.MULTIGRID, cfg.MODEL
    if g.long_cycle:
        stages = long_cycle_schedule(m.num_frames, t.target_size, t.lr_steps, t.epoch, g.long_cycle_factors,
                                     g.epoch_factor, g.short_cycle_factors if g.short_cycle else None)
        boundaries, values = step_lr(stages, t.lr_gamma)
        return Plan(stages, stages[-1].end_epoch, boundaries, values)
    factor = g.epoch_factor if g.short_cycle else 1.0
    max_epoch = int(t.epoch * factor)
    boundaries = [int(step * factor) for step in t.lr_steps] if t.lr_policy == 'steps' else []
    values = [t.lr_gamma ** k for k in range(len(boundaries))]
    return Plan([Stage(0, 1, m.num_frames, t.target_size, max_epoch)], max_epoch, boundaries, values)


def is_multigrid(cfg: AttrDict) -> bool:
    return cfg.MULTIGRID.long_cycle or cfg.MULTIGRID.short_cycle


def stage_batches(cfg: AttrDict, stage: Stage, micro_batch: int) -> List[Tuple[int, int]]:
    """``[(batch, crop)]`` per rank of the iterations a stage cycles through: one, or the short cycle's three."""
    batch = micro_batch * stage.batch_factor
    if not cfg.MULTIGRID.short_cycle:
        return [(batch, stage.crop)]
    return short_cycle(batch, stage.crop, cfg.TRAIN.target_size, cfg.MULTIGRID.short_cycle_factors)


def sampling_rates(cfg: AttrDict, frames: int) -> Tuple[int, int]:
    """The range a stage's clips draw their frame stride from: a stage of fewer frames than the recipe's may
    stretch its stride up to ``num_frames / frames`` times, so some clips span the recipe's time (PySlowFast's
    ``LONG_CYCLE_SAMPLING_RATE``)."""
    rate = cfg.MODEL.sampling_rate
    return rate, rate * (cfg.MODEL.num_frames // frames)


def cycle_iterations(samples: int, batches: Sequence[int]) -> int:
    """Full batches ``samples`` items make when the batch size cycles through ``batches`` (the rest is dropped)."""
    cycle = sum(batches)
    count, left = len(batches) * (samples // cycle), samples % cycle
    for size in batches:
        if left < size:
            break
        count, left = count + 1, left - size
    return count


def bn_splits(batch: int, base: int) -> int:
    """Sub-batches a batch's BN statistics are computed over: the most that divide the batch and keep at least
    ``base`` clips each (1: the whole batch; ``base`` 0: always 1)."""
    if base <= 0:
        return 1
    return max((k for k in range(1, batch // base + 1) if batch % k == 0), default=1)


class ShortCycleBatchSampler(ResumableBatchSampler):
    """A rank's batches of one epoch when the short cycle varies the crop: the shuffled, rank-split order of
    ``DistributedBatchSampler``, cut into batches whose sizes cycle through ``cycle`` ``[(batch, crop)]``, each item
    ``(index, crop)`` (the last partial batch dropped). ``skip`` counts batches of this cycle, as a resumed epoch
    needs."""

    def __init__(self, dataset, cycle: Sequence[Tuple[int, int]], num_replicas: int, rank: int,
                 shuffle: bool = True) -> None:
        super().__init__(dataset, batch_size=1, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         drop_last=False)
        self.cycle = [(int(batch), int(crop)) for batch, crop in cycle]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        skip, self.skip = self.skip, 0
        order = (batch[0] for batch in super().__iter__())  # this rank's indices, one per "batch" of 1
        return itertools.islice(self._batches(order), skip, None)

    def _batches(self, order: Iterator[int]) -> Iterator[List[Tuple[int, int]]]:
        for k in itertools.count():
            size, crop = self.cycle[k % len(self.cycle)]
            batch = [(int(index), crop) for index in itertools.islice(order, size)]
            if len(batch) < size:
                return
            yield batch

    def __len__(self) -> int:
        return cycle_iterations(self.num_samples, [batch for batch, _ in self.cycle])


def expected_epoch_seconds(iterations: int, seconds_per_iteration: Optional[float]) -> str:
    """A stage's expected time per epoch, for the log: its iterations at the last measured iteration time (the
    stages are made to cost about the same per iteration)."""
    if not seconds_per_iteration:
        return f'{iterations} iterations (time per iteration not measured yet)'
    seconds = iterations * seconds_per_iteration
    return f'~{math.ceil(seconds)} s ({iterations} iterations at {seconds_per_iteration:.3f} s)'


def stage_shape(cfg: AttrDict, plan: Plan, epoch: int, micro_batch: int) -> List:
    """What a checkpoint records of ``epoch``'s shape: frames and a rank's ``[batch, crop]`` per iteration of the
    cycle."""
    stage = stage_at(plan.stages, epoch)
    return [stage.frames, [list(entry) for entry in stage_batches(cfg, stage, micro_batch)]]


def stage_iterations(cfg: AttrDict, stage: Stage, micro_batch: int, world: int, num_videos: int) -> int:
    """A rank's iterations per epoch in ``stage`` (its sampler's length, without building it)."""
    return cycle_iterations(math.ceil(num_videos / world), [b for b, _ in stage_batches(cfg, stage, micro_batch)])


def describe_stage(cfg: AttrDict, plan: Plan, k: int, micro_batch: int, world: int, num_videos: int) -> str:
    """Stage ``k`` in one line: epochs, clip shape, global batch, BN sub-batch and iterations per epoch."""
    stage = plan.stages[k]
    cycle = stage_batches(cfg, stage, micro_batch)
    return (f'stage {k + 1}/{len(plan.stages)}, epochs {stage_start(plan.stages, k)}-{stage.end_epoch - 1}: '
            f'{stage.frames} frames x {"/".join(str(crop) for _, crop in cycle)} px, global batch '
            f'{"/".join(str(batch * world) for batch, _ in cycle)}, BN statistics over '
            f'{"/".join(str(batch // bn_splits(batch, cfg.TRAIN.bn_group)) for batch, _ in cycle)} '
            f'clips, {stage_iterations(cfg, stage, micro_batch, world, num_videos)} iterations per epoch')


def log_plan(cfg: AttrDict, plan: Plan, micro_batch: int, world: int, num_videos: int) -> None:
    """The whole plan of a multigrid run, at its start (nothing without multigrid)."""
    if not is_multigrid(cfg):
        return
    g = cfg.MULTIGRID
    logger.info('multigrid (long cycle %s, short cycle %s): %d stages, %d epochs (TRAIN.epoch %d x epoch_factor %g%s); '
                'LR x base_lr %s from epochs %s', g.long_cycle, g.short_cycle, len(plan.stages), plan.max_epoch,
                cfg.TRAIN.epoch, g.epoch_factor, '' if g.long_cycle else ', steps stretched alike',
                [round(v, 6) for v in plan.lr_values], plan.lr_boundaries)
    for k, stage in enumerate(plan.stages):
        if stage.end_epoch > stage_start(plan.stages, k):  # a stage may round to no epochs
            logger.info('  %s', describe_stage(cfg, plan, k, micro_batch, world, num_videos))
