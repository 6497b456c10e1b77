"""Video decoding and encoding with PyAV (FFmpeg), shared by the datasets and the tools.

``VideoReader`` reads frames by their index in a full sequential decode, with seeks: it indexes the stream's packets,
seeks to the keyframe before a clip, decodes forward and converts only the frames it keeps.
``write_video`` encodes RGB frames to H.264 (.mp4, .mkv), VP9 (.webm) or MPEG-4 part 2 (.avi).
"""
import logging
import math
import os
from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple

import av
import av.video.reformatter
import cv2
import numpy as np

from atomic import atomic_path

logger = logging.getLogger(__name__)


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


class IndexChanged(Exception):
    """Raised by ``VideoReader.read`` when a decode disagreed with the packet index and the reader re-indexed the
    video by decoding it: ``num_frames`` (and ``fps``) now hold the truth; sample the clip again and re-read."""


class VideoReader:
    """Frames of one video by their index in a full sequential decode (presentation order), read with seeks.

    Frame ``i`` is the ``i``-th frame FFmpeg outputs when it decodes the video from its start: what ``ffmpeg -i``,
    PyAV or OpenCV give when they read every frame. Containers often declare something else: an MP4 cut with
    ``-c copy`` carries an edit list whose hidden frames still count in its sample table, a stream starting at a
    non-zero time makes duration-based counts too large, variable frame rate breaks ``frame = time x fps``.

    On open, the video stream's packets are read (demuxed, not decoded: a few per cent of a decode): the presentation
    timestamps of the packets FFmpeg will output (edit-list-hidden ones left out), sorted, are the frames' timestamps,
    and their count is ``num_frames``. ``read`` seeks to the last keyframe before the first wanted frame, decodes
    forward and picks frames by timestamp; every decoded timestamp is checked against the index, and a seek that
    lands late steps back a keyframe (finally to the start). When a decode disagrees with the index (a packet that
    yields no frame, frames before the first keyframe the decoder drops, a damaged packet) the video is indexed again
    by decoding it whole, and ``read`` raises ``IndexChanged``. Streams without usable timestamps are read as a
    sequential decode from the start (counted once on open).

    ``fps``: the stream's declared average rate when it agrees with the rate the frames' timestamps give (within
    1 %; ``measured_rate``: robust to a few odd timestamps, the average only where durations genuinely vary), else
    that measured rate, else ``fallback_fps``.
    ``threads``: FFmpeg decoding threads (None: one per core); 1 in DataLoader workers, where the workers already fill
    the cores.
    """

    def __init__(self, path: str, fallback_fps: float, threads: Optional[int] = None):
        self.path, self.fallback_fps, self.threads = path, float(fallback_fps), threads
        if not os.path.isfile(path):
            raise VideoError(path, 'file not found')
        if os.path.getsize(path) == 0:
            raise VideoError(path, 'empty file (0 bytes)')
        self.container = None
        self._open()
        codec = self.stream.codec_context
        self.height, self.width = codec.height, codec.width  # as coded; frames come turned upright (to_bgr)
        self.pts: Optional[np.ndarray] = None  # presentation timestamps of frames 0..n-1; None: sequential mode
        self._count = 0  # frames: len(self.pts), or the decoded count in sequential mode
        self.keyframes = np.zeros(0, dtype=np.int64)  # timestamps of the keyframe packets, sorted
        self._known: Optional[frozenset] = None  # the set of self.pts, for membership tests
        try:
            self._index_packets()
        except VideoError:
            self.close()
            raise

    # -- opening and indexing ------------------------------------------------------------------------------------

    def _open(self) -> None:
        """(Re)open the container: a fresh demuxer and decoder, positioned at the start."""
        if self.container is not None:
            self.container.close()
        try:
            self.container = av.open(self.path, metadata_errors='ignore')
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
            raise VideoError(self.path, f'cannot open it (not a video, corrupt header, or unsupported format): '
                                        f'{error}') from None
        if not self.container.streams.video:
            self.close()
            raise VideoError(self.path, 'no video stream')
        self.stream = self.container.streams.video[0]
        codec = self.stream.codec_context
        codec.thread_type = 'AUTO'  # frame and slice threads
        codec.thread_count = self.threads or 0  # 0: one per core

    def _index_packets(self) -> None:
        pts, keyframes, starts_with_keyframe = [], [], None
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                if starts_with_keyframe is None:
                    starts_with_keyframe = bool(packet.is_keyframe)
                if packet.is_keyframe and packet.pts is not None:
                    keyframes.append(packet.pts)  # a hidden keyframe is still a place to start decoding
                if not packet.is_discard:  # hidden by an edit list: decoded for its references, never output
                    pts.append(packet.pts)
        except av.error.FFmpegError:
            pass  # a damaged tail: the packets before it are indexed; reads check the rest against the decode
        self.keyframes = np.unique(np.asarray(keyframes, dtype=np.int64))
        if starts_with_keyframe and pts and None not in pts and len(set(pts)) == len(pts):
            self._use_index(np.sort(np.asarray(pts, dtype=np.int64)), 'packets', len(pts))
        else:  # no timestamps, repeated ones, or frames before the first keyframe: only a decode can tell
            self._index_by_decoding()

    def _index_by_decoding(self) -> None:
        """The truth, at the cost of a full decode: the timestamps of every frame FFmpeg outputs, in order."""
        self._open()
        decoded = [frame.pts for frame in self._decode_from_here()]
        if not decoded:
            raise VideoError(self.path, 'no frame decodes')
        if None not in decoded and all(a < b for a, b in zip(decoded, decoded[1:])):
            self._use_index(np.asarray(decoded, dtype=np.int64), 'decoded', len(decoded))
        else:  # frames are known only by their place in the decode
            self.keyframes = np.zeros(0, dtype=np.int64)
            self._use_index(None, 'sequential', len(decoded))

    def _use_index(self, pts: Optional[np.ndarray], mode: str, count: int) -> None:
        """Adopt an index (the frames' timestamps, None in sequential mode) and the rate that follows from it."""
        self.pts, self.mode, self._count, self._known = pts, mode, count, None
        self._set_fps()

    @property
    def num_frames(self) -> int:
        return self._count

    def _declared_rate(self) -> Optional[float]:
        """The stream's average frame rate as the container declares it (else FFmpeg's guess), None if absent."""
        for rate in (self.stream.average_rate, self.stream.guessed_rate):
            if rate and 1.0 <= float(rate) <= 1000.0:
                return float(rate)
        return None

    def _set_fps(self) -> None:
        declared = self._declared_rate()
        time_base = float(self.stream.time_base)
        measured = measured_rate(np.diff(self.pts) * time_base, time_base) if self.pts is not None else None
        if declared and (measured is None or abs(declared / measured - 1.0) < 0.01):
            self.fps = declared
        elif measured and 1.0 <= measured <= 1000.0:
            self.fps = measured
        else:
            self.fps = self.fallback_fps

    # -- decoding ------------------------------------------------------------------------------------------------

    def _decode_from_here(self, keep: Optional[frozenset] = None) -> Iterator['av.VideoFrame']:
        """Every frame from the demuxer's position on; a packet the decoder rejects is skipped (as ffmpeg does).

        ``keep``: the timestamps wanted; FFmpeg's own decoders that honour ``skip_frame`` packet by packet then skip
        the non-reference frames (no other frame depends on them, e.g. most B-frames) of the other packets, which
        yield no frame."""
        codec = self.stream.codec_context
        if codec.name not in SKIPPING_DECODERS:
            keep = None
        skipping = False
        try:
            for packet in self.container.demux(self.stream):
                if keep is not None and (packet.pts not in keep) != skipping:
                    skipping = not skipping
                    codec.skip_frame = 'NONREF' if skipping else 'DEFAULT'
                try:
                    frames = packet.decode()  # the end-of-stream packet flushes the decoder
                except av.error.FFmpegError:
                    continue
                yield from frames
        except av.error.FFmpegError:  # the demuxer gave up on a damaged tail
            return
        finally:
            if skipping:
                codec.skip_frame = 'DEFAULT'

    def _seek(self, timestamp: Optional[int]) -> None:
        """Position the demuxer at the keyframe ``timestamp`` (None: the start) and reset the decoder."""
        if timestamp is None:
            self._open()
        else:
            self.container.seek(int(timestamp), backward=True, any_frame=False, stream=self.stream)

    def read(self, indices: Sequence[int], short_side: Optional[int] = None) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as ``[len(indices), H, W, 3]`` BGR uint8, each resized
        on decode to ``short_side`` (the original's scale; None keeps the size).

        Indices past the last frame read the last frame (the original's clamping). Raises ``IndexChanged`` when the
        decode disagreed with the packet index (``num_frames`` is now the decoded count: sample again), VideoError
        when a wanted frame does not decode even from the start.
        """
        indices = np.minimum(np.asarray(indices, dtype=np.int64), self.num_frames - 1)
        if len(indices) == 0 or indices.min() < 0:
            raise ValueError(f'frame indices must be non-negative, got {indices.tolist()}')
        wanted = np.unique(indices)  # sorted
        try:
            if self.pts is None:
                out = self._read_sequential(wanted, short_side)
            else:
                out = self._read_by_timestamp(wanted, short_side)
        except ValueError as error:  # e.g. a frame whose size changes mid-stream
            raise VideoError(self.path, f'decoding error: {error}') from None
        if len(wanted) == len(indices) and np.array_equal(wanted, indices):
            return out
        return out[np.searchsorted(wanted, indices)]

    def _read_by_timestamp(self, wanted: np.ndarray, short_side: Optional[int]) -> np.ndarray:
        targets = self.pts[wanted]
        # the last keyframe at or before the first wanted frame, the one before it, then the start of the file
        before = self.keyframes[:np.searchsorted(self.keyframes, targets[0], side='right')]
        for start in [*before[::-1][:2], None]:
            self._seek(start)
            # from the start nothing is skipped: that decode is the truth itself
            frames, problem = self._collect(targets, short_side, skip=start is not None)
            if frames is not None:
                return frames
        # decoded from the start, the stream disagrees with the index
        if self.mode == 'packets':
            self._index_by_decoding()
            raise IndexChanged(f'{self.path}: {problem}; indexed again by decoding: {self.num_frames} frames')
        raise VideoError(self.path, f'the decode is not repeatable: {problem}')

    def _collect(self, targets: np.ndarray, short_side: Optional[int],
                 skip: bool) -> Tuple[Optional[np.ndarray], str]:
        """Decode forward from the demuxer's position and keep the frames at ``targets`` (sorted timestamps),
        skipping the non-reference frames of the others if ``skip``; ``(frames, '')``, or ``(None, what disagreed
        with the index)``."""
        out, known = _FrameSink(len(targets), short_side), self._known_timestamps()
        for frame in self._decode_from_here(keep=frozenset(targets.tolist()) if skip else None):
            timestamp = frame.pts
            if timestamp is None:
                return None, 'a decoded frame has no timestamp'
            if timestamp not in known:
                return None, f'decoded timestamp {timestamp} is not in the index'
            if timestamp > targets[out.count]:
                return None, f'frame {int(np.searchsorted(self.pts, targets[out.count]))} did not decode'
            if timestamp == targets[out.count]:
                out.put(frame)
                if out.count == len(targets):
                    return out.frames, ''
        return None, f'the stream ended before frame {int(np.searchsorted(self.pts, targets[out.count]))}'

    def _known_timestamps(self) -> frozenset:
        if self._known is None:
            self._known = frozenset(self.pts.tolist())
        return self._known

    def read_sampled(self, sample: Callable[[int, float], np.ndarray],
                     short_side: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(indices, frames)`` for ``indices = sample(num_frames, fps)``: the sampling runs again on the true length
        when the decode corrected the packet index (``IndexChanged``)."""
        indices = sample(self.num_frames, self.fps)
        try:
            return indices, self.read(indices, short_side)
        except IndexChanged as change:
            logger.info('%s', change)
        indices = sample(self.num_frames, self.fps)
        return indices, self.read(indices, short_side)

    def _read_sequential(self, wanted: np.ndarray, short_side: Optional[int]) -> np.ndarray:
        frames = [frame for _, frame in self.read_forward(wanted, short_side)]
        if len(frames) < len(wanted):
            raise VideoError(self.path, f'the stream ends before frame {int(wanted[len(frames)])}')
        return np.stack(frames)

    def read_forward(self, wanted: np.ndarray,
                     short_side: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """``(index, frame)`` for the sorted, distinct frame ``wanted`` indices, in order, from one sequential decode
        from the start (long videos: no seek, every frame decoded once, only the wanted ones converted and resized to
        ``short_side``; all to the first one's size, as ``read``). Ends at the last wanted frame, or earlier where the
        stream ends."""
        if len(wanted) == 0:
            return
        self._seek(None)
        position, size = 0, None
        for index, frame in enumerate(self._decode_from_here()):
            if index == wanted[position]:
                image = to_bgr(frame)
                if size is None:  # as _FrameSink: the first frame's size, scaled, for every frame
                    size = scaled_size(*image.shape[:2], short_side) if short_side else image.shape[:2]
                yield index, resize_to(image, size)
                position += 1
                if position == len(wanted):
                    return

    def _decode_all(self) -> Iterator['av.VideoFrame']:
        """Every frame of a sequential decode from the start; VideoError when none decodes."""
        self._seek(None)
        count = 0
        for frame in self._decode_from_here():
            count += 1
            yield frame
        if count == 0:
            raise VideoError(self.path, 'no frame decodes')

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame from the start (BGR uint8 ``[H, W, 3]``), as a sequential decode yields them."""
        for frame in self._decode_all():
            yield to_bgr(frame)

    def check(self) -> int:
        """Decode the whole stream, converting its first frame, and return the frames it holds; VideoError when none
        decodes. (tools/data/check_videos.py compares the count with ``num_frames`` from the packets.)"""
        count = 0
        for frame in self._decode_all():
            if count == 0:
                to_bgr(frame)
            count += 1
        return count

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def __enter__(self) -> 'VideoReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# FFmpeg's decoders that read ``skip_frame`` for each packet (a wrapper such as libdav1d reads it once, at open)
SKIPPING_DECODERS = frozenset({'h264', 'hevc', 'mpeg1video', 'mpeg2video', 'mpeg4', 'vp8', 'vp9'})

_converter: Tuple[int, Optional['av.video.reformatter.VideoReformatter']] = (0, None)  # (pid, converter)


def to_bgr(frame: 'av.VideoFrame') -> np.ndarray:
    """A decoded frame as BGR uint8 ``[H, W, 3]`` as displayed, the same pixels as OpenCV's ``read`` and the ffmpeg
    tool (the same swscale call; turned upright by the stream's rotation, as both do).

    One converter per process, single-threaded: ``frame.to_ndarray`` builds a new swscale context per call, which
    costs more than converting a small frame, and swscale's own thread pool would not survive the fork into
    DataLoader workers (a converter used before the fork deadlocks in the child)."""
    global _converter
    if _converter[0] != os.getpid():
        _converter = (os.getpid(), av.video.reformatter.VideoReformatter())
    try:
        image = _converter[1].reformat(frame, format='bgr24', threads=1).to_ndarray()
    except TypeError:  # PyAV before 14 has no threads argument and scales on one thread
        image = _converter[1].reformat(frame, format='bgr24').to_ndarray()
    quarter_turns = round(getattr(frame, 'rotation', 0) / 90) % 4  # the display matrix of phone videos
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def resize_to(image: np.ndarray, size: Tuple[int, int], out: Optional[np.ndarray] = None) -> np.ndarray:
    """``image`` at ``size`` ``(H, W)``: OpenCV's bilinear ``INTER_LINEAR`` on uint8 (PySlowFast's), or ``image``
    itself when it has that size; written into ``out`` when given."""
    if tuple(image.shape[:2]) == tuple(size):
        if out is None:
            return image
        out[...] = image
        return out
    return cv2.resize(image, (size[1], size[0]), dst=out, interpolation=cv2.INTER_LINEAR)


def resize_short_side(image: np.ndarray, short_side: Optional[int]) -> np.ndarray:
    """``image`` with its short side at ``short_side`` (``scaled_size``; None: unchanged)."""
    return resize_to(image, scaled_size(*image.shape[:2], short_side)) if short_side else image


class _FrameSink:
    """Decoded frames -> one preallocated ``[n, H, W, 3]`` BGR uint8 array, resized to ``short_side`` on the way."""

    def __init__(self, n: int, short_side: Optional[int]):
        self.n, self.short_side, self.count, self.frames = n, short_side, 0, None

    def put(self, frame: 'av.VideoFrame') -> None:
        image = to_bgr(frame)
        if self.frames is None:
            height, width = image.shape[:2]
            if self.short_side:
                height, width = scaled_size(height, width, self.short_side)
            self.frames = np.empty((self.n, height, width, 3), dtype=np.uint8)
        resize_to(image, self.frames.shape[1:3], out=self.frames[self.count])
        self.count += 1


VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov', '.m4v', '.flv', '.mpg', '.mpeg')
CODECS = {'.mp4': 'libx264', '.mkv': 'libx264', '.webm': 'libvpx-vp9', '.avi': 'mpeg4'}


def measured_rate(durations: np.ndarray, tick: float = 0.0) -> Optional[float]:
    """Frames per second from the frames' durations (seconds, in presentation order). A constant rate unless more than
    2 % of the durations are off their median by more than 1 % (or by more than ``tick``, the time base they were
    rounded to): the mean of the regular durations, so a few odd timestamps (a re-mux can leave the last frame's
    late) change nothing. Otherwise the stream's average (variable frame rate). None without a duration, or outside
    [1, 1000]."""
    durations = np.asarray(durations, dtype=np.float64)
    if len(durations) == 0 or durations.sum() <= 0:
        return None
    median = float(np.median(durations))
    regular = np.abs(durations - median) <= max(0.01 * median, tick) * (1 + 1e-9)
    rate = 1.0 / float(durations[regular].mean()) if regular.mean() >= 0.98 else len(durations) / durations.sum()
    return float(rate) if 1.0 <= rate <= 1000.0 else None


def write_video(path: str, frames: Iterable[np.ndarray], fps: float, crf: int = 23, gop: Optional[int] = None) -> int:
    """Encode RGB uint8 frames ``[H, W, 3]`` (even H and W) to ``path``; the codec follows the extension. ``gop``:
    at most this many frames from one keyframe to the next (None: the encoder's default, x264's 250).

    Written through ``atomic.atomic_path``: an interrupted write leaves no half file under ``path``.
    Returns the number of frames written.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in CODECS:
        raise ValueError(f'cannot choose a codec for {path}: use one of {sorted(CODECS)}')
    count = 0
    with atomic_path(path, keep_extension=True) as tmp:  # PyAV picks the container by the extension
        with av.open(tmp, mode='w') as container:
            stream = container.add_stream(CODECS[ext], rate=_fps_fraction(fps))
            stream.pix_fmt = 'yuv420p'
            if CODECS[ext] == 'libx264':
                stream.options = {'crf': str(crf), 'preset': 'veryfast'}
            elif CODECS[ext] == 'libvpx-vp9':
                stream.options = {'crf': str(crf + 8), 'b': '0', 'deadline': 'realtime', 'cpu-used': '8'}
            if gop:
                stream.options = {**stream.options, 'g': str(gop)}
            for frame in frames:
                if count == 0:
                    stream.height, stream.width = frame.shape[:2]
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')))
                count += 1
            container.mux(stream.encode())
    return count


def _fps_fraction(fps: float):
    from fractions import Fraction
    return Fraction(fps).limit_denominator(1001)
