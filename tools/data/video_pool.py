"""Running a function over many videos in worker processes, with a progress bar (check_videos.py, resize_videos.py).
"""
import multiprocessing
from typing import Callable, Sequence

import cv2
from tqdm import tqdm


def map_videos(func: Callable, jobs: Sequence, workers: int, desc: str) -> list:
    """``[func(job) for job in jobs]`` in ``workers`` processes (one OpenCV thread each), with a progress bar."""
    pool = multiprocessing.Pool(max(1, workers), initializer=cv2.setNumThreads, initargs=(1,))
    results = list(tqdm(pool.imap(func, jobs), total=len(jobs), desc=desc, unit='video'))
    pool.close()  # workers exit on their own: terminate() would SIGTERM them, which Paddle's handler reports as a crash
    pool.join()
    return results
