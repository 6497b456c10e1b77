"""Re-encode a folder tree of videos to a short side of 256 (H.264 .mp4), in parallel, resumable.

    python tools/data/resize_videos.py raw/ k400_256/ --short_side 256 --list raw/train.csv

Decoding a 256-short-side copy is several times faster than decoding originals (PySlowFast and mmaction2 train on
such copies; the recipe's test views are 256 anyway). Each ``SRC/a/b.webm`` becomes ``DST/a/b.mp4`` at the same frame
rate, without audio, never upscaled, with a keyframe at least every ``--gop`` frames (a clip read seeks to the
keyframe before it: x264's default of 250 makes most reads of a 10-second clip decode from its start). A video
already in DST is skipped, so the tool can be re-run after a crash
(videos are written to a temporary name, then renamed). With ``--list`` only the list's videos are converted and
``DST/<list name>`` is written with the new paths (relative to DST) and the same labels; without it every video
under SRC is converted and ``DST/videos.txt`` lists them. Videos that fail are reported and left out of the list.
DST is checked for writing before any video is read; when the disk fills up during the run, the videos finished so
far are kept, no list is written, and the tool exits with status 7 saying so (free space, run it again: finished
videos are skipped).
"""
import argparse
import logging
import os
import sys
from typing import List, Optional, Tuple

import cv2

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from atomic import atomic_path, check_output_folder, write_failure  # noqa: E402
from config_utils import setup_logging  # noqa: E402
from errors import ListError, OutputError, exit_on_user_error  # noqa: E402
from video_lists import NO_LABEL, find_videos, parse_video_list  # noqa: E402
from video_io import VideoError, VideoReader, scaled_size, write_video  # noqa: E402
from video_pool import map_videos  # noqa: E402  (beside this file)

logger = logging.getLogger('resize_videos')
GOP = 32  # keyframe interval: training-clip reads against x264's 250 measured in docs/BENCHMARKS.md (GOP)


def resize_one(job: Tuple[str, str, int, int, int]) -> Tuple[str, str]:
    """Convert ``src`` to ``dst``; returns ``(status, reason)`` with status 'done', 'skipped', 'failed' (the video)
    or 'unwritten' (the disk: ``atomic.write_failure``)."""
    src, dst, short_side, crf, gop = job
    if os.path.isfile(dst):
        return 'skipped', ''
    try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with VideoReader(src, 30.0, threads=1) as video:
            def frames():
                size = None
                for frame in video.frames():  # as displayed: a rotated phone video comes upright
                    if size is None:
                        height, width = frame.shape[:2]
                        height, width = scaled_size(height, width, min(short_side, height, width))
                        size = (width - width % 2, height - height % 2)  # H.264 4:2:0 needs even sizes
                    if frame.shape[1::-1] != size:
                        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                    yield frame[:, :, ::-1]
            write_video(dst, frames(), video.fps, crf=crf, gop=gop or None)
        return 'done', ''
    except VideoError as error:
        return 'failed', error.reason
    except OutputError as error:
        return 'unwritten', str(error)
    except OSError as error:  # making DST's sub-folder
        failure = write_failure(dst, error)
        return ('unwritten', str(failure)) if failure else ('failed', f'{type(error).__name__}: {error}')
    except Exception as error:  # one bad video must not stop the others
        return 'failed', f'{type(error).__name__}: {error}'


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='folder of original videos')
    parser.add_argument('dst', help='output folder (created)')
    parser.add_argument('--short_side', '--short-side', type=int, default=256)
    parser.add_argument('--list', help='convert only the videos of this list and write DST/<list name>')
    parser.add_argument('--crf', type=int, default=23, help='x264 quality (lower is better; default %(default)s)')
    parser.add_argument('--gop', type=int, default=GOP,
                        help='at most this many frames between keyframes, so that a clip read seeks close to its '
                             'start (default %(default)s, docs/BENCHMARKS.md; 0: x264\'s own, 250)')
    parser.add_argument('--workers', type=int, default=os.cpu_count(), help='parallel processes')
    args = parser.parse_args(argv)
    setup_logging()
    src_root, dst_root = os.path.abspath(args.src), os.path.abspath(args.dst)
    if not os.path.isdir(src_root):
        parser.error(f'source folder not found: {args.src}')
    check_output_folder(dst_root, 'DST')

    if args.list:
        entries = parse_video_list(args.list, 10 ** 9, labels_required=False)
        items = [(os.path.abspath(e.path), e.label) for e in entries]
        outside = [p for p, _ in items if os.path.commonpath([p, src_root]) != src_root]
        if outside:
            raise ListError(f'{len(outside)} videos of {args.list} are not under {args.src}, e.g. {outside[0]}')
        out_list = os.path.join(dst_root, os.path.basename(args.list))
    else:
        items = [(path, NO_LABEL) for path in find_videos(src_root)]
        out_list = os.path.join(dst_root, 'videos.txt')
    if not items:
        parser.error(f'no videos found in {args.list or args.src}')

    rel = [os.path.splitext(os.path.relpath(p, src_root))[0] + '.mp4' for p, _ in items]
    jobs = [(p, os.path.join(dst_root, r), args.short_side, args.crf, args.gop) for (p, _), r in zip(items, rel)]
    results = map_videos(resize_one, jobs, args.workers, f'resizing to {args.short_side}')

    unwritten = [reason for status, reason in results if status == 'unwritten']
    if unwritten:
        raise OutputError(f'{len(unwritten)} of {len(jobs)} videos could not be written (the first: {unwritten[0]}); '
                          f'the {sum(s == "done" for s, _ in results)} converted ones are kept, and no list was '
                          'written: free some space, then run the same command again (finished videos are skipped)')
    lines, failed = [], 0
    for (src, label), r, (status, reason) in zip(items, rel, results):
        if status == 'failed':
            failed += 1
            logger.warning('%s: %s', src, reason)
            continue
        lines.append(r if label == NO_LABEL else f'{r} {label}')
    with atomic_path(out_list) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.writelines(line + '\n' for line in lines)
    done = sum(s == 'done' for s, _ in results)
    skipped = sum(s == 'skipped' for s, _ in results)
    logger.info('%d videos: %d converted, %d already done, %d failed; list: %s', len(jobs), done, skipped, failed,
                out_list)
    return 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
