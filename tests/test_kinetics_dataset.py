import os

import cv2
import numpy as np
import paddle
import pytest

import kinetics_dataset
from errors import ListError
from kinetics_dataset import (UNDECODABLE, KineticsDataset, KineticsMultiViewDataset, channels_first,
                              clip_frame_indices, crop_offset, model_inputs, normalize_batch, pack_pathways)
from video_io import VideoReader, scaled_size
from video_lists import NO_LABEL

from helpers import MEAN, ROOT, STD, needs_ffmpeg, pixels, shown_indices, use_list, write_list
from videos import expected_fps, read_index, write_index_video

# ---- sampling math (spec 1.4) ------------------------------------------------------------------------------------

def test_clip_indices_follow_the_original():
    offsets = list(range(0, 62, 2)) + [63]  # linspace(0, 63, 32) truncated
    # 300 frames, a 64-frame clip, clip 5 of 10: start = 236 * 5 / 10 = 118
    assert clip_frame_indices(300, 64.0, 32, 0.5).tolist() == [118 + o for o in offsets]
    # clip 3 of 10: start 70.8 -> rounded up to 71
    assert clip_frame_indices(300, 64.0, 32, 0.3).tolist() == [71 + o for o in offsets]
    # shorter than a clip: start 0, clamped to the last frame
    assert clip_frame_indices(20, 64.0, 32, 0.7).tolist() == [min(o, 19) for o in offsets]
    # fps normalisation: 15 fps -> the clip spans 32 source frames, one per output frame
    assert clip_frame_indices(150, 32 * 2 * 15 / 30, 32, 0.0).tolist() == list(range(32))
    rng = np.random.default_rng(0)
    starts = {clip_frame_indices(300, 64.0, 32, None, rng)[0] for _ in range(200)}
    assert min(starts) >= 0 and max(starts) <= 236 and len(starts) > 100


def test_slow_pathway_takes_the_original_linspace_frames():
    fast = np.arange(32, dtype=np.float32).reshape(1, 32, 1, 1).repeat(3, 0)
    slow, same = pack_pathways(fast, 8)
    assert same is fast and slow[0, :, 0, 0].tolist() == [0, 10, 20, 31]
    assert pack_pathways(fast, 4)[0][0, :, 0, 0].tolist() == [0, 4, 8, 13, 17, 22, 26, 31]


def test_normalisation_on_the_device_is_the_originals_formula():
    frames = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)  # BGR [T, H, W, 3]
    expected = (frames[..., ::-1].transpose(3, 0, 1, 2) / 255.0 - MEAN) / STD  # spec: /255, -mean, /std, RGB
    device = normalize_batch(paddle.to_tensor(channels_first(frames)[None]), [MEAN] * 3, [STD] * 3)
    assert device.dtype == paddle.float32 and np.allclose(device.numpy()[0], expected, atol=1e-6)
    with pytest.raises(TypeError, match='uint8'):  # one normalisation path: a float batch is a bug upstream
        normalize_batch(device, [MEAN] * 3, [STD] * 3)


def test_scale_and_crop_positions():
    assert scaled_size(240, 320, 256) == (256, 341) and scaled_size(320, 240, 256) == (341, 256)
    assert scaled_size(256, 340, 256) == (256, 340)
    # landscape 256x341, crop 256: left / centre / right, as PySlowFast's uniform_crop
    assert [crop_offset(256, 341, 256, i, 3) for i in range(3)] == [(0, 0), (0, 43), (0, 85)]
    # portrait: top / centre / bottom
    assert [crop_offset(341, 256, 256, i, 3) for i in range(3)] == [(0, 0), (43, 0), (85, 0)]
    assert crop_offset(256, 341, 256, 0, 1) == (0, 43)  # one crop: the centre (the original divided by zero)
    rng = np.random.default_rng(0)
    draws = {crop_offset(72, 96, 64, -1, 1, rng) for _ in range(500)}
    assert {y for y, _ in draws} == set(range(9)) and {x for _, x in draws} == set(range(33))  # inclusive bounds


