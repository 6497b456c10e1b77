"""train.py end to end on a tiny network and the demo videos, run as users run it."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from helpers import ROOT, in_mount_namespace, one_error_line, tiny_train_overrides, tool_path, wait_for_line

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


def max_difference(a_path, b_path) -> float:
    a, b = weights(a_path), weights(b_path)
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def scalars(vd_dir, tag='train/loss'):
    """``{step: [values]}`` of a VisualDL tag over every log file in ``vd_dir`` (a resumed run adds a file)."""
    from visualdl import LogReader

    points = {}
    for path in sorted(vd_dir.glob('vdlrecords.*')):
        for record in LogReader(file_path=str(path)).get_data('scalar', tag):
            points.setdefault(record.id, []).append(record.value)
    return points


def file_scalars(path, tag):
    """``[(step, value)]`` of one VisualDL file, in the order written."""
    from visualdl import LogReader

    return [(r.id, r.value) for r in LogReader(file_path=str(path)).get_data('scalar', tag)]


def assert_same_curve(straight_vd, resumed_vd):
    """Every logged step once, none missing or repeated, with the uninterrupted run's values; and all of them in the
    newest file, the one VisualDL's board shows."""
    a, b = scalars(straight_vd), scalars(resumed_vd)
    assert sorted(a) == sorted(b) and all(len(v) == 1 for v in b.values()), (sorted(a), b)
    assert max(abs(a[k][0] - b[k][0]) for k in a) <= 1e-4
    newest = max(resumed_vd.glob('vdlrecords.*'), key=os.path.getmtime)
    assert [step for step, _ in file_scalars(newest, 'train/loss')] == sorted(a)


@pytest.fixture(scope='module')
def straight(demo_lists, tmp_path_factory):
    """An uninterrupted single-process run of 3 epochs, with VisualDL."""
    folder = tmp_path_factory.mktemp('straight')
    run_train(demo_lists, folder / 'ck', '--use_visualdl', 'True', '--vd_logdir', folder / 'vd', epochs=3)
    return folder


def run_multi(demo_lists, save_dir, logs, *extra, epochs=2):
    overrides = [a for o in tiny_train_overrides(*demo_lists, epochs=epochs) for a in ('-o', o)]
    result = subprocess.run(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir', str(save_dir)] +
                            overrides + list(extra), capture_output=True, text=True, timeout=600,
                            env=dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(logs)), cwd=ROOT)
    ranks = ''.join(path.read_text() for path in sorted(logs.glob('workerlog.*')))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + ranks[-4000:]
    return (logs / 'workerlog.0').read_text()


@pytest.fixture(scope='module')
def two_ranks(demo_lists, tmp_path_factory):
    """An uninterrupted run of 2 epochs by 2 CPU ranks through run_train_multi.sh, with VisualDL."""
    folder = tmp_path_factory.mktemp('two_ranks')
    log = run_multi(demo_lists, folder / 'ck', folder / 'logs', '--log_interval', '1', '--use_visualdl', 'True',
                    '--vd_logdir', folder / 'vd')
    return folder, log


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


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_gives_the_same_weights(demo_lists, straight, tmp_path):
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
    # the file VisualDL's board shows (the newest in the folder) holds the whole curve, every step once, as the
    # uninterrupted run's: the resumes went on in it, cut back to the checkpoint (4 steps an epoch, a log every 2)
    last = max((tmp_path / 'vd').glob('vdlrecords.*'), key=os.path.getmtime)
    straight_file, = (straight / 'vd').glob('vdlrecords.*')
    for tag in ('train/loss', 'train/lr', 'train_epoch/loss', 'val/top1_err'):
        got, want = (file_scalars(path, tag) for path in (last, straight_file))
        assert [step for step, _ in got] == [step for step, _ in want], (tag, got, want)
        assert max(abs(a - b) for (_, a), (_, b) in zip(got, want)) <= 1e-4, tag
    assert [step for step, _ in file_scalars(last, 'train/loss')] == [2, 4, 6, 8, 10, 12]
    assert max_difference(straight / 'ck' / 'slowfast_epoch2.pdparams', killed / 'slowfast_epoch2.pdparams') <= 1e-5


@pytest.mark.slow
def test_sigterm_at_a_random_iteration_then_resume_continues_exactly(demo_lists, straight, tmp_path):
    # Slurm and Ctrl-C signal every process: the DataLoader worker too (one here), which must not die under the step
    epoch, delay = random.choice([0, 1]), random.uniform(0.0, 0.3)
    folder = tmp_path / 'ck'
    command = train_command(demo_lists, folder, '--use_visualdl', 'True', '--vd_logdir', tmp_path / 'vd', '-o',
                            'DATA.num_workers=1', epochs=3)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                               cwd=ROOT, start_new_session=True)
    wait_for_line(folder / 'train.log', f'[Epoch {epoch}, iter 2/4]', process)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGTERM)
    log = process.communicate(timeout=300)[0]
    assert process.returncode == 75, log[-3000:]
    where = re.search(r'SIGTERM: stopped (at epoch (\d), iteration (\d) of 4|after epoch (\d))', log)
    assert where, log[-3000:]
    if where.group(2):  # inside the epoch, after the step the signal came in
        assert int(where.group(2)) == epoch and 3 <= int(where.group(3)) <= 4
        assert (folder / f'slowfast_epoch{epoch}_iter{where.group(3)}.pdopt').is_file()
    assert 'run again with --resume to continue' in log
    time.sleep(1.1)  # VisualDL names its files by the second

    log = run_train(demo_lists, folder, '--resume', '--use_visualdl', 'True', '--vd_logdir', tmp_path / 'vd',
                    epochs=3)
    assert 'resumed from' in log
    if where.group(2):
        assert f'at iteration {where.group(3)} of 4' in log
        assert f'[Epoch {epoch}, iter 2/4]' not in log  # the batches trained on are not read again
        assert not list(folder.glob('*_iter*'))  # the mid-epoch checkpoint is removed by the next one
    assert max_difference(straight / 'ck' / 'slowfast_epoch2.pdparams', folder / 'slowfast_epoch2.pdparams') <= 1e-5
    assert_same_curve(straight / 'vd', tmp_path / 'vd')


