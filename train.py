"""Train SlowFast on a Kinetics-style list: single process, or data parallel under paddle.distributed.launch.

    python train.py --config slowfast-single.yaml                      # one GPU (or the CPU)
    python -m paddle.distributed.launch train.py --config slowfast.yaml   # every visible GPU (run_train_multi.sh)
    python train.py --config slowfast.yaml --resume True               # continue from the newest checkpoint
    python train.py --weights converted.pdparams -o MODEL.num_classes=10   # fine-tune

The story of a run: config -> device and ranks -> data -> model -> optimizer and LR -> resume -> for each epoch:
iterations (forward, loss, backward, step, LR step, logs), BN statistics, validation, checkpoint.
"""
import logging
import math
import os
import sys
import time
from typing import Optional

import numpy as np
import paddle
import paddle.nn.functional as F

import distributed
from checkpoint import (CheckpointError, WeightsError, check_resumable, checkpoint_prefix, complete_epoch,
                        find_resume_checkpoint, load_checkpoint, load_weights, save_checkpoint)
from config_utils import AttrDict, log_config, parse_args, setup_logging
from kinetics_dataset import UNDECODABLE, KineticsDataset, ListError, model_inputs
from lr_policy import WarmupCosineLR
from metrics import topk_errors
from model import build_model, model_summary

logger = logging.getLogger('train')


def build_loaders(cfg: AttrDict, seed: int, rank: int, world: int, micro_batch: int, valid_batch: int):
    """Training loader (shuffled per epoch, dropping the last partial batch) and validation loader (every val video
    exactly once over all ranks)."""
    train_set = KineticsDataset(cfg, 'train', seed=seed)
    sampler = paddle.io.DistributedBatchSampler(train_set, batch_size=micro_batch, num_replicas=world, rank=rank,
                                                shuffle=True, drop_last=True)
    train_loader = paddle.io.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.DATA.num_workers)
    valid_set = KineticsDataset(cfg, 'valid', seed=seed)
    mine = paddle.io.Subset(valid_set, list(range(rank, len(valid_set), world)))  # no padding duplicates
    valid_loader = paddle.io.DataLoader(mine, batch_size=valid_batch, shuffle=False, drop_last=False,
                                        num_workers=cfg.DATA.num_workers)
    return train_set, sampler, train_loader, valid_set, valid_loader


def build_optimizer(cfg: AttrDict, model: paddle.nn.Layer, steps_per_epoch: int):
    """SGD with Nesterov momentum and L2 decay (BN parameters carry their own zero decay), stepped LR; the
    classifier's parameters learn at ``TRAIN.head_lr_scale`` times the schedule's LR."""
    t = cfg.TRAIN
    scheduler = WarmupCosineLR(cfg, steps_per_epoch)
    for name, param in model.named_parameters():
        if name.startswith('head.'):
            param.optimize_attr['learning_rate'] = t.head_lr_scale
    optimizer = paddle.optimizer.Momentum(learning_rate=scheduler, momentum=t.momentum, use_nesterov=True,
                                          weight_decay=paddle.regularizer.L2Decay(t.l2_weight_decay),
                                          parameters=model.parameters())
    return optimizer, scheduler


@paddle.no_grad()
def precise_bn(model: paddle.nn.Layer, loader, num_batches: int, world: int, cfg: AttrDict) -> int:
    """Replace BN running statistics by their exact average over ``num_batches`` training batches (PySlowFast's
    precise BN), averaged over ranks. Returns the batches used."""
    layers = [m for m in model.sublayers() if isinstance(m, paddle.nn.BatchNorm3D)]
    momenta = [m._momentum for m in layers]
    sums = [(paddle.zeros_like(m._mean), paddle.zeros_like(m._variance)) for m in layers]
    for m in layers:
        m._momentum = 0.0  # each forward overwrites the running statistics with the batch's
    model.train()
    used = 0
    for batch in loader:
        model(model_inputs(batch[0], batch[1], cfg))
        for m, (mean, var) in zip(layers, sums):
            mean.add_(m._mean)
            var.add_(m._variance)
        used += 1
        if used == num_batches:
            break
    for m, momentum, (mean, var) in zip(layers, momenta, sums):
        m._mean.set_value(mean / max(used, 1))
        m._variance.set_value(var / max(used, 1))
        m._momentum = momentum
    distributed.average_buffers(model, world)
    return used


