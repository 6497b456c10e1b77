"""What the tests share: paths, the tiny network, small demo lists, list writing, reading clips back, hostile
files. Fixtures live in conftest.py (pytest finds them); tests import these from here."""
import functools
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
for _folder in sorted(glob.glob(os.path.join(ROOT, 'tools', '*'))):  # the tools are importable in tests
    if os.path.isdir(_folder):
        sys.path.insert(0, _folder)

MEAN, STD = 0.45, 0.225  # the recipe's normalisation

# The tiny network of the tests: narrow and short, runs in milliseconds (8 frames, alpha 4, width 8, 64-pixel crops)
TINY = ['MODEL.num_frames=8', 'MODEL.alpha=4', 'MODEL.beta=4', 'MODEL.width_per_group=8', 'MODEL.crop_size=64',
        'MODEL.fusion_kernel_size=3']

needs_ffmpeg = pytest.mark.skipif(
    shutil.which('ffmpeg') is None or shutil.which('ffprobe') is None,
    reason="needs the ffmpeg and ffprobe tools (Debian's ffmpeg package; .ci/run installs it)")


def tool_path(name: str) -> str:
    """A tool's script by its file name, wherever in tools/ it lives."""
    [path] = glob.glob(os.path.join(ROOT, 'tools', '*', name))
    return path


def tiny_train_overrides(train_list, val_list, epochs=2):
    """TINY trained on the demo lists: 4 classes, batch 4, 64-pixel crops from 72-80, precise BN on."""
    return ['MODEL.num_classes=4'] + TINY + [
        f'TRAIN.epoch={epochs}', 'TRAIN.batch_size=4', 'TRAIN.base_lr=0.05', 'TRAIN.warmup_epochs=1',
        'TRAIN.min_size=72', 'TRAIN.max_size=80', 'TRAIN.target_size=64', f'TRAIN.filelist={train_list}',
        'VALID.min_size=72', 'VALID.max_size=72', 'VALID.target_size=64', 'VALID.batch_size=4',
        f'VALID.filelist={val_list}', 'VALID.preciseBN_interval=1', 'VALID.num_batches_preciseBN=2',
        'TEST.target_size=72', 'INFER.target_size=72', 'DATA.num_workers=0',
        'TRAIN.keep_checkpoints=0']  # the tests look at every epoch's checkpoint; retention is tested on its own


def demo_threads() -> int:
    """The compute threads run_demo.sh gives training when OMP_NUM_THREADS is unset: one per core its one decoding
    worker leaves (at least one)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def small_demo_lists(out, train_per_class: int):
    """``(train list, val list)`` of a small motion-only set from tools/data/make_demo_data.py in ``out``: 4 classes,
    ``train_per_class`` train and 2 val videos each, 24 frames of 72x96."""
    from make_demo_data import main as make_demo_data

    make_demo_data(['--out', str(out), '--train-per-class', str(train_per_class), '--val-per-class', '2',
                    '--frames', '24', '--height', '72', '--width', '96'])
    return str(out / 'train.txt'), str(out / 'val.txt')


def write_list(tmp_path, lines, name='list.txt'):
    path = tmp_path / name
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def use_list(cfg, path, *sections):
    for section in sections:
        cfg[section].filelist = path


def pixels(clip):
    """A clip [3, T, H, W] (normalised float32, or uint8 test views) -> uint8-scale RGB [T, H, W, 3]."""
    if clip.dtype == np.uint8:
        return clip.transpose(1, 2, 3, 0)
    return np.clip((clip * STD + MEAN) * 255, 0, 255).transpose(1, 2, 3, 0)


def shown_indices(fast):
    """The index each frame of a clip of tests/videos.py's index-coded video shows."""
    from videos import read_index

    return [read_index(frame) for frame in pixels(fast)]


# ---- read-only folders and full disks, as root sees them too --------------------------------------------------------

@functools.lru_cache(maxsize=None)
def mount_namespaces() -> str:
    """'' when this process may make private mount namespaces with their own mounts (root, unshare -m), else why
    not."""
    if shutil.which('unshare') is None:
        return 'no unshare command'
    folder = tempfile.mkdtemp()
    try:
        result = subprocess.run(['unshare', '-m', 'sh', '-c', f'mount -t tmpfs -o size=64k tmpfs {shlex.quote(folder)}'],
                                capture_output=True, text=True)
    finally:
        os.rmdir(folder)
    return '' if result.returncode == 0 else f'cannot make a mount namespace: {result.stderr.strip()[:200]}'


