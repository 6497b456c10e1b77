"""Train SlowFast on a Kinetics-style list: single process, or data parallel under paddle.distributed.launch.

    python train.py --config slowfast-single.yaml                      # one GPU (or the CPU)
    python -m paddle.distributed.launch train.py --config slowfast.yaml   # every visible GPU (run_train_multi.sh)
    python train.py --config slowfast.yaml --resume                    # continue from the newest checkpoint
    python train.py --weights converted.pdparams -o MODEL.num_classes=10   # fine-tune

The story of a run (``main``, last): config -> device and ranks -> the run's folder (``claim_outputs``: writable,
one run's) -> resume point -> the plan
(``multigrid.training_plan``: shape stages, epochs, LR steps) -> data -> network, optimizer and LR (``build_trainee``)
-> restore -> for each epoch: its stage's loader (``Data.enter``: rebuilt only when the shape changes), ``train_epoch``
(forward, loss, backward, step, LR step, logs; after a step, a stop signal writes a mid-epoch checkpoint and ends the
run with status 75), ``end_epoch`` (BN statistics and validation, at the recipe's shape), checkpoint.
"""
import argparse
import dataclasses
import logging
import math
import os
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

import distributed
from atomic import check_output_folder, size_text
from checkpoint import (RunFolder, agree_on_resume, check_mid_epoch, check_resumable, checkpoints_at_once,
                        claim_save_dir, load_checkpoint, load_weights, remove_old_checkpoints, save_checkpoint)
from config_utils import AttrDict, default_config, log_config, parse_args, setup_logging
from errors import STOPPED, ConfigError, DivergedError, exit_on_user_error
from kinetics_dataset import KineticsDataset, clip_bytes, model_inputs
from lr_policy import EpochLR, apply_step, build_optimizer
from metrics import Meter, topk_errors
from mixup import MixUp, soft_cross_entropy
from model import build_model, freeze, model_summary
from model_utils import autocast, defer_bn_statistics, flush_bn_statistics, precise_bn, set_bn_splits
from multigrid import (Plan, ShortCycleBatchSampler, Stage, bn_splits, describe_stage, expected_epoch_seconds,
                       is_multigrid, log_plan, stage_at, stage_batches, stage_index, stage_iterations, stage_shape,
                       stage_start, training_plan)
from preemption import ResumableBatchSampler, StopRequest, StoppableDataLoader
from scoring import validate
from shared_memory import loader_plan

logger = logging.getLogger('train')


def log_scalars(writer, section: str, values: Dict[str, float], step: int) -> None:
    if writer:
        for tag, value in values.items():
            writer.add_scalar(f'{section}/{tag}', value, step)


def open_curves(logdir: str, resumed: Dict):
    """The VisualDL writer of the run. A resumed run goes on in its run's log file (named in the checkpoint's meta),
    cut back first to what the checkpoint holds (the steps a killed run logged after it are logged again): VisualDL's
    board shows one file per folder, the newest, so a new file per resume would show only the curve since the last
    restart. A fresh run, or one whose file is gone or unreadable, starts a new file."""
    from visualdl import LogReader, LogWriter

    name = resumed.get('visualdl_file')
    path = os.path.join(logdir, name) if name else ''
    if not name or not os.path.isfile(path):
        return LogWriter(logdir=logdir)
    done_epochs = resumed['epoch'] + (0 if 'iteration' in resumed else 1)  # train_epoch/*, val/*: step = epoch
    try:
        reader = LogReader(file_path=path)
        kept = [(tag, r.id, r.value, r.timestamp) for tag in reader.get_tags().get('scalar', [])
                for r in reader.get_data('scalar', tag)
                if (r.id <= resumed['global_step'] if tag.startswith('train/') else r.id < done_epochs)]
    except Exception as error:  # a file cut by a kill mid-record: the curve starts again in a new file
        logger.warning('VisualDL: cannot read %s (%s): the curves go on in a new file', path, error)
        return LogWriter(logdir=logdir)
    part = f'vdlrecords.part{os.getpid()}.log'  # VisualDL requires "vdlrecords" in the name
    writer = LogWriter(logdir=logdir, file_name=part)
    for tag, step, value, walltime in kept:
        writer.add_scalar(tag, value, step, walltime)
    writer.close()
    os.replace(os.path.join(logdir, part), path)
    logger.info('VisualDL: the curves go on in %s (%d points up to step %d kept)', path, len(kept),
                resumed['global_step'])
    return LogWriter(logdir=logdir, file_name=name)