# ---- test / infer views ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('container', ['mp4', 'webm', 'mkv', 'avi'])
def test_test_views_show_the_spec_frames_in_every_container(cfg, videos, tmp_path, container):
    use_list(cfg, write_list(tmp_path, [f'{videos[container]} 3']), 'TEST')
    dataset = KineticsMultiViewDataset(cfg, 'test')
    views = list(dataset.views())
    assert len(views) == dataset.views_here == 30 and len(dataset) == 1
    offsets = list(range(0, 62, 2)) + [63]
    for view, (slow, fast, label, view_id) in enumerate(views):
        assert view_id.tolist() == [view] and label.tolist() == [3]
        assert slow.shape == (3, 4, 96, 96) and fast.shape == (3, 32, 96, 96)
        assert slow.dtype == fast.dtype == np.uint8  # normalised on the device by normalize_batch
        temporal, spatial = divmod(view, 3)
        if spatial == 1:  # the centre crop shows the whole index pattern
            start = int(np.ceil(236 * temporal / 10))
            assert shown_indices(fast) == [start + o for o in offsets], (container, view)
            assert np.array_equal(slow, fast[:, [0, 10, 20, 31]])


def test_test_crops_are_cut_from_the_decoded_frame(cfg, videos, tmp_path):
    """Left/centre/right crops at short side 256-equivalent and RGB order, checked pixel by pixel."""
    use_list(cfg, write_list(tmp_path, [f'{videos["avi"]} 0']), 'TEST')
    views = list(KineticsMultiViewDataset(cfg, 'test').views())
    with VideoReader(videos['avi'], 30) as video:
        frame = video.read([0])[0][:, :, ::-1]  # BGR -> RGB, 96x128: already at short side 96
    for spatial, x in enumerate((0, 16, 32)):
        assert np.array_equal(pixels(views[spatial][1])[0], frame[:, x:x + 96])


def test_portrait_video_crops_top_centre_bottom(cfg, videos, tmp_path):
    use_list(cfg, write_list(tmp_path, [f'{videos["portrait"]} 0']), 'TEST')
    views = list(KineticsMultiViewDataset(cfg, 'test').views())
    with VideoReader(videos['portrait'], 30) as video:
        frame = video.read([0])[0][:, :, ::-1]  # 128 x 96
    for spatial, y in enumerate((0, 16, 32)):
        assert np.array_equal(pixels(views[spatial][1])[0], frame[y:y + 96])


def test_fps_is_normalised_and_short_videos_repeat_their_last_frame(cfg, videos, tmp_path):
    cfg.TEST.num_ensemble_views, cfg.TEST.num_spatial_crops = 2, 1
    use_list(cfg, write_list(tmp_path, [f'{videos["fps15"]} 0', f'{videos["short"]} 1']), 'TEST')
    views = list(KineticsMultiViewDataset(cfg, 'test').views())
    assert [v[3].item() for v in views] == [0, 1, 2, 3]
    # 15 fps: a 32-frame clip at stride 2 of 30 fps spans 32 source frames; 150 frames -> clip 1 starts at 59
    assert shown_indices(views[0][1]) == list(range(32))
    assert shown_indices(views[1][1]) == list(range(59, 91))
    offsets = list(range(0, 62, 2)) + [63]
    assert shown_indices(views[2][1]) == [min(o, 19) for o in offsets]


def test_each_video_is_decoded_once_and_one_crop_works(cfg, videos, tmp_path, monkeypatch):
    opened = []
    real = kinetics_dataset.VideoReader

    class CountingReader(real):
        def __init__(self, path, fps, threads=None):
            opened.append(path)
            super().__init__(path, fps, threads)

    monkeypatch.setattr(kinetics_dataset, 'VideoReader', CountingReader)
    cfg.TEST.num_spatial_crops = 1
    use_list(cfg, write_list(tmp_path, [f'{videos["mp4"]} 0', f'{videos["webm"]} 1']), 'TEST')
    views = list(KineticsMultiViewDataset(cfg, 'test').views())
    assert len(views) == 20 and opened == [videos['mp4'], videos['webm']]
    for view in range(10):  # the single crop is the centre crop
        assert shown_indices(views[view][1])[0] == int(np.ceil(236 * view / 10))


