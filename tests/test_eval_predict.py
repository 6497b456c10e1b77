"""eval.py and predict.py end to end on the demo videos with a tiny network, single and 2-process (CPU)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

from config_utils import parse_config
from helpers import ROOT, in_mount_namespace, needs_ffmpeg, one_error_line, tiny_train_overrides, tool_path
from model import build_model

ENV = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')


@pytest.fixture(scope='module')
def setup(demo_lists, videos, tmp_path_factory):
    """Weights of a tiny network, and a val list with two broken entries."""
    root = tmp_path_factory.mktemp('eval')
    train_list, val_list = demo_lists
    overrides = tiny_train_overrides(train_list, val_list) + [
        'TEST.num_ensemble_views=2', 'TEST.batch_size=4', 'INFER.num_ensemble_views=2', 'INFER.batch_size=4',
        'DATA.label_map=']  # 4 classes: not the 400 Kinetics names
    paddle.seed(3)
    model = build_model(parse_config(os.path.join(ROOT, 'slowfast-single.yaml'), overrides))
    with paddle.no_grad():  # a sharper head than the init's, so classes differ
        model.head.projection.weight.set_value(model.head.projection.weight * 50)
    paddle.save(model.state_dict(), str(root / 'tiny.pdparams'))
    lines = open(val_list).read().splitlines()
    listing = root / 'val_broken.txt'
    folder = os.path.dirname(val_list)
    listing.write_text('\n'.join([os.path.join(folder, line) for line in lines[:3]] + [f'{videos["garbage"]} 1'] +
                                 [os.path.join(folder, line) for line in lines[3:6]] + [f'{videos["missing"]} 2'])
                       + '\n')
    flags = [a for o in overrides for a in ('-o', o)]
    return dict(root=root, weights=str(root / 'tiny'), list=str(listing), flags=flags, val_lines=lines,
                folder=folder, videos=videos)


def run(command, env=None, expect=0):
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env or ENV)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def eval_command(s, out, *extra):
    return [sys.executable, os.path.join(ROOT, 'eval.py'), '--config', os.path.join(ROOT, 'slowfast-single.yaml'),
            '--use_gpu', 'False', '--weights', s['weights'], '--save_path', str(out), '-o',
            f'TEST.filelist={s["list"]}'] + s['flags'] + list(extra)


def test_eval_single_then_two_ranks_give_the_same_scores(setup, tmp_path):
    log = run(eval_command(setup, tmp_path / 'one'), expect=1)  # 2 videos do not decode: named, status 1
    assert '[EVAL] eval finished, avg_acc1= ' in log and '(6 videos evaluated, 2 failed)' in log
    result = json.loads((tmp_path / 'one' / 'eval_result.json').read_text())
    assert result['num_videos'] == 6 and result['num_failed'] == 2
    assert result['failed'] == [setup['videos']['garbage'], setup['videos']['missing']]  # skipped, not replaced
    assert set(result) >= {'top1', 'top5', 'mean_class_acc', 'per_class_acc'} and len(result['per_class_acc']) == 4
    scores = np.load(tmp_path / 'one' / 'video_scores.npy')
    assert scores.shape == (8, 4) and np.isnan(scores[[3, 7]]).all() and not np.isnan(scores[[0, 1, 2, 4, 5, 6]]).any()
    assert np.allclose(scores[0].sum(), 6.0)  # the sum of 6 views' probabilities
    labels = np.array([int(line.split()[1]) for line in setup['val_lines'][:6]])
    ok = scores[[0, 1, 2, 4, 5, 6]]
    assert result['top1'] == pytest.approx(float((ok.argmax(1) == labels).mean()))
    assert (tmp_path / 'one' / 'confusion_matrix.png').stat().st_size > 1000

    env = dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(tmp_path / 'logs'), CONFIG='slowfast-single.yaml',
               WEIGHTS=setup['weights'])
    run(['bash', os.path.join(ROOT, 'run_eval_multi.sh'), '--save_path', str(tmp_path / 'two'), '-o',
         f'TEST.filelist={setup["list"]}'] + setup['flags'], env=env, expect=1)
    two = json.loads((tmp_path / 'two' / 'eval_result.json').read_text())
    assert np.allclose(np.load(tmp_path / 'two' / 'video_scores.npy'), scores, atol=1e-6, equal_nan=True)
    assert {k: two[k] for k in ('top1', 'top5', 'num_videos', 'failed')} == \
        {k: result[k] for k in ('top1', 'top5', 'num_videos', 'failed')}


def test_eval_weights_errors(setup, tmp_path):
    log = run(eval_command(setup, tmp_path, '--weights', str(tmp_path / 'nope')), expect=4)
    assert 'weights not found: ' in log and 'nope.pdparams' in log
    log = run(eval_command(setup, tmp_path, '-o', 'MODEL.num_classes=5'), expect=4)
    assert 'does not fit the model: shape mismatch: head.projection.weight' in log


def predict_command(s, out, *extra):
    return [sys.executable, os.path.join(ROOT, 'predict.py'), '--config', os.path.join(ROOT, 'slowfast-single.yaml'),
            '--use_gpu', 'False', '--weights', s['weights'], '--save_path', str(out)] + s['flags'] + list(extra)


@pytest.mark.slow
def test_predict_list_files_and_folders_in_order_with_errors(setup, tmp_path):
    folder = tmp_path / 'clips'
    folder.mkdir()
    first, second = [os.path.join(setup['folder'], line.split()[0]) for line in setup['val_lines'][:2]]
    shutil.copy(first, folder / 'b.mp4')
    shutil.copy(second, folder / 'a.mp4')
    listing = tmp_path / 'infer.txt'
    listing.write_text(f'{first}\n{setup["videos"]["zero"]}\n')
    (tmp_path / 'names.txt').write_text('right\nleft\ndown\nup\n')
    log = run(predict_command(setup, tmp_path / 'out', '--filelist', str(listing), '--video', second, '--video',
                              str(folder), '-o', f'DATA.label_map={tmp_path / "names.txt"}', '--features',
                              str(tmp_path / 'feats' / 'one.npy')), expect=1)
    results = json.loads((tmp_path / 'out' / 'result.json').read_text())
    assert [r['video_id'] for r in results] == [first, setup['videos']['zero'], second, str(folder / 'a.mp4'),
                                                str(folder / 'b.mp4')]
    assert 'error' in results[1] and set(results[1]) == {'video_id', 'error'}
    for r in results[:1] + results[2:]:
        assert set(r) == {'video_id', 'top1_values', 'top1_indices', 'top5_values', 'top5_indices', 'top1_label',
                          'top5_labels'}
        assert r['top5_values'] == sorted(r['top5_values'], reverse=True) and len(r['top5_indices']) == 4
        assert r['top1_values'] == r['top5_values'][0] and r['top1_indices'] == r['top5_indices'][0]
        assert sum(r['top5_values']) == pytest.approx(1.0, abs=1e-5)  # mean probabilities over 4 classes
        assert r['top1_label'] == ['right', 'left', 'down', 'up'][r['top1_indices']]
    assert results[0]['top5_values'] == results[4]['top5_values']  # the same video, found twice
    assert '[INFER] infer finished' in log and '1 failed' in log

    env = dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(tmp_path / 'logs'), CONFIG='slowfast-single.yaml',
               WEIGHTS=setup['weights'])
    run(['bash', os.path.join(ROOT, 'run_infer_multi.sh'), '--save_path', str(tmp_path / 'multi'), '--filelist',
         str(listing), '--video', second, '--video', str(folder), '-o', f'DATA.label_map={tmp_path / "names.txt"}',
         '--features', str(tmp_path / 'feats' / 'two.npy'), '--features_per_view'] + setup['flags'], env=env,
        expect=1)
    multi = json.loads((tmp_path / 'multi' / 'result.json').read_text())
    assert [r['video_id'] for r in multi] == [r['video_id'] for r in results]
    for a, b in zip(results, multi):
        assert a.get('top5_indices') == b.get('top5_indices')
        assert np.allclose(a.get('top5_values', []), b.get('top5_values', []), atol=1e-6)
    # clip features: a row per input in result.json's order, NaN for the undecodable one, the same from two ranks
    one, two = (np.load(tmp_path / 'feats' / f'{n}.npy') for n in ('one', 'two'))
    index = json.loads((tmp_path / 'feats' / 'one.json').read_text())
    assert index['video_ids'] == [r['video_id'] for r in results] and index['views_per_video'] == 2 * 3
    assert one.shape == (5, 8 * 32 + 8 * 32 // 4)  # res5 widths: slow 8 x 32, fast / beta 4
    assert np.isnan(one[1]).all() and not np.isnan(one[[0, 2, 3, 4]]).any()
    assert np.allclose(one, two, atol=1e-5, equal_nan=True) and np.array_equal(one[0], one[4])
    views = np.load(tmp_path / 'feats' / 'two_views.npy')  # [videos, views, C], view = temporal * crops + spatial
    assert views.shape == (5, 6, one.shape[1]) and np.isnan(views[1]).all()
    assert np.allclose(views.mean(axis=1), one, atol=1e-5, equal_nan=True)
    assert not np.allclose(views[0, 0], views[0, 1])  # the views differ: each row is its own view's


def test_predict_all_good_exits_zero(setup, tmp_path):
    video = os.path.join(setup['folder'], setup['val_lines'][0].split()[0])
    run(predict_command(setup, tmp_path, '--video', video))
    assert json.loads((tmp_path / 'result.json').read_text())[0]['video_id'] == video


# ---- export and Paddle Inference -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_then_predict_and_eval_with_paddle_inference(setup, tmp_path):
    """tools/deploy/export_model.py output: dynamic batch, within 1e-4 of the dygraph network; predict.py and eval.py on
    it give the dygraph run's results."""
    from inference import InferenceModel
    from config_utils import input_shapes
    from scoring import build_eval_model

    model_dir = tmp_path / 'inference'
    log = run([sys.executable, tool_path('export_model.py'), '--config',
               os.path.join(ROOT, 'slowfast-single.yaml'), '--weights', setup['weights'], '--save_dir',
               str(model_dir)] + setup['flags'])
    assert 'Paddle Inference vs dygraph max abs difference' in log
    assert {'export.json', 'slowfast.pdiparams'} <= set(os.listdir(model_dir))
    cfg = parse_config(os.path.join(ROOT, 'slowfast-single.yaml'), setup['flags'][1::2])
    dygraph = build_eval_model(cfg, setup['weights'])
    exported = InferenceModel(str(model_dir), threads=1)
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        clips = [rng.standard_normal([batch] + s).astype(np.float32) for s in input_shapes(cfg, 72)]
        with paddle.no_grad():
            expected = dygraph([paddle.to_tensor(c) for c in clips]).numpy()
        got = exported(clips).numpy()
        assert got.shape == (batch, 4) and np.abs(got - expected).max() <= 1e-4
        with paddle.no_grad():
            expected = dygraph.features([paddle.to_tensor(c) for c in clips]).numpy()
        got = exported.scores_and_features(clips)[1].numpy()  # the second output: the classifier's input
        assert got.shape == (batch, dygraph.feature_dim) and np.abs(got - expected).max() <= 1e-4

    video = os.path.join(setup['folder'], setup['val_lines'][0].split()[0])
    inference = ['-o', 'INFER.use_inference=True', '-o', f'INFER.model_dir={model_dir}']
    for name, flags in (('dy', []), ('pi', inference)):
        log = run(predict_command(setup, tmp_path / name, '--video', video, '--video', setup['videos']['zero'],
                                  '--features', str(tmp_path / name / 'f.npy'), *flags), expect=1)
    assert 'CPU + oneDNN' in log
    a, b = (json.loads((tmp_path / d / 'result.json').read_text()) for d in ('dy', 'pi'))
    assert [r['video_id'] for r in a] == [r['video_id'] for r in b] and 'error' in b[1]
    assert a[0]['top5_indices'] == b[0]['top5_indices']
    assert np.allclose(a[0]['top5_values'], b[0]['top5_values'], atol=1e-4)
    features = [np.load(tmp_path / d / 'f.npy') for d in ('dy', 'pi')]
    assert np.allclose(features[0], features[1], atol=1e-4, equal_nan=True) and np.isnan(features[1][1]).all()

    # the timeline of a video from the exported model: the dygraph network's windows
    for name, flags in (('dy', []), ('pi', inference)):
        run(predict_command(setup, tmp_path / name, '--video', video, '--timeline', str(tmp_path / name / 'tl'),
                            '--stride', '0.25', *flags))
    windows = [json.loads(next((tmp_path / d / 'tl').glob('*.json')).read_text())['windows'] for d in ('dy', 'pi')]
    assert len(windows[0]) > 1 and [w['start'] for w in windows[0]] == [w['start'] for w in windows[1]]
    assert np.allclose([w['top_k_values'] for w in windows[0]], [w['top_k_values'] for w in windows[1]], atol=1e-4)

    # an export from before the features output: predictions as before, features refused by name
    old = tmp_path / 'old'
    old.mkdir()
    paddle.jit.save(dygraph, str(old / 'slowfast'), input_spec=[[paddle.static.InputSpec([None] + s, 'float32')
                                                                 for s in input_shapes(cfg, 72)]])
    meta = json.loads((model_dir / 'export.json').read_text())
    (old / 'export.json').write_text(json.dumps({k: v for k, v in meta.items() if k != 'feature_dim'}))
    old_flags = ['-o', 'INFER.use_inference=True', '-o', f'INFER.model_dir={old}']
    run(predict_command(setup, tmp_path / 'old_out', '--video', video, *old_flags))
    log = run(predict_command(setup, tmp_path / 'old_out', '--video', video, '--features', str(tmp_path / 'o.npy'),
                              *old_flags), expect=4)
    assert 'this exported model has no clip features output' in log and str(old) in log

    # an export folder whose files were replaced by a pickle that runs code: Paddle Inference does not unpickle
    from helpers import hostile_files
    poisoned, marker = tmp_path / 'poisoned', tmp_path / 'marker'
    shutil.copytree(model_dir, poisoned)
    shutil.copy(hostile_files(str(tmp_path), marker)['reduce_os_system_p4'], poisoned / 'slowfast.pdiparams')
    log = run(predict_command(setup, tmp_path / 'poisoned_out', '--video', video, '-o', 'INFER.use_inference=True',
                              '-o', f'INFER.model_dir={poisoned}'), expect=4)
    assert f'{poisoned}: Paddle Inference cannot load this exported model' in log and not marker.exists()

    run(eval_command(setup, tmp_path / 'eval_dy'), expect=1)
    run(eval_command(setup, tmp_path / 'eval_pi', *inference), expect=1)
    scores = [np.load(tmp_path / d / 'video_scores.npy') for d in ('eval_dy', 'eval_pi')]
    assert np.allclose(scores[0], scores[1], atol=1e-4, equal_nan=True)

    log = run(predict_command(setup, tmp_path / 'bad', '--video', video, *inference, '-o', 'INFER.target_size=96'),
              expect=4)
    assert 'does not match the config: size 72 (config: 96)' in log
    log = run(predict_command(setup, tmp_path / 'none', '--video', video, '-o', 'INFER.use_inference=True', '-o',
                              f'INFER.model_dir={tmp_path / "nowhere"}'), expect=4)
    assert 'no exported model in' in log


