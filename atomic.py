"""Writing a script's outputs: each location checked before the work, each file written atomically, and a write that
fails for want of space or permission reported as ``OutputError`` naming the file, its folder and what is free there.

    check_output_folder(save_path, '--save_path')      # at start: the folder can be made and written
    with atomic_path('out/result.json') as tmp:         # at the end: write tmp (paddle.save, np.save, av.open, ...)
        write_to(tmp)

A file is complete under its final name or absent, after a kill and after a power loss: the temporary file is hidden
beside the target (same file system, so the rename is atomic) and does not end with the target's extension, so a
temporary left by a SIGKILL is not taken for a finished file by a glob (pass ``keep_extension`` for writers that
choose their format by it). On success it is flushed to disk (fsync), renamed over the target and the folder's entry
flushed too; on any error it is removed and the target is left as it was.

``write_outputs`` is for the end of a long run (eval.py, predict.py): when its outputs cannot be written where asked,
they are written into a new folder under the system's temporary folder and the error names it, so the hours of
work are not lost to the last write.
"""
import errno
import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np

from errors import OutputError

T = TypeVar('T')
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # EFBIG: past `ulimit -f` (Python ignores SIGXFSZ)
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Flush a folder's entries (the rename); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def size_text(num_bytes: float) -> str:
    for unit in ('bytes', 'KB', 'MB', 'GB'):
        if num_bytes < 1024 or unit == 'GB':
            return f'{num_bytes:.0f} {unit}' if unit == 'bytes' else f'{num_bytes:.1f} {unit}'
        num_bytes /= 1024
    raise AssertionError


