"""What the DataLoaders keep in shared memory: the plan (shared_memory.loader_plan), the test views' parts that keep it
bounded by batches (each video still decoded once, every view once), and the four scripts in a container's 64 MB
/dev/shm (a private mount namespace)."""
import json
import logging
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

import shared_memory
from config_utils import parse_config
from helpers import ROOT, in_mount_namespace, tiny_train_overrides, use_list, write_list
from kinetics_dataset import UNDECODABLE, KineticsMultiViewDataset, ViewParts, normalize_batch, rebatch
from model import build_model
from shared_memory import HELD, MIB, docker_size, loader_plan

ENV = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='2')


@pytest.fixture(autouse=True)
def plan_log(caplog):
    caplog.set_level(logging.INFO, logger='shared_memory')  # Paddle 2.6 leaves the root logger at WARNING


# ---- the plan --------------------------------------------------------------------------------------------------------

def test_the_configured_loader_when_it_fits_and_nothing_in_shared_memory_without_workers(caplog, monkeypatch):
    monkeypatch.delenv('PADDLE_LOCAL_SIZE', raising=False)
    unit = 3 * MIB
    need = (4 * 2 + HELD) * 8 * unit  # 4 workers x prefetch 2, plus the 2 the loop holds, batches of 8
    plan = loader_plan('training batches', unit, 8, 4, free=int(need / shared_memory.RESERVE) + 1)
    assert plan == (8, 2, True, need)
    assert f'training batches: 4 workers x 2 items of 24 MB in flight: {need // MIB} MB of shared memory' in caplog.text
    assert loader_plan('x', 10 ** 12, 8, 0, free=0) == (8, 2, True, 0)  # made in this process
    monkeypatch.setattr(shared_memory, 'free_bytes', lambda folder=None: None)  # no /dev/shm: nothing to size
    assert loader_plan('x', unit, 8, 4) == (8, 2, True, need) and 'unknown free in /dev/shm' in caplog.text


@pytest.mark.parametrize('workers', [1, 2, 8])
@pytest.mark.parametrize('free_mib', [1, 40, 64, 300, 5000])
def test_views_come_in_the_largest_parts_that_fit_else_prefetch_one_else_pipes(workers, free_mib, caplog,
                                                                              monkeypatch):
    monkeypatch.delenv('PADDLE_LOCAL_SIZE', raising=False)
    unit, units, free = int(7.5 * MIB), 8, free_mib * MIB  # a 32 x 256 view (4x16), a batch of 8
    budget = int(free * shared_memory.RESERVE)
    for splittable in (True, False):
        plan = loader_plan('test views', unit, units, workers, splittable=splittable, free=free)
        sizes = range(units, 0, -1) if splittable else [units]
        fitting = [n for n in sizes if (workers * 2 + HELD) * n * unit <= budget]
        one_each = [n for n in sizes if (workers + HELD) * n * unit <= budget]  # one item per worker in flight
        if fitting:
            assert plan == (fitting[0], 2, True, (workers * 2 + HELD) * fitting[0] * unit)
        elif one_each:
            assert plan == (one_each[0], 1, True, (workers + HELD) * one_each[0] * unit)
            assert 'one item per worker in flight' in caplog.text
        else:
            assert plan == (units, 2, False, 0)
            assert 'items go through pipes instead (use_shared_memory=False)' in caplog.text
        assert plan.need <= budget
        if plan != (units, 2, True, plan.need):  # not the configured loader: what it would need, and how to give it
            full = (workers * 2 + HELD) * units * unit
            assert f'docker run --shm-size={docker_size(full)}' in caplog.text
            assert 'emptyDir volume with medium: Memory' in caplog.text and 'fewer DATA.num_workers' in caplog.text
        caplog.clear()


