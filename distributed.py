"""Device choice and the data-parallel helpers shared by train.py, eval.py and predict.py.

Ranks come from ``python -m paddle.distributed.launch`` (NCCL on GPUs, gloo on CPU); a plain ``python script.py`` is
rank 0 of 1.
"""
import logging
from typing import Optional, Tuple

import numpy as np
import paddle
import paddle.distributed as dist

logger = logging.getLogger(__name__)


def cuda_available() -> bool:
    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def setup(use_gpu: Optional[bool], use_data_parallel: bool) -> Tuple[str, int, int]:
    """Pick the device and join the process group; returns ``(device, rank, world_size)``.

    ``use_gpu`` None or True: the GPU when Paddle has CUDA (True without CUDA falls back to the CPU with a
    warning); False: the CPU.
    """
    world = dist.get_world_size() if use_data_parallel else 1
    if use_gpu is not False and cuda_available():
        device = f'gpu:{dist.ParallelEnv().device_id}' if world > 1 else 'gpu'
    else:
        if use_gpu:
            logger.warning('use_gpu is True but this Paddle has no CUDA device: running on the CPU')
        device = 'cpu'
    paddle.set_device(device)
    if world > 1:
        dist.init_parallel_env()
    return device, dist.get_rank() if world > 1 else 0, world


def split_batch(total: int, parts: int, key: str, what: str = 'ranks') -> int:
    """``total // parts``; ValueError naming ``key`` when the global batch does not divide."""
    if total % parts:
        raise ValueError(f'{key} ({total}) must be divisible by {parts} ({what})')
    return total // parts


def all_reduce_sum(values, world: int):
    """Element-wise sum over ranks (float64) of a list of numbers (returns a list) or an array (returns an array)."""
    array = np.asarray(values, dtype=np.float64)
    if world > 1:
        tensor = paddle.to_tensor(array)
        dist.all_reduce(tensor)
        array = tensor.numpy()
    return array if isinstance(values, np.ndarray) else array.tolist()


def average_buffers(model: paddle.nn.Layer, world: int) -> None:
    """Average non-trainable state (BN running statistics) over ranks, so every rank holds the same model.

    Gradients are averaged by DataParallel, but each rank's BN statistics follow its own batches.
    """
    if world == 1:
        return
    for tensor in model.buffers() + [p for p in model.parameters() if p.stop_gradient]:
        averaged = tensor.detach().astype('float32')
        dist.all_reduce(averaged)
        tensor.set_value((averaged / world).astype(tensor.dtype))


def max_rank_difference(model: paddle.nn.Layer, world: int) -> float:
    """The largest absolute difference of any parameter or buffer between any rank and rank 0 (on every rank)."""
    if world == 1:
        return 0.0
    worst = 0.0
    for tensor in model.state_dict().values():
        mine = tensor.detach().astype('float32')
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        worst = max(worst, (mine - reference).abs().max().item())
    return all_reduce_max(worst, world)


def all_reduce_max(value: float, world: int) -> float:
    if world == 1:
        return value
    tensor = paddle.to_tensor([value], dtype='float32')
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.item()
