"""Building blocks of the SlowFast network (Feichtenhofer et al., ICCV 2019) and its size/cost summary.

Sub-layer names are the original Paddle port's (``pathway0_stem._conv``, ``branch2.a_bn``, ``_conv_f2s``,
``projection``) so its checkpoints and PaddleVideo's load unchanged. Init follows the original and PySlowFast:
convs MSRA-normal with fan = C_out * kT * kH * kW (Caffe2 ``MSRAFill``), BN gamma 1 (0 for the last BN of every
bottleneck), beta 0, no weight decay on BN, FC Normal(0, 0.01) with zero bias.

Tensors are ``[N, C, T, H, W]`` throughout; a multi-pathway input is a list ``[slow, fast]``.
The fast stem's convolution runs frame by frame on the CPU (``frame_conv.FrameConv3D``, a speed workaround).
BN statistics: sub-batch BN for multigrid (``SubBatchNorm3D``) and precise BN after training epochs (``precise_bn``).
"""
from typing import Iterable, List, Optional, Sequence

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

import distributed
from frame_conv import FrameConv3D

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # Paddle's convention: running = 0.9 * running + 0.1 * batch (PyTorch momentum 0.1)

# Mixed precision (TRAIN.use_amp). Paddle's O1 runs an op in low precision only when it is on the white list, and
# its default lists (paddle/amp/amp_lists.py, the same in 2.6 and 3.x) hold conv2d and matmul but not conv3d: this
# network, almost all conv3d, would train in float32. Added: every convolution of the network (conv3d; conv2d for
# the by-frames stem, already on the list) and the head's projection under each name Paddle gives it (`linear` in
# dygraph, on neither version's default list; `matmul`/`matmul_v2` when it is decomposed). Kept in float32: batch
# norm (its input is cast back; scale, bias and statistics are float32 in any case) and, by Paddle's own black
# list, softmax, log_softmax and the cross entropies, so the loss is computed in float32.
AMP_WHITE_LIST = ('conv3d', 'conv2d', 'linear', 'linear_v2', 'matmul', 'matmul_v2')
AMP_BLACK_LIST = ('batch_norm', 'sync_batch_norm')


def autocast(enable: bool, dtype: str):
    """The mixed-precision context of a training step: O1 with AMP_WHITE_LIST / AMP_BLACK_LIST in ``dtype``
    (float16 or bfloat16)."""
    return paddle.amp.auto_cast(enable=enable, custom_white_list=set(AMP_WHITE_LIST),
                                custom_black_list=set(AMP_BLACK_LIST), level='O1', dtype=dtype)


def conv3d(dim_in: int, dim_out: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1),
           padding: Sequence[int] = (0, 0, 0), by_frames: bool = False) -> nn.Conv3D:
    """A bias-free Conv3D with MSRA init on fan-out (``c2_msra_fill``), as every conv of the network;
    ``by_frames``: a ``FrameConv3D``."""
    fan_out = dim_out * int(np.prod(kernel))
    layer = FrameConv3D if by_frames else nn.Conv3D
    return layer(dim_in, dim_out, list(kernel), stride=list(stride), padding=list(padding),
                 weight_attr=paddle.ParamAttr(initializer=nn.initializer.KaimingNormal(fan_in=fan_out)),
                 bias_attr=False)


