"""The data tools end to end, run as a user runs them."""
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import ROOT, in_mount_namespace, needs_ffmpeg, one_error_line, tool_path
from video_lists import read_video_list
from video_io import VideoReader


def run_tool(name, *args, expect=0):
    result = subprocess.run([sys.executable, tool_path(name)] + [str(a) for a in args],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS='ignore'),
                            timeout=300)
    assert result.returncode == expect, result.stdout + result.stderr
    return result.stdout + result.stderr


def mean_flow(path):
    """Mean (dy, dx) optical flow of the pixels that move, over a video."""
    with VideoReader(path, 30) as video:
        frames = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in video.frames()]
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0) for a, b in zip(frames, frames[1:])]
    flow = np.stack(flows).reshape(-1, 2)
    moving = flow[np.linalg.norm(flow, axis=1) > 0.5]
    return moving[:, 1].mean(), moving[:, 0].mean()


def assert_moves_along(path, expected):
    """The pixels that move in the video at ``path`` flow along the unit (dy, dx) ``expected``."""
    flow = mean_flow(path)
    axis = int(np.argmax(np.abs(expected)))
    assert np.sign(flow[axis]) == expected[axis] and abs(flow[axis]) > 2 * abs(flow[1 - axis]), (path, flow)


# ---- make_demo_data ----------------------------------------------------------------------------------------------

def test_make_demo_data_writes_a_motion_dataset_and_reuses_it(tmp_path):
    out = tmp_path / 'demo'
    args = ['--out', out, '--train_per_class', 2, '--val_per_class', 1, '--frames', 24]
    run_tool('make_demo_data.py', *args)
    classes = (out / 'classes.txt').read_text().split()
    assert classes == ['right', 'left', 'down', 'up']
    train = read_video_list(str(out / 'train.txt'), 4)
    val = read_video_list(str(out / 'val.txt'), 4)
    assert len(train) == 8 and len(val) == 4 and sorted({label for _, label in train}) == [0, 1, 2, 3]
    for path, label in val:
        with VideoReader(path, 30) as video:
            assert (video.num_frames, video.height, video.width) == (24, 96, 128)
        assert_moves_along(path, {'right': (0, 1), 'left': (0, -1), 'down': (1, 0), 'up': (-1, 0)}[classes[label]])

    stamp = os.path.getmtime(train[0][0])
    assert 'reusing the demo dataset' in run_tool('make_demo_data.py', *args)
    assert os.path.getmtime(train[0][0]) == stamp
    # an interrupted run (no DONE marker, a video missing) is completed, keeping the finished videos
    os.remove(out / 'DONE')
    os.remove(train[-1][0])
    run_tool('make_demo_data.py', *args)
    assert os.path.isfile(train[-1][0]) and os.path.getmtime(train[0][0]) == stamp and (out / 'DONE').exists()
    # other settings, or --fresh, regenerate
    run_tool('make_demo_data.py', *args[:-1], 16)
    with VideoReader(train[0][0], 30) as video:
        assert video.num_frames == 16


def test_make_demo_data_in_parallel_writes_the_same_files(tmp_path):
    args = ['--train_per_class', 2, '--val_per_class', 1, '--frames', 8]
    run_tool('make_demo_data.py', '--out', tmp_path / 'one', '--workers', 1, *args)
    run_tool('make_demo_data.py', '--out', tmp_path / 'two', '--workers', 2, *args)
    one = sorted(p.relative_to(tmp_path / 'one') for p in (tmp_path / 'one').rglob('*') if p.is_file())
    two = sorted(p.relative_to(tmp_path / 'two') for p in (tmp_path / 'two').rglob('*') if p.is_file())
    assert one == two and len([p for p in one if p.suffix == '.mp4']) == 12
    for rel in one:
        assert (tmp_path / 'one' / rel).read_bytes() == (tmp_path / 'two' / rel).read_bytes(), rel


def test_make_demo_data_never_replaces_a_folder_it_did_not_write(tmp_path):
    mine = tmp_path / 'my_dataset'
    mine.mkdir()
    (mine / 'train.txt').write_text('a.mp4 0\n')
    for extra in ([], ['--fresh']):
        log = run_tool('make_demo_data.py', '--out', mine, '--train_per_class', 1, '--val_per_class', 1, *extra,
                       expect=2)
        assert f'{mine} exists and was not written by this tool' in log
        assert sorted(os.listdir(mine)) == ['train.txt'] and (mine / 'train.txt').read_text() == 'a.mp4 0\n'


def test_make_demo_data_shuffle_frames_keeps_every_frame_in_another_order(tmp_path):
    from make_demo_data import make_video

    plain = make_video(5, 2, 48, 64, 16)
    shuffled = make_video(5, 2, 48, 64, 16, shuffle_frames=True)
    order = [next(i for i, frame in enumerate(plain) if np.array_equal(frame, s)) for s in shuffled]
    assert sorted(order) == list(range(16)) and order != list(range(16))
    run_tool('make_demo_data.py', '--out', tmp_path / 'shuffled', '--train_per_class', 1, '--val_per_class', 1,
             '--frames', 16, '--shuffle_frames')
    assert json.loads((tmp_path / 'shuffled' / 'settings.json').read_text())['shuffle_frames'] is True


