"""tools/weights/convert_weights.py: every published format maps every tensor; errors name the culprit and write
nothing. The files are written with the publishers' names as tests/helpers.py spells them out, independently of the
tool."""
import logging
import os
import pickle
import re

import numpy as np
import paddle
import pytest

from helpers import (ROOT, TINY, assert_same_weights, caffe2_name, parse_printed, pyslowfast_name, random_state,
                     torch_layout, write_published)
from config_utils import STAGE_DEPTHS, parse_config
from convert_weights import main as convert_main
from errors import exit_on_user_error
from scoring import build_eval_model
from weight_conversion import FAMILY

TINY_5 = ['MODEL.num_classes=5'] + TINY + ['TEST.target_size=96', 'INFER.target_size=96']  # as the tiny_cfg fixture
WIDTHS = ['MODEL.width_per_group=8', 'MODEL.beta=4', 'MODEL.num_classes=5']  # a shipped model, narrow
def convert(src, dst, *extra, tiny=True):
    """tools/weights/convert_weights.py as its ``__main__`` runs it (with the tiny config, or recognising the model when
    not ``tiny``); returns the exit status."""
    argv = ['--src', str(src), '--dst', str(dst)]
    if tiny:
        argv += ['--config', os.path.join(ROOT, 'slowfast.yaml')] + [a for o in TINY_5 for a in ('-o', o)]
    argv += list(extra)
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(lambda: convert_main(argv), logging.getLogger('convert_weights'))
    return stop.value.code


def test_caffe2_pkl_maps_every_blob_without_torch(tiny_cfg, tmp_path, capsys):
    state = random_state(tiny_cfg)
    blobs = {caffe2_name(k): torch_layout(k, v) for k, v in state.items()}
    blobs.update({'conv1_w_momentum': np.zeros(1), 'lr': np.ones(1), 'model_iter': np.ones(1)})  # optimizer state
    with open(tmp_path / 'c2.pkl', 'wb') as f:
        pickle.dump({'blobs': blobs}, f, protocol=2)
    assert convert(tmp_path / 'c2.pkl', tmp_path / 'out.pdparams') == 0
    assert_same_weights(tmp_path / 'out.pdparams', state)
    assert 'caffe2 checkpoint' in (out := capsys.readouterr().out) and '3 dropped' in out


def test_paddlevideo_and_paddle_checkpoints(tiny_cfg, tmp_path):
    state = random_state(tiny_cfg, seed=1)
    write_published('paddlevideo', state, tmp_path / 'pv.pdparams')
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, str(tmp_path / 'orig.pdparams'))
    for name in ('pv', 'orig'):
        assert convert(tmp_path / f'{name}.pdparams', tmp_path / f'{name}_out') == 0
        assert_same_weights(tmp_path / f'{name}_out.pdparams', state)


@pytest.mark.parametrize('prefix', ['', 'model.'])
def test_pyslowfast_pyth(tiny_cfg, tmp_path, prefix):
    torch = pytest.importorskip('torch', reason='reading .pyth needs torch')
    state = random_state(tiny_cfg, seed=2)
    model_state = {prefix + pyslowfast_name(k): torch.from_numpy(np.ascontiguousarray(torch_layout(k, v)))
                   for k, v in state.items()}
    model_state['s1.pathway0_stem.bn.num_batches_tracked'.replace('s1', prefix + 's1')] = torch.tensor(7)
    torch.save({'epoch': 3, 'model_state': model_state, 'cfg': 'MODEL:\n  NUM_CLASSES: 5\n'}, tmp_path / 'sf.pyth')
    assert convert(tmp_path / 'sf.pyth', tmp_path / 'out.pdparams') == 0
    assert_same_weights(tmp_path / 'out.pdparams', state)


