"""The PyTorch reference (pytorchvideo's ``create_slowfast``) for parity tests and benchmarks; needs torch.

pytorchvideo imports torchvision only for its detection heads, and PyPI's torchvision does not load beside the
CPU torch used here, so a stand-in ``torchvision.ops`` is registered when torchvision itself cannot be imported.
"""
import os
import sys
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _ensure_torchvision() -> None:
    try:
        import torchvision.ops  # noqa: F401
    except Exception:  # not installed, or a build that does not load beside this torch
        ops = types.ModuleType('torchvision.ops')
        ops.RoIAlign = type('RoIAlign', (torch.nn.Module,), {})
        vision = types.ModuleType('torchvision')
        vision.ops = ops
        sys.modules['torchvision'], sys.modules['torchvision.ops'] = vision, ops


def build_reference(cfg, train: bool = False) -> torch.nn.Module:
    """pytorchvideo's SlowFast (``create_slowfast``), or its ResNet for ``MODEL.name: SLOW`` (``create_resnet``),
    with the settings of ``cfg.MODEL`` and a softmax-per-position test head (logits when ``train``). A SlowFast takes
    a list ``[slow, fast]``, the ResNet one tensor."""
    _ensure_torchvision()
    from pytorchvideo.models.resnet import create_resnet
    from pytorchvideo.models.slowfast import create_slowfast

    from config_utils import STAGE_DEPTHS

    m = cfg.MODEL
    pool = m.crop_size // 32
    # pytorchvideo spells each stage's conv-a kernels out per block; the paper's: slow (1, 1, 3, 3), fast 3 everywhere
    temporal = m.num_block_temp_kernel or STAGE_DEPTHS[m.depth]
    kernels = tuple(tuple(tuple(((t, 1, 1),) * n + ((1, 1, 1),) * (blocks - n))
                          for t, n, blocks in zip(stage_kernels, temporal, STAGE_DEPTHS[m.depth]))
                    for stage_kernels in ((1, 1, 3, 3), (3, 3, 3, 3)))
    activation = None if train else torch.nn.Softmax
    if m.name == 'SLOW':
        return create_resnet(
            model_depth=m.depth, model_num_class=m.num_classes, dropout_rate=m.dropout_rate,
            stem_dim_out=m.width_per_group, stem_conv_kernel_size=(1, 7, 7), stage_conv_a_kernel_size=kernels[0],
            head_pool_kernel_size=(m.num_frames, pool, pool), head_activation=activation)
    return create_slowfast(
        model_depth=m.depth, model_num_class=m.num_classes, dropout_rate=m.dropout_rate,
        slowfast_channel_reduction_ratio=(m.beta,), slowfast_conv_channel_fusion_ratio=m.fusion_conv_channel_ratio,
        slowfast_fusion_conv_kernel_size=(m.fusion_kernel_size, 1, 1), slowfast_fusion_conv_stride=(m.alpha, 1, 1),
        stem_dim_outs=(m.width_per_group, m.width_per_group // m.beta),
        head_pool_kernel_sizes=((m.num_frames // m.alpha, pool, pool), (m.num_frames, pool, pool)),
        stage_conv_a_kernel_sizes=kernels,
        head_activation=activation)


def run_reference(model: torch.nn.Module, clips) -> torch.Tensor:
    """``model`` on the pathways' clips (NumPy arrays): pytorchvideo's SlowFast takes a list ``[slow, fast]``, its
    single-pathway ResNet (Slow-only) one tensor."""
    inputs = [torch.from_numpy(np.ascontiguousarray(c)) for c in clips]
    return model(inputs if len(inputs) > 1 else inputs[0])


def reference_to_paddle(state: dict) -> dict:
    """A pytorchvideo state dict in this project's names and layouts, through weight_conversion.py."""
    from weight_conversion import to_project_names

    return to_project_names('pytorchvideo', {k: v.detach().cpu().numpy() for k, v in state.items()})[0]


def build_hub_reference(name: str, cfg, train: bool = False) -> torch.nn.Module:
    """pytorchvideo's hub builder ``name`` (e.g. ``slowfast_r101``, ``slow_r50``: its settings, random weights) with
    the class count, dropout and widths of ``cfg.MODEL`` (the hub's at the shipped configs' 64 / beta 8) and its
    head's pooling windows set for ``cfg.MODEL.crop_size`` (the hub's are for 224), softmax per position (logits
    when ``train``)."""
    _ensure_torchvision()
    from pytorchvideo.models import hub

    m = cfg.MODEL
    pool = m.crop_size // 32
    common = dict(pretrained=False, model_num_class=m.num_classes, dropout_rate=m.dropout_rate,
                  head_activation=None if train else torch.nn.Softmax)
    if m.name == 'SLOW':
        model = getattr(hub, name)(stem_dim_out=m.width_per_group, **common)
        model.blocks[5].pool.kernel_size = (m.num_frames, pool, pool)
        return model
    model = getattr(hub, name)(stem_dim_outs=(m.width_per_group, m.width_per_group // m.beta),
                               slowfast_channel_reduction_ratio=(m.beta,), **common)
    for layer, frames in zip(model.blocks[5].pool, (m.num_frames // m.alpha, m.num_frames)):
        layer.kernel_size = (frames, pool, pool)
    return model
