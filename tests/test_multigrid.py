"""Multigrid training: multigrid.py against PySlowFast's MultigridSchedule for PaddleVideo's slowfast_multigrid.yaml
(SlowFast 8x8), the config keys, the short-cycle sampler, the datasets at a stage's shape, sub-batch BN, and train.py
through stage changes (logs, loader rebuilds, resume at the end of and inside an epoch, 2 CPU ranks)."""
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import paddle
import pytest

from config_utils import ConfigError, parse_config
from multigrid import (ShortCycleBatchSampler, Stage, bn_splits, cycle_iterations, long_cycle_schedule,
                       sampling_rates, short_cycle, stage_at, stage_batches, step_lr, training_plan)

from helpers import ROOT, small_demo_lists, tiny_train_overrides, tool_path, wait_for_line

LONG = [[0.25, 0.7071], [0.5, 0.7071], [0.5, 1], [1, 1]]
SHORT = [0.5, 0.7071]


def test_long_cycle_schedule_of_the_8x8_multigrid_recipe():
    """32 frames, 224 crops, steps [0, 94, 154, 196] of 239 epochs, epoch factor 1.5: PySlowFast's schedule
    (utils/multigrid.py run on these values) is 13 stages over 358 epochs."""
    schedule = long_cycle_schedule(32, 224, [0, 94, 154, 196], 239, LONG, 1.5, SHORT)
    cycle = [(8, 8, 158), (4, 16, 158), (2, 16, 224), (1, 32, 224)]  # (batch factor, frames, crop)
    ends = [73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 358]
    expected = [Stage(k // 4, *cycle[k % 4], end) for k, end in enumerate(ends[:12])] + [Stage(3, 1, 32, 224, 358)]
    assert schedule == expected
    boundaries, lrs = step_lr(schedule, 0.1)
    assert boundaries == [0, 73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 343]
    assert lrs == pytest.approx([8, 4, 2, 1, 0.8, 0.4, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01, 0.01, 0.001], rel=1e-12)
    assert stage_at(schedule, 0) == schedule[0] and stage_at(schedule, 73) == schedule[1]
    assert stage_at(schedule, 357) == schedule[-1] and stage_at(schedule, 400) == schedule[-1]


def test_without_the_short_cycle_the_stages_weigh_only_their_own_batch():
    schedule = long_cycle_schedule(32, 224, [0, 94, 154, 196], 239, LONG, 1.0)
    assert [s.batch_factor for s in schedule[:4]] == [8, 4, 2, 1] and schedule[-1][1:4] == (1, 32, 224)
    # each cycle's epochs follow its batch factor: 8:4:2:1 of every step
    first = [schedule[0].end_epoch] + [b.end_epoch - a.end_epoch for a, b in zip(schedule[:3], schedule[1:4])]
    assert [round(e / first[3]) for e in first] == [8, 4, 2, 1]


def test_short_cycle_iterations_scale_the_batch_with_the_crop_area():
    assert short_cycle(8, 224, 224, SHORT) == [(32, 112), (16, 158), (8, 224)]
    assert short_cycle(64, 158, 224, SHORT) == [(128, 112), (64, 158), (64, 158)]  # (158/112)^2 = 1.99 -> 2


def test_the_shipped_multigrid_config_trains_pyslowfasts_stages_and_batches():
    """configs/slowfast_r50_8x8_multigrid.yaml on 8 ranks (8 clips each at the full shape): the 13 stages above, and
    per stage PySlowFast's batches: TRAIN.BATCH_SIZE = 64 x batch factor, ShortCycleBatchSampler's per-GPU
    [b x round((S / (f S0))^2) for f in the short factors] + [b], BN sub-batches of 8 clips
    (update_long_cycle's NUM_SPLITS), and a frame stride drawn up to 2 x 32 / T."""
    cfg = parse_config(os.path.join(ROOT, 'configs', 'slowfast_r50_8x8_multigrid.yaml'))
    plan = training_plan(cfg)
    assert plan.max_epoch == 358 and len(plan.stages) == 13
    assert [s.end_epoch for s in plan.stages] == [73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 358]
    assert plan.lr_boundaries == [0, 73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 343]
    per_rank = {(8, 158): [(128, 112), (64, 158), (64, 158)], (16, 158): [(64, 112), (32, 158), (32, 158)],
                (16, 224): [(64, 112), (32, 158), (16, 224)], (32, 224): [(32, 112), (16, 158), (8, 224)]}
    for stage in plan.stages:
        cycle = stage_batches(cfg, stage, 8)
        assert cycle == per_rank[stage.frames, stage.crop]
        assert cycle[-1][0] * 8 == 64 * stage.batch_factor  # the global batch of the stage's own shape
        assert [b // bn_splits(b, cfg.TRAIN.bn_group) for b, _ in cycle] == [8, 8, 8]
        assert sampling_rates(cfg, stage.frames) == (2, 2 * 32 // stage.frames)
    assert cfg.TEST.target_size == 224 and cfg.MODEL.alpha == 4 and cfg.MODEL.fusion_kernel_size == 7
    assert cfg.VALID.preciseBN_interval == 20


def test_short_cycle_alone_and_no_multigrid_keep_one_stage():
    cfg = parse_config(os.path.join(ROOT, 'configs', 'slowfast_r50_8x8_multigrid.yaml'), ['MULTIGRID.long_cycle=False'])
    plan = training_plan(cfg)
    assert plan.stages == [Stage(0, 1, 32, 224, 358)] and plan.lr_boundaries == [0, 141, 231, 294]
    assert stage_batches(cfg, plan.stages[0], 8) == [(32, 112), (16, 158), (8, 224)]
    plain = parse_config(os.path.join(ROOT, 'slowfast.yaml'))
    plan = training_plan(plain)
    assert plan.stages == [Stage(0, 1, 32, 224, 196)] and plan.lr_boundaries == []
    assert stage_batches(plain, plan.stages[0], 8) == [(8, 224)] and sampling_rates(plain, 32) == (2, 2)


@pytest.mark.parametrize('overrides, message', [
    (['MULTIGRID.long_cycle=True'], 'MULTIGRID.long_cycle needs TRAIN.lr_policy steps'),
    (['TRAIN.lr_policy=steps', 'TRAIN.lr_steps=[0, 200]'], r'TRAIN.lr_steps must start at 0 .* got \[0, 200\]'),
    (['TRAIN.lr_policy=step'], "TRAIN.lr_policy must be 'cosine' or 'steps'"),
    (['TRAIN.lr_policy=steps', 'TRAIN.lr_steps=[0, 94]', 'MULTIGRID.long_cycle=True',
      'MULTIGRID.long_cycle_factors=[[0.125, 1]]'], r'\[0.125, 1.0\]: 4 frames .* multiple of MODEL.alpha \(8\)'),
    (['MULTIGRID.long_cycle_factors=[[0.5, 2]]'], 'MULTIGRID.long_cycle_factors must be list of'),
    (['MULTIGRID.short_cycle=True', 'TRAIN.accumulate_steps=2'], 'TRAIN.accumulate_steps must be 1'),
    (['MULTIGRID.short_cycle=True', 'MULTIGRID.short_cycle_factors=[0.5]'], 'must be 2 crop factors'),
    (['MULTIGRID.long_cycles=True'], "unknown key 'MULTIGRID.long_cycles' \\(did you mean 'MULTIGRID.long_cycle'"),
])
def test_multigrid_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(os.path.join(ROOT, 'slowfast.yaml'), overrides)


def test_short_cycle_sampler_cycles_batch_and_crop_splits_ranks_and_resumes():
    cycle = [(4, 16), (2, 23), (1, 32)]
    ranks = [ShortCycleBatchSampler(list(range(37)), cycle, num_replicas=2, rank=r) for r in range(2)]
    seen = []
    for sampler in ranks:
        sampler.set_epoch(3)
        batches = list(sampler)
        assert len(batches) == len(sampler) == cycle_iterations(19, [4, 2, 1]) == 7  # 19 each: 7 + 7 + 4, 1 dropped
        assert [len(b) for b in batches] == [4, 2, 1] * 2 + [4]
        assert all(crop == cycle[k % 3][1] for k, batch in enumerate(batches) for _, crop in batch)
        seen += [index for batch in batches for index, _ in batch]
    # 37 videos padded to 38 (one repeated), split 19 / 19, one dropped per rank: 36 items, 35 or 36 distinct
    assert len(seen) == 36 and set(seen) <= set(range(37)) and len(set(seen)) >= 35
    again = ShortCycleBatchSampler(list(range(37)), cycle, num_replicas=2, rank=0)
    again.set_epoch(3)
    full = list(again)
    again.set_epoch(3)
    again.skip = 5  # a resumed epoch: the same batches from the sixth on, once
    assert list(again) == full[5:]
    again.set_epoch(3)
    assert list(again) == full
    again.set_epoch(4)
    assert list(again) != full


def test_datasets_at_a_stage_shape(demo_lists, monkeypatch):
    """A stage's clips: its frames (slow = frames / alpha) and crop, a short-cycle item's own crop, the frame stride
    drawn from 2 to 2 x 8 / 4, the jitter's short sides scaled by crop / 64; validation stays at the recipe's."""
    import kinetics_dataset
    from kinetics_dataset import KineticsDataset
    cfg = parse_config(os.path.join(ROOT, 'slowfast-single.yaml'), tiny_train_overrides(*demo_lists))
    spans, sides = [], []
    original_indices, original_read = kinetics_dataset.clip_frame_indices, kinetics_dataset.VideoReader.read_sampled

    def indices(length, clip_size, num_frames, position, rng=None):
        spans.append((clip_size, num_frames))
        return original_indices(length, clip_size, num_frames, position, rng)

    def read(self, sample, short_side):
        sides.append(short_side)
        return original_read(self, sample, short_side)

    monkeypatch.setattr(kinetics_dataset, 'clip_frame_indices', indices)
    monkeypatch.setattr(kinetics_dataset.VideoReader, 'read_sampled', read)
    stage = KineticsDataset(cfg, 'train', shape=(4, 45))
    slow, fast, label, index = stage[3]
    assert slow.shape == (3, 1, 45, 45) and fast.shape == (3, 4, 45, 45) and index[0] == 3
    slow, fast, _, _ = stage[(5, 32)]
    assert slow.shape == (3, 1, 32, 32) and fast.shape == (3, 4, 32, 32)
    # the jitter [72, 80] scaled by crop / 64: [51, 56] at 45 px, [36, 40] at 32 px (the same field of view)
    assert sides[0] in range(51, 57) and sides[1] in range(36, 41)
    for i in range(30):
        stage.set_epoch(i)
        stage[(i % 16, 32)]
    fps = 30.0  # the demo videos' (MODEL.target_fps too)
    strides = {round(span * 30.0 / fps / frames) for span, frames in spans}
    assert strides == {2, 3, 4}
    plain = KineticsDataset(cfg, 'train')
    slow, fast, _, _ = plain[3]
    assert slow.shape == (3, 2, 64, 64) and fast.shape == (3, 8, 64, 64)
    valid = KineticsDataset(cfg, 'valid', shape=(4, 45))  # a stage never changes validation
    assert valid[0][1].shape == (3, 8, 64, 64)


def test_sub_batch_bn_normalises_each_sub_batch_and_keeps_the_statistics_its_ranks_would():
    from model_utils import SubBatchNorm3D, batch_norm, set_bn_splits
    bn = batch_norm(3)
    assert isinstance(bn, SubBatchNorm3D) and isinstance(bn, paddle.nn.BatchNorm3D)
    assert list(bn.state_dict()) == list(paddle.nn.BatchNorm3D(3).state_dict())  # same names: checkpoints load
    bn.weight.set_value(paddle.to_tensor([1.0, 2.0, 0.5]))
    bn.bias.set_value(paddle.to_tensor([0.0, 1.0, -1.0]))
    layer = paddle.nn.Sequential(bn)
    set_bn_splits(layer, 3)
    x = paddle.to_tensor(np.random.default_rng(0).normal(2.0, 3.0, (6, 3, 2, 4, 4)).astype('float32'))
    x.stop_gradient = False
    bn.train()
    y = bn(x)
    xn = x.numpy()
    expected = np.empty_like(xn)
    for b in range(3):  # clips 2b, 2b + 1: sub-batch b (a rank's run of a sampler's batch)
        part = xn[2 * b:2 * b + 2]
        mean, var = part.mean((0, 2, 3, 4), keepdims=True), part.var((0, 2, 3, 4), keepdims=True)
        expected[2 * b:2 * b + 2] = ((part - mean) / np.sqrt(var + 1e-5) * np.array([1.0, 2.0, 0.5]).reshape(1, 3, 1, 1, 1)
                          + np.array([0.0, 1.0, -1.0]).reshape(1, 3, 1, 1, 1))
    assert np.abs(y.numpy() - expected).max() < 1e-4
    y.sum().backward()
    assert x.grad is not None and bn.weight.grad is not None
    # running statistics: momentum 0.9 towards the mean of the sub-batches' means and (population) variances ...
    parts = [xn[2 * b:2 * b + 2] for b in range(3)]
    np.testing.assert_allclose(bn._mean.numpy(), 0.1 * np.mean([p.mean((0, 2, 3, 4)) for p in parts], 0), rtol=1e-4)
    np.testing.assert_allclose(bn._variance.numpy(), 0.9 + 0.1 * np.mean([p.var((0, 2, 3, 4)) for p in parts], 0),
                               rtol=1e-4)
    # ... which is what 3 ranks' plain BNs, one sub-batch each, hold on average (distributed.average_buffers)
    ranks = [paddle.nn.BatchNorm3D(3) for _ in range(3)]
    for rank, part in zip(ranks, parts):
        rank.train()
        rank(paddle.to_tensor(part))
    for name in ('_mean', '_variance'):
        average = np.mean([getattr(rank, name).numpy() for rank in ranks], 0)
        assert np.abs(getattr(bn, name).numpy() - average).max() < 1e-6
    bn.eval()  # eval: a plain BN of the running statistics
    plain = paddle.nn.BatchNorm3D(3)
    plain.set_state_dict(bn.state_dict())
    plain.eval()
    assert np.abs(bn(x).numpy() - plain(x).numpy()).max() < 1e-6
    set_bn_splits(layer, 4)
    bn.train()
    with pytest.raises(ValueError, match='6 clips does not split into 4'):
        bn(x)


def test_64_clips_in_8_accumulation_steps_train_as_8_groups_of_8_that_is_as_8_ranks():
    """The recipe's 64 clips on one rank: 8 accumulation steps of 8 clips (BN statistics deferred to the step) give
    the gradients and BN running statistics of one batch of 64 in 8 BN groups, which are those of 8 ranks of 8
    clips each averaged (test_sub_batch_bn..., and tests/test_train.py on real ranks)."""
    from helpers import TINY
    from model import build_model
    from model_utils import defer_bn_statistics, flush_bn_statistics, set_bn_splits

    cfg = parse_config(os.path.join(ROOT, 'slowfast.yaml'), ['MODEL.num_classes=5', 'MODEL.dropout_rate=0'] + TINY)
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 1, (64, 3, t, 64, 64)).astype('float32') for t in (2, 8)]
    labels = rng.integers(0, 5, (64, 1))
    results = []
    for accumulate in (False, True):
        paddle.seed(0)
        model = build_model(cfg)
        model.train()
        if accumulate:
            defer_bn_statistics(model, True)
            for k in range(8):  # micro-batch k: clips 8k..8k+7, one BN group
                part = slice(8 * k, 8 * k + 8)
                loss = paddle.nn.functional.cross_entropy(model([paddle.to_tensor(c[part]) for c in clips]),
                                                          paddle.to_tensor(labels[part]))
                (loss / 8).backward()
            flush_bn_statistics(model)
        else:
            set_bn_splits(model, 8)
            loss = paddle.nn.functional.cross_entropy(model([paddle.to_tensor(c) for c in clips]),
                                                      paddle.to_tensor(labels))
            loss.backward()
        grads = {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}
        buffers = {k: v.numpy() for k, v in model.state_dict().items() if '_mean' in k or '_variance' in k}
        results.append((grads, buffers))
    (g1, b1), (g2, b2) = results
    assert g1.keys() == g2.keys() and len(g1) > 50 and b1.keys() == b2.keys() and len(b1) > 50
    assert max(float(np.abs(g1[k] - g2[k]).max()) for k in g1) <= 1e-5
    assert max(float(np.abs(b1[k] - b2[k]).max()) for k in b1) <= 1e-5
    assert max(float(np.abs(b1[k]).max()) for k in b1 if '_mean' in k) > 1e-3  # the statistics did move


def test_bn_splits_keep_at_least_the_base_size():
    assert [bn_splits(b, 8) for b in (4, 8, 12, 16, 24, 64, 128)] == [1, 1, 1, 2, 3, 8, 16]


# ---- train.py through stage changes --------------------------------------------------------------------------------

ENV = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')
# 32 videos, micro-batch 2: stage 1 (epochs 0-2) 4 frames x 45 px, batch factor 4, short cycle [16@32, 8@45, 8@45]:
# 3 iterations; stages 2-3 (epochs 3-5) the full 8 x 64, [8@32, 4@45, 2@64]: 6 iterations.
MULTIGRID = ['TRAIN.lr_policy=steps', 'TRAIN.lr_steps=[0, 3]', 'MULTIGRID.long_cycle=True',
             'MULTIGRID.short_cycle=True', 'MULTIGRID.long_cycle_factors=[[0.5, 0.7071], [1, 1]]',
             'TRAIN.bn_group=2']


@pytest.fixture(scope='module')
def mg_lists(tmp_path_factory):
    return small_demo_lists(tmp_path_factory.mktemp('mg_demo'), 8)


def mg_overrides(lists, *extra):
    return [a for o in tiny_train_overrides(*lists, epochs=4) + ['TRAIN.batch_size=2'] + MULTIGRID + list(extra)
            for a in ('-o', o)]


def mg_train(lists, save_dir, *args, overrides=(), expect=0):
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--config', os.path.join(ROOT, 'slowfast-single.yaml'),
               '--use_gpu', 'False', '--save_dir', str(save_dir), '--log_interval', '1'] + mg_overrides(
                   lists, *overrides) + list(args)
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def weights(path):
    return {k: v.numpy() for k, v in paddle.load(str(path)).items()}


def max_difference(a, b):
    wa, wb = weights(a), weights(b)
    return max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)


