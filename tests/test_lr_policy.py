import copy
import math

import numpy as np
import paddle
import pytest

from lr_policy import EpochLR, lr_at_epoch


@pytest.mark.parametrize('epoch, lr', [(0, 0.01), (10, 0.03434), (34, 0.092757), (98, 0.05), (150, 0.012986),
                                       (195, 6e-6)])
def test_recipe_values(recipe_cfg, epoch, lr):
    assert lr_at_epoch(recipe_cfg, epoch) == pytest.approx(lr, abs=5e-7)


def test_warmup_is_linear_and_joins_the_cosine_continuously(recipe_cfg):
    joint = recipe_cfg.TRAIN.warmup_epochs
    below, at = lr_at_epoch(recipe_cfg, joint - 1e-9), lr_at_epoch(recipe_cfg, joint)
    assert below == pytest.approx(at, abs=1e-9)
    warm = [lr_at_epoch(recipe_cfg, e) for e in np.linspace(0, joint, 9, endpoint=False)]
    assert np.allclose(np.diff(warm), np.diff(warm)[0])  # a straight line
    assert np.all(np.diff(warm) > 0)
    cos = [lr_at_epoch(recipe_cfg, e) for e in np.linspace(joint, recipe_cfg.TRAIN.epoch, 50)]
    assert np.all(np.diff(cos) < 0) and cos[-1] == pytest.approx(0.0, abs=1e-12)
    assert lr_at_epoch(recipe_cfg, 98) == pytest.approx(0.1 * (math.cos(math.pi * 98 / 196) + 1) / 2)


def test_scheduler_follows_the_fractional_epoch(recipe_cfg):
    sched = EpochLR(recipe_cfg)
    assert sched() == pytest.approx(0.01)  # epoch 0: the warmup's start
    seen = []
    for position in np.linspace(0, 3, 23):
        sched.step(position)
        seen.append(sched())
    assert seen == pytest.approx([lr_at_epoch(recipe_cfg, e) for e in np.linspace(0, 3, 23)], rel=1e-12)
    assert len(set(seen)) == len(seen)  # changes every iteration, not every epoch


def test_scheduler_state_round_trip_through_the_optimizer(recipe_cfg):
    """The scheduler state travels in the optimizer's state_dict."""
    layer = paddle.nn.Linear(3, 2)
    sched = EpochLR(recipe_cfg)
    opt = paddle.optimizer.Momentum(learning_rate=sched, momentum=0.9, parameters=layer.parameters())
    sched.step(40 / 11)
    state = opt.state_dict()

    sched2 = EpochLR(recipe_cfg)
    opt2 = paddle.optimizer.Momentum(learning_rate=sched2, momentum=0.9, parameters=layer.parameters())
    assert sched2() != sched()
    opt2.set_state_dict(state)
    assert sched2.last_epoch == pytest.approx(40 / 11) and opt2.get_lr() == sched()


def test_steps_policy_warms_up_into_piecewise_constant_steps(recipe_cfg):
    """PaddleVideo's CustomWarmupPiecewiseDecay of slowfast_multigrid.yaml without multigrid: 0.1 x 0.1^k from
    epochs 0, 94, 154, 196 of 239, the 34-epoch warmup rising to 0.1 from 0.01."""
    cfg = copy.deepcopy(recipe_cfg)
    cfg.TRAIN.update(lr_policy='steps', lr_steps=[0, 94, 154, 196], epoch=239)
    expected = {0: 0.01, 17: 0.055, 34: 0.1, 93.99: 0.1, 94: 0.01, 153.9: 0.01, 154: 0.001, 196: 1e-4, 238.9: 1e-4}
    assert {e: lr_at_epoch(cfg, e) for e in expected} == pytest.approx(expected, rel=1e-12)


def test_steps_policy_of_a_multigrid_run_follows_its_stages(recipe_cfg):
    """The long cycle: the LR of each stage is gamma^step x its batch factor (linear scaling), the fine-tuning stage
    split in halves; the warmup rises to the first stage's 8 x base_lr (PySlowFast's get_lr_at_epoch)."""
    from multigrid import training_plan
    cfg = copy.deepcopy(recipe_cfg)
    cfg.TRAIN.update(lr_policy='steps', lr_steps=[0, 94, 154, 196], epoch=239)
    cfg.MULTIGRID.update(long_cycle=True, short_cycle=True)
    plan = training_plan(cfg)
    assert plan.max_epoch == 358
    assert lr_at_epoch(cfg, 0) == pytest.approx(0.01) and lr_at_epoch(cfg, 34) == pytest.approx(0.8)
    assert lr_at_epoch(cfg, 17) == pytest.approx(0.405)
    expected = {72.9: 0.8, 73: 0.4, 110: 0.2, 142: 0.1, 158: 0.08, 329: 0.001, 342.9: 0.001, 343: 1e-4,
                357.9: 1e-4}
    assert {e: lr_at_epoch(cfg, e) for e in expected} == pytest.approx(expected, rel=1e-12)


def test_short_cycle_alone_stretches_epochs_and_steps(recipe_cfg):
    from multigrid import training_plan
    cfg = copy.deepcopy(recipe_cfg)
    cfg.TRAIN.update(lr_policy='steps', lr_steps=[0, 94, 154, 196], epoch=239)
    cfg.MULTIGRID.short_cycle = True
    plan = training_plan(cfg)
    assert plan.max_epoch == 358 and plan.lr_boundaries == [0, 141, 231, 294]
    assert [stage[1:] for stage in plan.stages] == [(1, 32, 224, 358)]
    cfg.TRAIN.lr_policy = 'cosine'
    assert lr_at_epoch(cfg, 179) == pytest.approx(0.05)  # half of the stretched cosine


def test_head_lr_scale_scales_only_the_classifier_update():
    import paddle.nn.functional as F

    from config_utils import parse_config
    from helpers import ROOT
    from config_utils import input_shapes
    from model import build_model
    from lr_policy import build_optimizer

    rng = np.random.default_rng(0)
    deltas = {}
    for scale in (1.0, 0.1):
        cfg = parse_config(f'{ROOT}/configs/slowfast_demo.yaml',
                           [f'TRAIN.head_lr_scale={scale}', 'MODEL.width_per_group=8'])
        paddle.seed(0)
        model = build_model(cfg)
        before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        optimizer, _ = build_optimizer(cfg, model)
        if not deltas:
            clips = [rng.standard_normal([2] + s).astype(np.float32) for s in input_shapes(cfg, cfg.MODEL.crop_size)]
        loss = F.cross_entropy(model([paddle.to_tensor(c) for c in clips]), paddle.to_tensor([0, 3]))
        loss.backward()
        optimizer.step()
        deltas[scale] = {k: v.numpy() - before[k] for k, v in model.state_dict().items()}
    head, stem = 'head.projection.weight', 's1.pathway1_stem._conv.weight'
    assert np.abs(deltas[1.0][head]).max() > 0 and np.abs(deltas[1.0][stem]).max() > 0
    for name, factor in ((head, 0.1), (stem, 1.0)):  # float32 weight - weight: compare against the largest step
        np.testing.assert_allclose(deltas[0.1][name], factor * deltas[1.0][name], rtol=0,
                                   atol=1e-3 * np.abs(deltas[1.0][name]).max())
