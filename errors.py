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
    75      train.py stopped on SIGTERM / SIGINT / SIGUSR1 after writing a checkpoint: run it again with --resume
            (75 is EX_TEMPFAIL of sysexits.h, "try again later")
"""
import logging
import os
import sys
from typing import Callable, Optional

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


def exit_on_user_error(main: Callable[[], Optional[int]], logger: logging.Logger) -> None:
    """Run ``main`` and exit with its status (None: 0), or log a UserError's message and exit with its status.
    The status is also appended to the file ``$SLOWFAST_STATUS_FILE`` names, if set: paddle.distributed.launch does
    not pass its ranks' statuses on when it is signalled itself (tools/stoppable.sh reads them there)."""
    try:
        status = main() or 0
    except UserError as error:
        logger.error('%s', error)
        status = error.status
    if os.environ.get('SLOWFAST_STATUS_FILE'):
        with open(os.environ['SLOWFAST_STATUS_FILE'], 'a') as f:
            f.write(f'{status}\n')
    sys.exit(status)