def test_the_ranks_of_a_machine_share_its_shared_memory(monkeypatch, caplog):
    unit = 4 * MIB
    free = int((2 * 2 + HELD) * 4 * unit / shared_memory.RESERVE) + 1  # one rank's loader, just
    monkeypatch.setenv('PADDLE_LOCAL_SIZE', '1')
    assert loader_plan('v', unit, 4, 2, splittable=True, free=free).units == 4
    monkeypatch.setenv('PADDLE_LOCAL_SIZE', '2')
    assert loader_plan('v', unit, 4, 2, splittable=True, free=free).units == 2
    assert '(2 ranks on this machine share it)' in caplog.text
    assert 'docker run --shm-size=256m' in caplog.text  # both ranks' full loaders: 2 x 96 MB, a quarter to spare


def test_docker_sizes_hold_the_need_with_a_quarter_to_spare():
    for mib in (1, 100, 204, 205, 800, 819, 820, 3000, 40000):
        text = docker_size(mib * MIB)
        size = int(text[:-1]) * (1024 if text.endswith('g') else 1)
        assert size >= 1.25 * mib and size % 256 == 0 and size - 256 < 1.25 * mib, (mib, text)


# ---- the test views' parts -------------------------------------------------------------------------------------------

def test_view_parts_give_each_worker_whole_videos_in_order():
    class Videos:
        num_views = 5

        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

    for videos in range(1, 8):
        for part in range(1, 7):
            for workers in range(0, 4):
                order = ViewParts(Videos(videos), part, workers).order
                lanes = max(workers, 1)
                for w in range(lanes):  # what worker w gets: its videos' views, each once, in order
                    got = [o for o in order[w::lanes] if o is not None]
                    views = [(i, first + k) for i, first, count in got for k in range(count)]
                    assert views == [(i, v) for i in range(w, videos, lanes) for v in range(5)]
                    assert all(count <= part for _, _, count in got)
                assert order[-1] is not None


def items_of(sizes, batch_size):
    """Items of ``sizes`` views (0: a placeholder), each view's pixels its id."""
    items, start = [], 0
    for n in sizes:
        if n == 0:
            items.append(([paddle.zeros([1, 3, 1, 1, 1], 'uint8')], np.array([UNDECODABLE])))
            continue
        ids = np.arange(start, start + n)
        items.append(([paddle.to_tensor((ids % 251).astype(np.uint8).reshape(n, 1, 1, 1, 1).repeat(2, 3))], ids))
        start += n
    return items, start


def test_rebatch_gives_whole_batches_of_every_view_once_for_any_parts():
    rng = np.random.default_rng(0)
    for batch_size in (1, 2, 3, 4, 7, 30):
        for trial in range(20):
            sizes = [int(s) for s in rng.integers(0, batch_size + 1, size=int(rng.integers(0, 12)))]
            items, total = items_of(sizes, batch_size)
            batches = list(rebatch(iter(items), batch_size))
            assert [len(ids) for _, ids in batches[:-1]] == [batch_size] * (len(batches) - 1)
            ids = np.concatenate([ids for _, ids in batches]) if batches else np.zeros(0)
            assert ids.tolist() == list(range(total))
            for (x,), batch_ids in batches:
                assert x.shape[1:] == [1, 1, 2, 1] and x.numpy()[:, 0, 0, 0, 0].tolist() == (batch_ids % 251).tolist()
    whole = items_of([4], 4)[0][0]
    assert next(rebatch(iter([whole]), 4))[0][0] is whole[0][0]  # a whole batch is passed on, not copied


def test_normalisation_with_per_channel_statistics_is_the_formula():
    x = np.random.default_rng(1).integers(0, 256, (2, 3, 4, 5, 6), dtype=np.uint8)
    mean, std = [0.43, 0.45, 0.41], [0.23, 0.22, 0.25]
    expected = (x / 255.0 - np.reshape(mean, (1, 3, 1, 1, 1))) / np.reshape(std, (1, 3, 1, 1, 1))
    got = normalize_batch(paddle.to_tensor(x), mean, std)
    assert got.dtype == paddle.float32 and np.abs(got.numpy() - expected).max() < 1e-5
    for mean, std in ((mean, std), ([0.45] * 3, [0.225] * 3)):  # per channel; shared (cast, then scale in place)
        t = paddle.to_tensor(x)
        normalize_batch(t, mean, std)
        assert np.array_equal(t.numpy(), x)  # the batch itself is left as it came


