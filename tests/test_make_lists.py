"""tools/data/make_lists.py: Kinetics annotation CSVs + a folder of videos in each layout peers' downloaders leave,
and class folders, give lists the datasets read with the published class ids."""
import csv
import json
import os
import random
import shlex
import subprocess
import sys

import pytest

from helpers import ROOT, tool_path
from video_lists import read_video_list

import make_lists  # tools/data is on sys.path through helpers

# PySlowFast's published Kinetics-400 class-name file (name -> class id), the one pytorchvideo's tutorials load
# (dl.fbaipublicfiles.com/pyslowfast/dataset/class_names/kinetics_classnames.json): the reference for class ids.
with open(os.path.join(ROOT, 'tests', 'data', 'kinetics_classnames.json')) as f:
    PUBLISHED_IDS = {name.strip('"'): i for name, i in json.load(f).items()}
K400 = sorted(PUBLISHED_IDS, key=PUBLISHED_IDS.get)
ID_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-'


def youtube_ids(n, seed=0):
    rng = random.Random(seed)
    ids = ['-a_000014_0', 'ab_cd-ef_12']  # ids that start with '-' and hold '_' and digits like a time stamp
    while len(ids) < n:
        ids.append(''.join(rng.choice(ID_CHARS) for _ in range(11)))
    return ids[:n]


def write_annotations(path, rows, with_label=True):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow((['label'] if with_label else []) + ['youtube_id', 'time_start', 'time_end', 'split', 'is_cc'])
        for label, yid, start, split in rows:
            writer.writerow(([label] if with_label else []) + [yid, start, start + 10, split, 0])


def printed_overrides(log):
    """The overrides of make_lists' last line ("use them with: -o A -o B ..."), checked to run as printed: through
    train.py's own command line (flags, then every override applied and the config validated)."""
    from config_utils import parse_args

    [line] = [line for line in log.splitlines() if 'use them with: ' in line]
    words = shlex.split(line.split('use them with: ', 1)[1])
    assert words[::2] == ['-o'] * (len(words) // 2)
    cfg, _ = parse_args('train', ['--config', os.path.join(ROOT, 'slowfast.yaml')] + words)
    overrides = words[1::2]
    for override in overrides:
        key, value = override.split('=', 1)
        section, name = key.split('.')
        assert str(cfg[section][name]) == value, override
    return overrides


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, 'wb').close()


