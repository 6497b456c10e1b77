"""How much a DataLoader keeps in shared memory, decided before its workers start.

Paddle's DataLoader workers hand every item to the main process through shared memory (``use_shared_memory=True``,
its default): a memory-mapped file in /dev/shm per array, alive from when the worker has made the item until the
main process drops it. When /dev/shm fills, the next write kills the worker with a bus error and the run with
"Blocking queue is killed". Docker and Kubernetes give a container 64 MB of /dev/shm unless told otherwise, less
than one batch of the recipe's clips.

``loader_plan`` sizes what a loader keeps in flight (``workers x prefetch_factor`` items queued or being made, and
the two the loop holds) to this rank's share of the free space of /dev/shm, shared by the ranks of this machine
(``PADDLE_LOCAL_SIZE``): the configured loader when it fits; else, for an item that can be split (eval and predict
views), smaller items; else one item per worker in flight (of the largest size that fits); else items through pipes
(``use_shared_memory=False``: no shared memory, a copy more per item, measured in docs/BENCHMARKS.md), logged with the
size shared memory would need and how to give it.
"""
import logging
import math
import os
from typing import NamedTuple, Optional

logger = logging.getLogger(__name__)

SHM = '/dev/shm'
HELD = 2  # items the loop holds besides the loader's queue: the batch in use and, for views, the parts of the next
PREFETCH = 2  # Paddle's default prefetch_factor
MIB = 1 << 20
RESERVE = 0.9  # of the free space: what else puts files there (semaphores, Python's shared arrays) has the rest
# Pipes instead of shared memory: ms more per MiB of item, for a batch of the recipe's test views through 2 workers
# (docs/BENCHMARKS.md, "Shared memory"; AMD EPYC, 2 cores, Paddle 3.3.1: 2.5-2.7; one view's item 1.5-2.1)
PIPE_COST_MS_PER_MIB = 2.5


class LoaderPlan(NamedTuple):
    """What a DataLoader is given: ``units`` per item (clips per batch, or views per part), ``prefetch_factor`` and
    ``use_shared_memory``; ``need`` the bytes it keeps in shared memory (0 through pipes or without workers)."""
    units: int
    prefetch_factor: int
    use_shared_memory: bool
    need: int


def free_bytes(folder: str = SHM) -> Optional[int]:
    """Bytes free in ``folder`` (None where it does not exist: no /dev/shm, not Linux)."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def ranks_here() -> int:
    """The ranks of this run on this machine (paddle.distributed.launch's ``PADDLE_LOCAL_SIZE``; 1 without it)."""
    try:
        return max(1, int(os.environ.get('PADDLE_LOCAL_SIZE', '1')))
    except ValueError:
        return 1


def in_flight(workers: int, prefetch: int) -> int:
    """Items in shared memory at once: the loader's outstanding items (Paddle puts ``prefetch x workers`` indices
    out, in the workers or queued) and the ``HELD`` the loop holds."""
    return workers * prefetch + HELD


def size_text(num_bytes: float) -> str:
    return f'{num_bytes / MIB:.0f} MB' if num_bytes < 10 * 1024 * MIB else f'{num_bytes / 1024 / MIB:.1f} GB'


def docker_size(num_bytes: float) -> str:
    """``--shm-size`` that holds ``num_bytes`` with a quarter to spare, rounded up to 256 MB."""
    quarters = math.ceil(num_bytes * 1.25 / (256 * MIB))
    return f'{quarters * 256}m' if quarters % 4 else f'{quarters // 4}g'


def loader_plan(what: str, unit_bytes: int, units: int, workers: int, splittable: bool = False,
                free: Optional[int] = None) -> LoaderPlan:
    """The DataLoader settings for items of ``units x unit_bytes`` (a batch of ``units`` clips, or ``units`` views
    that may come in parts when ``splittable``) from ``workers`` workers, within this rank's share of ``free`` (the
    free bytes of /dev/shm when None). Logs the choice for ``what`` (e.g. 'training batches')."""
    if workers == 0:  # items are made in this process: nothing goes through shared memory
        return LoaderPlan(units, PREFETCH, True, 0)
    free = free_bytes() if free is None else free
    ranks = ranks_here()
    budget = None if free is None else int(free * RESERVE) // ranks
    sizes = range(units, 0, -1) if splittable else (units,)
    choices = [(n, prefetch) for prefetch in (PREFETCH, 1) for n in sizes]
    for n, prefetch in choices:
        need = in_flight(workers, prefetch) * n * unit_bytes
        if budget is None or need <= budget:
            plan = LoaderPlan(n, prefetch, True, need)
            break
    else:
        plan = LoaderPlan(units, PREFETCH, False, 0)
    full = in_flight(workers, PREFETCH) * units * unit_bytes  # the configured loader's need
    share = '' if ranks == 1 else f' ({ranks} ranks on this machine share it)'
    if plan.use_shared_memory and (plan.units, plan.prefetch_factor) == (units, PREFETCH):
        logger.info('%s: %d workers x %d items of %s in flight: %s of shared memory, %s free in %s%s', what, workers,
                    PREFETCH, size_text(units * unit_bytes), size_text(full), 'unknown' if free is None
                    else size_text(free), SHM, share)
        return plan
    fix = (f'give the container {docker_size(full * ranks)} of shared memory (docker run --shm-size='
           f'{docker_size(full * ranks)}; Kubernetes: an emptyDir volume with medium: Memory mounted at {SHM}) or '
           'fewer DATA.num_workers')
    if plan.use_shared_memory:
        logger.info('%s: %s free in %s%s, %s needed for %d workers x %d items of %s: %s, %s of shared memory; '
                    'for the full loader %s', what, size_text(free), SHM, share, size_text(full), workers, PREFETCH,
                    size_text(units * unit_bytes), ', '.join(
                        ([f'items of {plan.units} of {units}'] if plan.units != units else []) +
                        (['one item per worker in flight'] if plan.prefetch_factor == 1 else [])),
                    size_text(plan.need), fix)
    else:
        logger.warning('%s: %s free in %s%s, even one item per worker needs %s (%s for %d workers x %d items of %s): '
                       'items go through pipes instead (use_shared_memory=False), about %.0f ms more per item on '
                       'the CPU of docs/BENCHMARKS.md; to use shared memory %s', what, size_text(free), SHM, share,
                       size_text(in_flight(workers, 1) * units * unit_bytes), size_text(full), workers, PREFETCH,
                       size_text(units * unit_bytes), PIPE_COST_MS_PER_MIB * units * unit_bytes / MIB, fix)
    return plan
