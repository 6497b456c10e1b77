"""Multi-crop evaluation: every val video's 10 x 3 views, softmax summed per video, top-1/top-5 over videos.

    python eval.py --config slowfast-single.yaml --weights checkpoints/slowfast_epoch195
    python -m paddle.distributed.launch eval.py --config slowfast.yaml --weights ...   (run_eval_multi.sh)

Writes ``<save_path>/eval_result.json`` (top1, top5, num_videos, num_failed, failed, mean_class_acc,
per_class_acc), ``video_scores.npy`` (summed view probabilities, rows in list order, NaN for failed videos) and
``confusion_matrix.png``; ends with the original's line ``[EVAL] eval finished, avg_acc1= X, avg_acc5= Y``.
Ranks split the videos (no padding), so any number of ranks gives the same scores.
"""
import logging
import os

import numpy as np

import distributed
from atomic import atomic_path, check_output_folder, write_json, write_npy, write_outputs
from config_utils import log_config, parse_args, setup_logging
from errors import exit_on_user_error
from kinetics_dataset import KineticsMultiViewDataset, model_inputs
from metrics import classification_report
from scoring import build_scoring_model, score_videos, scoring_source
from video_lists import read_label_map

logger = logging.getLogger('eval')


def plot_confusion(matrix: np.ndarray, names, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    size = max(6.0, min(40.0, 0.12 * len(matrix)))
    fig, ax = plt.subplots(figsize=(size, size))
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(rows, cmap='Blues', vmin=0, vmax=1)
    ticks = np.arange(len(matrix))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(names, rotation=90, fontsize=max(2, min(9, 600 // len(matrix))))
    ax.set_yticklabels(names, fontsize=max(2, min(9, 600 // len(matrix))))
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title('confusion matrix (rows normalised)')
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format='png')
    plt.close(fig)


def main() -> int:
    cfg, args = parse_args('eval')
    setup_logging()  # before setup, which logs
    device, rank, world = distributed.setup(args.use_gpu, args.use_data_parallel)
    log_config(cfg, 'Test')
    t = cfg.TEST
    batch = distributed.split_batch(t.batch_size, world, 'TEST.batch_size')
    names = read_label_map(cfg.DATA.label_map, cfg.MODEL.num_classes)
    source = scoring_source(cfg, t.weights)
    save_path = args.save_path or (source if cfg.INFER.use_inference else os.path.dirname(os.path.abspath(source)))
    default = '' if args.save_path else f'not given: the folder of {source}'
    distributed.rank_0_does(lambda: check_output_folder(save_path, '--save_path', default), rank, world)
    dataset = KineticsMultiViewDataset(cfg, 'test', rank, world)  # checks that the files exist: before the model
    model, source = build_scoring_model(cfg, t.weights, t.target_size, device, args.allow_pickle)
    logger.info('evaluating %s on %d videos x %d views, %d ranks', source, len(dataset.samples),
                dataset.num_views, world)

    scores = score_videos(model, dataset, lambda clips: model_inputs(clips, cfg), batch, cfg.DATA.num_workers,
                          cfg.MODEL.num_classes, rank, world)
    if rank != 0:
        return 0
    sums, ok = scores.sums, ~scores.failed
    labels = np.array([label for _, label in dataset.samples])
    report = classification_report(sums[ok], labels[ok], cfg.MODEL.num_classes)
    failed = [dataset.samples[i][0] for i in np.flatnonzero(~ok)]
    for path in failed:
        logger.warning('not evaluated (undecodable): %s', path)
    result = {'top1': report['top1'], 'top5': report['top5'], 'num_videos': int(ok.sum()),
              'num_failed': len(failed), 'failed': failed, 'mean_class_acc': report['mean_class_acc'],
              'per_class_acc': report['per_class_acc'], 'weights': source, 'filelist': t.filelist,
              'views_per_video': dataset.num_views}
    logger.info('%d videos evaluated, %d failed; mean class accuracy %.5f', ok.sum(), len(failed),
                report['mean_class_acc'])
    logger.info('[EVAL] eval finished, avg_acc1= %s, avg_acc5= %s (%d videos evaluated, %d failed)', report['top1'],
                report['top5'], ok.sum(), len(failed))

    def write(place) -> None:  # the accuracy is logged above: a failed write loses none of it
        write_npy(place(os.path.join(save_path, 'video_scores.npy')), np.where(ok[:, None], sums, np.nan))
        plot_confusion(report['confusion'], names or [str(c) for c in range(cfg.MODEL.num_classes)],
                       place(os.path.join(save_path, 'confusion_matrix.png')))
        write_json(place(os.path.join(save_path, 'eval_result.json')), result)

    write_outputs(write, 'eval')
    logger.info('results in %s (eval_result.json, video_scores.npy, confusion_matrix.png)', save_path)
    return 1 if failed else 0


if __name__ == '__main__':
    exit_on_user_error(main, logger)
