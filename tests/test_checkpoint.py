import logging
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
from helpers import ROOT, hostile_files
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


# ---- reading Paddle's files without running code ------------------------------------------------------------------

def assert_same(a, b, where='file'):
    """Equal structure, types and values, arrays bit for bit (dtype and shape included)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f'{where}[{key!r}]')
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for n, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{n}]')
    else:
        assert type(a) is type(b) and a == b, where


def test_every_file_the_project_writes_reads_as_paddle_load_gives_it(tiny_cfg, tmp_path):
    """Weights, a mid-epoch checkpoint of 2 ranks (optimizer, LR scheduler, loss scaler, BN statistics, meta with
    the config) and a PaddleVideo-style state dict, written by this Paddle: the safe reader gives exactly what
    paddle.load(return_numpy=True) gives, and the checkpoint resumes."""
    from checkpoint import load_paddle_file
    from lr_policy import EpochLR

    model = build_model(tiny_cfg)
    opt = paddle.optimizer.Momentum(learning_rate=EpochLR(tiny_cfg), parameters=model.parameters(),
                                    use_nesterov=True, weight_decay=1e-4)
    model.train()
    x = [paddle.randn([2, 3, 2, 64, 64]), paddle.randn([2, 3, 8, 64, 64])]
    model(x).sum().backward()
    opt.step()
    statistics = {k: v.numpy() for k, v in model.state_dict().items() if k.endswith('_mean')}
    scaler = paddle.amp.GradScaler(init_loss_scaling=1024.0)
    meta = {'global_step': 7, 'config': {s: dict(k) for s, k in tiny_cfg.items()}, 'np_value': np.float32(0.5)}
    prefix = save_checkpoint(str(tmp_path), 3, model, opt, meta,
                             scaler=scaler, iteration=5, rank_state=[statistics, statistics])
    paddle.save({'backbone.' + k: v for k, v in model.state_dict().items()}, str(tmp_path / 'paddlevideo.pdparams'))
    for path in (prefix + '.pdparams', prefix + '.pdopt', str(tmp_path / 'paddlevideo.pdparams')):
        assert_same(load_paddle_file(path), paddle.load(path, return_numpy=True), path)
    other = build_model(tiny_cfg)
    opt2 = paddle.optimizer.Momentum(learning_rate=EpochLR(tiny_cfg), parameters=other.parameters(),
                                     use_nesterov=True, weight_decay=1e-4)
    meta = load_checkpoint(prefix, other, opt2)
    assert meta['global_step'] == 7 and meta['iteration'] == 5 and meta['np_value'] == np.float32(0.5)
    for key, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), other.state_dict()[key].numpy()), key


def test_files_paddle_2_6_wrote_read_as_paddle_load_gives_them():
    """tests/data/paddle26 (tests/data/make_paddle26_files.py; numpy 1's module names): a checkpoint, a
    PaddleVideo-style state dict and DenseTensors (pickled by Paddle through ``eval('data', ...)``)."""
    from checkpoint import load_paddle_file

    folder = os.path.join(ROOT, 'tests', 'data', 'paddle26')
    names = sorted(os.listdir(folder))
    assert names == ['dense_tensor.pdparams', 'paddlevideo.pdparams', 'slowfast_epoch0_iter1.pdopt',
                     'slowfast_epoch0_iter1.pdparams']
    for name in names:
        path = os.path.join(folder, name)
        assert_same(load_paddle_file(path), paddle.load(path, return_numpy=True), name)
    dense = load_paddle_file(os.path.join(folder, 'dense_tensor.pdparams'))
    assert np.array_equal(dense['w'], np.arange(6, dtype=np.float32).reshape(2, 3)) and len(dense['nested']) == 1
    meta = load_paddle_file(os.path.join(folder, 'slowfast_epoch0_iter1.pdopt'))['meta']
    assert meta['stage'] == [8, [[4, 64]]] and meta['np_number'] == 0.25 and len(meta['weights_sha256']) == 64


def test_hostile_pickles_are_refused_before_anything_in_them_runs(tmp_path):
    from checkpoint import load_paddle_file

    marker = tmp_path / 'marker'
    for name, path in hostile_files(str(tmp_path), marker).items():
        with pytest.raises(WeightsError, match=r'refusing to load it: it asks for (posix\.system|builtins\.eval|'
                                               r'copyreg\._reconstructor).*--allow_pickle') as error:
            load_paddle_file(path)
        assert path in str(error.value), name
        assert not marker.exists(), name
    with pytest.raises(CheckpointError, match='not a file written by paddle.save'):
        (tmp_path / 'text.pdopt').write_text('hello')
        load_paddle_file(str(tmp_path / 'text.pdopt'), error=CheckpointError)
    # --allow_pickle is paddle.load itself: it runs the file's code (why it is for trusted files only)
    load_paddle_file(os.path.join(tmp_path, 'reduce_os_system_p4.pdparams'), allow_pickle=True)
    assert marker.exists()


@pytest.mark.slow
def test_a_tensor_paddle_save_splits_is_joined_again(tmp_path):
    """paddle.save with pickle protocol 2 or 3 cuts an array over 1 GiB into slices (UnpackBigParamInfor@@)."""
    from checkpoint import load_paddle_file

    big = np.arange((1 << 30) + 7, dtype=np.uint8)
    path = str(tmp_path / 'big.pdparams')
    paddle.save({'big': big, 'small': np.ones(3, np.float32)}, path, protocol=2)
    del big
    loaded = load_paddle_file(path)
    assert list(loaded) == ['big', 'small'] and loaded['big'].shape == ((1 << 30) + 7,)
    assert_same(loaded, paddle.load(path, return_numpy=True))


@pytest.mark.slow
def test_every_entry_point_refuses_a_crafted_file_and_runs_none_of_it(demo_lists, tmp_path):
    """The crafted .pdparams / .pdopt given to each script and tool that reads Paddle's files: the weights (or
    checkpoint) error naming the file and the refused global, and the payload never ran."""
    from helpers import tiny_train_overrides

    marker = tmp_path / 'marker'
    evil = hostile_files(str(tmp_path), marker)['nested_in_a_state_dict_p4']
    flags = [a for o in tiny_train_overrides(*demo_lists) for a in ('-o', o)] + ['-o', 'MODEL.num_classes=4']
    config = ['--config', os.path.join(ROOT, 'slowfast-single.yaml')]
    video = os.path.join(os.path.dirname(demo_lists[1]), open(demo_lists[1]).read().split()[0])
    ck = tmp_path / 'ck'
    ck.mkdir()
    for ext in ('.pdparams', '.pdopt'):  # a --resume folder someone else can write to
        with open(evil, 'rb') as src, open(ck / f'slowfast_epoch0{ext}', 'wb') as dst:
            dst.write(src.read())
    commands = {
        'train.py --weights': (['train.py', *config, '--weights', evil, '--save_dir', str(tmp_path / 'a')], 4, evil),
        'train.py --resume': (['train.py', *config, '--resume', '--save_dir', str(ck)], 5, 'slowfast_epoch0.pdopt'),
        'eval.py': (['eval.py', *config, '--weights', evil, '-o', f'TEST.filelist={demo_lists[1]}'], 4, evil),
        'predict.py': (['predict.py', *config, '--weights', evil, '--video', video], 4, evil),
        'export_model.py': (['tools/deploy/export_model.py', *config, '--weights', evil, '--save_dir',
                             str(tmp_path / 'export')], 4, evil),
        'gradcam.py': (['tools/analysis/gradcam.py', *config, '--weights', evil, '--video', video], 4, evil),
        'convert_weights.py': (['tools/weights/convert_weights.py', *config, '--src', evil, '--dst',
                                str(tmp_path / 'out.pdparams')], 4, evil),
        'zoo.py': (['tools/weights/zoo.py', 'get', 'paddlevideo-slowfast-4x16', '--file', evil, '--out',
                    str(tmp_path / 'zoo')], 4, evil),
    }
    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')
    for name, (command, status, named) in commands.items():
        extra = {'convert_weights.py': flags[:-2], 'zoo.py': []}.get(name, flags)
        if name not in ('export_model.py', 'convert_weights.py', 'zoo.py'):
            extra = extra + ['--use_gpu', 'False']
        result = subprocess.run([sys.executable, os.path.join(ROOT, command[0])] + command[1:] + extra,
                                capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
        log = result.stdout + result.stderr
        assert result.returncode == status, (name, log[-3000:])
        assert named in log and 'refusing to load it: it asks for posix.system' in log, (name, log[-3000:])
        assert not marker.exists(), name
    # nothing written (the output folders were made and checked before the weights were read: empty)
    assert not (tmp_path / 'out.pdparams').exists() and os.listdir(tmp_path / 'export') == []


# ---- the run's folder: one run's, cleared of killed saves, never mixed -----------------------------------------------

HOLDER = '''
import sys, time
sys.path.insert(0, {root!r})
from checkpoint import claim_save_dir
folder = claim_save_dir({folder!r}, resume=True)
print('claimed', flush=True)
time.sleep(600)
'''


def test_a_folder_in_use_is_refused_naming_the_run_and_freed_when_that_run_dies(tmp_path):
    import socket

    from checkpoint import claim_save_dir
    from errors import RunFolderError

    folder = str(tmp_path / 'ck')
    script = tmp_path / 'holder.py'
    script.write_text(HOLDER.format(root=ROOT, folder=folder))
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'claimed'
        with pytest.raises(RunFolderError) as error:
            claim_save_dir(folder, resume=True)
        assert str(error.value).startswith(f'--save_dir {folder} is in use by another training run (host '
                                           f'{socket.gethostname()}, process {holder.pid}, started 20')
        assert 'one run per folder' in str(error.value) and error.value.status == 8
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up of its own: the kernel releases the lock
        holder.wait()
    claimed = claim_save_dir(folder, resume=True)
    assert open(os.path.join(folder, 'slowfast_run.lock')).read().startswith(f'host {socket.gethostname()}, '
                                                                             f'process {os.getpid()}, started ')
    claimed.lock.close()


def small_checkpoints(folder, epochs):
    layer = paddle.nn.Linear(4, 4)
    opt = paddle.optimizer.Momentum(parameters=layer.parameters())
    for epoch in range(epochs):
        save_checkpoint(str(folder), epoch, layer, opt, {'epoch': epoch})


def test_a_fresh_run_refuses_a_folder_holding_checkpoints_unless_it_starts_over(tmp_path, caplog, monkeypatch):
    from checkpoint import claim_save_dir
    from errors import RunFolderError

    folder = tmp_path / 'ck'
    small_checkpoints(folder, 3)
    (folder / 'train.log').write_text('the first run\n')
    (folder / 'notes.txt').write_text('mine')
    with pytest.raises(RunFolderError) as error:
        claim_save_dir(str(folder), resume=False)
    assert str(error.value) == (
        f'--save_dir {folder} holds the checkpoints of an earlier run (6 files, the newest {folder}/slowfast_epoch2), '
        'and this run does not resume it: starting over in the same folder would mix the two runs\' checkpoints. '
        'Continue that run with --resume, give this one another --save_dir, or move the old checkpoints aside with '
        '--start_over')
    claim_save_dir(str(folder), resume=True).lock.close()  # resuming it is what the folder is for
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(os, 'replace', lambda src, dst: moves.append(os.path.basename(src)) or real_replace(src, dst))
    claim_save_dir(str(folder), resume=False, start_over=True).lock.close()
    [aside] = folder.glob('previous_run_*')
    assert sorted(os.listdir(aside)) == sorted([f'slowfast_epoch{e}{x}' for e in range(3) for x in ('.pdparams', '.pdopt')]
                                               + ['train.log'])
    assert sorted(os.listdir(folder)) == sorted(['notes.txt', 'slowfast_run.lock', aside.name])
    assert [m for m in moves if m.endswith('.pdopt')] == moves[:3]  # every .pdopt before any .pdparams
    assert complete_checkpoints(str(folder)) == []
    assert f'--start_over: moved the earlier run\'s 6 checkpoint files and its train.log to {aside}' in caplog.text
    claim_save_dir(str(folder), resume=False).lock.close()  # nothing of the earlier run is left to mix with


def test_the_temporary_files_of_killed_saves_are_removed_at_start_and_nothing_else(tmp_path, caplog):
    from checkpoint import claim_save_dir

    folder = tmp_path / 'ck'
    script = tmp_path / 'writer.py'
    script.write_text(WRITER.format(root=ROOT, folder=str(folder)))
    for delay in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2) * 3:  # until a kill lands inside a write
        process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True)
        assert process.stdout.readline().strip() == 'ready'
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if list(folder.glob('.slowfast_epoch*.part*')):
            break
    parts = sorted(p.name for p in folder.glob('.slowfast_epoch*.part*'))
    assert parts, 'no kill landed inside a save'
    others = {'notes.txt': 'mine', '.hidden': 'mine', '.other.pdparams.part12': 'not a save of this project',
              'slowfast_epoch9.pdparams.part3': 'not hidden: not a temporary of atomic_path'}
    for name, text in others.items():
        (folder / name).write_text(text)
    kept = sorted(set(os.listdir(folder)) - set(parts))
    claim_save_dir(str(folder), resume=True).lock.close()
    assert sorted(set(os.listdir(folder)) - {'slowfast_run.lock'}) == sorted(set(kept) - {'slowfast_run.lock'})
    assert all((folder / name).read_text() == text for name, text in others.items())
    assert f'{folder}: removed {len(parts)} temporary files of saves that were killed: ' in caplog.text
    assert all(name in caplog.text for name in parts)


def test_a_second_run_s_write_probe_is_left_to_it_while_it_runs(tmp_path, caplog):
    """The CI failure of stop 43: the run holding the folder removed, as a killed save's, the write probe of a second
    run that was checking the folder before trying its lock, and crashed when that run removed it first."""
    from atomic import check_output_folder
    from checkpoint import claim_save_dir

    folder = tmp_path / 'ck'
    folder.mkdir()
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    try:
        live, gone = f'.write_check.{other.pid}.abc', f'.write_check.{dead.pid}.abc'
        for name in (live, gone):
            (folder / name).write_bytes(b'\0')
        with caplog.at_level(logging.INFO):
            claim_save_dir(str(folder), resume=False).lock.close()
        assert (folder / live).exists() and not (folder / gone).exists()
        assert f'removed 1 temporary files of saves that were killed: {gone}' in caplog.text
        check_output_folder(str(folder), '--save_dir')  # this process's own probe: written, removed, no other touched
        assert sorted(os.listdir(folder)) == sorted([live, 'slowfast_run.lock'])
    finally:
        other.kill()
        other.wait()


def test_weights_given_as_a_folder_name_its_newest_complete_checkpoint(tiny_cfg, tmp_path):
    model = build_model(tiny_cfg)
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(WeightsError, match=f'^--weights {empty} is a folder, not a weights file; it holds no complete '
                                           'checkpoint'):
        load_weights(model, str(empty))
    for epoch in range(2):
        save_checkpoint(str(tmp_path / 'ck'), epoch, model, opt, {})
    save_checkpoint(str(tmp_path / 'ck'), 2, model, opt, {}, iteration=5)
    os.remove(tmp_path / 'ck' / 'slowfast_epoch2_iter5.pdopt')  # incomplete: not named
    with pytest.raises(WeightsError) as error:
        load_weights(model, str(tmp_path / 'ck'))
    command = f'--weights {tmp_path / "ck" / "slowfast_epoch1"}'
    assert str(error.value) == (f'--weights {tmp_path / "ck"} is a folder, not a weights file; its newest complete '
                                f'checkpoint: {command}')
    assert load_weights(model, command.split(' ', 1)[1])[0]  # the named flag loads


@pytest.mark.parametrize('allow_pickle', [False, True])
def test_a_cut_or_empty_file_is_named_with_its_status_with_or_without_allow_pickle(tiny_cfg, tmp_path, allow_pickle):
    from checkpoint import check_resumable, load_paddle_file

    model = build_model(tiny_cfg)
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    prefix = save_checkpoint(str(tmp_path), 0, model, opt, {})
    for ext, error in (('.pdparams', WeightsError), ('.pdopt', CheckpointError)):
        data = open(prefix + ext, 'rb').read()
        for name, content in (('cut', data[:len(data) // 2]), ('empty', b'')):
            path = tmp_path / f'{name}{ext}'
            path.write_bytes(content)
            with pytest.raises(error, match=f'^{path}: not a file written by paddle.save, or cut short'):
                load_paddle_file(str(path), allow_pickle, error)
    open(prefix + '.pdopt', 'wb').write(open(prefix + '.pdopt', 'rb').read()[:1000])
    with pytest.raises(CheckpointError, match=f'^{prefix}.pdopt: not a file written by paddle.save'):
        check_resumable(prefix, tiny_cfg.MODEL, allow_pickle)
    with pytest.raises(WeightsError, match=f'^{tmp_path}/cut.pdparams: not a file written by paddle.save'):
        load_weights(model, str(tmp_path / 'cut'), allow_pickle=allow_pickle)


# ---- retention ------------------------------------------------------------------------------------------------------

def test_retention_keeps_the_newest_and_every_nth_epoch():
    from checkpoint import checkpoints_at_once, retained_epochs

    assert retained_epochs(list(range(10)), 3, 0) == [7, 8, 9]
    assert retained_epochs(list(range(10)), 3, 4) == [3, 7, 8, 9]
    assert retained_epochs(list(range(10)), 0, 4) == list(range(10))  # 0: every one
    assert retained_epochs([4, 9, 14, 15], 2, 5) == [4, 9, 14, 15]
    assert retained_epochs([4, 9, 14, 15], 1, 0) == [15]
    for epochs in ([], [0], list(range(196))):  # the newest is always kept
        for last in (1, 2, 3):
            for every in (0, 1, 7, 20):
                kept = retained_epochs(epochs, last, every)
                assert not epochs or epochs[-1] in kept
                assert set(kept) == set(epochs[-last:]) | {e for e in epochs if every and (e + 1) % every == 0}
    # the recipe: 196 epochs, the newest 3 and every 20th: 9 + 3, never more at once
    assert checkpoints_at_once(list(range(196)), 3, 20) == 12
    assert checkpoints_at_once(list(range(196)), 0, 0) == 196


def fake_checkpoints(folder, positions):
    folder.mkdir(exist_ok=True)
    for epoch, iteration in positions:
        name = f'slowfast_epoch{epoch}' + ('' if iteration is None else f'_iter{iteration}')
        for ext in ('.pdparams', '.pdopt'):
            (folder / (name + ext)).write_bytes(name.encode())


def test_old_checkpoints_are_removed_and_nothing_else(tmp_path):
    from checkpoint import complete_checkpoints, remove_old_checkpoints

    folder = tmp_path / 'ck'
    fake_checkpoints(folder, [(e, None) for e in range(8)] + [(8, 3)])
    others = ['notes.txt', 'slowfast_epoch2.pdparams.bak', 'slowfast_epoch99.pdparams', 'train.log']  # 99: no .pdopt
    for name in others:
        (folder / name).write_text('mine')
    removed = remove_old_checkpoints(str(folder), 2, 4)
    assert removed == ['slowfast_epoch0', 'slowfast_epoch1', 'slowfast_epoch2', 'slowfast_epoch4', 'slowfast_epoch5']
    assert complete_checkpoints(str(folder)) == [(3, None), (6, None), (7, None), (8, 3)]
    assert all((folder / name).read_text() == 'mine' for name in others)
    assert not (folder / 'slowfast_epoch0.pdparams').exists() and not (folder / 'slowfast_removing.txt').exists()


@pytest.mark.parametrize('moment', range(5))
def test_a_removal_killed_at_any_moment_leaves_a_resumable_folder_finished_at_the_next_start(tmp_path, monkeypatch,
                                                                                              moment):
    """Each step of a removal (the journal's rename, the .pdopt's and .pdparams' removal, the journal's) may be the
    last before a kill: the newest checkpoint stays resumable, and the next start finishes what was begun."""
    import checkpoint
    from checkpoint import claim_save_dir, complete_checkpoints, find_resume_checkpoint, remove_old_checkpoints

    class Killed(BaseException):
        pass

    folder = tmp_path / 'ck'
    fake_checkpoints(folder, [(e, None) for e in range(3)])
    steps = []
    real_remove, real_replace = os.remove, os.replace

    def step(real):
        def run(*args):
            if len(steps) == moment:
                raise Killed()
            steps.append(args)
            return real(*args)
        return run

    monkeypatch.setattr(checkpoint.os, 'remove', step(real_remove))
    monkeypatch.setattr(checkpoint.os, 'replace', step(real_replace))
    import atomic
    monkeypatch.setattr(atomic.os, 'replace', step(real_replace))
    try:
        remove_old_checkpoints(str(folder), 1, 0)
        killed = False
    except Killed:
        killed = True
    monkeypatch.undo()
    assert killed  # the first removal takes 4 steps and the second 4 more: each moment here is inside them
    assert find_resume_checkpoint(str(folder)).endswith('slowfast_epoch2')  # resumable whatever the moment
    assert (2, None) in complete_checkpoints(str(folder))
    claim_save_dir(str(folder), resume=True).lock.close()  # the next start finishes the removal begun
    names = sorted(os.listdir(folder))
    assert not any('removing' in n for n in names)  # the journal, or what a write of it killed left
    assert sum(n.startswith('slowfast_epoch0.') for n in names) in (0, 2)  # begun: gone whole; not begun: there whole
    assert (moment == 0) == ('slowfast_epoch0.pdparams' in names)
    remove_old_checkpoints(str(folder), 1, 0)
    assert complete_checkpoints(str(folder)) == [(2, None)]
    assert sorted(n for n in os.listdir(folder) if n.startswith('slowfast_epoch')) == [
        'slowfast_epoch2.pdopt', 'slowfast_epoch2.pdparams']
