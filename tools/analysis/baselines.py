"""The baselines tools/analysis/benchmark_data.py measures this project's data pipeline against: a faithful
re-implementation of the original port's loader (spec section 1.4: OpenCV seek for .mp4 only, whole decode of other
containers, every decoded frame converted, PIL resize, one decode per test view), the bare decode floor (seek to the
clip and grab its frames, nothing converted or kept), and OpenCV's frame-number seeking (this project's earlier
reader), which the decoder comparison sets beside PyAV.
"""
import math
import os
import sys
from typing import List, Optional

import cv2
import numpy as np
import paddle

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from config_utils import AttrDict  # noqa: E402
from kinetics_dataset import clip_frame_indices, crop_offset  # noqa: E402
from video_io import VideoError, scaled_size  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# The original pipeline (spec 1.4), and the decode floor

class OriginalPipeline(paddle.io.Dataset):
    """The original port's ``KineticsDataset`` decoding and transforms, faithfully (OpenCV + PIL).

    Train: ``.mp4`` seeks to the clip start and reads to its end; other containers decode every frame. Test: one
    item per view, each decoding the video again. Random draws replayed from our (seed, epoch, index) streams.
    """

    def __init__(self, samples: List[str], cfg: AttrDict, mode: str, seed: int = 0):
        self.samples, self.cfg, self.mode, self.seed = samples, cfg, mode, seed
        m = cfg.MODEL
        self.num_frames, self.alpha, self.sampling_rate, self.target_fps = (m.num_frames, m.alpha,
                                                                            m.sampling_rate, m.target_fps)
        self.mean, self.std = np.array(m.image_mean, np.float32), np.array(m.image_std, np.float32)
        self.num_views = cfg.TEST.num_ensemble_views * cfg.TEST.num_spatial_crops if mode == 'test' else 1

    def __len__(self) -> int:
        return len(self.samples) * self.num_views

    def __getitem__(self, index: int):
        from PIL import Image

        index = int(index)
        path = self.samples[index // self.num_views]
        rng = np.random.default_rng([self.seed, 0, index])
        if self.mode == 'train':
            t = self.cfg.TRAIN
            size = int(round(rng.uniform(t.min_size, t.max_size)))
            crop_size, temporal_idx, spatial_idx, num_views = t.target_size, -1, -1, 1
        else:
            size = crop_size = self.cfg.TEST.target_size
            temporal_idx, spatial_idx = divmod(index % self.num_views, self.cfg.TEST.num_spatial_crops)
            num_views = self.cfg.TEST.num_ensemble_views
        cap = cv2.VideoCapture(path)
        videolen = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        clip_size = self.num_frames * self.sampling_rate * cap.get(cv2.CAP_PROP_FPS) / self.target_fps
        frames = []
        if path.endswith('mp4'):
            delta = max(videolen - clip_size, 0)
            start = rng.uniform(0, delta) if temporal_idx == -1 else delta * temporal_idx / num_views
            end = start + clip_size - 1
            cap.set(cv2.CAP_PROP_POS_FRAMES, math.ceil(start))
            for i in range(videolen):
                if i < start:
                    continue
                ok, frame = cap.read()
                if not ok:
                    continue
                if i <= end + 1:
                    frames.append(frame[:, :, ::-1])
                else:
                    break
            start_f, end_f = 0, clip_size - 1
        else:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame[:, :, ::-1])
            delta = max(len(frames) - clip_size, 0)
            start_f = rng.uniform(0, delta) if temporal_idx == -1 else delta * temporal_idx / num_views
            end_f = start_f + clip_size - 1
        cap.release()
        idx = np.clip(np.linspace(start_f, end_f, self.num_frames).astype(np.int64), 0, len(frames) - 1)
        imgs = [Image.fromarray(np.ascontiguousarray(frames[i]), mode='RGB') for i in idx]
        w, h = imgs[0].size
        if min(w, h) != size:
            ow, oh = (size, int(h / w * size)) if w <= h else (int(w / h * size), size)
            imgs = [img.resize((ow, oh), Image.BILINEAR) for img in imgs]
        w, h = imgs[0].size
        y, x = crop_offset(h, w, crop_size, spatial_idx, self.cfg.TEST.num_spatial_crops, rng)
        imgs = [img.crop((x, y, x + crop_size, y + crop_size)) for img in imgs]
        if spatial_idx == -1 and rng.uniform() < 0.5:
            imgs = [img.transpose(Image.FLIP_LEFT_RIGHT) for img in imgs]
        clip = (np.stack([np.asarray(img) for img in imgs]).astype('float32') / 255.0 - self.mean) / self.std
        slow = clip[np.linspace(0, len(clip) - 1, len(clip) // self.alpha).astype(np.int64)]
        return slow.transpose(3, 0, 1, 2), clip.transpose(3, 0, 1, 2)


def opencv_capture(path: str) -> cv2.VideoCapture:
    """As KineticsDataset threads its decoder: one FFmpeg thread inside a DataLoader worker, one per core outside."""
    if paddle.io.get_worker_info() is None:
        return cv2.VideoCapture(path)
    return cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])


