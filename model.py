"""SlowFast network (Feichtenhofer et al., "SlowFast Networks for Video Recognition", ICCV 2019), ResNet-50/101,
and the paper's Slow-only baseline.

``build_model(cfg)`` builds the network of ``MODEL.name``. SlowFast: ``model([slow, fast])`` takes slow
``[N, 3, T/alpha, H, W]`` and fast ``[N, 3, T, H, W]``; Slow-only: ``model([slow])``, slow ``[N, 3, T, H, W]``.
``model.train()``: logits ``[N, num_classes]``; ``model.eval()``: probabilities (softmax per position of the
fully-convolutional head, averaged over positions).
"""
import logging
import zlib  # noqa: F401 -- loaded before paddle (Paddle 2.6.2 bug; README, Install)
from typing import List, Sequence, Tuple

import paddle
import paddle.nn as nn

from config_utils import STAGE_DEPTHS, AttrDict, input_shapes
from model_utils import (FuseFastToSlow, ResNetBasicHead, ResStage, VideoModelStem, count_flops,
                         count_parameters)

logger = logging.getLogger(__name__)

# Temporal kernel of (slow, fast) for conv1, res2, res3, res4, res5 (paper Table 1): the slow pathway uses temporal
# convolutions only in res4 and res5 ("non-degenerate temporal filters"), the fast pathway everywhere.
TEMPORAL_KERNELS = ((1, 5), (1, 3), (1, 3), (3, 3), (3, 3))
SPATIAL_STRIDES = (1, 2, 2, 2)  # res2..res5


class VideoNetwork(nn.Layer):
    """What both networks share: ``backbone`` (theirs) gives the res5 feature maps of every pathway, ``head`` the
    classes."""

    def forward(self, x: List[paddle.Tensor]) -> paddle.Tensor:
        """The pathways' clips -> logits (train) or probabilities (eval)."""
        return self.head(self.backbone(x))

    def features(self, x: List[paddle.Tensor]) -> paddle.Tensor:
        """The clip features the classifier sees, averaged over positions: ``[N, C]`` (SlowFast R50, beta 8: slow
        2048 + fast 256; Slow-only R50: 2048)."""
        return self.head.features(self.backbone(x))

    @property
    def feature_dim(self) -> int:
        """Width of ``features``: the classifier's input."""
        return self.head.projection.weight.shape[0]

    def scores_and_features(self, x: List[paddle.Tensor]) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """``(forward(x), features(x))`` from one backbone pass."""
        maps = self.backbone(x)
        return self.head(maps), self.head.features(maps)


