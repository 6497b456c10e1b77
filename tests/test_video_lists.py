"""video_lists.py: list formats, path resolution, bad lines named, listed files checked up front."""
import pytest

from errors import ListError
from helpers import use_list, write_list
from kinetics_dataset import KineticsDataset, KineticsMultiViewDataset
from timeline import SlidingWindowDataset
from video_lists import NO_LABEL, check_listed_files, find_videos, read_video_list


def test_list_formats_and_path_resolution(tmp_path):
    (tmp_path / 'sub').mkdir()
    path = write_list(tmp_path, ['a.mp4 1', '  sub/b c.webm\t4  ', '', '# a comment', '/abs/d.mkv 0'])
    assert read_video_list(path, 5) == [(str(tmp_path / 'a.mp4'), 1), (str(tmp_path / 'sub' / 'b c.webm'), 4),
                                        ('/abs/d.mkv', 0)]
    assert read_video_list(path, 5, path_prefix='/data/k400')[0] == ('/data/k400/a.mp4', 1)
    csv_path = write_list(tmp_path, ['path,label', 'x/a.mp4,3', '"y,z.mp4",0'], 'list.csv')
    assert read_video_list(csv_path, 5) == [(str(tmp_path / 'x/a.mp4'), 3), (str(tmp_path / 'y,z.mp4'), 0)]
    infer = write_list(tmp_path, ['one.mp4', 'two words.mp4', 'three.mp4 2'], 'infer.txt')
    assert read_video_list(infer, 5, labels_required=False) == [
        (str(tmp_path / 'one.mp4'), NO_LABEL), (str(tmp_path / 'two words.mp4'), NO_LABEL),
        (str(tmp_path / 'three.mp4'), 2)]


@pytest.mark.parametrize('lines, message', [
    (['a.mp4 1', 'b.mp4'], r'list.txt:2: expected .path label.'),
    (['a.mp4 1', '', 'b.mp4 x'], r'list.txt:3: expected'),
    (['a.mp4 1', 'b.mp4 5'], r'list.txt:2: label 5 is outside \[0, 5\)'),
    (['a.mp4 -1'], r'list.txt:1: label -1 is outside'),
    (['# only a comment', ''], r'video list is empty: .*list.txt'),
])
def test_bad_lists_name_file_and_line(tmp_path, lines, message):
    with pytest.raises(ListError, match=message):
        read_video_list(write_list(tmp_path, lines), 5)


def test_missing_list_is_named(cfg, tmp_path):
    cfg.TRAIN.filelist = str(tmp_path / 'nope.txt')
    with pytest.raises(ListError, match='video list not found: .*nope.txt'):
        KineticsDataset(cfg, 'train')


def test_listed_files_are_stat_ed_up_front_most_missing_is_an_error_a_few_a_warning(cfg, videos, tmp_path, caplog):
    present = [videos[k] for k in ('mp4', 'webm', 'mkv', 'avi')]
    gone = [str(tmp_path / f'gone{i}.mp4') for i in range(4)]
    for missing in (gone, gone[:3] + present[:1], gone[:3] + present[:2]):  # none / most / 3 of 5 exist
        with pytest.raises(ListError) as error:
            check_listed_files([(p, 0) for p in missing + [missing[0]]], 'train.txt', '/data/k400')
        count = sum(p in gone for p in missing)
        assert str(error.value).startswith(f'train.txt: {count} of {len(missing)} listed videos do not exist '
                                           f'(the first: {gone[0]}); DATA.path_prefix is \'/data/k400\'')
    caplog.clear()
    check_listed_files([(p, 0) for p in present + gone[:2]], 'val.txt', '')  # 2 of 6: go on, said once
    assert [r.levelname for r in caplog.records] == ['WARNING']
    assert 'val.txt: 2 of 6 listed videos do not exist' in caplog.text and "DATA.path_prefix is ''" in caplog.text
    caplog.clear()
    check_listed_files([(p, 0) for p in present], 'val.txt', '')
    assert not caplog.records
    use_list(cfg, write_list(tmp_path, [f'{p} 0' for p in gone]), 'TRAIN', 'TEST')  # every dataset checks
    for make in (lambda: KineticsDataset(cfg, 'train'), lambda: KineticsMultiViewDataset(cfg, 'test'),
                 lambda: SlidingWindowDataset(cfg, [(p, 0) for p in gone], stride='1s')):
        with pytest.raises(ListError, match='4 of 4 listed videos do not exist'):
            make()


