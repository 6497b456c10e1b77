"""Checkpoint IO: atomic saves, finding the newest complete checkpoint, resuming, and loading weights.

A checkpoint is two files in ``save_dir``; ``slowfast_epoch{N}`` (N 0-indexed, the original's names) holds the model
after epoch N, ``slowfast_epoch{N}_iter{I}`` the model in the middle of epoch N, after its first I iterations
(batches per rank): written when a run is stopped by a signal, or every ``TRAIN.checkpoint_every_steps``.

    PREFIX.pdparams   the model's state_dict (what eval.py / predict.py / fine-tuning load)
    PREFIX.pdopt      {'optimizer': optimizer state with the LR scheduler's, 'meta': epoch, iteration (mid-epoch),
                       global step, seed, best validation accuracy, the config used, the .pdparams' SHA-256;
                       'scaler': the float16 loss scaler's state (AMP runs); mid-epoch: 'meta.progress' (each rank's
                       epoch meters) and, from several ranks, 'rank_state' (each rank's BN statistics)}

Each file is written to a temporary name and renamed; the ``.pdopt`` is renamed last, so a checkpoint whose
``.pdopt`` exists is complete, whatever moment the writer was killed at. A mid-epoch checkpoint is removed once a
later checkpoint is written.

``save_dir`` is one run's (``claim_save_dir``): locked while the run lives, cleared of the temporary files of saves
that were killed, and refused to a run that does not resume the checkpoints it holds.
"""
import _compat_pickle
import errno
import glob
import hashlib
import logging
import math
import os
import pickle
import re
import socket
import time
from typing import IO, Any, Dict, List, NamedTuple, Optional, Tuple, Type

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks
    fcntl = None

import numpy as np
import paddle

import distributed
from atomic import atomic_path, check_output_folder, size_text
from errors import CheckpointError, OutputError, RunFolderError, WeightsError

logger = logging.getLogger(__name__)

PREFIX = 'slowfast_epoch'
Position = Tuple[int, Optional[int]]  # (epoch, iterations done in it); iteration None: the epoch is complete


# ---- reading Paddle's files without running code -------------------------------------------------------------------
# paddle.load is pickle.load underneath: a .pdparams / .pdopt from the internet or a shared disk could run any code.
# What paddle.save writes for a state dict, an optimizer state or a checkpoint's meta needs only these globals.

SAFE_GLOBALS = frozenset({
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),  # arrays (numpy 1, 2)
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),  # numpy numbers
    ('builtins', 'tuple'),  # a Tensor inside a container: (tuple, ((name, array),)), paddle.framework.io
    ('builtins', 'list'), ('builtins', 'dict'), ('builtins', 'set'), ('builtins', 'frozenset'),
    ('builtins', 'complex'), ('builtins', 'bytearray'), ('collections', 'OrderedDict'),
    ('_codecs', 'encode'),  # protocol-2 pickles store bytes through it
})


class RefusedPickle(pickle.UnpicklingError):
    """A pickled file asked for something a Paddle state file never holds (the message names it)."""


def _dense_tensor(expression: Any, namespace: Any = None) -> np.ndarray:
    """What ``builtins.eval`` may do in a Paddle file: Paddle pickles a DenseTensor as ``eval('data', {'data':
    array})`` (paddle.framework.io ``reduce_DenseTensor``, 2.6 and 3.x); that expression gives the array, any other is
    refused."""
    if (expression == 'data' and isinstance(namespace, dict) and list(namespace) == ['data']
            and isinstance(namespace['data'], np.ndarray)):
        return namespace['data']
    raise RefusedPickle(f'builtins.eval({str(expression)[:80]!r}, ...)')


class _StateUnpickler(pickle.Unpickler):
    """Rebuilds containers, strings, numbers and numpy arrays (SAFE_GLOBALS) and refuses every other global."""

    def find_class(self, module: str, name: str):
        # Python 2's names (protocol 2: __builtin__, copy_reg), mapped as pickle's own find_class maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) == ('builtins', 'eval'):
            return _dense_tensor
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise RefusedPickle(f'{module}.{name}')

    def persistent_load(self, pid):
        raise RefusedPickle('a persistent id')