@pytest.mark.slow
def test_onnx_export_matches_the_dygraph_network(setup, tmp_path):
    pytest.importorskip('paddle2onnx', reason='ONNX export is optional: pip install paddle2onnx onnxruntime')
    pytest.importorskip('onnxruntime', reason='the ONNX check needs onnxruntime')
    log = run([sys.executable, tool_path('export_model.py'), '--config',
               os.path.join(ROOT, 'slowfast-single.yaml'), '--weights', setup['weights'], '--save_dir',
               str(tmp_path / 'm'), '--onnx'] + setup['flags'])
    assert 'onnxruntime vs dygraph max abs difference' in log and (tmp_path / 'm' / 'slowfast.onnx').is_file()


@needs_ffmpeg
def test_eval_scores_every_real_world_video(setup, real_world, tmp_path):
    """Stream-copied cuts, start offsets, open GOPs, alt-ref VP9, audio first, 29.97 and variable frame rates:
    every one evaluated, none counted as failed."""
    listing = tmp_path / 'real.txt'
    listing.write_text(''.join(f'{path} {i % 4}\n' for i, (path, _) in enumerate(real_world.values())))
    log = run(eval_command(setup, tmp_path / 'out', '-o', f'TEST.filelist={listing}'))
    result = json.loads((tmp_path / 'out' / 'eval_result.json').read_text())
    assert result['num_videos'] == len(real_world) and result['num_failed'] == 0 and result['failed'] == []
    assert f'({len(real_world)} videos evaluated, 0 failed)' in log


