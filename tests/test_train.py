"""train.py end to end on a tiny network and the demo videos, run as users run it."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import paddle

from conftest import ROOT, tiny_train_overrides

ENV = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')


def train_command(demo_lists, save_dir, *extra, epochs=2):
    overrides = [a for o in tiny_train_overrides(*demo_lists, epochs=epochs) for a in ('-o', o)]
    return [sys.executable, os.path.join(ROOT, 'train.py'), '--config', os.path.join(ROOT, 'slowfast-single.yaml'),
            '--use_gpu', 'False', '--save_dir', str(save_dir), '--log_interval', '2'] + overrides + list(extra)


def run_train(demo_lists, save_dir, *extra, epochs=2, expect=0):
    result = subprocess.run(train_command(demo_lists, save_dir, *extra, epochs=epochs), capture_output=True,
                            text=True, env=ENV, timeout=600, cwd=ROOT)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def weights(path):
    return {k: v.numpy() for k, v in paddle.load(str(path)).items()}


def test_two_epochs_log_checkpoint_validate_and_visualdl(demo_lists, tmp_path):
    from visualdl import LogReader

    log = run_train(demo_lists, tmp_path / 'ck', '--use_visualdl', 'True', '--vd_logdir', tmp_path / 'vd')
    for name in ('slowfast_epoch0.pdparams', 'slowfast_epoch0.pdopt', 'slowfast_epoch1.pdparams',
                 'slowfast_epoch1.pdopt', 'train.log'):
        assert (tmp_path / 'ck' / name).is_file(), name
    text = (tmp_path / 'ck' / 'train.log').read_text()
    assert '---------------- Train Arguments ----------------' in text
    assert 'SlowFast-R50 2x8 (alpha 4, beta 4, width 8)' in text and 'M parameters' in text
    assert '[Epoch 0, iter 2/4] loss' in text and 'ips' in text and 'ETA' in text and 'lr 0.0' in text
    assert '[Epoch 1 end] avg_loss' in text and 'undecodable videos replaced 0' in text
    assert 'precise BN: statistics of 2 batches' in text
    assert '[Val epoch 1] loss' in text and 'over 8 videos' in text
    assert '[TRAIN] training finished' in log

    reader = LogReader(file_path=str(next((tmp_path / 'vd').glob('vdlrecords.*'))))
    tags = set(reader.get_tags()['scalar'])
    assert {'train/loss', 'train/top1_err', 'train/top5_err', 'train/lr', 'train/ips', 'val/loss', 'val/top1_err',
            'val/top5_err', 'train_epoch/loss'} <= tags
    steps = [r.id for r in reader.get_data('scalar', 'train/loss')]
    assert steps == sorted(steps) and steps[-1] == 8  # global optimizer steps: 2 epochs x 4

    meta = paddle.load(str(tmp_path / 'ck' / 'slowfast_epoch1.pdopt'))['meta']
    assert meta['epoch'] == 1 and meta['global_step'] == 8 and meta['config']['TRAIN']['batch_size'] == 4


def kill_when(command, path, delay):
    """Start training, SIGKILL it ``delay`` s after ``path`` appears, and check it was still running then."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    deadline = time.time() + 300
    while not path.exists():
        assert process.poll() is None and time.time() < deadline, f'training ended before {path.name} appeared'
        time.sleep(0.01)
    time.sleep(delay)
    assert process.poll() is None, 'training finished before it could be killed'
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_sigkill_at_any_moment_then_resume_gives_the_same_weights(demo_lists, tmp_path):
    run_train(demo_lists, tmp_path / 'straight', epochs=3)
    killed = tmp_path / 'killed'
    command = train_command(demo_lists, killed, '--use_visualdl', 'True', '--vd_logdir', tmp_path / 'vd', epochs=3)
    kill_when(command, killed / 'slowfast_epoch0.pdparams', 0.0)  # while its checkpoint is being written
    kill_when(command + ['--resume', 'True'], killed / 'slowfast_epoch1.pdopt', 0.3)  # inside epoch 2
    assert not (killed / 'slowfast_epoch2.pdparams').exists()
    for path in list(killed.glob('*.pdparams')) + list(killed.glob('*.pdopt')):
        paddle.load(str(path))  # whatever the kills interrupted, no file under a final name is truncated
    time.sleep(1.1)  # VisualDL names its files by the second
    log = run_train(demo_lists, killed, '--resume', '--use_visualdl', 'True', '--vd_logdir', tmp_path / 'vd',
                    '--seed', '5', epochs=3)  # another --seed: the run's own (0) is restored, so the data order holds
    assert 'resumed from' in log and 'slowfast_epoch1' in log and "--seed 5 ignored" in log and 'seed 0' in log
    from visualdl import LogReader
    last = max((tmp_path / 'vd').glob('vdlrecords.*'), key=os.path.getmtime)
    steps = [r.id for r in LogReader(file_path=str(last)).get_data('scalar', 'train/loss')]
    assert steps == [10, 12]  # the global step goes on from the checkpoint's 8 (4 steps an epoch, a log every 2)
    a = weights(tmp_path / 'straight' / 'slowfast_epoch2.pdparams')
    b = weights(killed / 'slowfast_epoch2.pdparams')
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-5


