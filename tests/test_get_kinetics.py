"""tools/data/get_kinetics.py against a server on 127.0.0.1 that serves a small archive in the CVDF layout (path lists,
.tar.gz parts of tiny real videos, annotation CSVs, the replacement archive, a plain tar under a .tar.gz name), with
faults: a part that 404s, one cut short once, one whose gzip stream is corrupt once and one always, a run killed
mid-part. The lists it writes are compared with lists computed here from the generated annotations."""
import collections
import csv
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import ROOT, parse_printed, shell_words, tool_path
from video_lists import KINETICS400_LABELS

CLASSES = ['abseiling', 'air drumming', 'archery']  # Kinetics-400 classes: the lists keep their K400 ids


class Archive(BaseHTTPRequestHandler):
    """``server.files[path]`` with Range (206), If-Range and HEAD; ``server.faults[path]``: 'missing' (404),
    'cut once' (the first GET announces the whole size and sends half), 'corrupt once' (the first GET sends the gzip
    stream with bytes flipped), 'corrupt' (always), 'slow' (64 KiB a tenth of a second)."""

    def do_HEAD(self):  # noqa: N802 (http.server's name)
        self.respond(body=False)

    def do_GET(self):  # noqa: N802
        self.respond(body=True)

    def respond(self, body):
        path = self.path.split('?')[0]
        data, fault = self.server.files.get(path), self.server.faults.get(path)
        if body:
            self.server.gets.append((path, self.headers.get('Range')))
        if data is None or fault == 'missing':
            self.send_error(404)
            return
        first = body and sum(1 for p, _ in self.server.gets if p == path) == 1
        if fault == 'corrupt' or (fault == 'corrupt once' and first):
            data = data[:len(data) // 2] + bytes(b ^ 0x5A for b in data[len(data) // 2:len(data) // 2 + 64]) + \
                data[len(data) // 2 + 64:]
        etag = '"' + hashlib.sha1(self.server.files[path]).hexdigest() + '"'
        start = 0
        asked = self.headers.get('Range')
        if asked and self.headers.get('If-Range') in (None, etag):
            start = int(asked.split('=')[1].split('-')[0])
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else:
            self.send_response(200)
        self.send_header('ETag', etag)
        self.send_header('Content-Length', str(len(data) - start))
        self.end_headers()
        if not body:
            return
        end = len(data) // 2 if fault == 'cut once' and first else len(data)
        for offset in range(start, end, 1 << 16):
            self.wfile.write(data[offset:min(end, offset + (1 << 16))])
            if fault == 'slow':
                time.sleep(0.1)
        if end < len(data):
            self.close_connection = True

    def log_message(self, *args):
        pass


def tiny_video(seed):
    """A real 8-frame H.264 clip's bytes."""
    import numpy as np

    from video_io import write_video

    folder = os.path.join(os.environ.get('TMPDIR', '/tmp'), f'gk_video_{os.getpid()}_{seed}.mp4')
    frames = [np.full((32, 48, 3), (seed * 40 + i * 8) % 256, np.uint8) for i in range(8)]
    write_video(folder, frames, 30)
    data = open(folder, 'rb').read()
    os.remove(folder)
    return data


def tar_of(members, compress=True):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz' if compress else 'w') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def clip_name(i, split):
    return f'{split[:2]}{i:09d}', 10 * i  # an 11-character YouTube id, a start second


@pytest.fixture
def archive():
    """The server, with K400 train (5 parts: one 404s, one a plain tar) and val (2 parts), annotations with 2
    clips per split the archive lacks, and 2 replacements (one for a train video that is there)."""
    video, replacement = tiny_video(1), tiny_video(2)
    files, rows = {}, {}
    layout = {'train': [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9, 10], [11]], 'val': [[0, 1, 2], [3, 4]]}
    for split, parts in layout.items():
        urls, rows[split] = [], []
        for p, clips in enumerate(parts):
            members = {}
            for i in clips:
                yid, start = clip_name(i, split)
                name = f'{yid}_{start:06d}_{start + 10:06d}.mp4'
                members[name if p % 2 else f'{split}/{name}'] = video  # with and without a folder
                rows[split].append((CLASSES[i % 3], yid, start, start + 10))
            path = f'/kinetics/400/{split}/part_{p}.tar.gz'
            files[path] = tar_of(members, compress=not (split == 'train' and p == 2))  # a plain tar, misnamed
            urls.append('https://s3.amazonaws.com/kinetics' + path[len('/kinetics'):])
        for i in (90, 91):  # annotated, in no part
            yid, start = clip_name(i, split)
            rows[split].append((CLASSES[0], yid, start, start + 10))
        files[f'/kinetics/400/{split}/k400_{split}_path.txt'] = ('\n'.join(urls) + '\n').encode()
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split'])
        writer.writerows([*row, split] for row in rows[split])
        files[f'/kinetics/400/annotations/{split}.csv'] = text.getvalue().encode()
    yid, start = clip_name(4, 'train')
    files['/kinetics/400/replacement_for_corrupted_k400.tgz'] = tar_of({
        f'replacement_for_corrupted_k400/{yid}_{start:06d}_{start + 10:06d}.mp4': replacement,
        'replacement_for_corrupted_k400/zz000000099_000990_001000.mp4': replacement})
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Archive)
    httpd.files, httpd.faults, httpd.gets = files, {}, []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.url = f'http://127.0.0.1:{httpd.server_address[1]}/kinetics'
    httpd.rows, httpd.video, httpd.replacement = rows, video, replacement
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def command(server, out, *extra):
    return [sys.executable, tool_path('get_kinetics.py'), '--dataset', 'k400', '--out', str(out), '--mirror',
            server.url, '--connections', '3'] + [str(e) for e in extra]


