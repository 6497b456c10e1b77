"""Conversion of a published SlowFast checkpoint into this project's names and layouts (``.pdparams``), used by
tools/weights/convert_weights.py, model_zoo.py and the tests' references.

The source format is detected from the file:

- PySlowFast ``.pyth`` (``model_state``, names like ``s2.pathway0_res0.branch2.a.weight``),
- pytorchvideo ``.pyth`` (``blocks.*`` names; the PySlowFast-wrapped zoo files carry a ``model.`` prefix),
- PySlowFast Caffe2 ``.pkl`` (``blobs``; read without torch, by an unpickler that only rebuilds numpy arrays),
- PaddleVideo ``.pdparams`` (``backbone.*`` / ``head.*``) and the original Paddle port's ``.pdparams`` (as is).

Every tensor is mapped (BN running statistics renamed, the classifier transposed, ``num_batches_tracked`` and
Caffe2 optimizer blobs dropped) and checked against the model the config builds: any unmapped, missing or
mis-shaped tensor stops the conversion with its name, and nothing is written. Without a config the model is
recognised from the file's tensors (depth, temporal kernels, fusion kernel, widths, classes) among the shipped
configs (``FAMILY``); the frame-rate ratio ``alpha`` is not in the weights and comes from that config. torch is
needed only for ``.pyth``. No file is unpickled with code: ``.pyth`` files are read with
``torch.load(weights_only=True)``, ``.pdparams`` and ``.pkl`` by ``checkpoint.load_paddle_file``'s reader (arrays,
numbers, strings and containers only); ``allow_pickle`` lifts that for a file you trust.
"""
import logging
import os
import pickle
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle  # before setup_logging: importing Paddle 2.6 resets the root log level

from checkpoint import RefusedPickle, atomic_save, load_paddle_file, restricted_unpickle
from config_utils import STAGE_DEPTHS, parse_config
from errors import WeightsError
from model import build_model

logger = logging.getLogger(__name__)

FORMATS = ('pyslowfast', 'pytorchvideo', 'caffe2', 'paddlevideo', 'paddle')
ARCHS = {'4x16': {'alpha': 8, 'fusion_kernel_size': 5}, '8x8': {'alpha': 4, 'fusion_kernel_size': 7}}
ROOT = os.path.dirname(os.path.abspath(__file__))
# The shipped configs of the family, told apart by what the weights fix (FAMILY_KEYS).
FAMILY = ('slowfast.yaml', 'configs/slowfast_r50_8x8.yaml', 'configs/slowfast_r101_8x8.yaml',
          'configs/slowfast_16x8_r101_50_50.yaml', 'configs/slow_r50_8x8.yaml', 'configs/slow_r50_4x16.yaml')
FAMILY_KEYS = ('name', 'depth', 'fusion_kernel_size', 'num_block_temp_kernel')
HEAD_WEIGHT = 'head.projection.weight'


class ConversionError(WeightsError):
    """A checkpoint that cannot be converted into the configured model; the message names the tensors."""


class UnreadableCheckpoint(ConversionError):
    """A file that cannot be read at all (cut short, damaged, not a checkpoint), as opposed to one refused or not
    fitting the model."""


# ---- reading ------------------------------------------------------------------------------------------------------

def _strip_prefix(state: Dict, prefixes=('module.', 'model.')) -> Dict:
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _read_torch(path: str, allow_pickle: bool) -> Dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ConversionError(f'{path}: reading a .pyth needs torch (pip install torch; the CPU wheel is enough)')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=not allow_pickle)
    except pickle.UnpicklingError as error:
        if allow_pickle:  # no refusal with the flag: a file pickle cannot read
            raise UnreadableCheckpoint(f'{path}: not a file written by torch.save, or cut short '
                                       f'({str(error).splitlines()[0][:200]})') from None
        raise ConversionError(f'{path} holds objects other than tensors ({str(error).splitlines()[0][:200]}); '
                              'if you trust the file, convert it with --allow_pickle') from None
    except Exception as error:  # a cut or damaged file: RuntimeError (zip reader), EOFError, ValueError, ...
        raise UnreadableCheckpoint(f'{path}: not a file written by torch.save, or cut short ({type(error).__name__}: '
                              f'{str(error).splitlines()[0][:200] if str(error) else ""})') from None
    if isinstance(obj, dict):
        for key in ('model_state', 'state_dict', 'model'):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(hasattr(v, 'numpy') for v in obj.values()):
        raise ConversionError(f'{path}: no state dict of tensors found (looked for model_state / state_dict)')
    return {k: v.detach().cpu().numpy() for k, v in _strip_prefix(obj).items()}


