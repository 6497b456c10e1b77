import math
import os

import numpy as np
import paddle
import pytest

from config_utils import input_shapes
from helpers import ROOT
from model import build_model, model_summary
from model_utils import count_flops, count_parameters


def clip(cfg, size, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [paddle.to_tensor(rng.standard_normal([batch] + shape).astype('float32'))
            for shape in input_shapes(cfg, size)]


def expected_names(blocks=(3, 4, 6, 3)):
    """Every state_dict key of the original Paddle port (spec 1.5), generated from its naming scheme."""
    bn = ('weight', 'bias', '_mean', '_variance')
    names = [f's1.pathway{p}_stem._conv.weight' for p in (0, 1)]
    names += [f's1.pathway{p}_stem._bn.{s}' for p in (0, 1) for s in bn]
    names += [f's{k}_fuse._conv_f2s.weight' for k in range(1, 5)]
    names += [f's{k}_fuse._bn.{s}' for k in range(1, 5) for s in bn]
    for stage, count in zip(range(2, 6), blocks):
        for p in (0, 1):
            block = f's{stage}.pathway{p}_res'
            names += [f'{block}0.branch1.weight'] + [f'{block}0.branch1_bn.{s}' for s in bn]
            for i in range(count):
                names += [f'{block}{i}.branch2.{c}.weight' for c in 'abc']
                names += [f'{block}{i}.branch2.{c}_bn.{s}' for c in 'abc' for s in bn]
    return set(names + ['head.projection.weight', 'head.projection.bias'])


# ---- the recipe network ------------------------------------------------------------------------------------------

def test_recipe_network_has_the_original_size_and_names(recipe_cfg):
    model = build_model(recipe_cfg)
    state = model.state_dict()
    assert set(state) == expected_names() and len(state) == 552
    assert round(count_parameters(model) / 1e6, 2) == 34.48
    assert sum(not p.stop_gradient for p in model.parameters()) == 332
    assert state['head.projection.weight'].shape == [2304, 400]
    assert state['s2.pathway0_res0.branch2.a.weight'].shape == [64, 80, 1, 1, 1]      # slow res2: 64 + 16 in
    assert state['s4.pathway0_res0.branch2.a.weight'].shape == [256, 640, 3, 1, 1]    # temporal conv from res4
    assert state['s2.pathway1_res0.branch2.a.weight'].shape == [8, 8, 3, 1, 1]
    assert state['s1_fuse._conv_f2s.weight'].shape == [16, 8, 5, 1, 1]
    assert state['s1.pathway1_stem._conv.weight'].shape == [8, 3, 5, 7, 7]


def test_8x8_variant_is_a_config_change(recipe_cfg):
    recipe_cfg.MODEL.alpha, recipe_cfg.MODEL.fusion_kernel_size = 4, 7
    model = build_model(recipe_cfg)
    assert round(count_parameters(model) / 1e6, 2) == 34.57
    assert model.state_dict()['s3_fuse._conv_f2s.weight'].shape == [128, 64, 7, 1, 1]


def test_resnet_d_shortcuts_keep_the_parameters_and_average_before_the_projection(tiny_cfg):
    paddle.seed(4)
    plain = build_model(tiny_cfg)
    tiny_cfg.MODEL.shortcut_avg_pool = ['res3', 'res4']
    pooled = build_model(tiny_cfg)
    assert {k: v.shape for k, v in pooled.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    pooled.set_state_dict(plain.state_dict())  # checkpoints load either way
    for model in (plain, pooled):
        model.eval()
    block = pooled.s3.pathway1_res0  # the first block of res3: spatial stride 2
    x = paddle.randn([2, block.branch1.weight.shape[1], 8, 16, 16])
    expected = block.branch1_bn(paddle.nn.functional.conv3d(
        paddle.nn.functional.avg_pool3d(x, [1, 2, 2], [1, 2, 2]), block.branch1.weight))
    got = paddle.nn.functional.relu(expected + block.branch2(x))
    np.testing.assert_allclose(block(x).numpy(), got.numpy(), rtol=1e-5, atol=1e-5)
    # only the named stages change: res5 keeps the original's strided 1x1x1 conv
    block = pooled.s5.pathway1_res0
    x = paddle.randn([2, block.branch1.weight.shape[1], 8, 8, 8])
    strided = block.branch1_bn(paddle.nn.functional.conv3d(x, block.branch1.weight, stride=[1, 2, 2]))
    got = paddle.nn.functional.relu(strided + block.branch2(x))
    np.testing.assert_allclose(block(x).numpy(), got.numpy(), rtol=1e-5, atol=1e-5)
    inputs = clip(tiny_cfg, 96)
    out_plain, out_pooled = plain(inputs).numpy(), pooled(inputs).numpy()
    assert out_pooled.shape == out_plain.shape and np.allclose(out_pooled.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(out_pooled, out_plain, atol=1e-4)  # another function of the same weights
    assert count_flops(pooled, input_shapes(tiny_cfg, 64)) == count_flops(plain, input_shapes(tiny_cfg, 64))


def test_depth_101_builds_with_23_res4_blocks(tiny_cfg):
    tiny_cfg.MODEL.depth = 101
    model = build_model(tiny_cfg)
    assert set(model.state_dict()) == expected_names((3, 4, 23, 3))
    model.eval()
    assert model(clip(tiny_cfg, 64)).shape == [2, 5]


def test_recipe_flops_per_test_view(recipe_cfg):
    """36.1 GFLOPs (multiply-adds) per 256x256 view, the paper's figure for SlowFast 4x16 R50."""
    model = build_model(recipe_cfg)
    assert round(count_flops(model, input_shapes(recipe_cfg, 256)) / 1e9, 2) == 36.10
    assert model.training  # the count leaves the mode as it was


def test_summary_line(tiny_cfg):
    model = build_model(tiny_cfg)
    line = model_summary(model, tiny_cfg)
    assert line.startswith('SlowFast-R50 2x8 (alpha 4, beta 4, width 8): ')
    assert f'{count_parameters(model) / 1e6:.2f} M parameters' in line
    assert 'per 64x64 view' in line and 'per 96x96 view' in line


# ---- init --------------------------------------------------------------------------------------------------------

def test_init_follows_the_original(recipe_cfg):
    paddle.seed(0)
    state = build_model(recipe_cfg).state_dict()
    for name, value in state.items():
        value = value.numpy()
        if name.endswith('c_bn.weight'):
            assert np.all(value == 0), name  # zero-init final BN of every bottleneck
        elif name.endswith(('_bn.weight', 'bn.weight')):
            assert np.all(value == 1), name
        elif name.endswith(('_mean', 'bias')):
            assert np.all(value == 0), name
        elif name.endswith('_variance'):
            assert np.all(value == 1), name
    w = state['s4.pathway0_res0.branch2.a.weight'].numpy()  # [256, 640, 3, 1, 1]: fan_out = 256 * 3
    assert w.std() == pytest.approx(math.sqrt(2 / (256 * 3)), rel=0.02) and abs(w.mean()) < 1e-3
    w = state['s1_fuse._conv_f2s.weight'].numpy()  # fan_out = 16 * 5
    assert w.std() == pytest.approx(math.sqrt(2 / (16 * 5)), rel=0.1)
    w = state['head.projection.weight'].numpy()
    assert w.std() == pytest.approx(0.01, rel=0.02)


def test_no_weight_decay_on_batch_norm(tiny_cfg):
    model = build_model(tiny_cfg)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt = paddle.optimizer.Momentum(learning_rate=1.0, momentum=0.9, parameters=model.parameters(),
                                    weight_decay=paddle.regularizer.L2Decay(0.1))
    model.train()
    (model(clip(tiny_cfg, 64)).sum() * 0.0).backward()  # zero gradients: only weight decay moves anything
    opt.step()
    after = model.state_dict()
    for name in before:
        moved = not np.allclose(after[name].numpy(), before[name])
        if 'bn.' in name:
            if name.endswith(('weight', 'bias')):
                assert not moved, f'{name} was decayed'
        elif name.endswith('weight'):
            assert moved, f'{name} was not decayed'
            assert np.allclose(after[name].numpy(), before[name] * 0.9, atol=1e-7)


# ---- forward -----------------------------------------------------------------------------------------------------

def test_train_mode_gives_logits_eval_mode_gives_probabilities(tiny_cfg):
    paddle.seed(1)
    model = build_model(tiny_cfg)
    with paddle.no_grad():  # sharpen the near-uniform init so probabilities are far from 1/K
        model.head.projection.weight.set_value(model.head.projection.weight * 20)
    model.train()
    logits = model(clip(tiny_cfg, 64))
    assert logits.shape == [2, 5] and not np.allclose(logits.sum(axis=1).numpy(), 1.0)
    model.eval()
    probs = model(clip(tiny_cfg, 64)).numpy()
    assert probs.shape == (2, 5) and np.all(probs >= 0)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and not np.allclose(probs, 1 / 5, atol=0.02)


def test_eval_head_averages_softmax_over_positions(tiny_cfg):
    """A test view larger than the train crop leaves several positions (96 px: 2x2); the output is the mean of the
    per-position softmax, not the softmax of the mean (original and PySlowFast test head)."""
    paddle.seed(2)
    model = build_model(tiny_cfg)
    model.eval()
    with paddle.no_grad():
        model.head.projection.weight.set_value(model.head.projection.weight * 20)
    features = []
    hook = model.head.register_forward_pre_hook(lambda layer, inputs: features.append(inputs[0]))
    probs = model(clip(tiny_cfg, 96)).numpy()
    hook.remove()
    slow, fast = features[0]
    assert slow.shape[2:] == [2, 3, 3] and fast.shape[2:] == [8, 3, 3]
    pooled = paddle.concat([paddle.nn.functional.avg_pool3d(f, s, stride=1)
                            for f, s in zip((slow, fast), model.head.pool_size)], axis=1)  # [2, C, 1, 2, 2]
    logits = model.head.projection(pooled.transpose([0, 2, 3, 4, 1])).numpy().reshape(2, 4, 5)
    per_position = np.exp(logits - logits.max(-1, keepdims=True))
    per_position /= per_position.sum(-1, keepdims=True)
    assert np.allclose(probs, per_position.mean(1), atol=1e-6)
    softmax_of_mean = np.exp(logits.mean(1)) / np.exp(logits.mean(1)).sum(-1, keepdims=True)
    assert not np.allclose(probs, softmax_of_mean, atol=1e-3)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_dropout_only_in_train_mode(tiny_cfg):
    model = build_model(tiny_cfg)
    x = clip(tiny_cfg, 64)
    model.eval()
    assert np.array_equal(model(x).numpy(), model(x).numpy())
    model.train()
    # BN uses batch statistics in both calls, so any difference comes from dropout
    assert not np.allclose(model(x).numpy(), model(x).numpy())


def test_too_small_input_names_the_problem(tiny_cfg):
    model = build_model(tiny_cfg)
    with pytest.raises(ValueError, match='smaller than the head pool'):
        model(clip(tiny_cfg, 32))


def test_global_pool_in_training_takes_any_clip_shape_and_equals_the_pool_at_the_training_shape(tiny_cfg):
    """Multigrid's smaller clips (half the frames, 0.7 of the crop) through the same parameters."""
    model = build_model(tiny_cfg)
    model.train()
    model.head.dropout.p = 0.0
    x = clip(tiny_cfg, 64)
    with paddle.no_grad():
        fixed = model(x).numpy()
        model.head.global_pool_in_training = True
        assert np.allclose(model(x).numpy(), fixed, atol=1e-6)
        small = [v[:, :, ::2, 10:55, 10:55] for v in x]  # [2, 3, T/2, 45, 45]
        assert model(small).shape == [2, 5]
        model.eval()  # eval keeps the fully convolutional pool
        with pytest.raises(ValueError, match='smaller than the head pool'):
            model(small)


def test_backward_reaches_every_parameter(tiny_cfg):
    model = build_model(tiny_cfg)
    model.train()
    x = clip(tiny_cfg, 64)
    label = paddle.to_tensor([[1], [3]], dtype='int64')
    loss = paddle.nn.functional.cross_entropy(model(x), label)
    loss.backward()
    missing = [p.name for p in model.parameters() if not p.stop_gradient and p.grad is None]
    assert not missing


@pytest.mark.slow
def test_to_static_training_matches_dygraph(tiny_cfg):
    """``paddle.jit.to_static`` of the network trains like dygraph (the fast stem's CPU path included)."""
    tiny_cfg.MODEL.dropout_rate = 0.0
    paddle.seed(3)
    eager = build_model(tiny_cfg)
    traced = build_model(tiny_cfg)
    traced.set_state_dict(eager.state_dict())
    x = clip(tiny_cfg, 64)
    label = paddle.to_tensor([[1], [3]], dtype='int64')
    results = []
    for net, forward in ((eager, eager), (traced, paddle.jit.to_static(traced))):
        net.train()
        loss = paddle.nn.functional.cross_entropy(forward(x), label)
        loss.backward()
        results.append((loss.item(), net.s1.pathway1_stem._conv.weight.grad.numpy()))
    (loss0, grad0), (loss1, grad1) = results
    assert abs(loss0 - loss1) < 1e-5
    np.testing.assert_allclose(grad1, grad0, rtol=1e-4, atol=1e-4 * np.abs(grad0).max())


# ---- parity with the PyTorch reference ---------------------------------------------------------------------------

def off_init(ref, torch):
    """Move BN off its init (1/0), so affine and running statistics are all exercised, and sharpen the classifier
    (peaked probabilities, far from uniform)."""
    with torch.no_grad():
        for layer in ref.modules():
            if isinstance(layer, torch.nn.BatchNorm3d):
                layer.weight.uniform_(0.5, 1.0)
                layer.bias.uniform_(-0.2, 0.2)
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 1.5)
        ref.blocks[-1].proj.weight.mul_(20)


def same_eval_probabilities(ref, model, cfg, torch):
    """Load the reference's weights into ``model`` and compare eval probabilities on a 96-pixel clip (2x2 positions
    at a 64-pixel crop, as 256 at 224)."""
    from torch_reference import reference_to_paddle, run_reference

    weights = reference_to_paddle(ref.state_dict())
    assert set(weights) == set(model.state_dict())
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})
    x = clip(cfg, 96, batch=2, seed=3)
    ref.eval()
    model.eval()
    with torch.no_grad():
        expected = run_reference(ref, [t.numpy() for t in x]).numpy()
    probs = model(x).numpy()
    assert expected.max() > 0.1  # 40x the uniform 1/400: the comparison means something
    assert np.abs(probs - expected).max() <= 1e-4
    return x


