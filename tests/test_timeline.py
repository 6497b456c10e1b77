"""timeline.py: windows -> segments, the timeline picture and the annotated video, on scores made up here."""
import cv2
import numpy as np
import pytest

from timeline import PALETTE, annotate_video, make_timeline, plot_timeline, window_at
from video_io import VideoReader, write_video


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
