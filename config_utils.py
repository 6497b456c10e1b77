"""Configuration: the YAML schema, validation, command-line flags and ``-o`` overrides.

Every script starts with ``cfg, args = parse_args(mode)``. All config keys are declared once, in ``SCHEMA``, with
their type, the original recipe's value (``slowfast.yaml``, SlowFast-R50 4x16) and their description; a YAML file
may leave a key out (it then takes the recipe value) but may not add one. Errors exit with status 2 and name the
culprit.

    python config_utils.py [train|eval|infer] --config slowfast.yaml -o TRAIN.epoch=1   # print it, exit
    python config_utils.py --markdown > docs/CONFIG.md                                # the keys' reference page
"""
import argparse
import difflib
import logging
import math
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from errors import ConfigError

logger = logging.getLogger(__name__)


class AttrDict(dict):
    """A dict whose items are also attributes: ``cfg.TRAIN.base_lr``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


# Type tags of the schema. A float key accepts an int; a bool key accepts only true/false.
FLOAT_LIST = 'list of numbers'
INT_LIST = 'list of integers'
OPTIONAL_STR = 'string or null'
FACTOR_PAIRS = 'list of [frames factor, crop factor] pairs'
DOWNSAMPLING_STAGES = ('res3', 'res4', 'res5')
STAGE_LIST = 'a list of stage names from ' + ', '.join(DOWNSAMPLING_STAGES)

# section -> key -> (type, recipe value, help). Values are the original slowfast.yaml's (spec 1.1) plus the network
# knobs the original hard-coded (spec 1.5). The help text is the one description of each key: docs/CONFIG.md is
# generated from it (python config_utils.py --markdown > docs/CONFIG.md; a test fails when the page is stale), and
# slowfast.yaml must carry every key with its recipe value (tested).
SCHEMA: Dict[str, Dict[str, Tuple[Any, Any, str]]] = {
    'MODEL': {
        'name': (str, 'SLOWFAST', '`SLOWFAST`, or `SLOW`: the Slow-only ResNet, the paper\'s baseline (one pathway '
                 'over every sampled frame; needs `alpha: 1`)'),
        'format': (str, 'mp4', 'kept from the original; unused (every container FFmpeg decodes is read)'),
        'num_classes': (int, 400, 'classes: the head\'s outputs; list labels lie in [0, num_classes)'),
        'num_frames': (int, 32, 'T: frames of the fast pathway'),
        'sampling_rate': (int, 2, 'source-frame stride of the fast pathway at `target_fps` (the recipe\'s clip spans '
                          '64 frames = 2.13 s)'),
        'target_fps': (int, 30, 'frame rate the sampling is normalised to (a video\'s own rate rescales the span)'),
        'alpha': (int, 8, 'the slow pathway sees T / alpha frames and the lateral convs stride alpha (8: the 4x16 '
                  'model; 4 with `fusion_kernel_size` 7: the 8x8 model)'),
        'beta': (int, 8, 'beta_inv: fast-pathway channels = slow channels / beta'),
        'crop_size': (int, 224, 'training crop; sets the head\'s pooling window (crop_size / 32)'),
        'image_mean': (FLOAT_LIST, [0.45, 0.45, 0.45], 'RGB mean subtracted after scaling pixels to [0, 1]'),
        'image_std': (FLOAT_LIST, [0.225, 0.225, 0.225], 'RGB standard deviation divided by after the mean'),
        'depth': (int, 50, 'ResNet depth: 50, 101 or 152'),
        'width_per_group': (int, 64, 'slow stem width and res2 inner width (the original hard-coded 64)'),
        'fusion_kernel_size': (int, 5, 'temporal kernel of the fast-to-slow lateral conv (7 for the 8x8 model)'),
        'fusion_conv_channel_ratio': (int, 2, 'channel multiplier of the lateral conv'),
        'dropout_rate': (float, 0.5, 'dropout before the classifier'),
        'shortcut_avg_pool': (STAGE_LIST, [], 'stages (`res3`, `res4`, `res5`) whose downsampling shortcut averages '
                              'each 2x2 window before its 1x1x1 conv (ResNet-D) instead of keeping one position in '
                              'four: the same parameters, another function, so leave `[]` for published weights; the '
                              'demo uses `[res3, res4]`'),
        'num_block_temp_kernel': (INT_LIST, [], 'res2..res5: how many blocks (the first) keep the stage\'s temporal '
                                  'kernel, the others are 1x3x3 (PySlowFast\'s `NUM_BLOCK_TEMP_KERNEL`; `[3, 4, 6, '
                                  '3]` for R101_50_50); `[]`: all'),
        'frozen_stages': (int, 0, 'fine-tuning: 1 = the stem ... 4 = stem to res4 (and their fusions) get no '
                          'gradients; 0: none'),
        'freeze_bn': (bool, False, 'fine-tuning: every BN layer keeps its running statistics (its affine '
                      'parameters still learn)'),
    },
    'DATA': {
        'path_prefix': (str, '', 'folder that relative paths in the lists are joined to; "" = the list file\'s own '
                        'folder'),
        'num_workers': (int, 8, 'DataLoader worker processes per rank (0: in the main process)'),
        'num_retries': (int, 10, 'training: an undecodable video is replaced by up to this many other samples; when '
                        'they all fail too (11 in a row), training stops with exit status 3'),
        'label_map': (str, '', 'class names, one per line, line N = class id N (relative: to the config\'s folder; '
                      '"" = none): names in the confusion matrix and result.json. The shipped '
                      '`kinetics400_labels.txt` is the published checkpoints\' order and applies only to 400-class '
                      'models (with another `MODEL.num_classes` it is left out, logged); your own file must hold '
                      '`num_classes` names'),
    },
    'TRAIN': {
        'epoch': (int, 196, 'epochs; checkpoints are `slowfast_epoch{N}` from N = 0'),
        'target_size': (int, 224, 'side of the random square crop'),
        'min_size': (int, 256, 'the short side is scaled to a random size in [min_size, max_size] before the crop'),
        'max_size': (int, 320, 'see `min_size`'),
        'batch_size': (int, 64, 'global batch: divided by the number of ranks (`--batch_size`)'),
        'use_gpu': (bool, True, 'run on the GPU when Paddle has CUDA (`--use_gpu`)'),
        'num_gpus': (int, 8, 'informative: the batch is divided by the ranks actually launched'),
        'filelist': (str, './data/train.csv', 'the training list: `path label` or `path,label` lines '
                     '(tools/data/make_lists.py)'),
        'base_lr': (float, 0.1, 'the learning rate after the warmup (cosine: its peak), for the global batch'),
        'warmup_epochs': (float, 34, 'linear warmup from `warmup_start_lr` to the schedule\'s value'),
        'warmup_start_lr': (float, 0.01, 'the learning rate of the first step'),
        'l2_weight_decay': (float, 1e-4, 'weight decay (none on BN parameters)'),
        'momentum': (float, 0.9, 'SGD momentum (Nesterov)'),
        'save_interval': (int, 1, 'checkpoint every N epochs (and after the last)'),
        'checkpoint_every_steps': (int, 0, 'also a mid-epoch checkpoint every N optimizer steps, each replacing the '
                                   'previous one (0: only when a stop signal comes)'),
        'keep_checkpoints': (int, 3, 'keep the newest N end-of-epoch checkpoints and remove older ones as new ones are '
                             'written (0: keep every one, as the original; the newest, which `--resume` takes, always '
                             'stays)'),
        'keep_every': (int, 20, 'with `keep_checkpoints`: also keep the checkpoint of every N-th epoch (epochs N-1, '
                       '2N-1, ...; 0: none)'),
        'accumulate_steps': (int, 1, 'gradient accumulation; `batch_size` stays the effective global batch'),
        'bn_group': (int, 8, 'BN statistics over this many clips in training, whatever the ranks, the accumulation and '
                     'the multigrid stage: the recipe\'s 8 clips per GPU (sub-batch BN); 0: over each rank\'s whole '
                     'micro-batch'),
        'use_amp': (bool, False, 'mixed precision on GPU: convolutions and the head in `amp_dtype`, batch norm and '
                    'the loss in float32 (docs/TRAINING.md); a logged no-op on CPU'),
        'amp_dtype': (str, 'float16', '`float16` (with dynamic loss scaling) or `bfloat16`'),
        'head_lr_scale': (float, 1.0, 'the classifier learns at this x the scheduled LR (1.0: the original; the demo '
                          'uses 0.05: from scratch on small data, the classifier otherwise swings with every batch\'s '
                          'class mix)'),
        'random_flip': (bool, True, 'horizontal flip at p = 0.5; False when left/right is part of the class (a flip '
                        'turns "moving right" into "moving left")'),
        'label_smoothing': (float, 0.0, 'fine-tuning: targets (1 - e) one-hot + e / K; 0: the recipe\'s hard labels'),
        'mixup_alpha': (float, 0.0, 'fine-tuning: mixup of clip pairs, lambda ~ Beta(a, a); 0: off'),
        'cutmix_alpha': (float, 0.0, 'fine-tuning: CutMix of clip pairs (one box through all frames); 0: off'),
        'mix_switch_prob': (float, 0.5, 'with mixup and CutMix on: the probability of CutMix for a batch'),
        'mix_prob': (float, 1.0, 'the probability that a batch is mixed at all'),
        'lr_policy': (str, 'cosine', '`cosine` (warmup, then half a cosine to 0) or `steps` (warmup, then `base_lr x '
                      'lr_gamma^k` from epoch `lr_steps[k]`)'),
        'lr_steps': (INT_LIST, [], 'steps: the epochs each LR step starts at, from 0 (e.g. `[0, 94, 154, 196]`)'),
        'lr_gamma': (float, 0.1, 'steps: the factor between consecutive steps'),
    },
    'VALID': {
        'use_preciseBN': (bool, True, 'before validating, BN statistics become the exact average over training '
                          'batches (precise BN)'),
        'preciseBN_interval': (int, 10, 'precise BN every N epochs (and after the last)'),
        'num_batches_preciseBN': (int, 200, 'training batches precise BN averages over'),
        'target_size': (int, 224, 'validation during training: the centre crop of one clip centred in time'),
        'min_size': (int, 256, 'validation: the short side is scaled to this'),
        'max_size': (int, 320, 'kept from the original; validation scales to `min_size`'),
        'batch_size': (int, 64, 'global validation batch'),
        'filelist': (str, './data/val.csv', 'the validation list'),
    },
    'TEST': {
        'target_size': (int, 256, 'test views: the short side is scaled to this and square crops of it are cut'),
        'batch_size': (int, 64, 'views per batch (global)'),
        'filelist': (str, './data/val.csv', 'the list eval.py scores'),
        'weights': (OPTIONAL_STR, 'checkpoints/slowfast_epoch195', 'the weights eval.py loads (`--weights`)'),
        'num_ensemble_views': (int, 10, 'clips per video, uniformly spaced in time'),
        'num_spatial_crops': (int, 3, 'crops per clip: 3 (left, centre, right; top to bottom for portrait video) or '
                              '1 (centre)'),
    },
    'INFER': {
        'target_size': (int, 256, 'as `TEST.target_size`, for predict.py'),
        'batch_size': (int, 32, 'views per batch (global)'),
        'filelist': (str, './data/infer.csv', 'the list predict.py scores (paths, labels optional)'),
        'weights': (OPTIONAL_STR, 'checkpoints/slowfast_epoch195', 'the weights predict.py loads (`--weights`)'),
        'num_ensemble_views': (int, 10, 'as `TEST.num_ensemble_views`'),
        'num_spatial_crops': (int, 3, 'as `TEST.num_spatial_crops`'),
        'save_path': (str, './data/results', 'folder of result.json (`--save_path`)'),
        'use_inference': (bool, False, 'eval.py and predict.py run the exported model with Paddle Inference'),
        'model_dir': (str, './inference', 'the exported model\'s folder (tools/deploy/export_model.py '
                      '`--save_dir`)'),
        'use_tensorrt': (bool, False, 'with `use_inference` on GPU: TensorRT'),
    },
    'MULTIGRID': {
        'long_cycle': (bool, False, 'multigrid training (Wu et al. 2020; docs/TRAINING.md): stages of fewer frames '
                       'and smaller crops with larger batches'),
        'short_cycle': (bool, False, 'inside a stage, iterations cycle through smaller crops'),
        'long_cycle_factors': (FACTOR_PAIRS, [[0.25, 0.7071], [0.5, 0.7071], [0.5, 1.0], [1.0, 1.0]],
                               '(frames, crop) factors of the long cycle\'s shapes'),
        'short_cycle_factors': (FLOAT_LIST, [0.5, 0.7071], 'crop factors of the short cycle\'s first two iterations'),
        'epoch_factor': (float, 1.5, 'the multigrid run lasts this x `TRAIN.epoch` epochs'),
    },
}

# keys that were renamed: a config that still has one is told the new name
RENAMED = {('MULTIGRID', 'bn_base_size'): 'TRAIN.bn_group (the BN group holds outside multigrid too)'}

# MODEL.name -> pathways the network takes: SlowFast [slow, fast]; Slow-only [slow] (the paper's baseline).
PATHWAYS = {'SLOWFAST': 2, 'SLOW': 1}

# Bottleneck blocks per stage (res2..res5) for each supported depth (He et al. 2016, Table 1).
STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def input_shapes(cfg: AttrDict, size: int) -> List[List[int]]:
    """Per-sample shapes of the pathways (``[slow, fast]``, or ``[slow]`` for Slow-only) of a clip of ``size`` x
    ``size`` pixels."""
    frames = cfg.MODEL.num_frames
    return [[3, frames // cfg.MODEL.alpha, size, size], [3, frames, size, size]][:PATHWAYS[cfg.MODEL.name]]


# --------------------------------------------------------------------------------------------------------------
# YAML loading

class _Loader(yaml.SafeLoader):
    """The safe loader, with YAML 1.2 floats: PyYAML's YAML 1.1 rules read ``1e-4`` as a string."""