@pytest.mark.parametrize('config', ['slowfast.yaml', 'configs/slowfast_r50_8x8.yaml', 'configs/slowfast_r101_8x8.yaml',
                                    'configs/slowfast_16x8_r101_50_50.yaml', 'configs/slow_r50_8x8.yaml',
                                    'configs/slow_r50_4x16.yaml'])
@pytest.mark.slow
def test_every_shipped_model_takes_a_training_step_and_exports_to_paddle_inference(config, tmp_path):
    """Each config's network (its depth, temporal blocks, frames, pathways) at width 8 and a 64-pixel crop: a
    training step moves it, and its export run by Paddle Inference gives the dygraph probabilities."""
    from inference import InferenceModel, export
    from config_utils import input_shapes

    cfg = parse_config(os.path.join(ROOT, config), ['MODEL.width_per_group=8', 'MODEL.beta=4', 'MODEL.num_classes=5',
                                                     'MODEL.crop_size=64', 'TEST.target_size=96'])
    paddle.seed(0)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal([2] + shape).astype(np.float32) for shape in input_shapes(cfg, 64)]
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=model.parameters())
    model.train()
    before = model.head.projection.weight.numpy().copy()
    loss = paddle.nn.functional.cross_entropy(model([paddle.to_tensor(c) for c in clips]), paddle.to_tensor([1, 3]))
    loss.backward()
    opt.step()
    assert np.isfinite(loss.item()) and not np.array_equal(before, model.head.projection.weight.numpy())

    views = [rng.standard_normal([2] + shape).astype(np.float32) for shape in input_shapes(cfg, 96)]
    export(model, cfg, 96, str(tmp_path / 'exported'))
    model.eval()
    with paddle.no_grad():
        expected = model([paddle.to_tensor(v) for v in views]).numpy()
    assert np.abs(InferenceModel(str(tmp_path / 'exported'))(views).numpy() - expected).max() <= 1e-4


