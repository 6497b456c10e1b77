import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from checkpoint import (checkpoint_position, complete_checkpoints, complete_epochs, find_resume_checkpoint,
                        load_checkpoint, load_weights, save_checkpoint, weights_path)
from conftest import ROOT
from errors import CheckpointError, WeightsError
from model import build_model

WRITER = '''
import sys, paddle
sys.path.insert(0, {root!r})
from checkpoint import save_checkpoint
layer = paddle.nn.Linear(2000, 2000)  # 16 MB per file: long enough to be killed mid-write
opt = paddle.optimizer.Momentum(parameters=layer.parameters())
print('ready', flush=True)  # the kill delays count from here, not from a (sometimes slow) Paddle import
epoch = 0
while True:
    save_checkpoint({folder!r}, epoch, layer, opt, {{'epoch': epoch}})
    epoch += 1
'''


def test_a_killed_writer_never_leaves_a_truncated_checkpoint(tmp_path):
    script = tmp_path / 'writer.py'
    script.write_text(WRITER.format(root=ROOT, folder=str(tmp_path / 'ck')))
    for delay in (0.3, 0.55, 0.7, 1.0):
        process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        assert process.stdout.readline().strip() == 'ready'
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finals = list((tmp_path / 'ck').glob('*.pdparams')) + list((tmp_path / 'ck').glob('*.pdopt'))
    assert finals
    for path in finals:  # every file under a final name is whole
        assert paddle.load(str(path))
    epochs = complete_epochs(str(tmp_path / 'ck'))
    assert epochs and find_resume_checkpoint(str(tmp_path / 'ck')).endswith(f'slowfast_epoch{epochs[-1]}')


def test_resume_restores_model_optimizer_and_schedule(tiny_cfg, tmp_path):
    from lr_policy import EpochLR

    model = build_model(tiny_cfg)
    sched = EpochLR(tiny_cfg)
    opt = paddle.optimizer.Momentum(learning_rate=sched, parameters=model.parameters(), use_nesterov=True)
    sched.step(1.3)
    save_checkpoint(str(tmp_path), 4, model, opt, {'epoch': 4, 'global_step': 13})
    other = build_model(tiny_cfg)
    sched2 = EpochLR(tiny_cfg)
    opt2 = paddle.optimizer.Momentum(learning_rate=sched2, parameters=other.parameters(), use_nesterov=True)
    meta = load_checkpoint(find_resume_checkpoint(str(tmp_path)), other, opt2)
    assert {k: meta[k] for k in ('epoch', 'global_step')} == {'epoch': 4, 'global_step': 13}
    assert len(meta['weights_sha256']) == 64  # the digest of the .pdparams it belongs with
    assert sched2.last_epoch == 1.3 and sched2() == sched() and sched() != EpochLR(tiny_cfg)()
    for key, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), other.state_dict()[key].numpy()), key
    with pytest.raises(CheckpointError, match=r'--resume_epoch 2: .* complete ones: \[4\]'):
        find_resume_checkpoint(str(tmp_path), 2)
    os.remove(tmp_path / 'slowfast_epoch4.pdopt')  # a .pdparams without its .pdopt is incomplete
    with pytest.raises(CheckpointError, match='no complete checkpoint'):
        find_resume_checkpoint(str(tmp_path))


def test_load_weights_strict_names_the_mismatch_and_finetune_reports(tiny_cfg, tmp_path):
    model = build_model(tiny_cfg)
    paddle.save(model.state_dict(), str(tmp_path / 'w.pdparams'))
    assert weights_path(str(tmp_path / 'w')) == str(tmp_path / 'w.pdparams')
    loaded, skipped, reinit = load_weights(build_model(tiny_cfg), str(tmp_path / 'w'))  # prefix, as the original
    assert len(loaded) == 552 and not skipped and not reinit

    tiny_cfg.MODEL.num_classes = 7
    other = build_model(tiny_cfg)
    with pytest.raises(ValueError, match=r'shape mismatch: head\.projection\.weight \[320, 5\] vs model \[320, 7\]'):
        load_weights(other, str(tmp_path / 'w.pdparams'))
    loaded, skipped, reinit = load_weights(other, str(tmp_path / 'w.pdparams'), strict=False)
    assert reinit == ['head.projection.weight', 'head.projection.bias'] and len(loaded) == 550
    assert np.array_equal(other.state_dict()['s2.pathway0_res0.branch2.a.weight'].numpy(),
                          model.state_dict()['s2.pathway0_res0.branch2.a.weight'].numpy())
    with pytest.raises(WeightsError, match='weights not found: .*nope.pdparams'):
        load_weights(other, str(tmp_path / 'nope'))