class DecodeFloor(paddle.io.Dataset):
    """Seek to the training clip's first frame and grab its span: the least any OpenCV pipeline must do."""

    def __init__(self, samples: List[str], cfg: AttrDict, seed: int = 0):
        self.samples, self.cfg, self.seed = samples, cfg, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        index = int(index)
        t, m = self.cfg.TRAIN, self.cfg.MODEL
        rng = np.random.default_rng([self.seed, 0, index])
        rng.uniform(t.min_size, t.max_size)  # keep the stream in step with KineticsDataset's draws
        cap = opencv_capture(self.samples[index])
        clip_size = m.num_frames * m.sampling_rate * cap.get(cv2.CAP_PROP_FPS) / m.target_fps
        indices = clip_frame_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), clip_size, m.num_frames, None, rng)
        if indices[0] > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(indices[0]))
        for _ in range(int(indices[-1] - indices[0]) + 1):
            cap.grab()
        cap.release()
        return np.zeros(1, np.float32)


class OpenCVFrameSeeker:
    """This project's previous reader, kept to compare decoders: OpenCV's declared frame count and rate, a seek by
    frame number (``CAP_PROP_POS_FRAMES``), grab forward, convert and resize only the kept frames; a stream that ends
    well before the declared count is an error (it took such files for truncated)."""

    def __init__(self, path: str, threads: int = 1):
        self.path = path
        self.cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
        if not self.cap.isOpened():
            raise VideoError(path, 'OpenCV cannot open it')
        self.fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.num_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.num_frames <= 0:
            self.num_frames = 0
            while self.cap.grab():
                self.num_frames += 1
            self.cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])

    def read(self, indices: np.ndarray, short_side: Optional[int] = None) -> np.ndarray:
        first, last = int(indices[0]), int(indices[-1])  # sorted, as clip indices are
        position = first if first > 0 and self.cap.set(cv2.CAP_PROP_POS_FRAMES, first) else 0
        kept, wanted = {}, set(indices.tolist())
        for index in range(position, last + 1):
            if not self.cap.grab():
                if index < self.num_frames - max(3, self.num_frames // 50):
                    raise VideoError(self.path, f'stream ends at frame {index} of {self.num_frames} declared')
                break
            if index in wanted:
                frame = self.cap.retrieve()[1]
                if short_side:
                    height, width = scaled_size(frame.shape[0], frame.shape[1], short_side)
                    frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
                kept[index] = frame
        if not kept:
            raise VideoError(self.path, f'no frame decodes in [{first}, {last}]')
        last_kept = kept[max(kept)]
        return np.stack([kept.get(int(i), last_kept) for i in indices])

    def close(self) -> None:
        self.cap.release()
