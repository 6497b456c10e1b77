"""timeline.py: windows -> segments, the timeline picture and the annotated video, on scores made up here; then
predict.py --timeline with a trained demo network on clips of four classes joined into one video; and the window
dataset against the ffmpeg tool's decode."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import ROOT, needs_ffmpeg, shown_indices
from timeline import (PALETTE, SlidingWindowDataset, annotate_video, make_timeline, plot_timeline, smooth,
                      span_frames, window_at)
from video_io import VideoError, VideoReader, write_video
from video_lists import NO_LABEL
from videos import expected_fps


def windows(count, stride, span):
    starts = np.arange(count) * stride
    return np.stack([starts, starts + span], axis=1).astype(np.float64)


def one_hot_scores(labels, confidence=0.9, classes=4):
    probs = np.full((len(labels), classes), (1 - confidence) / (classes - 1))
    probs[np.arange(len(labels)), labels] = confidence
    return probs


def test_segments_join_windows_of_one_label_and_end_half_way_between_window_centres():
    times = windows(10, 0.5, 1.0)  # centres 0.5, 1.0, ..., 5.0
    labels = [2, 2, 2, 0, 0, 1, 1, 1, 3, 3]
    probs = one_hot_scores(labels)
    probs[5] = [0.3, 0.4, 0.2, 0.1]  # below the threshold: no segment holds window 5
    result = make_timeline(probs, times, 5.5, ['a', 'b', 'c', 'd'], top_k=2, threshold=0.5)
    assert [(s['label'], s['start'], s['end'], s['windows']) for s in result['segments']] == [
        ('c', 0.0, 1.75, [0, 2]), ('a', 1.75, 2.75, [3, 4]), ('b', 3.25, 4.25, [6, 7]), ('d', 4.25, 5.5, [8, 9])]
    assert result['segments'][0]['score'] == pytest.approx(0.9)
    first = result['windows'][0]
    assert first['start'] == 0.0 and first['end'] == 1.0 and first['top_k_indices'][0] == 2
    assert first['top_k_labels'][0] == 'c' and len(first['top_k_values']) == 2
    # the rule the segments follow is the one the annotated video uses
    assert window_at(times, np.array([0.0, 0.74, 0.76, 1.75, 1.76, 5.4])).tolist() == [0, 0, 1, 2, 3, 9]
    unnamed = make_timeline(probs, times, 5.5, None, top_k=1, threshold=0.95)
    assert unnamed['segments'] == [] and 'top_k_labels' not in unnamed['windows'][0]


def test_smoothing_averages_each_window_with_its_neighbours():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=9)
    for size in (1, 2, 3, 4):
        before, after = (size - 1) // 2, size // 2
        want = [probs[max(w - before, 0):w + after + 1].mean(axis=0) for w in range(9)]
        assert np.allclose(smooth(probs, size), want)
    assert np.allclose(smooth(probs, 3).sum(axis=1), 1)


def test_timeline_picture_is_written(tmp_path):
    times = windows(40, 0.25, 1.0)
    probs = one_hot_scores([k // 10 for k in range(40)], classes=6)
    result = make_timeline(probs, times, 10.75, None, 5, 0.5)
    plot_timeline(probs, times, 10.75, result['segments'], None, 'clip.mp4', str(tmp_path / 't.png'))
    image = cv2.imread(str(tmp_path / 't.png'))
    assert image is not None and image.shape[1] > 800 and image.shape[0] > 200


@pytest.mark.parametrize('size', [None, 33])
def test_annotated_video_keeps_every_frame_and_the_fps_and_draws_the_label_of_the_moment(tmp_path, size):
    frames = [np.full((62, 90, 3), 128, np.uint8) for _ in range(50)]
    source = str(tmp_path / 'in.mp4')
    write_video(source, frames, 25)
    times = windows(5, 0.4, 0.4)  # 2 s: a window every 10 frames
    labels = [0, 1, 2, 3, 1]
    out = str(tmp_path / 'out.mp4')
    count = annotate_video(source, out, one_hot_scores(labels), times, ['right', 'left', 'down', 'up'], 3, 30, size)
    with VideoReader(out, 30) as video:
        written = list(video.frames())
        assert count == len(written) == 50 and video.fps == pytest.approx(25)
    height, width = (62, 90) if size is None else (32, 46)  # 33 x 48.0: odd sides lose a row / column
    assert written[0].shape == (height, width, 3)
    for index, frame in enumerate(written):
        bar = frame[-max(2, height // 8):].reshape(-1, 3)[:, ::-1].astype(float).mean(axis=0)  # RGB
        drawn = int(np.argmin([np.abs(bar - c).sum() for c in PALETTE[:4]]))
        assert drawn == labels[index // 10], index
    assert np.abs(written[0][:4, :20].astype(int) - 128).max() > 40  # the text box darkens the corner


# ---- with a trained demo network (conftest.trained_demo) ----------------------------------------------------------

SEGMENT_FRAMES, FPS = 60, 30
CLASSES = ['right', 'left', 'down', 'up']


def recognised_clips(trained_demo, folder):
    """Per demo class, a new 2 s demo clip that the network's 30-view prediction gets right with probability >= 0.6
    (the first of a few seeds): what the timeline is asked to find must be recognisable on its own."""
    from make_demo_data import make_video

    candidates = []
    for label in range(len(CLASSES)):
        for k in range(4):
            path = os.path.join(folder, f'clip_{CLASSES[label]}_{k}.mp4')
            write_video(path, make_video(7000 + 10 * k + label, label, 96, 128, SEGMENT_FRAMES), FPS)
            candidates.append((path, label))
    status, log = predict(trained_demo, folder / 'single', *[a for p, _ in candidates for a in ('--video', p)])
    assert status == 0, log
    chosen = {}
    for (path, label), result in zip(candidates, json.loads((folder / 'single' / 'result.json').read_text())):
        if result['top1_indices'] == label and result['top1_values'] >= 0.6:
            chosen.setdefault(label, path)
    assert sorted(chosen) == list(range(len(CLASSES))), f'no recognised clip of some class: {chosen}'
    return chosen


def joined_video(folder, parts):
    """The clips ``parts`` joined by the ffmpeg tool with a stream copy (as a user joining clips would), else
    re-encoded by ours."""
    out = os.path.join(folder, 'long.mp4')
    if shutil.which('ffmpeg'):
        listing = os.path.join(folder, 'parts.txt')
        with open(listing, 'w') as f:
            f.writelines(f"file '{p}'\n" for p in parts)
        subprocess.run(['ffmpeg', '-v', 'error', '-y', '-f', 'concat', '-safe', '0', '-i', listing, '-c', 'copy', out],
                       check=True)
    else:
        frames = [frame for p in parts for frame in VideoReader(p, FPS).frames()]
        write_video(out, [f[..., ::-1] for f in frames], FPS)
    return out


def predict(trained_demo, out, *extra, ranks=1):
    """predict.py, or with ``ranks`` 2 run_infer_multi.sh (2 CPU processes); ``(status, log)``."""
    script = [sys.executable, os.path.join(ROOT, 'predict.py')] if ranks == 1 else \
        ['bash', os.path.join(ROOT, 'run_infer_multi.sh')]
    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS=str(2 // ranks), USE_GPU='False',
               NPROC=str(ranks), LOG_DIR=str(out / 'logs'))
    result = subprocess.run(script + trained_demo['flags'] + ['--weights', trained_demo['weights'], '--save_path',
                                                              str(out)] + list(extra),
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
def test_timeline_of_four_joined_clips_finds_their_classes_and_boundaries_and_the_video_shows_them(
        trained_demo, tmp_path):
    order = [0, 2, 1, 3]  # right, down, left, up
    clips = recognised_clips(trained_demo, tmp_path)
    video = joined_video(str(tmp_path), [clips[label] for label in order])
    stride = 8  # frames: windows of 16 frames overlap by half
    timeline_args = ['--timeline', str(tmp_path / 'timeline'), '--stride', f'{stride}f', '--window_crops', '3',
                     '--smooth', '3']
    status, log = predict(trained_demo, tmp_path / 'out', '--video', video, '--video', str(tmp_path / 'gone.mp4'),
                          *timeline_args, '--annotate', '--features', str(tmp_path / 'f.npy'))
    assert status == 1, log  # the missing input: an error entry, the other written
    results = json.loads((tmp_path / 'out' / 'result.json').read_text())
    assert 'error' in results[1] and results[0]['segments'] == 4
    timeline = json.loads((tmp_path / 'timeline' / 'long.json').read_text())
    segments = timeline['segments']
    assert [s['label'] for s in segments] == [CLASSES[k] for k in order], segments
    truth = [n * SEGMENT_FRAMES / FPS for n in range(len(order) + 1)]  # 0, 2, 4, 6, 8 s
    tolerance = stride / FPS + 1e-3  # one stride (the JSON's times are rounded to 0.1 ms)
    for n, s in enumerate(segments):
        assert abs(s['start'] - truth[n]) <= tolerance and abs(s['end'] - truth[n + 1]) <= tolerance, segments
    windows = timeline['windows']
    assert timeline['num_frames'] == 4 * SEGMENT_FRAMES and windows[1]['start'] == pytest.approx(stride / FPS, abs=1e-3)
    assert cv2.imread(str(tmp_path / 'timeline' / 'long.png')) is not None

    # the annotated video: every frame, the fps, the size, and the bar of the label of that moment
    centres = np.array([(w['start'] + w['end']) / 2 for w in windows])
    with VideoReader(str(tmp_path / 'timeline' / 'long.mp4'), 1) as annotated:
        assert annotated.fps == pytest.approx(FPS) and annotated.num_frames == 4 * SEGMENT_FRAMES
        for index, frame in enumerate(annotated.frames()):
            assert frame.shape == (96, 128, 3)
            nearest = int(np.argmin(np.abs(centres - (index + 0.5) / FPS)))
            bar = frame[-12:].reshape(-1, 3)[:, ::-1].astype(float).mean(axis=0)
            drawn = int(np.argmin([np.abs(bar - c).sum() for c in PALETTE[:4]]))
            assert drawn == windows[nearest]['top_k_indices'][0], index

    # features: a row per window, as the index says
    features, index = np.load(tmp_path / 'f.npy'), json.loads((tmp_path / 'f.json').read_text())
    assert features.shape == (len(windows), 512 + 256) and np.isfinite(features).all()  # res5: slow 512 + fast 256
    assert [(r['start'], r['end']) for r in index['rows']] == [(w['start'], w['end']) for w in windows]

    # two ranks: the same windows, scores and features
    timeline_args[1] = str(tmp_path / 'two_tl')
    status, log = predict(trained_demo, tmp_path / 'two', '--video', video, *timeline_args, '--features',
                          str(tmp_path / 'two.npy'), ranks=2)
    assert status == 0, log
    two = json.loads((tmp_path / 'two_tl' / 'long.json').read_text())
    assert [w['top_k_indices'] for w in two['windows']] == [w['top_k_indices'] for w in windows]
    assert np.allclose([w['top_k_values'] for w in two['windows']], [w['top_k_values'] for w in windows], atol=1e-5)
    assert np.allclose(np.load(tmp_path / 'two.npy'), features, atol=1e-5)


# ---- the window dataset ---------------------------------------------------------------------------------------

@needs_ffmpeg
def test_sliding_windows_of_real_world_videos_hold_the_full_decodes_frames_from_one_forward_decode(
        cfg, real_world, monkeypatch):
    """Every window's clip against the ffmpeg tool's full decode: a window every 7 frames, one clip each."""
    seeks = []
    real_seek = VideoReader._seek
    monkeypatch.setattr(VideoReader, '_seek', lambda self, timestamp: seeks.append(timestamp) or
                        real_seek(self, timestamp))
    monkeypatch.setattr(VideoReader, 'read', lambda *a, **k: pytest.fail('a seek-based read'))
    cases = sorted(real_world)
    dataset = SlidingWindowDataset(cfg, [(real_world[case][0], NO_LABEL) for case in cases], stride='7f')
    m = cfg.MODEL
    items = list(dataset)
    assert seeks == [None] * len(cases)  # one decode from the start per video, no other seek
    assert len(items) == dataset.num_rows == dataset.views_here
    for video, case in enumerate(cases):
        path, truth = real_world[case]
        clip_size = m.num_frames * m.sampling_rate * expected_fps(path) / m.target_fps
        offsets = np.linspace(0, clip_size - 1, m.num_frames).astype(np.int64)
        count = int(np.floor((len(truth) - clip_size) / 7 + 1e-9)) + 1
        rows = dataset.rows(video)
        assert rows.stop - rows.start == count, case
        layout = dataset.layouts[video]
        assert layout.times()[1, 0] == pytest.approx(7 / expected_fps(path), rel=0.01)
        for window in range(count):
            *_, view_id = items[rows.start + window]
            assert view_id.item() == rows.start + window
            want = [truth[min(7 * window + o, len(truth) - 1)] for o in offsets]
            assert shown_indices(items[rows.start + window][1]) == want, (case, window)


def test_sliding_windows_split_over_ranks_by_their_counts_and_skip_broken_videos(cfg, videos):
    samples = [(videos[name], NO_LABEL) for name in ('mp4', 'short', 'garbage', 'webm', 'fps15', 'portrait')]
    ranks = [SlidingWindowDataset(cfg, samples, stride='0.5', window='3s', clips_per_window=2, num_crops=3,
                                  rank=r, world_size=2) for r in range(2)]
    first = ranks[0]
    assert first.layouts[2] is None and first.failures.indices() == [2]  # garbage: no rows, recorded
    assert first.num_views == 6 and first.layout(300, 30.0, '0.5', '3s').starts.tolist() == list(range(0, 211, 15))
    assert first.layout(20, 30.0, '0.5', None).starts.tolist() == [0]  # shorter than a clip: one window
    assert sorted(ranks[0].video_indices + ranks[1].video_indices) == [0, 1, 3, 4, 5]
    loads = [sum(d.rows(v).stop - d.rows(v).start for v in d.video_indices) for d in ranks]
    assert abs(loads[0] - loads[1]) <= max(first.rows(v).stop - first.rows(v).start for v in range(6))
    views = [item for d in ranks for item in d]
    assert sorted(int(item[-1].item()) for item in views) == list(range(first.num_rows * 6))
    with pytest.raises(ValueError, match='positive'):
        span_frames('-1s', 30)
    assert span_frames('16f', 25) == 16 and span_frames('2', 25) == span_frames('2s', 25) == 50


def test_sliding_windows_when_the_decode_ends_early_or_breaks(cfg, videos, monkeypatch, caplog):
    real = VideoReader.read_forward

    def short(self, wanted, short_side=None):  # the stream ends after frame 99 although its index counts 300
        for index, frame in real(self, wanted, short_side):
            if index >= 100:
                return
            yield index, frame

    monkeypatch.setattr(VideoReader, 'read_forward', short)
    dataset = SlidingWindowDataset(cfg, [(videos['mp4'], NO_LABEL)], stride='32f')
    items = list(dataset)
    assert len(items) == dataset.num_rows == 8 and 'the stream ended before frame 100' in caplog.text
    assert shown_indices(items[-1][1]) == [98] * 32 and shown_indices(items[1][1])[0] == 32  # the last one decoded

    def broken(self, wanted, short_side=None):
        yield from short(self, wanted, short_side)
        raise VideoError(self.path, 'damaged')

    monkeypatch.setattr(VideoReader, 'read_forward', broken)
    dataset = SlidingWindowDataset(cfg, [(videos['mp4'], NO_LABEL)], stride='32f')
    assert len(list(dataset)) == 2 and dataset.failures.indices() == [0]  # the windows before the break only


def test_an_annotated_copy_that_fails_to_decode_keeps_the_timeline_and_says_why(demo_lists, tmp_path, monkeypatch):
    """predict.py --timeline --annotate when the second decode (the annotated copy's) fails after the windows were
    scored: the timeline and its picture are written, result.json's entry carries the reason, the status is 1."""
    import paddle

    import predict
    from config_utils import parse_config
    from helpers import tiny_train_overrides
    from model import build_model

    flags = tiny_train_overrides(*demo_lists) + ['DATA.label_map=']
    config = os.path.join(ROOT, 'slowfast-single.yaml')
    paddle.save(build_model(parse_config(config, flags)).state_dict(), str(tmp_path / 'w.pdparams'))
    video = os.path.join(os.path.dirname(demo_lists[1]), open(demo_lists[1]).read().split()[0])

    def second_decode_fails(path, *args, **kwargs):
        raise VideoError(path, 'a damaged packet at 0.5 s')

    monkeypatch.setattr(predict, 'annotate_video', second_decode_fails)
    monkeypatch.setattr(sys, 'argv', ['predict.py', '--config', config, '--use_gpu', 'False', '--weights',
                                      str(tmp_path / 'w'), '--video', video, '--timeline', str(tmp_path / 'tl'),
                                      '--stride', '8f', '--annotate', '--save_path', str(tmp_path / 'out')] +
                        [a for o in flags for a in ('-o', o)])
    assert predict.main() == 1
    [entry] = json.loads((tmp_path / 'out' / 'result.json').read_text())
    assert entry['annotate_error'] == 'a damaged packet at 0.5 s' and 'annotated' not in entry
    assert entry['video_id'] == video and len(entry['top5_indices']) == 4
    timeline = json.loads((tmp_path / 'tl' / 'right_0000.json').read_text())
    assert timeline['windows'] and (tmp_path / 'tl' / 'right_0000.png').stat().st_size > 1000
