import json
import os

import pytest

import atomic
from atomic import atomic_path, write_json


def test_a_write_is_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(('fsync', 'dir' if os.path.isdir(f'/proc/self/fd/{fd}') else 'file'))
        real_fsync(fd)

    def replace(src, dst):
        events.append(('replace', os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, 'fsync', fsync)
    monkeypatch.setattr(atomic.os, 'replace', replace)
    write_json(str(tmp_path / 'result.json'), {'a': 1})
    assert events == [('fsync', 'file'), ('replace', 'result.json'), ('fsync', 'dir')]
    assert json.loads((tmp_path / 'result.json').read_text()) == {'a': 1}
    assert os.listdir(tmp_path) == ['result.json']  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / 'scores.npy'
    target.write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and not tmp.endswith('.npy')  # a glob never takes it
            open(tmp, 'wb').write(b'half')
            raise RuntimeError('the writer died')
    assert target.read_bytes() == b'old' and os.listdir(tmp_path) == ['scores.npy']


def test_a_write_past_the_file_size_limit_names_the_file_its_folder_and_the_space_free(tmp_path):
    """ulimit -f (RLIMIT_FSIZE) makes a real failed write in this process: Python ignores SIGXFSZ, so the write gets
    EFBIG, as a full disk gives ENOSPC; both are OutputError (exit status 7) and leave the old file and no temporary."""
    import resource

    import numpy as np

    from errors import OutputError

    target = tmp_path / 'scores.npy'
    target.write_bytes(b'old')
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(OutputError) as error:
            atomic.write_npy(str(target), np.zeros(100_000))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(error.value)
    assert message.startswith(f'cannot write {target}: File too large') and 'ulimit -f' in message
    assert 'free of' in message and f' in {tmp_path}' in message and 'after 97.7 KB of it' in message
    assert error.value.status == 7
    assert target.read_bytes() == b'old' and os.listdir(tmp_path) == ['scores.npy']


def test_an_output_folder_is_made_and_written_before_the_work(tmp_path):
    from errors import OutputError

    folder = tmp_path / 'a' / 'b'
    assert atomic.check_output_folder(str(folder), '--save_path') == str(folder)
    assert folder.is_dir() and os.listdir(folder) == []  # the probe is gone
    (tmp_path / 'file').write_text('x')
    for path, blocker, where in ((tmp_path / 'file', tmp_path / 'file', 'stands where the folder must go'),
                                 (tmp_path / 'file' / 'sub', tmp_path / 'file', 'is a file, not a folder')):
        with pytest.raises(OutputError, match=f'^--out {path} \\(default\\): {blocker} {where}: give another --out'):
            atomic.check_output_folder(str(path), '--out', 'default')
    with pytest.raises(OutputError, match=f'^--features {folder}: is a folder, where a file must go'):
        atomic.check_output_file(str(folder), '--features')
    assert atomic.check_output_file(str(tmp_path / 'c' / 'f.npy'), '--features') and (tmp_path / 'c').is_dir()


def test_outputs_that_cannot_be_written_are_written_below_a_temporary_folder(tmp_path, monkeypatch):
    """write_outputs runs the writer again with every path moved below a new temporary folder, and the error names
    it; when that fails too, both failures are named."""
    from errors import OutputError

    monkeypatch.setenv('TMPDIR', str(tmp_path / 'tmp'))
    (tmp_path / 'tmp').mkdir()
    monkeypatch.setattr(atomic.tempfile, 'tempdir', None)  # tempfile reads TMPDIR again
    wanted = [str(tmp_path / 'out' / 'eval_result.json'), str(tmp_path / 'other' / 'f.npy')]
    calls = []

    def write(place):
        calls.append([place(p) for p in wanted])
        if calls[-1] == wanted:
            raise OutputError('cannot write the first: No space left on device')
        for path in calls[-1]:
            atomic.write_json(path, {'written': True})
        return 'done'

    with pytest.raises(OutputError) as error:
        atomic.write_outputs(write, 'eval')
    [rescue] = (tmp_path / 'tmp').glob('slowfast-eval-*')
    assert calls[1] == [str(rescue) + p for p in wanted]  # the same absolute paths, below the new folder
    assert all(json.loads(open(p).read()) == {'written': True} for p in calls[1])
    assert str(error.value) == (f'cannot write the first: No space left on device; so every output of this run was '
                                f'written below {rescue} instead (the same paths below it): copy them from there')

    def fails_twice(place):
        raise OutputError(f'cannot write {place(wanted[0])}')

    with pytest.raises(OutputError, match=f'^cannot write {wanted[0]}; writing the outputs to the temporary folder '
                                          'failed too \\(cannot write .*slowfast-eval-.*\\): nothing was saved'):
        atomic.write_outputs(fails_twice, 'eval')
    assert atomic.write_outputs(lambda place: place('x'), 'eval') == 'x'  # no failure: the paths as given
