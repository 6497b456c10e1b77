"""Re-cut, re-mux and re-encode a video the ways real files come, to test a decoding pipeline on them.

    python tools/data/make_hard_videos.py clip.mp4 hard/   # needs the ffmpeg tool (Debian/Ubuntu: apt install ffmpeg)

Clean constant-frame-rate files hide the problems real videos have: a cut made with ``ffmpeg -ss ... -c copy`` gets an
MP4 edit list whose hidden frames still count in the container's frame count; a stream that starts at a non-zero time
makes duration-based counts too large; open GOPs and B-pyramids reorder frames; VP9 hides alt-ref frames; variable frame
rate breaks ``frame = time x fps``. Each case below is one of those, made from SOURCE by the ffmpeg tool;
``kinetics_dataset.py`` must read each one at the frames a full sequential decode yields (tests/test_video_io.py checks
it; ``tools/analysis/benchmark_data.py --measures decoders`` compares decoders on them). SOURCE should be at least 10 s
long.
"""
import argparse
import functools
import logging
import os
import subprocess
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from atomic import check_output_folder  # noqa: E402
from config_utils import setup_logging  # noqa: E402
from errors import exit_on_user_error  # noqa: E402

logger = logging.getLogger('make_hard_videos')


def ffmpeg(*args: str) -> None:
    """Run the ffmpeg tool quietly; a failure raises with its message."""
    subprocess.run(['ffmpeg', '-nostdin', '-loglevel', 'error', '-y', *map(str, args)], check=True)


def hard_videos(source: str, folder: str) -> Dict[str, str]:
    """``{case: path}``, written to ``folder`` from ``source`` (made again each call)."""
    os.makedirs(folder, exist_ok=True)
    at = functools.partial(os.path.join, folder)
    frames = at('frames.mkv')  # near-lossless intermediate to re-encode from
    ffmpeg('-i', source, '-an', '-c:v', 'libx264', '-crf', '10', '-g', '300', frames)
    gop = at('gop30.mp4')  # keyframes every 30 frames, open GOPs, 3 B-frames in a pyramid
    ffmpeg('-i', frames, '-c:v', 'libx264', '-crf', '18', '-x264-params',
           'keyint=30:min-keyint=30:scenecut=0:open-gop=1:bframes=3:b-pyramid=normal', gop)
    vp9 = at('altref.webm')  # good-quality VP9 with hidden alt-ref frames, keyframe every 60
    ffmpeg('-i', frames, '-c:v', 'libvpx-vp9', '-auto-alt-ref', '1', '-lag-in-frames', '16', '-deadline', 'good',
           '-cpu-used', '8', '-crf', '32', '-b:v', '0', '-g', '60', vp9)
    cases = {
        # the fast way to cut a clip: MP4 gets an edit list hiding the frames before 3.37 s
        'mp4 stream-copy cut (edit list)': (['-ss', '3.37', '-i', source, '-t', '6', '-an', '-c', 'copy'], 'cut.mp4'),
        'mp4 stream-copy cut of open GOPs': (['-ss', '2.9', '-i', gop, '-t', '5', '-c', 'copy'], 'cut_gop.mp4'),
        'mkv stream-copy cut': (['-ss', '3.37', '-i', source, '-t', '6', '-an', '-c', 'copy'], 'cut.mkv'),
        'mkv starting at 4.5 s': (['-i', gop, '-c', 'copy', '-output_ts_offset', '4.5'], 'offset.mkv'),
        'webm VP9 alt-ref cut, timestamps kept': (['-ss', '2.2', '-i', vp9, '-t', '6', '-c', 'copy', '-copyts'],
                                                  'cut_copyts.webm'),
        'webm live (no cues, no duration)': (['-i', vp9, '-c', 'copy', '-f', 'webm', '-live', '1'], 'live.webm'),
        'open-GOP B-pyramid H.264 mkv': (['-i', gop, '-c', 'copy'], 'gop.mkv'),
        'audio track first (mp4)': (['-f', 'lavfi', '-i', 'sine=frequency=440:duration=10', '-i', gop,
                                     '-map', '0:a', '-map', '1:v', '-c:v', 'copy', '-c:a', 'aac'], 'audio_first.mp4'),
        '29.97 fps (mp4)': (['-i', frames, '-r', '30000/1001', '-c:v', 'libx264', '-crf', '18'], 'ntsc.mp4'),
        # constant frame rate but the last frame 0.3 s late (as a re-mux with a longer audio track can leave it)
        'last timestamp late (mp4)': (['-i', frames, '-vf', "setpts='if(eq(N,299),PTS+0.3/TB,PTS)'", '-fps_mode',
                                       'passthrough', '-c:v', 'libx264', '-crf', '18'], 'late_last.mp4'),
        # frames dropped unevenly and kept at their times: variable frame rate
        'variable frame rate (mkv)': (['-i', frames, '-vf', "select='lt(mod(n,10),6)+gt(n,200)'", '-fps_mode', 'vfr',
                                       '-c:v', 'libx264', '-crf', '18'], 'vfr.mkv'),
        'variable frame rate (mp4)': (['-i', frames, '-vf', "select='lt(mod(n,7),4)+lt(n,50)'", '-fps_mode', 'vfr',
                                       '-c:v', 'libx264', '-crf', '18'], 'vfr.mp4'),
    }
    out = {}
    for name, (args, file) in cases.items():
        ffmpeg(*args, at(file))
        out[name] = at(file)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('source', help='a video of at least 10 s')
    parser.add_argument('out', help='output folder')
    args = parser.parse_args(argv)
    setup_logging()
    if not os.path.isfile(args.source):
        parser.error(f'source video not found: {args.source}')
    check_output_folder(args.out, 'OUT')
    try:
        cases = hard_videos(args.source, args.out)
    except FileNotFoundError:
        parser.error('the ffmpeg tool is not installed (Debian/Ubuntu: apt install ffmpeg)')
    except subprocess.CalledProcessError as error:
        logger.error('ffmpeg failed on %s: %s', args.source, error)
        return 1
    for name, path in cases.items():
        logger.info('%-40s %s', name, path)
    return 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