@pytest.fixture(scope='module')
def mg_straight(mg_lists, tmp_path_factory):
    folder = tmp_path_factory.mktemp('mg_straight')
    return folder, mg_train(mg_lists, folder)


@pytest.mark.slow
def test_a_multigrid_run_logs_its_stages_rebuilds_on_shape_changes_and_trains_at_each_shape(mg_straight):
    folder, log = mg_straight
    assert '3 stages, 6 epochs (TRAIN.epoch 4 x epoch_factor 1.5)' in log
    assert 'LR x base_lr [4.0, 1.0, 1.0, 0.1] from epochs [0, 3, 5, 5]' in log
    assert ('[Stage 1] stage 1/3, epochs 0-2: 4 frames x 32/45/45 px, global batch 16/8/8, BN statistics over 2/2/2 '
            'clips, 3 iterations per epoch; expected time per epoch 3 iterations (time per iteration not '
            'measured') in log
    assert '[Stage 2] stage 2/3, epochs 3-4: 8 frames x 32/45/64 px, global batch 8/4/2' in log
    assert '[Stage 3] stage 3/3, epochs 5-5' in log
    assert 'expected time per epoch ~' in log.split('[Stage 2]')[1].splitlines()[0]  # measured in stage 1
    assert log.count('training loader rebuilt') == 1  # stage 1 -> 2 changes the shape, 2 -> 3 does not
    assert '[Epoch 2, iter 3/3]' in log and '[Epoch 3, iter 6/6]' in log and '[Epoch 5, iter 6/6]' in log
    assert log.count('precise BN: statistics of 2 batches of 8 frames x 64 px') == 6  # every epoch, full shape
    assert '[Val epoch 5]' in log and '[TRAIN] training finished' in log
    assert paddle.load(str(folder / 'slowfast_epoch1.pdopt'))['meta']['stage'] == [4, [[16, 32], [8, 45], [8, 45]]]
    assert paddle.load(str(folder / 'slowfast_epoch4.pdopt'))['meta']['stage'] == [8, [[8, 32], [4, 45], [2, 64]]]
    # the LR of each stage (the log line after an epoch's last step shows the next epoch's start): base 0.05 x 4,
    # then x 1, then the fine-tuning step x 0.1
    assert 'lr 0.2, ' in log.split('[Epoch 1, iter 3/3]')[1].split('\n')[0]
    assert 'lr 0.05, ' in log.split('[Epoch 3, iter 1/6]')[1].split('\n')[0]
    assert 'lr 0.005, ' in log.split('[Epoch 5, iter 1/6]')[1].split('\n')[0]