# ---- make_heldout_data -------------------------------------------------------------------------------------------

def flow_moments(path):
    """Mean optical flow of a video about the frame centre: (curl, divergence, mean dy, mean dx)."""
    with VideoReader(path, 30) as video:
        frames = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in video.frames()]
    flow = np.mean([cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
                    for a, b in zip(frames, frames[1:])], axis=0)
    height, width = flow.shape[:2]
    y, x = np.mgrid[:height, :width]
    ry, rx = y - (height - 1) / 2, x - (width - 1) / 2  # image axes: y grows downwards, so curl > 0 is clockwise
    return ((rx * flow[..., 1] - ry * flow[..., 0]).mean(), (rx * flow[..., 0] + ry * flow[..., 1]).mean(),
            flow[..., 1].mean(), flow[..., 0].mean())


def test_make_heldout_data_kinds_move_as_their_class_names_say(tmp_path):
    signs = {'cw': lambda c, d, dy, dx: c > 0 and abs(c) > 3 * abs(d),
             'ccw': lambda c, d, dy, dx: c < 0 and abs(c) > 3 * abs(d),
             'zoom_in': lambda c, d, dy, dx: d > 0 and abs(d) > 3 * abs(c),
             'zoom_out': lambda c, d, dy, dx: d < 0 and abs(d) > 3 * abs(c),
             # pan names the camera's direction: the scene flows the opposite way
             'ne': lambda c, d, dy, dx: dx < 0 < dy, 'nw': lambda c, d, dy, dx: dy > 0 and dx > 0,
             'se': lambda c, d, dy, dx: dy < 0 and dx < 0, 'sw': lambda c, d, dy, dx: dy < 0 < dx}
    for kind in ('spin', 'pan', 'object'):
        out = tmp_path / kind
        run_tool('make_heldout_data.py', '--kind', kind, '--out', out, '--train_per_class', 1, '--val_per_class', 1,
                 '--size', 64, '--frames', 16)
        classes = (out / 'classes.txt').read_text().split()
        val = read_video_list(str(out / 'val.txt'), 4)
        assert len(read_video_list(str(out / 'train.txt'), 4)) == 4
        assert sorted(label for _, label in val) == [0, 1, 2, 3]
        for path, label in val:
            with VideoReader(path, 30) as video:
                assert (video.num_frames, video.height, video.width) == (16, 64, 64)
            if kind == 'object':  # only the blob moves: the flow of the pixels that move
                directions = {'east': (0, 1), 'west': (0, -1), 'south': (1, 0), 'north': (-1, 0)}
                assert_moves_along(path, directions[classes[label]])
            else:
                assert signs[classes[label]](*flow_moments(path)), (path, flow_moments(path))
    assert 'is not empty' in run_tool('make_heldout_data.py', '--kind', 'pan', '--out', out, expect=2)


# ---- check_videos ------------------------------------------------------------------------------------------------

def test_check_videos_drops_broken_videos_and_keeps_lines(videos, tmp_path):
    lines = [f'{videos["mp4"]} 1', f'{videos["zero"]} 2', f'{videos["truncated_mkv"]} 3', f'{videos["short"]} 4',
             f'{videos["missing"]} 0', f'{videos["garbage"]} 0', f'{videos["webm"]} 0']
    listing = tmp_path / 'train.txt'
    listing.write_text('\n'.join(lines) + '\n')
    report = tmp_path / 'report.json'
    log = run_tool('check_videos.py', listing, '--report', report, '--workers', 2)
    result = json.loads(report.read_text())
    reasons = {d['line']: d['reason'] for d in result['dropped']}
    assert set(reasons) == {2, 5, 6}
    assert reasons[2] == 'empty file (0 bytes)' and reasons[5] == 'file not found' and 'cannot open' in reasons[6]
    assert (tmp_path / 'train.txt.clean').read_text().splitlines() == [lines[0], lines[2], lines[3], lines[6]]
    # the half mkv is kept with the frames that decode; 20 frames < a 64-frame clip: kept, reported
    assert [s['line'] for s in result['short']] == [4] and result['damaged'] == []
    assert 'checked 7 videos: 4 kept, 3 dropped' in log

    run_tool('check_videos.py', listing, '--out', tmp_path / 'strict.txt', '--strict', '--min_frames', 30,
             '--workers', 1, expect=1)
    assert (tmp_path / 'strict.txt').read_text().splitlines() == [lines[0], lines[2], lines[6]]


@needs_ffmpeg
def test_check_videos_keeps_every_real_world_video_and_reports_damaged_packets(real_world, tmp_path):
    from videos import copy_packets

    gop = os.path.join(os.path.dirname(next(iter(real_world.values()))[0]), 'gop30.mp4')
    damaged = copy_packets(gop, str(tmp_path / 'damaged.mkv'), blank=[100, 101])
    lines = [f'{path} 0' for path, _ in real_world.values()] + [f'{damaged} 1']
    listing = tmp_path / 'real.txt'
    listing.write_text('\n'.join(lines) + '\n')
    report = tmp_path / 'report.json'
    log = run_tool('check_videos.py', listing, '--report', report, '--workers', 2)
    assert (tmp_path / 'real.txt.clean').read_text().splitlines() == lines  # nothing dropped
    result = json.loads(report.read_text())
    assert result['dropped'] == [] and result['short'] == []
    assert result['damaged'] == [{'path': damaged, 'line': len(lines), 'frames': 298, 'packets': 300}]
    assert f'checked {len(lines)} videos: {len(lines)} kept, 0 dropped' in log