def test_a_stop_during_start_up_and_checkpoints_every_n_steps(demo_lists, tmp_path):
    folder = tmp_path / 'ck'
    process = subprocess.Popen(train_command(demo_lists, folder, epochs=1), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    wait_for_line(folder / 'train.log', 'rank 0 of 1', process)
    process.send_signal(signal.SIGUSR1)  # what Slurm's --signal sends before the time limit
    log = process.communicate(timeout=300)[0]
    assert process.returncode == 75 and 'SIGUSR1: stopped at epoch 0, iteration 1 of 4 (step 1)' in log, log[-3000:]
    assert (folder / 'slowfast_epoch0_iter1.pdopt').is_file()

    # the batches left exist only for the ranks and batch the checkpoint was written with
    log = run_train(demo_lists, folder, '--resume', '-o', 'TRAIN.batch_size=2', epochs=1, expect=5)
    assert ('stopped inside epoch 0, whose remaining batches are those of 1 ranks x 4 clips x 1 accumulation steps; '
            'this run has 1 x 2 x 1') in log
    log = run_train(demo_lists, folder, '--resume', '-o', 'TRAIN.checkpoint_every_steps=3', epochs=1)
    assert 'epoch 0 at iteration 1 of 4' in log and '[Epoch 0, iter 2/4]' in log
    assert f'saved {folder / "slowfast_epoch0_iter3"}.pdparams/.pdopt' in log  # step 3; step 4 ends the epoch
    assert sorted(p.name for p in folder.glob('*.pdopt')) == ['slowfast_epoch0.pdopt']


@pytest.mark.slow
def test_two_cpu_processes_through_run_train_multi(two_ranks):
    folder, rank0 = two_ranks
    assert 'rank 0 of 2, batch 4 = 2 ranks x 2 x 1 accumulation steps' in rank0
    assert '[Epoch 0, iter 4/4]' in rank0  # 8 of the 16 videos per rank, 2 per batch
    # numbers, not substrings: every trainable parameter equal after the steps, buffers after the averaging
    steps = re.findall(r'max trainable-parameter difference to rank 0 is (\S+)', rank0)
    state = re.findall(r'max parameter and buffer difference to rank 0 is (\S+)', rank0)
    assert len(steps) == len(state) == 2 and all(float(x) == 0.0 for x in steps + state), (steps, state)
    assert (folder / 'ck' / 'slowfast_epoch1.pdparams').is_file()


@pytest.mark.slow
def test_sigterm_to_run_train_multi_stops_every_rank_at_one_step_and_resume_matches(demo_lists, two_ranks,
                                                                                    tmp_path):
    folder, _ = two_ranks
    overrides = [a for o in tiny_train_overrides(*demo_lists, epochs=2) for a in ('-o', o)]
    logs = tmp_path / 'logs'
    script = subprocess.Popen(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir', str(tmp_path / 'ck'),
                               '--log_interval', '1', '--use_visualdl', 'True', '--vd_logdir', str(tmp_path / 'vd')] +
                              overrides + ['-o', 'DATA.num_workers=1'], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True,
                              env=dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(logs)))
    wait_for_line(logs / 'workerlog.0', f'[Epoch 0, iter {random.randint(1, 3)}/4]', script)  # not the last epoch
    time.sleep(random.uniform(0.0, 0.3))
    script.send_signal(signal.SIGTERM)  # the script only, as Kubernetes signals PID 1: it passes the signal on
    output = script.communicate(timeout=300)[0]
    ranks = [(logs / f'workerlog.{r}').read_text() for r in range(2)]
    assert script.returncode == 75, output[-2000:] + ranks[0][-3000:]
    stops = [re.findall(r'stopped (at epoch \d, iteration \d of 4|after epoch \d)', log) for log in ranks]
    assert len(stops[0]) == 1 and stops[0] == stops[1], stops  # every rank after the same step
    time.sleep(1.1)  # VisualDL names its files by the second

    rank0 = run_multi(demo_lists, tmp_path / 'ck', tmp_path / 'logs_resumed', '--resume', '--log_interval', '1',
                      '--use_visualdl', 'True', '--vd_logdir', tmp_path / 'vd')
    assert 'resumed from' in rank0
    assert max_difference(folder / 'ck' / 'slowfast_epoch1.pdparams', tmp_path / 'ck' / 'slowfast_epoch1.pdparams') \
        <= 1e-5
    assert_same_curve(folder / 'vd', tmp_path / 'vd')


def test_nan_loss_stops_without_a_checkpoint(demo_lists, tmp_path):
    log = run_train(demo_lists, tmp_path / 'ck', '-o', 'TRAIN.base_lr=1e30', '-o', 'TRAIN.warmup_start_lr=1e30',
                    expect=6)
    assert 'loss is not finite on rank 0 at epoch 0, iteration' in log
    assert not list((tmp_path / 'ck').glob('*.pdparams'))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def start_two_nodes(demo_lists, save_dirs, logs, *extra, epochs=2):
    """``run_train_multi.sh`` twice on this machine, as two nodes of one CPU rank each (MASTER, NNODES=2)."""
    overrides = [a for o in tiny_train_overrides(*demo_lists, epochs=epochs) for a in ('-o', o)]
    master = f'127.0.0.1:{free_port()}'
    return [subprocess.Popen(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir', str(save_dir),
                              '--log_interval', '1'] + overrides + list(extra), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True,
                             env=dict(ENV, USE_GPU='False', NPROC='1', NNODES='2', MASTER=master,
                                      NODE_RANK=str(node), LOG_DIR=str(logs / f'node{node}')))
            for node, save_dir in enumerate(save_dirs)]