def in_mount_namespace(command, readonly=(), small=None, then=''):
    """``command`` (argv) as run in a private mount namespace in which each folder of ``readonly`` is a read-only
    view of itself and each ``{folder: size}`` of ``small`` a new empty file system of that size (a read-only share
    and a full disk as root sees them: root writes through permission bits; nothing outside the namespace sees the
    mounts). ``then``: shell lines run in the namespace after the command (``$status`` holds its exit status).
    Skips the test where mount namespaces cannot be made."""
    reason = mount_namespaces()
    if reason:
        pytest.skip(reason)
    lines = ['set -e']
    for folder in readonly:
        folder = shlex.quote(str(folder))
        lines += [f'mount --bind {folder} {folder}', f'mount -o remount,bind,ro {folder}']
    for folder, size in (small or {}).items():
        os.makedirs(folder, exist_ok=True)
        lines.append(f'mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(folder))}')
    lines += ['set +e', '"$@"', 'status=$?', then, 'exit $status']
    return ['unshare', '-m', 'sh', '-c', '\n'.join(lines), 'sh'] + [str(c) for c in command]


def one_error_line(log: str, *names) -> str:
    """The one ERROR line of a log that ended in a user error, checked to name each of ``names`` and to come without
    a traceback."""
    errors = [line for line in log.splitlines() if ' ERROR ' in line]
    assert errors and 'Traceback' not in log, log[-3000:]
    for name in names:
        assert str(name) in errors[-1], (name, errors[-1])
    return errors[-1]


# ---- commands a tool prints, run as printed ---------------------------------------------------------------------

def shell_words(line, cwd):
    """The words bash makes of a printed command ``line`` in ``cwd``: quotes removed, ``$(...)`` substituted."""
    result = subprocess.run(['bash', '-c', 'eval "set -- $1"; printf "%s\\0" "$@"', 'bash', line], cwd=str(cwd),
                            capture_output=True, text=True, check=True)
    return result.stdout.split('\0')[:-1]


def parse_printed(line, cwd):
    """A printed ``python train.py|eval.py|predict.py ...`` line through that script's own command line and config
    checks (flags, every ``-o`` override, the config file), in ``cwd`` as a user would run it: ``(cfg, args)``.
    Fails the test with the script's own message when it would stop there."""
    from config_utils import parse_args

    words = shell_words(line, cwd)
    assert words[0] == 'python', line
    script = os.path.basename(words[1])
    mode = {'train.py': 'train', 'eval.py': 'eval', 'predict.py': 'infer'}[script]
    parser = None
    if script == 'predict.py':
        from predict import build_arguments
        parser = build_arguments()
    here = os.getcwd()
    os.chdir(str(cwd))
    try:
        return parse_args(mode, words[2:], parser)
    except SystemExit as stop:
        raise AssertionError(f'{line}: {script} stops with status {stop.code}') from None
    finally:
        os.chdir(here)


def repository_copy(folder):
    """``folder`` holding the repository's scripts, tools and configs (symbolic links): where printed commands run
    without writing into the repository."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(ROOT):
        if name.endswith(('.py', '.yaml', '.sh', '.txt')) or name in ('tools', 'configs'):
            os.symlink(os.path.join(ROOT, name), os.path.join(folder, name))
    return folder


def wait_for_line(path, text, process, timeout=300):
    """Wait until ``text`` is in the file ``path`` a running ``process`` writes (its log)."""
    deadline = time.time() + timeout
    while not (path.exists() and text in path.read_text()):
        assert process.poll() is None and time.time() < deadline, f'training ended before {text!r} in {path.name}'
        time.sleep(0.02)


# ---- files that run code when paddle.load reads them -----------------------------------------------------------

class _Payload:
    """Unpickling it runs ``command`` (what a crafted checkpoint does)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __init__(self, expression):
        self.expression = expression

    def __reduce__(self):
        return eval, (self.expression,)


class _Reconstructed:
    """Pickled through copyreg._reconstructor (protocol < 2's way of rebuilding an instance)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import copyreg
        return copyreg._reconstructor, (_Payload, object, None)


def hostile_files(folder, marker):
    """``{name: path}`` of pickles that run ``touch marker`` (or try to) when paddle.load reads them."""
    import pickle

    touch = f'touch {marker}'
    weight = np.ones((2, 2), np.float32)
    objects = {
        'reduce_os_system': _Payload(touch),
        'nested_in_a_state_dict': {'w': weight, 'StructuredToParameterName@@': {'w': 'w'},
                                   'meta': {'x': [1, (2, _Payload(touch))]}},
        'builtins_eval': {'w': _Eval(f"__import__('os').system('{touch}')")},
        'paddle_eval_form_with_code': {'w': _Eval("__import__('os').system('true') or data")},
        'copyreg_reconstructor': {'w': _Reconstructed(touch)},
    }
    paths = {}
    for name, obj in objects.items():
        for protocol in (2, 4):
            path = os.path.join(folder, f'{name}_p{protocol}.pdparams')
            with open(path, 'wb') as f:
                pickle.dump(obj, f, protocol=protocol)
            paths[f'{name}_p{protocol}'] = path
    return paths


# ---- the publishers' checkpoint formats: Caffe2 and PySlowFast names spelled out from those projects' conventions,
# independently of tools/weights/convert_weights.py -------------------------------------------------------------------

C2_LEAF = {'weight': 'w', 'bias': 'b', '_mean': 'rm', '_variance': 'riv'}


def random_state(cfg, seed=0):
    """Random weights of the model ``cfg`` builds, in this project's names (BN variances positive)."""
    from model import build_model

    rng = np.random.default_rng(seed)
    state = {k: v.numpy() for k, v in build_model(cfg).state_dict().items()}
    return {k: (rng.uniform(0.5, 1.5, v.shape) if k.endswith('_variance') else rng.normal(0, 0.1, v.shape))
            .astype(np.float32) for k, v in state.items()}