@pytest.mark.slow
def test_resume_at_a_stage_change_and_inside_a_short_cycle_epoch(mg_lists, mg_straight, tmp_path):
    straight, _ = mg_straight
    # the end of stage 1's last epoch: the next epoch is stage 2's, at the full shape
    later = tmp_path / 'later'
    later.mkdir()
    for ext in ('pdparams', 'pdopt'):
        shutil.copy(straight / f'slowfast_epoch2.{ext}', later)
    log = mg_train(mg_lists, later, '--resume')
    assert 'resumed from' in log and 'epoch 2 done' in log and '[Stage 2] stage 2/3' in log
    assert '[Epoch 3, iter 1/6]' in log and '[Epoch 2,' not in log.split('resumed from')[1]
    assert max_difference(straight / 'slowfast_epoch5.pdparams', later / 'slowfast_epoch5.pdparams') <= 1e-5

    # inside epoch 1 (stage 1, the short cycle's batches): a mid-epoch checkpoint every 2 steps, kept by a stop
    inside = tmp_path / 'inside'
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--config', os.path.join(ROOT, 'slowfast-single.yaml'),
               '--use_gpu', 'False', '--save_dir', str(inside), '--log_interval', '1'] + mg_overrides(mg_lists)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    wait_for_line(inside / 'train.log', '[Epoch 1, iter 1/3]', process)
    process.send_signal(signal.SIGUSR1)
    out = process.communicate(timeout=300)[0]
    assert process.returncode == 75, out[-3000:]
    stopped = sorted(inside.glob('*_iter*.pdopt'))
    assert stopped, out[-3000:]  # stopped after the step the signal came in (epoch 1, iteration 2 or 3)
    meta = paddle.load(str(stopped[0]))['meta']
    assert meta['epoch'] == 1 and meta['stage'] == [4, [[16, 32], [8, 45], [8, 45]]]
    # the same checkpoint under another short cycle: its remaining batches do not exist there
    log = mg_train(mg_lists, inside, '--resume', overrides=['MULTIGRID.short_cycle_factors=[0.5, 0.5]'], expect=5)
    assert 'stopped inside epoch 1, trained at 4 frames with [batch, crop] per iteration' in log
    log = mg_train(mg_lists, inside, '--resume')
    assert f'at iteration {meta["iteration"]} of 3' in log and '[Epoch 1, iter 1/3]' not in log
    assert max_difference(straight / 'slowfast_epoch5.pdparams', inside / 'slowfast_epoch5.pdparams') <= 1e-5


