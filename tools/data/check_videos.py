"""Decode every video of a list in parallel; report the broken and short ones; write a cleaned list.

    python tools/data/check_videos.py data/train.csv                    # writes data/train.csv.clean
    python tools/data/check_videos.py data/train.csv --out clean.csv --min_frames 32 --report report.json

A video is broken when it is missing, empty, cannot be opened, has no video stream, or its first frame does not
decode. Its length is the number of frames a full decode yields, whatever its container declares (a stream-copied cut
or a file cut short is kept and used with the frames it holds). One shorter than ``--min_frames`` decodable frames is
dropped too; one shorter than a training clip (``MODEL.num_frames * sampling_rate`` at ``target_fps``) is only
reported (clips of it repeat its last frame), and so is one whose packets promise more frames than decode (damaged
packets: a read that reaches them re-indexes the video, one before them may be off by the difference; re-encoding it
with tools/data/resize_videos.py makes it clean). The cleaned list keeps the kept lines exactly as written.
Exit status: 0 when the check ran (1 with ``--strict`` when any video was dropped), 2 for a bad argument, 3 for a bad
list, 7 when ``--out`` or ``--report`` cannot be written (checked before the decoding; a write that fails at the end
puts both below a temporary folder it names).
"""
import argparse
import logging
import os
import sys
from collections import Counter
from typing import Optional, Tuple


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from atomic import atomic_path, check_output_file, write_json, write_outputs  # noqa: E402
from config_utils import parse_config, setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402
from video_lists import parse_video_list  # noqa: E402
from video_io import VideoError, VideoReader  # noqa: E402
from video_pool import map_videos  # noqa: E402  (beside this file)

logger = logging.getLogger('check_videos')


def check_one(job: Tuple[str, float]) -> Tuple[Optional[int], int, float, str]:
    """``(decoded frames, frames the packets promise, fps, '')`` for a decodable video, ``(None, 0, 0, reason)`` for
    a broken one."""
    path, fallback_fps = job
    try:
        with VideoReader(path, fallback_fps, threads=1) as video:
            promised = video.num_frames
            return video.check(), promised, video.fps, ''
    except VideoError as error:
        return None, 0, 0.0, error.reason
    except Exception as error:  # a decoder crash must not stop the check of the other videos
        return None, 0, 0.0, f'{type(error).__name__}: {error}'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('list', help='video list (path label, or paths only)')
    parser.add_argument('--out', help='cleaned list (default: LIST.clean)')
    parser.add_argument('--report', help='also write a JSON report here')
    parser.add_argument('--config', default=os.path.join(ROOT, 'slowfast.yaml'),
                        help='config for num_classes, clip length, DATA.path_prefix')
    parser.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value')
    parser.add_argument('--min_frames', '--min-frames', type=int, default=1,
                        help='drop videos with fewer decodable frames')
    parser.add_argument('--workers', type=int, default=os.cpu_count(), help='parallel processes')
    parser.add_argument('--strict', action='store_true', help='exit 1 when any video is dropped')
    args = parser.parse_args(argv)
    setup_logging()
    cfg = parse_config(args.config, args.override)
    entries = parse_video_list(args.list, cfg.MODEL.num_classes, cfg.DATA.path_prefix, labels_required=False)
    m = cfg.MODEL
    out = args.out or args.list + '.clean'
    check_output_file(out, '--out', '' if args.out else 'not given: LIST.clean')  # before hours of decoding
    if args.report:
        check_output_file(args.report, '--report')

    jobs = [(e.path, float(m.target_fps)) for e in entries]
    results = map_videos(check_one, jobs, args.workers, 'checking')

    kept, dropped, short, damaged = [], [], [], []
    for entry, (frames, promised, fps, reason) in zip(entries, results):
        if frames is not None and frames < args.min_frames:
            reason = f'only {frames} decodable frames (< --min_frames {args.min_frames})'
        if reason:
            dropped.append({'path': entry.path, 'line': entry.line, 'reason': reason})
            logger.warning('%s:%d %s: %s', args.list, entry.line, entry.path, reason)
            continue
        kept.append(entry.text)
        clip = m.num_frames * m.sampling_rate * fps / m.target_fps
        if frames < clip:
            short.append({'path': entry.path, 'line': entry.line, 'frames': frames, 'clip_frames': clip})
        if promised != frames:
            damaged.append({'path': entry.path, 'line': entry.line, 'frames': frames, 'packets': promised})
            logger.warning('%s:%d %s: %d frames decode, its packets promise %d (damaged packets; kept)',
                           args.list, entry.line, entry.path, frames, promised)

    def write(place) -> None:  # again below a temporary folder when a write fails: the decoding is not lost
        with atomic_path(place(out)) as tmp:
            with open(tmp, 'w', encoding='utf-8') as f:
                f.writelines(line + '\n' for line in kept)
        if args.report:
            write_json(place(args.report), {'list': args.list, 'checked': len(entries), 'kept': len(kept),
                                            'dropped': dropped, 'short': short, 'damaged': damaged})

    reasons = Counter(d['reason'].split(':')[0] for d in dropped)
    logger.info('checked %d videos: %d kept, %d dropped%s; %d shorter than a clip (kept, last frame repeats); '
                '%d with damaged packets (kept)', len(entries), len(kept), len(dropped),
                ''.join(f'\n    {n} x {r}' for r, n in reasons.most_common()), len(short), len(damaged))
    write_outputs(write, 'check_videos')
    logger.info('cleaned list: %s', out)
    return 1 if args.strict and dropped else 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
