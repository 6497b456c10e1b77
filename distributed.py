"""Device choice and the data-parallel helpers shared by train.py, eval.py and predict.py.

Ranks come from ``python -m paddle.distributed.launch`` (NCCL on GPUs, gloo on CPU); a plain ``python train.py`` is
rank 0 of 1.
"""
import logging
import os
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

import numpy as np
import paddle
import paddle.distributed as dist

from errors import ConfigError, UserError, error_of_status

logger = logging.getLogger(__name__)
T = TypeVar('T')


def cuda_available() -> bool:
    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def tune_cpu_blas() -> bool:
    """On an AMD CPU with AVX2, make the Intel MKL that Paddle's CPU convolutions and matmuls call take its AVX2 code
    path (``MKL_DEBUG_CPU_TYPE=5``, honoured by the MKL Paddle bundles): on non-Intel CPUs MKL otherwise falls back
    to a generic path, measured 2-3x slower per GEMM on this project's AMD EPYC machine (docs/BENCHMARKS.md). MKL
    reads the variable at its first call, so call this before any computation; a value already set is kept, and
    DataLoader workers inherit it. Returns whether it set the variable."""
    if 'MKL_DEBUG_CPU_TYPE' in os.environ:
        return False
    try:
        with open('/proc/cpuinfo') as f:
            cpuinfo = f.read(1 << 16)  # the first processor's entry is enough
    except OSError:  # not Linux
        return False
    flags = next((line.split(':', 1)[1].split() for line in cpuinfo.splitlines() if line.startswith('flags')), [])
    if 'AuthenticAMD' not in cpuinfo or 'avx2' not in flags:
        return False
    os.environ['MKL_DEBUG_CPU_TYPE'] = '5'
    return True


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
        if tune_cpu_blas():
            logger.info('AMD CPU: MKL_DEBUG_CPU_TYPE=5 (MKL\'s AVX2 code path for the CPU GEMMs)')
    paddle.set_device(device)
    if world > 1 and not dist.is_initialized():  # once per process (a script's main may run more than once)
        dist.init_parallel_env()
    return device, dist.get_rank() if world > 1 else 0, world


def split_batch(total: int, parts: int, key: str, what: str = 'ranks') -> int:
    """``total // parts``; ConfigError naming ``key`` when the global batch does not divide."""
    if total % parts:
        raise ConfigError(f'{key} ({total}) must be divisible by {parts} ({what})')
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
    for tensor in non_trainable_state(model).values():
        averaged = tensor.detach().astype('float32')
        dist.all_reduce(averaged)
        tensor.set_value((averaged / world).astype(tensor.dtype))


def max_rank_difference(model: paddle.nn.Layer, world: int, trainable_only: bool = False) -> float:
    """The largest absolute difference of any parameter and buffer (or only of the trainable parameters) between
    any rank and rank 0 (on every rank)."""
    if world == 1:
        return 0.0
    worst = 0.0
    tensors = ([p for p in model.parameters() if not p.stop_gradient] if trainable_only
               else model.state_dict().values())
    for tensor in tensors:
        mine = tensor.detach().astype('float32')
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        worst = max(worst, (mine - reference).abs().max().item())
    return all_reduce_max(worst, world)


def all_reduce_max(values, world: int):
    """Element-wise maximum over ranks of a number (returns a float) or a list of numbers (returns a list)."""
    if world == 1:
        return values
    tensor = paddle.to_tensor(np.atleast_1d(np.asarray(values, dtype=np.float32)))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.numpy().tolist() if isinstance(values, (list, tuple)) else tensor.item()


def rank_0_does(work: Callable[[], T], rank: int, world: int) -> Optional[T]:
    """Rank 0 runs ``work`` (a check before the run's work, a checkpoint's save) and every rank learns how it went:
    when it raises, every rank raises (rank 0 its own error, the others one of the same kind quoting it), so that no
    rank goes on to wait in a collective for a rank that has stopped. Returns ``work``'s result on rank 0, None on the
    others."""
    result, failure, status, text = None, None, 0, ''
    if rank == 0:
        try:
            result = work()
        except UserError as error:
            failure, status, text = error, error.status, str(error)
        except Exception as error:
            failure, status, text = error, 1, f'{type(error).__name__}: {error} (its traceback is in rank 0\'s log)'
    if world > 1:
        message = np.zeros(4097, np.int32)  # [status, the message's first 4096 UTF-8 bytes]
        encoded = np.frombuffer(text.encode('utf-8')[:4096], np.uint8)
        message[0], message[1:1 + len(encoded)] = status, encoded
        tensor = paddle.to_tensor(message)
        dist.broadcast(tensor, src=0)
        message = tensor.numpy()
        status, text = int(message[0]), bytes(message[1:][message[1:] > 0].astype(np.uint8)).decode('utf-8', 'replace')
    if failure is not None:
        raise failure
    if status:
        raise error_of_status(status, f'rank 0 stopped: {text}')
    return result


def all_gather_array(array: np.ndarray, world: int) -> np.ndarray:
    """``[world, *array.shape]``: every rank's ``array`` (same shape and dtype on all), on every rank."""
    if world == 1:
        return array[None]
    gathered = []
    dist.all_gather(gathered, paddle.to_tensor(array))
    return np.stack([t.numpy() for t in gathered])


def non_trainable_state(model: paddle.nn.Layer) -> Dict[str, paddle.Tensor]:
    """The state_dict entries no optimizer step touches: buffers and the BN running statistics (Paddle keeps those
    as parameters that stop gradients)."""
    trainable = {name for name, p in model.named_parameters() if not p.stop_gradient}
    return {k: v for k, v in model.state_dict().items() if k not in trainable}


def gather_non_trainable_state(model: paddle.nn.Layer, world: int) -> List[Dict[str, np.ndarray]]:
    """Every rank's ``non_trainable_state`` (which follows each rank's own batches), on every rank."""
    state = {k: v.numpy() for k, v in non_trainable_state(model).items()}
    flat = np.concatenate([v.astype(np.float32).ravel() for v in state.values()])
    ranks = []
    for row in all_gather_array(flat, world):
        start, mine = 0, {}
        for name, value in state.items():
            mine[name] = row[start:start + value.size].reshape(value.shape).astype(value.dtype)
            start += value.size
        ranks.append(mine)
    return ranks