def test_check_videos_rejects_a_bad_list(tmp_path):
    assert 'video list not found' in run_tool('check_videos.py', tmp_path / 'none.txt', expect=3)
    (tmp_path / 'bad.txt').write_text('a.mp4 1\nb.mp4 400\n')
    assert 'bad.txt:2: label 400 is outside [0, 400)' in run_tool('check_videos.py', tmp_path / 'bad.txt', expect=3)


# ---- resize_videos -----------------------------------------------------------------------------------------------

def test_resize_videos_converts_a_tree_and_resumes(videos, tmp_path):
    src = tmp_path / 'raw'
    (src / 'a').mkdir(parents=True)
    shutil.copy(videos['webm'], src / 'a' / 'one.webm')
    shutil.copy(videos['portrait'], src / 'two.mp4')
    shutil.copy(videos['garbage'], src / 'a' / 'bad.mkv')
    (src / 'notes.txt').write_text('not a video')
    (src / 'train.txt').write_text('a/one.webm 3\ntwo.mp4 1\na/bad.mkv 2\n')
    dst = tmp_path / 'small'

    log = run_tool('resize_videos.py', src, dst, '--short_side', 48, '--list', src / 'train.txt', '--workers', 2)
    assert '3 videos: 2 converted, 0 already done, 1 failed' in log and 'bad.mkv' in log
    assert read_video_list(str(dst / 'train.txt'), 400) == [(str(dst / 'a' / 'one.mp4'), 3),
                                                           (str(dst / 'two.mp4'), 1)]
    with VideoReader(str(dst / 'a' / 'one.mp4'), 30) as video:
        assert (video.height, video.width, video.num_frames, video.fps) == (48, 64, 300, 30.0)
    with VideoReader(str(dst / 'two.mp4'), 30) as video:
        assert (video.height, video.width, video.num_frames) == (64, 48, 90)

    stamp = os.path.getmtime(dst / 'two.mp4')
    log = run_tool('resize_videos.py', src, dst, '--short_side', 48, '--workers', 1)
    assert '3 videos: 0 converted, 2 already done, 1 failed' in log
    assert os.path.getmtime(dst / 'two.mp4') == stamp
    assert sorted((dst / 'videos.txt').read_text().split()) == ['a/one.mp4', 'two.mp4']


def keyframe_gaps(path):
    """Largest number of frames from one keyframe to the next, in presentation order (ffprobe's view, not ours)."""
    out = subprocess.run(['ffprobe', '-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts,flags',
                          '-of', 'csv=p=0', str(path)], capture_output=True, text=True, check=True).stdout
    packets = sorted((int(pts), 'K' in flags) for pts, flags in (line.split(',')[:2] for line in out.split()))
    keys = [i for i, (_, key) in enumerate(packets) if key] + [len(packets)]
    return max(b - a for a, b in zip(keys, keys[1:]))