def run(server, out, *extra, expect=0):
    result = subprocess.run(command(server, out, *extra), capture_output=True, text=True, timeout=300, cwd=ROOT)
    log = result.stdout + result.stderr
    assert result.returncode == expect, log[-4000:]
    return log


def expected_list(server, out, split, parts_here):
    """``path,label`` rows computed from the generated annotations: the clips of the parts that are here, in
    annotation order, with Kinetics-400 ids."""
    ids = {name: i for i, name in enumerate(open(KINETICS400_LABELS).read().splitlines())}
    here = {i for part in parts_here for i in part}
    rows = []
    for n, (label, yid, start, end) in enumerate(server.rows[split]):
        if n in here:
            rows.append(f'{out}/videos/{split}/{yid}_{start:06d}_{end:06d}.mp4,{ids[label]}')
    return rows


def read_rows(path):
    return [line for line in open(path).read().splitlines() if line]


def test_a_split_downloads_extracts_replaces_and_lists_and_a_rerun_does_nothing_twice(archive, tmp_path):
    out = tmp_path / 'k400'
    archive.faults.update({'/kinetics/400/train/part_4.tar.gz': 'missing',
                           '/kinetics/400/train/part_1.tar.gz': 'corrupt once',
                           '/kinetics/400/val/part_1.tar.gz': 'cut once'})
    log = run(archive, out, '--splits', 'train', 'val', expect=9)
    # the missing part is named by address, the rest is all here
    assert f'{archive.url}/400/train/part_4.tar.gz: HTTP 404' in log
    assert 'part_1.tar.gz does not extract' in log and 'downloading it again' in log
    assert f'{archive.url}/400/val/part_1.tar.gz: the download stopped after' in log
    log = run(archive, out, '--splits', 'train', 'val', expect=9)  # the cut part resumes; the 404 stays
    resumed = [r for p, r in archive.gets if p == '/kinetics/400/val/part_1.tar.gz']
    assert resumed[0] is None and resumed[1] and resumed[1].startswith('bytes=') and resumed[1] != 'bytes=0-'
    train_parts = [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9, 10]]
    assert read_rows(out / 'lists' / 'train.csv') == expected_list(archive, out, 'train', train_parts)
    assert read_rows(out / 'lists' / 'val.csv') == expected_list(archive, out, 'val', [[0, 1, 2], [3, 4]])
    assert open(out / 'lists' / 'classes.txt').read() == open(KINETICS400_LABELS).read()
    # the replacement superseded the corrupted train video; the other waits for its video
    yid, start = clip_name(4, 'train')
    assert (out / 'videos' / 'train' / f'{yid}_{start:06d}_{start + 10:06d}.mp4').read_bytes() == archive.replacement
    assert os.listdir(out / 'replacement') == ['zz000000099_000990_001000.mp4']
    # no archive is left, no video twice, nothing half-written
    assert not list((out / 'archives').rglob('*.tar.gz'))
    assert sorted(os.listdir(out / 'videos' / 'val')) == sorted(p.rsplit('/', 1)[1].split(',')[0] for p in
                                                                 expected_list(archive, out, 'val', [[0, 1, 2], [3, 4]]))
    gets = len(archive.gets)
    archive.faults.clear()
    log = run(archive, out, '--splits', 'train', 'val')  # only the part that was missing comes now
    new = [p for p, _ in archive.gets[gets:]]
    assert [p for p in new if p.endswith('.tar.gz')] == ['/kinetics/400/train/part_4.tar.gz']
    assert read_rows(out / 'lists' / 'train.csv') == expected_list(archive, out, 'train', train_parts + [[11]])
    # the commands it prints run as printed (through their scripts' own parsers)
    printed = [line.strip() for line in log.splitlines() if line.startswith('    python ')]
    assert [line.split()[1] for line in printed] == ['tools/weights/zoo.py', 'eval.py', 'train.py']
    sys.path.insert(0, os.path.dirname(tool_path('zoo.py')))
    import zoo
    words = shell_words(printed[0], ROOT)
    assert words[2] == 'get' and zoo.find(words[3]).name == words[3] and words[4:] == ['--out', 'weights']
    cfg, _ = parse_printed(printed[1], ROOT)
    assert cfg.TEST.filelist == str(out / 'lists' / 'val.csv') and cfg.TEST.target_size == 256
    cfg, _ = parse_printed(printed[2], ROOT)
    assert (cfg.TRAIN.filelist, cfg.VALID.filelist, cfg.MODEL.num_classes) == (
        str(out / 'lists' / 'train.csv'), str(out / 'lists' / 'val.csv'), 400)