@paddle.no_grad()
def validate(model: paddle.nn.Layer, loader, world: int, cfg: AttrDict):
    """Loss and top-1/top-5 error of one centre view per val video, summed over ranks, and the number of val videos
    that did not decode (dropped, never substituted; each is logged by the dataset with its reason)."""
    model.eval()
    loss_sum = err1 = err5 = count = skipped = 0.0
    for slow, fast, labels, _ in loader:
        decoded = np.flatnonzero(labels.numpy().ravel() != UNDECODABLE)
        skipped += labels.shape[0] - len(decoded)
        if len(decoded) == 0:
            continue
        if len(decoded) < labels.shape[0]:
            keep = paddle.to_tensor(decoded)
            slow, fast, labels = (paddle.gather(x, keep) for x in (slow, fast, labels))
        probs = model(model_inputs(slow, fast, cfg))
        loss_sum += F.nll_loss(paddle.log(probs.clip(min=1e-12)), labels.reshape([-1]), reduction='sum').item()
        e1, e5 = topk_errors(probs.numpy(), labels.numpy())
        err1, err5, count = err1 + e1, err5 + e5, count + probs.shape[0]
    loss_sum, err1, err5, count, skipped = distributed.all_reduce_sum([loss_sum, err1, err5, count, skipped], world)
    model.train()
    return loss_sum / max(count, 1), err1 / max(count, 1), err5 / max(count, 1), int(count), int(skipped)


def agree_on_resume(args, rank: int, world: int) -> Optional[str]:
    """The checkpoint every rank resumes from (None: from scratch). Rank 0 picks it (the newest complete one in
    ``--save_dir``, or ``--resume_epoch``'s) and tells the others, so no rank decides by its own view of the folder;
    a rank that cannot read it stops every rank with CheckpointError naming the path (``--save_dir`` must be a
    folder every node sees)."""
    if not (args.resume or args.resume_epoch is not None):
        return None
    epoch = -1.0  # from scratch
    if rank == 0:
        try:
            epoch = float(complete_epoch(find_resume_checkpoint(args.save_dir, args.resume_epoch)))
        except FileNotFoundError as error:
            if args.resume_epoch is not None:
                epoch = -2.0
                logger.error('%s', error)
            else:  # a restart loop may always pass --resume
                logger.warning('%s: starting from scratch', error)
    epoch = int(distributed.all_reduce_max(epoch if rank == 0 else -3.0, world))
    if epoch == -2:
        raise FileNotFoundError(f'--resume_epoch {args.resume_epoch}: no complete checkpoint in {args.save_dir} '
                                '(as rank 0 sees it)')
    if epoch < 0:
        return None
    prefix = checkpoint_prefix(args.save_dir, epoch)
    readable = os.path.isfile(prefix + '.pdparams') and os.path.isfile(prefix + '.pdopt')
    unreadable = distributed.all_reduce_max(0.0 if readable else rank + 1.0, world)
    if unreadable:
        raise CheckpointError(f'rank {int(unreadable) - 1} cannot read {os.path.basename(prefix)}.pdparams/.pdopt, '
                              'which rank 0 resumes from' + ('' if readable else f', in {args.save_dir}') +
                              ': --save_dir must be a folder every node sees (a shared file system)')
    return prefix