def test_resume_refuses_a_pair_of_files_that_do_not_belong_together(tiny_cfg, tmp_path):
    from checkpoint import CheckpointError, atomic_save, check_resumable

    model = build_model(tiny_cfg)
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    meta = {'epoch': 0, 'config': {'MODEL': dict(tiny_cfg.MODEL)}}
    prefix = save_checkpoint(str(tmp_path), 0, model, opt, meta)
    assert check_resumable(prefix, tiny_cfg.MODEL)['meta']['epoch'] == 0
    other = {k: v + 1 if v.dtype == paddle.float32 else v for k, v in model.state_dict().items()}
    atomic_save(other, prefix + '.pdparams')  # e.g. a crash between the two renames of the next save
    with pytest.raises(CheckpointError, match=r'slowfast_epoch0\.pdparams is not the one .*slowfast_epoch0\.pdopt'):
        check_resumable(prefix, tiny_cfg.MODEL)


def test_resume_refuses_a_checkpoint_trained_with_other_model_keys(tiny_cfg, tmp_path):
    from checkpoint import CheckpointError, check_resumable

    model = build_model(tiny_cfg)
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    prefix = save_checkpoint(str(tmp_path), 3, model, opt, {'epoch': 3, 'config': {'MODEL': dict(tiny_cfg.MODEL)}})
    changed = dict(tiny_cfg.MODEL, width_per_group=16, dropout_rate=0.1)
    with pytest.raises(CheckpointError, match=r"dropout_rate 0\.5 \(now 0\.1\), width_per_group 8 \(now 16\)"):
        check_resumable(prefix, changed)


def test_mid_epoch_checkpoints_are_found_first_and_removed_by_the_next_save(tiny_cfg, tmp_path):
    model = build_model(tiny_cfg)
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    folder = str(tmp_path)
    save_checkpoint(folder, 3, model, opt, {'epoch': 3})
    prefix = save_checkpoint(folder, 4, model, opt, {'epoch': 4}, iteration=20)
    assert prefix.endswith('slowfast_epoch4_iter20') and checkpoint_position(prefix) == (4, 20)
    assert find_resume_checkpoint(folder) == prefix  # inside epoch 4 is newer than the end of epoch 3
    assert find_resume_checkpoint(folder, 3).endswith('slowfast_epoch3') and complete_epochs(folder) == [3]
    save_checkpoint(folder, 4, model, opt, {'epoch': 4}, iteration=40)
    assert complete_checkpoints(folder) == [(3, None), (4, 40)]  # the older mid-epoch one is gone
    save_checkpoint(folder, 4, model, opt, {'epoch': 4})
    assert complete_checkpoints(folder) == [(3, None), (4, None)]
    assert sorted(os.listdir(folder)) == [f'slowfast_epoch{e}.{x}' for e in (3, 4) for x in ('pdopt', 'pdparams')]
    with pytest.raises(CheckpointError, match='not a checkpoint name'):
        checkpoint_position(os.path.join(folder, 'slowfast_epoch4_last'))


def test_a_mid_epoch_checkpoint_gives_each_rank_its_own_bn_statistics(tiny_cfg, tmp_path):
    model = build_model(tiny_cfg)
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    mean = 's1.pathway0_stem._bn._mean'
    ranks = [{mean: np.full(model.state_dict()[mean].shape, float(r), np.float32)} for r in range(2)]
    prefix = save_checkpoint(str(tmp_path), 0, model, opt, {'epoch': 0}, iteration=2, rank_state=ranks)
    for rank in range(2):
        other = build_model(tiny_cfg)
        meta = load_checkpoint(prefix, other, paddle.optimizer.Momentum(parameters=other.parameters()), rank=rank)
        assert meta['iteration'] == 2
        assert np.all(other.state_dict()[mean].numpy() == rank)
        weight = 's1.pathway0_stem._conv.weight'
        assert np.array_equal(other.state_dict()[weight].numpy(), model.state_dict()[weight].numpy())
