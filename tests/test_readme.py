"""The README's recipes as written: every command of its shell blocks has its flags and `-o` overrides checked against
the script that runs it, and those that need neither GPUs, the network nor hours of CPU run on tiny data made here
(a Kinetics-style annotation folder and video folder, class folders)."""
import csv
import json
import os
import re
import shlex
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import ROOT
from config_utils import parse_config
from video_lists import read_video_list

# Commands that run here as written (in a scratch folder holding the repository's files), by their script.
RUNS = ('tools/weights/zoo.py list', 'tools/data/make_lists.py', 'tools/data/check_videos.py')
RUN_SCRIPTS = {'run_train_multi.sh': 'train.py', 'run_train_single.sh': 'train.py', 'run_eval_multi.sh': 'eval.py',
               'run_eval_single.sh': 'eval.py', 'run_infer_multi.sh': 'predict.py',
               'run_infer_single.sh': 'predict.py'}
# The scripts' own parse, stopped right after it: argparse errors exit 2 with the culprit, as for a user.
PARSE_ONLY = '''
import argparse, json, os, runpy, sys
sys.path.insert(0, {root!r})
sys.path.insert(0, '')
real = argparse.ArgumentParser.parse_args
class Parsed(BaseException):  # not an Exception: the scripts' crash handler lets it through
    pass
def parse(self, args=None, namespace=None):
    real(self, args, namespace)
    raise Parsed()
argparse.ArgumentParser.parse_args = parse
results = []
for argv in json.loads(sys.argv[1]):
    sys.argv = argv
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))  # as `python script.py` sets it
    try:
        runpy.run_path(argv[0], run_name='__main__')
        results.append('ran')
    except Parsed:
        results.append('parsed')
    except SystemExit as stop:
        results.append(f'exit {{stop.code}}')
print(json.dumps(results))
'''


def readme_commands():
    """``[(env, argv)]`` of every command in the README's bash blocks (continuations joined, comments dropped)."""
    text = open(os.path.join(ROOT, 'README.md')).read()
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            words = shlex.split(line, comments=True)
            env = {}
            while words and re.match(r'^[A-Z_]+=', words[0]):
                key, _, value = words.pop(0).partition('=')
                env[key] = value
            if words:
                commands.append((env, words))
    return commands


def script_argv(env, words):
    """``[script, args...]`` of the Python script a README command runs, or None (pip, pytest)."""
    if words[0] == 'bash' and words[1] in RUN_SCRIPTS:
        script = RUN_SCRIPTS[words[1]]
        given = [f'--config={env["CONFIG"]}'] if 'CONFIG' in env else []
        given += [f'--weights={env["WEIGHTS"]}'] if 'WEIGHTS' in env else []
        return [script] + given + words[2:]
    if words[0] == 'python' and words[1].endswith('.py'):
        return words[1:]
    assert words[:2] in (['pip', 'install'], ['bash', 'run_demo.sh'], ['python', '-m']), words
    return None


def overrides_of(argv):
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in ('-o', '--override')]


def test_every_readme_command_parses_with_its_script():
    commands = [(env, words, script_argv(env, words)) for env, words in readme_commands()]
    argvs = [argv for _, _, argv in commands if argv]
    assert len(argvs) >= 12
    for argv in argvs:
        assert os.path.isfile(os.path.join(ROOT, argv[0])), argv
    result = subprocess.run([sys.executable, '-c', PARSE_ONLY.format(root=ROOT), json.dumps(argvs)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcomes == ['parsed'] * len(argvs), list(zip(argvs, outcomes, [result.stderr[-2000:]] * len(argvs)))
    for argv in argvs:  # the -o overrides name real keys with valid values, for the config the command uses
        config = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
        config = config or (argv[argv.index('--config') + 1] if '--config' in argv else None)
        if overrides_of(argv):
            parse_config(os.path.join(ROOT, config or 'slowfast.yaml'), overrides_of(argv))


def scratch_repository(tmp_path):
    """A folder with the repository's top-level files and folders linked in: the README's relative paths work and
    whatever the commands write stays here."""
    for name in os.listdir(ROOT):
        if not name.startswith('.') and name not in ('data', 'output', 'weights', 'checkpoints'):
            os.symlink(os.path.join(ROOT, name), tmp_path / name)
    return tmp_path


def write_video(path, frames=40):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 25, (64, 48))
    for i in range(frames):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, (i * 2) % 64:(i * 2) % 64 + 8] = 255
        writer.write(frame)
    writer.release()