def main() -> None:
    cfg, args = parse_args('train')
    t = cfg.TRAIN
    use_gpu = t.use_gpu if args.use_gpu is None else args.use_gpu
    setup_logging()  # before setup, which logs
    device, rank, world = distributed.setup(use_gpu, args.use_data_parallel)
    if rank == 0:
        os.makedirs(args.save_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(args.save_dir, 'train.log'))
        handler.setFormatter(logging.getLogger().handlers[0].formatter)
        logging.getLogger().addHandler(handler)
    log_config(cfg, 'Train')
    try:
        micro_batch = distributed.split_batch(t.batch_size, world * t.accumulate_steps, 'TRAIN.batch_size',
                                              'ranks x TRAIN.accumulate_steps')
        valid_batch = distributed.split_batch(cfg.VALID.batch_size, world, 'VALID.batch_size')
    except ValueError as error:
        sys.exit(f'error: {error}')
    amp = t.use_amp and device.startswith('gpu')
    if t.use_amp and not amp:
        logger.info('TRAIN.use_amp: no GPU, training in float32')
    logger.info('device %s, rank %d of %d, batch %d = %d ranks x %d x %d accumulation steps', device, rank, world,
                t.batch_size, world, micro_batch, t.accumulate_steps)

    prefix = agree_on_resume(args, rank, world)
    seed = args.seed
    if prefix:  # the data order and augmentation continue the checkpoint's run, whatever --seed says now
        seed = check_resumable(prefix, cfg.MODEL).get('seed', args.seed)
        if seed != args.seed:
            logger.warning('--seed %d ignored: resuming %s continues its run\'s seed %d', args.seed, prefix, seed)
    paddle.seed(seed)
    train_set, sampler, train_loader, valid_set, valid_loader = build_loaders(
        cfg, seed, rank, world, micro_batch, valid_batch)
    steps_per_epoch = len(train_loader) // t.accumulate_steps
    if steps_per_epoch == 0:
        sys.exit(f'error: {len(train_set)} training videos make no full batch of {t.batch_size}')
    logger.info('%d training videos (%d steps per epoch), %d validation videos', len(train_set), steps_per_epoch,
                len(valid_set))

    model = build_model(cfg)
    if rank == 0:
        logger.info(model_summary(model, cfg))
    if args.weights:
        loaded, skipped, reinitialised = load_weights(model, args.weights, strict=False)
        logger.info('--weights %s: loaded %d tensors; re-initialised %d (%s); skipped %d from the file (%s)',
                    args.weights, len(loaded), len(reinitialised), ', '.join(reinitialised) or '-', len(skipped),
                    ', '.join(skipped) or '-')
    optimizer, scheduler = build_optimizer(cfg, model, steps_per_epoch)
    start_epoch, global_step, best_err1 = 0, 0, 1.0
    scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 16) if amp and t.amp_dtype == 'float16' else None
    if prefix:
        meta = load_checkpoint(prefix, model, optimizer, scaler)
        start_epoch, global_step, best_err1 = meta['epoch'] + 1, meta['global_step'], meta['best_err1']
        logger.info('resumed from %s: epoch %d done, step %d, lr %.6g, seed %d%s', prefix, meta['epoch'],
                    global_step, scheduler(), seed,
                    f', float16 loss scale {scaler.state_dict().get("scale")}' if scaler else '')
    parallel_model = paddle.DataParallel(model) if world > 1 else model

    writer = None
    if args.use_visualdl and rank == 0:
        from visualdl import LogWriter
        writer = LogWriter(logdir=args.vd_logdir)

    run_start, iterations_run = time.perf_counter(), 0
    for epoch in range(start_epoch, t.epoch):
        paddle.seed(seed * 100003 + epoch)  # dropout draws per epoch: a resumed epoch repeats them exactly
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        parallel_model.train()
        epoch_start = tick = time.perf_counter()
        totals = np.zeros(4)  # loss sum, top-1 errors, top-5 errors, samples
        window = np.zeros(7)  # the same since the last log line, + batch time, reader time, iterations
        optimizer.clear_grad()
        for it, (slow, fast, labels, _) in enumerate(train_loader):
            reader_time = time.perf_counter() - tick
            with paddle.amp.auto_cast(enable=amp, dtype=t.amp_dtype, level='O1'):
                logits = parallel_model(model_inputs(slow, fast, cfg))
                loss = F.cross_entropy(logits.astype('float32'), labels)
            loss_value = loss.item()
            # every rank learns of a non-finite loss on any rank in the same step and stops with the same message,
            # instead of waiting in the next all-reduce for a rank that has exited (on GPUs, until NCCL times out)
            first_bad = world - distributed.all_reduce_max(0.0 if math.isfinite(loss_value) else world - rank, world)
            if first_bad < world:
                raise FloatingPointError(f'loss is not finite on rank {int(first_bad)} at epoch {epoch}, iteration '
                                         f'{it}: stopping every rank before any checkpoint of it is written (lower '
                                         'TRAIN.base_lr?)')
            scaled = loss / t.accumulate_steps
            (scaler.scale(scaled) if scaler else scaled).backward()
            if (it + 1) % t.accumulate_steps == 0:
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.clear_grad()
                scheduler.step()
                global_step += 1
            e1, e5 = topk_errors(logits.astype('float32').numpy(), labels.numpy())
            n = labels.shape[0]
            totals += (loss_value * n, e1, e5, n)
            window += (loss_value * n, e1, e5, n, time.perf_counter() - tick, reader_time, 1)
            tick = time.perf_counter()
            iterations_run += 1
            if (it + 1) % args.log_interval == 0 or it + 1 == len(train_loader):
                remaining = (t.epoch - epoch) * len(train_loader) - (it + 1)
                eta = (tick - run_start) / iterations_run * remaining  # precise BN and validation not included
                loss_avg, err1_avg, err5_avg = window[:3] / window[3]
                ips = window[3] * world / window[4]
                logger.info('[Epoch %d, iter %d/%d] loss %.5f, err1 %.5f, err5 %.5f, lr %.6g, batch_cost %.3f s, '
                            'reader_cost %.3f s, ips %.2f clips/s, ETA %d:%02d:%02d', epoch, it + 1,
                            len(train_loader), loss_avg, err1_avg, err5_avg, optimizer.get_lr(),
                            window[4] / window[6], window[5] / window[6], ips, eta // 3600, eta % 3600 // 60, eta % 60)
                if writer:
                    for tag, value in (('loss', loss_avg), ('top1_err', err1_avg), ('top5_err', err5_avg),
                                       ('lr', optimizer.get_lr()), ('ips', ips)):
                        writer.add_scalar(f'train/{tag}', value, global_step)
                window[:] = 0
        loss_sum, err1, err5, count = distributed.all_reduce_sum(list(totals), world)
        bad = distributed.all_reduce_sum([train_set.failures.take_count()], world)[0]
        logger.info('[Epoch %d end] avg_loss %.5f, avg_err1 %.5f, avg_err5 %.5f, undecodable videos replaced %d, '
                    'epoch_cost %.1f s', epoch, loss_sum / count, err1 / count, err5 / count, bad,
                    time.perf_counter() - epoch_start)
        if writer:
            for tag, value in (('loss', loss_sum / count), ('top1_err', err1 / count), ('top5_err', err5 / count)):
                writer.add_scalar(f'train_epoch/{tag}', value, epoch)

        last = epoch + 1 == t.epoch
        if world > 1:  # DataParallel averaged every gradient: the trainable parameters must agree exactly
            logger.info('ranks in sync after the steps: max trainable-parameter difference to rank 0 is %.3g',
                        distributed.max_rank_difference(model, world, trainable_only=True))
        v = cfg.VALID
        if v.use_preciseBN and (epoch % v.preciseBN_interval == 0 or last):
            used = precise_bn(model, train_loader, min(v.num_batches_preciseBN, len(train_loader)), world, cfg)
            logger.info('precise BN: statistics of %d batches', used)
        else:
            distributed.average_buffers(model, world)  # one model on every rank
        if (epoch + 1) % args.valid_interval == 0 or last:
            val_loss, val_err1, val_err5, val_count, val_skipped = validate(model, valid_loader, world, cfg)
            best_err1 = min(best_err1, val_err1)
            logger.info('[Val epoch %d] loss %.5f, err1 %.5f, err5 %.5f over %d videos (best err1 %.5f)%s', epoch,
                        val_loss, val_err1, val_err5, val_count, best_err1,
                        f'; {val_skipped} undecodable videos skipped (named in the warnings above)'
                        if val_skipped else '')
            if writer:
                for tag, value in (('loss', val_loss), ('top1_err', val_err1), ('top5_err', val_err5)):
                    writer.add_scalar(f'val/{tag}', value, epoch)
        if world > 1:
            logger.info('ranks in sync: max parameter and buffer difference to rank 0 is %.3g',
                        distributed.max_rank_difference(model, world))
        if rank == 0 and ((epoch + 1) % t.save_interval == 0 or last):
            # RNG state needs no saving: every epoch reseeds from (seed, epoch) and samples draw from (seed, epoch,
            # index), so the seed is all a resumed run needs to repeat the next epoch exactly.
            meta = dict(epoch=epoch, global_step=global_step, best_err1=best_err1, seed=seed,
                        config={section: dict(keys) for section, keys in cfg.items()})
            prefix = save_checkpoint(args.save_dir, epoch, model, optimizer, meta, scaler)
            logger.info('saved %s.pdparams/.pdopt', prefix)
    if writer:
        writer.close()
    logger.info('[TRAIN] training finished')


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, ListError, FloatingPointError, WeightsError, CheckpointError) as error:
        logger.error('%s', error)  # the user's to fix: no traceback
        sys.exit(1)