def iteration_seed(seed: int, epoch: int, iteration: int) -> int:
    """The seed of dropout's draws in one iteration: from ``(seed, epoch, iteration)`` only, like the clips, so a run
    resumed in the middle of an epoch draws what the uninterrupted run drew."""
    return int(np.random.SeedSequence([seed, epoch, iteration]).generate_state(1)[0])


class TrainLoader(NamedTuple):
    """Training batches at one shape: ``cycle`` is the ``[(batch, crop)]`` per rank its iterations go through (one
    entry, or the short cycle's three)."""
    frames: int
    cycle: List[Tuple[int, int]]
    set: KineticsDataset
    sampler: ResumableBatchSampler
    loader: StoppableDataLoader


class Data:
    """The loaders of a run: training at the current stage's shape (shuffled per epoch, dropping the last partial
    batch; a resumed epoch may start inside), at the recipe's shape for precise BN, and validation (every val video
    exactly once over all ranks). Their workers leave ``stop`` to this process."""

    def __init__(self, run: 'Run', micro_batch: int, valid_batch: int):
        self.run, self.micro_batch = run, micro_batch
        cfg, rank, world = run.cfg, run.rank, run.world
        self.valid_set = KineticsDataset(cfg, 'valid', seed=run.seed)
        mine = paddle.io.Subset(self.valid_set, list(range(rank, len(self.valid_set), world)))  # no padding copies
        self.valid_loader = StoppableDataLoader(mine, batch_size=valid_batch, shuffle=False, drop_last=False,
                                                num_workers=cfg.DATA.num_workers, stop=run.stop,
                                                errors=self.valid_set.errors,
                                                **self.memory('validation batches', self.valid_set,
                                                              [(valid_batch, cfg.VALID.target_size)]))
        self.full_shape = (cfg.MODEL.num_frames, [(micro_batch, cfg.TRAIN.target_size)])
        self.train: Optional[TrainLoader] = None
        self._full: Optional[TrainLoader] = None

    def cycle(self, stage: Stage) -> List[Tuple[int, int]]:
        return stage_batches(self.run.cfg, stage, self.micro_batch)

    def iterations(self, stage: Stage, num_videos: int) -> int:
        """A rank's iterations per epoch in ``stage``."""
        return stage_iterations(self.run.cfg, stage, self.micro_batch, self.run.world, num_videos)

    def enter(self, stage: Stage) -> bool:
        """Make ``train`` the loader of ``stage``'s shape; True when it had to be built."""
        shape = (stage.frames, self.cycle(stage))
        if self.train and (self.train.frames, self.train.cycle) == shape:
            return False
        self.train = self._build(*shape)
        return True

    def full(self) -> TrainLoader:
        """Training batches at the recipe's shape (precise BN's)."""
        if self.train and (self.train.frames, self.train.cycle) == self.full_shape:
            return self.train
        self._full = self._full or self._build(*self.full_shape)
        return self._full

    def _build(self, frames: int, cycle: List[Tuple[int, int]]) -> TrainLoader:
        run = self.run
        dataset = KineticsDataset(run.cfg, 'train', seed=run.seed, shape=(frames, cycle[-1][1]))
        if len(cycle) > 1:
            sampler = ShortCycleBatchSampler(dataset, cycle, num_replicas=run.world, rank=run.rank)
        else:
            sampler = ResumableBatchSampler(dataset, batch_size=cycle[0][0], num_replicas=run.world, rank=run.rank,
                                            shuffle=True, drop_last=True)
        loader = StoppableDataLoader(dataset, batch_sampler=sampler, num_workers=run.cfg.DATA.num_workers,
                                     stop=run.stop, errors=dataset.errors,
                                     **self.memory('training batches', dataset, cycle))
        return TrainLoader(frames, cycle, dataset, sampler, loader)

    def memory(self, what: str, dataset: KineticsDataset, cycle: List[Tuple[int, int]]) -> Dict[str, object]:
        """The loader's shared-memory settings for batches of ``cycle``'s ``(batch, crop)`` shapes
        (``shared_memory.loader_plan``, sized by the largest)."""
        largest = max(batch * clip_bytes(dataset.num_frames, crop, dataset.alpha, dataset.pathways)
                      for batch, crop in cycle)
        plan = loader_plan(what, largest, 1, self.run.cfg.DATA.num_workers)
        return {'prefetch_factor': plan.prefetch_factor, 'use_shared_memory': plan.use_shared_memory}