@needs_ffmpeg
def test_resize_videos_puts_a_keyframe_every_gop_frames(videos, tmp_path):
    """--gop N: no run between keyframes longer than N frames (the default's, and 0 gives x264's own 250)."""
    import resize_videos

    src = tmp_path / 'raw'
    src.mkdir()
    shutil.copy(videos['webm'], src / 'one.webm')  # 300 frames
    for gop, at_most in ((8, 8), (resize_videos.GOP, resize_videos.GOP), (0, 250)):
        dst = tmp_path / f'gop{gop}'
        run_tool('resize_videos.py', src, dst, '--short_side', 48, '--gop', gop, '--workers', 1)
        gap = keyframe_gaps(dst / 'one.mp4')
        assert gap <= at_most and (gop == 0 or gap > at_most // 2), (gop, gap)
    assert keyframe_gaps(tmp_path / 'gop0' / 'one.mp4') > 32  # x264's own interval is far longer


@pytest.mark.slow
def test_benchmark_data_gop_measures_each_keyframe_interval(tmp_path):
    import benchmark_data

    result = run_tool('benchmark_data.py', '--measures', 'gop', '--repeats', 1, '--quick', '--video_dir',
                      tmp_path, '--json', tmp_path / 'gop.json')
    rows = json.loads((tmp_path / 'gop.json').read_text())['gops']
    assert [r['gop'] for r in rows] == [g or 250 for g in benchmark_data.GOPS]
    assert all(r['ms_per_clip'] > 0 for r in rows) and rows[-1]['bytes'] > rows[0]['bytes']
    for r in rows:
        assert keyframe_gaps(tmp_path / f'bench_256p_gop{r["gop"] if r["gop"] != 250 else "default"}.mp4') <= r['gop']
    assert 'speedup vs 250' in result


def test_resize_videos_rejects_list_entries_outside_the_source(videos, tmp_path):
    (tmp_path / 'src').mkdir()
    (tmp_path / 'list.txt').write_text(f'{videos["mp4"]} 0\n')
    log = run_tool('resize_videos.py', tmp_path / 'src', tmp_path / 'dst', '--list', tmp_path / 'list.txt', expect=3)
    assert 'are not under' in log


# ---- benchmark ---------------------------------------------------------------------------------------------------

def torch_engine():
    """The PyTorch row the benchmarks add when torch and pytorchvideo are installed."""
    from bench_common import torch_reference_available

    return {'PyTorch eager (pytorchvideo)'} if torch_reference_available() else set()


def test_benchmark_infer_times_every_engine_at_every_batch(tmp_path):
    out = run_tool('benchmark_infer.py', '--size', 64, '--batches', 1, 2, '--repeats', 1, '--rounds', 2, '--json',
                   tmp_path / 'infer.json', '-o', 'MODEL.width_per_group=8', '-o', 'MODEL.num_frames=8', '-o',
                   'MODEL.alpha=4', '-o', 'MODEL.beta=4', '-o', 'MODEL.crop_size=64', '-o', 'MODEL.num_classes=5')
    result = json.loads((tmp_path / 'infer.json').read_text())
    engines = {'Paddle dygraph', 'Paddle Inference (oneDNN)', 'Paddle Inference, export not rewritten'}
    engines |= torch_engine()
    assert {(r['engine'], r['batch']) for r in result['rows']} == {(e, b) for e in engines for b in (1, 2)}
    assert all(r['ms_per_view'] > 0 for r in result['rows']) and result['threads'] >= 1
    assert all(len(r['rounds']) == 2 and abs(r['ms_per_view'] - float(np.median(r['rounds']))) <= 0.1
               for r in result['rows'])
    assert '| Paddle Inference (oneDNN) | 2 |' in out and '1.00x' in out


@pytest.mark.slow
def test_benchmark_eval_measures_each_part_of_a_view_memory_and_pipes(tmp_path):
    """tools/analysis/benchmark_eval.py at toy scale: every measure runs, its parts add up, and the evaluation it
    runs keeps /dev/shm within the bound it reports."""
    small = ['MODEL.width_per_group=8', 'MODEL.crop_size=64', 'TEST.target_size=64', 'TEST.num_ensemble_views=2',
             'TEST.num_spatial_crops=2', 'TRAIN.target_size=64', 'TRAIN.min_size=72', 'TRAIN.max_size=80']
    run_tool('benchmark_eval.py', '--measures', 'pipes', 'memory', 'speed', 'train', 'needs', '--videos', 2,
             '--batch', 3, '--items', 4, '--rounds', 1, '--repeats', 1, '--train_steps', 1, '--train_batch', 2,
             '--config', os.path.join(ROOT, 'slowfast-single.yaml'), '--json', tmp_path / 'r.json',
             *[a for o in small for a in ('-o', o)])
    result = json.loads((tmp_path / 'r.json').read_text())
    assert [r['item'] for r in result['pipes']] == ['one view (4x16, 256)', 'a batch of 8 views']
    assert all(r['ms/item pipes'] > 0 and r['ms/item shared memory'] > 0 for r in result['pipes'])
    normalisation, *engines = result['speed']
    assert normalisation['max difference'] < 1e-5 and normalisation['ms model_inputs'] > 0
    assert [r['engine'] for r in engines] == ['Paddle Inference (the export)', 'Paddle dygraph']
    for r in engines:
        assert r['views'] == 2 * 4 and r['ms/view end to end'] >= r['ms/view network in the loop'] > 0
        parts = sum(r[f'ms/view {k}'] for k in ('loader wait', 'normalisation', 'network in the loop', 'rest'))
        assert abs(parts - r['ms/view end to end']) < 1e-6 and 0 <= r['data side share'] < 1
    for r in result['memory']:
        assert r['views/video'] == 4 and 0 < r['shm peak MiB'] <= r['bound MiB'], r
        assert r['main RSS peak MiB'] > r['network alone RSS peak MiB'] > 0
    assert [r['frames'] for r in result['memory']] == [32, 64]
    train = result['train']
    assert train['steps'] == 1 and train['s step'] > 0 and train['s reader wait'] >= 0
    configs = ['slowfast.yaml', 'slowfast-single.yaml'] + sorted(
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'configs', '*.yaml')))
    assert [r['config'] for r in result['needs']] == configs
    recipe = result['needs'][0]  # slowfast.yaml: 8 ranks x 8 workers, 8 test views of 32 + 4 frames x 256 per rank
    assert recipe['test MiB per rank'] == (8 * 2 + 2) * 8 * 3 * 256 * 256 * 36 / 2 ** 20


