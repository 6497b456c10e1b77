"""Atomic file writes: a file is complete under its final name or absent, after a kill and after a power loss.

    with atomic_path('out/result.json') as tmp:   # write tmp (any writer: paddle.save, np.save, av.open, ...)
        write_to(tmp)

The temporary file is hidden beside the target (same file system, so the rename is atomic) and does not end with
the target's extension, so a temporary left by a SIGKILL is not taken for a finished file by a glob (pass
``keep_extension`` for writers that choose their format by it). On success it is flushed to disk (fsync), renamed
over the target and the folder's entry flushed too; on any error it is removed and the target is left as it was.
"""
import json
import os
from contextlib import contextmanager
from typing import Any, Iterator


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


@contextmanager
def atomic_path(path: str, keep_extension: bool = False) -> Iterator[str]:
    """A temporary path to write ``path``'s content to; see the module docstring."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{name}.part{os.getpid()}' + (os.path.splitext(name)[1] if keep_extension else ''))
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(obj, f, indent=1)