_Loader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'''^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$''', re.X),
    list('-+0123456789.'))


def _yaml_value(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _closest(word: str, choices, prefix: str = '') -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ''


def _check_value(where: str, kind: Any, value: Any) -> Any:
    """Return ``value`` converted to ``kind``, or raise ConfigError naming ``where``."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    elif kind is OPTIONAL_STR:
        ok = value is None or isinstance(value, str)
    elif kind is FLOAT_LIST:
        ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in value)
        value = [float(v) for v in value] if ok else value
    elif kind is INT_LIST:
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    elif kind is FACTOR_PAIRS:
        ok = isinstance(value, list) and value and all(
            isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in pair)
            for pair in value)
        value = [[float(v) for v in pair] for pair in value] if ok else value
    elif kind is STAGE_LIST:
        ok = (isinstance(value, list) and all(v in DOWNSAMPLING_STAGES for v in value)
              and len(set(value)) == len(value))
    else:  # pragma: no cover - a schema typo
        raise TypeError(kind)
    if not ok:
        name = kind if isinstance(kind, str) else kind.__name__
        raise ConfigError(f'{where} must be {name}, got {value!r} ({type(value).__name__})')
    return value


def _set_key(cfg: AttrDict, section: str, key: str, value: Any, origin: str) -> None:
    if section not in SCHEMA:
        raise ConfigError(f"{origin}: unknown section '{section}'{_closest(section, SCHEMA)}; "
                          f"sections are {', '.join(SCHEMA)}")
    if (section, key) in RENAMED:
        raise ConfigError(f"{origin}: '{section}.{key}' is now {RENAMED[section, key]}")
    if key not in SCHEMA[section]:
        raise ConfigError(f"{origin}: unknown key '{section}.{key}'"
                          f"{_closest(key, SCHEMA[section], section + '.')}")
    cfg[section][key] = _check_value(f'{origin}: {section}.{key}', SCHEMA[section][key][0], value)


def default_config() -> AttrDict:
    """The original recipe (``slowfast.yaml``) as a config."""
    return AttrDict({sec: AttrDict({k: (list(v) if isinstance(v, list) else v) for k, (_, v, _) in keys.items()})
                     for sec, keys in SCHEMA.items()})


def parse_config(path: str, overrides: Sequence[str] = ()) -> AttrDict:
    """Load a YAML config (safe loader) over the recipe defaults, apply ``SECTION.key=value`` overrides, validate.

    Raises ConfigError naming the file, key or override at fault.
    """
    cfg = _load(path, overrides)
    check_config(cfg)
    return cfg


def _load(path: str, overrides: Sequence[str]) -> AttrDict:
    if not os.path.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    try:
        with open(path, encoding='utf-8-sig') as f:
            loaded = yaml.load(f, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f'{path}: not valid YAML: {e}') from None
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise ConfigError(f'{path}: expected a mapping of sections, got {type(loaded).__name__}')
    cfg = default_config()
    for section, keys in loaded.items():
        if not isinstance(keys, dict):
            if section in SCHEMA:
                raise ConfigError(f'{path}: section {section} must be a mapping of keys')
            _set_key(cfg, str(section), '', None, path)  # raises: unknown section
        for key, value in keys.items():
            _set_key(cfg, str(section), str(key), value, path)
    label_map = cfg.DATA.label_map  # a file shipped beside the config, wherever the script runs from
    if label_map and not os.path.isabs(label_map):
        cfg.DATA.label_map = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), label_map))
    for item in overrides:
        apply_override(cfg, item)
    return cfg


def apply_override(cfg: AttrDict, item: str) -> None:
    """Apply one ``SECTION.key=value`` override; the value is read as YAML (``True``, ``1e-4``, ``[1, 2]``)."""
    match = re.fullmatch(r'\s*([A-Za-z_]\w*)\.([A-Za-z_]\w*)\s*=(.*)', item, re.S)
    if not match:
        raise ConfigError(f"malformed override '{item}': expected SECTION.key=value, e.g. TRAIN.epoch=1")
    section, key, text = match.groups()
    try:
        value = _yaml_value(text) if text.strip() else ''
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{item}': value is not valid YAML: {e}") from None
    _set_key(cfg, section, key, value, f"override '{item}'")


def check_config(cfg: AttrDict) -> None:
    """Checks that span several keys: what the network and sampler need to be buildable."""
    m = cfg.MODEL
    positive = [('MODEL', k) for k in ('num_classes', 'num_frames', 'sampling_rate', 'target_fps', 'alpha', 'beta',
                                       'crop_size', 'width_per_group', 'fusion_kernel_size',
                                       'fusion_conv_channel_ratio')]
    positive += [(s, 'batch_size') for s in ('TRAIN', 'VALID', 'TEST', 'INFER')]
    positive += [('TRAIN', k) for k in ('epoch', 'target_size', 'min_size', 'num_gpus')]
    positive += [(s, k) for s in ('TEST', 'INFER') for k in ('target_size', 'num_ensemble_views', 'num_spatial_crops')]
    positive += [('VALID', 'target_size'), ('VALID', 'preciseBN_interval'), ('VALID', 'num_batches_preciseBN')]
    positive += [('DATA', 'num_retries'), ('TRAIN', 'save_interval'), ('TRAIN', 'accumulate_steps')]
    for section, key in positive:
        if cfg[section][key] <= 0:
            raise ConfigError(f'{section}.{key} must be positive, got {cfg[section][key]}')
    for section, key in (('DATA', 'num_workers'), ('TRAIN', 'checkpoint_every_steps'), ('TRAIN', 'keep_checkpoints'),
                         ('TRAIN', 'keep_every'), ('TRAIN', 'bn_group')):
        if cfg[section][key] < 0:
            raise ConfigError(f'{section}.{key} must be >= 0, got {cfg[section][key]}')
    if cfg.TRAIN.head_lr_scale < 0:
        raise ConfigError(f'TRAIN.head_lr_scale must be >= 0, got {cfg.TRAIN.head_lr_scale}')
    if m.name not in PATHWAYS:
        raise ConfigError(f'MODEL.name must be one of {", ".join(PATHWAYS)}, got {m.name!r}')
    if m.name == 'SLOW' and m.alpha != 1:
        raise ConfigError(f'MODEL.alpha must be 1 for the Slow-only model (its one pathway sees all MODEL.num_frames '
                          f'frames), got {m.alpha}')
    if m.depth not in STAGE_DEPTHS:
        raise ConfigError(f'MODEL.depth must be one of {sorted(STAGE_DEPTHS)}, got {m.depth}')
    if m.num_frames % m.alpha:
        raise ConfigError(f'MODEL.num_frames ({m.num_frames}) must be divisible by MODEL.alpha ({m.alpha})')
    if m.width_per_group % m.beta:
        raise ConfigError(f'MODEL.width_per_group ({m.width_per_group}) must be divisible by MODEL.beta ({m.beta})')
    if m.beta % m.fusion_conv_channel_ratio:
        raise ConfigError(f'MODEL.beta ({m.beta}) must be divisible by MODEL.fusion_conv_channel_ratio '
                          f'({m.fusion_conv_channel_ratio})')
    if m.crop_size % 32:
        raise ConfigError(f'MODEL.crop_size ({m.crop_size}) must be a multiple of 32 (the network stride)')
    if len(m.image_mean) != 3 or len(m.image_std) != 3 or min(m.image_std) <= 0:
        raise ConfigError('MODEL.image_mean and MODEL.image_std must hold 3 values (RGB), std > 0')
    if not 0.0 <= m.dropout_rate < 1.0:
        raise ConfigError(f'MODEL.dropout_rate must be in [0, 1), got {m.dropout_rate}')
    if not 0 <= m.frozen_stages <= 4:
        raise ConfigError(f'MODEL.frozen_stages must be 0 (none) to 4 (stem..res4), got {m.frozen_stages}')
    blocks = STAGE_DEPTHS[m.depth]
    if m.num_block_temp_kernel and (len(m.num_block_temp_kernel) != 4 or not all(
            0 <= n <= b for n, b in zip(m.num_block_temp_kernel, blocks))):
        raise ConfigError(f'MODEL.num_block_temp_kernel must be [] or 4 block counts (res2..res5), each at most the '
                          f'stage\'s blocks {list(blocks)} at depth {m.depth}; got {m.num_block_temp_kernel}')
    for section in ('TRAIN', 'VALID'):
        s = cfg[section]
        if not s.min_size <= s.max_size:
            raise ConfigError(f'{section}.min_size ({s.min_size}) must be <= {section}.max_size ({s.max_size})')
        if s.target_size > s.min_size:
            raise ConfigError(f'{section}.target_size ({s.target_size}) must be <= {section}.min_size '
                              f'({s.min_size}): the crop is cut from the rescaled short side')
    # The head pools a (crop_size / 32)-wide window over res5, which a view of S pixels reaches at ceil(S / 32)
    # (five stride-2 stages): a smaller view would fail in the first forward pass, after an epoch of training.
    pool = m.crop_size // 32
    for section in ('TRAIN', 'VALID', 'TEST', 'INFER'):
        size = cfg[section].target_size
        if math.ceil(size / 32) < pool:
            raise ConfigError(f'{section}.target_size ({size}) is too small for the head: its views reach res5 at '
                              f'{math.ceil(size / 32)}x{math.ceil(size / 32)}, the head pools {pool}x{pool} '
                              f'(MODEL.crop_size {m.crop_size} / 32); use at least {32 * (pool - 1) + 1}')
    t = cfg.TRAIN
    if t.amp_dtype not in ('float16', 'bfloat16'):
        raise ConfigError(f"TRAIN.amp_dtype must be 'float16' or 'bfloat16', got {t.amp_dtype!r}")
    if t.warmup_epochs < 0 or t.base_lr <= 0 or t.warmup_start_lr < 0:
        raise ConfigError('TRAIN.base_lr must be positive, TRAIN.warmup_epochs and TRAIN.warmup_start_lr >= 0; got '
                          f'{t.base_lr}, {t.warmup_epochs}, {t.warmup_start_lr}')
    for key in ('label_smoothing', 'mix_switch_prob', 'mix_prob'):
        if not 0.0 <= t[key] <= 1.0:
            raise ConfigError(f'TRAIN.{key} must be in [0, 1], got {t[key]}')
    if t.mixup_alpha < 0 or t.cutmix_alpha < 0:
        raise ConfigError(f'TRAIN.mixup_alpha and cutmix_alpha must be >= 0 (0: off), got {t.mixup_alpha}, '
                          f'{t.cutmix_alpha}')
    check_schedule(cfg)


def check_schedule(cfg: AttrDict) -> None:
    """The LR policy's keys, and the multigrid ones: every long-cycle stage must be a clip the network takes."""
    t, g, m = cfg.TRAIN, cfg.MULTIGRID, cfg.MODEL
    if t.lr_policy not in ('cosine', 'steps'):
        raise ConfigError(f"TRAIN.lr_policy must be 'cosine' or 'steps', got {t.lr_policy!r}")
    steps = t.lr_steps
    if t.lr_policy == 'steps' and not (steps and steps[0] == 0 and steps[-1] < t.epoch
                                       and all(a < b for a, b in zip(steps, steps[1:]))):
        raise ConfigError(f'TRAIN.lr_steps must start at 0 and increase, below TRAIN.epoch ({t.epoch}), with '
                          f'TRAIN.lr_policy steps; got {steps}')
    if t.lr_gamma <= 0:
        raise ConfigError(f'TRAIN.lr_gamma must be positive, got {t.lr_gamma}')
    if not (g.long_cycle or g.short_cycle):
        return
    if g.long_cycle and t.lr_policy != 'steps':
        raise ConfigError('MULTIGRID.long_cycle needs TRAIN.lr_policy steps (and TRAIN.lr_steps): each stage\'s LR '
                          'follows its batch, as in PySlowFast and PaddleVideo')
    if t.accumulate_steps != 1:
        raise ConfigError(f'MULTIGRID training changes the batch per stage and iteration: TRAIN.accumulate_steps '
                          f'must be 1, got {t.accumulate_steps}')
    if g.epoch_factor <= 0:
        raise ConfigError(f'MULTIGRID.epoch_factor must be positive, got {g.epoch_factor}')
    if len(g.short_cycle_factors) != 2 or not all(0 < f <= 1 for f in g.short_cycle_factors):
        raise ConfigError(f'MULTIGRID.short_cycle_factors must be 2 crop factors in (0, 1], got '
                          f'{g.short_cycle_factors}')
    for t_factor, s_factor in g.long_cycle_factors if g.long_cycle else ():
        frames = int(round(m.num_frames * t_factor))
        if frames < m.alpha or frames % m.alpha or m.num_frames % frames:
            raise ConfigError(f'MULTIGRID.long_cycle_factors {[t_factor, s_factor]}: {frames} frames of '
                              f'MODEL.num_frames {m.num_frames}; a stage\'s frames must divide num_frames and be a '
                              f'multiple of MODEL.alpha ({m.alpha})')


def format_config(cfg: AttrDict, mode: str) -> List[str]:
    """The original's config printout, one line per entry."""
    lines = ['---------------- {:>5} Arguments ----------------'.format(mode)]
    for section, keys in cfg.items():
        lines.append(f'{section}:')
        lines.extend(f'    {k}:{v}' for k, v in keys.items())
    lines.append('-' * 50)
    return lines


def setup_logging(rank: Optional[int] = None, level: int = logging.INFO) -> None:
    """Log to stdout with time and level (rank > 0: warnings only, so an 8-GPU log is not 8 copies). ``rank``
    None: the rank ``paddle.distributed.launch`` gave this process (0 when not launched)."""
    if rank is None:
        rank = int(os.environ.get('PADDLE_TRAINER_ID', '0'))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, force=True, stream=sys.stdout,
                        format='[%(asctime)s %(levelname)s %(filename)s:%(lineno)d] %(message)s',
                        datefmt='%Y-%m-%d %H:%M:%S')