@pytest.mark.slow
def test_benchmark_train_times_each_engine_in_its_own_process(tmp_path):
    out = run_tool('benchmark_train.py', '--cases', 'tiny', '--engines', 'dygraph', 'conv3d_stem', 'mkl_default',
                   'onednn', 'torch', '--repeats', 1, '--profile', '--json', tmp_path / 'train.json')
    result = json.loads((tmp_path / 'train.json').read_text())
    engines = {'Paddle dygraph', 'Paddle dygraph, fast stem as Paddle conv3d', "Paddle dygraph, MKL's default CPU path",
               'Paddle dygraph + FLAGS_use_mkldnn'} | torch_engine()
    rows = {r['engine']: r for r in result['rows']}
    assert set(rows) == engines and all('error' not in r for r in rows.values()), rows
    for r in rows.values():
        assert r['case'] == 'tiny' and r['batch'] == 8 and r['s_per_iter'] > 0
        assert r['peak_rss_mib'] > r['rss_before_steps_mib'] > 0  # each engine measured in a fresh process
    assert rows["Paddle dygraph, MKL's default CPU path"]['MKL_DEBUG_CPU_TYPE'] == 'unset'
    profile = rows['Paddle dygraph']['profile']
    ops = [p['op'] for p in profile]
    assert any(op.startswith('conv3d') for op in ops) and 0 < sum(p['share'] for p in profile) <= 1.0001
    assert any(op.startswith('conv2d') for op in ops)  # the fast stem runs by frames on the CPU
    assert '| tiny (configs/slowfast_demo.yaml, 8 frames, 32px) | Paddle dygraph | 8 |' in out and '1.00x' in out


@pytest.mark.slow
def test_benchmark_train_rounds_take_turns_and_report_the_median(tmp_path):
    out = run_tool('benchmark_train.py', '--cases', 'tiny', '--engines', 'dygraph', 'onednn', '--repeats', 1,
                   '--rounds', 2, '--json', tmp_path / 'train.json')
    rows = json.loads((tmp_path / 'train.json').read_text())['rows']
    assert [r['engine'] for r in rows] == ['Paddle dygraph', 'Paddle dygraph + FLAGS_use_mkldnn']
    for r in rows:
        assert len(r['round_s_per_iter']) == 2 and r['s_per_iter'] == statistics.median(r['round_s_per_iter'])
    turns = re.findall(r'tiny, (Paddle dygraph[^,]*), round (\d)/2', out)
    assert [n for _, n in turns] == ['1', '1', '2', '2'] and turns[0][0] != turns[1][0]  # in turn, not in a row
    assert 'median of 2 rounds in turn' in out


@needs_ffmpeg
def test_benchmark_decoders_measures_exactness_and_speed_of_each_decoder(real_world):
    """On hard videos the OpenCV frame-number seeker reads wrong frames (or fails); ours reads a full decode's."""
    import benchmark_data as benchmark
    from config_utils import parse_config

    cases = ['mp4 stream-copy cut (edit list)', 'variable frame rate (mkv)', 'open-GOP B-pyramid H.264 mkv']
    cfg = parse_config(os.path.join(ROOT, 'slowfast.yaml'), ['MODEL.crop_size=96', 'TRAIN.min_size=96',
                                                          'TRAIN.max_size=112', 'TRAIN.target_size=96'])
    rows = benchmark.bench_decoders({c: real_world[c][0] for c in cases}, cfg, clips=4, repeats=1)
    got = {(r['video'], r['decoder']): r for r in rows}
    assert set(got) == {(c, d) for c in cases for d in benchmark.DECODERS}
    for case in cases:
        ours, opencv = got[case, 'pyav (ours)'], got[case, 'opencv']
        assert ours['exact'] == 4 and ours['failed'] == 0 and ours['ms'] > 0
        assert ours['frames'] == opencv['frames'] == len(real_world[case][1]) == ours['declared']
    for case in cases[:2]:  # the container's count is wrong, so some clip lands elsewhere
        assert got[case, 'opencv']['declared'] != len(real_world[case][1]) and got[case, 'opencv']['exact'] < 4
    assert got[cases[2], 'opencv']['exact'] == 4  # a clean file: both exact
    assert 'pyav (ours)' in benchmark.decoder_table(rows) and json.loads(json.dumps(rows)) == rows


# ---- gradcam ----------------------------------------------------------------------------------------------------