@pytest.mark.parametrize('config', ['slowfast.yaml', 'configs/slowfast_r50_8x8.yaml', 'configs/slowfast_r101_8x8.yaml',
                                    'configs/slowfast_16x8_r101_50_50.yaml', 'configs/slow_r50_8x8.yaml',
                                    'configs/slow_r50_4x16.yaml', 'configs/slowfast_demo.yaml'])
def test_folding_the_batch_norms_keeps_every_shipped_network_s_outputs(config):
    """The export's rewrites (inference.fold_batch_norms, model_utils.pools_as_2d) on each config's eval network at
    width 8, with random weights and BN statistics: every batch norm becomes an identity, every [1, k, k] pool a 2D
    pool, and the probabilities and clip features stay within 1e-4 (relative, for the features); the network given to
    export keeps its norms."""
    import copy

    from helpers import random_state
    from inference import fold_batch_norms
    from config_utils import input_shapes
    from model_utils import pools_as_2d

    narrow = ['MODEL.width_per_group=8', 'MODEL.beta=4', 'MODEL.num_classes=5']
    cfg = parse_config(os.path.join(ROOT, config), narrow + ([] if 'demo' in config else ['MODEL.crop_size=64']))
    model = build_model(cfg)
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in random_state(cfg, seed=3).items()})
    model.eval()
    norms = [m for m in model.sublayers() if isinstance(m, paddle.nn.BatchNorm3D)]
    folded = copy.deepcopy(model)
    assert fold_batch_norms(folded) == len(norms) > 0
    pooling = [m for m in folded.sublayers() if getattr(m, 'shortcut_pool', 0) or type(m).__name__ == 'ResNetBasicStem']
    assert pools_as_2d(folded) == len(pooling) > 0 and all(m.pool_as_2d for m in pooling)
    assert not any(isinstance(m, paddle.nn.BatchNorm3D) for m in folded.sublayers())
    assert len([m for m in model.sublayers() if isinstance(m, paddle.nn.BatchNorm3D)]) == len(norms)
    rng = np.random.default_rng(0)
    views = [paddle.to_tensor(rng.standard_normal([2] + shape).astype(np.float32)) for shape in input_shapes(cfg, 96)]
    with paddle.no_grad():
        (p0, f0), (p1, f1) = model.scores_and_features(views), folded.scores_and_features(views)
    assert np.abs(p1.numpy() - p0.numpy()).max() <= 1e-4
    assert np.abs(f1.numpy() - f0.numpy()).max() <= 1e-4 * max(1.0, float(np.abs(f0.numpy()).max()))


