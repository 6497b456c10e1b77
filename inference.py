"""Deployment: export the eval network as a static Paddle Inference model, and run one with Paddle Inference.

An exported model is a folder: ``slowfast.pdmodel`` (Paddle 2.x) or ``slowfast.json`` (Paddle 3.x, PIR) with
``slowfast.pdiparams``, and ``export.json`` describing the inputs it takes. Batch size is free; frames and crop size
are fixed at export. Its outputs are the eval network's class probabilities, averaged over spatial positions, and
the clip features the classifier sees (``VideoNetwork.scores_and_features``; exports made before they were added
have the probabilities only).
"""
import copy
import json
import logging
import os
import shutil
from typing import Dict, List, Optional

import numpy as np
import paddle

from atomic import fsync_dir, fsync_file
from config_utils import AttrDict, input_shapes
from errors import WeightsError
from model_utils import pools_as_2d

logger = logging.getLogger(__name__)

NAME = 'slowfast'


def fold_batch_norms(model: paddle.nn.Layer) -> int:
    """Fold every batch norm of the eval network ``model`` into the convolution before it: the weight scaled per
    output channel by ``gamma / sqrt(var + eps)``, a bias ``beta - mean * gamma / sqrt(var + eps)`` added, and an
    identity left in the norm's place. The same function with one op fewer after every convolution (Paddle
    Inference fuses batch norm into conv2d, not into conv3d). Each norm ``X_bn`` follows the convolution ``X`` of
    its layer, a ``_bn`` its layer's one convolution. Returns how many were folded."""
    folded = 0
    for parent in [model] + list(model.sublayers()):
        children = dict(parent.named_children())
        for name, norm in children.items():
            if not isinstance(norm, paddle.nn.BatchNorm3D):
                continue
            convs = [c for n, c in children.items() if isinstance(c, paddle.nn.Conv3D) and
                     (n == name[:-len('_bn')] or name == '_bn')]
            if len(convs) != 1:
                raise ValueError(f'no single convolution before the batch norm {name} of {type(parent).__name__}')
            conv = convs[0]
            scale = norm.weight.numpy().astype(np.float64) / np.sqrt(norm._variance.numpy().astype(np.float64) +
                                                                     norm._epsilon)
            shift = norm.bias.numpy() - norm._mean.numpy() * scale
            weight = conv.weight.numpy().astype(np.float64) * scale.reshape([-1] + [1] * (conv.weight.ndim - 1))
            conv.weight.set_value(weight.astype(np.float32))
            if conv.bias is None:
                conv.bias = conv.create_parameter([len(shift)], is_bias=True)
            else:
                shift = shift + conv.bias.numpy() * scale
            conv.bias.set_value(shift.astype(np.float32))
            setattr(parent, name, paddle.nn.Identity())
            folded += 1
    return folded


class _Exported(paddle.nn.Layer):
    """What is exported: the eval network's probabilities and clip features from one pass."""

    def __init__(self, network: paddle.nn.Layer):
        super().__init__()
        self.network = network

    def forward(self, x: List[paddle.Tensor]):
        return self.network.scores_and_features(x)


def export(model: paddle.nn.Layer, cfg: AttrDict, size: int, save_dir: str, weights: str = '',
           fold: bool = True) -> Dict:
    """``paddle.jit.save`` ``model`` (eval mode) for its pathways' clips (``[slow, fast]``, or ``[slow]`` for
    Slow-only) of ``size`` x ``size`` pixels, any batch, rewritten for Paddle Inference: its batch norms folded into
    the convolutions and its ``[1, k, k]`` pools run as 2D pools, which oneDNN runs (``fold`` False: neither, for
    comparison).

    Writes into a temporary folder renamed to ``save_dir`` at the end, so an interrupted export leaves nothing
    half-written. Returns the description saved as ``export.json``.
    """
    m = cfg.MODEL
    shapes = input_shapes(cfg, size)
    names = ['slow', 'fast'][:len(shapes)]
    spec = [paddle.static.InputSpec([None] + shape, 'float32', name) for shape, name in zip(shapes, names)]
    meta = {'name': m.name, 'num_classes': m.num_classes, 'num_frames': m.num_frames, 'alpha': m.alpha, 'size': size,
            'image_mean': list(m.image_mean), 'image_std': list(m.image_std), 'inputs': names,
            'outputs': ['probabilities', 'features'], 'feature_dim': model.feature_dim, 'weights': weights,
            'paddle': paddle.__version__}
    save_dir = os.path.abspath(save_dir)
    tmp = f'{save_dir}.tmp{os.getpid()}'
    os.makedirs(tmp, exist_ok=True)
    try:
        model.eval()
        network = copy.deepcopy(model)  # the caller's network keeps its batch norms
        meta['folded_batch_norms'] = fold_batch_norms(network) if fold else 0
        meta['pools_as_2d'] = pools_as_2d(network) if fold else 0
        paddle.jit.save(_Exported(network), os.path.join(tmp, NAME), input_spec=[spec])
        with open(os.path.join(tmp, 'export.json'), 'w') as f:
            json.dump(meta, f, indent=1)
        for name in os.listdir(tmp):  # on disk before the rename makes them visible (atomic.py's rule)
            fsync_file(os.path.join(tmp, name))
        fsync_dir(tmp)
        if os.path.isdir(save_dir):  # replace an older export as a whole
            old = f'{save_dir}.old{os.getpid()}'
            os.replace(save_dir, old)
            os.replace(tmp, save_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, save_dir)
        fsync_dir(os.path.dirname(save_dir))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def model_files(model_dir: str):
    """``(program file, params file, export.json contents)`` of an exported model; WeightsError naming it."""
    params = os.path.join(model_dir, NAME + '.pdiparams')
    program = next((os.path.join(model_dir, NAME + ext) for ext in ('.json', '.pdmodel')
                    if os.path.isfile(os.path.join(model_dir, NAME + ext))), None)
    meta_file = os.path.join(model_dir, 'export.json')
    if not (program and os.path.isfile(params) and os.path.isfile(meta_file)):
        raise WeightsError(f'no exported model in {model_dir!r} (expected {NAME}.pdmodel or {NAME}.json, '
                                f'{NAME}.pdiparams and export.json; make one with tools/deploy/export_model.py)')
    with open(meta_file, encoding='utf-8-sig') as f:
        return program, params, json.load(f)


