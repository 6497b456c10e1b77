import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from frame_conv import FrameConv3D, conv3d_by_frames


@pytest.mark.parametrize('x_shape, w_shape, stride, padding', [
    ([2, 3, 8, 20, 18], [4, 3, 5, 7, 7], (1, 2, 2), (2, 3, 3)),   # the fast stem at a small size
    ([1, 2, 6, 9, 9], [3, 2, 3, 3, 3], (1, 1, 1), (0, 1, 1)),     # no temporal padding: fewer output frames
    ([1, 3, 4, 11, 11], [2, 3, 1, 7, 7], (1, 2, 2), (0, 3, 3)),   # kt = 1 (the slow stem)
    ([2, 1, 7, 8, 8], [2, 1, 4, 1, 1], (1, 1, 1), (1, 0, 0)),     # even kt with asymmetric room
])
def test_conv3d_by_frames_equals_conv3d_with_gradients(x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(0)
    x_value = rng.standard_normal(x_shape).astype('float32')
    w_value = rng.standard_normal(w_shape).astype('float32')
    results = []
    for conv in (lambda x, w: F.conv3d(x, w, stride=list(stride), padding=list(padding)),
                 lambda x, w: conv3d_by_frames(x, w, stride, padding)):
        x = paddle.to_tensor(x_value, stop_gradient=False)
        w = paddle.to_tensor(w_value, stop_gradient=False)
        y = conv(x, w)
        grad_out = paddle.to_tensor(rng.standard_normal(y.shape).astype('float32')) if not results else \
            paddle.to_tensor(results[0][3])
        (y * grad_out).sum().backward()
        results.append((y.numpy(), x.grad.numpy(), w.grad.numpy(), grad_out.numpy()))
    (y0, gx0, gw0, _), (y1, gx1, gw1, _) = results
    if hasattr(w.grad, 'is_contiguous'):  # a strided gradient is skipped by DataParallel's all-reduce (Paddle 3.x)
        assert w.grad.is_contiguous()
    assert y0.shape == y1.shape
    for ref, got in ((y0, y1), (gx0, gx1), (gw0, gw1)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_frame_conv_runs_by_frames_in_dygraph_and_is_exported_as_conv3d(tmp_path):
    paddle.seed(0)
    layer = FrameConv3D(3, 4, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias_attr=False)
    assert list(layer.state_dict()) == ['weight']  # loads checkpoints of a plain Conv3D unchanged
    x = paddle.randn([1, 3, 6, 16, 16])
    expected = F.conv3d(x, layer.weight, stride=[1, 2, 2], padding=[2, 3, 3]).numpy()
    calls = []
    original = conv3d_by_frames.__globals__['conv3d_by_frames']
    conv3d_by_frames.__globals__['conv3d_by_frames'] = lambda *args: calls.append(1) or original(*args)
    try:
        got = layer(x).numpy()
        paddle.jit.save(layer, str(tmp_path / 'conv'), input_spec=[paddle.static.InputSpec([None, 3, 6, 16, 16])])
        traced = paddle.jit.load(str(tmp_path / 'conv'))(x).numpy()
    finally:
        conv3d_by_frames.__globals__['conv3d_by_frames'] = original
    assert calls == [1]  # dygraph took the frame path; the export traced a plain conv3d
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(traced, expected, rtol=1e-5, atol=1e-5)