def test_gradcam_maps_have_the_clips_shape_and_range_for_any_model(tiny_cfg):
    import paddle
    from gradcam import grad_cam, to_clip
    from model import build_model

    model = build_model(tiny_cfg)
    model.eval()
    rng = np.random.default_rng(0)
    inputs = [paddle.to_tensor(rng.standard_normal([1, 3, t, 96, 128]).astype(np.float32)) for t in (2, 8)]
    for layer, scale in (('res5', 32), ('res3', 8)):
        cams, index, probability = grad_cam(model, inputs, layer, class_index=3)
        assert index == 3 and 0 < probability < 1
        assert [c.shape for c in cams] == [(2, 96 // scale, 128 // scale), (8, 96 // scale, 128 // scale)]
        for cam in cams:
            assert cam.min() >= 0 and cam.max() <= 1 and (cam.max() == 1 or cam.max() == 0)
            clip = to_clip(cam, 8, 96, 128)
            assert clip.shape == (8, 96, 128) and clip.min() >= 0 and clip.max() <= 1
    assert np.allclose(to_clip(cams[1], 8, 96, 128)[:, ::4, ::4].mean(axis=(1, 2)), cams[1].mean(axis=(1, 2)),
                       atol=0.1)  # the fast pathway keeps its frames' order and values
    cams, predicted, _ = grad_cam(model, inputs)
    assert predicted == int(np.argmax(model(inputs).numpy()))


def test_gradcam_tool_writes_each_video_and_names_bad_inputs(videos, tmp_path):
    import paddle
    from config_utils import parse_config
    from model import build_model

    flags = ['--config', os.path.join(ROOT, 'configs', 'slowfast_demo.yaml'), '--use_gpu', 'False', '-o',
             'MODEL.num_classes=4',
             '-o', 'MODEL.width_per_group=8']
    paddle.save(build_model(parse_config(os.path.join(ROOT, 'configs/slowfast_demo.yaml'), [
        'MODEL.num_classes=4', 'MODEL.width_per_group=8'])).state_dict(), str(tmp_path / 'w.pdparams'))
    common = [*flags, '--weights', tmp_path / 'w', '--save_path', tmp_path / 'cam', '--video', videos['mp4']]
    log = run_tool('gradcam.py', *common, '--video', videos['garbage'], '--class_index', 2, '--time', 1.0, expect=1)
    assert 'cannot decode video' in log and videos['garbage'] in log and 'Grad-CAM of 1 videos' in log
    result = np.load(tmp_path / 'cam' / 'index300_gradcam.npz')
    assert int(result['class_index']) == 2 and result['cam_slow'].shape == result['frames'].shape[:3]
    assert result['frame_indices'].tolist() == (22 + np.linspace(0, 15, 8).astype(int)).tolist()  # centred at 1 s
    strip = cv2.imread(str(tmp_path / 'cam' / 'index300_gradcam.png'))
    assert strip.shape[0] > 3 * 32 and strip.shape[1] == 8 * 42  # frames, slow, fast rows; 8 frames of 32x42
    assert 'is not a class name' in run_tool('gradcam.py', *common, '--label', 'jumping', expect=2)
    assert 'needs gradients' in run_tool('gradcam.py', *common, '-o', 'INFER.use_inference=True', expect=2)


GRADCAM_SIZE, GRADCAM_LAYER = 64, 'res3'  # at the demo's 32-pixel scale res5 is 1x1: twice the scale, res3 is 8x10


@pytest.mark.slow
def test_gradcam_of_the_trained_demo_network_looks_at_the_moving_shapes(trained_demo, tmp_path):
    """On four new demo videos (one per class) the network trained in the test predicts the class, and per unit of
    area its fast pathway's map lies on the moving shapes well over 1.4 times as much as on the static clutter under
    them (measured: about 1.8), and their share of the map is at least 1.25 times their share of the frame
    (measured: about 1.6; they cover about a fifth of it)."""
    from make_demo_data import make_video
    from video_io import write_video

    masks, paths = {}, []
    for label in range(4):
        path = str(tmp_path / f'clip{label}.mp4')
        masks[label] = []  # per frame: 2 moving shape, 1 static clutter, 0 background
        write_video(path, make_video(9000 + label, label, 96, 128, 48, masks=masks[label]), 30)
        paths.append(path)
    log = run_tool('gradcam.py', *trained_demo['flags'], '--weights', trained_demo['weights'],
                   *[a for p in paths for a in ('--video', p)], '--save_path', tmp_path / 'cam', '--size',
                   GRADCAM_SIZE, '--layer', GRADCAM_LAYER)
    assert 'Grad-CAM of 4 videos' in log
    mass, area = np.zeros(3), np.zeros(3)
    for label in range(4):
        result = np.load(tmp_path / 'cam' / f'clip{label}_gradcam.npz')
        assert int(result['class_index']) == label
        frames, cam = result['frames'], result['cam_fast']
        mask = np.stack([cv2.resize(masks[label][i], frames.shape[2:0:-1], interpolation=cv2.INTER_NEAREST)
                         for i in result['frame_indices']])
        assert cam.shape == mask.shape and cam.min() >= 0 and 0.5 < cam.max() <= 1
        mass += [(cam * (mask == k)).sum() / cam.sum() for k in range(3)]
        area += [(mask == k).mean() for k in range(3)]
        assert cv2.imread(str(tmp_path / 'cam' / f'clip{label}_gradcam.png')) is not None
    density = mass / area  # the map's share per share of the frame
    assert density[2] >= 1.4 * density[1] and density[2] >= 1.25, (mass / 4, area / 4)


# ---- the manual's paths ----------------------------------------------------------------------------------------------

def test_every_script_config_and_page_the_docs_name_exists():
    """Paths of scripts, tools, configs and pages in the README, docs/, the run scripts, configs and docstrings: each
    file is there (a moved tool leaves no stale command line behind)."""
    import glob
    import re

    sources = ['README.md', '.ci/run', 'launch.sh'] + glob.glob(os.path.join(ROOT, 'docs', '*.md')) + \
        glob.glob(os.path.join(ROOT, '*.sh')) + glob.glob(os.path.join(ROOT, '*.yaml')) + \
        glob.glob(os.path.join(ROOT, 'configs', '*.yaml')) + glob.glob(os.path.join(ROOT, '*.py')) + \
        glob.glob(os.path.join(ROOT, 'tools', '*', '*.py'))
    in_folder = re.compile(r'(?<![\w/.-])((?:tools|configs|docs|tests)/[\w/.-]*\w\.(?:py|sh|yaml|md|txt))')
    command = re.compile(r'(?:python|bash) +([\w/.-]+\.(?:py|sh))\b')  # a command line's script, from the root
    missing, seen = [], 0
    for source in sources:
        text = open(os.path.join(ROOT, source)).read()
        for path in set(in_folder.findall(text)) | set(command.findall(text)):
            seen += 1
            if not os.path.exists(os.path.join(ROOT, path)):
                missing.append(f'{os.path.relpath(os.path.join(ROOT, source), ROOT)}: {path}')
    assert seen > 50 and not missing, missing


def test_every_module_loads_zlib_before_paddle():
    """Paddle 2.6.2 crashes in ``inflateReset2`` when the system zlib is loaded after it (README, Install): every
    module and tool that imports paddle imports zlib, or numpy (which loads it), first, so that a script importing
    any of them first is safe."""
    import glob

    files = glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, 'tools', '*', '*.py'))
    late, checked = [], 0
    for path in files:
        lines = [line.split()[1] for line in open(path) if re.match(r'import (paddle|numpy|zlib)\b', line)]
        if 'paddle' in lines:
            checked += 1
            if lines[0] == 'paddle':
                late.append(os.path.relpath(path, ROOT))
    assert checked > 15 and not late, late