def signal_processes_mentioning(text: str, signum: int) -> None:
    """Send ``signum`` to every process whose command line contains ``text``, as Slurm signals every process of a
    job (the scripts, the launchers, the ranks and their DataLoader workers)."""
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if text.encode() in f.read():
                    os.kill(int(pid), signum)
        except (OSError, ProcessLookupError):
            continue


@pytest.mark.slow
def test_two_nodes_stop_at_one_step_resume_the_checkpoint_rank_0_picks_and_match_one_node(demo_lists, two_ranks,
                                                                                         tmp_path):
    shared = tmp_path / 'shared'
    nodes = start_two_nodes(demo_lists, [shared, shared], tmp_path / 'logs_a')
    deadline = time.time() + 300
    log0 = tmp_path / 'logs_a' / 'node0' / 'workerlog.0'
    while not (log0.exists() and '[Epoch 0, iter 1/4]' in log0.read_text()):
        assert all(n.poll() is None for n in nodes) and time.time() < deadline
        time.sleep(0.02)
    signal_processes_mentioning(str(shared), signal.SIGTERM)  # the job's time is up
    assert [node.wait(timeout=300) for node in nodes] == [75, 75]
    [mid] = list(shared.glob('slowfast_epoch0_iter*.pdopt'))  # written once, at the step both ranks agreed on
    stops = [re.findall(r'stopped at epoch 0, iteration (\d)', (tmp_path / 'logs_a' / f'node{n}' / 'workerlog.0')
                        .read_text()) for n in range(2)]
    assert stops[0] == stops[1] == [mid.stem.split('_iter')[1]], stops

    # node 1 does not see save_dir: every rank stops, naming the path
    nodes = start_two_nodes(demo_lists, [shared, tmp_path / 'unshared'], tmp_path / 'logs_b', '--resume')
    assert [node.wait(timeout=300) for node in nodes] == [5, 5]
    logs = [(tmp_path / 'logs_b' / f'node{n}' / 'workerlog.0').read_text() for n in range(2)]
    for log in logs:
        assert f'rank 1 cannot read {mid.stem}.pdparams/.pdopt, which rank 0 resumes from' in log
    assert f'in {tmp_path / "unshared"}: --save_dir must be a folder every node sees' in logs[1]

    nodes = start_two_nodes(demo_lists, [shared, shared], tmp_path / 'logs_c', '--resume')
    assert [node.wait(timeout=300) for node in nodes] == [0, 0]
    logs = [(tmp_path / 'logs_c' / f'node{n}' / 'workerlog.0').read_text() for n in range(2)]
    assert f'resumed from {shared / mid.stem}' in logs[0]  # (the other ranks log warnings only)
    state = re.findall(r'max parameter and buffer difference to rank 0 is (\S+)', logs[0])
    assert state and float(state[-1]) == 0.0  # both nodes hold the same model
    # = one node with two ranks, uninterrupted
    assert max_difference(two_ranks[0] / 'ck' / 'slowfast_epoch1.pdparams', shared / 'slowfast_epoch1.pdparams') \
        <= 1e-5


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


@pytest.mark.slow
def test_finetune_a_converted_checkpoint_with_another_class_count(demo_lists, tmp_path):
    run_train(demo_lists, tmp_path / 'base', epochs=1)
    base_state = paddle.load(str(tmp_path / 'base' / 'slowfast_epoch0.pdparams'))  # as PaddleVideo publishes it
    paddle.save({(k if k.startswith('head.') else 'backbone.' + k): v for k, v in base_state.items()},
                str(tmp_path / 'published.pdparams'))
    overrides = [a for o in tiny_train_overrides(*demo_lists) for a in ('-o', o)]
    result = subprocess.run([sys.executable, tool_path('convert_weights.py'), '--config',
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
                    'MODEL.num_classes=6', epochs=1, expect=4)
    assert f'{tmp_path / "published.pdparams"}: only 0 of the model\'s 552 tensors match it' in log
    assert 'tools/weights/convert_weights.py' in log
    assert not (tmp_path / 'unconverted' / 'slowfast_epoch0.pdparams').exists()

    # docs/TRAINING.md's fine-tuning step 4 as written (the default label map holds the 400 Kinetics names), tiny
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
                 expect=3)
    assert 'has 3 names, MODEL.num_classes is 6' in log

    # the fine-tuning controls, onto another motion set (camera pans): frozen stem..res3 and BN, smoothing, mixing
    from make_heldout_data import main as make_heldout_data
    make_heldout_data(['--kind', 'pan', '--out', str(tmp_path / 'pan'), '--train_per_class', '4', '--val_per_class',
                       '2', '--frames', '24', '--size', '72'])
    log = run_train((str(tmp_path / 'pan' / 'train.txt'), str(tmp_path / 'pan' / 'val.txt')), tmp_path / 'pan_ft',
                    '--weights', tmp_path / 'base' / 'slowfast_epoch0.pdparams', '-o', 'MODEL.frozen_stages=3', '-o',
                    'MODEL.freeze_bn=True', '-o', 'TRAIN.label_smoothing=0.1', '-o', 'TRAIN.mixup_alpha=0.2', '-o',
                    'TRAIN.cutmix_alpha=1.0', epochs=1)
    assert 'MODEL.frozen_stages 3:' in log and '(stem..res3)' in log and '[Val epoch 0]' in log
    base, tuned = weights(tmp_path / 'base' / 'slowfast_epoch0.pdparams'), weights(tmp_path / 'pan_ft' /
                                                                                 'slowfast_epoch0.pdparams')
    kept = [n for n in base if n.startswith(('s1.', 's2.', 's3.', 's1_fuse.', 's2_fuse.', 's3_fuse.'))
            or n.endswith(('_mean', '_variance'))]  # the frozen stages; every BN's statistics
    assert all(np.array_equal(base[n], tuned[n]) for n in kept)
    moved = [n for n in base if n not in kept and not np.array_equal(base[n], tuned[n])]
    assert 'head.projection.weight' in moved and any(n.startswith(('s4.', 's5.', 's4_fuse.')) for n in moved)


