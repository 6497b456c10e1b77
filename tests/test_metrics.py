import numpy as np

from metrics import classification_report, topk_correct, topk_errors

# Hand-computed: 4 videos, 6 classes.
SCORES = np.array([[0.50, 0.10, 0.10, 0.10, 0.10, 0.10],   # label 0: top-1 right
                   [0.30, 0.25, 0.20, 0.10, 0.10, 0.05],   # label 4: top-1 wrong (0), in the top 5
                   [0.05, 0.10, 0.10, 0.15, 0.20, 0.40],   # label 0: wrong, the lowest score
                   [0.10, 0.10, 0.60, 0.10, 0.05, 0.05]])  # label 2: right
LABELS = np.array([0, 4, 0, 2])


def test_topk_against_a_hand_computed_example():
    assert topk_correct(SCORES, LABELS, 1).tolist() == [True, False, False, True]
    assert topk_correct(SCORES, LABELS, 5).tolist() == [True, True, False, True]
    assert topk_errors(SCORES, LABELS) == [2, 1]
    assert topk_correct(SCORES[:, :3], np.array([0, 1, 2, 2]), 5).all()  # k larger than the classes


def test_report_per_class_and_confusion():
    report = classification_report(SCORES, LABELS, 6)
    assert report['top1'] == 0.5 and report['top5'] == 0.75
    assert report['per_class_acc'] == [0.5, None, 1.0, None, 0.0, None]
    assert report['mean_class_acc'] == 0.5  # over the classes that have videos
    expected = np.zeros((6, 6), int)
    expected[0, 0] = expected[0, 5] = expected[4, 0] = expected[2, 2] = 1
    assert np.array_equal(report['confusion'], expected)
