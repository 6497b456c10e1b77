"""paddle.hub entry points: the networks of the SlowFast family, with the published Kinetics-400 weights.

    import numpy   # before paddle, on Paddle 2.6.2 (README, Install)
    import paddle
    paddle.hub.list('path/to/this/repository', source='local')
    model = paddle.hub.load('path/to/this/repository', 'slowfast_r50', source='local', pretrained=True)
    print(paddle.hub.help('path/to/this/repository', 'slowfast_r50', source='local'))

Each entry returns the network in eval mode (``model([slow, fast])`` -> probabilities; ``.train()`` before
fine-tuning). ``pretrained=True`` loads a published checkpoint through the zoo (model_zoo.py: downloaded once,
verified, converted, cached in ``$SLOWFAST_CACHE`` or ``~/.cache/slowfast_paddle``); ``checkpoint`` picks another of
the zoo's files for the same network, ``file`` converts one you downloaded (offline), ``url`` takes a mirror.
``pretrained=False``: initialised as the recipe (``model.build_model``). To classify videos with the publisher's views,
use ``recognizer.Recognizer.from_zoo`` (docs/EVALUATION.md, "From Python").
"""
import os as _os
import sys as _sys

dependencies = ['paddle', 'numpy', 'cv2', 'av', 'yaml', 'tqdm', 'matplotlib']

_HERE = _os.path.dirname(_os.path.abspath(__file__))
_sys.path.insert(0, _HERE)  # paddle.hub takes its own entry of the folder off sys.path after importing this file


def _check_own_modules() -> None:
    """The repository's modules are flat (model.py, config_utils.py, ...): a module of one of their names imported
    from elsewhere before this file would be used in their place. RuntimeError naming it (paddle.hub replaces an
    ImportError's message with its own)."""
    for name in sorted(_os.path.splitext(f)[0] for f in _os.listdir(_HERE) if f.endswith('.py')):
        found = getattr(_sys.modules.get(name), '__file__', None)
        if found and _os.path.realpath(found) != _os.path.realpath(_os.path.join(_HERE, name + '.py')):
            raise RuntimeError(f'the module {name!r} was imported from {found}, not from this repository ({_HERE}): '
                              f'its modules have flat names; load the hub entry in a process that has not imported '
                              f'another {name!r} (or rename that one)')


_check_own_modules()  # before the imports below, which would take a foreign module of one of those names

import checkpoint as _checkpoint  # noqa: E402
import config_utils as _config_utils  # noqa: E402
import model as _model  # noqa: E402
import model_zoo as _zoo  # noqa: E402


def _describe(config: str, default: str) -> str:
    cfg = _config_utils.parse_config(_os.path.join(_HERE, config))
    m = cfg.MODEL
    slow = m.num_frames // m.alpha if m.name == 'SLOWFAST' else m.num_frames
    inputs = (f'[slow, fast]: slow [N, 3, {slow}, H, W], fast [N, 3, {m.num_frames}, H, W] (alpha {m.alpha})'
              if m.name == 'SLOWFAST' else f'[slow]: [N, 3, {m.num_frames}, H, W]')
    lines = [f'Input {inputs}: frames every {m.sampling_rate} at {m.target_fps} fps, RGB / 255 normalised with mean '
             f'{m.image_mean[0]} and std {m.image_std[0]}; trained on {cfg.TRAIN.target_size}-pixel crops; '
             f'{m.num_classes} Kinetics-400 classes.',
             f'Config: {config}.',
             'checkpoint (with pretrained=True), each tested by its publisher on 10 x 3 views '
             '(clips x crops) of K400 validation:']
    for entry in _zoo.ENTRIES:
        if entry.config == config:
            p = entry.protocol
            lines.append(f'    {entry.name}{" (default)" if entry.name == default else ""}: {entry.source}, top-1 '
                         f'{entry.top1}, top-5 {entry.top5}; short side {p.short_side}, crops of {p.crop}'
                         + ('; a .pyth: needs torch to convert' if entry.url.endswith('.pyth') else ''))
    return '\n'.join(lines)


def _entry(name: str, title: str, config: str, default: str):
    def load(pretrained: bool = False, checkpoint: str = default, cache_dir: str = None, file: str = None,
             url: str = None, sha256: str = None, allow_pickle: bool = False):
        cfg = _config_utils.parse_config(_os.path.join(_HERE, config))
        network = _model.build_model(cfg)
        if pretrained:
            entry = _zoo.find(checkpoint)
            if entry.config != config:
                raise _zoo.WeightsError(f'{checkpoint} is a checkpoint of {entry.config}, not of {name} ({config}); '
                                        f'{name}\'s: {", ".join(e.name for e in _zoo.ENTRIES if e.config == config)}')
            weights = _zoo.cached(entry, cache_dir, file, url, sha256, allow_pickle)
            _checkpoint.load_weights(network, weights, strict=True, allow_pickle=allow_pickle)
        network.eval()
        return network

    load.__name__ = load.__qualname__ = name
    load.__doc__ = f'{title}.\n\n{_describe(config, default)}\n'
    return load


slowfast_4x16_r50 = _entry('slowfast_4x16_r50', 'SlowFast R50 4x16, the original recipe', 'slowfast.yaml',
                           'pyslowfast-slowfast-4x16-r50')
slowfast_r50 = _entry('slowfast_r50', 'SlowFast R50 8x8', 'configs/slowfast_r50_8x8.yaml',
                      'pyslowfast-slowfast-8x8-r50')
slowfast_r101 = _entry('slowfast_r101', 'SlowFast R101 8x8', 'configs/slowfast_r101_8x8.yaml',
                       'pytorchvideo-slowfast-r101')
slowfast_16x8_r101_50_50 = _entry('slowfast_16x8_r101_50_50', 'SlowFast R101 16x8 R101_50_50: res4 keeps temporal '
                                  'kernels in its first 6 of 23 blocks', 'configs/slowfast_16x8_r101_50_50.yaml',
                                  'pytorchvideo-slowfast-16x8-r101-50-50')
slow_r50 = _entry('slow_r50', 'Slow-only R50 8x8', 'configs/slow_r50_8x8.yaml', 'pyslowfast-slow-8x8-r50')
slow_4x16_r50 = _entry('slow_4x16_r50', 'Slow-only R50 4x16', 'configs/slow_r50_4x16.yaml', 'pyslowfast-slow-4x16-r50')