def test_cutmix_trains_through_iterations_whose_box_comes_out_empty(demo_lists, tmp_path):
    """CutMix at alpha 0.05 draws lam near 0 or 1: at the tiny 64-pixel crop some iterations' boxes are empty (an
    empty box once crashed training at that iteration, and again on every resume)."""
    from mixup import MixUp

    clips, labels = [paddle.zeros([4, 3, 2, 64, 64])], paddle.to_tensor([[0], [1], [2], [3]])
    mixer = MixUp(4, cutmix_alpha=0.05)
    lams = [mixer(clips, labels, np.random.default_rng([0, 0, it, 1]))[2] for it in range(4)]  # train.py's draws
    assert 1.0 in lams and min(lams) < 1.0  # empty boxes and real ones in the epoch
    run_train(demo_lists, tmp_path, '-o', 'TRAIN.cutmix_alpha=0.05', epochs=1)
    assert (tmp_path / 'slowfast_epoch0.pdparams').exists()


def audio_only_video(path):
    """An .mp4 holding one AAC stream and no video."""
    import av

    with av.open(str(path), 'w') as container:
        stream = container.add_stream('aac', rate=16000)
        stream.layout = 'mono'
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
            frame.rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.mark.slow
def test_a_list_that_cannot_be_read_ends_training_at_once_with_the_list_error(demo_lists, videos, tmp_path):
    """The most common first mistake, a wrong DATA.path_prefix: stopped before the network is built, naming how many
    files are missing, the first as resolved and the prefix. Files that exist but are no videos (empty, random bytes,
    text, audio only) fail in the DataLoader (0, 1 or 3 workers; 2 ranks): the list error and its status, promptly.
    A few missing files only warn. (Paddle's loader hung on such an error.)"""
    train_list, val_list = demo_lists
    relative = [line.split()[0] for line in open(train_list).read().splitlines()]
    (tmp_path / 'relative.txt').write_text(''.join(f'{p} 0\n' for p in relative))
    start = time.time()
    log = run_train(demo_lists, tmp_path / 'a', '-o', f'TRAIN.filelist={tmp_path / "relative.txt"}', '-o',
                    'DATA.path_prefix=/data/k400', expect=3)
    lists = {str(tmp_path / 'relative.txt'): relative[0],  # the first list checked names itself
             val_list: open(val_list).read().split()[0]}
    assert any(f'{path}: {n} of {n} listed videos do not exist (the first: /data/k400/{first}); DATA.path_prefix is '
               f'\'/data/k400\'' in log for (path, first), n in zip(lists.items(), (len(relative), 8))), log[-2000:]
    assert 'GFLOPs' not in log and time.time() - start < 60  # before the network was built

    text = tmp_path / 'text.mp4'
    text.write_text('not a video\n')
    broken = [videos['zero'], videos['garbage'], str(text), audio_only_video(tmp_path / 'audio.mp4')]
    (tmp_path / 'broken.txt').write_text(''.join(f'{p} {i % 4}\n' for i, p in enumerate(broken * 2)))
    for workers in (0, 1, 3):
        start = time.time()
        log = run_train(demo_lists, tmp_path / f'w{workers}', '-o', f'TRAIN.filelist={tmp_path / "broken.txt"}',
                        '-o', f'DATA.num_workers={workers}', expect=3)
        assert 'ERROR' in log and '11 videos in a row failed to decode' in log and time.time() - start < 60
        assert not list((tmp_path / f'w{workers}').glob('*.pdparams'))
    start = time.time()
    multi = subprocess.run(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir', str(tmp_path / 'm')] +
                           [a for o in tiny_train_overrides(*demo_lists) for a in ('-o', o)] +
                           ['-o', f'TRAIN.filelist={tmp_path / "broken.txt"}', '-o', 'DATA.num_workers=2'],
                           capture_output=True, text=True, timeout=300, cwd=ROOT,
                           env=dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(tmp_path / 'logs')))
    assert multi.returncode == 3 and time.time() - start < 120, multi.stdout[-2000:] + multi.stderr[-2000:]
    for rank in (0, 1):  # every rank ended with the list error
        assert '11 videos in a row failed to decode' in (tmp_path / 'logs' / f'workerlog.{rank}').read_text()

    lines = open(train_list).read().splitlines()
    folder = os.path.dirname(train_list)
    (tmp_path / 'few.txt').write_text(''.join(f'{os.path.join(folder, line)}\n' for line in lines) +
                                      f'{videos["missing"]} 0\n')
    log = run_train(demo_lists, tmp_path / 'few', '-o', f'TRAIN.filelist={tmp_path / "few.txt"}', epochs=1)
    assert f'1 of {len(lines) + 1} listed videos do not exist (the first: {videos["missing"]})' in log
    assert (tmp_path / 'few' / 'slowfast_epoch0.pdparams').exists()


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
    log = run_train(demo_lists, tmp_path / 'empty', '--resume_epoch', '5', epochs=1, expect=5)
    assert '--resume_epoch 5: no complete checkpoint' in log and 'complete ones: [0]' in log
    log = run_train(demo_lists, tmp_path / 'empty', '--resume', '-o', 'MODEL.dropout_rate=0.2', epochs=2, expect=5)
    assert 'slowfast_epoch0 was trained with other MODEL keys: dropout_rate 0.5 (now 0.2)' in log
    log = run_train(demo_lists, tmp_path / 'b', '-o', 'TRAIN.accumulate_steps=3', expect=2)
    assert 'TRAIN.batch_size (4) must be divisible by 3' in log


