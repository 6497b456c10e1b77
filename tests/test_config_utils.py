import logging
import os
import subprocess
import sys

import pytest
import yaml

import config_utils
from config_utils import SCHEMA, ConfigError, default_config, log_config, parse_args, parse_config
from video_lists import read_label_map

from helpers import ROOT

RECIPE = os.path.join(ROOT, 'slowfast.yaml')
SINGLE = os.path.join(ROOT, 'slowfast-single.yaml')


def write(tmp_path, text, name='cfg.yaml'):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def exit_message(capsys, mode, argv):
    """Run ``parse_args`` expecting exit status 2; return what it printed on stderr."""
    with pytest.raises(SystemExit) as exc:
        parse_args(mode, argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


# ---- the shipped configs ----------------------------------------------------------------------------------------

def test_recipe_config_carries_every_key_with_the_original_values():
    with open(RECIPE) as f:
        raw = yaml.safe_load(f)
    assert {s: set(keys) for s, keys in raw.items()} == {s: set(keys) for s, keys in SCHEMA.items()}
    cfg = parse_config(RECIPE)
    # every value is the recipe's; the label map points at the 400 Kinetics names shipped beside the config
    assert cfg.DATA.label_map == os.path.join(ROOT, 'kinetics400_labels.txt')
    cfg.DATA.label_map = ''
    assert cfg == default_config()
    names = read_label_map(os.path.join(ROOT, 'kinetics400_labels.txt'), 400)
    assert len(set(names)) == 400 and names[0] == 'abseiling' and names[-1] == 'zumba'
    assert names == sorted(names, key=str.lower)  # class ids are the names in alphabetical order
    # spot checks against spec 1.1, including the values PyYAML alone gets wrong
    assert cfg.TRAIN.l2_weight_decay == pytest.approx(1e-4) and isinstance(cfg.TRAIN.l2_weight_decay, float)
    assert (cfg.TRAIN.base_lr, cfg.TRAIN.warmup_epochs, cfg.TRAIN.warmup_start_lr) == (0.1, 34.0, 0.01)
    assert (cfg.MODEL.num_frames, cfg.MODEL.alpha, cfg.MODEL.beta, cfg.MODEL.sampling_rate) == (32, 8, 8, 2)
    assert (cfg.MODEL.depth, cfg.MODEL.width_per_group, cfg.MODEL.fusion_kernel_size) == (50, 64, 5)
    assert (cfg.MODEL.fusion_conv_channel_ratio, cfg.MODEL.dropout_rate) == (2, 0.5)
    assert cfg.TEST.num_ensemble_views * cfg.TEST.num_spatial_crops == 30
    assert cfg.INFER.save_path == './data/results' and cfg.INFER.batch_size == 32
    assert cfg.VALID.use_preciseBN is True and cfg.VALID.num_batches_preciseBN == 200


def test_single_gpu_config_differs_only_in_batch_and_gpus():
    recipe, single = parse_config(RECIPE), parse_config(SINGLE)
    diff = {(s, k) for s in recipe for k in recipe[s] if recipe[s][k] != single[s][k]}
    assert diff == {('TRAIN', 'batch_size'), ('TRAIN', 'num_gpus'), ('VALID', 'batch_size'),
                    ('TEST', 'batch_size'), ('INFER', 'batch_size')}
    assert single.TRAIN.batch_size == 8 and single.TRAIN.num_gpus == 1 and single.INFER.batch_size == 8


def test_attribute_access_and_missing_keys_take_recipe_values(tmp_path):
    cfg = parse_config(write(tmp_path, 'TRAIN:\n  epoch: 3\n'))
    assert cfg.TRAIN.epoch == 3 and cfg['TRAIN']['epoch'] == 3
    assert cfg.MODEL.num_classes == 400
    with pytest.raises(AttributeError):
        cfg.TRAIN.no_such_key


def test_safe_loader_refuses_python_objects(tmp_path):
    path = write(tmp_path, 'TRAIN:\n  epoch: !!python/object/apply:os.system ["echo hacked"]\n')
    with pytest.raises(ConfigError, match='not valid YAML'):
        parse_config(path)


@pytest.mark.parametrize('text, value', [('1e-4', 1e-4), ('5E-3', 5e-3), ('2', 2.0), ('0.5', 0.5), ('.5', 0.5)])
def test_scientific_and_integer_floats_load_as_float(tmp_path, text, value):
    cfg = parse_config(write(tmp_path, f'TRAIN:\n  l2_weight_decay: {text}\n'))
    assert cfg.TRAIN.l2_weight_decay == pytest.approx(value)
    assert type(cfg.TRAIN.l2_weight_decay) is float


# ---- overrides and flags ----------------------------------------------------------------------------------------

def test_overrides_are_typed_and_flags_win_over_overrides():
    cfg, args = parse_args('train', ['--config', RECIPE, '-o', 'TRAIN.epoch=2', '-o', 'TRAIN.base_lr=1e-3',
                                     '-o', 'VALID.use_preciseBN=False', '-o', 'MODEL.image_mean=[0.5, 0.5, 0.5]',
                                     '-o', 'TRAIN.filelist=lists/my train.txt', '-o', 'TRAIN.batch_size=16',
                                     '--batch_size', '32', '--use_gpu', 'False'])
    assert cfg.TRAIN.epoch == 2 and cfg.TRAIN.base_lr == 1e-3 and cfg.VALID.use_preciseBN is False
    assert cfg.MODEL.image_mean == [0.5, 0.5, 0.5] and cfg.TRAIN.filelist == 'lists/my train.txt'
    assert cfg.TRAIN.batch_size == 32 and cfg.VALID.batch_size == 32  # the original's --batch_size merge
    assert cfg.TRAIN.use_gpu is False and args.use_gpu is False


def test_original_flags_reach_their_sections():
    cfg, args = parse_args('train', ['--config=' + SINGLE, '--epoch=5', '--use_data_parallel=0', '--resume=True',
                                     '--resume_epoch', '3', '--save_dir', 'ck', '--use_visualdl', 'true',
                                     '--vd_logdir', 'vd', '--log_interval', '7', '--valid_interval', '2',
                                     '--weights', 'w.pdparams'])
    assert cfg.TRAIN.epoch == 5 and args.use_data_parallel is False and args.resume is True
    assert (args.resume_epoch, args.save_dir, args.use_visualdl, args.vd_logdir) == (3, 'ck', True, 'vd')
    assert (args.log_interval, args.valid_interval, args.weights) == (7, 2, 'w.pdparams')
    cfg, _ = parse_args('eval', ['--config', RECIPE, '--weights', 'ck/slowfast_epoch9', '--batch_size', '16'])
    assert cfg.TEST.weights == 'ck/slowfast_epoch9' and cfg.TEST.batch_size == 16 and cfg.TRAIN.batch_size == 64
    cfg, _ = parse_args('infer', ['--config', RECIPE, '--weights', "it's.pdparams", '--save_path', 'out'])
    assert cfg.INFER.weights == "it's.pdparams" and cfg.INFER.save_path == 'out'
    assert cfg.TEST.weights == 'checkpoints/slowfast_epoch195'


def test_boolean_flags_alone_mean_true_and_still_take_a_value():
    _, args = parse_args('train', ['--config', RECIPE, '--resume', '--use_visualdl', '-o', 'TRAIN.epoch=1'])
    assert args.resume is True and args.use_visualdl is True
    _, args = parse_args('train', ['--config', RECIPE, '--resume', 'False', '--use_visualdl', 'true'])
    assert args.resume is False and args.use_visualdl is True
    _, args = parse_args('train', ['--config', RECIPE])
    assert args.resume is False and args.use_visualdl is False and args.use_gpu is None
    cfg, args = parse_args('eval', ['--config', RECIPE, '--use_gpu'])
    assert args.use_gpu is True


def test_use_gpu_is_unset_unless_given():
    _, args = parse_args('eval', ['--config', RECIPE])
    assert args.use_gpu is None  # the script then picks the GPU when Paddle has CUDA


# ---- validation: exit status 2 naming the culprit ---------------------------------------------------------------

@pytest.mark.parametrize('argv, message', [
    (['-o', 'TRAIN.bse_lr=0.2'], "unknown key 'TRAIN.bse_lr' (did you mean 'TRAIN.base_lr'?)"),
    (['-o', 'TRIAN.epoch=2'], "unknown section 'TRIAN' (did you mean 'TRAIN'?)"),
    (['-o', 'MULTIGRID.bn_base_size=8'], "'MULTIGRID.bn_base_size' is now TRAIN.bn_group"),
    (['-o', 'TRAIN.bn_group=-1'], 'TRAIN.bn_group must be >= 0, got -1'),
    (['-o', 'TRAIN.epoch=two'], "TRAIN.epoch must be int, got 'two'"),
    (['-o', 'TRAIN.epoch=2.5'], 'TRAIN.epoch must be int, got 2.5'),
    (['-o', 'VALID.use_preciseBN=1'], 'VALID.use_preciseBN must be bool, got 1'),
    (['-o', 'MODEL.image_std=[0.2, x, 0.2]'], 'MODEL.image_std must be list of numbers'),
    (['-o', 'MODEL.shortcut_avg_pool=[res2]'], 'MODEL.shortcut_avg_pool must be a list of stage names from res3'),
    (['-o', 'MODEL.shortcut_avg_pool=true'], 'MODEL.shortcut_avg_pool must be a list of stage names from res3'),
    (['-o', 'TRAIN.epoch'], "malformed override 'TRAIN.epoch'"),
    (['-o', 'epoch=3'], "malformed override 'epoch=3'"),
    (['-o', 'TRAIN.epoch=[1'], 'value is not valid YAML'),
    (['-o', 'MODEL.alpha=5'], 'MODEL.num_frames (32) must be divisible by MODEL.alpha (5)'),
    (['-o', 'MODEL.depth=34'], 'MODEL.depth must be one of [50, 101, 152], got 34'),
    (['-o', 'MODEL.num_block_temp_kernel=[3, 4, 23, 3]'],
     "MODEL.num_block_temp_kernel must be [] or 4 block counts (res2..res5), each at most the stage's blocks "
     '[3, 4, 6, 3] at depth 50; got [3, 4, 23, 3]'),
    (['-o', 'MODEL.num_block_temp_kernel=[3, 4]'], 'MODEL.num_block_temp_kernel must be [] or 4 block counts'),
    (['-o', 'MODEL.num_block_temp_kernel=[3, 4.5, 6, 3]'], 'MODEL.num_block_temp_kernel must be list of integers'),
    (['-o', 'TRAIN.checkpoint_every_steps=-1'], 'TRAIN.checkpoint_every_steps must be >= 0, got -1'),
    (['-o', 'MODEL.crop_size=100'], 'MODEL.crop_size (100) must be a multiple of 32'),
    (['-o', 'TRAIN.min_size=400'], 'TRAIN.min_size (400) must be <= TRAIN.max_size (320)'),
    (['-o', 'TEST.num_spatial_crops=0'], 'TEST.num_spatial_crops must be positive'),
    (['-o', 'VALID.target_size=192'], 'VALID.target_size (192) is too small for the head: its views reach res5 at '
                                      '6x6, the head pools 7x7 (MODEL.crop_size 224 / 32); use at least 193'),
    (['-o', 'INFER.target_size=100'], 'INFER.target_size (100) is too small for the head'),
    (['-o', 'DATA.normalize_on_device=True'], "unknown key 'DATA.normalize_on_device'"),
    (['--epoch', 'x'], "argument --epoch: invalid int value: 'x'"),
    (['--use_gpu', 'maybe'], "expected True or False, got 'maybe'"),
    (['--save_path', 'x'], 'unrecognized arguments: --save_path x'),  # not a train flag
])
def test_bad_input_exits_2_naming_the_culprit(capsys, argv, message):
    assert message in exit_message(capsys, 'train', ['--config', RECIPE] + argv)


def test_bad_config_files_exit_2_naming_the_file(capsys, tmp_path):
    missing = str(tmp_path / 'nope.yaml')
    assert f'config file not found: {missing}' in exit_message(capsys, 'eval', ['--config', missing])
    path = write(tmp_path, 'TRAIN:\n  epoch: 2\n  epcoh: 3\n')
    err = exit_message(capsys, 'eval', ['--config', path])
    assert path in err and "unknown key 'TRAIN.epcoh' (did you mean 'TRAIN.epoch'?)" in err
    path = write(tmp_path, 'TRAIN: [1, 2]\n')
    assert 'section TRAIN must be a mapping' in exit_message(capsys, 'eval', ['--config', path])
    path = write(tmp_path, 'TRAIN:\n  epoch: 2\n    bad indent: 1\n')
    assert 'not valid YAML' in exit_message(capsys, 'eval', ['--config', path])


def test_command_line_exit_status_and_printout(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    run = [sys.executable, os.path.join(ROOT, 'config_utils.py')]
    bad = subprocess.run(run + ['eval', '--config', RECIPE, '-o', 'TEST.num_ensemble_view=5'],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert "unknown key 'TEST.num_ensemble_view' (did you mean 'TEST.num_ensemble_views'?)" in bad.stderr
    good = subprocess.run(run + ['infer', '--config', SINGLE, '--save_path', 'out'], capture_output=True,
                          text=True, env=env)
    assert good.returncode == 0, good.stderr
    assert '---------------- Infer Arguments ----------------' in good.stdout
    assert '    save_path:out' in good.stdout and '    batch_size:8' in good.stdout


def test_effective_config_is_logged_in_the_original_format(caplog):
    with caplog.at_level(logging.INFO, logger=config_utils.__name__):
        log_config(parse_config(RECIPE), 'Train')
    lines = caplog.messages
    assert lines[0] == '---------------- Train Arguments ----------------'
    assert 'TRAIN:' in lines and '    base_lr:0.1' in lines and '    l2_weight_decay:0.0001' in lines
    assert lines[-1] == '-' * 50


def test_the_config_page_is_the_schema_as_it_is_now():
    """docs/CONFIG.md is generated from the schema's help text, the one description of each key: it is stale when
    they differ (regenerate with `python config_utils.py --markdown > docs/CONFIG.md`)."""
    from config_utils import config_markdown

    for section, keys in SCHEMA.items():
        for key, (_, _, text) in keys.items():
            assert len(text) > 10, f'{section}.{key} has no description'
    with open(os.path.join(ROOT, 'docs', 'CONFIG.md')) as f:
        assert f.read() == config_markdown(), 'stale: python config_utils.py --markdown > docs/CONFIG.md'