def test_pytorchvideo_pyth_gives_the_reference_probabilities(tiny_cfg, tmp_path):
    torch = pytest.importorskip('torch', reason='the PyTorch reference needs torch')
    pytest.importorskip('pytorchvideo', reason='the PyTorch reference needs pytorchvideo')
    from torch_reference import build_reference, run_reference

    torch.manual_seed(0)
    ref = build_reference(tiny_cfg)
    with torch.no_grad():
        for layer in ref.modules():
            if isinstance(layer, torch.nn.BatchNorm3d):
                layer.weight.uniform_(0.5, 1.0), layer.bias.uniform_(-0.2, 0.2)
                layer.running_mean.uniform_(-0.2, 0.2), layer.running_var.uniform_(0.5, 1.5)
        ref.blocks[6].proj.weight.mul_(20)
    torch.save({'model_state': {'model.' + k: v for k, v in ref.state_dict().items()}}, tmp_path / 'ptv.pyth')
    assert convert(tmp_path / 'ptv.pyth', tmp_path / 'ptv.pdparams') == 0
    model = build_eval_model(tiny_cfg, str(tmp_path / 'ptv.pdparams'))
    rng = np.random.default_rng(0)
    x = [rng.normal(0, 1, (2, 3, n, 96, 96)).astype(np.float32) for n in (2, 8)]
    ref.eval()
    with torch.no_grad():
        expected = run_reference(ref, x).numpy()
    probs = model([paddle.to_tensor(a) for a in x]).numpy()
    assert expected.max() > 0.5 and np.abs(probs - expected).max() <= 1e-4


def test_mismatches_are_named_with_the_fix_and_nothing_is_written(tiny_cfg, tmp_path, capsys):
    state = random_state(tiny_cfg)

    def attempt(name, blobs, *extra):
        with open(tmp_path / f'{name}.pkl', 'wb') as f:
            pickle.dump({'blobs': blobs}, f)
        capsys.readouterr()
        assert convert(tmp_path / f'{name}.pkl', tmp_path / f'{name}.pdparams', *extra) == 4
        assert not os.path.exists(tmp_path / f'{name}.pdparams')
        return capsys.readouterr().out

    blobs = {caffe2_name(k): torch_layout(k, v) for k, v in state.items()}
    extra = {**blobs, 'nonlocal_conv3_1_theta_w': np.ones(3)}
    assert 'no mapping: nonlocal_conv3_1_theta_w' in attempt('extra', extra)
    partial = {k: v for k, v in blobs.items() if k != 't_res3_1_branch2b_w'}
    assert 'missing from the file: s3.pathway1_res1.branch2.b.weight' in attempt('partial', partial)
    head7 = {**blobs, 'pred_w': np.ones((7, blobs['pred_w'].shape[1]), np.float32), 'pred_b': np.ones(7, np.float32)}
    assert '-o MODEL.num_classes=7' in attempt('head', head7)
    text = attempt('arch', blobs, '-o', 'MODEL.fusion_kernel_size=5')  # a 4x16-style file into a kernel-5 model
    assert 's1_fuse._conv_f2s.weight' in text and '-o MODEL.fusion_kernel_size=3' in text
    capsys.readouterr()
    assert convert(tmp_path / 'nope.pkl', tmp_path / 'x.pdparams') == 4
    assert 'checkpoint not found' in capsys.readouterr().out


class Exploit:
    def __reduce__(self):
        return (os.system, ('touch pwned',))