def test_a_part_that_never_extracts_is_downloaded_twice_then_named(archive, tmp_path):
    archive.faults['/kinetics/400/val/part_0.tar.gz'] = 'corrupt'
    log = run(archive, tmp_path / 'k', '--splits', 'val', expect=9)
    assert [p for p, _ in archive.gets].count('/kinetics/400/val/part_0.tar.gz') == 2
    assert f'{archive.url}/400/val/part_0.tar.gz does not extract after a second download' in log
    assert read_rows(tmp_path / 'k' / 'lists' / 'val.csv') == expected_list(archive, tmp_path / 'k', 'val', [[3, 4]])


def test_classes_and_max_parts_make_a_small_trial(archive, tmp_path):
    out = tmp_path / 'trial'
    run(archive, out, '--splits', 'val', '--max_parts', 1, '--classes', 'archery', 'abseiling')
    assert [p for p, _ in archive.gets if p.endswith('.tar.gz')] == ['/kinetics/400/val/part_0.tar.gz']
    kept = [i for i in (0, 1, 2) if CLASSES[i % 3] in ('archery', 'abseiling')]
    assert read_rows(out / 'lists' / 'val.csv') == expected_list(archive, out, 'val', [kept])
    log = run(archive, tmp_path / 'bad', '--splits', 'val', '--classes', 'juggling fire', expect=3)
    assert '--classes: juggling fire not in' in log


def test_killed_mid_part_it_resumes_without_downloading_a_byte_twice(archive, tmp_path):
    big = tar_of({f'va{i:09d}_{10 * i:06d}_{10 * i + 10:06d}.mp4': os.urandom(1 << 20) for i in (0, 1)})
    archive.files['/kinetics/400/val/part_0.tar.gz'] = big  # 2 MiB, served slowly
    archive.faults['/kinetics/400/val/part_0.tar.gz'] = 'slow'
    out = tmp_path / 'k'
    process = subprocess.Popen(command(archive, out, '--splits', 'val'), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=ROOT)
    part = out / 'archives' / 'val' / 'part_0.tar.gz.part'
    deadline = time.time() + 60
    while not (part.exists() and part.stat().st_size > 300_000) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    have = part.stat().st_size
    assert 0 < have < len(big)
    archive.faults.clear()
    run(archive, out, '--splits', 'val')
    [second] = [r for p, r in archive.gets if p == '/kinetics/400/val/part_0.tar.gz'][1:]
    assert second == f'bytes={have}-'
    assert sorted(os.listdir(out / 'videos' / 'val')) == sorted(
        [f'va{i:09d}_{10 * i:06d}_{10 * i + 10:06d}.mp4' for i in (0, 1)] +
        [f'{clip_name(i, "val")[0]}_{clip_name(i, "val")[1]:06d}_{clip_name(i, "val")[1] + 10:06d}.mp4'
         for i in (3, 4)])
    with tarfile.open(fileobj=io.BytesIO(big)) as tar:
        for member in tar:
            assert (out / 'videos' / 'val' / member.name).read_bytes() == tar.extractfile(member).read()
    assert not os.listdir(out / '.state' / 'staging')


