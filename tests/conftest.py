"""Shared test setup (CPU, two threads, the repository and tools importable: helpers.py) and the fixtures."""
import os
import sys

os.environ.setdefault('OMP_NUM_THREADS', '2')  # Paddle uses one CPU thread unless told otherwise

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import pytest  # noqa: E402

from helpers import ROOT, TINY, demo_threads, small_demo_lists  # noqa: E402  (also puts the repository on sys.path)
from config_utils import parse_config  # noqa: E402
from distributed import tune_cpu_blas  # noqa: E402

tune_cpu_blas()  # as the scripts do on a CPU, before anything computes
paddle.set_device('cpu')


@pytest.fixture
def recipe_cfg():
    """``slowfast.yaml``: the full 4x16 recipe."""
    return parse_config(os.path.join(ROOT, 'slowfast.yaml'))


@pytest.fixture
def cfg():
    """The recipe's sampling (32 frames, stride 2, alpha 8) at small sizes: test views 96, train crops 64 from 72-80."""
    return parse_config(os.path.join(ROOT, 'slowfast.yaml'), [
        'MODEL.num_classes=5', 'MODEL.crop_size=64', 'TRAIN.min_size=72', 'TRAIN.max_size=80', 'TRAIN.target_size=64',
        'VALID.min_size=96', 'VALID.max_size=96', 'VALID.target_size=96', 'TEST.target_size=96',
        'INFER.target_size=96', 'DATA.num_workers=0'])


@pytest.fixture
def tiny_cfg():
    """helpers.TINY with 5 classes: train crops 64 from 72-80, test and infer views 96."""
    return parse_config(os.path.join(ROOT, 'slowfast.yaml'), ['MODEL.num_classes=5'] + TINY + [
        'TRAIN.target_size=64', 'TRAIN.min_size=72', 'TRAIN.max_size=80', 'VALID.target_size=64', 'VALID.min_size=72',
        'VALID.max_size=80', 'TEST.target_size=96', 'INFER.target_size=96'])