def test_matches_the_pytorch_reference(recipe_cfg):
    """Full-width 4x16 R50 against pytorchvideo's create_slowfast with the same weights, at a small spatial size:
    eval probabilities within 1e-4, train-mode logits and the BN running statistics they update alike."""
    torch = pytest.importorskip('torch', reason='the PyTorch reference needs torch (pip install torch pytorchvideo)')
    pytest.importorskip('pytorchvideo', reason='the PyTorch reference needs pytorchvideo')
    from torch_reference import build_reference, reference_to_paddle, run_reference

    recipe_cfg.MODEL.crop_size = 64  # head pool 2x2
    recipe_cfg.MODEL.dropout_rate = 0.0  # so train mode is deterministic on both sides
    torch.manual_seed(0)
    ref = build_reference(recipe_cfg)
    off_init(ref, torch)
    model = build_model(recipe_cfg)
    x = same_eval_probabilities(ref, model, recipe_cfg, torch)

    ref.train()
    ref.blocks[6].activation = None  # pytorchvideo applies its head activation in train mode too; ours gives logits
    model.train()
    expected = run_reference(ref, [t.numpy() for t in x]).detach().numpy()
    logits = model(x).numpy()
    assert np.allclose(logits, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    updated = reference_to_paddle(ref.state_dict())
    for name in ('s1.pathway0_stem._bn._mean', 's3.pathway1_res2.branch2.b_bn._variance', 's4_fuse._bn._mean'):
        assert np.allclose(model.state_dict()[name].numpy(), updated[name], rtol=1e-3, atol=1e-5), name


@pytest.mark.parametrize('config, hub_name', [('configs/slowfast_r50_8x8.yaml', 'slowfast_r50'),
                                              ('configs/slowfast_r101_8x8.yaml', 'slowfast_r101'),
                                              ('configs/slowfast_16x8_r101_50_50.yaml', 'slowfast_16x8_r101_50_50'),
                                              ('configs/slow_r50_8x8.yaml', 'slow_r50')])
def test_each_shipped_model_equals_pytorchvideos_hub_builder(config, hub_name):
    """Each shipped config, at full width and depth, against pytorchvideo's hub builder of the checkpoint it
    converts (random weights, BN off its init): the same parameter count and names, eval probabilities within 1e-4
    at a small spatial size."""
    torch = pytest.importorskip('torch', reason='the PyTorch reference needs torch (pip install torch pytorchvideo)')
    pytest.importorskip('pytorchvideo', reason='the PyTorch reference needs pytorchvideo')
    from config_utils import parse_config
    from torch_reference import build_hub_reference

    cfg = parse_config(os.path.join(ROOT, config), ['MODEL.crop_size=64', 'MODEL.dropout_rate=0.0'])
    torch.manual_seed(0)
    ref = build_hub_reference(hub_name, cfg)
    off_init(ref, torch)
    model = build_model(cfg)
    assert count_parameters(model) == sum(p.numel() for p in ref.parameters())
    same_eval_probabilities(ref, model, cfg, torch)


@pytest.mark.parametrize('frozen_stages, freeze_bn', [(2, False), (0, True), (4, True)])
def test_frozen_stages_and_bn_change_exactly_what_they_say(tiny_cfg, frozen_stages, freeze_bn):
    from model import freeze

    paddle.seed(0)
    model = build_model(tiny_cfg)
    rng = np.random.default_rng(0)
    for layer in model.sublayers():  # no zero-initialised residual BN: every parameter gets a gradient at once
        if isinstance(layer, paddle.nn.BatchNorm3D):
            layer.weight.set_value(rng.uniform(0.5, 1.5, layer.weight.shape).astype('float32'))
    frozen, frozen_bn = freeze(model, frozen_stages, freeze_bn)
    stages = tuple(f's{k}.' for k in range(1, frozen_stages + 1)) + \
        tuple(f's{k}_fuse.' for k in range(1, frozen_stages + 1))
    trainable = {n for n, p in model.named_parameters() if not n.endswith(('_mean', '_variance'))}
    assert set(frozen) == {n for n in trainable if n.startswith(stages)}
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=model.parameters(),
                                    weight_decay=paddle.regularizer.L2Decay(1e-4))
    model.train()
    for seed in range(3):
        loss = model(clip(tiny_cfg, 64, seed=seed)).square().mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
    after = {k: v.numpy() for k, v in model.state_dict().items()}
    for name in before:
        statistic = name.endswith(('_mean', '_variance'))
        kept = name.startswith(stages) or (statistic and freeze_bn)
        assert np.array_equal(before[name], after[name]) == kept, name  # frozen: bit-identical; the rest moved
    bn_layers = sum(isinstance(layer, paddle.nn.BatchNorm3D) for layer in model.sublayers())
    assert frozen_bn == (bn_layers if freeze_bn else sum(
        isinstance(layer, paddle.nn.BatchNorm3D) for name, layer in model.named_sublayers() if name.startswith(stages)))


def test_clip_features_are_what_the_classifier_sees_averaged_over_positions(tiny_cfg):
    model = build_model(tiny_cfg)
    model.eval()
    seen = []
    model.head.projection.register_forward_pre_hook(lambda layer, inputs: seen.append(inputs[0].numpy()))
    x = clip(tiny_cfg, 96, batch=2, seed=4)  # 2x2 positions
    with paddle.no_grad():
        probs = model(x).numpy()
        features = model.features(x).numpy()
    assert seen[0].shape == (2, 1, 2, 2, features.shape[1]) and features.shape == (2, 8 * 32 + 8 * 32 // 4)
    assert np.allclose(features, seen[0].mean(axis=(1, 2, 3)), atol=1e-6)
    head = model.head.projection
    per_position = seen[0] @ head.weight.numpy() + head.bias.numpy()
    softmax = np.exp(per_position) / np.exp(per_position).sum(-1, keepdims=True)
    assert np.allclose(probs, softmax.mean(axis=(1, 2, 3)), atol=1e-6)  # and the same input gives the output