@pytest.fixture(scope='module')
def counted(videos, tmp_path_factory):
    """Five videos, and a count of decodes per path shared with forked DataLoader workers."""
    names = ['mp4', 'webm', 'mkv', 'avi', 'fps15']
    listing = write_list(tmp_path_factory.mktemp('parts'), [f'{videos[k]} {i}' for i, k in enumerate(names)])
    return listing, [videos[k] for k in names]


@pytest.mark.parametrize('num_videos', [1, 2, 3, 5])
def test_each_video_is_decoded_once_and_every_view_given_once_for_any_parts(cfg, counted, num_videos, tmp_path,
                                                                              monkeypatch):
    listing, paths = counted
    lines = open(listing).read().splitlines()[:num_videos]
    cfg.TEST.num_ensemble_views, cfg.TEST.num_spatial_crops = 3, 3
    use_list(cfg, write_list(tmp_path, lines), 'TEST')
    decodes = multiprocessing.Array('i', len(paths))  # shared with the forked workers
    real = KineticsMultiViewDataset.decode

    def decode(self, path):
        with decodes.get_lock():
            decodes[paths.index(path)] += 1
        return real(self, path)

    monkeypatch.setattr(KineticsMultiViewDataset, 'decode', decode)
    view = 3 * 96 * 96 * (32 + 4)
    # free space for: the full loader, parts of 2 views, one view, and pipes
    frees = {'full': None, 'parts of 2': (2 * 2 + HELD) * 2 * view / 0.89, 'parts of 1': (2 * 2 + HELD) * view / 0.89,
             'pipes': 1}
    for batch_size in (1, 4, 7, 30):
        for name, free in frees.items():
            monkeypatch.setattr(shared_memory, 'free_bytes', lambda folder=None, free=free: None if free is None
                                else int(free))
            for world in (1, 2) if num_videos > 1 else (1,):
                decodes[:] = [0] * len(paths)
                ids = []
                for rank in range(world):
                    dataset = KineticsMultiViewDataset(cfg, 'test', rank=rank, world_size=world)
                    batches = list(dataset.view_batches(batch_size, num_workers=2))
                    assert [len(b) for _, b in batches[:-1]] == [batch_size] * (len(batches) - 1)
                    for pathways, batch_ids in batches:
                        assert [x.shape for x in pathways] == [[len(batch_ids), 3, 4, 96, 96],
                                                               [len(batch_ids), 3, 32, 96, 96]]
                    ids += [int(i) for _, b in batches for i in b]
                case = (batch_size, name, world)
                assert sorted(ids) == list(range(9 * num_videos)), case
                assert list(decodes) == [1] * num_videos + [0] * (len(paths) - num_videos), case


def test_parts_and_pipes_give_the_views_a_whole_video_item_gives(cfg, counted, monkeypatch):
    listing, _ = counted
    cfg.TEST.num_ensemble_views, cfg.TEST.num_spatial_crops = 2, 3
    use_list(cfg, listing, 'TEST')
    dataset = KineticsMultiViewDataset(cfg, 'test')
    whole = {}
    for i in range(len(dataset)):  # in this process, a whole video per item
        *pathways, _, ids = dataset[i]
        whole.update({int(v): [x[k] for x in pathways] for k, v in enumerate(ids)})
    for free in (1, 3 * 96 * 96 * 36 * 8):
        monkeypatch.setattr(shared_memory, 'free_bytes', lambda folder=None, free=free: free)
        got = sorted(((int(v), [x.numpy()[k] for x in pathways])  # in the order the workers' parts come
                      for pathways, ids in dataset.view_batches(4, num_workers=2) for k, v in enumerate(ids)),
                     key=lambda item: item[0])
        assert [v for v, _ in got] == sorted(whole)
        assert all(np.array_equal(a, b) for v, views in got for a, b in zip(views, whole[v]))