@pytest.mark.slow
def test_slow_only_trains_evaluates_predicts_exports_and_benchmarks(demo_lists, tmp_path):
    """The one-pathway model through every script, at tiny width: its datasets, inputs and export follow it."""
    slow = ['MODEL.name=SLOW', 'MODEL.alpha=1', 'MODEL.num_frames=4']
    flags = [a for o in slow for a in ('-o', o)]
    log = run_train(demo_lists, tmp_path / 'ck', *flags, epochs=1)
    assert 'Slow-R50 4x2 (width 8): ' in log and '[Val epoch 0]' in log
    weights_file = tmp_path / 'ck' / 'slowfast_epoch0.pdparams'
    assert not any('pathway1' in k or '_fuse' in k for k in weights(weights_file))

    train_list, val_list = demo_lists
    video = os.path.join(os.path.dirname(val_list), open(val_list).read().split()[0])
    tiny = [a for o in tiny_train_overrides(*demo_lists) + slow for a in ('-o', o)]

    def script(name, *args, command=()):
        result = subprocess.run([sys.executable, os.path.join(ROOT, name), *command, '--config', 'slowfast-single.yaml']
                                + tiny + list(args), capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    script('eval.py', '--use_gpu', 'False', '--weights', str(weights_file), '-o', f'TEST.filelist={val_list}',
           '--save_path', str(tmp_path / 'eval'))
    assert json.loads((tmp_path / 'eval' / 'eval_result.json').read_text())['num_videos'] == 8
    script('predict.py', '--use_gpu', 'False', '--weights', str(weights_file), '--video', video, '--save_path',
           str(tmp_path / 'dygraph'))
    log = script(tool_path('export_model.py'), '--weights', str(weights_file), '--save_dir',
                 str(tmp_path / 'exported'))
    assert 'clips [3, 4, 72, 72], any batch' in log  # one pathway
    script('predict.py', '--use_gpu', 'False', '--video', video, '--save_path', str(tmp_path / 'inference'), '-o',
           'INFER.use_inference=True', '-o', f'INFER.model_dir={tmp_path / "exported"}')
    [a], [b] = (json.loads((tmp_path / d / 'result.json').read_text()) for d in ('dygraph', 'inference'))
    assert a['top5_indices'] == b['top5_indices'] and np.allclose(a['top5_values'], b['top5_values'], atol=1e-4)
    log = script(tool_path('benchmark_infer.py'), '--size', '72', '--batches', '1', '--repeats', '1')
    assert '| Paddle Inference (oneDNN) | 1 |' in log


# ---- mixed precision -----------------------------------------------------------------------------------------------
# No GPU here, and Paddle ignores auto_cast on the CPU: what a GPU step casts is checked on paper, by Paddle's own
# rule (paddle.amp.auto_cast's _update_list, the same in 2.6 and 3.x: the default O1 lists of the dtype, plus the
# custom white list, minus the custom black list) applied to the context the step enters.

def effective_amp_lists(kwargs):
    """``(white, black)``: the ops Paddle's O1 runs in low precision / float32 under ``auto_cast(**kwargs)``."""
    module = sys.modules['paddle.amp.auto_cast']  # the module (its function of that name shadows it in paddle.amp)
    return module._update_list(kwargs['custom_white_list'], kwargs['custom_black_list'], kwargs['level'],
                               kwargs['dtype'])


class RecordedAutocast:
    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        import contextlib
        self.calls.append(kwargs)
        return contextlib.nullcontext()


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_amp_casts_every_convolution_and_the_head_and_keeps_bn_and_the_loss_in_float32(tiny_cfg, dtype,
                                                                                       monkeypatch):
    """Every op the network calls in a training forward (recorded from paddle._C_ops, by their kernel names; the
    lists hold the ops' names, which Paddle maps to kernel names) that convolves or projects is on the effective
    white list, batch norm on the black list; so is the loss's softmax cross entropy. Paddle's default lists alone
    would leave conv3d in float32."""
    import model_utils
    from model import build_model

    recorded = RecordedAutocast()
    monkeypatch.setattr(paddle.amp, 'auto_cast', recorded)
    with model_utils.autocast(True, dtype):
        pass
    [kwargs] = recorded.calls
    assert kwargs['enable'] is True and kwargs['dtype'] == dtype and kwargs['level'] == 'O1'
    kernel = paddle.base.core._get_phi_kernel_name  # e.g. softmax_with_cross_entropy -> cross_entropy_with_softmax
    white, black = ({kernel(op) for op in ops} for ops in effective_amp_lists(kwargs))
    default_white, _ = effective_amp_lists(dict(kwargs, custom_white_list=None, custom_black_list=None))
    assert 'conv3d' not in default_white  # why the custom list exists

    called = []
    for name in dir(paddle._C_ops):
        function = getattr(paddle._C_ops, name)
        if callable(function) and not name.startswith('_'):
            def spy(*args, _name=name, _function=function, **kw):
                called.append(_name)
                return _function(*args, **kw)
            monkeypatch.setattr(paddle._C_ops, name, spy)
    model = build_model(tiny_cfg)
    model.train()
    rng = np.random.default_rng(0)
    shapes = [[2, 3, 2, 64, 64], [2, 3, 8, 64, 64]]
    logits = model([paddle.to_tensor(rng.normal(size=s).astype('float32')) for s in shapes])
    paddle.nn.functional.cross_entropy(logits, paddle.to_tensor([[0], [1]]))
    ops = set(called)
    convolutions = {op for op in ops if op.startswith(('conv', 'linear', 'matmul'))}
    norms = {op for op in ops if 'batch_norm' in op}
    assert {'conv3d', 'linear'} <= convolutions and norms, sorted(ops)
    assert convolutions <= white, (convolutions - white, dtype)
    assert norms <= black and not norms & white, (norms, dtype)
    losses = {op for op in ops if 'softmax' in op or 'cross_entropy' in op}
    assert losses and losses <= black, (losses, dtype)


AMP_STEP = '''
import json, sys
sys.path.insert(0, {root!r})
import zlib  # noqa -- loaded before paddle (README, Install)
import contextlib
import paddle
import distributed
real_setup = distributed.setup
def gpu_setup(use_gpu, use_data_parallel):  # the CPU, reported as a GPU: the step takes its AMP path
    real_setup(False, use_data_parallel)
    return 'gpu', 0, 1
distributed.setup = gpu_setup
calls = []
def recorded(**kwargs):
    calls.append({{k: sorted(v) if isinstance(v, set) else v for k, v in kwargs.items()}})
    return contextlib.nullcontext()
paddle.amp.auto_cast = recorded
sys.argv = {argv!r}
import train
status = train.main()
print('AMP CALLS ' + json.dumps(calls))
sys.exit(status)
'''


@pytest.mark.slow
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_the_training_step_enters_the_amp_context_on_a_gpu(demo_lists, tmp_path, dtype):
    """train.py as on a GPU (the device reported as one) with TRAIN.use_amp: every step enters auto_cast with the
    lists above in TRAIN.amp_dtype, and nothing else enters it."""
    import model_utils

    argv = train_command(demo_lists, tmp_path / 'ck', '-o', 'TRAIN.use_amp=True', '-o', f'TRAIN.amp_dtype={dtype}',
                         '--valid_interval', '5', epochs=1)[1:]
    script = tmp_path / 'amp_step.py'
    script.write_text(AMP_STEP.format(root=ROOT, argv=argv))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, timeout=600,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    calls = json.loads(result.stdout.split('AMP CALLS ')[-1].splitlines()[0])
    steps = len(re.findall(r'\[Epoch 0, iter \d+/(\d+)\]', result.stdout + result.stderr))
    iterations = int(re.search(r'\[Epoch 0, iter \d+/(\d+)\]', result.stdout + result.stderr).group(1))
    assert steps and len(calls) == iterations
    expected = {'enable': True, 'dtype': dtype, 'level': 'O1', 'custom_white_list': sorted(model_utils.AMP_WHITE_LIST),
                'custom_black_list': sorted(model_utils.AMP_BLACK_LIST)}
    assert all(call == expected for call in calls), calls[0]


# ---- the edges of a run: its folder, a full disk ------------------------------------------------------------------

@pytest.mark.slow
def test_two_runs_started_together_in_one_folder_the_second_refuses_at_start(demo_lists, tmp_path):
    folder = tmp_path / 'ck'
    runs = [subprocess.Popen(train_command(demo_lists, folder, '--seed', str(seed), epochs=4), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT) for seed in (1, 2)]
    logs = [run.communicate(timeout=600)[0] for run in runs]
    statuses = sorted(run.returncode for run in runs)
    assert statuses == [0, 8], [log[-2000:] for log in logs]
    winner, loser = (0, 1) if runs[0].returncode == 0 else (1, 0)
    line = one_error_line(logs[loser], f'--save_dir {folder} is in use by another training run',
                          f'process {runs[winner].pid}, started ')
    assert 'Give this run another --save_dir, or stop that one first' in line
    assert 'training videos' not in logs[loser]  # refused before any work
    log = (folder / 'train.log').read_text()
    assert log.count('Train Arguments') == 1 and log.count('[TRAIN] training finished') == 1
    seed = 1 + winner
    for epoch in range(4):  # every checkpoint the winner's, its two files together
        assert paddle.load(str(folder / f'slowfast_epoch{epoch}.pdopt'))['meta']['seed'] == seed
    run_train(demo_lists, folder, '--resume_epoch', '0', epochs=4)


@pytest.mark.slow
def test_a_run_that_does_not_resume_refuses_another_run_s_checkpoints_and_starts_over_when_told(demo_lists, tmp_path):
    folder = tmp_path / 'ck'
    run_train(demo_lists, folder, '--seed', '1')
    log = run_train(demo_lists, folder, '--seed', '2', expect=8)
    one_error_line(log, f'--save_dir {folder} holds the checkpoints of an earlier run (4 files, the newest '
                        f'{folder}/slowfast_epoch1)', 'Continue that run with --resume',
                   'give this one another --save_dir', 'move the old checkpoints aside with --start_over')
    assert 'training videos' not in log
    # each way on that the message names, as written: --resume, another --save_dir, --start_over
    assert 'resumed from' in run_train(demo_lists, folder, '--resume', epochs=3)
    run_train(demo_lists, tmp_path / 'other', '--seed', '2')
    log = run_train(demo_lists, folder, '--seed', '2', '--start_over')
    [aside] = folder.glob('previous_run_*')
    assert f'moved the earlier run\'s 6 checkpoint files and its train.log to {aside}' in log
    assert paddle.load(str(aside / 'slowfast_epoch2.pdopt'))['meta']['seed'] == 1
    assert paddle.load(str(folder / 'slowfast_epoch1.pdopt'))['meta']['seed'] == 2
    assert not (folder / 'slowfast_epoch2.pdopt').exists() and (folder / 'train.log').read_text().count(
        'Train Arguments') == 1
    log = run_train(demo_lists, folder, '--resume', '--start_over', expect=2)
    assert '--start_over moves the checkpoints in --save_dir aside, --resume continues from them' in log
    # --resume --allow_pickle on a cut .pdopt: the checkpoint error, as without the flag
    cut = folder / 'slowfast_epoch1.pdopt'
    cut.write_bytes(cut.read_bytes()[:1000])
    for flags in ((), ('--allow_pickle',)):
        log = run_train(demo_lists, folder, '--resume', *flags, expect=5)
        one_error_line(log, f'{cut}: not a file written by paddle.save, or cut short')


def test_an_output_folder_that_cannot_be_written_stops_training_before_any_work(demo_lists, tmp_path):
    (tmp_path / 'a_file').write_text('x')
    log = run_train(demo_lists, tmp_path / 'a_file', expect=7)
    one_error_line(log, f'--save_dir {tmp_path / "a_file"}: {tmp_path / "a_file"} stands where the folder must go')
    readonly = tmp_path / 'readonly'
    readonly.mkdir()
    for flags, named in (((), f'--save_dir {readonly / "ck"}'),
                         (('--use_visualdl', '--vd_logdir', str(readonly / 'vd')), f'--vd_logdir {readonly / "vd"}')):
        save_dir = readonly / 'ck' if not flags else tmp_path / 'ck'
        result = subprocess.run(in_mount_namespace(train_command(demo_lists, save_dir, *flags), readonly=[readonly]),
                                capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
        assert result.returncode == 7, result.stdout[-2000:] + result.stderr[-2000:]
        one_error_line(result.stdout, named, 'cannot write there (Read-only file system)')
        assert 'training videos' not in result.stdout
    # two ranks: both stop at start with rank 0's message
    overrides = [a for o in tiny_train_overrides(*demo_lists) for a in ('-o', o)]
    logs = tmp_path / 'logs'
    result = subprocess.run(in_mount_namespace(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir',
                                                readonly / 'ck'] + overrides, readonly=[readonly]),
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(logs)))
    assert result.returncode == 7, result.stdout[-2000:]
    one_error_line((logs / 'workerlog.0').read_text(), f'--save_dir {readonly / "ck"}: cannot write there')
    one_error_line((logs / 'workerlog.1').read_text(), f'rank 0 stopped: --save_dir {readonly / "ck"}: cannot write')


