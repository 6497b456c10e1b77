"""The errors a user can fix, each with its exit status, and the one place that turns them into a message.

Raised where the fault is found (the message names the file, key, line or flag); each script's ``__main__`` runs
``main`` through ``exit_on_user_error``, which logs the message without a traceback and exits with the status.

    status  meaning
    0       done
    1       eval.py / predict.py: some videos did not decode (the others' results are written); or a crash (traceback)
    2       usage or config: a flag, a config file, key, value or override (ConfigError; argparse's own errors)
    3       a video list or label map (ListError)
    4       weights: missing, not a state dict, or not fitting the model; an exported model that does not match
    5       a checkpoint that cannot be resumed: missing, unreadable on some rank, or not belonging together
    6       training diverged: the loss is not finite (every rank stops, no checkpoint of it is written)
    7       an output cannot be written: its folder cannot be made or written (read-only, no permission), a file
            stands where a folder must go or a folder where a file must, or the disk (or quota, or ulimit -f) is
            full; found before the work where it can be, and a run's results are then written elsewhere (named)
    8       train.py: --save_dir is another run's: in use by a running one, or holding checkpoints that a run
            without --resume would mix with its own
    9       tools/data/get_kinetics.py: a download did not give a complete, verified file, or an archive does not
            extract after a second download (named by address; download.DownloadError; zoo.py's are status 4)
    -       recognizer.py (Python): InputError, a video or frames that cannot be classified (named)
    75      train.py stopped on SIGTERM / SIGINT / SIGUSR1 after writing a checkpoint: run it again with --resume
            (75 is EX_TEMPFAIL of sysexits.h, "try again later")
    130     interrupted (a second Ctrl-C during training, which does not wait for the step)
"""
import logging
import multiprocessing
import os
import sys
import traceback
from typing import Callable, Iterable, Iterator, Optional, TypeVar

T = TypeVar('T')

STOPPED = 75


class UserError(Exception):
    """An input the user must fix; ``status`` is the exit status."""
    status = 1


class ConfigError(UserError, ValueError):
    """A config file, key, value, override or flag that cannot be used."""
    status = 2


class ListError(UserError, ValueError):
    """A video list or label map that cannot be used; the message names the file and line."""
    status = 3


class WeightsError(UserError, ValueError):
    """Weights (or an exported model) that are missing or do not fit the model; the message names the file."""
    status = 4


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be resumed from; the message names the files and the mismatch."""
    status = 5


class DivergedError(UserError, FloatingPointError):
    """The training loss is not finite."""
    status = 6


class OutputError(UserError):
    """An output location that cannot be written; the message names the path (and, for a full disk, what is free)."""
    status = 7


class RunFolderError(UserError):
    """A checkpoint folder that belongs to another training run; the message names the folder and the run."""
    status = 8


class InputError(UserError, ValueError):
    """A video given to recognizer.py (the Python API) that cannot be classified: a missing file, one that does not
    decode, frames of the wrong shape, type or channel order; the message names it. No script exits with it (their
    videos that do not decode are reported per video, status 1)."""
    status = 1


_USER_ERRORS = {cls.__name__: cls for cls in (UserError, ConfigError, ListError, WeightsError, CheckpointError,
                                              DivergedError, OutputError, RunFolderError)}


def error_of_status(status: int, message: str) -> Exception:
    """An error of the kind ``status`` names (a UserError's status; otherwise a RuntimeError, a crash)."""
    for cls in _USER_ERRORS.values():
        if cls.status == status and cls is not UserError:
            return cls(message)
    return RuntimeError(message)


class WorkerErrors:
    """Carries the first error raised while a DataLoader produces a dataset's items (in a worker process, or in the
    thread Paddle reads with when there are none) to the process that iterates the loader (``checked``).

    Paddle's loader does not: with no worker its reading thread dies and the iteration waits for ever; with workers
    the error arrives as "Blocking queue is killed" (SystemError) without its class. So a dataset records the error
    here and hands the loader a placeholder item instead of raising. Lives in shared memory made before the workers
    are forked."""

    def __init__(self) -> None:
        self._lock = multiprocessing.Lock()
        self._kind = multiprocessing.RawArray('c', 64)
        self._text = multiprocessing.RawArray('c', 1 << 14)

    def record(self, error: Exception) -> None:
        """Keep ``error`` (the first one only): a UserError as its class and message, any other as its traceback."""
        user = isinstance(error, UserError)
        kind = type(error).__name__ if user and type(error).__name__ in _USER_ERRORS else ('UserError' if user
                                                                                          else 'crash')
        text = str(error) if user else ''.join(traceback.format_exception(error))
        with self._lock:
            if not self._kind.value:
                self._text.value = text.encode('utf-8', 'replace')[:len(self._text) - 1]
                self._kind.value = kind.encode()

    def raise_if_any(self) -> None:
        kind = self._kind.value.decode()
        if not kind:
            return
        text = self._text.value.decode('utf-8', 'replace')
        if kind == 'crash':
            raise RuntimeError(f'reading the data failed in a DataLoader worker:\n{text}')
        raise _USER_ERRORS.get(kind, UserError)(text)


def checked(items: Iterable[T], errors: Optional[WorkerErrors]) -> Iterator[T]:
    """``items`` (a DataLoader's batches), raising the error ``errors`` recorded as soon as the batch it spoiled
    arrives, instead of that batch. However the loop ends (done, an error, left early), a Paddle loader's iterator is
    shut down here: its reading thread keeps it alive, and Paddle's own shutdown at interpreter exit waits for
    ever."""
    iterator = iter(items)
    try:
        for item in iterator:
            if errors is not None:
                errors.raise_if_any()
            yield item
        if errors is not None:
            errors.raise_if_any()
    finally:
        shutdown = getattr(iterator, '_try_shutdown_all', None)  # Paddle 2.6 and 3.x loader iterators
        if shutdown is not None:
            shutdown()


def exit_on_user_error(main: Callable[[], Optional[int]], logger: logging.Logger) -> None:
    """Run ``main`` and exit with its status (None: 0), or log a UserError's message and exit with its status; any
    other exception: its traceback, status 1 (KeyboardInterrupt: 130). Exiting from here, not from an uncaught
    exception, lets the DataLoader iterators the traceback held shut their workers down while the interpreter still
    runs (Paddle's shutdown at interpreter exit waits for ever). The status is also appended to the file
    ``$SLOWFAST_STATUS_FILE`` names, if set: paddle.distributed.launch does not pass its ranks' statuses on when it is
    signalled itself (launch.sh reads them there)."""
    try:
        status = main() or 0
    except UserError as error:
        logger.error('%s', error)
        status = error.status
    except KeyboardInterrupt:
        logger.error('interrupted')
        status = 130
    except Exception:
        logger.exception('crashed')
        status = 1
    if os.environ.get('SLOWFAST_STATUS_FILE'):
        with open(os.environ['SLOWFAST_STATUS_FILE'], 'a') as f:
            f.write(f'{status}\n')
    sys.exit(status)