@pytest.mark.slow
def test_two_cpu_ranks_train_through_the_stage_changes(mg_lists, tmp_path):
    logs = tmp_path / 'logs'
    result = subprocess.run(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir', str(tmp_path / 'ck')] +
                            mg_overrides(mg_lists), capture_output=True, text=True, timeout=600,
                            env=dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(logs)), cwd=ROOT)
    ranks = ''.join(path.read_text() for path in sorted(logs.glob('workerlog.*')))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + ranks[-4000:]
    log = (logs / 'workerlog.0').read_text()
    # 16 videos a rank, 1 clip a rank at the full shape: stage 1 [8@32, 4@45, 4@45] a rank = global 16/8/8
    assert '[Stage 1] stage 1/3, epochs 0-2: 4 frames x 32/45/45 px, global batch 16/8/8' in log
    assert '[Stage 2] stage 2/3, epochs 3-4: 8 frames x 32/45/64 px, global batch 8/4/2' in log
    assert '[Epoch 2, iter 3/3]' in log and '[Epoch 5, iter 6/6]' in log and log.count('training loader rebuilt') == 1
    differences = [float(v) for v in __import__('re').findall(r'max trainable-parameter difference to rank 0 is (\S+)',
                                                                log)]
    assert len(differences) == 6 and max(differences) == 0.0
    assert '[TRAIN] training finished' in log