@pytest.fixture(scope='session')
def videos(tmp_path_factory):
    """Small videos of every container, frames showing their own index (tests/videos.py), and broken files."""
    from videos import write_index_video
    from video_io import write_video

    root = tmp_path_factory.mktemp('videos')
    out = {}
    for ext in ('mp4', 'webm', 'mkv', 'avi'):
        out[ext] = write_index_video(str(root / f'index300.{ext}'), 300)
    out['fps15'] = write_index_video(str(root / 'index_15fps.mp4'), 150, fps=15)
    out['short'] = write_index_video(str(root / 'index20.mp4'), 20)
    out['portrait'] = write_index_video(str(root / 'portrait.mp4'), 90, height=128, width=96)
    out['ramp'] = str(root / 'ramp.mp4')  # dark left, bright right: shows a horizontal flip
    ramp = np.tile(np.linspace(0, 255, 128).astype(np.uint8)[None, :, None], (96, 1, 3))
    write_video(out['ramp'], [ramp] * 64, 30)
    out['zero'] = str(root / 'zero.mp4')
    open(out['zero'], 'wb').close()
    out['garbage'] = str(root / 'garbage.mp4')
    with open(out['garbage'], 'wb') as f:
        f.write(np.random.default_rng(0).integers(0, 256, 50000, dtype=np.uint8).tobytes())
    for ext in ('mp4', 'mkv'):  # cut in half: mp4 loses its index (moov at the end), mkv its second half
        data = open(out[ext], 'rb').read()
        out[f'truncated_{ext}'] = str(root / f'truncated.{ext}')
        with open(out[f'truncated_{ext}'], 'wb') as f:
            f.write(data[:len(data) // 2])
    out['missing'] = str(root / 'does_not_exist.mp4')
    return out


@pytest.fixture(scope='session')
def demo_lists(tmp_path_factory):
    """A tiny motion-only dataset: 4 classes, 4 train and 2 val videos each."""
    return small_demo_lists(tmp_path_factory.mktemp('demo'), 4)


@pytest.fixture(scope='session')
def real_world(tmp_path_factory):
    """``{case: (path, truth)}``: index-coded videos cut, re-muxed and re-encoded by the ffmpeg tool the ways real
    files come (tests/videos.py), with the indices a full sequential decode by that tool shows."""
    from videos import decoded_indices, real_world_videos

    cases = real_world_videos(str(tmp_path_factory.mktemp('real_world')))
    return {name: (path, decoded_indices(path)) for name, path in cases.items()}


# The demo network trained on a demo set until its multi-view top-1 passes 0.9 (the outputs that show what a model
# saw need a model that saw something): the settings of run_demo.sh.
DEMO_TRAINING = ['--valid_interval', '100']  # configs/slowfast_demo.yaml's 16 epochs; validated once, at the end


@pytest.fixture(scope='session')
def trained_demo(tmp_path_factory):
    """``{'data': folder, 'weights': .pdparams, 'flags': [...], 'top1': ...}``: configs/slowfast_demo.yaml trained by
    train.py on a fresh demo set (tools/data/make_demo_data.py, 96x128 frames), checked by eval.py (10 x 3 views) at >=
    0.9."""
    import json
    import subprocess

    from make_demo_data import main as make_demo_data

    root = tmp_path_factory.mktemp('trained_demo')
    data = root / 'data'
    make_demo_data(['--out', str(data), '--train_per_class', '60', '--val_per_class', '10', '--frames', '48'])
    flags = ['--config', os.path.join(ROOT, 'configs', 'slowfast_demo.yaml'), '--use_gpu', 'False', '-o',
             'MODEL.num_classes=4',
             '-o', f'DATA.label_map={data / "classes.txt"}', '-o', f'TRAIN.filelist={data / "train.txt"}', '-o',
             f'VALID.filelist={data / "val.txt"}', '-o', f'TEST.filelist={data / "val.txt"}']
    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS=str(demo_threads()))

    def run(script, *args):
        result = subprocess.run([sys.executable, os.path.join(ROOT, script)] + flags + list(args), cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    run('train.py', '--save_dir', str(root / 'checkpoints'), '--log_interval', '100', *DEMO_TRAINING)
    weights = sorted((root / 'checkpoints').glob('slowfast_epoch*.pdparams'),
                     key=lambda p: int(p.stem.split('epoch')[1]))[-1]
    run('eval.py', '--weights', str(weights), '--save_path', str(root / 'eval'))
    top1 = json.loads((root / 'eval' / 'eval_result.json').read_text())['top1']
    assert top1 >= 0.9, f'the demo network reached a multi-view top-1 of {top1} only'
    return {'data': str(data), 'weights': str(weights), 'flags': flags, 'top1': top1}


@pytest.fixture(scope='session')
def published(tmp_path_factory):
    """``{'root', 'state'}``: the SlowFast R50 8x8 recipe's network (seeded, a sharper head) written as PySlowFast's
    Caffe2 ``root/SLOWFAST_8x8_R50.pkl`` and PaddleVideo's ``root/SlowFast_8x8.pdparams``, as published files are
    (for the zoo's and the hub's loads; no weights can be downloaded here)."""
    from helpers import write_published
    from model import build_model

    root = tmp_path_factory.mktemp('published')
    cfg = parse_config(os.path.join(ROOT, 'configs', 'slowfast_r50_8x8.yaml'))
    paddle.seed(7)
    state = {k: v.numpy() for k, v in build_model(cfg).state_dict().items()}
    state['head.projection.weight'] = state['head.projection.weight'] * 50
    write_published('caffe2', state, root / 'SLOWFAST_8x8_R50.pkl')
    write_published('paddlevideo', state, root / 'SlowFast_8x8.pdparams')
    return dict(root=root, state=state)
