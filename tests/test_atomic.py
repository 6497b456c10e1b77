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