class SubBatchNorm3D(nn.BatchNorm3D):
    """BatchNorm3D that may, in training, normalise each of ``num_splits`` sub-batches with its own statistics: the
    BN group (``TRAIN.bn_group``: the recipe's 8 clips per GPU, whatever the ranks, the accumulation or the multigrid
    stage; PySlowFast's ``SubBatchNorm3d``). Sub-batch ``b`` is the ``b``-th run of ``n / k`` clips of a batch of
    ``n``: what Paddle's DistributedBatchSampler deals to rank ``b`` of ``k`` from the same order, and what the
    ``b``-th of ``k`` accumulation steps takes (PySlowFast takes every ``k``-th clip). The running statistics move by the
    mean of the sub-batches' means and of their variances: exactly what ``k`` ranks of one sub-batch each hold on
    average (``distributed.average_buffers``; PySlowFast adds the spread of the means to the variance, which no
    number of GPUs gives). Eval and precise BN see a plain BN. ``num_splits`` 1 (the default) is BatchNorm3D itself;
    the parameters and buffers are BatchNorm3D's, under its names."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_splits = 1
        self.defer = False  # gradient accumulation: running statistics move once per optimizer step (flush)
        self._pending: Optional[List] = None  # [sum of the groups' means, of their variances, groups]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if (self.num_splits > 1 or self.defer) and self.training and not self._use_global_stats:
            return self.sub_batch_forward(x)
        return nn.BatchNorm3D.forward(self, x)  # not super(): Paddle 2.6's jit.to_static rewrites this function

    def sub_batch_forward(self, x: paddle.Tensor) -> paddle.Tensor:
        k, (n, c) = self.num_splits, x.shape[:2]
        if n % k:
            raise ValueError(f'a batch of {n} clips does not split into {k} BN sub-batches')
        means, variances = paddle.zeros([k * c]), paddle.ones([k * c])  # the sub-batches' statistics, filled in
        rest = list(x.shape[2:])
        # [N, C, ...] -> [k, N / k, C, ...] -> [N / k, k C, ...]: channel b C + c is channel c of sub-batch b (clips
        # b N / k to (b + 1) N / k - 1), whose affine is channel c's
        grouped = x.reshape([k, n // k, c] + rest).transpose([1, 0, 2, 3, 4, 5]).reshape([n // k, k * c] + rest)
        y = F.batch_norm(grouped, means, variances, weight=paddle.tile(self.weight, [k]),
                         bias=paddle.tile(self.bias, [k]), training=True, momentum=0.0, epsilon=self._epsilon,
                         data_format='NCDHW')
        y = y.reshape([n // k, k, c] + rest).transpose([1, 0, 2, 3, 4, 5]).reshape(x.shape)
        with paddle.no_grad():  # the mean of the sub-batches' statistics, as k ranks' BNs averaged
            mean, variance = means.reshape([k, c]).sum(axis=0), variances.reshape([k, c]).sum(axis=0)
            if self.defer:  # one move per optimizer step, by the mean over its micro-batches' groups
                pending = self._pending or [0.0, 0.0, 0]
                self._pending = [pending[0] + mean, pending[1] + variance, pending[2] + k]
            else:
                self.move_statistics(mean / k, variance / k)
        return y

    def move_statistics(self, mean: paddle.Tensor, variance: paddle.Tensor) -> None:
        """The running statistics' momentum update towards ``mean`` and ``variance``."""
        self._mean.set_value(self._momentum * self._mean + (1.0 - self._momentum) * mean)
        self._variance.set_value(self._momentum * self._variance + (1.0 - self._momentum) * variance)

    def flush(self) -> None:
        """Move the running statistics by the deferred groups' mean statistics (if any)."""
        if self._pending:
            total_mean, total_variance, groups = self._pending
            with paddle.no_grad():
                self.move_statistics(total_mean / groups, total_variance / groups)
            self._pending = None


def defer_bn_statistics(model: nn.Layer, defer: bool) -> None:
    """Gradient accumulation: every BN layer of ``model`` keeps its micro-batches' statistics and moves its running
    statistics once per optimizer step (``flush_bn_statistics``), by their mean, as the ranks of one micro-batch each
    would (averaged); ``defer`` False: at every forward (what is pending is applied first)."""
    for layer in model.sublayers():
        if isinstance(layer, SubBatchNorm3D):
            layer.flush()
            layer.defer = defer