def read_checkpoint(path: str, allow_pickle: bool = False) -> Tuple[str, Dict[str, np.ndarray]]:
    """``(format, {source name: array})`` of a checkpoint file."""
    if not os.path.isfile(path):
        raise ConversionError(f'checkpoint not found: {path}')
    ext = os.path.splitext(path)[1].lower()
    if ext == '.pkl':
        try:  # a Caffe2 .pkl holds only numpy arrays: read by the unpickler Paddle files are read with
            obj = restricted_unpickle(path)
        except RefusedPickle as refused:
            raise ConversionError(f'{path}: refusing to load {refused}: a Caffe2 .pkl holds only numpy '
                                  'arrays') from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
            raise UnreadableCheckpoint(f'{path}: not a Caffe2 checkpoint, or cut short ({error})') from None
        blobs = obj.get('blobs') if isinstance(obj, dict) else None
        if not isinstance(blobs, dict):
            raise ConversionError(f'{path}: no "blobs" dict (not a PySlowFast Caffe2 checkpoint)')
        return 'caffe2', {k: np.asarray(v) for k, v in blobs.items()}
    if ext in ('.pdparams', ''):
        state = load_paddle_file(path if ext else path + '.pdparams', allow_pickle, ConversionError,
                                 UnreadableCheckpoint)
        if not isinstance(state, dict):
            raise ConversionError(f'{path}: not a state dict')
        state = {k: np.asarray(v) for k, v in state.items()}
        return ('paddlevideo' if any(k.startswith('backbone.') for k in state) else 'paddle'), state
    if ext in ('.pyth', '.pth', '.pt'):
        state = _read_torch(path, allow_pickle)
        return ('pytorchvideo' if any(k.startswith('blocks.') for k in state) else 'pyslowfast'), state
    raise ConversionError(f'{path}: unknown checkpoint type {ext!r} (expected .pyth, .pth, .pkl or .pdparams)')


# ---- names ----------------------------------------------------------------------------------------------------------
# Every format is first renamed to PySlowFast's names, then PySlowFast -> this project (spec sections 2.5, 3, 4).

_C2_LEAF = {'w': 'weight', 'b': 'bias', 's': 'weight', 'rm': 'running_mean', 'riv': 'running_var'}
_C2_IGNORED = re.compile(r'(_momentum|^lr|^model_iter|^iter)$')  # optimizer state saved beside the weights


def _pathway(g: str) -> int:
    return 1 if g else 0  # Caffe2 prefixes the Fast pathway's blobs with ``t_``


_CAFFE2_RULES: List[Tuple[str, Callable]] = [
    (r'(t_)?conv1_(w)', lambda g: f's1.pathway{_pathway(g[1])}_stem.conv.weight'),
    (r'(t_)?res_conv1_bn_(s|b|rm|riv)', lambda g: f's1.pathway{_pathway(g[1])}_stem.bn.{_C2_LEAF[g[2]]}'),
    (r't_pool1_subsample_(w)', lambda g: 's1_fuse.conv_f2s.weight'),
    (r't_pool1_subsample_bn_(s|b|rm|riv)', lambda g: f's1_fuse.bn.{_C2_LEAF[g[1]]}'),
    (r't_res(\d+)_\d+_branch2c_bn_subsample_(w)', lambda g: f's{g[1]}_fuse.conv_f2s.weight'),
    (r't_res(\d+)_\d+_branch2c_bn_subsample_bn_(s|b|rm|riv)', lambda g: f's{g[1]}_fuse.bn.{_C2_LEAF[g[2]]}'),
    (r'(t_)?res(\d+)_(\d+)_branch2([abc])_(w)',
     lambda g: f's{g[2]}.pathway{_pathway(g[1])}_res{g[3]}.branch2.{g[4]}.weight'),
    (r'(t_)?res(\d+)_(\d+)_branch2([abc])_bn_(s|b|rm|riv)',
     lambda g: f's{g[2]}.pathway{_pathway(g[1])}_res{g[3]}.branch2.{g[4]}_bn.{_C2_LEAF[g[5]]}'),
    (r'(t_)?res(\d+)_(\d+)_branch1_(w)', lambda g: f's{g[2]}.pathway{_pathway(g[1])}_res{g[3]}.branch1.weight'),
    (r'(t_)?res(\d+)_(\d+)_branch1_bn_(s|b|rm|riv)',
     lambda g: f's{g[2]}.pathway{_pathway(g[1])}_res{g[3]}.branch1_bn.{_C2_LEAF[g[4]]}'),
    (r'pred_(w|b)', lambda g: f'head.projection.{_C2_LEAF[g[1]]}'),
]

