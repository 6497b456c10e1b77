"""What the benchmarks share: the machine a figure was measured on, timing, and whether the PyTorch reference can run.
"""
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, Optional

import av
import cv2
import numpy as np
import paddle

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def machine_info() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    if os.path.isfile('/proc/cpuinfo'):
        names = [line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')]
        cpu = names[0] if names else cpu
    return {'cpu': cpu, 'cores': str(os.cpu_count()), 'python': platform.python_version(),
            'paddle': paddle.__version__, 'opencv': cv2.__version__, 'pyav': av.__version__,
            'ffmpeg (pyav)': '.'.join(map(str, av.library_versions['libavcodec'])) + ' (libavcodec)',
            'numpy': np.__version__,
            'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', 'unset'),
            'MKL_DEBUG_CPU_TYPE': os.environ.get('MKL_DEBUG_CPU_TYPE', 'unset'),
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}


def median_ms(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


NO_TORCH = 'PyTorch reference not timed: torch or pytorchvideo is not installed'


def torch_reference_available() -> bool:
    """Whether torch and pytorchvideo are installed (without importing them into this process)."""
    from importlib.util import find_spec

    return find_spec('torch') is not None and find_spec('pytorchvideo') is not None


def report(result: Dict, text: str, json_path: Optional[str]) -> None:
    """Print a benchmark's table and write its result as JSON where asked."""
    print(text)
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(result, f, indent=1)
