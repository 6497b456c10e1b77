"""Predict the classes of videos: 10 x 3 views each, mean probability, top-1 and top-5, written to result.json.

    python predict.py --config slowfast-single.yaml --weights checkpoints/slowfast_epoch195      # INFER.filelist
    python predict.py --weights ... --video clip.mp4 --video folder_of_videos/
    python -m paddle.distributed.launch predict.py ...                                         (run_infer_multi.sh)

``<save_path>/result.json`` (default ``./data/results``) is a list, one object per input in input order:
``video_id``, ``top1_values``, ``top1_indices``, ``top5_values``, ``top5_indices`` (the original's fields; values are
the mean probability over the views), plus ``top1_label`` and ``top5_labels`` with ``DATA.label_map``. An input that
cannot be decoded gets ``{"video_id", "error"}`` instead; the exit status is then 1.

``--timeline DIR`` scores long videos window by window instead (a window every ``--stride``, each decoded once,
forward): per video ``DIR/<name>.json`` (every window's start, end and top-k; the merged segments), ``DIR/<name>.png``
(the timeline picture) and with ``--annotate`` ``DIR/<name>.mp4`` (the video with the labels of the moment drawn on
it); result.json's values are then the mean over the windows. ``--features`` writes clip features per video, or
per window with ``--timeline``.
"""
import argparse
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import distributed
from atomic import check_output_file, check_output_folder, write_json, write_npy, write_outputs
from config_utils import build_parser, log_config, parse_args, setup_logging, str2bool
from errors import exit_on_user_error
from kinetics_dataset import KineticsMultiViewDataset, model_inputs
from scoring import build_scoring_model, ranked, score_videos, scoring_source
from timeline import SlidingWindowDataset, annotate_video, checked_duration, plot_timeline, video_timeline
from video_io import VideoError
from video_lists import collect_inputs, file_stems, read_label_map

logger = logging.getLogger('predict')


def duration(text: str) -> str:
    """argparse type of ``--stride`` and ``--window``: seconds (``2``, ``2.5s``) or frames (``16f``)."""
    try:
        return checked_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text}')
    return value


def build_arguments():
    parser = build_parser('infer', description=__doc__.split('\n\n')[0])
    parser.add_argument('--video', action='append', default=[], metavar='PATH',
                        help='a video file or a folder of videos; may be given many times')
    parser.add_argument('--filelist', help='a list to predict as well as the --video inputs (default: INFER.filelist '
                                           'when no --video is given)')
    parser.add_argument('--features', metavar='FILE.npy',
                        help='also write the clip features (the classifier\'s input, mean over positions and views) '
                             'of each video, or of each window with --timeline (NaN rows where a video did not '
                             'decode), to FILE.npy, and what each row is to FILE.json')
    parser.add_argument('--features_per_view', nargs='?', const=True, default=False, type=str2bool,
                        metavar='True|False', help='with --features: also FILE_views.npy, [rows, views, C]')
    long = parser.add_argument_group('long videos (--timeline)')
    long.add_argument('--timeline', metavar='DIR', help='score windows along each video and write its timeline '
                                                        '(.json, .png) to DIR')
    long.add_argument('--stride', type=duration, default='1s',
                      help='a window every STRIDE: seconds (1, 0.5s) or frames (16f) (default: %(default)s)')
    long.add_argument('--window', type=duration, help='window length (default and least: one clip, '
                                                      'MODEL.num_frames x MODEL.sampling_rate frames at '
                                                      'MODEL.target_fps); longer windows hold --window_clips clips')
    long.add_argument('--window_clips', type=positive, default=1, help='clips per window, spread as the test\'s views '
                                                                  '(default: %(default)s)')
    long.add_argument('--window_crops', type=int, default=1, choices=(1, 3),
                      help='spatial crops per clip: 1 centre, 3 as the test (default: %(default)s)')
    long.add_argument('--smooth', type=positive, default=1, metavar='N',
                      help='average each window\'s probabilities with its neighbours\', over N windows centred on it, '
                           'before anything is made of them (default: %(default)s, none)')
    long.add_argument('--top_k', type=positive, default=5, help='classes kept per window (default: %(default)s)')
    long.add_argument('--threshold', type=float, default=0.5,
                      help='a window joins a segment when its top-1 probability is at least this '
                           '(default: %(default)s)')
    long.add_argument('--annotate', nargs='?', const=True, default=False, type=str2bool, metavar='True|False',
                      help='also DIR/<name>.mp4: the video with the labels of the moment drawn on every frame')
    long.add_argument('--annotate_size', type=positive,
                      help='short side of the annotated video (default: the input\'s)')
    return parser


