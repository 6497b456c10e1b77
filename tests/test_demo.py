"""run_demo.sh end to end, shortened (tiny data, 2 epochs, 2x3 views): data, training, eval, predict, rerun, Ctrl-C."""
import json
import os
import re
import shlex
import signal
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from helpers import ROOT, demo_threads, tool_path

SHORT = ['-o', 'TRAIN.epoch=2', '-o', 'TRAIN.save_interval=1', '-o', 'VALID.num_batches_preciseBN=2', '-o',
         'TEST.num_ensemble_views=2', '-o', 'INFER.num_ensemble_views=2']


def demo_env(tmp_path):
    return dict(os.environ, DEMO_DATA=str(tmp_path / 'data'), DEMO_OUT=str(tmp_path / 'out'), USE_GPU='False',
                OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore',
                DEMO_DATA_ARGS='--train_per_class 4 --val_per_class 2 --frames 24 --height 72 --width 96')


def run_demo(tmp_path, *args, env=None):
    result = subprocess.run(['bash', os.path.join(ROOT, 'run_demo.sh')] + SHORT + list(args), capture_output=True,
                            text=True, env=env or demo_env(tmp_path), timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def start_demo_until_first_checkpoint(tmp_path, *args):
    """``run_demo.sh`` (SHORT settings, ``args`` after them) started in a session of its own, once epoch 0's
    checkpoint is complete and while it still runs."""
    command = ['bash', os.path.join(ROOT, 'run_demo.sh')] + SHORT + list(args)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=demo_env(tmp_path), start_new_session=True)
    # the .pdopt is renamed last: once it exists, epoch 0's checkpoint is complete (the .pdparams alone is not)
    first = tmp_path / 'out' / 'checkpoints' / 'slowfast_epoch0.pdopt'
    deadline = time.time() + 600
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists() and process.poll() is None, 'the demo ended or stalled before its first checkpoint'
    return process


@pytest.mark.slow
def test_demo_trains_evaluates_predicts_and_reruns(tmp_path):
    out = tmp_path / 'out'
    log = run_demo(tmp_path)
    assert 'multi-view top-1 on' in log and f'{out}/eval/eval_result.json' in log
    assert f'visualdl --logdir {out}/vdl --host 127.0.0.1' in log
    result = json.loads((out / 'eval' / 'eval_result.json').read_text())
    assert result['num_videos'] == 8 and result['num_failed'] == 0 and result['views_per_video'] == 6
    predictions = json.loads((out / 'predict' / 'result.json').read_text())
    assert len(predictions) == 8 and all(p['top1_label'] in ('right', 'left', 'down', 'up') for p in predictions)
    assert (out / 'checkpoints' / 'slowfast_epoch1.pdparams').is_file() and os.listdir(out / 'vdl')
    assert '[Epoch 1 end]' in (out / 'checkpoints' / 'train.log').read_text()

    log = run_demo(tmp_path)  # again: the data is reused and the finished training is not repeated
    assert 'reusing the demo dataset' in log and 'resumed from' in log and '[Epoch 0, iter' not in log


@pytest.mark.slow
def test_demo_interrupted_then_rerun_finishes(tmp_path):
    process = start_demo_until_first_checkpoint(tmp_path)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole foreground group
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0 and 'run bash run_demo.sh again to continue' in output, output[-3000:]
    log = run_demo(tmp_path)
    assert 'resumed from' in log and 'multi-view top-1 on' in log
    # the board the demo's last lines point to, opened as printed, shows the whole curve, both runs' steps
    steps = board_steps(log, 'train/loss')
    per_epoch = int(re.search(r'\((\d+) steps per epoch\)', log).group(1))
    logged = [e * per_epoch + i + 1 for e in range(2) for i in range(per_epoch)  # run_demo.sh: --log_interval 10
              if (i + 1) % 10 == 0 or i + 1 == per_epoch]
    assert steps == logged, (steps, logged)


def board_steps(log, tag, timeout=120):
    """The steps of ``tag`` VisualDL's board shows, the board started with the command the demo printed."""
    [line] = [line for line in log.splitlines() if 'visualdl --logdir' in line]
    command = shlex.split(line.split('->', 1)[1])
    port, logdir = command[command.index('--port') + 1], command[command.index('--logdir') + 1]
    board = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                             start_new_session=True)
    url = f'http://127.0.0.1:{port}/app/api/scalar/list?run={urllib.parse.quote(logdir)}&tag={tag}'
    deadline = time.time() + timeout
    try:
        while True:
            try:
                data = json.loads(urllib.request.urlopen(url, timeout=5).read())['data']
                if data:
                    return [step for _, step, _ in data]
            except OSError:
                pass
            assert board.poll() is None and time.time() < deadline, 'the board did not show the curve'
            time.sleep(1)
    finally:
        os.killpg(board.pid, signal.SIGTERM)
        board.wait()


@pytest.mark.slow
def test_demo_says_how_to_continue_when_training_is_stopped_by_a_signal(tmp_path):
    """A signal that only train.py receives (a scheduler's SIGTERM; or a Ctrl-C that train.py handles before bash):
    train.py saves where it stopped and exits 75, bash runs no trap, and run_demo.sh still says how to continue
    (found by CI: the message was missing when the Ctrl-C landed inside training)."""
    process = start_demo_until_first_checkpoint(tmp_path, '-o', 'TRAIN.epoch=30')  # still training afterwards
    children = subprocess.run(['ps', '-o', 'pid=,args=', '--ppid', str(process.pid)], capture_output=True,
                              text=True).stdout.splitlines()
    trainer = [int(line.split()[0]) for line in children if 'train.py' in line]
    assert len(trainer) == 1, (children, process.poll())
    os.kill(trainer[0], signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 75, output[-3000:]
    assert 'SIGTERM: stopped at epoch' in output and 'run bash run_demo.sh again to continue' in output, output[-3000:]
    assert '3/4' not in output  # nothing evaluated after a stopped training


@pytest.mark.slow
def test_demo_on_your_own_dataset_leaves_it_untouched(tmp_path):
    """--data DIR: a foreign dataset (3 classes, no classes.txt, other names) is trained on, never rewritten."""
    made = tmp_path / 'made'
    subprocess.run([sys.executable, tool_path('make_demo_data.py'), '--out', str(made),
                    '--train_per_class', '3', '--val_per_class', '2', '--frames', '24', '--height', '72', '--width',
                    '96'], check=True, capture_output=True)
    mine = tmp_path / 'mine'
    (mine / 'clips').mkdir(parents=True)
    for split in ('train', 'val'):  # keep three of the four classes, under other names
        lines = []
        for line in (made / f'{split}.txt').read_text().splitlines():
            rel, label = line.split()
            if label != '3':
                shutil.copy(made / rel, mine / 'clips' / os.path.basename(rel))
                lines.append(f'clips/{os.path.basename(rel)} {label}\n')
        (mine / f'{split}.txt').write_text(''.join(lines))
    before = {p: p.stat().st_mtime_ns for p in mine.rglob('*')}
    env = demo_env(tmp_path)
    del env['OMP_NUM_THREADS']  # unset: one compute thread per core left by the one decoding worker
    log = run_demo(tmp_path, '--data', str(mine), env=env)
    threads = demo_threads()
    assert f'your dataset in {mine}' in log and '(chance 0.333)' in log
    assert f'training with {threads} compute thread(s)' in log
    assert {p: p.stat().st_mtime_ns for p in mine.rglob('*')} == before
    result = json.loads((tmp_path / 'out' / 'eval' / 'eval_result.json').read_text())
    assert result['num_videos'] == 6 and result['num_failed'] == 0