# ---- any list length over any number of ranks ---------------------------------------------------------------------

SWEEP = '''
import json, os, sys
sys.path.insert(0, {root!r})
import eval as eval_script, predict
from config_utils import setup_logging

def main_status(module, argv):
    sys.argv = [module.__file__] + argv
    return module.main()

out, common, lists = {out!r}, {common!r}, {lists!r}
statuses = {{}}
for n, listing in lists.items():
    folder = os.path.join(out, str(n))
    statuses[n] = [
        main_status(eval_script, common + ['--save_path', folder + '/eval', '-o', 'TEST.filelist=' + listing]),
        main_status(predict, common + ['--filelist', listing, '--save_path', folder + '/predict', '--features',
                                       folder + '/predict/f.npy']),
        main_status(predict, common + ['--filelist', listing, '--save_path', folder + '/timeline', '--timeline',
                                       folder + '/timeline/tl', '--stride', '4f', '--features', folder + '/tl_f.npy']),
    ]
if int(os.environ.get('PADDLE_TRAINER_ID', '0')) == 0:
    with open(os.path.join(out, 'statuses.json'), 'w') as f:
        json.dump(statuses, f)
'''


def sweep_outputs(folder, n):
    """What a user reads of the sweep's runs for the list of ``n`` videos."""
    root = folder / str(n)
    evaluated = json.loads((root / 'eval' / 'eval_result.json').read_text())
    timelines = {p.name: json.loads(p.read_text())['windows'] for p in (root / 'timeline' / 'tl').glob('*.json')}
    return {'eval': {k: evaluated[k] for k in ('top1', 'top5', 'num_videos', 'num_failed', 'failed',
                                               'mean_class_acc', 'per_class_acc')},
            'scores': np.load(root / 'eval' / 'video_scores.npy'),
            'predict': json.loads((root / 'predict' / 'result.json').read_text()),
            'features': np.load(root / 'predict' / 'f.npy'),
            'timeline': json.loads((root / 'timeline' / 'result.json').read_text()),
            'timelines': timelines, 'window_features': np.load(root / 'tl_f.npy')}


def assert_same_outputs(one, many, where):
    assert one['eval'].keys() == many['eval'].keys()
    for key in one['eval']:
        assert one['eval'][key] == pytest.approx(many['eval'][key], abs=1e-9), (where, key)
    for key in ('scores', 'features', 'window_features'):
        assert one[key].shape == many[key].shape and np.allclose(one[key], many[key], atol=1e-5), (where, key)
    for key in ('predict', 'timeline'):
        assert [r['video_id'] for r in one[key]] == [r['video_id'] for r in many[key]], (where, key)
        for a, b in zip(one[key], many[key]):
            assert 'error' not in a and 'error' not in b and a['top5_indices'] == b['top5_indices'], (where, key)
            assert np.allclose(a['top5_values'], b['top5_values'], atol=1e-6), (where, key)
    assert one['timelines'].keys() == many['timelines'].keys()
    for name in one['timelines']:
        a, b = one['timelines'][name], many['timelines'][name]
        assert [w['start'] for w in a] == [w['start'] for w in b], (where, name)
        assert np.allclose([w['top_k_values'] for w in a], [w['top_k_values'] for w in b], atol=1e-5), (where, name)


