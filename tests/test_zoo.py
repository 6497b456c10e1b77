"""tools/weights/zoo.py without the internet: a server on 127.0.0.1 serves checkpoints written in each publisher's
format (complete, cut short, as an HTML page, without Range support), and every way a download goes wrong is named
with the address."""
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from helpers import ROOT, TINY, assert_same_weights, random_state, tool_path, write_published
from config_utils import parse_config

import zoo  # noqa: E402 (tools/weights is on sys.path through helpers)


class Files(BaseHTTPRequestHandler):
    """Serves ``server.files`` by path under a mode prefix: /ok/ (Range honoured), /cut/ (announces the whole size,
    sends half, closes), /norange/ (Range ignored), /html/ (a login page); anything else 404."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append((self.path, self.headers.get('Range')))
        mode, _, name = self.path.strip('/').partition('/')
        data = self.server.files.get(name)
        if data is None or mode not in ('ok', 'cut', 'norange', 'html'):
            self.send_error(404)
            return
        if mode == 'html':
            page = b'<!DOCTYPE html><html><body>Sign in to continue</body></html>'
            self.send_response(200)
            self.send_header('Content-Type', 'text/html; charset=utf-8')
            self.send_header('Content-Length', str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        start = 0
        asked = self.headers.get('Range')
        if asked and mode == 'ok':
            start = int(asked.split('=')[1].split('-')[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header('Content-Range', f'bytes */{len(data)}')
                self.end_headers()
                return
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else:
            self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:len(data) // 2] if mode == 'cut' else data[start:])
        if mode == 'cut':
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Files)
    httpd.files, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f'http://127.0.0.1:{httpd.server_address[1]}'
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def tiny_config(tmp_path):
    """A config file of the tiny network (what a shipped config is to the real entries)."""
    cfg = parse_config(os.path.join(ROOT, 'slowfast.yaml'), ['MODEL.num_classes=5'] + TINY)
    path = tmp_path / 'tiny.yaml'
    plain = lambda d: {k: plain(v) if isinstance(v, dict) else v for k, v in d.items()}  # noqa: E731
    path.write_text(yaml.safe_dump(plain(cfg)))
    return str(path), cfg


def entry_for(tmp_path, server, fmt):
    config, cfg = tiny_config(tmp_path)
    name = {'caffe2': 'SLOWFAST_4x16_R50.pkl', 'paddlevideo': 'SlowFast_8*8.pdparams', 'pyslowfast': 'SF.pyth'}[fmt]
    if fmt == 'pyslowfast':
        pytest.importorskip('torch', reason='writing a .pyth needs torch')
    state = random_state(cfg, seed=len(fmt))
    write_published(fmt, state, tmp_path / name)
    server.files[name] = (tmp_path / name).read_bytes()
    entry = zoo.Entry(f'test-{fmt}', 'test', f'{server.url}/ok/{name}', config, 75.0, 92.0)
    return entry, state


@pytest.mark.parametrize('fmt', ['caffe2', 'paddlevideo', 'pyslowfast'])
def test_get_downloads_converts_and_prints_the_commands(tmp_path, server, fmt, caplog):
    caplog.set_level(logging.INFO)  # before the call: importing Paddle 2.6 leaves the root logger at WARNING
    entry, state = entry_for(tmp_path, server, fmt)
    out = str(tmp_path / 'weights')
    weights = zoo.get(entry, out)
    assert_same_weights(weights + '.pdparams', state)
    download = os.path.join(out, 'downloads', os.path.basename(entry.url))
    assert open(download, 'rb').read() == server.files[os.path.basename(entry.url)]
    assert not os.path.exists(download + '.part')
    log = caplog.text
    assert f'python eval.py --config {entry.config} --weights {weights}' in log
    assert f'python train.py --config {entry.config} --weights {weights}' in log
    assert f'SHA-256 {zoo.sha256_of(download)}' in log
    requests = len(server.requests)
    zoo.get(entry, out)  # present already: converted again, not downloaded again
    assert len(server.requests) == requests and 'already downloaded' in caplog.text


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path, server):
    entry, state = entry_for(tmp_path, server, 'caffe2')
    data = server.files['SLOWFAST_4x16_R50.pkl']
    out = str(tmp_path / 'weights')
    cut = entry.url.replace('/ok/', '/cut/')
    with pytest.raises(zoo.DownloadError, match=rf'{cut}: the download stopped after {len(data) // 2} of '
                                                rf'{len(data)} bytes.*run the same command again to resume'):
        zoo.get(entry, out, url=cut)
    part = os.path.join(out, 'downloads', 'SLOWFAST_4x16_R50.pkl.part')
    assert os.path.getsize(part) == len(data) // 2
    assert not os.path.exists(part[:-len('.part')])  # nothing under the real name until complete
    weights = zoo.get(entry, out)
    assert server.requests[-1] == ('/ok/SLOWFAST_4x16_R50.pkl', f'bytes={len(data) // 2}-')
    assert_same_weights(weights + '.pdparams', state)
    # a server that ignores Range sends the whole file again: the part is started over, not appended to
    os.remove(weights + '.pdparams')
    os.replace(part[:-len('.part')], part)
    with open(part, 'r+b') as f:
        f.truncate(1000)
    zoo.get(entry, out, url=entry.url.replace('/ok/', '/norange/'))
    assert open(part[:-len('.part')], 'rb').read() == data
    # a part that already holds every byte: the server answers 416 and the part is taken as it is
    os.replace(part[:-len('.part')], part)
    zoo.get(entry, out)
    assert server.requests[-1][1] == f'bytes={len(data)}-' and open(part[:-len('.part')], 'rb').read() == data


def test_each_failure_names_the_address_and_keeps_nothing_broken(tmp_path, server):
    entry, _ = entry_for(tmp_path, server, 'caffe2')
    out = str(tmp_path / 'weights')
    downloads = os.path.join(out, 'downloads')
    missing = f'{server.url}/ok/NOT_THERE.pkl'
    with pytest.raises(zoo.DownloadError, match=rf'{missing}: HTTP 404'):
        zoo.get(entry, out, url=missing)
    html = entry.url.replace('/ok/', '/html/')
    with pytest.raises(zoo.DownloadError, match=rf'{html} sent an HTML page \(text/html.*\), not a checkpoint'):
        zoo.get(entry, out, url=html)
    with pytest.raises(zoo.DownloadError, match=rf'{entry.url}: SHA-256 [0-9a-f]{{64}} is not the expected 0+'):
        zoo.get(entry, out, sha256='0' * 64)
    with socket.socket() as s:  # a port nothing listens on: as a machine without network
        s.bind(('127.0.0.1', 0))
        closed = f'http://127.0.0.1:{s.getsockname()[1]}/SLOWFAST_4x16_R50.pkl'
    with pytest.raises(zoo.DownloadError, match=rf'cannot reach {closed} .*: download it on a machine that can, then '
                                                rf'run: python tools/weights/zoo.py get {entry.name} --file PATH'):
        zoo.get(entry, out, url=closed)
    assert not os.path.exists(downloads) or os.listdir(downloads) == []
    assert not os.path.exists(os.path.join(out, entry.name + '.pdparams'))
    with pytest.raises(zoo.WeightsError, match='no published checkpoint named'):
        zoo.find('slowfast-r9000')


def test_a_file_already_at_hand_converts_offline(tmp_path, server):
    entry, state = entry_for(tmp_path, server, 'paddlevideo')
    entry = entry._replace(url='http://unreachable.invalid/SlowFast.pdparams')
    weights = zoo.get(entry, str(tmp_path / 'w'), file=str(tmp_path / 'SlowFast_8*8.pdparams'))
    assert_same_weights(weights + '.pdparams', state)
    assert not os.path.exists(tmp_path / 'w' / 'downloads')


def test_the_registry_names_every_published_checkpoint_with_a_config_that_builds_it():
    """Each entry: the publisher's address of a file the converter reads, a shipped config of the same kind of
    network (Slow or SlowFast, depth, sampling in the file name), and the publisher's figures."""
    result = subprocess.run([sys.executable, tool_path('zoo.py'), 'list'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    names = [e.name for e in zoo.ENTRIES]
    assert len(set(names)) == len(names) >= 12
    for entry in zoo.ENTRIES:
        line = next(line for line in result.stdout.splitlines() if line.startswith(entry.name + ' '))
        assert entry.url in line and entry.config in line and f'{entry.top1:.2f}' in line
        assert entry.url.startswith(tuple(f'https://{host}/' for host in
                                          ('dl.fbaipublicfiles.com', 'videotag.bj.bcebos.com')))
        assert os.path.splitext(entry.url)[1] in ('.pkl', '.pyth', '.pdparams') and entry.source in zoo.PAGES
        model = parse_config(os.path.join(ROOT, entry.config), []).MODEL
        file_name = os.path.basename(entry.url).upper()
        assert model.name == ('SLOW' if 'SLOW_' in file_name or 'SLOWONLY' in file_name else 'SLOWFAST'), entry
        assert model.depth == (101 if 'R101' in file_name else 50), entry
        frames, stride = map(int, (re.search(r'(\d+)x(\d+)', entry.name) or
                                   re.search(r'(\d+)X(\d+)', file_name)).groups())
        assert (model.num_frames // model.alpha, model.sampling_rate * model.alpha) == (frames, stride), entry
        assert 60 < entry.top1 < entry.top5 < 100


def test_the_command_line_exits_with_the_weights_status(tmp_path):
    result = subprocess.run([sys.executable, tool_path('zoo.py'), 'get', 'no-such-model', '--out', str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 4 and 'no published checkpoint named' in result.stdout + result.stderr
    logging.getLogger('zoo').handlers.clear()


def test_a_disk_that_fills_during_a_download_keeps_the_part_for_the_next_run(tmp_path, server):
    """The file-size limit (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) stops the download half way: the error
    names the part, its folder and what is free, and says to run the command again, which resumes it."""
    import resource

    from errors import OutputError

    entry, state = entry_for(tmp_path, server, 'caffe2')
    data = server.files['SLOWFAST_4x16_R50.pkl']
    out = str(tmp_path / 'weights')
    part = os.path.join(out, 'downloads', 'SLOWFAST_4x16_R50.pkl.part')
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(data) // 3, hard))
    try:
        with pytest.raises(OutputError) as error:
            zoo.get(entry, out)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(error.value).startswith(f'cannot write {part}: File too large')
    assert str(error.value).endswith('the part is kept: free some space, then run the same command again to resume')
    assert os.path.getsize(part) == len(data) // 3 and open(part, 'rb').read() == data[:len(data) // 3]
    weights = zoo.get(entry, out)  # as the message says: the same command, resumed
    assert server.requests[-1][1] == f'bytes={len(data) // 3}-'
    assert_same_weights(weights + '.pdparams', state)