def bench_multigrid():
    sys.path.insert(0, os.path.dirname(tool_path('benchmark_multigrid.py')))
    import benchmark_multigrid
    return benchmark_multigrid


def test_time_to_target_and_the_seeds_summary_on_made_up_curves():
    bm = bench_multigrid()
    curve = [dict(seconds=100, top1=0.5), dict(seconds=200, top1=0.9), dict(seconds=300, top1=0.95)]
    assert bm.time_to_target(curve, 0.9) == 200 and bm.time_to_target(curve, 0.5) == 100
    assert bm.time_to_target(curve, 0.96) is None and bm.time_to_target([], 0.1) is None
    assert bm.time_to_target([dict(seconds=5, top1=0.1 + 0.2)], 0.3) == 5  # a float top-1 equal to the target
    rows = [dict(variant='plain', seed=1, seconds=310.0, top1=0.95, epochs=25, iterations=750, curve=curve),
            dict(variant='multigrid', seed=1, seconds=190.0, top1=0.93, epochs=37, iterations=262,
                 curve=[dict(seconds=60, top1=0.6), dict(seconds=120, top1=0.94), dict(seconds=180, top1=0.93)]),
            dict(variant='plain', seed=2, seconds=300.0, top1=0.90, epochs=25, iterations=750,
                 curve=[dict(seconds=150, top1=0.7), dict(seconds=300, top1=0.90)]),
            dict(variant='multigrid', seed=2, seconds=200.0, top1=0.80, epochs=37, iterations=262,
                 curve=[dict(seconds=100, top1=0.75), dict(seconds=200, top1=0.80)])]
    summary = bm.summarize(rows, num_val=100)
    first = {(s['variant'], s['seed']): s for s in summary}
    # seed 1: the plain final top-1 0.95 within one of 100 videos -> 0.94, reached by multigrid at 120 s of plain's 310
    assert first['multigrid', 1]['times'] == {'plain_final': 120, '0.90': 120, '0.95': None}
    assert first['multigrid', 1]['ratios']['plain_final'] == pytest.approx(120 / 310)
    assert first['plain', 1]['times']['plain_final'] == 300 and first['plain', 1]['time_ratio'] == 1.0
    assert first['multigrid', 2]['times']['plain_final'] is None and first['plain', 2]['times']['0.90'] == 300
    mg = bm.spread([s['ratios']['plain_final'] for s in summary if s['variant'] == 'multigrid'])
    assert mg == dict(mean=pytest.approx(120 / 310), min=pytest.approx(120 / 310), max=pytest.approx(120 / 310),
                      reached=1, of=2)
    assert bm.spread([0.5, 0.7, None])['mean'] == pytest.approx(0.6) and bm.spread([None])['mean'] is None
    machine = dict(cpu='AMD EPYC', cores='2', paddle='3.3.1', OMP_NUM_THREADS='2', date='today')
    text = bm.table(dict(machine=machine, rows=rows, summary=summary, videos='4 videos'))
    assert '| 1 | multigrid | 37 | 262 | 190 s | 0.61x | 0.930 | 120 s (0.39x) | 120 s (0.39x) | not reached |' in text
    assert '| multigrid | 2 | 0.865 (0.800-0.930) | 0.64 (0.61-0.67) | 0.39 (0.39-0.39), 1 of 2 |' in text
    header = next(line for line in text.splitlines() if line.startswith('| seed |'))
    row = next(line for line in text.splitlines() if line.startswith('| 1 | multigrid |'))
    assert header.count('|') == row.count('|') == 11


