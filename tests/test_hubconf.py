"""hubconf.py through paddle.hub (source='local'): one entry per network of the family, each documented; the recipe's
network, or a publisher's weights converted once and then read from the cache; and recognizer.Recognizer.from_zoo on
the same cache scores as predict.py run with the zoo's protocol."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from helpers import ROOT
from test_zoo import server  # noqa: F401 (the fixture: a server of files on 127.0.0.1)
from config_utils import parse_config
from errors import WeightsError
from model import build_model
import model_zoo

ENV = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='2')
ENTRIES = {'slowfast_4x16_r50': 'slowfast.yaml', 'slowfast_r50': 'configs/slowfast_r50_8x8.yaml',
           'slowfast_r101': 'configs/slowfast_r101_8x8.yaml',
           'slowfast_16x8_r101_50_50': 'configs/slowfast_16x8_r101_50_50.yaml', 'slow_r50': 'configs/slow_r50_8x8.yaml',
           'slow_4x16_r50': 'configs/slow_r50_4x16.yaml'}
UNREACHABLE = 'http://127.0.0.1:9/nothing-listens-here.pkl'  # a download would fail: the cache must answer


def test_the_hub_lists_one_entry_per_network_and_its_help_gives_frames_rate_crop_and_top1():
    assert paddle.hub.list(ROOT, source='local') == sorted(ENTRIES)
    for name, config in ENTRIES.items():
        text = paddle.hub.help(ROOT, name, source='local')
        m = parse_config(os.path.join(ROOT, config)).MODEL
        assert f'{m.num_frames}, H, W]' in text and f'frames every {m.sampling_rate} at {m.target_fps} fps' in text
        assert '224-pixel crops' in text and f'Config: {config}.' in text
        published = [e for e in model_zoo.ENTRIES if e.config == config]
        assert published and all(f'{e.name}' in text and f'top-1 {e.top1}' in text and
                                 f'crops of {e.protocol.crop}' in text for e in published), text
        assert text.count('(default)') == 1


@pytest.mark.parametrize('name', [pytest.param(n, marks=[] if n in ('slowfast_r50', 'slow_r50') else pytest.mark.slow)
                                  for n in ENTRIES])
def test_an_entry_without_weights_is_the_recipe_s_network_in_eval_mode(name):
    paddle.seed(11)
    network = paddle.hub.load(ROOT, name, source='local')
    paddle.seed(11)
    recipe = build_model(parse_config(os.path.join(ROOT, ENTRIES[name])))
    assert not network.training and type(network) is type(recipe)
    ours, theirs = network.state_dict(), recipe.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert np.array_equal(ours[key].numpy(), theirs[key].numpy()), key


@pytest.mark.slow
def test_pretrained_converts_the_publisher_s_file_once_then_the_cache_answers(published, tmp_path):
    cache, pkl = str(tmp_path / 'cache'), str(published['root'] / 'SLOWFAST_8x8_R50.pkl')
    network = paddle.hub.load(ROOT, 'slowfast_r50', source='local', pretrained=True, cache_dir=cache, file=pkl)
    assert not network.training
    for key, value in network.state_dict().items():
        assert np.array_equal(value.numpy(), published['state'][key]), key
    assert os.listdir(cache) == ['pyslowfast-slowfast-8x8-r50.pdparams']
    stamp = os.stat(os.path.join(cache, 'pyslowfast-slowfast-8x8-r50.pdparams')).st_mtime_ns
    again = paddle.hub.load(ROOT, 'slowfast_r50', source='local', pretrained=True, cache_dir=cache, url=UNREACHABLE)
    assert np.array_equal(again.head.projection.weight.numpy(), published['state']['head.projection.weight'])
    assert os.stat(os.path.join(cache, 'pyslowfast-slowfast-8x8-r50.pdparams')).st_mtime_ns == stamp
    with pytest.raises(WeightsError, match='pyslowfast-slowfast-4x16-r50 is a checkpoint of slowfast.yaml'):
        paddle.hub.load(ROOT, 'slowfast_r50', source='local', pretrained=True, checkpoint='pyslowfast-slowfast-4x16-r50')
    with pytest.raises(WeightsError, match="no published checkpoint named 'nope'"):
        paddle.hub.load(ROOT, 'slowfast_r50', source='local', pretrained=True, checkpoint='nope')
    # no cache, no file, no network: the download error names the address and how to go on offline
    with pytest.raises(WeightsError, match='nothing-listens-here.pkl.*--file'):
        paddle.hub.load(ROOT, 'slowfast_r50', source='local', pretrained=True, cache_dir=str(tmp_path / 'empty'),
                        url=UNREACHABLE)


@pytest.mark.slow
def test_pretrained_downloads_verifies_and_converts_through_the_zoo(published, tmp_path, server):
    """From a server (a mirror of the publisher's address, on 127.0.0.1): the download is verified against the
    SHA-256 given, converted into the cache, and loaded; a wrong checksum stops it with nothing converted."""
    pkl = published['root'] / 'SLOWFAST_8x8_R50.pkl'
    server.files['SLOWFAST_8x8_R50.pkl'] = pkl.read_bytes()
    digest = model_zoo.sha256_of(str(pkl))
    cache = tmp_path / 'cache'
    with pytest.raises(WeightsError, match='SHA-256'):
        paddle.hub.load(ROOT, 'slowfast_r50', source='local', pretrained=True, cache_dir=str(cache),
                        url=f'{server.url}/ok/SLOWFAST_8x8_R50.pkl', sha256='0' * 64)
    assert not (cache / 'pyslowfast-slowfast-8x8-r50.pdparams').exists()
    network = paddle.hub.load(ROOT, 'slowfast_r50', source='local', pretrained=True, cache_dir=str(cache),
                              url=f'{server.url}/ok/SLOWFAST_8x8_R50.pkl', sha256=digest)
    assert [path for path, _ in server.requests].count('/ok/SLOWFAST_8x8_R50.pkl') == 2
    assert (cache / 'downloads' / 'SLOWFAST_8x8_R50.pkl').read_bytes() == pkl.read_bytes()
    for key, value in network.state_dict().items():
        assert np.array_equal(value.numpy(), published['state'][key]), key


@pytest.mark.slow
def test_from_zoo_scores_as_predict_py_with_the_publisher_s_protocol(published, tmp_path, videos):
    from recognizer import Recognizer

    cache = str(tmp_path / 'cache')
    rec = Recognizer.from_zoo('pyslowfast-slowfast-8x8-r50', cache_dir=cache,
                              file=str(published['root'] / 'SLOWFAST_8x8_R50.pkl'), views=(1, 3), use_gpu=False)
    assert rec.cfg.INFER.target_size == 256 and rec.num_views == 3
    top = rec.classify(videos['webm'], top_k=5)
    assert top[0].label == open(os.path.join(ROOT, 'kinetics400_labels.txt')).read().splitlines()[top[0].index]
    entry = model_zoo.find('pyslowfast-slowfast-8x8-r50')
    overrides = [f for o in model_zoo.protocol_overrides(entry) for f in ('-o', o)]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'predict.py'), '--config', os.path.join(ROOT, entry.config), '--use_gpu',
         'False', '--weights', os.path.join(cache, entry.name), '--video', videos['webm'], '--save_path',
         str(tmp_path / 'out'), '-o', 'INFER.num_ensemble_views=1', '-o', 'INFER.batch_size=3', *overrides],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    [expected] = json.loads((tmp_path / 'out' / 'result.json').read_text())
    assert [p.index for p in top] == expected['top5_indices']
    assert np.abs(np.array([p.probability for p in top]) - expected['top5_values']).max() <= 1e-5
    # PaddleVideo's 8x8 file was tested at 224: its protocol comes with it
    paddlevideo = Recognizer.from_zoo('paddlevideo-slowfast-8x8', cache_dir=cache, views=(1, 1), use_gpu=False,
                                      file=str(published['root'] / 'SlowFast_8x8.pdparams'))
    assert paddlevideo.cfg.INFER.target_size == 224 and paddlevideo.cfg.TEST.target_size == 224


@pytest.mark.slow
def test_the_hub_loads_from_another_folder_in_a_fresh_process_and_names_a_module_in_the_way(published, tmp_path):
    """paddle.hub takes the repository off sys.path after importing hubconf.py: the entry still loads (and converts)
    from a process started elsewhere; a module of one of the repository's names imported before is named."""
    cache = str(tmp_path / 'cache')
    # numpy before paddle, as the README says for Paddle 2.6.2 (its own zlib crashes a system zlib loaded after it)
    code = ('import numpy, paddle, sys; m = paddle.hub.load(sys.argv[1], "slowfast_r50", source="local", pretrained=True, '
            'cache_dir=sys.argv[2], file=sys.argv[3]); print("LOADED", type(m).__name__, m.training, '
            'float(m.head.projection.weight.sum()))')
    result = subprocess.run([sys.executable, '-c', code, ROOT, cache, str(published['root'] / 'SLOWFAST_8x8_R50.pkl')],
                            capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    kind, training, total = result.stdout.split('LOADED')[1].split()
    assert (kind, training) == ('SlowFast', 'False')
    assert float(total) == pytest.approx(float(published['state']['head.projection.weight'].sum()), rel=1e-5)

    (tmp_path / 'model.py').write_text('WHO = "a user\'s own model.py"\n')
    code = 'import numpy, model, paddle, sys; paddle.hub.load(sys.argv[1], "slow_r50", source="local")'
    result = subprocess.run([sys.executable, '-c', code, ROOT], capture_output=True, text=True, cwd=tmp_path,
                            env=ENV, timeout=300)
    assert result.returncode != 0
    assert f"the module 'model' was imported from {tmp_path / 'model.py'}, not from this repository" in result.stderr