class Trainee(NamedTuple):
    """The network and what trains it: ``parallel`` is what steps call, the network under DataParallel with several
    ranks."""
    model: paddle.nn.Layer
    parallel: paddle.nn.Layer
    optimizer: paddle.optimizer.Optimizer
    scheduler: EpochLR
    scaler: Optional[paddle.amp.GradScaler]
    mixer: Optional[MixUp]


@dataclasses.dataclass
class Run:
    """The fixed facts of this run, shared by the steps of the loop."""
    cfg: AttrDict
    args: argparse.Namespace
    rank: int
    world: int
    seed: int
    layout: List[int]  # [ranks, micro-batch, accumulation steps]
    amp: bool
    stop: StopRequest
    plan: Plan
    folder: Optional[RunFolder]  # rank 0: save_dir, locked while the run lives
    writer: Optional[object] = None
    epoch_iterations: List[int] = dataclasses.field(default_factory=list)  # a rank's iterations in each epoch


@dataclasses.dataclass
class Progress:
    """Where the run is: what the loop updates and a checkpoint keeps."""
    global_step: int = 0
    best_err1: float = 1.0
    epoch_meter: Meter = dataclasses.field(default_factory=Meter)
    window: Meter = dataclasses.field(default_factory=Meter)
    replaced: int = 0  # undecodable training videos this rank replaced this epoch
    stopping: bool = False  # a stop signal reached some rank
    seconds_per_iteration: float = 0.0  # the last epoch's (not kept by checkpoints)


def enter_stage(run: Run, data: Data, progress: Progress, epoch: int) -> None:
    """Train ``epoch`` at its stage's shape; a new stage is logged with its expected time per epoch."""
    k = stage_index(run.plan.stages, epoch)
    stage = run.plan.stages[k]
    starts = epoch == stage_start(run.plan.stages, k)
    rebuilt = data.enter(stage)
    if is_multigrid(run.cfg) and (starts or rebuilt or progress.seconds_per_iteration == 0.0):
        logger.info('[Stage %d] %s; expected time per epoch %s', k + 1,
                    describe_stage(run.cfg, run.plan, k, data.micro_batch, run.world, len(data.train.set)),
                    expected_epoch_seconds(run.epoch_iterations[epoch], progress.seconds_per_iteration))
    if rebuilt and epoch:
        logger.info('training loader rebuilt for %d frames, [batch, crop] per iteration %s', data.train.frames,
                    data.train.cycle)


def build_trainee(run: Run) -> Trainee:
    """The network (``--weights`` loaded, ``MODEL.frozen_stages`` / ``freeze_bn`` applied), its optimizer and LR,
    the float16 loss scaler and the soft-target mixer (label smoothing, mixup, CutMix: fine-tuning; the recipe uses
    hard labels)."""
    cfg, m, t = run.cfg, run.cfg.MODEL, run.cfg.TRAIN
    model = build_model(cfg)
    if run.rank == 0:
        logger.info(model_summary(model, cfg))
    if run.args.weights:
        loaded, skipped, reinitialised = load_weights(model, run.args.weights, strict=False,
                                                      allow_pickle=run.args.allow_pickle)
        logger.info('--weights %s: loaded %d tensors; re-initialised %d (%s); skipped %d from the file (%s)',
                    run.args.weights, len(loaded), len(reinitialised), ', '.join(reinitialised) or '-', len(skipped),
                    ', '.join(skipped) or '-')
    if m.frozen_stages or m.freeze_bn:
        frozen, frozen_bn = freeze(model, m.frozen_stages, m.freeze_bn)
        logger.info('MODEL.frozen_stages %d: %d trainable tensors frozen (stem%s); %d BN layers keep their statistics',
                    m.frozen_stages, len(frozen), f'..res{m.frozen_stages}' if m.frozen_stages > 1 else '',
                    frozen_bn)
    mixer = (MixUp(m.num_classes, t.mixup_alpha, t.cutmix_alpha, t.mix_switch_prob, t.mix_prob, t.label_smoothing)
             if t.label_smoothing > 0 or t.mixup_alpha > 0 or t.cutmix_alpha > 0 else None)
    if is_multigrid(cfg):  # the stages' clips have other shapes than the fixed pool's
        model.head.global_pool_in_training = True
    optimizer, scheduler = build_optimizer(cfg, model)
    scaler = (paddle.amp.GradScaler(init_loss_scaling=2.0 ** 16) if run.amp and t.amp_dtype == 'float16'
              else None)
    return Trainee(model, model, optimizer, scheduler, scaler, mixer)  # parallel: see main