def log_config(cfg: AttrDict, mode: str) -> None:
    for line in format_config(cfg, mode):
        logger.info(line)


# --------------------------------------------------------------------------------------------------------------
# Command line

def str2bool(text: str) -> bool:
    """``True/False/1/0/yes/no`` (any case), as the original's ``ast.literal_eval`` flags accepted."""
    low = text.strip().lower()
    if low in ('true', '1', 'yes', 'y'):
        return True
    if low in ('false', '0', 'no', 'n'):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got '{text}'")


# flag -> (argparse options, {mode: config keys it overrides}). The original's merge_configs wrote a flag into the
# key of the same name in the script's sections (train: TRAIN and VALID; eval: TEST; infer: INFER).
_FLAGS: Dict[str, Tuple[dict, Dict[str, Tuple[str, ...]]]] = {
    'use_gpu': (dict(type=str2bool, help='run on the GPU when Paddle has CUDA (default: TRAIN.use_gpu, then '
                                         'whatever is available); False forces the CPU'),
                {'train': ('TRAIN.use_gpu',)}),
    'use_data_parallel': (dict(type=str2bool, default=True,
                               help='data parallel over the ranks started by paddle.distributed.launch'), {}),
    'epoch': (dict(type=int, help='number of training epochs'), {'train': ('TRAIN.epoch',)}),
    'batch_size': (dict(type=int, help='global batch size, divided over ranks'),
                   {'train': ('TRAIN.batch_size', 'VALID.batch_size'), 'eval': ('TEST.batch_size',),
                    'infer': ('INFER.batch_size',)}),
    'save_dir': (dict(default='./checkpoints', help='checkpoint folder, and train.log: one run\'s (locked while it '
                                                    'runs; a run that does not resume refuses one holding checkpoints)'),
                 {}),
    'resume': (dict(type=str2bool, default=False, help='continue from the newest complete checkpoint in save_dir '
                                                       '(none yet: start from scratch)'),
               {}),
    'resume_epoch': (dict(type=int, help='resume from this (0-indexed) epoch instead of the newest'), {}),
    'start_over': (dict(type=str2bool, default=False,
                        help='start from scratch in a save_dir that holds an earlier run\'s checkpoints: they and its '
                             'train.log are moved into save_dir/previous_run_<time> (without it such a run is '
                             'refused: one run per folder)'), {}),
    'use_visualdl': (dict(type=str2bool, default=False, help='write VisualDL scalars'), {}),
    'vd_logdir': (dict(default='./vdlog', help='VisualDL log folder'), {}),
    'log_interval': (dict(type=int, default=10, help='log every N iterations'), {}),
    'valid_interval': (dict(type=int, default=1, help='validate every N epochs (and after the last)'), {}),
    'seed': (dict(type=int, default=0, help='seed of sample order, augmentation and init'), {}),
    'weights': (dict(help='weights to load (.pdparams; the extension may be left out)'),
                {'eval': ('TEST.weights',), 'infer': ('INFER.weights',)}),
    'save_path': (dict(help='output folder'), {'infer': ('INFER.save_path',)}),
    'allow_pickle': (dict(type=str2bool, default=False,
                          help='load weights and checkpoints with paddle.load, which unpickles any object and so can '
                               'run code from the file: only for a file you trust that the default safe reader '
                               'refuses'), {}),
}

