"""Writes tests/data/paddle26/ with Paddle 2.6.2 and numpy 1 (the newest paddlepaddle-gpu on PyPI), for the tests that
read files another Paddle wrote (tests/test_checkpoint.py):

    python -m venv /tmp/p26 && /tmp/p26/bin/pip install paddlepaddle==2.6.2 "numpy<2" pyyaml
    /tmp/p26/bin/python tests/data/make_paddle26_files.py

A mid-epoch checkpoint of a small network (this project's save_checkpoint: optimizer with its LR scheduler, meta with
a numpy number, two ranks' BN statistics), a PaddleVideo-style state dict (``backbone.*``) and a file holding
DenseTensors (which paddle.save pickles through ``eval``).
"""
import os
import sys

import numpy as np
import paddle

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from checkpoint import atomic_save, save_checkpoint  # noqa: E402

out = os.path.join(ROOT, 'tests', 'data', 'paddle26')
os.makedirs(out, exist_ok=True)
paddle.seed(0)
model = paddle.nn.Sequential(paddle.nn.Conv3D(3, 4, 3), paddle.nn.BatchNorm3D(4), paddle.nn.Flatten(),
                             paddle.nn.Linear(16, 2))
opt = paddle.optimizer.Momentum(parameters=model.parameters(), momentum=0.9, use_nesterov=True, weight_decay=1e-4,
                                learning_rate=paddle.optimizer.lr.CosineAnnealingDecay(0.1, 10))
for _ in range(2):
    model(paddle.randn([2, 3, 3, 4, 4])).sum().backward()
    opt.step()
    opt.clear_grad()
    opt._learning_rate.step()
meta = {'global_step': 2, 'best_err1': 0.5, 'seed': 0, 'stage': [8, [[4, 64]]], 'progress': [[1.0, 2.0, 3.0]],
        'config': {'MODEL': {'alpha': 8, 'image_mean': [0.45, 0.45, 0.45]}}, 'np_number': np.float64(0.25)}
statistics = {k: v.numpy() for k, v in model.state_dict().items() if '_mean' in k}
save_checkpoint(out, 0, model, opt, meta, iteration=1, rank_state=[statistics, statistics])
atomic_save({'backbone.' + k: v for k, v in model.state_dict().items()}, os.path.join(out, 'paddlevideo.pdparams'))
tensor = paddle.to_tensor(np.arange(6, dtype='float32').reshape(2, 3))
atomic_save({'w': tensor.value().get_tensor(), 'nested': [tensor.value().get_tensor()]},
            os.path.join(out, 'dense_tensor.pdparams'))
print(paddle.__version__, np.__version__, sorted(os.listdir(out)))
