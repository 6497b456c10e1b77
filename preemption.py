"""Stopping a training run on request and continuing it where it stopped: the signals, and the batches left.

SIGTERM (what Slurm, Kubernetes and paddle.distributed.launch send), SIGINT (Ctrl-C) and SIGUSR1 (Slurm's
``--signal`` before the time limit) only raise a flag. train.py finishes the optimizer step it is in, all ranks agree
on the step (the flag rides on the all-reduce every step makes anyway), rank 0 writes a mid-epoch checkpoint and every
rank exits with ``errors.STOPPED``. A second Ctrl-C stops at once. The workers of a ``StoppableDataLoader`` ignore
the signals (Slurm and Ctrl-C signal every process, and a dead worker would fail the step being finished) until their
process exits: then multiprocessing's own SIGTERM ends them.

On ``--resume``, ``ResumableBatchSampler`` starts the interrupted epoch at the first batch not trained on: the same
order, and the batches before it are never read (their indices never reach the dataset).
"""
import atexit
import functools
import itertools
import multiprocessing
import signal
import zlib  # noqa: F401 -- loaded before paddle (Paddle 2.6.2 bug; README, Install)
from typing import Callable, Iterator, List, Optional

import paddle

from errors import WorkerErrors, checked

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopRequest:
    """Records the first stop signal; ``install()`` makes this process's handlers set it. ``worker_init_fn`` is the
    DataLoader workers' part."""

    def __init__(self) -> None:
        self.signal_name: Optional[str] = None
        self.exiting = multiprocessing.Event()  # set when this process exits: its workers may then end

    def install(self) -> 'StopRequest':
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        # atexit runs the newest first: before multiprocessing's exit handler, which SIGTERMs the daemon workers
        atexit.register(self.exiting.set)
        return self

    @property
    def worker_init_fn(self) -> Callable[[int], None]:
        return functools.partial(_worker_signals, self.exiting)

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.signal_name == 'SIGINT':
            raise KeyboardInterrupt  # Ctrl-C twice: the user will not wait for the step
        self.signal_name = self.signal_name or signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def _worker_signals(exiting, worker_id: int) -> None:
    """In a DataLoader worker: leave stopping to the main process, and end on SIGTERM once it exits."""
    def on_sigterm(signum, frame):
        if exiting.is_set():
            raise KeyboardInterrupt  # Paddle's worker loop ends quietly on it, freeing its shared memory

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a signal that came since the fork is handled now


class StoppableDataLoader(paddle.io.DataLoader):
    """A DataLoader whose workers leave stopping to the main process. They are forked with the stop signals blocked
    and unblock them in ``stop.worker_init_fn``: Paddle's worker start-up first installs a handler that dies on
    SIGTERM, so a signal in between would kill a worker under the step being finished."""

    def __init__(self, *args, stop: StopRequest, errors: Optional[WorkerErrors] = None, **kwargs) -> None:
        super().__init__(*args, worker_init_fn=stop.worker_init_fn, **kwargs)
        self.errors = errors

    def __iter__(self):
        """The batches; the error the dataset recorded in ``errors`` (``errors.checked``) is raised instead of the
        batch it spoiled."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            batches = super().__iter__()  # forks the workers
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return checked(batches, self.errors)


class ResumableBatchSampler(paddle.io.DistributedBatchSampler):
    """``DistributedBatchSampler`` whose next pass may start at batch ``skip`` of the epoch's order (one pass only:
    the pass after it, e.g. precise BN's, starts at 0). ``len()`` stays the epoch's full number of batches."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self) -> Iterator[List[int]]:
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)