def restricted_unpickle(path: str) -> Any:
    """``pickle.load`` of ``path`` with only SAFE_GLOBALS (and Paddle's DenseTensor rebuild); RefusedPickle names
    anything else, before it is called."""
    with open(path, 'rb') as f:
        return _StateUnpickler(f, encoding='latin1').load()


def _named_array(value: Any) -> bool:
    """paddle.save's form of a Tensor inside a container: ``(name, array)``."""
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(
        value[1], np.ndarray)


def _arrays_of(value: Any) -> Any:
    """``value`` with every ``(name, array)`` Tensor replaced by its array, as ``paddle.load(return_numpy=True)``."""
    if _named_array(value):
        return value[1]
    if isinstance(value, dict):
        return type(value)((k, _arrays_of(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_arrays_of(v) for v in value)
    return value


def load_paddle_file(path: str, allow_pickle: bool = False, error: Type[Exception] = WeightsError,
                     broken: Optional[Type[Exception]] = None) -> Any:
    """What ``paddle.save`` wrote to ``path`` (a state dict, an optimizer state, a checkpoint's ``.pdopt``), tensors
    as numpy arrays, as ``paddle.load(path, return_numpy=True)`` gives it, but read without running code: a file
    that asks for any other object is refused with ``error`` naming the file and what it asked for. Tensors that
    paddle.save split (over 1 GiB, pickle protocol 2 or 3) are joined again. ``allow_pickle``: ``paddle.load`` itself,
    for a file the user trusts. ``broken``: the error for a file that cannot be read at all (cut short, not Paddle's;
    default ``error``)."""
    try:
        if allow_pickle:
            return paddle.load(path, return_numpy=True)
        obj = restricted_unpickle(path)
    except FileNotFoundError:
        raise error(f'not found: {path}') from None
    except RefusedPickle as refused:
        raise error(f'{path}: refusing to load it: it asks for {refused}, which a file written by paddle.save for '
                    'weights or a checkpoint never holds, and loading it could run code. If you trust the file, '
                    'pass --allow_pickle') from None
    except Exception as failure:  # paddle.load of a cut file: ValueError, EOFError, UnpicklingError, RuntimeError...
        raise (broken or error)(f'{path}: not a file written by paddle.save, or cut short '
                                f'({type(failure).__name__}: {str(failure)[:200]})') from None
    if isinstance(obj, dict):
        split = obj.pop('UnpackBigParamInfor@@', {})  # paddle.framework.io_utils._unpack_saved_dict's layout
        for key, info in split.items():
            obj[key] = np.concatenate([obj.pop(part) for part in info['slices']]).reshape(info['OriginShape'])
        if obj.pop('StructuredToParameterName@@', None) is not None:  # a state dict: its values are arrays already
            return obj
    return _arrays_of(obj)


def atomic_save(obj, path: str) -> None:
    """``paddle.save`` through ``atomic.atomic_path``: ``path`` is complete or absent, never truncated, also after a
    power loss (fsync before the rename)."""
    with atomic_path(path) as tmp:
        paddle.save(obj, tmp)


def checkpoint_prefix(save_dir: str, epoch: int, iteration: Optional[int] = None) -> str:
    return os.path.join(save_dir, f'{PREFIX}{epoch}' + ('' if iteration is None else f'_iter{iteration}'))


def checkpoint_position(prefix: str) -> Position:
    """``.../slowfast_epoch7`` -> (7, None); ``.../slowfast_epoch7_iter120`` -> (7, 120)."""
    match = re.fullmatch(rf'{PREFIX}(\d+)(?:_iter(\d+))?', os.path.basename(prefix))
    if not match:
        raise CheckpointError(f'{prefix}: not a checkpoint name ({PREFIX}N or {PREFIX}N_iterI)')
    return int(match.group(1)), None if match.group(2) is None else int(match.group(2))


def _order(position: Position) -> Tuple[int, float]:
    epoch, iteration = position
    return epoch, math.inf if iteration is None else iteration


def complete_checkpoints(save_dir: str) -> List[Position]:
    """Positions of the complete checkpoints in ``save_dir``, oldest first."""
    positions = []
    for path in glob.glob(os.path.join(save_dir, f'{PREFIX}*.pdopt')):
        prefix = path[:-len('.pdopt')]
        try:
            position = checkpoint_position(prefix)
        except CheckpointError:  # another file that happens to share the prefix
            continue
        if os.path.isfile(prefix + '.pdparams'):
            positions.append(position)
    return sorted(positions, key=_order)


def complete_epochs(save_dir: str) -> List[int]:
    """Epochs with a complete end-of-epoch checkpoint in ``save_dir``, ascending."""
    return [epoch for epoch, iteration in complete_checkpoints(save_dir) if iteration is None]


def find_resume_checkpoint(save_dir: str, epoch: Optional[int] = None) -> str:
    """Prefix of the newest complete checkpoint, mid-epoch ones included (or of the end of ``epoch``);
    CheckpointError naming what is missing."""
    if epoch is None:
        positions = complete_checkpoints(save_dir)
        if not positions:
            raise CheckpointError(f'--resume: no complete checkpoint ({PREFIX}N.pdparams + .pdopt) in {save_dir}')
        return checkpoint_prefix(save_dir, *positions[-1])
    epochs = complete_epochs(save_dir)
    if epoch not in epochs:
        raise CheckpointError(f'--resume_epoch {epoch}: no complete checkpoint {checkpoint_prefix(save_dir, epoch)}'
                              f'.pdparams/.pdopt; complete ones: {epochs or "none"}')
    return checkpoint_prefix(save_dir, epoch)


def save_checkpoint(save_dir: str, epoch: int, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
                    meta: Dict, scaler: Optional[paddle.amp.GradScaler] = None, iteration: Optional[int] = None,
                    rank_state: Optional[List[Dict[str, np.ndarray]]] = None) -> str:
    """Write the checkpoint of the end of ``epoch`` (or of its first ``iteration`` iterations) atomically, with the
    float16 loss scaler's state and each rank's BN statistics when given; then remove every other mid-epoch
    checkpoint (older ones are superseded, later ones belong to a run resumed from before them). Returns its
    prefix. A write that fails (a full disk, ``atomic.write_failure``) leaves no file of this checkpoint and raises
    OutputError saying so and which checkpoint is intact."""
    os.makedirs(save_dir, exist_ok=True)
    prefix = checkpoint_prefix(save_dir, epoch, iteration)
    written = False
    try:
        atomic_save(model.state_dict(), prefix + '.pdparams')
        written = True
        # the .pdparams stays a plain state dict (what eval, predict and other ports load); the .pdopt records its
        # digest
        meta = dict(meta, epoch=epoch, weights_sha256=file_digest(prefix + '.pdparams'))
        if iteration is not None:
            meta['iteration'] = iteration
        state = {'optimizer': optimizer.state_dict(), 'meta': meta}
        if scaler is not None:
            state['scaler'] = scaler.state_dict()
        if rank_state is not None:
            state['rank_state'] = rank_state
        atomic_save(state, prefix + '.pdopt')
    except OutputError as error:
        if written:  # half a checkpoint (with the .pdopt of an earlier one of this name, if any: not its pair)
            for ext in ('.pdopt', '.pdparams'):
                if os.path.isfile(prefix + ext):
                    os.remove(prefix + ext)
        raise OutputError(f'{error}. {os.path.basename(prefix)} was not written; ' + _intact(save_dir)) from None
    for position in complete_checkpoints(save_dir):
        if position[1] is not None and position != (epoch, iteration):
            old = checkpoint_prefix(save_dir, *position)
            os.remove(old + '.pdopt')  # first: what is left is incomplete, never taken for a checkpoint
            os.remove(old + '.pdparams')
    return prefix


# ---- retention: the checkpoints a run keeps -------------------------------------------------------------------------
# A removal is journalled: the checkpoint's name is written to REMOVING first, then its .pdopt is removed (what is left
# is incomplete, never taken for a checkpoint), then its .pdparams, then the journal. A run killed in between finishes
# it at its next start (``claim_save_dir``), so a kill at any moment leaves the folder resumable and tidy.

REMOVING = 'slowfast_removing.txt'


def retained_epochs(epochs: List[int], keep_last: int, keep_every: int) -> List[int]:
    """Of the end-of-epoch checkpoints ``epochs``, those kept: the newest ``keep_last`` (0: every one) and those of
    every ``keep_every``-th epoch (epoch N is the (N+1)-th: 19, 39, ... for 20; 0: none), ascending."""
    epochs = sorted(epochs)
    if keep_last <= 0:
        return epochs
    kept = set(epochs[-keep_last:])
    if keep_every > 0:
        kept |= {e for e in epochs if (e + 1) % keep_every == 0}
    return sorted(kept)


def remove_old_checkpoints(save_dir: str, keep_last: int, keep_every: int) -> List[str]:
    """Remove this run's end-of-epoch checkpoints that ``retained_epochs`` does not keep (the newest, which --resume
    takes, always stays; files that are not complete checkpoints of ``save_dir`` are never touched); returns the
    names removed."""
    finish_removal(save_dir)
    epochs = complete_epochs(save_dir)
    kept = set(retained_epochs(epochs, keep_last, keep_every))
    removed = []
    for epoch in epochs:
        if epoch in kept:
            continue
        prefix = checkpoint_prefix(save_dir, epoch)
        with atomic_path(os.path.join(save_dir, REMOVING)) as tmp:
            with open(tmp, 'w', encoding='utf-8') as f:
                f.write(os.path.basename(prefix) + '\n')
        finish_removal(save_dir)
        removed.append(os.path.basename(prefix))
    return removed


def finish_removal(save_dir: str) -> Optional[str]:
    """Complete the removal the journal names (one a kill interrupted, or the one just journalled); returns its
    name."""
    journal = os.path.join(save_dir, REMOVING)
    if not os.path.isfile(journal):
        return None
    with open(journal, encoding='utf-8') as f:
        name = f.read().strip()
    if re.fullmatch(rf'{PREFIX}\d+', name):  # a name this module wrote, nothing else
        for ext in ('.pdopt', '.pdparams'):  # the .pdopt first: what is left is never a complete checkpoint
            path = os.path.join(save_dir, name + ext)
            if os.path.isfile(path):
                os.remove(path)
    os.remove(journal)
    return name


def checkpoints_at_once(saved_epochs: List[int], keep_last: int, keep_every: int) -> int:
    """The most end-of-epoch checkpoints a run that saves at ``saved_epochs`` holds at once (after each save's
    removals; one more while a save is written, and a mid-epoch one may sit beside them)."""
    return max((len(retained_epochs(saved_epochs[:i + 1], keep_last, keep_every)) for i in range(len(saved_epochs))),
               default=0)


def _intact(save_dir: str) -> str:
    """What a run whose save failed can continue from."""
    positions = complete_checkpoints(save_dir)
    if not positions:
        return 'no checkpoint of this run is complete yet'
    prefix = checkpoint_prefix(save_dir, *positions[-1])
    size = sum(os.path.getsize(prefix + ext) for ext in ('.pdparams', '.pdopt'))
    return (f'the newest complete one, {os.path.basename(prefix)}, is intact (a checkpoint takes {size_text(size)}): '
            'free some space, then continue with --resume')


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            digest.update(block)
    return digest.hexdigest()


def check_resumable(prefix: str, model_config: Dict, allow_pickle: bool = False) -> Dict:
    """The checkpoint's ``.pdopt`` contents (``meta`` and the states ``load_checkpoint`` restores) after checking
    that its two files belong together (the ``.pdopt`` records the ``.pdparams`` digest: a crash between the renames,
    or files of two runs, are refused) and that it was trained with the same ``MODEL`` keys as ``model_config``;
    CheckpointError naming what differs. ``allow_pickle``: see ``load_paddle_file``."""
    state = load_paddle_file(prefix + '.pdopt', allow_pickle, CheckpointError)
    if not isinstance(state, dict) or not isinstance(state.get('meta'), dict):
        raise CheckpointError(f'{prefix}.pdopt is not a checkpoint\'s state (no meta)')
    meta = state['meta']
    recorded = meta.get('weights_sha256')
    if recorded is not None and recorded != file_digest(prefix + '.pdparams'):
        raise CheckpointError(f'{prefix}.pdparams is not the one {prefix}.pdopt was written with (another run\'s, '
                              'or a crash between the two renames): remove both or resume an earlier epoch with '
                              '--resume_epoch')
    theirs = (meta.get('config') or {}).get('MODEL', {})
    # keys on both sides only: a key the checkpoint lacks was added to the schema since, with the old behaviour
    differ = sorted(k for k in theirs if k in model_config and theirs[k] != model_config[k])
    if theirs and differ:
        raise CheckpointError(f'{prefix} was trained with other MODEL keys: ' + ', '.join(
            f'{k} {theirs.get(k)!r} (now {model_config.get(k)!r})' for k in differ) +
            ': use another --save_dir, or the same MODEL settings')
    return state


def load_checkpoint(prefix: str, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
                    scaler: Optional[paddle.amp.GradScaler] = None, rank: int = 0,
                    state: Optional[Dict] = None, allow_pickle: bool = False) -> Dict:
    """Restore model, optimizer (with its LR scheduler) and the float16 loss scaler from a checkpoint, and, from a
    mid-epoch checkpoint of several ranks, this ``rank``'s own BN statistics (the caller checks that the ranks are
    the same); returns its ``meta``. ``state``: the ``.pdopt`` contents when already read (``check_resumable``).
    ``allow_pickle``: see ``load_paddle_file``."""
    model.set_state_dict(load_paddle_file(prefix + '.pdparams', allow_pickle, CheckpointError))
    state = state if state is not None else load_paddle_file(prefix + '.pdopt', allow_pickle, CheckpointError)
    optimizer.set_state_dict(state['optimizer'])
    if scaler is not None and state.get('scaler'):
        scaler.load_state_dict(state['scaler'])
    if state.get('rank_state'):
        model.set_state_dict({**model.state_dict(), **state['rank_state'][rank]})
    return state['meta']


# ---- resuming a training run ---------------------------------------------------------------------------------------

def agree_on_resume(save_dir: str, resume: bool, resume_epoch: Optional[int], rank: int, world: int) -> Optional[str]:
    """The checkpoint every rank resumes from (None: from scratch). Rank 0 picks it (the newest complete one in
    ``save_dir``, mid-epoch ones included, or the end of ``resume_epoch``) and tells the others, so no rank decides by
    its own view of the folder; a rank that cannot read it stops every rank with CheckpointError naming the path
    (``save_dir`` must be a folder every node sees)."""
    if not (resume or resume_epoch is not None):
        return None
    position = [-1.0, -1.0]  # (epoch, iteration): from scratch
    if rank == 0:
        try:
            epoch, iteration = checkpoint_position(find_resume_checkpoint(save_dir, resume_epoch))
            position = [float(epoch), -1.0 if iteration is None else float(iteration)]
        except CheckpointError as error:
            if resume_epoch is not None:
                position = [-2.0, -1.0]
                logger.error('%s', error)
            else:  # a restart loop may always pass --resume
                logger.warning('%s: starting from scratch', error)
    epoch, iteration = (int(v) for v in distributed.all_reduce_max(position if rank == 0 else [-3.0, -3.0], world))
    if epoch == -2:
        raise CheckpointError(f'--resume_epoch {resume_epoch}: no complete checkpoint in {save_dir} (as rank 0 sees '
                              'it)')
    if epoch < 0:
        return None
    prefix = checkpoint_prefix(save_dir, epoch, None if iteration < 0 else iteration)
    readable = os.path.isfile(prefix + '.pdparams') and os.path.isfile(prefix + '.pdopt')
    unreadable = distributed.all_reduce_max(0.0 if readable else rank + 1.0, world)
    if unreadable:
        raise CheckpointError(f'rank {int(unreadable) - 1} cannot read {os.path.basename(prefix)}.pdparams/.pdopt, '
                              'which rank 0 resumes from' + ('' if readable else f', in {save_dir}') +
                              ': --save_dir must be a folder every node sees (a shared file system)')
    return prefix


def check_mid_epoch(meta: Dict, prefix: str, layout: List[int], shape: List) -> None:
    """A mid-epoch checkpoint continues its epoch's batches, which exist only for the ``layout`` ([ranks, micro-batch,
    accumulation steps]) and the clip ``shape`` ([frames, [[batch, crop] per iteration]]: multigrid) it was written
    with; CheckpointError naming both otherwise."""
    if 'iteration' not in meta:
        return
    saved = meta.get('layout')
    if saved != layout:
        raise CheckpointError(
            f'{prefix} stopped inside epoch {meta["epoch"]}, whose remaining batches are those of {saved[0]} ranks x '
            f'{saved[1]} clips x {saved[2]} accumulation steps; this run has {layout[0]} x {layout[1]} x {layout[2]}:'
            ' resume with the same number of ranks, TRAIN.batch_size and TRAIN.accumulate_steps, or resume the end '
            f'of an earlier epoch with --resume_epoch')
    saved = meta.get('stage')
    if saved is not None and saved != shape:
        raise CheckpointError(f'{prefix} stopped inside epoch {meta["epoch"]}, trained at {saved[0]} frames with '
                              f'[batch, crop] per iteration {saved[1]}; this config gives that epoch {shape[0]} '
                              f'frames and {shape[1]}: resume with the config it was written with')


# ---- the run's folder ----------------------------------------------------------------------------------------------
# One run per folder: two runs writing one save_dir interleave their checkpoints and train.log, and a run that does
# not resume would leave an earlier run's later epochs for --resume to take.

LOCK_FILE = 'slowfast_run.lock'
CHECKPOINT_FILE = re.compile(rf'{PREFIX}\d+(?:_iter\d+)?\.(?:pdparams|pdopt)')
# what a killed atomic save leaves (atomic.atomic_path's temporary names: a checkpoint's, a removal journal's), and
# check_output_folder's probe
STALE_TEMPORARY = re.compile(rf'\.{PREFIX}\d+(?:_iter\d+)?\.(?:pdparams|pdopt)\.part(?P<save>\d+)'
                             r'|\.slowfast_removing\.txt\.part(?P<journal>\d+)'
                             r'|\.write_check\.(?P<probe>\d+)\..+')


class RunFolder(NamedTuple):
    path: str
    lock: Optional[IO]  # the locked file, open while the run lives (None: the file system has no locks)


def claim_save_dir(save_dir: str, resume: bool, start_over: bool = False) -> RunFolder:
    """Make ``save_dir`` this run's, before any work (rank 0): it can be written (OutputError otherwise); no other run
    holds it (a POSIX lock on ``save_dir/slowfast_run.lock``, which the kernel releases when the holder ends, however
    it ends; RunFolderError naming the holder's host, process and start time otherwise); the temporary files of saves
    that were killed are removed (logged), and a checkpoint removal a kill interrupted is finished
    (``remove_old_checkpoints``); and a run that does not ``resume`` refuses a folder holding checkpoints
    (RunFolderError naming the newest and the ways on), unless ``start_over``, which moves them and their
    ``train.log`` into ``save_dir/previous_run_<time>``. The returned lock must stay referenced while the run lives."""
    check_output_folder(save_dir, '--save_dir')
    lock = _lock(save_dir)
    _remove_stale_temporaries(save_dir, locked=lock is not None)
    if lock is not None:
        finished = finish_removal(save_dir)
        if finished:
            logger.info('%s: finished removing %s, which a stopped run was removing (TRAIN.keep_checkpoints)', save_dir,
                        finished)
    held = sorted(name for name in os.listdir(save_dir) if CHECKPOINT_FILE.fullmatch(name))
    if held and not resume:
        if not start_over:
            complete = complete_checkpoints(save_dir)
            newest = (checkpoint_prefix(save_dir, *complete[-1]) if complete
                      else os.path.join(save_dir, max(held, key=lambda n: os.path.getmtime(os.path.join(save_dir, n)))))
            raise RunFolderError(
                f'--save_dir {save_dir} holds the checkpoints of an earlier run ({len(held)} files, the newest '
                f'{newest}), and this run does not resume it: starting over in the same folder would mix the two '
                'runs\' checkpoints. Continue that run with --resume, give this one another --save_dir, or move the '
                'old checkpoints aside with --start_over')
        _move_aside(save_dir, held)
    return RunFolder(save_dir, lock)


def _lock(save_dir: str) -> Optional[IO]:
    path = os.path.join(save_dir, LOCK_FILE)
    if fcntl is None:
        logger.warning('%s: no POSIX locks on this system: make sure no other run uses this --save_dir', save_dir)
        return None
    try:
        f = open(path, 'a+', encoding='utf-8')
    except OSError as error:
        raise OutputError(f'--save_dir {save_dir}: cannot open its lock file {path} ({error.strerror}): give another '
                          '--save_dir, or make it writable') from None
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EAGAIN):  # ENOLCK, EOPNOTSUPP, ENOSYS: a file system without locks
            f.close()
            logger.warning('--save_dir %s: cannot lock %s (%s): this file system takes no locks, so nothing stops a '
                           'second run from writing the same folder: make sure none does', save_dir, path,
                           error.strerror)
            return None
        holder = ''
        for _ in range(20):  # a run that has just locked it writes its name at once
            f.seek(0)
            holder = f.read().strip()
            if holder:
                break
            time.sleep(0.05)
        f.close()  # this process holds no lock on it: closing releases nothing
        holder = holder or 'it has not written its name yet'
        raise RunFolderError(f'--save_dir {save_dir} is in use by another training run ({holder}): one run per '
                             'folder. Give this run another --save_dir, or stop that one first') from None
    f.seek(0)
    f.truncate()
    f.write(f'host {socket.gethostname()}, process {os.getpid()}, started '
            f'{time.strftime("%Y-%m-%d %H:%M:%S %Z")}\n')
    f.flush()
    return f


def _remove_stale_temporaries(save_dir: str, locked: bool) -> None:
    """The temporary files of killed saves in ``save_dir``: with the folder locked every save's is stale (only the
    holder saves there); without a lock, only those of processes that no longer run here. A write probe is another
    process's while that process runs, locked or not: a second run probes the folder before it finds the lock taken."""
    removed = []
    for name in sorted(os.listdir(save_dir)):
        match = STALE_TEMPORARY.fullmatch(name)
        if not match:
            continue
        pid = match.group('probe') if match.group('probe') else None if locked else (
            match.group('save') or match.group('journal'))
        if pid and _alive(int(pid)):
            continue
        path = os.path.join(save_dir, name)
        try:
            size = os.path.getsize(path)
            os.remove(path)
        except FileNotFoundError:  # its process removed it meanwhile
            continue
        removed.append(f'{name} ({size_text(size)})')
    if removed:
        logger.info('%s: removed %d temporary files of saves that were killed: %s', save_dir, len(removed),
                    ', '.join(removed))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _move_aside(save_dir: str, names: List[str]) -> None:
    """--start_over: the earlier run's checkpoint files and train.log into ``save_dir/previous_run_<time>`` (each
    ``.pdopt`` first: a move cut short leaves incomplete checkpoints behind, never a complete one)."""
    aside = os.path.join(save_dir, 'previous_run_' + time.strftime('%Y%m%d_%H%M%S'))
    os.makedirs(aside, exist_ok=True)
    names = sorted(names, key=lambda n: (n.endswith('.pdparams'), n))
    if os.path.isfile(os.path.join(save_dir, 'train.log')):
        names.append('train.log')
    for name in names:
        os.replace(os.path.join(save_dir, name), os.path.join(aside, name))
    logger.warning('--start_over: moved the earlier run\'s %d checkpoint files%s to %s', len(names) - (
        names[-1] == 'train.log'), ' and its train.log' if names[-1] == 'train.log' else '', aside)


def weights_path(path: str) -> str:
    """``path`` with ``.pdparams`` appended when given without it (the original's prefix convention)."""
    if os.path.isfile(path) or path.endswith('.pdparams'):
        return path
    return path + '.pdparams'


def weights_file(path: str) -> str:
    """The ``.pdparams`` file ``path`` names (``weights_path``); WeightsError when there is none, and for a folder
    one naming its newest complete checkpoint as the flag to give."""
    if os.path.isdir(path):
        positions = complete_checkpoints(path)
        found = (f'its newest complete checkpoint: --weights {checkpoint_prefix(path, *positions[-1])}' if positions
                 else f'it holds no complete checkpoint ({PREFIX}N.pdparams + .pdopt)')
        raise WeightsError(f'--weights {path} is a folder, not a weights file; {found}')
    full = weights_path(path)
    if not os.path.isfile(full):
        raise WeightsError(f'weights not found: {full}')
    return full


def read_weights(path: str, allow_pickle: bool = False) -> Dict[str, np.ndarray]:
    """A ``.pdparams`` state dict (the extension may be left out), read by ``load_paddle_file``; WeightsError naming
    the file."""
    full = weights_file(path)
    state = load_paddle_file(full, allow_pickle)
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise WeightsError(f'{full} is not a state dict of named tensors')
    return state


def load_weights(model: paddle.nn.Layer, path: str, strict: bool = True,
                 allow_pickle: bool = False) -> Tuple[List[str], List[str], List[str]]:
    """Load ``path`` into ``model``; returns ``(loaded, skipped, reinitialised)`` key lists.

    strict (evaluation): every model key must be in the file with its shape, else WeightsError naming the keys.
    Not strict (fine-tuning): matching keys load; keys of the file the model lacks are skipped; head keys missing
    from the file or of another shape (a new class count) keep their fresh initialisation. Every backbone key must
    load: WeightsError otherwise (an unconverted PySlowFast/pytorchvideo/PaddleVideo file matches almost nothing,
    and training from scratch by mistake costs the whole run). ``allow_pickle``: see ``load_paddle_file``.
    """
    state = read_weights(path, allow_pickle)
    own = model.state_dict()
    loaded = [k for k in own if k in state and list(state[k].shape) == list(own[k].shape)]
    reinitialised = [k for k in own if k not in loaded]
    skipped = [k for k in state if k not in own]
    if strict and (reinitialised or skipped):
        problems = {'shape mismatch': [f'{k} {list(state[k].shape)} vs model {list(own[k].shape)}'
                                       for k in reinitialised if k in state],
                    'missing': [k for k in reinitialised if k not in state],
                    'unexpected': skipped}
        raise WeightsError(f'{weights_path(path)} does not fit the model: ' + '; '.join(
            f'{what}: {", ".join(keys[:10])}{" ..." if len(keys) > 10 else ""}' for what, keys in problems.items()
            if keys))
    backbone = [k for k in reinitialised if not k.startswith('head.')]
    if not strict and backbone:
        raise WeightsError(
            f'{weights_path(path)}: only {len(loaded)} of the model\'s {len(own)} tensors match it, and '
            f'{len(backbone)} backbone tensors are missing or of another shape (e.g. {", ".join(backbone[:3])}); '
            'a PySlowFast, pytorchvideo or PaddleVideo checkpoint must be converted first: '
            'python tools/weights/convert_weights.py --src FILE --dst OUT.pdparams (see docs/MODEL_ZOO.md)')
    model.set_state_dict({**own, **{k: state[k] for k in loaded}})  # the rest keep their values
    return loaded, skipped, reinitialised