def test_pickled_code_is_refused(tiny_cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open('evil.pkl', 'wb') as f:
        pickle.dump({'blobs': {'conv1_w': Exploit()}}, f)
    assert convert('evil.pkl', 'out.pdparams') == 4
    assert 'refusing to load' in capsys.readouterr().out and not os.path.exists('pwned')
    torch = pytest.importorskip('torch', reason='reading .pyth needs torch')
    torch.save({'model_state': {'x': torch.ones(1)}, 'obj': Exploit()}, 'evil.pyth')
    assert convert('evil.pyth', 'out.pdparams') == 4
    assert '--allow_pickle' in capsys.readouterr().out
    assert not os.path.exists('pwned') and not os.path.exists('out.pdparams')


@pytest.mark.parametrize('config', FAMILY)
def test_every_shipped_model_is_recognised_from_its_tensors_in_each_format(config, tmp_path, capsys):
    """Without --config the tool finds which shipped model a file holds (here at width 8, beta 4, 5 classes: the
    overrides it reports), from Caffe2, PySlowFast and pytorchvideo files alike."""
    cfg = parse_config(os.path.join(ROOT, config), WIDTHS)
    state = random_state(cfg)
    files = {}
    write_published('caffe2', state, tmp_path / 'c2.pkl', STAGE_DEPTHS[cfg.MODEL.depth])
    files['c2.pkl'] = state
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        write_published('pyslowfast', state, tmp_path / 'sf.pyth')
        files['sf.pyth'] = state
        try:
            from torch_reference import build_hub_reference, reference_to_paddle
            hub = {'slowfast.yaml': None, 'configs/slowfast_r50_8x8.yaml': 'slowfast_r50',
                   'configs/slowfast_r101_8x8.yaml': 'slowfast_r101',
                   'configs/slowfast_16x8_r101_50_50.yaml': 'slowfast_16x8_r101_50_50',
                   'configs/slow_r50_8x8.yaml': 'slow_r50', 'configs/slow_r50_4x16.yaml': 'slow_r50'}[config]
            if hub:
                ref = build_hub_reference(hub, cfg)
                torch.save({'model_state': ref.state_dict()}, tmp_path / 'ptv.pyth')
                files['ptv.pyth'] = reference_to_paddle(ref.state_dict())
        except ImportError:  # no pytorchvideo
            pass
    # Slow 4x16 has Slow 8x8's weights (they differ in sampling): the first is named, with a warning
    named = 'configs/slow_r50_8x8.yaml' if config == 'configs/slow_r50_4x16.yaml' else config
    widths = {o for o in WIDTHS if cfg.MODEL.name == 'SLOWFAST' or 'beta' not in o}  # Slow-only has no beta
    for name, expected in files.items():
        capsys.readouterr()
        assert convert(tmp_path / name, tmp_path / f'{name}.pdparams', tiny=False) == 0, name
        log = capsys.readouterr().out
        found = re.search(rf'recognised {re.escape(named)} with (.*?): evaluate and fine-tune it with (.*)', log)
        assert found and set(found.group(1).split()) == widths, log
        # the flags as printed, through eval.py's own command line: the converted weights load into that model
        cfg_printed, _ = parse_printed(f'python eval.py --weights {tmp_path / name}.pdparams {found.group(2)}', ROOT)
        fixed = ('name', 'depth', 'width_per_group', 'num_classes', 'fusion_kernel_size', 'num_block_temp_kernel')
        fixed += ('beta',) if cfg.MODEL.name == 'SLOWFAST' else ()  # what the weights fix (Slow-only has no beta)
        assert {k: cfg_printed.MODEL[k] for k in fixed} == {k: cfg.MODEL[k] for k in fixed}, found.group(2)
        assert ('differ in sampling only' in log) == (cfg.MODEL.name == 'SLOW')
        assert_same_weights(tmp_path / f'{name}.pdparams', expected)


def test_a_model_outside_the_family_is_named_not_guessed(tmp_path, capsys):
    cfg = parse_config(os.path.join(ROOT, 'slowfast.yaml'), WIDTHS + ['MODEL.fusion_kernel_size=3'])
    write_published('caffe2', random_state(cfg), tmp_path / 'c2.pkl')
    assert convert(tmp_path / 'c2.pkl', tmp_path / 'x.pdparams', tiny=False) == 4
    assert 'none of the shipped models (name SLOWFAST, depth 50, fusion_kernel_size 3, num_block_temp_kernel [];' in \
        capsys.readouterr().out and not os.path.exists(tmp_path / 'x.pdparams')


@pytest.mark.parametrize('fmt', ['paddlevideo', 'pyslowfast'])
def test_a_cut_or_empty_checkpoint_is_named_with_status_4_with_or_without_allow_pickle(tiny_cfg, tmp_path, capsys,
                                                                                       fmt):
    if fmt == 'pyslowfast':
        pytest.importorskip('torch', reason='a .pyth is read with torch (pip install torch)')
    ext = '.pyth' if fmt == 'pyslowfast' else '.pdparams'
    whole = tmp_path / f'whole{ext}'
    write_published(fmt, random_state(tiny_cfg), whole)
    data = whole.read_bytes()
    for name, content in (('cut', data[:len(data) // 2]), ('empty', b'')):
        src = tmp_path / f'{name}{ext}'
        src.write_bytes(content)
        for flags in ((), ('--allow_pickle',)):
            capsys.readouterr()
            assert convert(src, tmp_path / 'out.pdparams', *flags) == 4, (name, flags)
            out = capsys.readouterr()
            errors = [line for line in (out.out + out.err).splitlines() if 'ERROR' in line]
            assert len(errors) == 1 and f'{src}: not a file written by' in errors[0] and 'cut short' in errors[0], \
                (name, flags, out.out[-1000:] + out.err[-1000:])
            assert 'Traceback' not in out.out + out.err
    assert not (tmp_path / 'out.pdparams').exists()