def test_check_gpu_says_so_without_cuda_and_its_parts_run_on_the_cpu(tiny_cfg):
    """tools/analysis/check_gpu.py: without CUDA, a line saying so and exit 0; its training steps (float32 and the
    AMP path, which Paddle runs in float32 on a CPU) learn a fixed batch, and its export parity check holds here."""
    import check_gpu

    result = subprocess.run([sys.executable, tool_path('check_gpu.py')], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and 'no CUDA device in this Paddle' in result.stdout + result.stderr
    for dtype in (None, 'float16', 'bfloat16'):
        seconds, losses = check_gpu.train_steps(tiny_cfg, dtype, steps=8, batch=2)
        assert len(seconds) == 8 and len(losses) == 11 and all(np.isfinite(losses))
        assert losses[-1] < 0.5 * losses[0], (dtype, losses)
    assert check_gpu.inference_difference(tiny_cfg, 96, gpu_id=None) <= check_gpu.TOLERANCE


# ---- every tool checks where it writes before its work --------------------------------------------------------------

def tool_outputs(demo_lists, videos, weights):
    """``[(tool, arguments with OUT for the output location, the flag named)]``: every tool that writes, with inputs
    good enough that only the output can stop it."""
    val = demo_lists[1]
    tiny = ['--config', os.path.join(ROOT, 'slowfast-single.yaml')] + [
        a for o in ['MODEL.num_classes=4', 'MODEL.num_frames=8', 'MODEL.alpha=4', 'MODEL.beta=4',
                    'MODEL.width_per_group=8', 'MODEL.crop_size=64', 'MODEL.fusion_kernel_size=3'] for a in ('-o', o)]
    return [
        ('check_videos.py', [val, '--out', 'OUT/clean.txt'], '--out'),
        ('check_videos.py', [val, '--report', 'OUT/report.json'], '--report'),
        ('make_lists.py', ['folders', '--videos', os.path.dirname(val), '--out', 'OUT'], '--out'),
        ('get_kinetics.py', ['--splits', 'val', '--out', 'OUT', '--mirror', 'http://127.0.0.1:9'], '--out'),
        ('get_kinetics.py', ['--splits', 'val', '--out', 'OUT_OK', '--lists', 'OUT', '--mirror', 'http://127.0.0.1:9'],
         '--lists'),
        ('resize_videos.py', [os.path.dirname(val), 'OUT'], 'DST'),
        ('make_demo_data.py', ['--out', 'OUT'], '--out'),
        ('make_heldout_data.py', ['--kind', 'spin', '--out', 'OUT'], '--out'),
        ('make_hard_videos.py', [videos['mp4'], 'OUT'], 'OUT'),
        ('convert_weights.py', ['--src', weights, '--dst', 'OUT/w.pdparams'] + tiny, '--dst'),
        ('zoo.py', ['get', 'paddlevideo-slowfast-4x16', '--file', weights, '--out', 'OUT'], '--out'),
        ('export_model.py', ['--weights', weights, '--save_dir', 'OUT'] + tiny, '--save_dir'),
        ('gradcam.py', ['--weights', weights, '--video', videos['mp4'], '--save_path', 'OUT'] + tiny, '--save_path'),
        ('benchmark_data.py', ['--quick', '--json', 'OUT/r.json'], '--json'),
        ('benchmark_infer.py', ['--json', 'OUT/r.json'], '--json'),
        ('benchmark_eval.py', ['--json', 'OUT/r.json'], '--json'),
        ('benchmark_train.py', ['--json', 'OUT/r.json'], '--json'),
        ('benchmark_multigrid.py', ['--out', 'OUT'], '--out'),
        ('benchmark_multigrid.py', ['--out', 'OUT_OK', '--plot', 'OUT/c.png'], '--plot'),
        ('check_gpu.py', ['--json', 'OUT/r.json'], '--json'),
        ('compare_resize.py', ['--videos', videos['mp4'], '--json', 'OUT/r.json'], '--json'),
    ]


@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory):
    import paddle

    from config_utils import parse_config
    from model import build_model

    path = tmp_path_factory.mktemp('weights') / 'tiny.pdparams'
    paddle.save(build_model(parse_config(os.path.join(ROOT, 'slowfast-single.yaml'), [
        'MODEL.num_classes=4', 'MODEL.num_frames=8', 'MODEL.alpha=4', 'MODEL.beta=4', 'MODEL.width_per_group=8',
        'MODEL.crop_size=64', 'MODEL.fusion_kernel_size=3'])).state_dict(), str(path))
    return str(path)