def flush_bn_statistics(model: nn.Layer) -> None:
    """After an optimizer step: the deferred statistics of every BN layer of ``model`` into its running ones."""
    for layer in model.sublayers():
        if isinstance(layer, SubBatchNorm3D):
            layer.flush()


def set_bn_splits(model: nn.Layer, num_splits: int) -> None:
    """Make every BN layer of ``model`` compute its training statistics over ``num_splits`` sub-batches."""
    for layer in model.sublayers():
        if isinstance(layer, SubBatchNorm3D):
            layer.num_splits = num_splits


def frame_pool(x: paddle.Tensor, kind: str, window: int, stride: int, padding: int = 0, ceil_mode: bool = False,
               as_2d: bool = False) -> paddle.Tensor:
    """A ``[1, window, window]`` max or average (exclusive) pool of ``x [N, C, T, H, W]``, stride ``[1, stride,
    stride]``. ``as_2d``: computed as a 2D pool of ``[N, C*T, H, W]`` (a free reshape), the same windows and values;
    for the export (``pools_as_2d``): Paddle Inference runs ``pool2d`` with oneDNN but ``pool3d`` with its own
    single-threaded kernel between two layout conversions. In dygraph ``pool3d`` is the faster."""
    if not as_2d:
        window3, stride3 = [1, window, window], [1, stride, stride]
        if kind == 'max':
            return F.max_pool3d(x, window3, stride=stride3, padding=[0, padding, padding], ceil_mode=ceil_mode)
        return F.avg_pool3d(x, window3, stride=stride3, padding=[0, padding, padding], ceil_mode=ceil_mode,
                            exclusive=True)
    _, c, t, h, w = x.shape
    frames = x.reshape([0, c * t, h, w])  # 0: the batch as it is (unknown in an exported graph)
    if kind == 'max':
        y = F.max_pool2d(frames, window, stride=stride, padding=padding, ceil_mode=ceil_mode)
    else:
        y = F.avg_pool2d(frames, window, stride=stride, padding=padding, ceil_mode=ceil_mode, exclusive=True)
    return y.reshape([0, c, t, y.shape[2], y.shape[3]])


def pools_as_2d(model: nn.Layer) -> int:
    """Make every ``[1, k, k]`` pool of ``model`` run as a 2D pool (``frame_pool``'s ``as_2d``; for the export).
    Returns how many pools run that way."""
    layers = [layer for layer in model.sublayers(include_self=True) if hasattr(layer, 'pool_as_2d')]
    for layer in layers:
        layer.pool_as_2d = True
    return sum(1 for layer in layers if getattr(layer, 'shortcut_pool', True))  # not the blocks that do not pool


def batch_norm(channels: int, zero_init: bool = False) -> nn.BatchNorm3D:
    """BatchNorm3D (sub-batch capable) with gamma 1 (or 0: zero-init of a residual branch's last BN), beta 0, and no
    weight decay."""
    no_decay = paddle.regularizer.L2Decay(0.0)
    return SubBatchNorm3D(
        channels, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
        weight_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0 if zero_init else 1.0),
                                     regularizer=no_decay),
        bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0), regularizer=no_decay))