def test_find_videos_walks_nested_and_linked_folders_once_skipping_hidden_files(tmp_path):
    """The one folder walker of predict.py, gradcam.py, make_lists.py and resize_videos.py: videos by extension (any
    case) at any depth, sorted by path; a linked folder is walked, a link back up is not walked again; hidden files
    and folders (macOS ``._x.mp4`` forks, ``.cache``) and other files are skipped; no folder is a ListError."""
    import os

    root, elsewhere = tmp_path / 'videos', tmp_path / 'elsewhere'
    for folder in (root / 'b' / 'deep', root / '.cache', elsewhere):
        folder.mkdir(parents=True)
    for path in (root / 'z.mp4', root / 'b' / 'a.MKV', root / 'b' / 'deep' / 'c.webm', elsewhere / 'e.avi',
                 root / '._z.mp4', root / '.cache' / 'x.mp4', root / 'b' / 'notes.txt', root / 'b' / 'mp4'):
        path.write_bytes(b'')
    os.symlink(elsewhere, root / 'linked')
    os.symlink(root, root / 'b' / 'loop')  # a link back up: walked once, not forever
    assert find_videos(str(root)) == [str(root / 'b' / 'a.MKV'), str(root / 'b' / 'deep' / 'c.webm'),
                                      str(root / 'linked' / 'e.avi'), str(root / 'z.mp4')]
    assert find_videos(str(elsewhere)) == [str(elsewhere / 'e.avi')]
    (tmp_path / 'empty').mkdir()
    assert find_videos(str(tmp_path / 'empty')) == []
    for missing in (tmp_path / 'gone', root / 'z.mp4'):
        with pytest.raises(ListError, match=f'video folder not found: {missing}'):
            find_videos(str(missing))


BOM = '\ufeff'  # what Excel, Notepad and PowerShell put at the start of a UTF-8 file


def test_every_text_reader_ignores_a_leading_byte_order_mark(tmp_path):
    import json

    from config_utils import parse_config
    from inference import model_files
    from make_lists import read_annotations, read_names
    from video_lists import parse_video_list, read_label_map

    def bom_file(name, text):
        path = tmp_path / name
        path.write_text(BOM + text, encoding='utf-8')
        assert path.read_bytes().startswith(b'\xef\xbb\xbf')
        return str(path)

    assert read_video_list(bom_file('train.txt', 'a.mp4 1\nb.mp4 2\n'), 5) == [(str(tmp_path / 'a.mp4'), 1),
                                                                               (str(tmp_path / 'b.mp4'), 2)]
    assert read_video_list(bom_file('train.csv', 'path,label\na.mp4,1\n'), 5) == [(str(tmp_path / 'a.mp4'), 1)]
    assert read_video_list(bom_file('val.csv', 'a.mp4,3\n'), 5) == [(str(tmp_path / 'a.mp4'), 3)]
    assert [e.given for e in parse_video_list(bom_file('infer.txt', 'a.mp4\n'), 5, labels_required=False)] == ['a.mp4']
    assert read_label_map(bom_file('classes.txt', 'abseiling\nair drumming\n'), 2) == ['abseiling', 'air drumming']
    assert read_names(bom_file('names.txt', 'abseiling\n')) == ['abseiling']
    cfg = parse_config(bom_file('config.yaml', 'TRAIN:\n  epoch: 3\n'))
    assert cfg.TRAIN.epoch == 3
    [clip] = read_annotations(bom_file('validate.csv', 'label,youtube_id,time_start,time_end,split\n'
                                                       'abseiling,abcdefghijk,10,20,validate\n'))
    assert (clip.label, clip.youtube_id, clip.start) == ('abseiling', 'abcdefghijk', 10)
    for name in ('slowfast.pdmodel', 'slowfast.pdiparams'):
        (tmp_path / name).write_bytes(b'')
    bom_file('export.json', json.dumps({'inputs': ['slow', 'fast']}))
    assert model_files(str(tmp_path))[2] == {'inputs': ['slow', 'fast']}