def tool_command(tool, args, out, tmp_path):
    return [sys.executable, tool_path(tool)] + [str(a).replace('OUT_OK', str(tmp_path / 'ok')).replace('OUT', str(out))
                                                for a in args]


def test_every_tool_stops_at_once_when_a_file_stands_where_its_output_goes(demo_lists, videos, tiny_weights, tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    out = blocker / 'out'
    for tool, args, flag in tool_outputs(demo_lists, videos, tiny_weights):
        result = subprocess.run(tool_command(tool, args, out, tmp_path), capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, PYTHONWARNINGS='ignore'), cwd=ROOT)
        assert result.returncode == 7, (tool, result.stdout[-2000:] + result.stderr[-2000:])
        one_error_line(result.stdout + result.stderr, f'{flag} {out}', f'{blocker} is a file, not a folder')
        assert blocker.read_text() == 'x'


@pytest.mark.slow
def test_every_tool_stops_at_once_when_its_output_folder_is_read_only(demo_lists, videos, tiny_weights, tmp_path):
    readonly = tmp_path / 'readonly'
    readonly.mkdir()
    out = readonly / 'out'
    for tool, args, flag in tool_outputs(demo_lists, videos, tiny_weights):
        result = subprocess.run(in_mount_namespace(tool_command(tool, args, out, tmp_path), readonly=[readonly]),
                                capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, PYTHONWARNINGS='ignore'), cwd=ROOT)
        assert result.returncode == 7, (tool, result.stdout[-2000:] + result.stderr[-2000:])
        one_error_line(result.stdout + result.stderr, f'{flag} {out}', '(Read-only file system)')
    assert os.listdir(readonly) == []


def test_resize_videos_on_a_disk_that_fills_up_keeps_what_it_converted_and_writes_no_list(videos, tmp_path):
    src, disk = tmp_path / 'raw', tmp_path / 'disk'
    src.mkdir()
    for n in range(6):
        shutil.copy(videos['mp4'], src / f'v{n}.mp4')
    run_tool('resize_videos.py', src, tmp_path / 'room', '--short_side', 48, '--workers', 1)
    size = os.path.getsize(tmp_path / 'room' / 'v0.mp4')  # a disk that holds two and a half of them
    command = [sys.executable, tool_path('resize_videos.py'), src, disk / 'small', '--short_side', 48, '--workers', 1]
    result = subprocess.run(in_mount_namespace(command, small={disk: f'{(5 * size // 2) // 4096 * 4096}'},
                                               then=f'ls {disk / "small"} > '
                                               f'{tmp_path / "listing"}'), capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert result.returncode == 7, result.stdout[-2000:] + result.stderr[-2000:]
    converted = (tmp_path / 'listing').read_text().split()
    assert 0 < len(converted) < 6 and 'videos.txt' not in converted
    one_error_line(result.stdout, f'{6 - len(converted)} of 6 videos could not be written (the first: cannot write '
                                  f'{disk / "small"}', 'No space left on device',
                   f'the {len(converted)} converted ones are kept, and no list was written: free some space, then run '
                   'the same command again (finished videos are skipped)')


def test_compare_resize_measures_each_filter_and_the_probability_change(videos, tiny_weights, tmp_path):
    """OpenCV's filter against PIL's and torch's on a shrunk video, and a network's 10x3-view probabilities with
    OpenCV- and PIL-scaled views (docs/DEVIATIONS.md, Resize)."""
    tiny = ['MODEL.num_classes=4', 'MODEL.num_frames=8', 'MODEL.alpha=4', 'MODEL.beta=4', 'MODEL.width_per_group=8',
            'MODEL.crop_size=64', 'MODEL.fusion_kernel_size=3', 'INFER.target_size=64']
    run_tool('compare_resize.py', '--videos', videos['mp4'], videos['portrait'], '--short_sides', 64, 48,
             '--frames', 4, '--config', os.path.join(ROOT, 'slowfast-single.yaml'), '--weights', tiny_weights,
             *[a for o in tiny for a in ('-o', o)], '--json', tmp_path / 'r.json')
    result = json.loads((tmp_path / 'r.json').read_text())
    pairs = {(r['video'], r['short_side'], r['pair']): r for r in result['pixels']}
    assert {p for _, _, p in pairs} >= {'opencv vs pil'}
    for (_, short, pair), row in pairs.items():
        assert row['mean_abs'] >= 0 and row['p99_abs'] >= row['mean_abs'] * 0.5
        if pair == 'opencv vs torch':  # the same filter, up to uint8 rounding
            assert row['psnr'] > 50 and row['p99_abs'] <= 1.0, row
    shrunk = pairs[('index300.mp4', 48, 'opencv vs pil')]
    assert shrunk['mean_abs'] > 0.1  # PIL's antialiasing shows when a frame shrinks
    [a, b] = result['probabilities']
    assert (a['video'], b['video']) == ('index300.mp4', 'portrait.mp4')
    assert all(0 <= r['mean_abs'] <= r['max_abs'] <= 1 for r in (a, b))