def caffe2_name(key, blocks=(3, 4, 6, 3)):
    """The Caffe2 blob of a key; the fusion after stage s hangs off that stage's last block (of ``blocks``)."""
    t = lambda p: 't_' if p == '1' else ''  # noqa: E731
    bn = lambda leaf: 's' if leaf == 'weight' else C2_LEAF[leaf]  # noqa: E731
    fuse = lambda s: ('t_pool1_subsample' if s == '1'  # noqa: E731
                      else f't_res{s}_{blocks[int(s) - 2] - 1}_branch2c_bn_subsample')
    for pattern, name in (
            (r's1\.pathway(\d)_stem\._conv\.weight', lambda g: f'{t(g[1])}conv1_w'),
            (r's1\.pathway(\d)_stem\._bn\.(\w+)', lambda g: f'{t(g[1])}res_conv1_bn_{bn(g[2])}'),
            (r's(\d)_fuse\._conv_f2s\.weight', lambda g: f'{fuse(g[1])}_w'),
            (r's(\d)_fuse\._bn\.(\w+)', lambda g: f'{fuse(g[1])}_bn_{bn(g[2])}'),
            (r's(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])\.weight',
             lambda g: f'{t(g[2])}res{g[1]}_{g[3]}_branch2{g[4]}_w'),
            (r's(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])_bn\.(\w+)',
             lambda g: f'{t(g[2])}res{g[1]}_{g[3]}_branch2{g[4]}_bn_{bn(g[5])}'),
            (r's(\d)\.pathway(\d)_res(\d+)\.branch1\.weight', lambda g: f'{t(g[2])}res{g[1]}_{g[3]}_branch1_w'),
            (r's(\d)\.pathway(\d)_res(\d+)\.branch1_bn\.(\w+)',
             lambda g: f'{t(g[2])}res{g[1]}_{g[3]}_branch1_bn_{bn(g[4])}'),
            (r'head\.projection\.(\w+)', lambda g: f'pred_{C2_LEAF[g[1]]}')):
        match = re.fullmatch(pattern, key)
        if match:
            return name(match)
    raise KeyError(key)


def pyslowfast_name(key):
    for ours, theirs in (('_stem._conv.', '_stem.conv.'), ('_stem._bn.', '_stem.bn.'),
                         ('_fuse._conv_f2s.', '_fuse.conv_f2s.'), ('_fuse._bn.', '_fuse.bn.')):
        key = key.replace(ours, theirs)
    return re.sub(r'\._variance$', '.running_var', re.sub(r'\._mean$', '.running_mean', key))


def torch_layout(key, array):
    return array.T if key == 'head.projection.weight' else array  # Linear [out, in]


def write_published(fmt, state, path, blocks=(3, 4, 6, 3)):
    """``state`` (this project's names) written to ``path`` as the publisher of ``fmt`` writes it: ``caffe2`` (a
    PySlowFast Caffe2 ``.pkl`` of blobs; ``blocks`` per stage name the fusions' blobs), ``paddlevideo``
    (``backbone.``-prefixed ``.pdparams``) or ``pyslowfast`` (a ``.pyth`` with ``model_state``; needs torch)."""
    import pickle

    import paddle

    if fmt == 'caffe2':
        with open(path, 'wb') as f:
            pickle.dump({'blobs': {caffe2_name(k, blocks): torch_layout(k, v) for k, v in state.items()}}, f,
                        protocol=2)
    elif fmt == 'paddlevideo':
        paddle.save({(k if k.startswith('head.') else 'backbone.' + k): paddle.to_tensor(v)
                     for k, v in state.items()}, str(path))
    elif fmt == 'pyslowfast':
        import torch

        torch.save({'model_state': {pyslowfast_name(k): torch.from_numpy(np.ascontiguousarray(torch_layout(k, v)))
                                    for k, v in state.items()}}, str(path))
    else:
        raise ValueError(fmt)


def assert_same_weights(path, state):
    """The ``.pdparams`` at ``path`` holds exactly ``state``'s tensors, bit for bit."""
    import paddle

    loaded = paddle.load(str(path))
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert np.array_equal(loaded[k].numpy(), v), k