def test_checkpoint_times_are_each_epoch_checkpoint_s_write_time(tmp_path):
    bm = bench_multigrid()
    for name, at in [('slowfast_epoch4', 1050.0), ('slowfast_epoch9', 1100.5), ('slowfast_epoch12_iter7', 1111.0)]:
        for ext in ('.pdparams', '.pdopt'):
            (tmp_path / (name + ext)).write_bytes(b'x')
            os.utime(tmp_path / (name + ext), (at, at))
    (tmp_path / 'train.log').write_text('')
    assert bm.checkpoint_times(str(tmp_path), 1000.0) == [(4, 50.0), (9, 100.5)]  # not the mid-epoch checkpoint


def test_the_curves_plot_is_a_png_with_a_line_per_run(tmp_path):
    import cv2

    bm = bench_multigrid()
    rows = [dict(variant=v, seed=s, curve=[dict(seconds=10.0 * k, top1=0.2 * k) for k in range(1, 5)])
            for v in ('plain', 'multigrid') for s in (1, 2)]
    bm.plot(rows, str(tmp_path / 'c.png'))
    image = cv2.imread(str(tmp_path / 'c.png'))
    assert image.shape == (450, 700, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 10


@pytest.mark.slow
def test_benchmark_multigrid_trains_scores_and_tabulates_each_variant(tmp_path):
    """tools/analysis/benchmark_multigrid.py at toy scale: 64 demo videos (a stage-1 batch of 64 needs them), 2 recipe
    epochs, one seed, a checkpoint every epoch; each variant's epochs and iterations are the ones its training logged,
    its curve eval.py's top-1 of each checkpoint at the checkpoint's time."""
    import json
    result = subprocess.run(
        [sys.executable, tool_path('benchmark_multigrid.py'), '--out', str(tmp_path / 'b'),
         '--train_per_class', '16', '--val_per_class', '1', '--crop', '32', '--variants', 'plain', 'multigrid',
         '--seeds', '7', '--score_every', '1',
         '-o', 'TRAIN.epoch=2', '-o', 'TRAIN.lr_steps=[0, 1]', '-o', 'TEST.num_ensemble_views=2',
         '--json', str(tmp_path / 'b.json')], capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {row['variant']: row for row in json.loads((tmp_path / 'b.json').read_text())['rows']}
    assert rows['plain']['epochs'] == 2 and rows['plain']['iterations'] == 2 * 8  # 64 videos / batch 8
    assert rows['multigrid']['epochs'] == 3  # 2 x epoch_factor 1.5
    mg_log = (tmp_path / 'b' / 'seed7' / 'multigrid' / 'train.log').read_text()
    assert '3 stages' in mg_log or 'stages, 3 epochs' in mg_log
    for name, row in rows.items():
        assert [p['epoch'] for p in row['curve']] == list(range(row['epochs']))
        seconds = [p['seconds'] for p in row['curve']]
        assert seconds == sorted(seconds) and 0 < seconds[-1] <= row['seconds']
        for point in row['curve']:
            scored = json.loads((tmp_path / 'b' / 'seed7' / name / f"eval_epoch{point['epoch']}" /
                                 'eval_result.json').read_text())
            assert point['top1'] == scored['top1'] and 0.0 <= point['top1'] <= 1.0
        assert row['top1'] == row['curve'][-1]['top1'] and row['seed'] == 7
    assert '| 7 | plain | 2 | 16 |' in result.stdout and '| 7 | multigrid | 3 |' in result.stdout
    assert '1.00x' in result.stdout and (tmp_path / 'b' / 'curves.png').stat().st_size > 1000
