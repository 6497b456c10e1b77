"""Test videos whose frames carry their own index, so a test can read back which source frame it got.

Bits 0-7 of the index are 8 blocks across the top half of the centre ``height``-wide square, bits 8-15 across the
bottom half; a block is white for 1, black for 0. Large flat blocks survive lossy codecs and resizing.
"""
import numpy as np

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
