"""Shared test setup: CPU, two threads, repository root importable."""
import os
import shutil
import sys

os.environ.setdefault('OMP_NUM_THREADS', '2')  # Paddle uses one CPU thread unless told otherwise
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tools'))  # the tools are importable in tests

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import pytest  # noqa: E402

from config_utils import parse_config  # noqa: E402
from distributed import tune_cpu_blas  # noqa: E402

tune_cpu_blas()  # as the scripts do on a CPU, before anything computes
paddle.set_device('cpu')


@pytest.fixture
def recipe_cfg():
    """``slowfast.yaml``: the full 4x16 recipe."""
    return parse_config(os.path.join(ROOT, 'slowfast.yaml'))


@pytest.fixture
def tiny_cfg():
    """A narrow, short SlowFast that runs in milliseconds: 8 frames, alpha 4, width 8, 64-pixel crops."""
    return parse_config(os.path.join(ROOT, 'slowfast.yaml'), [
        'MODEL.num_classes=5', 'MODEL.num_frames=8', 'MODEL.alpha=4', 'MODEL.beta=4', 'MODEL.width_per_group=8',
        'MODEL.crop_size=64', 'MODEL.fusion_kernel_size=3', 'TRAIN.target_size=64', 'TRAIN.min_size=72',
        'TRAIN.max_size=80', 'VALID.target_size=64', 'VALID.min_size=72', 'VALID.max_size=80',
        'TEST.target_size=96', 'INFER.target_size=96'])


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


def small_demo_lists(out, train_per_class: int):
    """``(train list, val list)`` of a small motion-only set from tools/make_demo_data.py in ``out``: 4 classes,
    ``train_per_class`` train and 2 val videos each, 24 frames of 72x96."""
    from make_demo_data import main as make_demo_data

    make_demo_data(['--out', str(out), '--train-per-class', str(train_per_class), '--val-per-class', '2',
                    '--frames', '24', '--height', '72', '--width', '96'])
    return str(out / 'train.txt'), str(out / 'val.txt')


@pytest.fixture(scope='session')
def demo_lists(tmp_path_factory):
    """A tiny motion-only dataset: 4 classes, 4 train and 2 val videos each."""
    return small_demo_lists(tmp_path_factory.mktemp('demo'), 4)


def tiny_train_overrides(train_list, val_list, epochs=2):
    """A narrow SlowFast trained on the demo lists: 8 frames, width 8, 64-pixel crops, batch 4, precise BN on."""
    return ['MODEL.num_classes=4', 'MODEL.num_frames=8', 'MODEL.alpha=4', 'MODEL.beta=4', 'MODEL.width_per_group=8',
            'MODEL.crop_size=64', 'MODEL.fusion_kernel_size=3', f'TRAIN.epoch={epochs}', 'TRAIN.batch_size=4',
            'TRAIN.base_lr=0.05', 'TRAIN.warmup_epochs=1', 'TRAIN.min_size=72', 'TRAIN.max_size=80',
            'TRAIN.target_size=64', f'TRAIN.filelist={train_list}', 'VALID.min_size=72', 'VALID.max_size=72',
            'VALID.target_size=64', 'VALID.batch_size=4', f'VALID.filelist={val_list}', 'VALID.preciseBN_interval=1',
            'VALID.num_batches_preciseBN=2', 'TEST.target_size=72', 'INFER.target_size=72', 'DATA.num_workers=0']


needs_ffmpeg = pytest.mark.skipif(
    shutil.which('ffmpeg') is None or shutil.which('ffprobe') is None,
    reason="needs the ffmpeg and ffprobe tools (Debian's ffmpeg package; .ci/run installs it)")


@pytest.fixture(scope='session')
def real_world(tmp_path_factory):
    """``{case: (path, truth)}``: index-coded videos cut, re-muxed and re-encoded by the ffmpeg tool the ways real
    files come (tests/videos.py), with the indices a full sequential decode by that tool shows."""
    from videos import decoded_indices, real_world_videos

    cases = real_world_videos(str(tmp_path_factory.mktemp('real_world')))
    return {name: (path, decoded_indices(path)) for name, path in cases.items()}


# The demo network trained on a demo set until its multi-view top-1 passes 0.9 (the outputs that show what a model
# saw need a model that saw something): the settings of run_demo.sh, fewer epochs.
DEMO_TRAINING = ['--valid_interval', '100']  # slowfast-demo.yaml's 25 epochs; validated once, at the end


@pytest.fixture(scope='session')
def trained_demo(tmp_path_factory):
    """``{'data': folder, 'weights': .pdparams, 'flags': [...], 'top1': ...}``: slowfast-demo.yaml trained by train.py
    on a fresh demo set (tools/make_demo_data.py, 96x128 frames), checked by eval.py (10 x 3 views) at >= 0.9."""
    import json
    import subprocess

    from make_demo_data import main as make_demo_data

    root = tmp_path_factory.mktemp('trained_demo')
    data = root / 'data'
    make_demo_data(['--out', str(data), '--train-per-class', '60', '--val-per-class', '10', '--frames', '48'])
    flags = ['--config', os.path.join(ROOT, 'slowfast-demo.yaml'), '--use_gpu', 'False', '-o', 'MODEL.num_classes=4',
             '-o', f'DATA.label_map={data / "classes.txt"}', '-o', f'TRAIN.filelist={data / "train.txt"}', '-o',
             f'VALID.filelist={data / "val.txt"}', '-o', f'TEST.filelist={data / "val.txt"}']
    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='2')

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