@pytest.mark.slow
def test_every_list_length_on_two_and_three_ranks_gives_the_one_rank_results(setup, demo_lists, tmp_path):
    """Lists of 1 to 3 x ranks + 1 good videos (a rank may get none), 8 DataLoader workers per rank (more than its
    videos), 30 views: eval.py, predict.py with --features and predict.py --timeline with --features give the 1-rank
    outputs on 2 and 3 CPU ranks, every video evaluated. (Paddle's multi-worker IterableDataset loader lost the views
    of a rank's only video, or of the tail of a list: the video was reported undecodable.)"""
    train_list, val_list = demo_lists
    folder = os.path.dirname(val_list)
    good = [os.path.join(folder, line) for line in open(val_list).read().splitlines()]
    good += [os.path.join(folder, line) for line in open(train_list).read().splitlines()[:2]]
    lists = {}
    for n in range(1, 11):
        lists[n] = str(tmp_path / f'list{n}.txt')
        with open(lists[n], 'w') as f:
            f.write('\n'.join(good[:n]) + '\n')
    common = ['--config', os.path.join(ROOT, 'slowfast-single.yaml'), '--use_gpu', 'False', '--weights',
              setup['weights']] + setup['flags'] + ['-o', 'DATA.num_workers=8', '-o', 'TEST.num_ensemble_views=10',
                                                    '-o', 'INFER.num_ensemble_views=10', '-o', 'TEST.batch_size=6',
                                                    '-o', 'INFER.batch_size=6']
    outputs = {}
    for ranks in (1, 2, 3):
        out = tmp_path / f'ranks{ranks}'
        out.mkdir()
        chosen = {n: path for n, path in lists.items() if ranks == 1 or n <= 3 * ranks + 1}
        script = tmp_path / f'sweep{ranks}.py'
        script.write_text(SWEEP.format(root=ROOT, out=str(out), common=common, lists=chosen))
        launch = [] if ranks == 1 else ['-m', 'paddle.distributed.launch', '--nproc_per_node', str(ranks),
                                        '--log_dir', str(out / 'logs')]
        result = subprocess.run([sys.executable] + launch + [str(script)], capture_output=True, text=True,
                                timeout=1200, cwd=ROOT, env=dict(ENV, OMP_NUM_THREADS='1'))
        logs = ''.join(p.read_text() for p in sorted((out / 'logs').glob('workerlog.*'))) if ranks > 1 else ''
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + logs[-4000:]
        statuses = json.loads((out / 'statuses.json').read_text())
        assert all(s == [0, 0, 0] for s in statuses.values()), statuses  # nothing failed, nothing undecodable
        outputs[ranks] = {n: sweep_outputs(out, n) for n in chosen}
    for ranks in (2, 3):
        for n, got in outputs[ranks].items():
            assert got['eval']['num_videos'] == n and got['eval']['num_failed'] == 0
            assert_same_outputs(outputs[1][n], got, f'{n} videos on {ranks} ranks')


@pytest.mark.slow
def test_one_video_on_two_ranks_through_the_scripts_and_the_rank_of_a_failure_is_logged(setup, tmp_path):
    """The multi-GPU scripts on CPU ranks with a single video (rank 1 has none) and default workers: evaluated and
    predicted; a list of a good and a missing video: the missing one is undecodable, rank 1's log says so and why."""
    video = os.path.join(setup['folder'], setup['val_lines'][0].split()[0])
    (tmp_path / 'one.txt').write_text(f'{video} 0\n')
    (tmp_path / 'two.txt').write_text(f'{video} 0\n{setup["videos"]["missing"]} 1\n')
    env = dict(ENV, USE_GPU='False', NPROC='2', CONFIG='slowfast-single.yaml', WEIGHTS=setup['weights'])
    views = ['-o', 'DATA.num_workers=8', '-o', 'TEST.num_ensemble_views=10', '-o', 'INFER.num_ensemble_views=10']
    run(['bash', os.path.join(ROOT, 'run_eval_multi.sh'), '--save_path', str(tmp_path / 'eval'), '-o',
         f'TEST.filelist={tmp_path / "one.txt"}'] + setup['flags'] + views, env=dict(env, LOG_DIR=str(tmp_path / 'l1')))
    result = json.loads((tmp_path / 'eval' / 'eval_result.json').read_text())
    assert result['num_videos'] == 1 and result['num_failed'] == 0 and result['views_per_video'] == 30
    run(['bash', os.path.join(ROOT, 'run_infer_multi.sh'), '--save_path', str(tmp_path / 'predict'), '--video', video]
        + setup['flags'] + views, env=dict(env, LOG_DIR=str(tmp_path / 'l2')))
    [entry] = json.loads((tmp_path / 'predict' / 'result.json').read_text())
    assert entry['video_id'] == video and 'error' not in entry

    run(['bash', os.path.join(ROOT, 'run_eval_multi.sh'), '--save_path', str(tmp_path / 'eval2'), '-o',
         f'TEST.filelist={tmp_path / "two.txt"}'] + setup['flags'] + views, env=dict(env, LOG_DIR=str(tmp_path / 'l3')),
        expect=1)
    result = json.loads((tmp_path / 'eval2' / 'eval_result.json').read_text())
    assert result['num_videos'] == 1 and result['failed'] == [setup['videos']['missing']]
    rank1 = (tmp_path / 'l3' / 'workerlog.1').read_text()
    assert f'rank 1: cannot decode video {setup["videos"]["missing"]}: ' in rank1


