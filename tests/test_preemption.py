"""preemption.py: stop signals only raise a flag; the resumed epoch's sampler yields exactly the batches left."""
import os
import signal

import numpy as np
import paddle
import pytest

from preemption import ResumableBatchSampler, StopRequest, StoppableDataLoader


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_only_raises_the_flag(signum, restore_handlers):
    stop = StopRequest().install()
    assert not stop.requested
    os.kill(os.getpid(), signum)
    assert stop.requested and stop.signal_name == signal.Signals(signum).name
    os.kill(os.getpid(), signal.SIGTERM)  # launch repeats SIGTERM: still one request, still running
    assert stop.signal_name == signal.Signals(signum).name


def test_ctrl_c_twice_stops_at_once(restore_handlers):
    StopRequest().install()
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)


def test_workers_ignore_the_stop_signals_until_their_process_exits(restore_handlers):
    stop = StopRequest()
    stop.worker_init_fn(0)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        os.kill(os.getpid(), signum)  # would end this process otherwise
    stop.exiting.set()  # what install() registers to happen at exit
    with pytest.raises(KeyboardInterrupt):  # how Paddle's worker loop ends quietly
        os.kill(os.getpid(), signal.SIGTERM)


class Indices(paddle.io.Dataset):
    def __len__(self):
        return 22

    def __getitem__(self, index):
        return np.array([index]), np.array([0])


@pytest.mark.parametrize('rank', [0, 1])
def test_the_resumed_pass_yields_the_batches_left_then_whole_passes(rank):
    def passes(skip):
        sampler = ResumableBatchSampler(Indices(), batch_size=3, num_replicas=2, rank=rank, shuffle=True,
                                        drop_last=True)
        sampler.set_epoch(5)
        sampler.skip = skip
        return [list(sampler) for _ in range(2)], len(sampler)

    (full, next_full), count = passes(0)
    assert count == len(full) == 3 and len(set(map(tuple, full))) == 3
    (resumed, after), resumed_count = passes(2)
    assert resumed == full[2:] and resumed_count == count  # the same order; len stays the epoch's
    assert after == next_full  # precise BN's pass after it starts at 0, as in the uninterrupted run
    loader = StoppableDataLoader(Indices(), batch_sampler=ResumableBatchSampler(
        Indices(), batch_size=3, num_replicas=2, rank=rank, shuffle=True, drop_last=True), num_workers=2,
        stop=StopRequest())
    loader.batch_sampler.set_epoch(5)
    loader.batch_sampler.skip = 1
    assert [b[0].numpy().ravel().tolist() for b in loader] == full[1:]


def test_workers_survive_a_sigterm_that_comes_while_they_start(restore_handlers):
    # Paddle's worker start-up installs a handler that dies on SIGTERM before worker_init_fn runs; Slurm's SIGTERM
    # to every process may come in between, right after a pass forked its workers. Here the gap lasts 0.3 s.
    import multiprocessing
    import time

    stop = StopRequest().install()
    loader = StoppableDataLoader(Indices(), batch_size=2, num_workers=2, stop=stop)
    loader.worker_init_fn = lambda worker_id, init=loader.worker_init_fn: (time.sleep(0.3), init(worker_id))
    batches = iter(loader)
    time.sleep(0.1)
    for worker in multiprocessing.active_children():
        os.kill(worker.pid, signal.SIGTERM)
    assert sorted(int(i) for batch in batches for i in batch[0].numpy().ravel()) == list(range(22))
    assert not stop.requested  # the signals went to the workers only


@pytest.mark.slow
def test_run_stoppable_reports_its_processes_status_and_ends_a_launcher_that_outlives_them(tmp_path):
    """launch.sh: the status is the training processes' common one, not their launcher's; a launcher still
    running after all of them ended (paddle.distributed.launch after a second signal) is killed after the grace."""
    import subprocess
    import time

    from helpers import ROOT

    script = tmp_path / 'run.sh'
    script.write_text(f'source {ROOT}/launch.sh\nrun_stoppable 2 bash -c "$1"\n')
    report = 'echo 75 >> "$SLOWFAST_STATUS_FILE"; echo 75 >> "$SLOWFAST_STATUS_FILE"; '
    env = dict(os.environ, SLOWFAST_LAUNCH_GRACE='1')
    start = time.time()
    assert subprocess.run(['bash', str(script), report + 'exit 15'], env=env, timeout=60).returncode == 75
    assert subprocess.run(['bash', str(script), report + 'trap "" TERM; sleep 60'], env=env,
                          timeout=60).returncode == 75
    assert time.time() - start < 20  # the stuck one killed about 2 s after both reported
    assert subprocess.run(['bash', str(script), 'echo 75 >> "$SLOWFAST_STATUS_FILE"; echo 0 >> '
                           '"$SLOWFAST_STATUS_FILE"; exit 3'], env=env, timeout=60).returncode == 3  # no agreement
    # one rank's input error (a list error: 3), the other rank's crash on the lost peer (1): the input error's
    assert subprocess.run(['bash', str(script), 'echo 3 >> "$SLOWFAST_STATUS_FILE"; echo 1 >> '
                           '"$SLOWFAST_STATUS_FILE"; exit 1'], env=env, timeout=60).returncode == 3
    assert subprocess.run(['bash', str(script), 'echo 1 >> "$SLOWFAST_STATUS_FILE"; exit 1'], env=env,
                          timeout=60).returncode == 1