@pytest.mark.slow
def test_a_full_disk_during_a_save_stops_every_rank_naming_the_file_and_resume_continues_exactly(demo_lists, straight,
                                                                                               tmp_path):
    disk, kept = tmp_path / 'disk', tmp_path / 'kept'
    # 6 MB: the checkpoint of epoch 0 (4.6 MB) fits, the next does not
    command = in_mount_namespace(train_command(demo_lists, disk / 'ck', epochs=3), small={disk: '6m'},
                                 then=f'ls -a {disk / "ck"} > {tmp_path / "listing"}; cp -a {disk / "ck"} {kept}')
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert result.returncode == 7, result.stdout[-3000:] + result.stderr[-2000:]
    one_error_line(result.stdout, f'cannot write {disk / "ck" / "slowfast_epoch1.pdparams"}: No space left on device',
                   f'free of 6.0 MB in {disk / "ck"}', 'slowfast_epoch1 was not written; the newest complete one, '
                   'slowfast_epoch0, is intact (a checkpoint takes 4.6 MB): free some space, then continue with --resume')
    listing = (tmp_path / 'listing').read_text().split()
    assert sorted(listing) == ['.', '..', 'slowfast_epoch0.pdopt', 'slowfast_epoch0.pdparams', 'slowfast_run.lock',
                               'train.log']  # no temporary, no half checkpoint
    log = run_train(demo_lists, kept, '--resume', epochs=3)
    assert 'resumed from' in log and 'epoch 0 done' in log
    assert max_difference(kept / 'slowfast_epoch2.pdparams', straight / 'ck' / 'slowfast_epoch2.pdparams') <= 1e-5

    logs = tmp_path / 'logs'
    overrides = [a for o in tiny_train_overrides(*demo_lists) for a in ('-o', o)]
    started = time.time()
    result = subprocess.run(in_mount_namespace(['bash', os.path.join(ROOT, 'run_train_multi.sh'), '--save_dir',
                                                disk / 'ck'] + overrides, small={disk: '6m'}),
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(logs)))
    ended = time.time()
    assert result.returncode == 7, result.stdout[-2000:]
    rank0, rank1 = ((logs / f'workerlog.{r}').read_text() for r in (0, 1))
    line = one_error_line(rank0, f'cannot write {disk / "ck" / "slowfast_epoch1.pdparams"}: No space left on device')
    one_error_line(rank1, 'rank 0 stopped: ' + line.split('] ', 1)[1])  # rank 1 stops by itself, with the message
    when = time.mktime(time.strptime(line[1:20], '%Y-%m-%d %H:%M:%S'))
    assert started - 1 <= when and ended - when < 20, (started, when, ended)  # every rank stopped within seconds