MODE_FLAGS = {
    'train': ('use_gpu', 'use_data_parallel', 'epoch', 'batch_size', 'save_dir', 'resume', 'resume_epoch',
              'start_over', 'use_visualdl', 'vd_logdir', 'log_interval', 'valid_interval', 'weights', 'seed', 'allow_pickle'),
    'eval': ('use_gpu', 'use_data_parallel', 'batch_size', 'weights', 'log_interval', 'save_path', 'allow_pickle'),
    'infer': ('use_gpu', 'use_data_parallel', 'batch_size', 'weights', 'log_interval', 'save_path', 'allow_pickle'),
}


def build_parser(mode: str, description: Optional[str] = None) -> argparse.ArgumentParser:
    """The flags of one script (``mode`` is ``train``, ``eval`` or ``infer``); scripts may add their own."""
    if mode not in MODE_FLAGS:
        raise ValueError(f'mode must be one of {sorted(MODE_FLAGS)}, got {mode!r}')
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument('--config', default='slowfast.yaml', help='YAML config file (default: %(default)s)')
    for name in MODE_FLAGS[mode]:
        options = dict(_FLAGS[name][0])
        if options.get('type') is str2bool:  # `--resume` alone means True, as in most CLIs; `--resume False` too
            options.update(nargs='?', const=True, metavar='True|False')
        parser.add_argument('--' + name, **options)
    parser.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value',
                        help='override a config key; may be given many times, e.g. -o TRAIN.epoch=1')
    return parser


