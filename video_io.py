"""Video decoding (OpenCV) and encoding (PyAV), shared by the datasets and the tools.

``VideoReader`` seeks to the first frame a clip needs, grabs forward and converts only the frames it keeps.
``write_video`` encodes RGB frames to H.264 (.mp4, .mkv), VP9 (.webm) or MPEG-4 part 2 (.avi).
"""
import math
import multiprocessing
import os
from typing import Callable, Iterable, Optional, Sequence, Tuple

import cv2
import numpy as np


def scaled_size(height: int, width: int, short_side: int) -> Tuple[int, int]:
    """``(h, w)`` with the short side at ``short_side`` and the long side floor-scaled (the original's scale)."""
    if min(height, width) == short_side:
        return height, width
    if width <= height:
        return int(math.floor(height / width * short_side)), short_side
    return short_side, int(math.floor(width / height * short_side))


class VideoError(Exception):
    """A video that cannot be decoded; ``reason`` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f'{path}: {reason}')
        self.path, self.reason = path, reason


class VideoReader:
    """An OpenCV capture that seeks to the first wanted frame and converts only the frames it keeps.

    ``threads``: FFmpeg decoding threads (None: OpenCV's default, one per core); 1 in DataLoader workers, where
    the workers already fill the cores and more threads only contend (measured about 20 % faster on 2 cores).
    ``fps`` comes from the container (``fallback_fps`` when it reports none); ``num_frames`` is the container's
    frame count, or counted by grabbing every frame when it reports none.
    """

    def __init__(self, path: str, fallback_fps: float, threads: Optional[int] = None):
        self.path = path
        self.threads = threads
        if not os.path.isfile(path):
            raise VideoError(path, 'file not found')
        if os.path.getsize(path) == 0:
            raise VideoError(path, 'empty file (0 bytes)')
        self.cap = self._open()
        if not self.cap.isOpened():
            raise VideoError(path, 'OpenCV cannot open it (not a video, corrupt header, or unsupported codec)')
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and 1.0 <= fps <= 1000.0 else float(fallback_fps)
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.num_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.num_frames <= 0:  # some containers carry no count: count by grabbing, then rewind
            self.num_frames = self._count_frames()
        if self.num_frames <= 0:
            raise VideoError(path, 'no frames')

    def _count_frames(self) -> int:
        count = 0
        while self.cap.grab():
            count += 1
        self.cap.release()
        self.cap = self._open()
        return count

    def _open(self) -> cv2.VideoCapture:
        if self.threads is None:
            return cv2.VideoCapture(self.path)
        return cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, self.threads])

    def read(self, indices: Sequence[int], short_side: Optional[int] = None) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as ``[len(indices), H, W, 3]`` BGR uint8, each resized
        on decode to ``short_side`` (the original's scale; None keeps the size).

        Indices past the end of the stream get the last decoded frame (the original's index clamping, so short
        videos repeat their last frame). Raises VideoError when no wanted frame decodes or the stream ends well
        before the container's frame count (a truncated file).
        """
        try:
            return self._read(np.asarray(indices, dtype=np.int64), short_side)
        except cv2.error as error:  # e.g. a frame whose size changes mid-stream
            raise VideoError(self.path, f'OpenCV error: {error}'.strip()) from None

    def _read(self, indices: np.ndarray, short_side: Optional[int]) -> np.ndarray:
        wanted = np.unique(indices)  # sorted
        first, last = int(wanted[0]), int(wanted[-1])
        position = first if first > 0 and self.cap.set(cv2.CAP_PROP_POS_FRAMES, first) else 0
        out, decoded = None, np.zeros(len(wanted), dtype=bool)
        slot, end = int(np.searchsorted(wanted, position)), None
        for index in range(position, last + 1):
            if not self.cap.grab():
                end = index
                break
            if index != wanted[slot]:
                continue
            ok, frame = self.cap.retrieve()
            if ok and frame is not None:
                if out is None:
                    height, width = frame.shape[:2]
                    if short_side:
                        height, width = scaled_size(height, width, short_side)
                    out = np.empty((len(wanted), height, width, 3), dtype=np.uint8)
                if frame.shape[:2] == (height, width):
                    out[slot] = frame
                else:
                    cv2.resize(frame, (width, height), dst=out[slot], interpolation=cv2.INTER_LINEAR)
                decoded[slot] = True
            slot += 1
        if end is not None:
            self._check_end(end)
        if out is None:
            raise VideoError(self.path, f'no frame decodes in [{first}, {last}]')
        if not decoded.all():  # clamp to the nearest decoded frame before (after, at the very start)
            good = np.flatnonzero(decoded)
            for slot in np.flatnonzero(~decoded):
                out[slot] = out[good[max(np.searchsorted(good, slot) - 1, 0)]]
        if len(wanted) == len(indices) and np.array_equal(wanted, indices):
            return out
        return out[np.searchsorted(wanted, indices)]

    def _check_end(self, end: int) -> None:
        """A stream may end a few frames before the container's (estimated) count; well before is a broken file."""
        if end < self.num_frames - max(3, self.num_frames // 50):
            raise VideoError(self.path, f'truncated or corrupt: the stream ends at frame {end} of the '
                                        f'{self.num_frames} the container declares')

    def frames(self) -> Iterable[np.ndarray]:
        """Every frame from the current position on (BGR uint8), then the end-of-stream check."""
        count = 0
        while True:
            ok, frame = self.cap.read()
            if not ok or frame is None:
                break
            count += 1
            yield frame
        if count == 0:
            raise VideoError(self.path, 'no frame decodes')
        self._check_end(count)

    def check(self) -> int:
        """Decode the whole stream (grab only; the first frame also converted) and return the frames it holds."""
        if not self.cap.grab() or self.cap.retrieve()[1] is None:
            raise VideoError(self.path, 'the first frame does not decode')
        count = 1
        while self.cap.grab():
            count += 1
        self._check_end(count)
        return count

    def close(self) -> None:
        self.cap.release()

    def __enter__(self) -> 'VideoReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov', '.m4v', '.flv', '.mpg', '.mpeg')
CODECS = {'.mp4': 'libx264', '.mkv': 'libx264', '.webm': 'libvpx-vp9', '.avi': 'mpeg4'}


def write_video(path: str, frames: Iterable[np.ndarray], fps: float, crf: int = 23) -> int:
    """Encode RGB uint8 frames ``[H, W, 3]`` (even H and W) to ``path``; the codec follows the extension.

    Writes to a temporary name and renames at the end, so an interrupted write leaves no half file under ``path``.
    Returns the number of frames written.
    """
    import av  # only the tools and tests write video

    ext = os.path.splitext(path)[1].lower()
    if ext not in CODECS:
        raise ValueError(f'cannot choose a codec for {path}: use one of {sorted(CODECS)}')
    tmp = f'{path}.part{os.getpid()}{ext}'
    count = 0
    try:
        with av.open(tmp, mode='w') as container:
            stream = container.add_stream(CODECS[ext], rate=_fps_fraction(fps))
            stream.pix_fmt = 'yuv420p'
            if CODECS[ext] == 'libx264':
                stream.options = {'crf': str(crf), 'preset': 'veryfast'}
            elif CODECS[ext] == 'libvpx-vp9':
                stream.options = {'crf': str(crf + 8), 'b': '0', 'deadline': 'realtime', 'cpu-used': '8'}
            for frame in frames:
                if count == 0:
                    stream.height, stream.width = frame.shape[:2]
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')))
                count += 1
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return count


def map_videos(func: Callable, jobs: Sequence, workers: int, desc: str) -> list:
    """``[func(job) for job in jobs]`` in ``workers`` processes (one OpenCV thread each), with a progress bar."""
    from tqdm import tqdm

    pool = multiprocessing.Pool(max(1, workers), initializer=cv2.setNumThreads, initargs=(1,))
    results = list(tqdm(pool.imap(func, jobs), total=len(jobs), desc=desc, unit='video'))
    pool.close()  # workers exit on their own: terminate() would SIGTERM them, which Paddle's handler reports as a crash
    pool.join()
    return results


def _fps_fraction(fps: float):
    from fractions import Fraction
    return Fraction(fps).limit_denominator(1001)
