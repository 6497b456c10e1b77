"""Shared test setup: CPU, two threads, repository root importable."""
import os
import sys

os.environ.setdefault('OMP_NUM_THREADS', '2')  # Paddle uses one CPU thread unless told otherwise
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import paddle  # noqa: E402
import pytest  # noqa: E402

from config_utils import parse_config  # noqa: E402

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