def parse_args(mode: str, argv: Optional[Sequence[str]] = None,
               parser: Optional[argparse.ArgumentParser] = None) -> Tuple[AttrDict, argparse.Namespace]:
    """Parse the command line of a ``mode`` script and return ``(cfg, args)``.

    Order of precedence: flags > ``-o`` overrides > YAML file > recipe defaults. Any error exits with status 2 and a
    message naming the file, key or flag.
    """
    parser = parser or build_parser(mode)
    args = parser.parse_args(argv)
    try:
        cfg = _load(args.config, args.override)
        for name in MODE_FLAGS[mode]:
            value = getattr(args, name)
            for target in _FLAGS[name][1].get(mode, ()) if value is not None else ():
                section, key = target.split('.')
                _set_key(cfg, section, key, value, '--' + name)
        check_config(cfg)
    except ConfigError as e:
        parser.error(str(e))
    return cfg, args


def config_markdown() -> str:
    """docs/CONFIG.md: every key of SCHEMA (type, recipe value, help) and every script flag, generated here so that
    each is described once (``python config_utils.py --markdown > docs/CONFIG.md``)."""
    def value(v: Any) -> str:
        text = yaml.safe_dump(v, default_flow_style=True).strip()
        return '`""`' if v == '' else f'`{text[:-3].strip() if text.endswith("...") else text}`'

    lines = ['# Configuration', '',
             '<!-- generated by `python config_utils.py --markdown > docs/CONFIG.md` from config_utils.py: edit '
             'the help text there -->', '',
             'A config is a YAML file of the sections below. Every key has the original recipe\'s value '
             '(`slowfast.yaml`, SlowFast-R50 4x16 on 8 GPUs); a file may leave keys out (they take that value) but '
             'may not add any. **Batch sizes are global**, divided by the number of ranks. `slowfast-single.yaml` '
             'differs only in the batch sizes (8) and `TRAIN.num_gpus` (1); `configs/` holds the other models and '
             'the demo.', '',
             'Precedence: flags > `-o SECTION.key=value` overrides (values read as YAML: `-o TRAIN.base_lr=1e-3`, '
             '`-o MODEL.image_mean=[0.5,0.5,0.5]`) > the YAML file > the recipe values. A missing file, invalid '
             'YAML, an unknown section or key (with a suggestion for typos), a value of the wrong type or an '
             'inconsistent combination (`num_frames` not divisible by `alpha`, a crop larger than `min_size`) stops '
             'with exit status 2 naming the culprit. See what a script will use: `python config_utils.py '
             '[train|eval|infer] --config slowfast.yaml -o TRAIN.epoch=1`.', '']
    for section, keys in SCHEMA.items():
        lines += [f'## {section}', '', '| key | type | recipe | meaning |', '|---|---|---|---|']
        for key, (kind, default, text) in keys.items():
            kind = kind.__name__ if isinstance(kind, type) else kind
            lines.append(f'| `{section}.{key}` | {kind} | {value(default)} | {text} |')
        lines.append('')
    lines += ['## Flags', '', 'Booleans accept `True/False/1/0`; a boolean flag alone means True (`--resume`).', '',
              '| flag | train.py | eval.py | predict.py | meaning |', '|---|---|---|---|---|']
    for name, (options, targets) in _FLAGS.items():
        used = ['yes' if name in MODE_FLAGS[mode] else '' for mode in ('train', 'eval', 'infer')]
        scripts = {'train': 'train.py', 'eval': 'eval.py', 'infer': 'predict.py'}
        sets = ''.join(f'; sets {", ".join(keys)}' + (f' ({scripts[mode]})' if len(targets) > 1 else '')
                       for mode, keys in targets.items())
        lines.append(f'| `--{name}` | {" | ".join(used)} | {options["help"]}{sets} |')
    return '\n'.join(lines) + '\n'


def main(argv: Sequence[str]) -> None:
    if argv == ['--markdown']:
        sys.stdout.write(config_markdown())
        return
    mode = argv[0] if argv and argv[0] in MODE_FLAGS else 'train'
    argv = argv[1:] if argv and argv[0] == mode else argv
    parser = build_parser(mode, description=f'Validate a config and print it as the {mode} script sees it.')
    cfg, _ = parse_args(mode, argv, parser)
    print('\n'.join(format_config(cfg, mode.capitalize())))


if __name__ == '__main__':
    main(sys.argv[1:])