class ResNetBasicStem(nn.Layer):
    """conv1 of one pathway: Conv [kt, 7, 7] stride [1, 2, 2] -> BN -> ReLU -> MaxPool [1, 3, 3] stride [1, 2, 2].

    ``[N, C_in, T, H, W] -> [N, C_out, T, H/4, W/4]``.
    """

    def __init__(self, dim_in: int, dim_out: int, temporal_kernel: int):
        super().__init__()
        # A temporal kernel (the fast stem's 5x7x7 over 3 channels) is the layer Paddle's CPU conv3d is slowest
        # at: 7-12x PyTorch's time, most of a CPU training step (docs/BENCHMARKS.md).
        self._conv = conv3d(dim_in, dim_out, (temporal_kernel, 7, 7), (1, 2, 2), (temporal_kernel // 2, 3, 3),
                            by_frames=temporal_kernel > 1)
        self._bn = batch_norm(dim_out)
        self.pool_as_2d = False

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = F.relu(self._bn(self._conv(x)))
        return frame_pool(x, 'max', 3, stride=2, padding=1, as_2d=self.pool_as_2d)


class VideoModelStem(nn.Layer):
    """The stems of all pathways (``pathway{p}_stem``); maps ``[slow, fast]`` to ``[slow, fast]``."""

    def __init__(self, dim_in: Sequence[int], dim_out: Sequence[int], temporal_kernel: Sequence[int]):
        super().__init__()
        self.num_pathways = len(dim_in)
        for p in range(self.num_pathways):
            self.add_sublayer(f'pathway{p}_stem', ResNetBasicStem(dim_in[p], dim_out[p], temporal_kernel[p]))

    def forward(self, x: List[paddle.Tensor]) -> List[paddle.Tensor]:
        out = []
        # a loop: as a comprehension this fails under Paddle 3.3's to_static (SOT) once the fast stem's PyLayer
        # breaks the graph ("'cell' object has no attribute 'num_pathways'")
        for p in range(self.num_pathways):
            out.append(getattr(self, f'pathway{p}_stem')(x[p]))
        return out


class FuseFastToSlow(nn.Layer):
    """Lateral connection (paper Sec. 3.4, "time-strided convolution"): the fast features, convolved with a
    [fusion_kernel, 1, 1] kernel of temporal stride alpha into ``fusion_conv_channel_ratio`` x their channels, are
    concatenated to the slow features.

    ``slow [N, C_s, T/alpha, H, W], fast [N, C_f, T, H, W] -> slow [N, C_s + ratio * C_f, T/alpha, H, W], fast``.
    """

    def __init__(self, dim_in: int, fusion_conv_channel_ratio: int, fusion_kernel: int, alpha: int):
        super().__init__()
        self._conv_f2s = conv3d(dim_in, dim_in * fusion_conv_channel_ratio, (fusion_kernel, 1, 1), (alpha, 1, 1),
                                (fusion_kernel // 2, 0, 0))
        self._bn = batch_norm(dim_in * fusion_conv_channel_ratio)

    def forward(self, x: List[paddle.Tensor]) -> List[paddle.Tensor]:
        slow, fast = x
        fuse = F.relu(self._bn(self._conv_f2s(fast)))
        return [paddle.concat([slow, fuse], axis=1), fast]


class BottleneckTransform(nn.Layer):
    """Branch 2 of a bottleneck: a [kt, 1, 1] -> b [1, 3, 3] (spatial stride here) -> c [1, 1, 1], each with BN; the
    last BN starts at zero so every residual block starts as the identity."""

    def __init__(self, dim_in: int, dim_out: int, dim_inner: int, temporal_kernel: int, stride: int):
        super().__init__()
        self.a = conv3d(dim_in, dim_inner, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0))
        self.a_bn = batch_norm(dim_inner)
        self.b = conv3d(dim_inner, dim_inner, (1, 3, 3), (1, stride, stride), (0, 1, 1))
        self.b_bn = batch_norm(dim_inner)
        self.c = conv3d(dim_inner, dim_out, (1, 1, 1))
        self.c_bn = batch_norm(dim_out, zero_init=True)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = F.relu(self.a_bn(self.a(x)))
        x = F.relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class ResBlock(nn.Layer):
    """``relu(shortcut(x) + branch2(x))``; the shortcut is a strided 1x1x1 conv + BN (``branch1``) when the shape
    changes (first block of a stage), else the identity.

    ``shortcut_avg_pool``: a spatially strided shortcut averages each [1, stride, stride] window and then applies the
    1x1x1 conv (ResNet-D, He et al., "Bag of Tricks for Image Classification", 2019) instead of keeping one
    position in stride^2. Same parameters, other function: off in the recipe (the original and every published
    checkpoint); see docs/MODEL_ZOO.md (The network) for when it matters.
    """

    def __init__(self, dim_in: int, dim_out: int, dim_inner: int, temporal_kernel: int, stride: int,
                 shortcut_avg_pool: bool = False):
        super().__init__()
        self.has_branch1 = dim_in != dim_out or stride != 1
        self.shortcut_pool = stride if shortcut_avg_pool and stride > 1 else 0
        self.pool_as_2d = False
        if self.has_branch1:
            self.branch1 = conv3d(dim_in, dim_out, (1, 1, 1), (1, 1, 1) if self.shortcut_pool else (1, stride, stride))
            self.branch1_bn = batch_norm(dim_out)
        self.branch2 = BottleneckTransform(dim_in, dim_out, dim_inner, temporal_kernel, stride)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shortcut = x
        if self.shortcut_pool:  # ceil_mode: the same output size as branch2's padded strided conv
            shortcut = frame_pool(shortcut, 'avg', self.shortcut_pool, self.shortcut_pool, ceil_mode=True,
                                  as_2d=self.pool_as_2d)
        if self.has_branch1:
            shortcut = self.branch1_bn(self.branch1(shortcut))
        return F.relu(shortcut + self.branch2(x))


class ResStage(nn.Layer):
    """One ResNet stage (res2..res5) for every pathway: blocks ``pathway{p}_res{i}``; the first block of each
    pathway carries the stage's spatial stride. Conv ``a`` of the first ``num_temporal_blocks`` blocks (all when
    None) uses its pathway's temporal kernel, of the others 1 (PySlowFast's ``NUM_BLOCK_TEMP_KERNEL``: R101_50_50
    keeps temporal kernels in 6 of res4's 23 blocks)."""

    def __init__(self, dim_in: Sequence[int], dim_out: Sequence[int], dim_inner: Sequence[int],
                 temporal_kernel: Sequence[int], stride: int, num_blocks: int, shortcut_avg_pool: bool = False,
                 num_temporal_blocks: Optional[int] = None):
        super().__init__()
        self.num_pathways = len(dim_in)
        self.num_blocks = num_blocks
        temporal = num_blocks if num_temporal_blocks is None else num_temporal_blocks
        for p in range(self.num_pathways):
            for i in range(num_blocks):
                block = ResBlock(dim_in[p] if i == 0 else dim_out[p], dim_out[p], dim_inner[p],
                                 temporal_kernel[p] if i < temporal else 1, stride if i == 0 else 1, shortcut_avg_pool)
                self.add_sublayer(f'pathway{p}_res{i}', block)

    def forward(self, x: List[paddle.Tensor]) -> List[paddle.Tensor]:
        out = []
        for p in range(self.num_pathways):
            y = x[p]
            for i in range(self.num_blocks):
                y = getattr(self, f'pathway{p}_res{i}')(y)
            out.append(y)
        return out


class ResNetBasicHead(nn.Layer):
    """Per-pathway average pool (stride 1) -> concat -> dropout -> FC, applied at every remaining position.

    The pool window is the training clip's final feature map, so a 224 training crop leaves one position and a 256
    test crop leaves 2x2: the test is fully convolutional (original and PySlowFast). Training mode returns logits
    ``[N, num_classes]`` (averaged over positions); eval mode returns the softmax at each position averaged over
    positions: probabilities ``[N, num_classes]`` that sum to 1.

    ``global_pool_in_training``: training clips of any frames and size pool their whole map (multigrid training's
    smaller shapes, as PySlowFast's adaptive pool); at the training clip's shape that is the same pool. Eval is
    unchanged.
    """

    def __init__(self, dim_in: Sequence[int], num_classes: int, pool_size: Sequence[Sequence[int]],
                 dropout_rate: float):
        super().__init__()
        self.pool_size = [list(size) for size in pool_size]
        self.global_pool_in_training = False
        self.dropout = nn.Dropout(p=dropout_rate)
        self.projection = nn.Linear(
            sum(dim_in), num_classes,
            weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(mean=0.0, std=0.01)),
            bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))

    def pooled(self, x: List[paddle.Tensor]) -> paddle.Tensor:
        """What the FC sees at each remaining position: ``[N, t, h, w, sum(dim_in)]``."""
        if self.training and self.global_pool_in_training:
            x = paddle.concat([F.adaptive_avg_pool3d(feature, 1) for feature in x], axis=1)
            return x.transpose([0, 2, 3, 4, 1])
        for p, (feature, size) in enumerate(zip(x, self.pool_size)):
            if any(have < need for have, need in zip(feature.shape[2:], size)):
                raise ValueError(f'pathway {p} feature map {list(feature.shape[2:])} is smaller than the head pool '
                                 f'{size}: input clips need MODEL.num_frames frames (/ alpha on the slow pathway) '
                                 'and at least MODEL.crop_size pixels')
        x = paddle.concat([F.avg_pool3d(feature, size, stride=1) for feature, size in zip(x, self.pool_size)],
                          axis=1)
        return x.transpose([0, 2, 3, 4, 1])  # [N, C, t, h, w] -> [N, t, h, w, C]: the FC acts per position

    def features(self, x: List[paddle.Tensor]) -> paddle.Tensor:
        """The clip's features ``[N, sum(dim_in)]``: the FC's input averaged over positions (so the FC of them is
        the train-mode logits)."""
        return self.pooled(x).mean(axis=[1, 2, 3])

    def forward(self, x: List[paddle.Tensor]) -> paddle.Tensor:
        x = self.projection(self.dropout(self.pooled(x)))
        if not self.training:
            x = F.softmax(x, axis=-1)
        return x.mean(axis=[1, 2, 3])