_PYTORCHVIDEO_RULES: List[Tuple[str, Callable]] = [
    (r'blocks\.0\.multipathway_blocks\.(\d)\.conv\.(.+)', lambda g: f's1.pathway{g[1]}_stem.conv.{g[2]}'),
    (r'blocks\.0\.multipathway_blocks\.(\d)\.norm\.(.+)', lambda g: f's1.pathway{g[1]}_stem.bn.{g[2]}'),
    (r'blocks\.(\d)\.multipathway_fusion\.conv_fast_to_slow\.(.+)', lambda g: f's{int(g[1]) + 1}_fuse.conv_f2s.{g[2]}'),
    (r'blocks\.(\d)\.multipathway_fusion\.norm\.(.+)', lambda g: f's{int(g[1]) + 1}_fuse.bn.{g[2]}'),
    (r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch1_conv\.(.+)',
     lambda g: f's{int(g[1]) + 1}.pathway{g[2]}_res{g[3]}.branch1.{g[4]}'),
    (r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch1_norm\.(.+)',
     lambda g: f's{int(g[1]) + 1}.pathway{g[2]}_res{g[3]}.branch1_bn.{g[4]}'),
    (r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch2\.conv_([abc])\.(.+)',
     lambda g: f's{int(g[1]) + 1}.pathway{g[2]}_res{g[3]}.branch2.{g[4]}.{g[5]}'),
    (r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch2\.norm_([abc])\.(.+)',
     lambda g: f's{int(g[1]) + 1}.pathway{g[2]}_res{g[3]}.branch2.{g[4]}_bn.{g[5]}'),
    (r'blocks\.6\.proj\.(.+)', lambda g: f'head.projection.{g[1]}'),
]

# pytorchvideo's single-pathway ResNet (slow_r50) in its SlowFast's names: pathway 0, and the head is blocks.5
_SINGLE_TO_MULTIPATHWAY = [(re.compile(p), r) for p, r in (
    (r'^blocks\.0\.(conv|norm)\.', r'blocks.0.multipathway_blocks.0.\1.'),
    (r'^blocks\.(\d)\.res_blocks\.', r'blocks.\1.multipathway_blocks.0.res_blocks.'),
    (r'^blocks\.5\.proj\.', 'blocks.6.proj.'))]

_PYSLOWFAST_TO_PROJECT = [(re.compile(p), r) for p, r in (
    (r'_stem\.conv\.', '_stem._conv.'), (r'_stem\.bn\.', '_stem._bn.'),
    (r'_fuse\.conv_f2s\.', '_fuse._conv_f2s.'), (r'_fuse\.bn\.', '_fuse._bn.'),
    (r'\.running_mean$', '._mean'), (r'\.running_var$', '._variance'))]


def _rename(state: Dict[str, np.ndarray], rules, ignored=None) -> Tuple[Dict[str, np.ndarray], List[str]]:
    out, dropped, unmapped = {}, [], []
    for name, array in state.items():
        if name.endswith('num_batches_tracked') or (ignored and ignored.search(name)):
            dropped.append(name)
            continue
        for pattern, repl in rules:
            match = re.fullmatch(pattern, name)
            if match:
                out[repl(match)] = array
                break
        else:
            unmapped.append(name)
    if unmapped:
        raise ConversionError(f'{len(unmapped)} tensors have no mapping: {", ".join(unmapped[:20])}'
                              f'{" ..." if len(unmapped) > 20 else ""}')
    return out, dropped