def test_views_split_over_ranks_and_workers_without_padding(cfg, videos, tmp_path):
    cfg.TEST.num_ensemble_views, cfg.TEST.num_spatial_crops = 2, 3
    lines = [f'{videos[k]} {i}' for i, k in enumerate(['mp4', 'webm', 'mkv', 'avi', 'fps15'])]
    use_list(cfg, write_list(tmp_path, lines), 'TEST')
    ids = []
    for rank in range(2):
        dataset = KineticsMultiViewDataset(cfg, 'test', rank=rank, world_size=2)
        batches = list(dataset.view_batches(4, num_workers=2))
        assert [len(view_ids) for _, view_ids in batches[:-1]] == [4] * (len(batches) - 1)  # across videos
        got = [int(i) for _, view_ids in batches for i in view_ids]
        assert len(got) == dataset.views_here == len(dataset.video_indices) * 6
        assert all(pathways[1].shape[0] == len(view_ids) for pathways, view_ids in batches)
        ids += got
    assert sorted(ids) == list(range(30))  # every view of every video exactly once


def test_undecodable_videos_yield_no_views_in_test(cfg, videos, tmp_path):
    cfg.INFER.num_ensemble_views, cfg.INFER.num_spatial_crops = 2, 1  # infer mode reads INFER's view counts
    names = ['mp4', 'zero', 'garbage', 'truncated_mp4', 'missing', 'avi']
    use_list(cfg, write_list(tmp_path, [f'{videos[k]}' for k in names]), 'INFER')
    dataset = KineticsMultiViewDataset(cfg, 'infer')
    views = list(dataset.views())
    assert [v[3].item() for v in views] == [0, 1, 10, 11]
    assert [v[2].item() for v in views] == [NO_LABEL] * 4
    assert dataset.failures.indices() == [1, 2, 3, 4]


def test_a_video_cut_short_is_used_with_the_frames_it_holds(cfg, videos, tmp_path):
    """Half an mkv (its header still declares 10 s): the length is what decodes, counted by OpenCV here."""
    capture, decodable = cv2.VideoCapture(videos['truncated_mkv']), 0
    while capture.grab():
        decodable += 1
    assert 0 < decodable < 300
    with VideoReader(videos['truncated_mkv'], 30) as video:
        assert video.num_frames == decodable
    cfg.TEST.num_ensemble_views, cfg.TEST.num_spatial_crops = 2, 1
    use_list(cfg, write_list(tmp_path, [f'{videos["truncated_mkv"]} 0']), 'TEST')
    views = list(KineticsMultiViewDataset(cfg, 'test').views())
    offsets = list(range(0, 62, 2)) + [63]
    start = int(np.ceil((decodable - 64) / 2))
    assert shown_indices(views[1][1]) == [start + o for o in offsets]


# ---- training / validation ---------------------------------------------------------------------------------------

def test_train_samples_shapes_ranges_and_labels(cfg, videos, tmp_path):
    use_list(cfg, write_list(tmp_path, [f'{videos[k]} {i}' for i, k in enumerate(['mp4', 'webm', 'mkv'])]),
             'TRAIN')
    dataset = KineticsDataset(cfg, 'train')
    assert len(dataset) == 3
    for index in range(3):
        slow, fast, label, idx = dataset[index]
        assert slow.shape == (3, 4, 64, 64) and fast.shape == (3, 32, 64, 64)
        assert slow.dtype == fast.dtype == np.uint8 and label.dtype == idx.dtype == np.int64
        assert label.tolist() == [index] and idx.tolist() == [index]
        assert np.array_equal(slow, fast[:, [0, 10, 20, 31]])


class ExtremeDraws:
    """A generator that draws every value at one end of its range: ``ends`` says which, draw by draw (cycled): 'low'
    gives ``low``, 'high' the largest value the real draw can give (``high - 1`` for integers)."""

    def __init__(self, ends):
        self.ends, self.count = ends, 0

    def _high(self):
        self.count += 1
        return self.ends[(self.count - 1) % len(self.ends)] == 'high'

    def uniform(self, low=0.0, high=1.0):
        return float(np.nextafter(high, low)) if self._high() else float(low)

    def integers(self, low, high=None):
        low, high = (0, low) if high is None else (low, high)
        return high - 1 if self._high() else low