@pytest.mark.slow
@pytest.mark.parametrize('ranks', [1, 2])
def test_checkpoint_retention_keeps_the_newest_and_every_nth_and_resumes(demo_lists, tmp_path, ranks):
    """TRAIN.keep_checkpoints 2, keep_every 2 over 4 epochs: the newest two (2, 3) and every second epoch's (1, 3)
    stay; the plan is logged with its disk; a resumed run goes on removing; on 1 rank and on 2."""
    keep = ['-o', 'TRAIN.keep_checkpoints=2', '-o', 'TRAIN.keep_every=2']
    folder = tmp_path / 'ck'
    if ranks == 1:
        log = run_train(demo_lists, folder, *keep, epochs=4)
    else:
        log = run_multi(demo_lists, folder, tmp_path / 'logs', *keep, epochs=4)
    line = next(line for line in log.splitlines() if 'checkpoints: 4 end-of-epoch ones' in line)
    assert 'keeping the newest 2 and one every 2 epochs: at most 3 at once' in line and f'in {folder}' in line
    assert 'removed slowfast_epoch0 (TRAIN.keep_checkpoints 2, keep_every 2)' in log
    assert sorted(p.name for p in folder.glob('slowfast_epoch*')) == [
        f'slowfast_epoch{e}.{x}' for e in (1, 2, 3) for x in ('pdopt', 'pdparams')]
    # epochs 4 and 5: after 4, epoch 2 goes (not among the newest two, not an every-second); after 5, nothing does
    more = run_train(demo_lists, folder, *keep, '--resume', epochs=6)
    assert 'resumed from' in more and 'removed slowfast_epoch2' in more
    assert sorted(p.name for p in folder.glob('slowfast_epoch*.pdopt')) == [
        f'slowfast_epoch{e}.pdopt' for e in (1, 3, 4, 5)]