def main() -> int:
    cfg, args = parse_args('infer', parser=build_arguments())
    setup_logging()  # before setup, which logs
    device, rank, world = distributed.setup(args.use_gpu, args.use_data_parallel)
    log_config(cfg, 'Infer')
    i = cfg.INFER
    names = read_label_map(cfg.DATA.label_map, cfg.MODEL.num_classes)
    listing = args.filelist or (None if args.video else i.filelist)
    samples, ids = collect_inputs(listing, args.video, cfg)
    inputs_name = listing if listing and not args.video else 'the inputs'  # what the check of the files names
    batch = distributed.split_batch(i.batch_size, world, 'INFER.batch_size')
    scoring_source(cfg, i.weights)
    save_path = args.save_path or i.save_path
    distributed.rank_0_does(lambda: check_outputs(args, save_path), rank, world)  # before the work
    if args.timeline:  # the datasets check that the files exist: before the model is loaded
        dataset = SlidingWindowDataset(cfg, samples, args.stride, args.window, args.window_clips, args.window_crops,
                                       rank, world, inputs_name)
    else:
        dataset = KineticsMultiViewDataset(cfg, 'infer', rank, world, samples=samples, source=inputs_name)
    model, source = build_scoring_model(cfg, i.weights, i.target_size, device, args.allow_pickle)
    if args.timeline:
        logger.info('predicting %d windows (%d videos, a window every %s) x %d views with %s', dataset.num_rows,
                    len(samples), args.stride, dataset.num_views, source)
    else:
        logger.info('predicting %d videos x %d views with %s', len(samples), dataset.num_views, source)

    sums, counts, features, _ = score_videos(model, dataset, lambda clips: model_inputs(clips, cfg), batch,
                                             cfg.DATA.num_workers, cfg.MODEL.num_classes, rank, world,
                                             features=('view' if args.features_per_view else 'video')
                                             if args.features else None)
    if rank != 0:
        return 0
    done = counts == dataset.num_views  # per row: a video, or a window
    entries = None if args.timeline else [
        video_entry(video_id, sums[n] / dataset.num_views, names) if done[n] else error_entry(video_id)
        for n, video_id in enumerate(ids)]

    def write(place) -> List[Dict]:  # every output; again below a temporary folder when one cannot be written
        results = entries if entries is not None else write_timelines(
            args, cfg, dataset, ids, sums / dataset.num_views, done, names, place)
        write_json(place(os.path.join(save_path, 'result.json')), results)
        if args.features:
            failed = np.array(['error' in r for r in results], dtype=bool)
            write_features(place(args.features), features, counts, dataset, ids, failed, source,
                           args.features_per_view)
        return results

    results = write_outputs(write, 'predict')
    bad = sum('error' in r or 'annotate_error' in r for r in results)
    logger.info('[INFER] infer finished, results saved in %s (%d videos, %d failed)',
                os.path.join(save_path, 'result.json'), len(results), bad)
    return 1 if bad else 0


def check_outputs(args, save_path: str) -> None:
    """Every place predict.py writes, checked before the work (``atomic.check_output_folder``)."""
    check_output_folder(save_path, '--save_path', '' if args.save_path else 'not given: INFER.save_path')
    if args.features:
        check_output_file(args.features if args.features.endswith('.npy') else args.features + '.npy', '--features')
    if args.timeline:
        check_output_folder(args.timeline, '--timeline')


def video_entry(video_id: str, probs: np.ndarray, names: Optional[List[str]]) -> Dict:
    """result.json's entry of one video from its mean probabilities ``[K]`` (logged as the original did)."""
    top5 = ranked(probs, 5)
    entry = {'video_id': video_id, 'top1_values': float(probs[top5[0]]), 'top1_indices': int(top5[0]),
             'top5_values': [float(probs[k]) for k in top5], 'top5_indices': [int(k) for k in top5]}
    if names:
        entry['top1_label'] = names[top5[0]]
        entry['top5_labels'] = [names[k] for k in top5]
    logger.info('[INFER] video id [%s], top1 value %.5f, top1 indices %d%s', video_id, entry['top1_values'],
                entry['top1_indices'], f' ({names[top5[0]]})' if names else '')
    return entry