def restore(run: Run, prefix: str, resumed: Dict, trainee: Trainee) -> Tuple[Progress, int, int]:
    """Load the checkpoint ``prefix`` (its .pdopt already read: ``resumed``) into the trainee; returns the progress
    it holds, the epoch to start and, inside that epoch, the first iteration not trained on."""
    meta = load_checkpoint(prefix, trainee.model, trainee.optimizer, trainee.scaler, run.rank, state=resumed,
                           allow_pickle=run.args.allow_pickle)
    progress = Progress(meta['global_step'], meta['best_err1'])
    start_epoch, first_iteration = meta['epoch'] + 1, 0
    if 'iteration' in meta:  # inside an epoch: its meters go on from where they were
        start_epoch, first_iteration = meta['epoch'], meta['iteration']
        saved = meta['progress'][run.rank]
        progress.epoch_meter, progress.window, progress.replaced = Meter(*saved[0:4]), Meter(*saved[4:8]), int(saved[8])
    iterations = run.epoch_iterations[min(start_epoch, len(run.epoch_iterations) - 1)]
    trainee.scheduler.step(start_epoch + first_iteration / iterations)  # where the run resumes, whatever was kept
    logger.info('resumed from %s: epoch %d %s, step %d, lr %.6g, seed %d%s', prefix, meta['epoch'],
                f'at iteration {first_iteration} of {iterations}' if 'iteration' in meta else 'done',
                progress.global_step, trainee.scheduler(), run.seed,
                f', float16 loss scale {trainee.scaler.state_dict().get("scale")}' if trainee.scaler else '')
    return progress, start_epoch, first_iteration


def train_epoch(run: Run, data: Data, trainee: Trainee, progress: Progress, epoch: int,
                first: int) -> Optional[int]:
    """The iterations of ``epoch`` from its iteration ``first`` (forward, loss, backward, step, LR step, logs).
    Returns None, or when a stop signal ended it after a step (its mid-epoch checkpoint written) the iterations
    done."""
    cfg, t, world = run.cfg, run.cfg.TRAIN, run.world
    train, model, optimizer, scaler = data.train, trainee.parallel, trainee.optimizer, trainee.scaler
    loader = train.loader
    train.sampler.set_epoch(epoch)
    train.sampler.skip = first  # a resumed epoch starts at its first batch not trained on
    train.set.set_epoch(epoch)
    model.train()
    # with accumulation, BN running statistics move once per optimizer step, as a rank's would
    defer_bn_statistics(trainee.model, t.accumulate_steps > 1)
    epoch_start = tick = run_start = time.perf_counter()
    optimizer.clear_grad()
    for it, (*clips, labels, _) in enumerate(loader, start=first):
        reader_time = time.perf_counter() - tick
        paddle.seed(iteration_seed(run.seed, epoch, it))
        # BN statistics over TRAIN.bn_group clips, whatever this iteration's batch (a multigrid stage's, a rank's)
        set_bn_splits(trainee.model, bn_splits(labels.shape[0], t.bn_group))
        inputs, lam = model_inputs(clips, cfg), 1.0
        if trainee.mixer:  # mixes drawn from (seed, epoch, iteration), as dropout's
            inputs, targets, lam = trainee.mixer(inputs, labels, np.random.default_rng([run.seed, epoch, it, 1]))
        with autocast(run.amp, t.amp_dtype):
            logits = model(inputs)
            loss = (soft_cross_entropy(logits, targets) if trainee.mixer
                    else F.cross_entropy(logits.astype('float32'), labels))
        loss_value = loss.item()
        # One all-reduce a step tells every rank of a non-finite loss on any rank (all stop with the same message
        # instead of waiting in the next all-reduce for a rank that has exited: on GPUs, until NCCL times out)
        # and of a stop signal on any rank (all stop after the same step).
        bad, stop_flag = distributed.all_reduce_max([0.0 if math.isfinite(loss_value) else world - run.rank,
                                                     float(run.stop.requested)], world)
        if bad:
            raise DivergedError(f'loss is not finite on rank {world - int(bad)} at epoch {epoch}, iteration {it}: '
                                'stopping every rank before any checkpoint of it is written (lower TRAIN.base_lr?)')
        progress.stopping = progress.stopping or stop_flag > 0
        scaled = loss / t.accumulate_steps
        (scaler.scale(scaled) if scaler else scaled).backward()
        stepped = (it + 1) % t.accumulate_steps == 0
        if stepped:
            apply_step(optimizer, scaler)
            flush_bn_statistics(trainee.model)
            trainee.scheduler.step(epoch + (it + 1) / len(loader))
            progress.global_step += 1
        scored = labels if lam >= 0.5 else labels.flip(0)  # a mixed clip's errors: against its larger part
        e1, e5 = topk_errors(logits.astype('float32').numpy(), scored.numpy())
        for meter in (progress.epoch_meter, progress.window):
            meter.update(loss_value, e1, e5, labels.shape[0], time.perf_counter() - tick, reader_time)
        tick = time.perf_counter()
        if (it + 1) % run.args.log_interval == 0 or it + 1 == len(loader):
            log_window(run, progress, epoch, it, len(loader), (tick - run_start) / (it + 1 - first), optimizer.get_lr())
        every = t.checkpoint_every_steps
        if stepped and (progress.stopping or (every and progress.global_step % every == 0 and it + 1 < len(loader))):
            progress.replaced += train.set.failures.take_count()
            save(run, data, trainee, progress, epoch, it + 1)
            if progress.stopping:
                return it + 1
    loss_sum, err1, err5, count, bad = distributed.all_reduce_sum(
        progress.epoch_meter.sums() + [progress.replaced + train.set.failures.take_count()], world)
    logger.info('[Epoch %d end] avg_loss %.5f, avg_err1 %.5f, avg_err5 %.5f, undecodable videos replaced %d, '
                'epoch_cost %.1f s', epoch, loss_sum / count, err1 / count, err5 / count, bad,
                time.perf_counter() - epoch_start)
    log_scalars(run.writer, 'train_epoch', dict(loss=loss_sum / count, top1_err=err1 / count, top5_err=err5 / count),
                epoch)
    if progress.epoch_meter.timed:
        progress.seconds_per_iteration = progress.epoch_meter.seconds / progress.epoch_meter.timed
    progress.epoch_meter, progress.replaced = Meter(), 0
    return None


