"""The PyTorch reference (pytorchvideo's ``create_slowfast``) for parity tests; importable only with torch.

pytorchvideo imports torchvision only for its detection heads, and PyPI's torchvision does not load beside the
CPU torch used here, so a stand-in ``torchvision.ops`` is registered when torchvision itself cannot be imported.
"""
import re
import sys
import types

import torch


def _ensure_torchvision() -> None:
    try:
        import torchvision.ops  # noqa: F401
    except Exception:  # not installed, or a build that does not load beside this torch
        ops = types.ModuleType('torchvision.ops')
        ops.RoIAlign = type('RoIAlign', (torch.nn.Module,), {})
        vision = types.ModuleType('torchvision')
        vision.ops = ops
        sys.modules['torchvision'], sys.modules['torchvision.ops'] = vision, ops


def build_reference(cfg) -> torch.nn.Module:
    """pytorchvideo SlowFast with the settings of ``cfg.MODEL`` and a softmax-per-position test head."""
    _ensure_torchvision()
    from pytorchvideo.models.slowfast import create_slowfast

    m = cfg.MODEL
    pool = m.crop_size // 32
    return create_slowfast(
        model_depth=m.depth, model_num_class=m.num_classes, dropout_rate=m.dropout_rate,
        slowfast_channel_reduction_ratio=(m.beta,), slowfast_conv_channel_fusion_ratio=m.fusion_conv_channel_ratio,
        slowfast_fusion_conv_kernel_size=(m.fusion_kernel_size, 1, 1), slowfast_fusion_conv_stride=(m.alpha, 1, 1),
        stem_dim_outs=(m.width_per_group, m.width_per_group // m.beta),
        head_pool_kernel_sizes=((m.num_frames // m.alpha, pool, pool), (m.num_frames, pool, pool)),
        head_activation=torch.nn.Softmax)


_BN_STATS = {'running_mean': '_mean', 'running_var': '_variance', 'weight': 'weight', 'bias': 'bias'}
_RULES = [  # pytorchvideo name -> this project's (spec section 4)
    (r'blocks\.0\.multipathway_blocks\.(\d)\.conv\.', r's1.pathway\1_stem._conv.'),
    (r'blocks\.0\.multipathway_blocks\.(\d)\.norm\.', r's1.pathway\1_stem._bn.'),
    (r'blocks\.(\d)\.multipathway_fusion\.conv_fast_to_slow\.', lambda g: f's{int(g[1]) + 1}_fuse._conv_f2s.'),
    (r'blocks\.(\d)\.multipathway_fusion\.norm\.', lambda g: f's{int(g[1]) + 1}_fuse._bn.'),
    (r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch1_conv\.',
     lambda g: f's{int(g[1]) + 1}.pathway{g[2]}_res{g[3]}.branch1.'),
    (r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch1_norm\.',
     lambda g: f's{int(g[1]) + 1}.pathway{g[2]}_res{g[3]}.branch1_bn.'),
    (r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch2\.conv_([abc])\.',
     lambda g: f's{int(g[1]) + 1}.pathway{g[2]}_res{g[3]}.branch2.{g[4]}.'),
    (r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch2\.norm_([abc])\.',
     lambda g: f's{int(g[1]) + 1}.pathway{g[2]}_res{g[3]}.branch2.{g[4]}_bn.'),
    (r'blocks\.6\.proj\.', 'head.projection.'),
]


def reference_to_paddle(state: dict) -> dict:
    """Map a pytorchvideo state dict to this project's names and layouts (numpy arrays); every key must map."""
    out = {}
    for name, tensor in state.items():
        if name.endswith('num_batches_tracked'):
            continue
        for pattern, repl in _RULES:
            mapped, found = re.subn('^' + pattern, repl, name, count=1)
            if found:
                break
        else:
            raise KeyError(f'unmapped reference parameter {name}')
        layer, leaf = mapped.rsplit('.', 1)
        array = tensor.detach().cpu().numpy()
        if layer == 'head.projection' and leaf == 'weight':
            array = array.T  # torch Linear [out, in] -> Paddle [in, out]
        out[f'{layer}.{_BN_STATS.get(leaf, leaf)}'] = array
    return out
