"""The CPU fast stem: a 3D convolution computed frame by frame (a speed workaround, not a block of the paper).

Paddle's CPU ``conv3d`` unfolds the whole clip into one column buffer; for the fast pathway's stem (5x7x7 taps over
3 channels) that buffer is gigabytes and the convolution is bound by its memory traffic. ``FrameConv3D`` is a
``Conv3D`` with the same weights that, in dygraph on the CPU, runs as ``conv3d_by_frames`` (docs/BENCHMARKS.md).
"""
import zlib  # noqa: F401 -- loaded before paddle (Paddle 2.6.2 bug; README, Install)
from typing import Sequence

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer


class _SumOverTimeShifts(PyLayer):
    """``z [N, T + kt - 1, kt, M] -> [N, T, M]``, ``out[:, t] = sum_k z[:, t + k, k]``.

    Its own backward (``grad_z[:, s, k] = grad[:, s - k]``, one stacked copy) because autograd through kt slices of
    ``z`` builds kt zero-filled gradients of the full size of ``z`` and sums them: slower than the convolution.
    """

    @staticmethod
    def forward(ctx, z: paddle.Tensor, num_frames: int) -> paddle.Tensor:
        ctx.num_shifts = z.shape[2]
        with paddle.no_grad():
            return paddle.add_n([z[:, k:k + num_frames, k] for k in range(ctx.num_shifts)])

    @staticmethod
    def backward(ctx, grad: paddle.Tensor) -> paddle.Tensor:
        kt = ctx.num_shifts
        n, t, m = grad.shape
        edge = paddle.zeros([n, kt - 1, m], dtype=grad.dtype)
        padded = paddle.concat([edge, grad, edge], axis=1)  # [N, T + 2 (kt - 1), M]
        span = t + kt - 1
        return paddle.stack([padded[:, kt - 1 - k:kt - 1 - k + span] for k in range(kt)], axis=2)


def conv3d_by_frames(x: paddle.Tensor, weight: paddle.Tensor, stride: Sequence[int],
                     padding: Sequence[int]) -> paddle.Tensor:
    """``F.conv3d(x, weight, stride, padding)`` for a temporal stride of 1, computed as one 2D convolution of every
    frame with all kt temporal taps of the kernel (kt x C_out output channels) followed by a sum over time shifts.

    ``x [N, C, T, H, W]``, ``weight [C_out, C, kt, kh, kw]`` -> ``[N, C_out, T + 2 * padding[0] - kt + 1, h, w]``.
    Equal to ``F.conv3d`` up to float rounding (1e-6 relative). Paddle's CPU ``conv3d`` unfolds the whole clip
    into one column buffer (for the fast stem, 5x7x7 taps of 3 channels over 32x112x112 outputs: 1.2 GB) and is
    bound by that memory traffic; this unfolds one frame at a time for 7x7 taps only (docs/BENCHMARKS.md).
    """
    assert stride[0] == 1, 'conv3d_by_frames needs a temporal stride of 1'
    n, c, _, h, w = x.shape
    c_out, _, kt, kh, kw = weight.shape
    pad_t = padding[0]
    if pad_t:
        x = F.pad(x, [0, 0, 0, 0, pad_t, pad_t], data_format='NCDHW')
    frames_in = x.shape[2]
    frames = x.transpose([0, 2, 1, 3, 4]).reshape([n * frames_in, c, h, w])
    # transpose's backward gives the weight a strided gradient, which paddle.DataParallel's all-reduce skips without
    # a word (2 CPU ranks: that gradient alone stayed per rank); the multiply's backward hands it a dense one
    taps = (weight * 1.0).transpose([2, 0, 1, 3, 4]).reshape([kt * c_out, c, kh, kw])  # [kt * C_out, C, kh, kw]
    z = F.conv2d(frames, taps, stride=list(stride[1:]), padding=list(padding[1:]))  # [N * T', kt * C_out, h', w']
    out_h, out_w = z.shape[2:]
    frames_out = frames_in - kt + 1
    out = _SumOverTimeShifts.apply(z.reshape([n, frames_in, kt, c_out * out_h * out_w]), frames_out)
    return out.reshape([n, frames_out, c_out, out_h, out_w]).transpose([0, 2, 1, 3, 4])


class FrameConv3D(nn.Conv3D):
    """A Conv3D that, in dygraph on the CPU, runs as ``conv3d_by_frames`` (same weights, same result, several times
    faster for a large kernel over few input channels: the fast stem); elsewhere (GPU: cuDNN; a static graph, e.g.
    the exported model run by Paddle Inference's oneDNN) it is the plain Conv3D. Needs a temporal stride of 1."""

    def __init__(self, dim_in: int, dim_out: int, kernel: Sequence[int], stride: Sequence[int],
                 padding: Sequence[int], **kwargs):
        assert stride[0] == 1, 'FrameConv3D needs a temporal stride of 1'
        super().__init__(dim_in, dim_out, kernel_size=list(kernel), stride=list(stride), padding=list(padding),
                         **kwargs)
        self.frame_stride, self.frame_padding = list(stride), list(padding)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if paddle.in_dynamic_mode() and paddle.get_device() == 'cpu':
            out = conv3d_by_frames(x, self.weight, self.frame_stride, self.frame_padding)
            return out if self.bias is None else out + self.bias.reshape([1, -1, 1, 1, 1])  # a folded batch norm's
        return nn.Conv3D.forward(self, x)  # not super(): Paddle 2.6's to_static cannot translate a bare super()