def log_window(run: Run, progress: Progress, epoch: int, it: int, iterations: int, seconds_per_iteration: float,
               lr: float) -> None:
    """The log line and VisualDL scalars of the iterations since the last, then a new window."""
    window = progress.window
    remaining = sum(run.epoch_iterations[epoch:]) - (it + 1)
    eta = seconds_per_iteration * remaining  # precise BN and validation not included
    loss_avg, err1_avg, err5_avg = window.averages()
    ips = window.timed_clips * run.world / window.seconds
    logger.info('[Epoch %d, iter %d/%d] loss %.5f, err1 %.5f, err5 %.5f, lr %.6g, batch_cost %.3f s, '
                'reader_cost %.3f s, ips %.2f clips/s, ETA %d:%02d:%02d', epoch, it + 1, iterations, loss_avg,
                err1_avg, err5_avg, lr, window.seconds / window.timed, window.reader_seconds / window.timed, ips,
                eta // 3600, eta % 3600 // 60, eta % 60)
    log_scalars(run.writer, 'train', dict(loss=loss_avg, top1_err=err1_avg, top5_err=err5_avg, lr=lr, ips=ips),
                progress.global_step)
    progress.window = Meter()


def end_epoch(run: Run, data: Data, trainee: Trainee, progress: Progress, epoch: int, last: bool) -> None:
    """After an epoch's steps: the ranks' agreement, BN statistics (precise BN, else averaged over ranks) and
    validation."""
    cfg, world, model = run.cfg, run.world, trainee.model
    defer_bn_statistics(model, False)  # precise BN and validation: BN as it is
    if world > 1:  # DataParallel averaged every gradient: the trainable parameters must agree exactly
        logger.info('ranks in sync after the steps: max trainable-parameter difference to rank 0 is %.3g',
                    distributed.max_rank_difference(model, world, trainable_only=True))
    v = cfg.VALID
    if v.use_preciseBN and (epoch % v.preciseBN_interval == 0 or last):
        full = data.full()  # the recipe's shape, whatever the stage's
        set_bn_splits(model, bn_splits(full.cycle[0][0], cfg.TRAIN.bn_group))
        full.sampler.set_epoch(epoch + 1)  # the order the epoch's pass left it at (DistributedBatchSampler's)
        full.set.set_epoch(epoch)
        inputs = (model_inputs(batch[:-2], cfg) for batch in full.loader)  # (*pathways, labels, indices)
        used = precise_bn(model, inputs, min(v.num_batches_preciseBN, len(full.loader)), world)
        logger.info('precise BN: statistics of %d batches of %d frames x %d px', used, full.frames, full.cycle[0][1])
    else:
        distributed.average_buffers(model, world)  # one model on every rank
    if (epoch + 1) % run.args.valid_interval == 0 or last:
        val_loss, val_err1, val_err5, val_count, val_skipped = validate(
            model, data.valid_loader, lambda clips: model_inputs(clips, cfg), world)
        progress.best_err1 = min(progress.best_err1, val_err1)
        logger.info('[Val epoch %d] loss %.5f, err1 %.5f, err5 %.5f over %d videos (best err1 %.5f)%s', epoch,
                    val_loss, val_err1, val_err5, val_count, progress.best_err1,
                    f'; {val_skipped} undecodable videos skipped (named in the warnings above)' if val_skipped else '')
        log_scalars(run.writer, 'val', dict(loss=val_loss, top1_err=val_err1, top5_err=val_err5), epoch)
    if world > 1:
        logger.info('ranks in sync: max parameter and buffer difference to rank 0 is %.3g',
                    distributed.max_rank_difference(model, world))


def save(run: Run, data: Data, trainee: Trainee, progress: Progress, epoch: int,
         iteration: Optional[int] = None) -> None:
    """Rank 0 writes the checkpoint of the end of ``epoch`` or of its first ``iteration`` iterations (then every rank
    takes part: each rank's meters and BN statistics are kept)."""
    cfg, world = run.cfg, run.world
    meta = dict(epoch=epoch, global_step=progress.global_step, best_err1=progress.best_err1, seed=run.seed,
                layout=run.layout, stage=stage_shape(cfg, run.plan, epoch, data.micro_batch),
                config={section: dict(keys) for section, keys in cfg.items()})
    if run.writer:  # the file a resumed run goes on in
        meta['visualdl_file'] = os.path.basename(run.writer.file_name)
    rank_state = None
    if iteration is not None:
        kept = progress.epoch_meter.sums() + progress.window.sums() + [progress.replaced]
        meta['progress'] = distributed.all_gather_array(np.array(kept, np.float64), world).tolist()
        rank_state = distributed.gather_non_trainable_state(trainee.model, world) if world > 1 else None

    def write() -> None:  # a failed write (a full disk) stops every rank with rank 0's message
        saved = save_checkpoint(run.args.save_dir, epoch, trainee.model, trainee.optimizer, meta, trainee.scaler,
                                iteration, rank_state)
        logger.info('saved %s.pdparams/.pdopt', saved)
        t = run.cfg.TRAIN
        if iteration is None and t.keep_checkpoints:
            removed = remove_old_checkpoints(run.args.save_dir, t.keep_checkpoints, t.keep_every)
            if removed:
                logger.info('removed %s (TRAIN.keep_checkpoints %d, keep_every %d)', ', '.join(removed),
                            t.keep_checkpoints, t.keep_every)

    distributed.rank_0_does(write, run.rank, world)


def stopped(run: Run, where: str) -> int:
    """The end of a run a stop signal ended at a checkpoint: every rank waits for the save, then exits 75."""
    distributed.all_reduce_sum([0.0], run.world)  # no rank exits (and has launch end the others) before the save
    if run.writer:
        run.writer.close()
    logger.warning('%s: stopped %s; the checkpoint holds it: run again with --resume to continue (exit status %d)',
                   run.stop.signal_name or 'another rank\'s stop signal', where, STOPPED)
    return STOPPED


def log_batch_plan(cfg: AttrDict, world: int, micro_batch: int) -> None:
    """What the batch split means for BN and the LR: the BN group, the clips per rank and per optimizer step, and the
    learning rate the linear scaling rule gives when the batch is not the recipe's (said, never applied)."""
    t, recipe = cfg.TRAIN, default_config().TRAIN
    group = micro_batch // bn_splits(micro_batch, t.bn_group)
    logger.info('BN statistics over %d clips (TRAIN.bn_group %d): each rank\'s micro-batch of %d clips in %d groups; '
                '%d clips per rank and %d per optimizer step (%d ranks x %d x %d accumulation steps); LR %g for that '
                'batch (TRAIN.base_lr)', group, t.bn_group, micro_batch, micro_batch // group,
                micro_batch * t.accumulate_steps, t.batch_size, world, micro_batch, t.accumulate_steps, t.base_lr)
    if t.bn_group and group != t.bn_group:
        why = (f'each rank\'s micro-batch of {micro_batch} clips is smaller than TRAIN.bn_group {t.bn_group}'
               if micro_batch < t.bn_group else f'{micro_batch} clips do not split into groups of {t.bn_group}')
        logger.warning('%s: BN normalises over %d clips, not the recipe\'s %d (%d ranks x %d accumulation steps split '
                       'TRAIN.batch_size %d); fewer ranks or accumulation steps, or a TRAIN.batch_size that gives each '
                       'rank a multiple of %d clips, keep it. On GPUs paddle.nn.SyncBatchNorm could normalise across '
                       'ranks; it is not used (it has no CPU kernel, and a group across ranks changes what a GPU '
                       'computes)', why, group, t.bn_group, world, t.accumulate_steps, t.batch_size, t.bn_group)
    if t.batch_size != recipe.batch_size and t.base_lr == recipe.base_lr:
        scaled = t.base_lr * t.batch_size / recipe.batch_size
        logger.warning('TRAIN.batch_size %d with the recipe\'s TRAIN.base_lr %g, which is for %d clips: the linear '
                       'scaling rule gives %g (-o TRAIN.base_lr=%g); the LR is not rescaled for you', t.batch_size,
                       t.base_lr, recipe.batch_size, scaled, scaled)


def log_checkpoint_plan(run: Run, trainee: Trainee) -> None:
    """The checkpoints the run will write and keep, and the disk they take at most (a checkpoint: the weights, and
    the optimizer's momentum of each trainable weight)."""
    t, epochs = run.cfg.TRAIN, run.plan.max_epoch
    saved = [e for e in range(epochs) if (e + 1) % t.save_interval == 0 or e + 1 == epochs]
    state = sum(int(np.prod(v.shape)) * v.element_size() for v in trainee.model.state_dict().values())
    momentum = sum(int(np.prod(p.shape)) * p.element_size() for p in trainee.model.parameters() if not p.stop_gradient)
    each = state + momentum
    held = checkpoints_at_once(saved, t.keep_checkpoints, t.keep_every)
    rule = (f'keeping the newest {t.keep_checkpoints}' + (f' and one every {t.keep_every} epochs' if t.keep_every
                                                          else '')
            if t.keep_checkpoints else 'keeping every one (TRAIN.keep_checkpoints 0)')
    # one more while the next is written, and a mid-epoch one beside them
    logger.info('checkpoints: %d end-of-epoch ones (TRAIN.save_interval %d), %s: at most %d at once, %s on disk '
                '(one: %s, up to %s with a mid-epoch one and the one being written) in %s', len(saved),
                t.save_interval, rule, held, size_text(held * each), size_text(each), size_text((held + 2) * each),
                run.args.save_dir)


def claim_outputs(args: argparse.Namespace, resume: bool) -> RunFolder:
    """Rank 0, before any work: the run's folder (``checkpoint.claim_save_dir``: writable, one run's, no other run's
    checkpoints unless resumed), its train.log, and the VisualDL folder writable."""
    folder = claim_save_dir(args.save_dir, resume, args.start_over)
    if args.use_visualdl:
        check_output_folder(args.vd_logdir, '--vd_logdir')
    handler = logging.FileHandler(os.path.join(args.save_dir, 'train.log'))
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(handler)
    return folder


def main() -> int:
    stop = StopRequest().install()  # first: a signal that comes during the start-up stops the run at its first step
    cfg, args = parse_args('train')
    t = cfg.TRAIN
    use_gpu = t.use_gpu if args.use_gpu is None else args.use_gpu
    resume = args.resume or args.resume_epoch is not None
    if args.start_over and resume:
        raise ConfigError('--start_over moves the checkpoints in --save_dir aside, --resume continues from them: give '
                          'one of them')
    setup_logging()  # before setup, which logs
    device, rank, world = distributed.setup(use_gpu, args.use_data_parallel)
    folder = distributed.rank_0_does(lambda: claim_outputs(args, resume), rank, world)
    log_config(cfg, 'Train')
    micro_batch = distributed.split_batch(t.batch_size, world * t.accumulate_steps, 'TRAIN.batch_size',
                                          'ranks x TRAIN.accumulate_steps')
    valid_batch = distributed.split_batch(cfg.VALID.batch_size, world, 'VALID.batch_size')
    amp = t.use_amp and device.startswith('gpu')
    if t.use_amp and not amp:
        logger.info('TRAIN.use_amp: no GPU, training in float32')
    logger.info('device %s, rank %d of %d, batch %d = %d ranks x %d x %d accumulation steps', device, rank, world,
                t.batch_size, world, micro_batch, t.accumulate_steps)
    log_batch_plan(cfg, world, micro_batch)
    run = Run(cfg, args, rank, world, args.seed, [world, micro_batch, t.accumulate_steps], amp, stop,
              training_plan(cfg), folder)

    prefix = agree_on_resume(args.save_dir, args.resume, args.resume_epoch, rank, world)
    resumed = None
    if prefix:  # the data order and augmentation continue the checkpoint's run, whatever --seed says now
        resumed = check_resumable(prefix, cfg.MODEL, args.allow_pickle)  # the .pdopt, read once: restored below
        check_mid_epoch(resumed['meta'], prefix, run.layout,
                        stage_shape(cfg, run.plan, resumed['meta']['epoch'], micro_batch))
        run.seed = resumed['meta'].get('seed', args.seed)
        if run.seed != args.seed:
            logger.warning('--seed %d ignored: resuming %s continues its run\'s seed %d', args.seed, prefix, run.seed)
    paddle.seed(run.seed)
    data = Data(run, micro_batch, valid_batch)
    meta = resumed['meta'] if prefix else {}  # the first epoch to train: the stage whose loader is made first
    data.enter(stage_at(run.plan.stages, meta.get('epoch', -1) + (0 if 'iteration' in meta else 1)))
    num_videos = len(data.train.set)
    run.epoch_iterations = [data.iterations(stage_at(run.plan.stages, e), num_videos)
                            for e in range(run.plan.max_epoch)]
    if min(run.epoch_iterations) < t.accumulate_steps:
        raise ConfigError(f'{num_videos} training videos make no full batch of TRAIN.batch_size {t.batch_size}'
                          + (' in some multigrid stage' if is_multigrid(cfg) else ''))
    logger.info('%d training videos (%d steps per epoch), %d validation videos', num_videos,
                run.epoch_iterations[-1] // t.accumulate_steps, len(data.valid_set))
    log_plan(cfg, run.plan, micro_batch, world, num_videos)

    trainee = build_trainee(run)
    log_checkpoint_plan(run, trainee)
    progress, start_epoch, first_iteration = Progress(), 0, 0
    if prefix:
        progress, start_epoch, first_iteration = restore(run, prefix, resumed, trainee)
    if world > 1:  # made after the restore, as DataParallel syncs from rank 0 when it is made
        trainee = trainee._replace(parallel=paddle.DataParallel(trainee.model))
    if args.use_visualdl and rank == 0:
        run.writer = open_curves(args.vd_logdir, resumed['meta'] if prefix else {})

    max_epoch = run.plan.max_epoch
    for epoch in range(start_epoch, max_epoch):
        enter_stage(run, data, progress, epoch)
        stopped_after = train_epoch(run, data, trainee, progress, epoch, first_iteration)
        if stopped_after is not None:
            return stopped(run, f'at epoch {epoch}, iteration {stopped_after} of {len(data.train.loader)} '
                                f'(step {progress.global_step})')
        first_iteration = 0  # only a resumed epoch starts inside
        last = epoch + 1 == max_epoch
        end_epoch(run, data, trainee, progress, epoch, last)
        # a signal during precise BN or validation is acted on here, after the epoch's checkpoint
        progress.stopping = progress.stopping or distributed.all_reduce_max(float(stop.requested), world) > 0
        if (epoch + 1) % t.save_interval == 0 or last or progress.stopping:
            # RNG state needs no saving: clips draw from (seed, epoch, index) and dropout from (seed, epoch,
            # iteration), so the seed is all a resumed run needs to repeat what comes next exactly.
            save(run, data, trainee, progress, epoch)
        if progress.stopping and not last:
            return stopped(run, f'after epoch {epoch} (step {progress.global_step})')
    if run.writer:
        run.writer.close()
    logger.info('[TRAIN] training finished')
    return 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