def error_entry(video_id: str) -> Dict:
    logger.warning('[INFER] video id [%s]: could not be decoded', video_id)
    return {'video_id': video_id,
            'error': 'could not be decoded (missing, empty, unreadable or truncated); see the log'}


def write_timelines(args, cfg, dataset: SlidingWindowDataset, ids: Sequence[str], probs: np.ndarray,
                    done: np.ndarray, names: Optional[List[str]], place: Callable[[str], str]) -> List[Dict]:
    """Per video, its timeline (.json, .png, and the annotated .mp4 with ``--annotate``) in ``args.timeline`` (each
    at ``place(path)``: ``atomic.write_outputs``); returns result.json's entries (the mean over the windows, and where
    the timeline is)."""
    results = []
    for n, (video_id, stem) in enumerate(zip(ids, file_stems(ids))):
        layout, rows = dataset.layouts[n], dataset.rows(n)
        if layout is None or not done[rows].all():
            results.append(error_entry(video_id))
            continue
        timeline, window_probs = video_timeline(video_id, layout, probs[rows], names, args.stride, args.smooth,
                                                dataset.num_views, args.top_k, args.threshold)
        times = layout.times()
        base = place(os.path.join(args.timeline, stem))
        write_json(base + '.json', timeline)
        plot_timeline(window_probs, times, timeline['duration'], timeline['segments'], names, video_id, base + '.png')
        entry = dict(video_entry(video_id, probs[rows].mean(axis=0), names), timeline=base + '.json',
                     timeline_png=base + '.png', segments=len(timeline['segments']))
        if args.annotate:
            try:
                annotate_video(dataset.samples[n][0], base + '.mp4', window_probs, times, names, args.top_k,
                               cfg.MODEL.target_fps, args.annotate_size)
                entry['annotated'] = base + '.mp4'
            except VideoError as error:  # its second decode failed: the timeline stands, the status says it
                logger.error('[INFER] %s: no annotated video: %s', video_id, error.reason)
                entry['annotate_error'] = error.reason
        logger.info('[INFER] %s: %d windows, %d segments: %s', video_id, len(times), len(timeline['segments']),
                    ', '.join(f"{s.get('label', s['label_index'])} {s['start']:.1f}-{s['end']:.1f} s"
                              for s in timeline['segments'][:8]) + (' ...' if len(timeline['segments']) > 8 else ''))
        results.append(entry)
    return results


def write_features(path: str, features: np.ndarray, counts: np.ndarray, dataset, ids: Sequence[str],
                   failed: np.ndarray, source: str, per_view: bool) -> None:
    """The clip features (``ensemble_scores``'s, a row per video or window) as FILE.npy (mean over views; NaN rows
    for the ``failed`` videos), FILE_views.npy with ``per_view``, and FILE.json saying what each row is."""
    windows = isinstance(dataset, SlidingWindowDataset)
    ok = ~failed[dataset.row_videos] & (counts == dataset.num_views)
    if per_view:
        views = np.where(ok[:, None, None], features, np.nan).astype(np.float32)
        means = views.mean(axis=1)
    else:
        means = np.where(ok[:, None], features / np.maximum(counts, 1)[:, None], np.nan).astype(np.float32)
    stem = path[:-len('.npy')] if path.endswith('.npy') else path
    outputs = {stem + '.npy': means}
    if per_view:
        outputs[stem + '_views.npy'] = views
    for name, array in outputs.items():
        write_npy(name, array)
    index = {'video_ids': ids, 'views_per_window' if windows else 'views_per_video': dataset.num_views,
             'feature': 'classifier input, mean over positions (and views in the .npy)', 'weights': source}
    if windows:
        index['rows'] = [{'video': n, 'window': w, 'start': round(float(t[0]), 4), 'end': round(float(t[1]), 4)}
                         for n, layout in enumerate(dataset.layouts) if layout is not None
                         for w, t in enumerate(layout.times())]
        index['view_order'] = 'clip * window_crops + crop'
    else:
        index['view_order'] = 'temporal * num_spatial_crops + spatial'
    write_json(stem + '.json', index)
    logger.info('[INFER] clip features %s (rows: %s)', ', '.join(f'{name} {list(array.shape)}'
                                                                  for name, array in outputs.items()), stem + '.json')


if __name__ == '__main__':
    exit_on_user_error(main, logger)