@pytest.mark.slow
def test_a_list_of_missing_videos_stops_eval_and_predict_on_every_rank_with_the_list_error(setup, tmp_path):
    listing = tmp_path / 'missing.txt'
    listing.write_text(''.join(f'clips/v{i}.mp4 {i % 4}\n' for i in range(5)))
    env = dict(ENV, USE_GPU='False', NPROC='2', CONFIG='slowfast-single.yaml', WEIGHTS=setup['weights'])
    expected = f'{listing}: 5 of 5 listed videos do not exist (the first: {tmp_path / "clips" / "v0.mp4"})'
    for script, flags in (('run_eval_multi.sh', ['-o', f'TEST.filelist={listing}']),
                          ('run_infer_multi.sh', ['-o', f'INFER.filelist={listing}'])):
        logs = tmp_path / script
        run(['bash', os.path.join(ROOT, script), '--save_path', str(tmp_path / 'out')] + setup['flags'] + flags,
            env=dict(env, LOG_DIR=str(logs)), expect=3)
        for rank in (0, 1):
            assert expected in (logs / f'workerlog.{rank}').read_text(), (script, rank)


# ---- outputs that cannot be written, a disk that fills, weights given oddly -------------------------------------------

def test_an_output_that_cannot_be_written_stops_eval_and_predict_before_any_work(setup, tmp_path):
    readonly = tmp_path / 'readonly'
    readonly.mkdir()
    weights = readonly / 'tiny.pdparams'  # the default --save_path of eval.py is the weights' folder
    weights.write_bytes(open(setup['weights'] + '.pdparams', 'rb').read())
    (tmp_path / 'a_file').write_text('x')
    no_save_path = eval_command(setup, tmp_path, '--weights', str(weights))
    no_save_path[no_save_path.index('--save_path'):no_save_path.index('--save_path') + 2] = []
    cases = [
        (eval_command(setup, readonly / 'out'), f'--save_path {readonly / "out"}: cannot write there'),
        (no_save_path, f'--save_path {readonly} (not given: the folder of {weights}): cannot write there'),
        (predict_command(setup, readonly / 'out', '--video', setup['videos']['mp4']),
         f'--save_path {readonly / "out"}: cannot write there'),
        (predict_command(setup, tmp_path / 'p', '--video', setup['videos']['mp4'], '--features', readonly / 'f.npy'),
         f'--features {readonly / "f.npy"}: cannot write there in {readonly}'),
        (predict_command(setup, tmp_path / 'p', '--video', setup['videos']['mp4'], '--timeline', readonly / 't'),
         f'--timeline {readonly / "t"}: cannot write there'),
    ]
    for command, named in cases:
        result = subprocess.run(in_mount_namespace(command, readonly=[readonly]), capture_output=True, text=True,
                                timeout=600, cwd=ROOT, env=ENV)
        assert result.returncode == 7, (named, result.stdout[-2000:] + result.stderr[-2000:])
        one_error_line(result.stdout, named, '(Read-only file system)')
        assert 'evaluating' not in result.stdout and 'predicting' not in result.stdout  # before the work
    log = run(eval_command(setup, tmp_path / 'a_file'), expect=7)
    one_error_line(log, f'--save_path {tmp_path / "a_file"}: {tmp_path / "a_file"} stands where the folder must go')
    log = run(predict_command(setup, tmp_path / 'p', '--video', setup['videos']['mp4'], '--features',
                              tmp_path / 'a_file' / 'f.npy'), expect=7)
    one_error_line(log, f'--features {tmp_path / "a_file" / "f.npy"}: {tmp_path / "a_file"} is a file, not a folder')
    # two ranks: both stop at start
    env = dict(ENV, USE_GPU='False', NPROC='2', LOG_DIR=str(tmp_path / 'logs'), CONFIG='slowfast-single.yaml',
               WEIGHTS=setup['weights'])
    result = subprocess.run(in_mount_namespace(['bash', os.path.join(ROOT, 'run_eval_multi.sh'), '--save_path',
                                                readonly / 'out', '-o', f'TEST.filelist={setup["list"]}'] +
                                               setup['flags'], readonly=[readonly]),
                            capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 7, result.stdout[-2000:]
    one_error_line((tmp_path / 'logs' / 'workerlog.1').read_text(), f'rank 0 stopped: --save_path {readonly / "out"}')


FILL_WHEN = 'until grep -q {marker} {log}; do sleep 0.05; done; cat /dev/zero > {disk}/filler 2> /dev/null; true'


@pytest.mark.slow
@pytest.mark.parametrize('script', ['eval', 'predict'])
def test_a_disk_that_fills_during_the_run_loses_no_result(setup, tmp_path, script):
    """The disk of --save_path fills up while the views are scored: the accuracy is still logged and every output is
    written below a temporary folder the error names, equal to what a run with room writes."""
    disk, tmp = tmp_path / 'disk', tmp_path / 'tmp'
    tmp.mkdir()
    if script == 'eval':
        command, marker, names = eval_command(setup, disk / 'out'), 'evaluating', ['eval_result.json']
        normal = eval_command(setup, tmp_path / 'normal')
    else:
        extra = ['--filelist', setup['list'], '--features', str(disk / 'out' / 'f.npy')]
        command, marker, names = predict_command(setup, disk / 'out', *extra), 'predicting', ['result.json', 'f.json']
        normal = predict_command(setup, tmp_path / 'normal', '--filelist', setup['list'], '--features',
                                 str(tmp_path / 'normal' / 'f.npy'))
    log = tmp_path / 'log'
    filler = FILL_WHEN.format(marker=marker, log=log, disk=disk)
    wrapped = ['bash', '-c', f'"$@" > {log} 2>&1 & pid=$!; {filler}; wait $pid', 'bash'] + command
    result = subprocess.run(in_mount_namespace(wrapped, small={disk: '1m'}), capture_output=True, text=True,
                            timeout=600, cwd=ROOT, env=dict(ENV, TMPDIR=str(tmp)))
    text = log.read_text()
    assert result.returncode == 7, text[-3000:]
    [rescue] = tmp.glob(f'slowfast-{script}-*')
    line = one_error_line(text, f'cannot write {disk / "out"}', 'No space left on device',
                          f'so every output of this run was written below {rescue} instead')
    if script == 'eval':
        assert '[EVAL] eval finished, avg_acc1= ' in text  # logged before the writes
    run(normal, expect=1)  # two of the list's videos do not decode
    for name in names:
        got = json.loads(open(str(rescue) + str(disk / 'out' / name)).read())
        want = json.loads((tmp_path / 'normal' / name).read_text())
        if name == 'eval_result.json':
            got, want = ({k: v for k, v in r.items() if k != 'weights'} for r in (got, want))
        assert got == want, (name, line)


@pytest.mark.slow
def test_weights_given_as_a_folder_or_a_cut_file(setup, tmp_path):
    from checkpoint import save_checkpoint

    model = build_model(parse_config(os.path.join(ROOT, 'slowfast-single.yaml'), [
        o for o in setup['flags'] if o != '-o']))
    model.set_state_dict(paddle.load(setup['weights'] + '.pdparams'))
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    for epoch in range(2):
        save_checkpoint(str(tmp_path / 'ck'), epoch, model, opt, {})
    log = run(eval_command(setup, tmp_path / 'out', '--weights', str(tmp_path / 'ck')), expect=4)
    line = one_error_line(log, f'--weights {tmp_path / "ck"} is a folder, not a weights file; its newest complete '
                               f'checkpoint: --weights {tmp_path / "ck" / "slowfast_epoch1"}')
    log = run(eval_command(setup, tmp_path / 'out', *line.rsplit(': ', 1)[1].split()), expect=1)  # as printed
    assert '(6 videos evaluated, 2 failed)' in log
    data = open(setup['weights'] + '.pdparams', 'rb').read()
    for name, content in (('cut', data[:len(data) // 2]), ('empty', b'')):
        path = tmp_path / f'{name}.pdparams'
        path.write_bytes(content)
        for flags in ((), ('--allow_pickle',)):
            log = run(eval_command(setup, tmp_path / 'out', '--weights', str(path), *flags), expect=4)
            one_error_line(log, f'{path}: not a file written by paddle.save, or cut short')


def test_a_list_label_map_and_config_saved_with_a_byte_order_mark_lose_no_video(setup, demo_lists, tmp_path):
    """Excel, Notepad and PowerShell start a UTF-8 file with the mark: every listed video is still evaluated."""
    folder = os.path.dirname(demo_lists[1])
    listing = tmp_path / 'val.txt'
    listing.write_text('\ufeff' + ''.join(f'{os.path.join(folder, line)}\n' for line in setup['val_lines']),
                       encoding='utf-8')
    names = tmp_path / 'classes.txt'
    names.write_text('\ufeffright\nleft\ndown\nup\n', encoding='utf-8')
    config = tmp_path / 'config.yaml'
    config.write_text('\ufeff' + open(os.path.join(ROOT, 'slowfast-single.yaml'), encoding='utf-8').read(),
                      encoding='utf-8')
    command = eval_command(setup, tmp_path / 'out', '-o', f'TEST.filelist={listing}', '-o',
                           f'DATA.label_map={names}')
    command[command.index('--config') + 1] = str(config)
    log = run(command)
    assert f'({len(setup["val_lines"])} videos evaluated, 0 failed)' in log