# ----------------------------------------------------------------------------------------------------------------
# Size and cost

def count_parameters(model: nn.Layer) -> int:
    """Trainable parameters (BN running statistics excluded), the figure papers report."""
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


def count_flops(model: nn.Layer, input_shapes: Sequence[Sequence[int]]) -> int:
    """Multiply-adds of convs and FC layers for one forward pass at ``input_shapes`` (batch 1), the paper's "FLOPs"
    convention. Runs one forward pass in eval mode without gradients."""
    total = [0]

    def conv_hook(layer, inputs, output):
        kernel = layer.weight.shape  # [C_out, C_in / groups, kT, kH, kW]
        total[0] += int(np.prod(output.shape[1:])) * int(np.prod(kernel[1:]))

    def linear_hook(layer, inputs, output):
        total[0] += int(np.prod(output.shape[1:])) * layer.weight.shape[0]

    hooks = []
    for layer in model.sublayers():
        if isinstance(layer, nn.Conv3D):
            hooks.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            hooks.append(layer.register_forward_post_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model([paddle.zeros([1] + list(shape), dtype='float32') for shape in input_shapes])
    finally:
        for hook in hooks:
            hook.remove()
        if was_training:
            model.train()
    return total[0]


@paddle.no_grad()
def precise_bn(model: nn.Layer, inputs: Iterable[List[paddle.Tensor]], num_batches: int, world: int) -> int:
    """Replace BN running statistics by their exact average over ``num_batches`` of the training ``inputs`` (model
    inputs per batch; PySlowFast's precise BN), averaged over ranks. Returns the batches used."""
    layers = [m for m in model.sublayers() if isinstance(m, nn.BatchNorm3D)]
    momenta = [m._momentum for m in layers]
    sums = [(paddle.zeros_like(m._mean), paddle.zeros_like(m._variance)) for m in layers]
    for m in layers:
        m._momentum = 0.0  # each forward overwrites the running statistics with the batch's
    model.train()
    used = 0
    for batch in inputs:
        model(batch)
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