def test_not_enough_room_stops_before_any_part(archive, tmp_path, monkeypatch):
    sys.path.insert(0, os.path.dirname(tool_path('get_kinetics.py')))
    import get_kinetics

    usage = collections.namedtuple('usage', 'total used free')
    monkeypatch.setattr(get_kinetics.shutil, 'disk_usage', lambda path: usage(10 ** 9, 10 ** 9 - 1000, 1000))
    with pytest.raises(get_kinetics.OutputError, match=r'free, the val split needs about .* of videos'):
        get_kinetics.main(['--out', str(tmp_path / 'k'), '--mirror', archive.url, '--splits', 'val'])
    assert not [p for p, _ in archive.gets if p.endswith('.tar.gz')]


def test_an_archive_is_told_by_its_content_and_hostile_names_stay_inside(tmp_path):
    sys.path.insert(0, os.path.dirname(tool_path('get_kinetics.py')))
    import get_kinetics

    members = {'../../evil_000000_000010.mp4': b'x', '/abs/ab000000001_000000_000010.mp4': b'y',
               'sub/ab000000002_000000_000010.mp4': b'z', 'readme.txt': b'not a video'}
    for compress in (True, False):
        path = tmp_path / f'a{compress}.tar.gz'
        path.write_bytes(tar_of(members, compress))
        dest = tmp_path / f'out{compress}'
        names = get_kinetics.extract(str(path), str(dest), str(tmp_path / 'staging'), None)
        assert sorted(names) == sorted(os.listdir(dest)) == sorted(
            ['evil_000000_000010.mp4', 'ab000000001_000000_000010.mp4', 'ab000000002_000000_000010.mp4'])
    assert not (tmp_path.parent / 'evil_000000_000010.mp4').exists()
    cut = tmp_path / 'cut.tar.gz'
    cut.write_bytes(gzip.compress(tar_of(members, False))[:-40])
    with pytest.raises(get_kinetics.BadArchive):
        get_kinetics.extract(str(cut), str(tmp_path / 'o'), str(tmp_path / 'staging'), None)


def test_resize_stores_the_re_encoded_set_and_check_reports_each_list(archive, tmp_path):
    import cv2

    yid, start = clip_name(9, 'val')
    garbage = f'{yid}_{start:06d}_{start + 10:06d}.mp4'  # annotated, in a part, not a video
    archive.files['/kinetics/400/val/part_1.tar.gz'] = tar_of({
        **{f'{clip_name(i, "val")[0]}_{clip_name(i, "val")[1]:06d}_{clip_name(i, "val")[1] + 10:06d}.mp4':
           archive.video for i in (3, 4)}, garbage: b'not a video'})
    archive.rows['val'].append(('archery', yid, start, start + 10))
    text = io.StringIO()
    csv.writer(text).writerows([['label', 'youtube_id', 'time_start', 'time_end', 'split']] +
                               [[*row, 'val'] for row in archive.rows['val']])
    archive.files['/kinetics/400/annotations/val.csv'] = text.getvalue().encode()
    out = tmp_path / 'k'
    log = run(archive, out, '--splits', 'val', '--resize', 16, '--check', '--workers', 2)
    names = sorted(os.listdir(out / 'videos' / 'val'))
    assert garbage not in names and len(names) == 5
    for name in names:  # 48x32 -> 24x16, H.264 with its keyframes
        capture = cv2.VideoCapture(str(out / 'videos' / 'val' / name))
        ok, frame = capture.read()
        assert ok and frame.shape[:2] == (16, 24)
    assert not os.listdir(out / '.state' / 'originals' / 'val') and not (out / 'originals').exists()
    assert f'{garbage} does not decode' in log
    assert read_rows(out / 'lists' / 'val.csv') == expected_list(archive, out, 'val', [[0, 1, 2], [3, 4]])
    assert garbage.split('_')[0] in (out / 'lists' / 'missing_val.csv').read_text()
    report = json.loads((out / 'lists' / 'check_val.json').read_text())
    assert report['checked'] == 5 and not report['dropped']
    [line] = [line.split() for line in log.splitlines() if line.split()[:1] == ['val'] and line.split()[1].isdigit()]
    assert line[1:6] == ['8', '5', '3', '0', '1']  # annotated, found, missing, replaced, unreadable