# ---- the scripts in 64 MB of /dev/shm ----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tiny_weights(demo_lists, tmp_path_factory):
    """Width-8 weights (their shapes do not depend on the clip: they run at the recipe's 32 frames and 256 pixels)."""
    root = tmp_path_factory.mktemp('shm')
    overrides = tiny_train_overrides(*demo_lists) + ['DATA.label_map=']
    paddle.seed(0)
    paddle.save(build_model(parse_config(os.path.join(ROOT, 'slowfast-single.yaml'), overrides)).state_dict(),
                str(root / 'w.pdparams'))
    return str(root / 'w'), [a for o in overrides for a in ('-o', o)]


# the recipe's clip (32 frames, alpha 8) on the tiny network
RECIPE_CLIP = ['-o', 'MODEL.num_frames=32', '-o', 'MODEL.alpha=8', '-o', 'DATA.num_workers=2']


def in_64mb(command, tmp_path, env=None):
    result = subprocess.run(in_mount_namespace(command, small={'/dev/shm': '64m'}, then='df -m /dev/shm'),
                            capture_output=True, text=True, timeout=900, cwd=ROOT, env=env or ENV)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'BUS error' not in log and 'Traceback' not in log
    df = result.stdout.strip().splitlines()[-1].split()  # df's line, printed last
    assert df[-1] == '/dev/shm' and int(df[1]) == 64  # ran in the 64 MB /dev/shm, not the machine's
    return log


@pytest.mark.slow
def test_train_runs_in_64mb_of_shared_memory_through_pipes(demo_lists, tmp_path):
    flags = [a for o in tiny_train_overrides(*demo_lists, epochs=1) for a in ('-o', o)] + RECIPE_CLIP + [
        '-o', 'TRAIN.batch_size=8', '-o', 'TRAIN.target_size=224', '-o', 'TRAIN.min_size=256', '-o',
        'TRAIN.max_size=320', '-o', 'VALID.num_batches_preciseBN=1', '-o', 'DATA.label_map=']
    log = in_64mb([sys.executable, os.path.join(ROOT, 'train.py'), '--config',
                   os.path.join(ROOT, 'slowfast-single.yaml'), '--use_gpu', 'False', '--save_dir',
                   str(tmp_path / 'ck')] + flags, tmp_path)
    # a batch of 8 clips of 32 + 4 frames x 224 x 224 is 41.3 MiB: 2 workers x 2 + 2 held need 248 MB, 2 x 1 + 2 165
    assert 'training batches: 64 MB free in /dev/shm, even one item per worker needs 165 MB (248 MB for 2 workers x ' \
           '2 items of 41 MB)' in log
    assert 'items go through pipes instead (use_shared_memory=False)' in log
    assert 'docker run --shm-size=' in log and '[TRAIN] training finished' in log