class InferenceModel:
    """Callable like the eval network: pathway tensors in, a probabilities tensor out (and
    ``scores_and_features``), run by Paddle Inference (oneDNN on CPU; CUDA, and TensorRT with ``use_tensorrt``, on
    GPU)."""

    def __init__(self, model_dir: str, gpu_id: Optional[int] = None, use_tensorrt: bool = False,
                 threads: Optional[int] = None, max_batch: int = 32):
        program, params, self.meta = model_files(model_dir)
        self.model_dir = model_dir
        from paddle import inference

        config = inference.Config(program, params)
        if gpu_id is not None:
            config.enable_use_gpu(1024, gpu_id)
            if use_tensorrt:
                config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=max_batch, min_subgraph_size=3,
                                              precision_mode=inference.PrecisionType.Float32, use_static=False,
                                              use_calib_mode=False)
        else:
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_cpu_math_library_num_threads(threads or int(os.environ.get('OMP_NUM_THREADS', 0))
                                                    or os.cpu_count() or 1)
        config.disable_glog_info()
        try:  # Paddle Inference parses the program and reads raw tensors: no pickle, so nothing in them runs
            self.predictor = inference.create_predictor(config)
        except Exception as error:  # the C++ reader's errors come as RuntimeError, ValueError, UnicodeDecodeError
            reason = (str(error).strip().splitlines() or [''])[-1][:200]
            raise WeightsError(f'{model_dir}: Paddle Inference cannot load this exported model '
                               f'({type(error).__name__}: {reason}); export it again with tools/deploy/export_model.py'
                               ) from None
        self.inputs = [self.predictor.get_input_handle(n) for n in self.predictor.get_input_names()]
        self.outputs = [self.predictor.get_output_handle(n) for n in self.predictor.get_output_names()]
        logger.info('Paddle Inference model %s (%s, %s): clips of %d frames at %d px, %d classes', model_dir,
                    os.path.basename(program), f'GPU {gpu_id}' + (' + TensorRT' if use_tensorrt else '')
                    if gpu_id is not None else 'CPU + oneDNN', self.meta['num_frames'], self.meta['size'],
                    self.meta['num_classes'])

    def check(self, cfg: AttrDict, size: int) -> None:
        """WeightsError if the exported model does not take what ``cfg`` will feed it."""
        m, meta = cfg.MODEL, self.meta
        wanted = {'name': m.name, 'num_classes': m.num_classes, 'num_frames': m.num_frames, 'alpha': m.alpha,
                  'size': size}
        meta = dict({'name': 'SLOWFAST'}, **meta)  # exports made before the Slow-only model are SlowFast's
        wrong = [f'{k} {meta.get(k)} (config: {v})' for k, v in wanted.items() if meta.get(k) != v]
        if wrong:
            raise WeightsError(f'the exported model does not match the config: {", ".join(wrong)}; export it again '
                             'with this config (tools/deploy/export_model.py --size = the test target_size)')

    @property
    def feature_dim(self) -> int:
        """Width of the clip features; WeightsError for an export without them."""
        if len(self.outputs) < 2:
            raise WeightsError(f'{self.model_dir}: this exported model has no clip features output (exported before '
                               'they were added): export it again with tools/deploy/export_model.py')
        return int(self.meta['feature_dim'])

    def run(self, inputs: List[paddle.Tensor]) -> List[np.ndarray]:
        for handle, x in zip(self.inputs, inputs):
            array = np.ascontiguousarray(x.numpy() if hasattr(x, 'numpy') else x, dtype=np.float32)
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(array)
        self.predictor.run()
        return [output.copy_to_cpu() for output in self.outputs]

    def __call__(self, inputs: List[paddle.Tensor]) -> paddle.Tensor:
        return paddle.to_tensor(self.run(inputs)[0])

    def scores_and_features(self, inputs: List[paddle.Tensor]):
        """``(probabilities, clip features)`` (``feature_dim`` says whether the export has them)."""
        probs, features = self.run(inputs)[:2]
        return paddle.to_tensor(probs), paddle.to_tensor(features)