def test_a_run_killed_inside_an_extraction_goes_on_from_its_archive(archive, tmp_path):
    """What SIGKILL during an extraction leaves: the verified archive, some of its videos in place, one half-written in
    the staging folder, no done mark. The rerun extracts the part again from the archive it has (no download), and
    every video ends whole, once."""
    out = tmp_path / 'k'
    data = archive.files['/kinetics/400/val/part_0.tar.gz']
    (out / 'archives' / 'val').mkdir(parents=True)
    (out / 'archives' / 'val' / 'part_0.tar.gz').write_bytes(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [m for m in tar if m.isfile()]
        first = os.path.basename(members[0].name)
        (out / 'videos' / 'val').mkdir(parents=True)
        (out / 'videos' / 'val' / first).write_bytes(tar.extractfile(members[0]).read())
    (out / '.state' / 'staging').mkdir(parents=True)
    (out / '.state' / 'staging' / os.path.basename(members[1].name)).write_bytes(b'half')
    run(archive, out, '--splits', 'val')
    assert '/kinetics/400/val/part_0.tar.gz' not in [p for p, _ in archive.gets]
    assert not os.listdir(out / '.state' / 'staging') and not (out / 'archives' / 'val' / 'part_0.tar.gz').exists()
    for name in os.listdir(out / 'videos' / 'val'):
        assert (out / 'videos' / 'val' / name).read_bytes() == archive.video
    assert read_rows(out / 'lists' / 'val.csv') == expected_list(archive, out, 'val', [[0, 1, 2], [3, 4]])


def test_kinetics_700_2020_comes_from_its_own_layout(archive, tmp_path):
    for path in list(archive.files):
        if path.startswith('/kinetics/400/val/') or path == '/kinetics/400/annotations/val.csv':
            moved = path.replace('/kinetics/400/', '/kinetics/700_2020/').replace('k400_val', 'k700_2020_val')
            archive.files[moved] = archive.files.pop(path).replace(b'/kinetics/400/', b'/kinetics/700_2020/')
    out = tmp_path / 'k700'
    run(archive, out, '--dataset', 'k700-2020', '--splits', 'val')
    assert {p for p, _ in archive.gets if p.endswith('.tar.gz')} == {'/kinetics/700_2020/val/part_0.tar.gz',
                                                                      '/kinetics/700_2020/val/part_1.tar.gz'}
    assert read_rows(out / 'lists' / 'val.csv') == expected_list(archive, out, 'val', [[0, 1, 2], [3, 4]])


def test_ctrl_c_stops_the_downloads_under_way_at_once_and_keeps_their_parts(archive, tmp_path):
    big = tar_of({f'va{i:09d}_{10 * i:06d}_{10 * i + 10:06d}.mp4': os.urandom(1 << 20) for i in (0, 1, 2, 3)})
    for p in (0, 1):
        archive.files[f'/kinetics/400/val/part_{p}.tar.gz'] = big  # 4 MiB each, served at 640 KiB/s
        archive.faults[f'/kinetics/400/val/part_{p}.tar.gz'] = 'slow'
    out = tmp_path / 'k'
    process = subprocess.Popen(command(archive, out, '--splits', 'val'), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    parts = [out / 'archives' / 'val' / f'part_{p}.tar.gz.part' for p in (0, 1)]
    deadline = time.time() + 60
    while not all(p.exists() and p.stat().st_size > 200_000 for p in parts) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    start = time.time()
    process.wait(timeout=30)
    assert process.returncode == 130 and time.time() - start < 5  # not after the parts' 6 s
    have = [p.stat().st_size for p in parts]
    assert all(0 < size < len(big) for size in have)  # kept, to resume
    archive.faults.clear()
    run(archive, out, '--splits', 'val')
    for p, size in enumerate(have):  # each part goes on from its byte
        assert [r for path, r in archive.gets if path == f'/kinetics/400/val/part_{p}.tar.gz'][1:] == [f'bytes={size}-']


def test_a_split_none_of_whose_parts_can_be_had_is_named_by_address(archive, tmp_path):
    for p in (0, 1):
        archive.faults[f'/kinetics/400/val/part_{p}.tar.gz'] = 'missing'
    log = run(archive, tmp_path / 'k', '--splits', 'val', expect=9)
    line = [line for line in log.splitlines() if 'ERROR' in line][-1]
    assert '2 parts are not here' in line and f'{archive.url}/400/val/part_0.tar.gz: HTTP 404' in line
    assert 'no lists could be written' in line and 'Traceback' not in log