@pytest.mark.slow
@pytest.mark.parametrize('script', ['eval', 'predict', 'timeline'])
def test_eval_and_predict_at_the_recipe_s_views_run_in_64mb_of_shared_memory(tiny_weights, demo_lists, videos,
                                                                             tmp_path, script):
    weights, flags = tiny_weights
    section = 'TEST' if script == 'eval' else 'INFER'
    flags = flags + RECIPE_CLIP + ['-o', f'{section}.target_size=256', '-o', f'{section}.batch_size=8', '-o',
                            f'{section}.num_ensemble_views=2', '-o', f'{section}.num_spatial_crops=1']
    val = open(demo_lists[1]).read().splitlines()[:3]
    listing = write_list(tmp_path, [os.path.join(os.path.dirname(demo_lists[1]), line) for line in val])
    command = [sys.executable, os.path.join(ROOT, f'{"eval" if script == "eval" else "predict"}.py'), '--config',
               os.path.join(ROOT, 'slowfast-single.yaml'), '--use_gpu', 'False', '--weights', weights,
               '--save_path', str(tmp_path / 'out')] + flags
    if script == 'eval':
        command += ['-o', f'TEST.filelist={listing}']
    elif script == 'predict':
        command += ['--filelist', listing]
    else:
        command += ['--video', videos['mp4'], '--timeline', str(tmp_path / 'tl'), '--stride', '8f']  # 300 frames
    log = in_64mb(command, tmp_path)
    if script == 'timeline':
        # windows of 32 + 4 frames x 256 x 256 (6.75 MiB), one worker: 4 batches of 8 in flight are 216 MB, of 2 54
        assert 'timeline windows: 64 MB free in /dev/shm, 216 MB needed for 1 workers x 2 items of 54 MB: items of ' \
               '2 of 8, 54 MB of shared memory' in log
        assert 'predicting 30 windows (1 videos, a window every 8f)' in log
        [timeline] = (tmp_path / 'tl').glob('*.json')
        assert len(json.loads(timeline.read_text())['windows']) == 30
    else:
        what = 'test' if script == 'eval' else 'infer'
        # 2 workers x 2 + 2 held parts of 1 view (6.75 MiB) are 40.5 MiB: the only part that fits in 0.9 x 64
        assert f'{what} views: 64 MB free in /dev/shm, 324 MB needed for 2 workers x 2 items of 54 MB: items of 1 ' \
               'of 8, 40 MB of shared memory' in log
        assert ('[EVAL] eval finished' in log) if script == 'eval' else (tmp_path / 'out' / 'result.json').exists()


@pytest.mark.slow
def test_two_ranks_share_64mb_and_score_as_one_does(tiny_weights, demo_lists, tmp_path):
    """Two ranks of paddle.distributed.launch on one machine: each sizes its loader to half the free space (here
    parts of one view, one per worker in flight), and the scores are those of one rank."""
    weights, flags = tiny_weights
    flags = flags + RECIPE_CLIP + ['-o', 'TEST.target_size=256', '-o', 'TEST.batch_size=8', '-o',
                                   'TEST.num_ensemble_views=2', '-o', 'TEST.num_spatial_crops=1']
    val = open(demo_lists[1]).read().splitlines()[:3]
    listing = write_list(tmp_path, [os.path.join(os.path.dirname(demo_lists[1]), line) for line in val])
    env = dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(tmp_path / 'logs'), CONFIG='slowfast-single.yaml',
               WEIGHTS=weights)
    in_64mb(['bash', os.path.join(ROOT, 'run_eval_multi.sh'), '--save_path', str(tmp_path / 'two'), '-o',
             f'TEST.filelist={listing}'] + flags, tmp_path, env)
    # TEST.batch_size 8 is 4 views a rank; a rank's share of 64 MB: 28.8 MiB; parts of one view (6.75 MiB): 2 workers
    # x 2 + 2 held are 40.5 MiB, 2 x 1 + 2 are 27 (rank 0 logs it; rank 1, which logs warnings only, ran the same)
    log = (tmp_path / 'logs' / 'workerlog.0').read_text()
    assert 'test views: 64 MB free in /dev/shm (2 ranks on this machine share it), 162 MB needed for 2 workers x 2 ' \
           'items of 27 MB: items of 1 of 4, one item per worker in flight, 27 MB of shared memory' in log, log[-3000:]
    in_64mb([sys.executable, os.path.join(ROOT, 'eval.py'), '--config', os.path.join(ROOT, 'slowfast-single.yaml'),
             '--use_gpu', 'False', '--weights', weights, '--save_path', str(tmp_path / 'one'), '-o',
             f'TEST.filelist={listing}'] + flags, tmp_path)
    assert np.allclose(np.load(tmp_path / 'one' / 'video_scores.npy'), np.load(tmp_path / 'two' / 'video_scores.npy'),
                       atol=1e-6)