@pytest.mark.slow
def test_one_rank_with_bn_groups_trains_as_two_ranks_of_one_group_each(demo_lists, tmp_path):
    """TRAIN.bn_group: one rank with batches of 8 clips in 2 BN groups of 4 gives the weights and BN running
    statistics of two ranks with 4 clips each (clip a * 2 + b of the one rank's batch is rank b's: the sampler deals
    them so), after 2 epochs of 2 steps; no dropout and no precise BN, which draw per rank."""
    same = ['-o', 'TRAIN.batch_size=8', '-o', 'TRAIN.bn_group=4', '-o', 'MODEL.dropout_rate=0', '-o',
            'VALID.use_preciseBN=False']
    one = run_train(demo_lists, tmp_path / 'one', *same, epochs=2)
    two = run_multi(demo_lists, tmp_path / 'two', tmp_path / 'logs', *same, epochs=2)
    assert 'BN statistics over 4 clips (TRAIN.bn_group 4): each rank\'s micro-batch of 8 clips in 2 groups; 8 clips ' \
           'per rank and 8 per optimizer step (1 ranks x 8 x 1 accumulation steps)' in one
    assert 'BN statistics over 4 clips (TRAIN.bn_group 4): each rank\'s micro-batch of 4 clips in 1 groups; 4 clips ' \
           'per rank and 8 per optimizer step (2 ranks x 4 x 1 accumulation steps)' in two
    a, b = weights(tmp_path / 'one' / 'slowfast_epoch1.pdparams'), weights(tmp_path / 'two' / 'slowfast_epoch1.pdparams')
    assert set(a) == set(b)
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-5, worst
    assert any('_mean' in k for k in a) and any('_variance' in k for k in a)  # the running statistics compared too
    # one rank, two accumulation steps of 4 clips (one group each; BN statistics move once a step): the same again,
    # what one rank does for 8 GPUs' 64 clips in 8 accumulation steps
    acc = run_train(demo_lists, tmp_path / 'acc', *same, '-o', 'TRAIN.accumulate_steps=2', epochs=2)
    assert 'micro-batch of 4 clips in 1 groups; 8 clips per rank and 8 per optimizer step (1 ranks x 4 x 2 ' \
           'accumulation steps)' in acc
    d = weights(tmp_path / 'acc' / 'slowfast_epoch1.pdparams')
    worst = max(float(np.abs(d[k] - b[k]).max()) for k in d)
    assert worst <= 1e-5, worst
    # without the groups, one rank normalises over all 8 clips: not the two ranks' training
    plain = run_train(demo_lists, tmp_path / 'plain', *same[:2], '-o', 'TRAIN.bn_group=0', *same[4:], epochs=2)
    c = weights(tmp_path / 'plain' / 'slowfast_epoch1.pdparams')
    assert max(float(np.abs(c[k] - b[k]).max()) for k in c) > 1e-3
    assert 'BN statistics over 8 clips (TRAIN.bn_group 0)' in plain


@pytest.mark.slow
def test_a_micro_batch_below_the_bn_group_and_an_unscaled_lr_are_reported(demo_lists, tmp_path):
    log = run_train(demo_lists, tmp_path / 'ck', '-o', 'TRAIN.batch_size=8', '-o', 'TRAIN.accumulate_steps=2', '-o',
                    'TRAIN.base_lr=0.1', epochs=1)
    assert 'each rank\'s micro-batch of 4 clips is smaller than TRAIN.bn_group 8: BN normalises over 4 clips, not ' \
           'the recipe\'s 8 (1 ranks x 2 accumulation steps split TRAIN.batch_size 8)' in log
    assert 'TRAIN.batch_size 8 with the recipe\'s TRAIN.base_lr 0.1, which is for 64 clips: the linear scaling rule ' \
           'gives 0.0125 (-o TRAIN.base_lr=0.0125)' in log