class SlowFast(VideoNetwork):
    r"""SlowFast with a ResNet bottleneck backbone on both pathways and lateral fast->slow fusion after every stage::

        slow [N,3,T/a,H,W] -> s1.pathway0_stem -+-> s2.pathway0 -+-> s3 ... -+-> s5.pathway0 --+--> head -> [N, K]
                                                |  (concat)      |           |                 |
                                  s1_fuse._conv_f2s    s2_fuse._conv_f2s    s4_fuse            |
                                                |                |           |                 |
        fast [N,3,T,H,W]   -> s1.pathway1_stem -+-> s2.pathway1 -+-> s3 ... -+-> s5.pathway1 --+

    Fast channels are slow channels / ``beta``; each fuse conv (kernel [fusion_kernel, 1, 1], temporal stride
    ``alpha``) maps fast C to ``fusion_conv_channel_ratio`` * C channels concatenated to slow.

    Args:
        num_classes: output classes K.
        num_frames: T, fast-pathway frames of a clip.
        alpha: frame-rate ratio; slow sees T / alpha frames.
        beta: channel ratio (beta_inv of the paper).
        crop_size: training crop; the head pools over [T/alpha or T, crop/32, crop/32].
        depth: 50, 101 or 152.
        width_per_group: slow stem width (64 in the paper).
        fusion_kernel_size: temporal kernel of the lateral conv (5 for 4x16, 7 for 8x8).
        fusion_conv_channel_ratio: channel multiplier of the lateral conv (2).
        dropout_rate: dropout before the FC (0.5).
        shortcut_avg_pool: the stages ('res3', 'res4', 'res5') whose downsampling shortcut is ResNet-D's (average
            pool, then the 1x1x1 conv); the others keep the original strided 1x1x1 conv. Same parameters either way.
        num_block_temp_kernel: for res2..res5, how many blocks (the first ones) use the stage's temporal kernel; the
            others are 1x3x3 bottlenecks. Empty: every block (the paper's R50 and R101).
    """

    def __init__(self, num_classes: int = 400, num_frames: int = 32, alpha: int = 8, beta: int = 8,
                 crop_size: int = 224, depth: int = 50, width_per_group: int = 64, fusion_kernel_size: int = 5,
                 fusion_conv_channel_ratio: int = 2, dropout_rate: float = 0.5, shortcut_avg_pool: Sequence[str] = (),
                 num_block_temp_kernel: Sequence[int] = ()):
        super().__init__()
        self.alpha = alpha
        self.num_frames = num_frames
        ratio = fusion_conv_channel_ratio
        width = width_per_group
        kernels = TEMPORAL_KERNELS

        stem_out = [width, width // beta]
        self.s1 = VideoModelStem([3, 3], stem_out, kernels[0])
        self.s1_fuse = FuseFastToSlow(stem_out[1], ratio, fusion_kernel_size, alpha)

        # res2..res5: output 4x, 8x, 16x, 32x the stem width, bottleneck inner 1x, 2x, 4x, 8x.
        dim_in = [stem_out[0] + stem_out[1] * ratio, stem_out[1]]
        for k, (blocks, stride) in enumerate(zip(STAGE_DEPTHS[depth], SPATIAL_STRIDES)):
            dim_out = [width * 4 * 2 ** k, width * 4 * 2 ** k // beta]
            dim_inner = [width * 2 ** k, width * 2 ** k // beta]
            self.add_sublayer(f's{k + 2}', ResStage(
                dim_in, dim_out, dim_inner, kernels[k + 1], stride, blocks, f'res{k + 2}' in shortcut_avg_pool,
                num_block_temp_kernel[k] if num_block_temp_kernel else None))
            if k < 3:  # a lateral connection after res2, res3, res4; none after res5
                self.add_sublayer(f's{k + 2}_fuse', FuseFastToSlow(dim_out[1], ratio, fusion_kernel_size, alpha))
                dim_in = [dim_out[0] + dim_out[1] * ratio, dim_out[1]]

        pool = crop_size // 32
        self.head = ResNetBasicHead(dim_out, num_classes, [[num_frames // alpha, pool, pool],
                                                           [num_frames, pool, pool]], dropout_rate)

    def backbone(self, x: List[paddle.Tensor]) -> List[paddle.Tensor]:
        """``[slow, fast]`` clips -> their res5 feature maps ``[N, 8 w, T/alpha, H/32, W/32]``, ``[N, 8 w / beta, T,
        H/32, W/32]`` (w = width_per_group x 4)."""
        x = self.s1_fuse(self.s1(list(x)))
        x = self.s2_fuse(self.s2(x))
        x = self.s3_fuse(self.s3(x))
        x = self.s4_fuse(self.s4(x))
        return self.s5(x)


class SlowOnly(VideoNetwork):
    r"""The Slow-only network (paper Table 3; PySlowFast ``SLOW_8x8_R50``, pytorchvideo ``slow_r50``): the slow
    pathway alone, a 3D ResNet with temporal kernels in res4 and res5 only, over all T frames of the clip::

        slow [N,3,T,H,W] -> s1.pathway0_stem -> s2.pathway0 -> s3 -> s4 -> s5.pathway0 -> head -> [N, K]

    Parameter names are SlowFast's slow pathway's (``s2.pathway0_res0...``), without fusion layers.
    Args as ``SlowFast`` (no alpha, beta or fusion).
    """

    def __init__(self, num_classes: int = 400, num_frames: int = 8, crop_size: int = 224, depth: int = 50,
                 width_per_group: int = 64, dropout_rate: float = 0.5, shortcut_avg_pool: Sequence[str] = (),
                 num_block_temp_kernel: Sequence[int] = ()):
        super().__init__()
        width = width_per_group
        kernels = [k[:1] for k in TEMPORAL_KERNELS]  # the slow pathway's
        self.s1 = VideoModelStem([3], [width], kernels[0])
        dim_in = [width]
        for k, (blocks, stride) in enumerate(zip(STAGE_DEPTHS[depth], SPATIAL_STRIDES)):
            dim_out = [width * 4 * 2 ** k]
            self.add_sublayer(f's{k + 2}', ResStage(
                dim_in, dim_out, [width * 2 ** k], kernels[k + 1], stride, blocks, f'res{k + 2}' in shortcut_avg_pool,
                num_block_temp_kernel[k] if num_block_temp_kernel else None))
            dim_in = dim_out
        pool = crop_size // 32
        self.head = ResNetBasicHead(dim_out, num_classes, [[num_frames, pool, pool]], dropout_rate)

    def backbone(self, x: List[paddle.Tensor]) -> List[paddle.Tensor]:
        """``[slow]`` clips -> ``[res5 feature map]``."""
        return self.s5(self.s4(self.s3(self.s2(self.s1(list(x))))))


def build_model(cfg: AttrDict) -> VideoNetwork:
    """The network of ``cfg.MODEL``: SlowFast, or Slow-only with ``MODEL.name: SLOW``."""
    m = cfg.MODEL
    if m.name == 'SLOW':
        return SlowOnly(num_classes=m.num_classes, num_frames=m.num_frames, crop_size=m.crop_size, depth=m.depth,
                        width_per_group=m.width_per_group, dropout_rate=m.dropout_rate,
                        shortcut_avg_pool=m.shortcut_avg_pool, num_block_temp_kernel=m.num_block_temp_kernel)
    return SlowFast(num_classes=m.num_classes, num_frames=m.num_frames, alpha=m.alpha, beta=m.beta,
                    crop_size=m.crop_size, depth=m.depth, width_per_group=m.width_per_group,
                    fusion_kernel_size=m.fusion_kernel_size, fusion_conv_channel_ratio=m.fusion_conv_channel_ratio,
                    dropout_rate=m.dropout_rate, shortcut_avg_pool=m.shortcut_avg_pool,
                    num_block_temp_kernel=m.num_block_temp_kernel)


def freeze(model: nn.Layer, frozen_stages: int = 0, freeze_bn: bool = False) -> Tuple[List[str], int]:
    """Fine-tuning: the parameters of the stem (``frozen_stages`` 1) up to res4 (4), and of the lateral connections
    after them, stop receiving gradients; the BN layers there (every BN layer with ``freeze_bn``) normalise with and
    keep their running statistics, in training too (``use_global_stats``). Returns the names of the trainable
    parameters it froze and the number of frozen BN layers."""
    stages = range(1, frozen_stages + 1)
    prefixes = tuple(f's{k}.' for k in stages) + tuple(f's{k}_fuse.' for k in stages)
    frozen = []
    for name, param in model.named_parameters():
        if name.startswith(prefixes) and not param.stop_gradient:
            param.stop_gradient = True
            frozen.append(name)
    layers = [layer for name, layer in model.named_sublayers()
              if isinstance(layer, nn.BatchNorm3D) and (freeze_bn or name.startswith(prefixes))]
    for layer in layers:
        layer._use_global_stats = True  # Paddle's BatchNorm option, read by every forward
    return frozen, len(layers)


def model_summary(model: nn.Layer, cfg: AttrDict, sizes: Sequence[int] = ()) -> str:
    """One line: parameters and GFLOPs (multiply-adds) per clip at the train crop and the test view size."""
    m = cfg.MODEL
    sizes = sizes or sorted({m.crop_size, cfg.TEST.target_size})
    flops = ', '.join(f'{count_flops(model, input_shapes(cfg, s)) / 1e9:.2f} GFLOPs per {s}x{s} view'
                      for s in sizes)
    # PySlowFast's name for a deeper ResNet with temporal kernels in R50's blocks only (both pathways): R101_50_50
    fifty = m.depth != 50 and list(m.num_block_temp_kernel) == list(STAGE_DEPTHS[50])
    depth = f'R{m.depth}' + ('_50_50' if fifty else '')
    temporal = f', temporal kernels in {m.num_block_temp_kernel} blocks' if m.num_block_temp_kernel else ''
    if m.name == 'SLOW':
        title = f'Slow-{depth} {m.num_frames}x{m.sampling_rate} (width {m.width_per_group}{temporal})'
    else:
        title = (f'SlowFast-{depth} {m.num_frames // m.alpha}x{m.sampling_rate * m.alpha} '
                 f'(alpha {m.alpha}, beta {m.beta}, width {m.width_per_group}{temporal})')
    return f'{title}: {count_parameters(model) / 1e6:.2f} M parameters, {flops}'