def to_project_names(fmt: str, state: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Rename (and re-layout) a source state dict; returns ``(converted, dropped source names)``."""
    if fmt not in FORMATS:
        raise ConversionError(f'unknown format {fmt!r}; one of {", ".join(FORMATS)}')
    if fmt == 'paddle':
        return dict(state), []
    if fmt == 'paddlevideo':
        out = {k[len('backbone.'):] if k.startswith('backbone.') else k: v for k, v in state.items()}
        return out, []
    dropped: List[str] = []
    if fmt == 'caffe2':
        state, dropped = _rename(state, _CAFFE2_RULES, _C2_IGNORED)
    elif fmt == 'pytorchvideo':
        if not any('.multipathway_blocks.' in name for name in state):
            for pattern, repl in _SINGLE_TO_MULTIPATHWAY:
                state = {pattern.sub(repl, name): array for name, array in state.items()}
        state, dropped = _rename(state, _PYTORCHVIDEO_RULES)
    out = {}
    for name, array in state.items():
        if name.endswith('num_batches_tracked'):
            dropped.append(name)
            continue
        for pattern, repl in _PYSLOWFAST_TO_PROJECT:
            name = pattern.sub(repl, name)
        if name == HEAD_WEIGHT:  # torch / Caffe2 Linear [classes, features] (or [.., 1, 1, 1]) -> Paddle [in, out]
            array = array.reshape(array.shape[0], -1).T
        out[name] = np.ascontiguousarray(array)
    return out, dropped


# ---- checking -------------------------------------------------------------------------------------------------------

def check_fits(converted: Dict[str, np.ndarray], model_state: Dict) -> None:
    """ConversionError naming every missing, unexpected and mis-shaped tensor, with the config change that fits."""
    shape = {k: list(v.shape) for k, v in model_state.items()}
    missing = [k for k in shape if k not in converted]
    unexpected = [k for k in converted if k not in shape]
    mismatched = [k for k in shape if k in converted and list(converted[k].shape) != shape[k]]
    if not (missing or unexpected or mismatched):
        return
    hints = []
    if HEAD_WEIGHT in mismatched and converted[HEAD_WEIGHT].shape[0] == shape[HEAD_WEIGHT][0]:
        hints.append(f'-o MODEL.num_classes={converted[HEAD_WEIGHT].shape[1]}')
    fuse = 's2_fuse._conv_f2s.weight'
    if fuse in mismatched and converted[fuse].shape[2] != shape[fuse][2]:
        kernel = converted[fuse].shape[2]
        arch = [a for a, v in ARCHS.items() if v['fusion_kernel_size'] == kernel]
        hints.append(f'--arch {arch[0]}' if arch else f'-o MODEL.fusion_kernel_size={kernel}')
    if mismatched and not hints:
        hints.append('check MODEL.depth, width_per_group, beta and fusion_conv_channel_ratio')
    parts = [f'{what}: {", ".join(items[:12])}{" ..." if len(items) > 12 else ""}' for what, items in (
        ('missing from the file', missing), ('not in the model', unexpected),
        ('shape mismatch', [f'{k} {list(converted[k].shape)} vs model {shape[k]}' for k in mismatched])) if items]
    raise ConversionError('the checkpoint does not fit the configured model: ' + '; '.join(parts)
                          + (f' (try {" and ".join(hints)})' if hints else ''))


def read_architecture(converted: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """The MODEL keys a converted state dict fixes: name (SLOWFAST, or SLOW with one pathway), depth,
    num_block_temp_kernel ([] when the blocks' temporal kernels are the paper's), width_per_group, num_classes and,
    for SlowFast, fusion_kernel_size, beta, fusion_conv_channel_ratio. (alpha and the clip length are not in the
    weights.)"""
    two = 's1.pathway1_stem._conv.weight' in converted
    needed = ['s1.pathway0_stem._conv.weight', HEAD_WEIGHT] + (['s1_fuse._conv_f2s.weight'] if two else [])
    absent = [k for k in needed if k not in converted]
    if absent:
        raise ConversionError(f'not a SlowFast or Slow checkpoint: no {", ".join(absent)}')
    p = 1 if two else 0  # the pathway whose temporal kernels say how many blocks have them: fast, or the only one
    blocks = tuple(len({m.group(1) for k in converted
                        for m in [re.fullmatch(rf's{s}\.pathway{p}_res(\d+)\.branch2\.a\.weight', k)] if m})
                   for s in range(2, 6))
    depth = next((d for d, counts in STAGE_DEPTHS.items() if counts == blocks), None)
    if depth is None:
        raise ConversionError(f'res2..res5 hold {list(blocks)} blocks: not a ResNet depth of '
                              f'{", ".join(map(str, STAGE_DEPTHS))}')
    temporal = [sum(converted[f's{s}.pathway{p}_res{i}.branch2.a.weight'].shape[2] > 1 for i in range(n))
                for s, n in zip(range(2, 6), blocks)]
    paper = blocks if two else (0, 0) + blocks[2:]  # the slow pathway has no temporal kernels in res2, res3
    slow = converted['s1.pathway0_stem._conv.weight']
    arch = {'name': 'SLOWFAST' if two else 'SLOW', 'depth': depth,
            'num_block_temp_kernel': [] if tuple(temporal) == paper else temporal,
            'width_per_group': slow.shape[0], 'num_classes': converted[HEAD_WEIGHT].shape[1]}
    if two:
        fast, fuse = converted['s1.pathway1_stem._conv.weight'], converted['s1_fuse._conv_f2s.weight']
        arch.update(fusion_kernel_size=fuse.shape[2], beta=slow.shape[0] // fast.shape[0],
                    fusion_conv_channel_ratio=fuse.shape[0] // fast.shape[0])
    return arch


def recognise(converted: Dict[str, np.ndarray]) -> Tuple[str, List[str]]:
    """``(config, overrides)``: the shipped config of the family whose network the weights are, and the ``-o``
    overrides of the widths and class count where the file differs from it; ConversionError otherwise. Networks
    that differ only in their sampling (Slow 8x8 and 4x16) share weights: the first is taken, with a warning."""
    arch = read_architecture(converted)
    models = {path: parse_config(os.path.join(ROOT, path), []).MODEL for path in FAMILY}
    found = [path for path, model in models.items() if all(model[k] == arch[k] for k in FAMILY_KEYS if k in arch)]
    if not found:
        raise ConversionError('the weights are none of the shipped models (' + ', '.join(
            f'{k} {arch[k]}' for k in FAMILY_KEYS if k in arch) + f'; shipped: {", ".join(FAMILY)}): give --config '
            'and -o MODEL.alpha (the frame-rate ratio is not in the weights)')
    if len(found) > 1:
        logger.warning('the weights fit %s alike (they differ in sampling only): taking the first; give --config '
                       'for the one the checkpoint was trained with', ', '.join(found))
    return os.path.join(ROOT, found[0]), [f'MODEL.{k}={v}' for k, v in arch.items() if models[found[0]][k] != v]


def read_converted(src: str, fmt: str = 'auto', allow_pickle: bool = False):
    """``(format, state in this project's names, dropped names)`` of ``src``."""
    detected, state = read_checkpoint(src, allow_pickle)
    fmt = detected if fmt == 'auto' else fmt
    return (fmt,) + to_project_names(fmt, state)


def convert(src: str, cfg, fmt: str = 'auto', allow_pickle: bool = False):
    """``(format, converted state, dropped names)`` of ``src`` checked against the model ``cfg`` builds."""
    fmt, converted, dropped = read_converted(src, fmt, allow_pickle)
    check_fits(converted, build_model(cfg).state_dict())
    return fmt, converted, dropped


def convert_file(src: str, dst: str, config: Optional[str] = None, overrides: Sequence[str] = (),
                 fmt: str = 'auto', allow_pickle: bool = False) -> Tuple[str, List[str]]:
    """Convert ``src`` into ``dst`` (``.pdparams``, written atomically) for the model of ``config`` with
    ``overrides`` (recognised among the shipped configs when ``config`` is None); returns ``(config, overrides)``
    to evaluate and fine-tune the weights with."""
    overrides = list(overrides)
    fmt, converted, dropped = read_converted(src, fmt, allow_pickle)
    if config is None:
        config, found = recognise(converted)
        overrides = found + overrides
        logger.info('recognised %s%s: evaluate and fine-tune it with --config %s%s', os.path.relpath(config, ROOT),
                    f' with {" ".join(found)}' if found else '', os.path.relpath(config, ROOT),
                    ''.join(f' -o {o}' for o in found))
    cfg = parse_config(config, overrides)
    check_fits(converted, build_model(cfg).state_dict())
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    dst = dst if dst.endswith('.pdparams') else dst + '.pdparams'
    atomic_save({k: paddle.to_tensor(v) for k, v in converted.items()}, dst)
    logger.info('%s checkpoint %s: %d tensors converted%s -> %s (MODEL: depth %d, alpha %d, fusion kernel %d, '
                '%d classes)', fmt, src, len(converted),
                f', {len(dropped)} dropped ({", ".join(dropped[:5])}{" ..." if len(dropped) > 5 else ""})'
                if dropped else '', dst, cfg.MODEL.depth, cfg.MODEL.alpha, cfg.MODEL.fusion_kernel_size,
                cfg.MODEL.num_classes)
    return config, overrides
