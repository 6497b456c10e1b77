"""Predict the classes of videos: 10 x 3 views each, mean probability, top-1 and top-5, written to result.json.

    python predict.py --config slowfast-single.yaml --weights checkpoints/slowfast_epoch195      # INFER.filelist
    python predict.py --weights ... --video clip.mp4 --video folder_of_videos/
    python -m paddle.distributed.launch predict.py ...                                         (run_infer_multi.sh)

``<save_path>/result.json`` (default ``./data/results``) is a list, one object per input in input order:
``video_id``, ``top1_values``, ``top1_indices``, ``top5_values``, ``top5_indices`` (the original's fields; values are
the mean probability over the views), plus ``top1_label`` and ``top5_labels`` with ``DATA.label_map``. An input that
cannot be decoded gets ``{"video_id", "error"}`` instead; the exit status is then 1.
"""
import logging
import os
from typing import List, Tuple

import numpy as np

import distributed
from atomic import atomic_path, write_json
from config_utils import build_parser, log_config, parse_args, setup_logging, str2bool
from errors import ListError, exit_on_user_error
from kinetics_dataset import (NO_LABEL, KineticsMultiViewDataset, model_inputs, parse_video_list,
                              read_label_map)
from scoring import build_scoring_model, score_videos
from video_io import VIDEO_EXTENSIONS

logger = logging.getLogger('predict')


def gather_inputs(args, cfg) -> Tuple[List[Tuple[str, int]], List[str]]:
    """``(samples, video_ids)`` in input order: the list's videos, then every ``--video`` (a folder: its videos,
    sorted, recursively). The list is read when no ``--video`` is given, or when ``--filelist`` names it."""
    samples, ids = [], []
    listing = args.filelist or (None if args.video else cfg.INFER.filelist)
    if listing:
        for entry in parse_video_list(listing, cfg.MODEL.num_classes, cfg.DATA.path_prefix, labels_required=False):
            samples.append((entry.path, entry.label))
            ids.append(entry.given)
    for given in args.video:
        if os.path.isdir(given):
            found = sorted(os.path.join(d, f) for d, _, files in os.walk(given) for f in files
                           if f.lower().endswith(VIDEO_EXTENSIONS))
            if not found:
                raise ListError(f'--video {given}: no video files in this folder')
        else:
            found = [given]  # a missing file is reported in result.json like any undecodable input
        samples += [(path, NO_LABEL) for path in found]
        ids += found
    if not samples:
        raise ListError('nothing to predict: give --video or INFER.filelist')
    return samples, ids


def main() -> int:
    parser = build_parser('infer', description=__doc__.split('\n\n')[0])
    parser.add_argument('--video', action='append', default=[], metavar='PATH',
                        help='a video file or a folder of videos; may be given many times')
    parser.add_argument('--filelist', help='a list to predict as well as the --video inputs (default: INFER.filelist '
                                           'when no --video is given)')
    parser.add_argument('--features', metavar='FILE.npy',
                        help='also write each video\'s clip features (the classifier\'s input, mean over its views; '
                             'NaN rows for videos that did not decode) to FILE.npy, and their video ids in row order '
                             'to FILE.json')
    parser.add_argument('--features_per_view', nargs='?', const=True, default=False, type=str2bool,
                        metavar='True|False', help='with --features: also FILE_views.npy, [videos, views, C]')
    cfg, args = parse_args('infer', parser=parser)
    setup_logging()  # before setup, which logs
    device, rank, world = distributed.setup(args.use_gpu, args.use_data_parallel)
    log_config(cfg, 'Infer')
    i = cfg.INFER
    names = read_label_map(cfg.DATA.label_map, cfg.MODEL.num_classes)
    samples, ids = gather_inputs(args, cfg)
    batch = distributed.split_batch(i.batch_size, world, 'INFER.batch_size')
    model, source = build_scoring_model(cfg, i.weights, i.target_size, device)
    dataset = KineticsMultiViewDataset(cfg, 'infer', rank, world, samples=samples)
    logger.info('predicting %d videos x %d views with %s', len(samples), dataset.num_views, source)

    sums, counts, features = score_videos(model, dataset, lambda clips: model_inputs(clips, cfg), batch,
                                          cfg.DATA.num_workers, cfg.MODEL.num_classes, rank, world,
                                          features=('view' if args.features_per_view else 'video')
                                          if args.features else None)
    if rank != 0:
        return 0
    results = []
    for index, video_id in enumerate(ids):
        if counts[index] != dataset.num_views:
            results.append({'video_id': video_id, 'error': 'could not be decoded (missing, empty, unreadable or '
                                                           'truncated); see the log'})
            logger.warning('[INFER] video id [%s]: could not be decoded', video_id)
            continue
        probs = sums[index] / dataset.num_views
        top5 = np.argsort(-probs, kind='stable')[:5]
        entry = {'video_id': video_id, 'top1_values': float(probs[top5[0]]), 'top1_indices': int(top5[0]),
                 'top5_values': [float(probs[k]) for k in top5], 'top5_indices': [int(k) for k in top5]}
        if names:
            entry['top1_label'] = names[top5[0]]
            entry['top5_labels'] = [names[k] for k in top5]
        results.append(entry)
        logger.info('[INFER] video id [%s], top1 value %.5f, top1 indices %d%s', video_id, entry['top1_values'],
                    entry['top1_indices'], f' ({names[top5[0]]})' if names else '')
    save_path = args.save_path or i.save_path
    os.makedirs(save_path, exist_ok=True)
    out = os.path.join(save_path, 'result.json')
    write_json(out, results)
    if args.features:
        done = counts == dataset.num_views
        if args.features_per_view:
            views = np.where(done[:, None, None], features, np.nan).astype(np.float32)
            means = views.mean(axis=1)
        else:
            means = np.where(done[:, None], features / np.maximum(counts, 1)[:, None], np.nan).astype(np.float32)
        stem = args.features[:-len('.npy')] if args.features.endswith('.npy') else args.features
        os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
        outputs = {stem + '.npy': means}
        if args.features_per_view:
            outputs[stem + '_views.npy'] = views
        for path, array in outputs.items():
            with atomic_path(path) as tmp, open(tmp, 'wb') as f:
                np.save(f, array)
        write_json(stem + '.json', {'video_ids': ids, 'views_per_video': dataset.num_views,
                                    'view_order': 'temporal * num_spatial_crops + spatial',
                                    'feature': 'classifier input, mean over positions (and views in the .npy)',
                                    'weights': source})
        logger.info('[INFER] clip features %s (ids in row order: %s)', ', '.join(
            f'{path} {list(array.shape)}' for path, array in outputs.items()), stem + '.json')
    bad = sum('error' in r for r in results)
    logger.info('[INFER] infer finished, results saved in %s (%d videos, %d failed)', out, len(results), bad)
    return 1 if bad else 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
