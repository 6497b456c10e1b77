import math

import numpy as np
import paddle
import pytest

from lr_policy import WarmupCosineLR, lr_at_epoch


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


def test_scheduler_steps_per_iteration(recipe_cfg):
    iters = 7
    sched = WarmupCosineLR(recipe_cfg, iters)
    seen = []
    for _ in range(3 * iters + 2):
        seen.append(sched())
        sched.step()
    expected = [lr_at_epoch(recipe_cfg, it / iters) for it in range(3 * iters + 2)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert len(set(seen)) == len(seen)  # changes every iteration, not every epoch


def test_scheduler_state_round_trip_through_the_optimizer(recipe_cfg):
    """A resumed run continues the schedule exactly: the scheduler state travels in the optimizer's state_dict."""
    layer = paddle.nn.Linear(3, 2)
    sched = WarmupCosineLR(recipe_cfg, 11)
    opt = paddle.optimizer.Momentum(learning_rate=sched, momentum=0.9, parameters=layer.parameters())
    for _ in range(40):
        sched.step()
    state = opt.state_dict()

    sched2 = WarmupCosineLR(recipe_cfg, 11)
    opt2 = paddle.optimizer.Momentum(learning_rate=sched2, momentum=0.9, parameters=layer.parameters())
    assert sched2() != sched()
    opt2.set_state_dict(state)
    assert sched2.last_epoch == 40 and opt2.get_lr() == sched()
    for _ in range(25):
        sched.step()
        sched2.step()
        assert sched2() == sched()
    assert sched() == pytest.approx(lr_at_epoch(recipe_cfg, 65 / 11))


def test_scheduler_rejects_empty_epochs(recipe_cfg):
    with pytest.raises(ValueError, match='iters_per_epoch'):
        WarmupCosineLR(recipe_cfg, 0)


def test_head_lr_scale_scales_only_the_classifier_update():
    import paddle.nn.functional as F

    from config_utils import parse_config
    from conftest import ROOT
    from config_utils import input_shapes
    from model import build_model
    from train import build_optimizer

    rng = np.random.default_rng(0)
    deltas = {}
    for scale in (1.0, 0.1):
        cfg = parse_config(f'{ROOT}/slowfast-demo.yaml', [f'TRAIN.head_lr_scale={scale}', 'MODEL.width_per_group=8'])
        paddle.seed(0)
        model = build_model(cfg)
        before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        optimizer, _ = build_optimizer(cfg, model, steps_per_epoch=10)
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