@pytest.mark.parametrize('ends', [['low'], ['high'], ['low', 'high'], ['high', 'low']])
def test_training_clips_at_the_extreme_draws_of_every_random_transform(cfg, videos, tmp_path, ends):
    """Stride, scale, clip start, crop position and flip all at the ends of their ranges, at the recipe's shape and
    at multigrid's smaller ones (fewer frames: a stride range; smaller crops: scaled jitter), on a landscape, a
    portrait and a 20-frame video: every clip has its shape; clip starts keep every frame inside the video."""
    use_list(cfg, write_list(tmp_path, [f'{videos[k]} 0' for k in ('mp4', 'portrait', 'short')]), 'TRAIN')
    for frames, crop in [(32, 64), (16, 45), (8, 32), (8, 23), (8, 6)]:
        dataset = KineticsDataset(cfg, 'train', shape=(frames, crop))
        for path, _ in dataset.samples:
            slow, fast = dataset.load_clip(path, ExtremeDraws(ends), crop)
            assert fast.shape == (3, frames, crop, crop) and slow.shape == (3, frames // 8, crop, crop), (path, crop)
    for length in (1, 20, 64, 65, 300):  # a clip starting at either end of its range stays inside the video
        for span in (8.0, 64.0, 128.0):
            indices = clip_frame_indices(length, span, 32, None, ExtremeDraws(ends))
            assert 0 <= indices.min() and indices.max() < length and np.all(np.diff(indices) >= 0)


def test_model_inputs_normalise_a_uint8_batch_on_the_device(cfg, videos, tmp_path):
    use_list(cfg, write_list(tmp_path, [f'{videos["mp4"]} 0']), 'TRAIN')
    slow, fast = KineticsDataset(cfg, 'train')[0][:2]
    inputs = model_inputs([paddle.to_tensor(slow[None]), paddle.to_tensor(fast[None])], cfg)
    for got, clip in zip(inputs, (slow, fast)):
        assert got.dtype == paddle.float32
        assert np.allclose(got.numpy()[0], (clip / 255.0 - MEAN) / STD, atol=1e-5)


def test_train_randomness_depends_only_on_seed_epoch_index(cfg, videos, tmp_path):
    use_list(cfg, write_list(tmp_path, [f'{videos["mp4"]} 0', f'{videos["webm"]} 1']), 'TRAIN')
    a, b = KineticsDataset(cfg, 'train', seed=7), KineticsDataset(cfg, 'train', seed=7)
    b[1], b[0]  # other draws in between change nothing
    assert np.array_equal(a[0][1], b[0][1])
    a.set_epoch(1)
    assert not np.array_equal(a[0][1], b[0][1])
    b.set_epoch(1)
    assert np.array_equal(a[0][1], b[0][1])
    assert not np.array_equal(KineticsDataset(cfg, 'train', seed=8)[0][1], KineticsDataset(cfg, 'train', seed=7)[0][1])


def test_train_batches_are_the_same_whatever_the_workers(cfg, videos, tmp_path):
    use_list(cfg, write_list(tmp_path, [f'{videos[k]} {i}' for i, k in enumerate(['mp4', 'webm', 'mkv', 'avi'])]),
             'TRAIN')
    runs = []
    for workers in (0, 2):
        dataset = KineticsDataset(cfg, 'train', seed=3)
        dataset.set_epoch(2)
        loader = paddle.io.DataLoader(dataset, batch_size=2, shuffle=False, num_workers=workers)
        runs.append([batch[1].numpy() for batch in loader])
    assert all(np.array_equal(x, y) for x, y in zip(*runs)) and len(runs[0]) == 2


def test_train_clip_start_scale_crop_and_flip_vary(cfg, videos, tmp_path):
    use_list(cfg, write_list(tmp_path, [f'{videos["ramp"]} 0']), 'TRAIN')
    dataset = KineticsDataset(cfg, 'train')
    flipped = []
    for epoch in range(40):
        dataset.set_epoch(epoch)
        frame = pixels(dataset[0][1])[0].mean(axis=(0, 2))  # mean over rows and channels: the ramp
        flipped.append(frame[:8].mean() > frame[-8:].mean())
    assert 8 < sum(flipped) < 32  # p = 0.5


def test_random_flip_off_keeps_every_clip_but_never_flips(cfg, videos, tmp_path):
    use_list(cfg, write_list(tmp_path, [f'{videos["ramp"]} 0']), 'TRAIN')
    with_flip = KineticsDataset(cfg, 'train')
    cfg.TRAIN.random_flip = False
    without = KineticsDataset(cfg, 'train')
    flips = 0
    for epoch in range(12):
        with_flip.set_epoch(epoch), without.set_epoch(epoch)
        a, b = with_flip[0][1], without[0][1]
        assert pixels(b)[0].mean(axis=(0, 2))[:8].mean() < pixels(b)[0].mean(axis=(0, 2))[-8:].mean()  # ramp kept
        flips += not np.array_equal(a, b)
        assert np.array_equal(a, b) or np.array_equal(a, b[..., ::-1])  # same clip, scale and crop
    assert flips > 0


def test_valid_is_a_deterministic_centre_clip_and_crop(cfg, videos, tmp_path):
    use_list(cfg, write_list(tmp_path, [f'{videos["mp4"]} 2']), 'VALID')
    dataset = KineticsDataset(cfg, 'valid')
    slow, fast, label, _ = dataset[0]
    dataset.set_epoch(5)
    assert np.array_equal(dataset[0][1], fast) and label.tolist() == [2]
    offsets = list(range(0, 62, 2)) + [63]
    assert shown_indices(fast) == [118 + o for o in offsets]  # centre clip: start 236 / 2


def test_bad_training_videos_are_replaced_counted_and_logged(cfg, videos, tmp_path):
    good, bad = ['mp4', 'webm', 'mkv', 'avi'], ['zero', 'garbage', 'truncated_mp4', 'missing']
    lines = [f'{videos[k]} 0' for k in good] + [f'{videos[k]} {1 + i % 4}' for i, k in enumerate(bad)]
    use_list(cfg, write_list(tmp_path, lines), 'TRAIN')
    dataset = KineticsDataset(cfg, 'train')
    loader = paddle.io.DataLoader(dataset, batch_size=3, shuffle=False, num_workers=2)
    batches = list(loader)
    assert sum(b[1].shape[0] for b in batches) == 8  # nothing dropped, nothing None
    assert all(label == 0 for b in batches for label in b[2].numpy().ravel())  # broken ones replaced by good ones
    assert dataset.failures.indices() == [4, 5, 6, 7]  # recorded in the worker processes, seen here
    assert dataset.failures.take_count() >= 4 and dataset.failures.take_count() == 0


def test_validation_never_substitutes_an_undecodable_video(cfg, videos, tmp_path):
    names = ['mp4', 'garbage', 'webm', 'missing']
    use_list(cfg, write_list(tmp_path, [f'{videos[k]} {i}' for i, k in enumerate(names)]), 'VALID')
    dataset = KineticsDataset(cfg, 'valid')
    items = [dataset[i] for i in range(4)]
    assert [item[2].item() for item in items] == [0, UNDECODABLE, 2, UNDECODABLE]
    assert [item[3].item() for item in items] == [0, 1, 2, 3]  # each item is its own video
    for slow, fast, label, _ in items:
        assert slow.shape == (3, 4, 96, 96) and fast.shape == (3, 32, 96, 96) and fast.dtype == np.uint8
        assert (label.item() == UNDECODABLE) == (not fast.any())  # placeholders are all zero, real clips are not
    assert dataset.failures.indices() == [1, 3]


def test_first_failure_of_each_video_is_logged_with_its_reason(cfg, videos, tmp_path, caplog):
    use_list(cfg, write_list(tmp_path, [f'{videos["mp4"]} 0', f'{videos["zero"]} 1', f'{videos["missing"]} 1']),
             'TRAIN')
    dataset = KineticsDataset(cfg, 'train')
    with caplog.at_level('WARNING', logger='kinetics_dataset'):
        for epoch in range(3):
            dataset.set_epoch(epoch)
            assert dataset[1][2].tolist() == [0] and dataset[2][2].tolist() == [0]
    assert caplog.text.count('empty file (0 bytes)') == 1 and caplog.text.count('file not found') == 1
    assert videos['zero'] in caplog.text
    assert dataset.failures.take_count() >= 6  # each draw of a broken video counts, replacements included


def test_a_list_of_only_broken_videos_stops_with_a_clear_error(cfg, videos, tmp_path):
    """The error goes to the loop (``errors``), the loader gets a placeholder of the items' shape."""
    use_list(cfg, write_list(tmp_path, [f'{videos["zero"]} 0', f'{videos["missing"]} 1']), 'TRAIN')
    dataset = KineticsDataset(cfg, 'train')
    slow, fast, label, _ = dataset[0]
    assert fast.shape == (3, 32, 64, 64) and slow.shape == (3, 4, 64, 64) and label[0] == UNDECODABLE
    with pytest.raises(ListError, match='11 videos in a row failed to decode'):
        dataset.errors.raise_if_any()


def test_reader_returns_frames_in_the_asked_order_resized_on_decode(videos):
    with VideoReader(videos['mkv'], 30) as video:
        frames = video.read([40, 7, 40, 299, 350], short_side=48)  # any order, repeats, past the end
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    with VideoReader(videos['mkv'], 30) as video:
        full = video.read([7, 40, 299])
    assert [read_index(f[:, 16:112, ::-1]) for f in full] == [7, 40, 299]
    small = [cv2.resize(f, (64, 48), interpolation=cv2.INTER_LINEAR) for f in full]
    for got, want in zip(frames, [small[1], small[0], small[1], small[2], small[2]]):
        assert np.array_equal(got, want)


def test_fps_falls_back_to_the_timestamps_then_to_target_fps(videos, tmp_path, monkeypatch):
    monkeypatch.setattr(VideoReader, '_declared_rate', lambda self: None)  # a container that declares no rate
    with VideoReader(videos['fps15'], 30) as video:  # measured from the frames' timestamps
        assert video.fps == pytest.approx(15.0) and video.num_frames == 150
    one = write_index_video(str(tmp_path / 'one.mkv'), 1)
    with VideoReader(one, 30) as video:  # one frame: no rate to measure
        assert video.fps == 30.0 and video.num_frames == 1


# ---- real-world encodings: every item holds the recipe's frames of the true length --------------------------------

@needs_ffmpeg
def test_every_view_and_clip_of_real_world_videos_holds_the_recipes_frames(cfg, real_world, tmp_path, monkeypatch):
    """Train, valid and the 30 test views of each case, against the ffmpeg tool's full decode and ffprobe's rate."""
    cases = sorted(real_world)
    use_list(cfg, write_list(tmp_path, [f'{real_world[case][0]} 0' for case in cases]), 'TRAIN', 'VALID', 'TEST')
    # training at the videos' own size, centre crop, no flip: the crop holds the whole index code; only the
    # temporal sampling (what this test is about) stays random
    cfg.TRAIN.min_size = cfg.TRAIN.max_size = cfg.TRAIN.target_size = 96
    cfg.TRAIN.random_flip = False
    real_crop = kinetics_dataset.crop_offset

    def centre_for_training(height, width, size, spatial_idx, num_crops, rng=None):
        if spatial_idx == -1:
            real_crop(height, width, size, -1, num_crops, rng)  # the same draws as before
            return real_crop(height, width, size, 0, 1)
        return real_crop(height, width, size, spatial_idx, num_crops, rng)

    monkeypatch.setattr(kinetics_dataset, 'crop_offset', centre_for_training)
    test_views = list(KineticsMultiViewDataset(cfg, 'test').views())
    train, valid = KineticsDataset(cfg, 'train'), KineticsDataset(cfg, 'valid')
    assert len(test_views) == 30 * len(cases)
    m = cfg.MODEL
    for video, case in enumerate(cases):
        path, truth = real_world[case]
        clip_size = m.num_frames * m.sampling_rate * expected_fps(path) / m.target_fps
        offsets = np.linspace(0, clip_size - 1, m.num_frames).astype(np.int64)
        delta = max(len(truth) - clip_size, 0)

        def frames_from(start):
            return [truth[min(start + o, len(truth) - 1)] for o in offsets]

        for view in range(30):  # centre crops hold the whole code; the others are cut from the same frames
            fast, view_id = test_views[video * 30 + view][1], test_views[video * 30 + view][3]
            assert view_id.item() == video * 30 + view
            if view % 3 == 1:
                assert shown_indices(fast) == frames_from(int(np.ceil(delta * (view // 3) / 10))), (case, view)
        assert shown_indices(valid[video][1]) == frames_from(int(np.ceil(delta / 2))), case
        starts = set()
        for epoch in range(6):  # a random start in [0, delta], then the recipe's offsets
            train.set_epoch(epoch)
            got = shown_indices(train[video][1])
            start = [s for s in range(int(np.ceil(delta)) + 1) if frames_from(s) == got]
            assert start, (case, epoch, got)
            starts.add(start[0])
        assert len(starts) > 1 or delta < 1, case
    assert not train.failures.indices() and not valid.failures.indices()


# ---- errors while the loaders make items ----------------------------------------------------------------------------

LOADER_ERRORS = '''
import json, sys, time
sys.path.insert(0, {root!r})
import zlib  # noqa: F401 -- loaded before paddle: see the README's note on Paddle 2.6.2
import paddle
from config_utils import parse_config
from errors import ListError
from kinetics_dataset import KineticsDataset, KineticsMultiViewDataset
from preemption import ResumableBatchSampler, StopRequest, StoppableDataLoader
from timeline import SlidingWindowDataset

cfg = parse_config({config!r}, {overrides!r})
bad = {bad!r}

def fail_on_bad(real):
    def wrapped(self, path, *args, **kwargs):
        if path == bad:
            raise ListError('injected: ' + path)
        return real(self, path, *args, **kwargs)
    return wrapped

KineticsDataset.load_clip = fail_on_bad(KineticsDataset.load_clip)
KineticsMultiViewDataset.decode = fail_on_bad(KineticsMultiViewDataset.decode)
SlidingWindowDataset.window_views = fail_on_bad(SlidingWindowDataset.window_views)
stop = StopRequest().install()  # as train.py: its workers end when this process exits

def train(workers):
    data = KineticsDataset(cfg, 'train')
    sampler = ResumableBatchSampler(data, batch_size=2, shuffle=False, drop_last=True)
    return StoppableDataLoader(data, batch_sampler=sampler, num_workers=workers, stop=stop, errors=data.errors)

def valid(workers):
    data = KineticsDataset(cfg, 'valid')
    return StoppableDataLoader(paddle.io.Subset(data, list(range(len(data)))), batch_size=2, num_workers=workers,
                               stop=stop, errors=data.errors)

def views(workers):
    return KineticsMultiViewDataset(cfg, 'test').view_batches(4, workers)

def windows(workers):
    samples = [(path, 0) for path in {paths!r}]
    return SlidingWindowDataset(cfg, samples, stride='32f').view_batches(4, workers)

results = []
for name, make in (('train', train), ('valid', valid), ('test views', views), ('windows', windows)):
    for workers in (0, 1, 3):
        start, outcome = time.time(), 'no error'
        try:
            for _ in make(workers):
                pass
        except ListError as error:
            outcome = 'ListError: ' + str(error)
        results.append([name, workers, outcome, time.time() - start])
        print(results[-1], flush=True)
print(json.dumps(results))
'''


def test_an_error_while_any_loader_makes_items_reaches_the_loop_promptly(cfg, videos, tmp_path):
    """A user error raised where items are made (training, validation and precise BN's loader, eval/predict views,
    timeline windows), with 0, 1 and 3 DataLoader workers: raised in the loop with its class and message within
    seconds (Paddle's own loader waits for ever with no worker, and hides the error's class with workers)."""
    import json
    import subprocess
    import sys

    names = ['mp4', 'webm', 'mkv', 'avi', 'fps15']
    listing = write_list(tmp_path, [f'{videos[k]} {i}' for i, k in enumerate(names)])
    overrides = ['MODEL.num_classes=5', 'MODEL.crop_size=64', 'TRAIN.min_size=72', 'TRAIN.max_size=80',
                 'TRAIN.target_size=64', 'VALID.min_size=96', 'VALID.max_size=96', 'VALID.target_size=96',
                 'TEST.target_size=96', 'TEST.num_ensemble_views=2', 'TEST.num_spatial_crops=1',
                 'INFER.target_size=96'] + [f'{s}.filelist={listing}' for s in ('TRAIN', 'VALID', 'TEST')]
    script = tmp_path / 'loaders.py'
    script.write_text(LOADER_ERRORS.format(root=ROOT, config=os.path.join(ROOT, 'slowfast.yaml'),
                                           overrides=overrides, bad=videos['mkv'],
                                           paths=[videos[k] for k in names]))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1'))  # the limit: a hang
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(results) == 12
    for name, workers, outcome, seconds in results:
        assert outcome == f'ListError: injected: {videos["mkv"]}', (name, workers, outcome)
        assert seconds < 30, (name, workers, seconds)