def free_text(folder: str) -> str:
    """What is free in ``folder``'s file system (to this user), e.g. ``'1.2 MB free of 6.0 MB'``."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return 'unknown space free'
    return f'{size_text(stat.f_bavail * stat.f_frsize)} free of {size_text(stat.f_blocks * stat.f_frsize)}'


def write_failure(path: str, error: OSError, written: Optional[int] = None) -> Optional[OutputError]:
    """The OutputError of a failed write of ``path`` (``written`` bytes of it done): for want of space, the file, its
    folder and what is free there; for want of permission, the file and its folder. None for any other error."""
    folder = os.path.dirname(os.path.abspath(path))
    after = f' after {size_text(written)} of it' if written else ''
    if error.errno in NO_SPACE:
        limit = (' (the file-size limit of `ulimit -f`, or of the file system)' if error.errno == errno.EFBIG
                 else '')
        return OutputError(f'cannot write {path}: {error.strerror}{limit}{after}; {free_text(folder)} in {folder}')
    if error.errno in NOT_WRITABLE:
        return OutputError(f'cannot write {path}: {error.strerror} (in {folder})')
    return None


@contextmanager
def stop_when_unwritable(path: str, then: str) -> Iterator[None]:
    """Writes to ``path`` inside: a failure ``write_failure`` knows (no space, no permission) becomes its OutputError
    with ``then`` (what the user does next) appended; any other OSError passes as it is."""
    try:
        yield
    except OSError as error:
        failure = write_failure(path, error)
        if failure is None:
            raise
        raise OutputError(f'{failure}: {then}') from None


def _cause(error: OSError, tmp: str) -> OSError:
    """``error``, or when it carries no errno (numpy's ``tofile`` reports a short write as "N requested and M
    written"), the error the file system gives for one more write to ``tmp``: why it stopped."""
    if error.errno is not None or not os.path.isfile(tmp):
        return error
    try:
        with open(tmp, 'ab', buffering=0) as f:
            f.write(bytes(1 << 16))
    except OSError as probe:
        return probe
    return error


@contextmanager
def atomic_path(path: str, keep_extension: bool = False) -> Iterator[str]:
    """A temporary path to write ``path``'s content to; see the module docstring. A write that fails for want of
    space or permission raises OutputError (``write_failure``)."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{name}.part{os.getpid()}' + (os.path.splitext(name)[1] if keep_extension else ''))
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(folder)
    except OSError as error:
        written = os.path.getsize(tmp) if os.path.isfile(tmp) else None
        failure = write_failure(path, _cause(error, tmp), written)
        if failure is None:
            raise
        raise failure from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(obj, f, indent=1)


def write_npy(path: str, array: np.ndarray) -> None:
    """``array`` as a ``.npy`` file at ``path`` (exactly that name: np.save appends no extension to a file object),
    atomically."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        np.save(f, array)


# ---- output locations, checked before the work ----------------------------------------------------------------------

def check_output_folder(path: str, flag: str, default: str = '') -> str:
    """Make the folder ``path`` (and its parents) if needed and write a byte in it, so that a folder that cannot be
    made or written, or a file standing where it must go, stops a script before its work: OutputError naming the
    ``flag`` that sets it (``default``: how the path was chosen when the flag was not given) and the path. Returns
    ``path``."""
    _check_folder(path, f'{flag} {path}' + (f' ({default})' if default else ''), flag, '')
    return path


def check_output_file(path: str, flag: str, default: str = '') -> str:
    """``check_output_folder`` for the folder of the file ``path``, and no folder standing where the file must go.
    Returns ``path``."""
    named = f'{flag} {path}' + (f' ({default})' if default else '')
    if os.path.isdir(path):
        raise OutputError(f'{named}: is a folder, where a file must go: give a file name')
    folder = os.path.dirname(os.path.abspath(path))
    _check_folder(folder, named, flag, f' in {folder}')
    return path


def _check_folder(path: str, named: str, flag: str, where: str) -> None:
    blocker = _file_in_the_way(path)
    if blocker is not None:
        what = ('stands where the folder must go' if blocker == os.path.abspath(path) and not where
                else 'is a file, not a folder')
        raise OutputError(f'{named}: {blocker} {what}: give another {flag}, or move that file')
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f'.write_check.{os.getpid()}.', dir=path)  # the pid: see checkpoint.py
        try:
            os.write(fd, b'\0')  # a byte, not an empty file: an empty file is made even on a full disk
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as error:
        free = f', {free_text(path)}' if error.errno in NO_SPACE and os.path.isdir(path) else ''
        raise OutputError(f'{named}: cannot write there{where} ({error.strerror}{free}): give another {flag}, or '
                          'make it writable') from None


def _file_in_the_way(path: str) -> Optional[str]:
    """The first existing non-folder on the way to the folder ``path`` (``path`` itself included), or None."""
    current = os.path.abspath(path)
    while True:
        if os.path.exists(current):
            return None if os.path.isdir(current) else current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


# ---- the end of a long run: nothing lost to the last write ----------------------------------------------------------

def write_outputs(write: Callable[[Callable[[str], str]], T], script: str) -> T:
    """Run ``write(place)``, which writes every output of a run, each at ``place(path)``, and return what it returns.
    When a write fails
    (OutputError), run it again with ``place`` moving every path below a new folder of the system's temporary folder
    (``/tmp/slowfast-<script>-XXXX/<the absolute path>``), then raise OutputError naming the failure and that folder;
    when that fails too, the error names both failures."""
    try:
        return write(lambda path: path)
    except OutputError as error:
        failed = error
    try:
        rescue = tempfile.mkdtemp(prefix=f'slowfast-{script}-')

        def place(path: str) -> str:
            moved = os.path.join(rescue, os.path.abspath(path).lstrip(os.sep))
            os.makedirs(os.path.dirname(moved), exist_ok=True)
            return moved

        write(place)
    except (OutputError, OSError) as again:
        raise OutputError(f'{failed}; writing the outputs to the temporary folder failed too ({again}): nothing was '
                          'saved') from None
    raise OutputError(f'{failed}; so every output of this run was written below {rescue} instead (the same paths '
                      'below it): copy them from there')

