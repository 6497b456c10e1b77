"""tools/weights/zoo.py without the internet: a server on 127.0.0.1 serves checkpoints written in each publisher's
format (complete, cut short, as an HTML page, without Range support), and every way a download goes wrong is named
with the address."""
import hashlib
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

from helpers import (ROOT, TINY, assert_same_weights, parse_printed, random_state, repository_copy, tool_path,
                     write_published)
from config_utils import parse_config

import model_zoo as zoo  # noqa: E402


class Files(BaseHTTPRequestHandler):
    """Serves ``server.files`` by path under a mode prefix, with an ETag naming the content: /ok/ (Range and If-Range
    honoured), /cut/ (announces the whole size, sends half, closes), /norange/ (Range ignored), /noifrange/ (Range
    honoured, If-Range ignored), /nolength/ (no Content-Length; sends half, closes), /html/ (a login page); anything
    else 404."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append((self.path, self.headers.get('Range')))
        self.server.if_ranges.append(self.headers.get('If-Range'))
        mode, _, name = self.path.strip('/').partition('/')
        data = self.server.files.get(name)
        if data is None or mode not in ('ok', 'cut', 'norange', 'noifrange', 'nolength', 'html'):
            self.send_error(404)
            return
        etag = '"' + hashlib.sha1(data).hexdigest() + '"'
        if mode == 'nolength':
            self.send_response(200)
            self.send_header('ETag', etag)
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.close_connection = True
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
        if asked and mode == 'ok' and self.headers.get('If-Range') not in (None, etag):
            asked = None  # another version than the client's part: the whole file (RFC 9110 13.1.5)
        if asked and mode in ('ok', 'noifrange'):
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
        self.send_header('ETag', etag)
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
    httpd.files, httpd.requests, httpd.if_ranges = {}, [], []
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
    protocol = zoo.Protocol(8, 2, 4, 224, 224, 'test', 'this test')  # the tiny network, tested at 224
    entry = zoo.Entry(f'test-{fmt}', 'test', f'{server.url}/ok/{name}', config, 75.0, 92.0, protocol)
    return entry, state


def printed_lines(log):
    """The command lines ``zoo.get`` printed (indented, after the summary)."""
    return [line.strip() for line in log.splitlines() if line.startswith('    python ')]


def run_the_printed_commands(log, entry, weights, folder):
    """As a user would: the eval line through eval.py's command line, make_lists run on class folders, then the
    fine-tune line (its class count substituted by the shell) through train.py's."""
    evaluate, make, finetune = printed_lines(log)
    cfg, args = parse_printed(evaluate, ROOT)
    assert args.weights == weights and cfg.TEST.filelist == 'data/val.csv'
    assert cfg.TEST.target_size == entry.protocol.short_side == cfg.INFER.target_size
    user = repository_copy(folder)
    for c in ('jump', 'walk', 'wave'):
        for i in range(4):
            os.makedirs(os.path.join(user, 'my_videos', c), exist_ok=True)
            open(os.path.join(user, 'my_videos', c, f'{i}.mp4'), 'wb').close()
    result = subprocess.run(['bash', '-c', make.replace('python ', f'{sys.executable} ', 1)], cwd=user,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    cfg, args = parse_printed(finetune, user)
    assert args.weights == weights and cfg.MODEL.num_classes == 3
    assert (cfg.DATA.label_map, cfg.TRAIN.filelist, cfg.VALID.filelist) == (
        'data/mine/classes.txt', 'data/mine/train.csv', 'data/mine/val.csv')
    assert all(os.path.isfile(os.path.join(user, p)) for p in (cfg.DATA.label_map, cfg.TRAIN.filelist))
    assert cfg.TEST.target_size == 256  # the publisher's test size is the eval line's alone


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
    assert f'SHA-256 {zoo.sha256_of(download)}' in log
    run_the_printed_commands(log, entry, weights, tmp_path / 'user')
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


@pytest.mark.parametrize('mode', ['ok', 'noifrange'])
def test_a_file_that_changed_on_the_server_between_two_attempts_is_downloaded_again_whole(tmp_path, server, mode):
    """The part came from one version; the file changes; the resume sends If-Range with the part's ETag, so the
    server sends the new version whole (or, when it ignores If-Range, its ETag shows the change): never a file
    assembled from two versions."""
    entry, _ = entry_for(tmp_path, server, 'caffe2')
    name = os.path.basename(entry.url)
    out = str(tmp_path / 'weights')
    with pytest.raises(zoo.DownloadError, match='run the same command again to resume'):
        zoo.get(entry, out, url=entry.url.replace('/ok/', '/cut/'))
    first = server.files[name]
    (tmp_path / 'v2').mkdir()
    state = random_state(tiny_config(tmp_path / 'v2')[1], seed=99)  # a new version of the file
    write_published('caffe2', state, tmp_path / 'v2' / name)
    server.files[name] = (tmp_path / 'v2' / name).read_bytes()
    assert server.files[name][:len(first) // 2] != first[:len(first) // 2]
    weights = zoo.get(entry, out, url=entry.url.replace('/ok/', f'/{mode}/'))
    assert server.if_ranges[-1 if mode == 'ok' else -2] == '"' + hashlib.sha1(first).hexdigest() + '"'
    download = os.path.join(out, 'downloads', name)
    assert open(download, 'rb').read() == server.files[name]
    assert_same_weights(weights + '.pdparams', state)
    assert not os.path.exists(download + '.part') and not os.path.exists(download + '.part.version')


def test_a_download_cut_short_without_a_content_length_is_moved_aside_and_fetched_again(tmp_path, server):
    entry, state = entry_for(tmp_path, server, 'caffe2')
    out = str(tmp_path / 'weights')
    download = os.path.join(out, 'downloads', os.path.basename(entry.url))
    with pytest.raises(zoo.DownloadError) as error:
        zoo.get(entry, out, url=entry.url.replace('/ok/', '/nolength/'))
    assert f'{download}: not a Caffe2 checkpoint, or cut short' in str(error.value)
    aside = download[:-len('.pkl')] + '.unreadable.pkl'
    assert str(error.value).endswith(f'it was moved to {aside}; run the same command again to download it again')
    assert not os.path.exists(download) and os.path.exists(aside)
    weights = zoo.get(entry, out)  # the same command again (from a server that sends it whole)
    assert_same_weights(weights + '.pdparams', state)
    with pytest.raises(zoo.WeightsError, match='not a Caffe2 checkpoint'):  # a file of the user's: not moved
        zoo.get(entry, out, file=aside)
    assert os.path.exists(aside)


# Each file's test protocol as its publisher's config gives it (facebookresearch/SlowFast at 287ec00:
# configs/Kinetics/c2/*.yaml and configs/Kinetics/pytorchvideo/*.yaml with slowfast/config/defaults.py's 10 x 3 views
# and mean 0.45 / std 0.225, test frames scaled to TEST_CROP_SIZE (kinetics.py) or TRAIN_JITTER_SCALES[0]
# (ptv_datasets.py); PaddlePaddle/PaddleVideo at ed245e9: configs/recognition/slowfast/slowfast.yaml and
# slowfast_multigrid.yaml, whose JitterScale / MultiCrop test at 224 since f55800e1): name -> (frames, sampling rate,
# alpha (1: Slow-only), short side, crop, clips, crops, the config's path).
PUBLISHED_PROTOCOLS = {
    'pyslowfast-slowfast-4x16-r50': (32, 2, 8, 256, 256, 10, 3, 'configs/Kinetics/c2/SLOWFAST_4x16_R50.yaml'),
    'pyslowfast-slowfast-8x8-r50': (32, 2, 4, 256, 256, 10, 3, 'configs/Kinetics/c2/SLOWFAST_8x8_R50.yaml'),
    'pyslowfast-slow-4x16-r50': (4, 16, 1, 256, 256, 10, 3, 'configs/Kinetics/c2/SLOW_4x16_R50.yaml'),
    'pyslowfast-slow-8x8-r50': (8, 8, 1, 256, 256, 10, 3, 'configs/Kinetics/c2/SLOW_8x8_R50.yaml'),
    'pytorchvideo-slowfast-4x16-r50': (32, 2, 8, 256, 256, 10, 3, 'configs/Kinetics/pytorchvideo/SLOWFAST_4x16_R50.yaml'),
    'pytorchvideo-slowfast-r50': (32, 2, 4, 256, 256, 10, 3, 'configs/Kinetics/pytorchvideo/SLOWFAST_8x8_R50.yaml'),
    'pytorchvideo-slowfast-r101': (32, 2, 4, 256, 256, 10, 3, 'configs/Kinetics/pytorchvideo/SLOWFAST_8x8_R101.yaml'),
    'pytorchvideo-slowfast-16x8-r101-50-50': (64, 2, 4, 256, 256, 10, 3,
                                              'configs/Kinetics/pytorchvideo/SLOWFAST_16x8_R101_50_50.yaml'),
    'pytorchvideo-slow-r50': (8, 8, 1, 256, 256, 10, 3, 'configs/Kinetics/pytorchvideo/SLOW_8x8_R50.yaml'),
    'pytorchvideo-slow-4x16-r50': (4, 16, 1, 256, 256, 10, 3, 'configs/Kinetics/pytorchvideo/SLOW_4x16_R50.yaml'),
    'paddlevideo-slowfast-4x16': (32, 2, 8, 256, 256, 10, 3, 'configs/recognition/slowfast/slowfast.yaml'),
    'paddlevideo-slowfast-8x8': (32, 2, 4, 224, 224, 10, 3, 'configs/recognition/slowfast/slowfast_multigrid.yaml'),
}


def test_each_entry_s_printed_eval_command_tests_as_its_publisher_did():
    """The eval line ``get`` prints for each entry, through eval.py's own command line, gives the publisher's
    frames, stride, frame-rate ratio, short side (= crop: 3 crops of it), views and normalisation; and
    docs/MODEL_ZOO.md shows that protocol, its source and the command."""
    assert set(PUBLISHED_PROTOCOLS) == {e.name for e in zoo.ENTRIES}
    page = open(os.path.join(ROOT, 'docs', 'MODEL_ZOO.md'), encoding='utf-8').read()
    protocols = page.split('## Test protocols', 1)[1].split('\n## ', 1)[0]
    for entry in zoo.ENTRIES:
        frames, rate, alpha, short, crop, clips, crops, source = PUBLISHED_PROTOCOLS[entry.name]
        p = entry.protocol
        assert (p.frames, p.rate, p.alpha, p.short_side, p.crop, p.views) == (frames, rate, alpha, short, crop,
                                                                              (clips, crops)), entry.name
        assert p.source.endswith('/' + source), entry.name
        [evaluate] = [line for line in printed_lines('\n' + zoo.commands(entry, f'weights/{entry.name}'))
                      if 'eval.py' in line]
        cfg, _ = parse_printed(evaluate, ROOT)
        m, t = cfg.MODEL, cfg.TEST
        assert (m.num_frames, m.sampling_rate, m.alpha if m.name == 'SLOWFAST' else 1) == (frames, rate, alpha)
        assert (t.target_size, t.num_ensemble_views, t.num_spatial_crops) == (short, clips, crops), entry.name
        assert short == crop and m.image_mean == [0.45] * 3 and m.image_std == [0.225] * 3
        [row] = [line for line in protocols.splitlines() if line.startswith(f'| `{entry.name}` |')]
        assert f'{frames} x {rate}' in row and f'| {short} / {crop} |' in row and source in row, (entry.name, row)
        assert (' '.join(f'`-o {o}`' for o in zoo.protocol_overrides(entry)) or 'none') in row, (entry.name, row)


def test_the_figures_a_config_cites_are_its_publishers():
    """A top-1 figure in a shipped config's opening comment (a number in 60-90 with a decimal point) is one a
    publisher gives for a checkpoint of that config (zoo.ENTRIES)."""
    import glob

    cited = 0
    for path in [os.path.join(ROOT, 'slowfast.yaml')] + glob.glob(os.path.join(ROOT, 'configs', '*.yaml')):
        lines = open(path, encoding='utf-8').read().splitlines()
        head = ' '.join(line for line in lines[:next(i for i, line in enumerate(lines) if not line.startswith('#'))])
        config = os.path.relpath(path, ROOT)
        published = {e.top1 for e in zoo.ENTRIES if e.config == config.replace('_multigrid', '')}
        for figure in re.findall(r'(?<![\d.])(\d\d\.\d+)(?![\d.])', head):
            if 60 <= float(figure) <= 90:
                cited += 1
                assert float(figure) in published, (config, figure, sorted(published))
    assert cited >= 6