def kinetics_tree(tmp_path, layout, classes=K400, seed=0):
    """Annotations for one train clip of each class and half as many val clips, and the video folder in ``layout``
    with two train clips and one val clip missing, one extra file and one clip present twice. Returns (annotations
    dir, videos dir, rows, missing youtube ids)."""
    rng = random.Random(seed)
    n = len(classes)
    ids = youtube_ids(n + n // 2, seed)
    labels = rng.sample(list(classes), n) + [rng.choice(classes) for _ in range(n // 2)]
    rows = {'train': [], 'val': []}
    for i, (yid, label) in enumerate(zip(ids, labels)):
        split = 'train' if i < n else 'val'
        rows[split].append((label, yid, rng.randrange(0, 300), split))
    annotations, videos = tmp_path / 'annotations', tmp_path / 'videos'
    annotations.mkdir()
    write_annotations(annotations / 'train.csv', rows['train'])
    write_annotations(annotations / 'validate.csv', rows['val'])
    missing = {rows['train'][3][1], rows['train'][7][1], rows['val'][1][1]}
    containers = ['.mp4', '.mkv', '.webm']
    for split in ('train', 'val'):
        for k, (label, yid, start, _) in enumerate(rows[split]):
            if yid in missing:
                continue
            name = {'flat': f'{yid}_{start:06d}_{start + 10:06d}', 'ids': yid,
                    'class_folders': f'{label}/{yid}_{start:06d}_{start + 10:06d}'}[layout]
            touch(videos / split / (name + containers[k % 3]))
    label, yid, start, split = rows['train'][0]
    touch(videos / 'copy' / f'{yid}_{start:06d}_{start + 10:06d}.mp4')  # the same clip twice
    touch(videos / 'extra' / 'zzzzzzzzzzz_000001_000011.mp4')           # in no annotation
    touch(videos / 'extra' / 'notes.txt')                                # not a video
    return annotations, videos, rows, missing


@pytest.mark.parametrize('layout', ['flat', 'class_folders', 'ids'])
def test_kinetics_lists_hold_every_present_clip_with_the_published_class_id(tmp_path, layout, capfd):
    annotations, videos, rows, missing = kinetics_tree(tmp_path, layout)
    out = tmp_path / 'lists'
    assert make_lists.main(['kinetics', '--annotations', str(annotations), '--videos', str(videos),
                            '--out', str(out)]) == 0
    for split in ('train', 'val'):
        samples = read_video_list(str(out / f'{split}.csv'), 400)
        expected = [(yid, PUBLISHED_IDS[label]) for label, yid, _, _ in rows[split] if yid not in missing]
        assert [(os.path.basename(p)[:11], label) for p, label in samples] == expected
        assert all(os.path.isabs(p) and os.path.isfile(p) for p, _ in samples)
        with open(out / f'missing_{split}.csv') as f:
            assert {row['youtube_id'] for row in csv.DictReader(f)} == \
                {yid for _, yid, _, _ in rows[split] if yid in missing}
    assert (out / 'classes.txt').read_text().splitlines() == K400
    assert not (out / 'test.csv').exists()
    log = capfd.readouterr().out
    assert 'train: 400 annotated, 398 found (99.5 %), 2 missing' in log
    assert '1 with several files' in log
    assert 'val: 200 annotated, 199 found' in log
    assert '2 video files are in no annotated split' in log  # the extra file and the second copy


def test_a_file_name_with_times_matches_only_the_clip_that_starts_then(tmp_path):
    annotations, videos = tmp_path / 'a', tmp_path / 'v'
    annotations.mkdir()
    write_annotations(annotations / 'kinetics_train.csv', [('abseiling', 'abcdefghijk', 5, 'train'),
                                                          ('archery', 'abcdefghijk', 40, 'train')])
    touch(videos / 'abcdefghijk_000040_000050.mp4')
    make_lists.main(['kinetics', '--annotations', str(annotations / 'kinetics_train.csv'), '--videos', str(videos),
                     '--out', str(tmp_path / 'out'), '--labels', os.path.join(ROOT, 'kinetics400_labels.txt')])
    samples = read_video_list(str(tmp_path / 'out' / 'train.csv'), 400)
    assert [label for _, label in samples] == [PUBLISHED_IDS['archery']]


def test_kinetics700_classes_take_their_alphabetical_ids_and_test_rows_may_lack_labels(tmp_path):
    classes = ['zumba', 'abseiling', 'silent disco', 'air drumming', 'yoga', 'moon walking', 'archery', 'tie dying']
    # three are Kinetics-700 classes only
    annotations, videos, rows, missing = kinetics_tree(tmp_path, 'flat', classes=classes)
    test_ids = youtube_ids(3, seed=9)
    write_annotations(annotations / 'test.csv', [(None, yid, 0, 'test') for yid in test_ids], with_label=False)
    for yid in test_ids[:2]:
        touch(videos / 'test' / f'{yid}_000000_000010.mp4')
    out = tmp_path / 'lists'
    make_lists.main(['kinetics', '--annotations', str(annotations), '--videos', str(videos), '--out', str(out),
                     '--relative'])
    order = sorted(classes)
    assert (out / 'classes.txt').read_text().splitlines() == order
    samples = read_video_list(str(out / 'train.csv'), len(order))
    assert [label for _, label in samples] == [order.index(c) for c, yid, _, _ in rows['train'] if yid not in missing]
    lines = (out / 'test.csv').read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith('../videos/test/') for line in lines)  # paths only, relative


def test_kinetics_errors_name_the_culprit(tmp_path):
    annotations, videos, rows, _ = kinetics_tree(tmp_path, 'flat')
    labels = tmp_path / 'five.txt'
    labels.write_text('a\nb\nc\nd\ne\n')
    out = str(tmp_path / 'out')
    with pytest.raises(make_lists.ListError, match=r"class '.+' \(youtube_id .{11}\) is not in the class list"):
        make_lists.main(['kinetics', '--annotations', str(annotations), '--videos', str(videos), '--out', out,
                         '--labels', str(labels)])
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(make_lists.ListError, match=r'train: none of the 400 annotated clips .* is under .*empty'):
        make_lists.main(['kinetics', '--annotations', str(annotations), '--videos', str(empty), '--out', out])
    (tmp_path / 'odd.csv').write_text('name,seconds\nx,1\n')
    with pytest.raises(make_lists.ListError, match='cannot tell the split'):
        make_lists.main(['kinetics', '--annotations', str(tmp_path / 'odd.csv'), '--videos', str(videos)])
    (tmp_path / 'train_odd.csv').write_text('name,seconds\nx,1\n')
    with pytest.raises(make_lists.ListError, match='not a Kinetics annotation CSV'):
        make_lists.main(['kinetics', '--annotations', str(tmp_path / 'train_odd.csv'), '--videos', str(videos)])
    unlabelled = tmp_path / 'unlabelled'
    unlabelled.mkdir()
    write_annotations(unlabelled / 'train.csv', [('', rows['train'][0][1], rows['train'][0][2], 'train')])
    with pytest.raises(make_lists.ListError, match=rf"train.csv: the row of youtube_id {rows['train'][0][1]} has no"):
        make_lists.main(['kinetics', '--annotations', str(unlabelled), '--videos', str(videos), '--out', out,
                         '--labels', os.path.join(ROOT, 'kinetics400_labels.txt')])
    result = subprocess.run([sys.executable, tool_path('make_lists.py'), 'kinetics', '--annotations',
                             str(tmp_path / 'nowhere'), '--videos', str(videos)], capture_output=True, text=True)
    assert result.returncode == 3 and 'annotations not found' in result.stdout + result.stderr


def test_class_folders_make_a_seeded_stratified_split_or_follow_split_folders(tmp_path):
    root = tmp_path / 'mine'
    counts = {'walk': 10, 'jump': 7, 'Run fast': 3}
    for name, n in counts.items():
        for i in range(n):
            touch(root / name / f'clip{i}.{"mp4" if i % 2 else "avi"}')
    (root / 'empty_class').mkdir()
    out = tmp_path / 'lists'
    result = subprocess.run([sys.executable, tool_path('make_lists.py'), 'folders', '--videos', str(root),
                             '--out', str(out), '--val_fraction', '0.3'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    classes = sorted(counts)
    assert (out / 'classes.txt').read_text().splitlines() == classes
    train, val = (read_video_list(str(out / f'{s}.csv'), 3) for s in ('train', 'val'))
    for c, n in counts.items():
        held = [p for p, label in val if label == classes.index(c)]
        kept = [p for p, label in train if label == classes.index(c)]
        assert len(held) == round(n * 0.3) and len(kept) + len(held) == n
        assert all(os.path.basename(os.path.dirname(p)) == c for p in held + kept)
    assert not set(p for p, _ in train) & set(p for p, _ in val)
    overrides = printed_overrides(result.stdout + result.stderr)
    assert overrides[:2] == ['MODEL.num_classes=3', f'DATA.label_map={out / "classes.txt"}']
    first = (out / 'val.csv').read_text()
    make_lists.main(['folders', '--videos', str(root), '--out', str(out), '--val_fraction', '0.3'])
    assert (out / 'val.csv').read_text() == first  # the same seed, the same split

    split_root = tmp_path / 'split'
    for split, n in (('train', 4), ('val', 2)):
        for c in ('b', 'a'):
            for i in range(n):
                touch(split_root / split / c / f'{c}{i}.mp4')
    make_lists.main(['folders', '--videos', str(split_root), '--out', str(tmp_path / 'l2')])
    assert [len(read_video_list(str(tmp_path / 'l2' / f'{s}.csv'), 2)) for s in ('train', 'val')] == [8, 4]
    touch(split_root / 'val' / 'c' / 'c0.mp4')
    with pytest.raises(make_lists.ListError, match='class folders not in .*train: c'):
        make_lists.main(['folders', '--videos', str(split_root), '--out', str(tmp_path / 'l3')])


def test_an_error_in_any_split_writes_nothing_and_a_rerun_replaces_the_whole_set(tmp_path):
    annotations, videos, rows, _ = kinetics_tree(tmp_path, 'flat')
    out = tmp_path / 'lists'
    with open(annotations / 'validate.csv', 'a') as f:  # a val row of a class the label file does not name
        f.write('unknown dance,zzzzzzzzzzz,0,10,validate,0\n')
    touch(videos / 'zzzzzzzzzzz_000000_000010.mp4')
    with pytest.raises(make_lists.ListError, match="validate.csv: class 'unknown dance' .* is not in the class list"):
        make_lists.main(['kinetics', '--annotations', str(annotations), '--videos', str(videos), '--out', str(out),
                         '--labels', os.path.join(ROOT, 'kinetics400_labels.txt')])
    assert not out.exists() or os.listdir(out) == []  # train.csv was good: still nothing written
    # a val folder without any of its videos: the same
    (tmp_path / 'only_train').mkdir()
    for path in videos.rglob('*.mp4'):
        if path.name[:11] in {yid for _, yid, _, _ in rows['train']}:  # the val clips' videos are not there
            touch(tmp_path / 'only_train' / path.name)
    with pytest.raises(make_lists.ListError, match='val: none of the 201 annotated clips'):
        make_lists.main(['kinetics', '--annotations', str(annotations), '--videos', str(tmp_path / 'only_train'),
                         '--out', str(out)])
    assert not out.exists() or os.listdir(out) == []

    # class folders: a first run with validation, a second whose classes are too small for any: its set alone remains
    root = tmp_path / 'mine'
    for name, n in {'walk': 4, 'jump': 3, 'run': 5}.items():
        for i in range(n):
            touch(root / name / f'clip{i}.mp4')
    make_lists.main(['folders', '--videos', str(root), '--out', str(out), '--val_fraction', '0.25'])
    assert (out / 'val.csv').exists()
    result = subprocess.run([sys.executable, tool_path('make_lists.py'), 'folders', '--videos', str(root),
                             '--out', str(out)], capture_output=True, text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert sorted(os.listdir(out)) == ['classes.txt', 'train.csv']  # the first run's val.csv is gone
    assert f'removed {out / "val.csv"} (of an earlier run' in log
    assert '3 of 3 classes get no validation video (jump, run, walk): they hold too few videos for --val_fraction ' \
        '0.1' in log
    assert not any(o.startswith('VALID.filelist') for o in printed_overrides(log))


def test_a_malformed_time_start_is_named_with_its_file_line_and_column(tmp_path):
    annotations = tmp_path / 'a'
    annotations.mkdir()
    write_annotations(annotations / 'train.csv', [('abseiling', 'abcdefghijk', 5, 'train')])
    with open(annotations / 'train.csv', 'a') as f:
        f.write('archery,bcdefghijkl,3s,13,train,0\n')
    (tmp_path / 'v').mkdir()
    result = subprocess.run([sys.executable, tool_path('make_lists.py'), 'kinetics', '--annotations',
                             str(annotations), '--videos', str(tmp_path / 'v'), '--out', str(tmp_path / 'out')],
                            capture_output=True, text=True)
    assert result.returncode == 3 and 'Traceback' not in result.stderr
    assert f"{annotations / 'train.csv'}:3: time_start (column 3) is '3s', not a number of seconds" in result.stdout


def test_a_kinetics400_subset_keeps_the_published_ids_unless_asked_otherwise(tmp_path):
    subset = ['zumba', 'abseiling', 'yoga', 'archery', 'bowling', 'juggling balls', 'surfing water', 'welding']
    annotations, videos, rows, missing = kinetics_tree(tmp_path, 'flat', classes=subset)
    out = tmp_path / 'lists'
    result = subprocess.run([sys.executable, tool_path('make_lists.py'), 'kinetics', '--annotations',
                             str(annotations), '--videos', str(videos), '--out', str(out)], capture_output=True,
                            text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert '400 classes: the Kinetics-400 class ids of the published checkpoints (kinetics400_labels.txt); the ' \
        'annotations hold 8 of its classes' in log
    samples = read_video_list(str(out / 'train.csv'), 400)
    assert [label for _, label in samples] == [PUBLISHED_IDS[c] for c, yid, _, _ in rows['train'] if yid not in missing]
    assert (out / 'classes.txt').read_text().splitlines() == K400
    assert printed_overrides(log)[0] == 'MODEL.num_classes=400'
    make_lists.main(['kinetics', '--annotations', str(annotations), '--videos', str(videos), '--out', str(out),
                     '--class_ids', 'alphabetical'])
    assert (out / 'classes.txt').read_text().splitlines() == sorted(subset)
    samples = read_video_list(str(out / 'train.csv'), 8)
    assert [label for _, label in samples] == [sorted(subset).index(c) for c, yid, _, _ in rows['train']
                                               if yid not in missing]