def test_two_cpu_processes_through_run_train_multi(demo_lists, tmp_path):
    overrides = [a for o in tiny_train_overrides(*demo_lists, epochs=1) for a in ('-o', o)]
    result = subprocess.run(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir', str(tmp_path / 'ck'),
                             '--log_interval', '1'] + overrides, capture_output=True, text=True, timeout=600,
                            env=dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(tmp_path / 'logs')), cwd=ROOT)
    logs = ''.join((tmp_path / 'logs' / f'workerlog.{r}').read_text() for r in range(2)
                   if (tmp_path / 'logs' / f'workerlog.{r}').exists())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + logs[-4000:]
    rank0 = (tmp_path / 'logs' / 'workerlog.0').read_text()
    assert 'rank 0 of 2, batch 4 = 2 ranks x 2 x 1 accumulation steps' in rank0
    assert '[Epoch 0, iter 4/4]' in rank0  # 8 of the 16 videos per rank, 2 per batch
    # numbers, not substrings: every trainable parameter equal after the steps, buffers after the averaging
    steps = re.findall(r'max trainable-parameter difference to rank 0 is (\S+)', rank0)
    state = re.findall(r'max parameter and buffer difference to rank 0 is (\S+)', rank0)
    assert len(steps) == len(state) == 1 and float(steps[0]) == 0.0 and float(state[0]) == 0.0, (steps, state)
    assert (tmp_path / 'ck' / 'slowfast_epoch0.pdparams').is_file()


def test_nan_loss_stops_without_a_checkpoint(demo_lists, tmp_path):
    log = run_train(demo_lists, tmp_path / 'ck', '-o', 'TRAIN.base_lr=1e30', '-o', 'TRAIN.warmup_start_lr=1e30',
                    expect=1)
    assert 'loss is not finite on rank 0 at epoch 0, iteration' in log
    assert not list((tmp_path / 'ck').glob('*.pdparams'))


def kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process whose command line contains ``text``."""
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if text.encode() in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def start_two_nodes(demo_lists, save_dirs, logs, *extra, epochs=2):
    """``run_train_multi.sh`` twice on this machine, as two nodes of one CPU rank each (MASTER, NNODES=2)."""
    overrides = [a for o in tiny_train_overrides(*demo_lists, epochs=epochs) for a in ('-o', o)]
    master = f'127.0.0.1:{free_port()}'
    return [subprocess.Popen(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir', str(save_dir)] +
                             overrides + list(extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=ROOT, start_new_session=True,
                             env=dict(ENV, USE_GPU='False', NPROC='1', NNODES='2', MASTER=master,
                                      NODE_RANK=str(node), LOG_DIR=str(logs / f'node{node}')))
            for node, save_dir in enumerate(save_dirs)]


def test_two_nodes_resume_the_checkpoint_rank_0_picks_and_match_one_node(demo_lists, tmp_path):
    overrides = [a for o in tiny_train_overrides(*demo_lists, epochs=2) for a in ('-o', o)]
    subprocess.run(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir', str(tmp_path / 'one')] +
                   overrides, check=True, capture_output=True, timeout=600, cwd=ROOT,
                   env=dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(tmp_path / 'logs_one')))
    shared = tmp_path / 'shared'
    nodes = start_two_nodes(demo_lists, [shared, shared], tmp_path / 'logs_a')
    deadline = time.time() + 300
    while not (shared / 'slowfast_epoch0.pdopt').exists():  # a node lost after epoch 0: both are stopped
        assert all(n.poll() is None for n in nodes) and time.time() < deadline
        time.sleep(0.01)
    kill_processes_mentioning(str(shared))  # the launchers and their workers (which have sessions of their own)
    for node in nodes:
        node.wait()
    time.sleep(1)
    assert not (shared / 'slowfast_epoch1.pdopt').exists()

    # node 1 does not see save_dir: every rank stops, naming the path
    nodes = start_two_nodes(demo_lists, [shared, tmp_path / 'unshared'], tmp_path / 'logs_b', '--resume')
    assert all(node.wait(timeout=300) != 0 for node in nodes)
    logs = [(tmp_path / 'logs_b' / f'node{n}' / 'workerlog.0').read_text() for n in range(2)]
    for log in logs:
        assert 'rank 1 cannot read slowfast_epoch0.pdparams/.pdopt, which rank 0 resumes from' in log
    assert f'in {tmp_path / "unshared"}: --save_dir must be a folder every node sees' in logs[1]

    nodes = start_two_nodes(demo_lists, [shared, shared], tmp_path / 'logs_c', '--resume')
    assert all(node.wait(timeout=300) == 0 for node in nodes)
    logs = [(tmp_path / 'logs_c' / f'node{n}' / 'workerlog.0').read_text() for n in range(2)]
    assert f'resumed from {shared / "slowfast_epoch0"}' in logs[0]  # (the other ranks log warnings only)
    state = re.findall(r'max parameter and buffer difference to rank 0 is (\S+)', logs[0])
    assert state and float(state[-1]) == 0.0  # both nodes hold the same model
    a, b = weights(tmp_path / 'one' / 'slowfast_epoch1.pdparams'), weights(shared / 'slowfast_epoch1.pdparams')
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-5  # = one node with two ranks, uninterrupted


def test_a_nan_loss_stops_every_rank_with_the_same_message(demo_lists, tmp_path):
    overrides = [a for o in tiny_train_overrides(*demo_lists, epochs=1) for a in ('-o', o)]
    result = subprocess.run(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir', str(tmp_path / 'ck')] +
                            overrides + ['-o', 'TRAIN.base_lr=1e30', '-o', 'TRAIN.warmup_start_lr=1e30'],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(tmp_path / 'logs')))
    assert result.returncode != 0
    messages = [re.findall(r'loss is not finite on rank \d at epoch 0, iteration \d+: stopping every rank',
                           (tmp_path / 'logs' / f'workerlog.{r}').read_text()) for r in range(2)]
    assert messages[0] and messages[0] == messages[1], messages  # each rank stopped by itself, at the same step
    assert not list((tmp_path / 'ck').glob('*.pdparams'))


def test_finetune_a_converted_checkpoint_with_another_class_count(demo_lists, tmp_path):
    run_train(demo_lists, tmp_path / 'base', epochs=1)
    base_state = paddle.load(str(tmp_path / 'base' / 'slowfast_epoch0.pdparams'))  # as PaddleVideo publishes it
    paddle.save({(k if k.startswith('head.') else 'backbone.' + k): v for k, v in base_state.items()},
                str(tmp_path / 'published.pdparams'))
    overrides = [a for o in tiny_train_overrides(*demo_lists) for a in ('-o', o)]
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'convert_weights.py'), '--config',
                             os.path.join(ROOT, 'slowfast-single.yaml'), '--src', str(tmp_path / 'published.pdparams'),
                             '--dst', str(tmp_path / 'converted.pdparams')] + overrides,
                            capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert result.returncode == 0 and 'paddlevideo checkpoint' in result.stdout, result.stdout + result.stderr
    log = run_train(demo_lists, tmp_path / 'ft', '--weights', tmp_path / 'converted.pdparams', '-o',
                    'MODEL.num_classes=6', epochs=1)
    assert 'loaded 550 tensors; re-initialised 2 (head.projection.weight, head.projection.bias)' in log
    base = weights(tmp_path / 'base' / 'slowfast_epoch0.pdparams')['head.projection.weight']
    assert weights(tmp_path / 'ft' / 'slowfast_epoch0.pdparams')['head.projection.weight'].shape == (base.shape[0], 6)

    # the published file as it is (not converted) matches no backbone tensor: an error, not training from scratch
    log = run_train(demo_lists, tmp_path / 'unconverted', '--weights', tmp_path / 'published.pdparams', '-o',
                    'MODEL.num_classes=6', epochs=1, expect=1)
    assert f'{tmp_path / "published.pdparams"}: only 0 of the model\'s 552 tensors match it' in log
    assert 'tools/convert_weights.py' in log and not (tmp_path / 'unconverted' / 'slowfast_epoch0.pdparams').exists()

    # the README's step 4 as written (the configs' default label map holds the 400 Kinetics names), at tiny size
    train_list, val_list = demo_lists
    video = os.path.join(os.path.dirname(val_list), open(val_list).read().split()[0])
    tiny = [a for o in tiny_train_overrides(*demo_lists) for a in ('-o', o)] + ['--use_gpu', 'False']

    def script(name, *args, expect=0):
        result = subprocess.run([sys.executable, os.path.join(ROOT, name), '--config', 'slowfast-single.yaml'] + tiny +
                                ['--weights', str(tmp_path / 'ft' / 'slowfast_epoch0'), '-o', 'MODEL.num_classes=6',
                                 *args], capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
        assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    log = script('eval.py', '-o', f'TEST.filelist={val_list}', '--save_path', str(tmp_path / 'eval'))
    assert 'no class names: the default label map holds the 400 Kinetics names, MODEL.num_classes is 6' in log
    assert json.loads((tmp_path / 'eval' / 'eval_result.json').read_text())['num_failed'] == 0
    script('predict.py', '--video', video, '--save_path', str(tmp_path / 'predict'))
    [entry] = json.loads((tmp_path / 'predict' / 'result.json').read_text())
    assert len(entry['top5_indices']) == 5 and 'top1_label' not in entry
    (tmp_path / 'names.txt').write_text('a\nb\nc\n')  # a map the user set must fit
    log = script('eval.py', '-o', f'TEST.filelist={val_list}', '-o', f'DATA.label_map={tmp_path / "names.txt"}',
                 expect=1)
    assert 'has 3 names, MODEL.num_classes is 6' in log


def test_gradient_accumulation_keeps_the_schedule_of_the_effective_batch(demo_lists, videos, tmp_path):
    # the val list also holds two broken videos: validation skips, counts and names them, never substitutes
    val = [line for line in open(demo_lists[1]).read().splitlines() if line.strip()]
    folder = os.path.dirname(demo_lists[1])
    listing = tmp_path / 'val_broken.txt'
    listing.write_text('\n'.join([os.path.join(folder, line) for line in val] +
                                 [f'{videos["garbage"]} 1', f'{videos["missing"]} 2']) + '\n')
    log = run_train(demo_lists, tmp_path / 'acc', '-o', 'TRAIN.accumulate_steps=2', '-o',
                    f'VALID.filelist={listing}', epochs=1)
    assert 'batch 4 = 1 ranks x 2 x 2 accumulation steps' in log and '[Epoch 0, iter 8/8]' in log
    meta = paddle.load(str(tmp_path / 'acc' / 'slowfast_epoch0.pdopt'))['meta']
    assert meta['global_step'] == 4  # optimizer steps of the 4-clip batch, as without accumulation
    assert f'over {len(val)} videos' in log and '2 undecodable videos skipped' in log
    assert f'cannot decode video {videos["garbage"]}' in log and f'cannot decode video {videos["missing"]}' in log
    assert 'precise BN: statistics of 2 batches' in log


def test_resume_edge_cases_and_bad_batch(demo_lists, tmp_path):
    log = run_train(demo_lists, tmp_path / 'empty', '--resume', 'True', epochs=1)  # nothing yet: from scratch
    assert 'no complete checkpoint' in log and 'starting from scratch' in log
    log = run_train(demo_lists, tmp_path / 'empty', '--resume_epoch', '5', epochs=1, expect=1)
    assert '--resume_epoch 5: no complete checkpoint' in log and 'complete ones: [0]' in log
    log = run_train(demo_lists, tmp_path / 'empty', '--resume', '-o', 'MODEL.dropout_rate=0.2', epochs=2, expect=1)
    assert 'slowfast_epoch0 was trained with other MODEL keys: dropout_rate 0.5 (now 0.2)' in log
    log = run_train(demo_lists, tmp_path / 'b', '-o', 'TRAIN.accumulate_steps=3', expect=1)
    assert 'TRAIN.batch_size (4) must be divisible by 3' in log