@pytest.mark.slow
def test_the_readme_commands_that_need_no_gpu_run_as_written(tmp_path):
    """Kinetics-style annotations of all 400 classes with a few of their clips downloaded (in class folders, one
    flat), and a class-folder dataset: the README's make_lists, check_videos and zoo list commands run unchanged."""
    work = scratch_repository(tmp_path)
    with open(os.path.join(ROOT, 'kinetics400_labels.txt')) as f:
        classes = [line.strip() for line in f if line.strip()]
    os.makedirs(work / 'k400' / 'annotations')
    for split, name in (('train', 'train.csv'), ('val', 'validate.csv')):
        with open(work / 'k400' / 'annotations' / name, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split', 'is_cc'])
            for i, label in enumerate(classes):
                writer.writerow([label, f'{split[0]}{i:010d}', 10, 20, split, 0])
    for i in (0, 5, 399):
        write_video(work / 'k400' / 'videos' / classes[i] / f't{i:010d}_000010_000020.mp4')
    write_video(work / 'k400' / 'videos' / 'v0000000007.mp4')
    for c in ('waving', 'jumping'):
        for k in range(3):
            write_video(work / 'my_videos' / c / f'{c}{k}.mp4', frames=10)
    ran = 0
    for env, words in readme_commands():
        argv = script_argv(env, words)
        if not argv or not any(' '.join(argv).startswith(run) for run in RUNS):
            continue
        result = subprocess.run([sys.executable] + argv, cwd=work, capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, **env))
        assert result.returncode == 0, (argv, result.stdout[-2000:], result.stderr[-2000:])
        ran += 1
    assert ran >= 4
    train = read_video_list(str(work / 'data' / 'train.csv'), 400)
    assert [label for _, label in train] == [0, 5, 399]
    assert [label for _, label in read_video_list(str(work / 'data' / 'val.csv'), 400)] == [7]
    assert (work / 'data' / 'train.csv.clean').read_text() == (work / 'data' / 'train.csv').read_text()
    assert (work / 'data' / 'mine' / 'classes.txt').read_text() == 'jumping\nwaving\n'


def docstring_commands():
    """``[(source, argv)]`` of the command lines in the docstrings of the scripts and tools (what their ``--help``
    prints, or their header): ``python SCRIPT.py ...`` lines, continuations joined, comments dropped."""
    import ast
    import glob

    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, 'tools', '*', '*.py'))):
        doc = ast.get_docstring(ast.parse(open(path, encoding='utf-8').read())) or ''
        for line in doc.replace('\\\n', ' ').splitlines():
            line = line.strip().split(' > ')[0]  # an output redirection is the shell's
            if re.match(r'python [\w/]+\.py\b', line) and not re.search(r'\[|\.\.\.', line):  # not a synopsis
                found.append((os.path.relpath(path, ROOT), shlex.split(line, comments=True)[1:]))
    return found


def test_every_command_in_a_script_s_or_tool_s_docstring_parses_with_its_script():
    commands = docstring_commands()
    assert len(commands) >= 25 and {'tools/weights/zoo.py', 'tools/deploy/export_model.py', 'eval.py',
                                    'tools/data/check_videos.py'} <= {source for source, _ in commands}
    argvs = [argv for _, argv in commands]
    result = subprocess.run([sys.executable, '-c', PARSE_ONLY.format(root=ROOT), json.dumps(argvs)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    # parsed, or ran through (config_utils.py --markdown reads no flags)
    assert all(o in ('parsed', 'ran') for o in outcomes), [(c, o) for c, o in zip(commands, outcomes) if o != 'parsed']
    for source, argv in commands:
        if overrides_of(argv):
            config = argv[argv.index('--config') + 1] if '--config' in argv else 'slowfast.yaml'
            parse_config(os.path.join(ROOT, config), overrides_of(argv))
