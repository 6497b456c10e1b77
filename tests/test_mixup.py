"""mixup.py: label smoothing, mixup and CutMix change the inputs and targets exactly as stated."""
import numpy as np
import paddle
import pytest

from mixup import MixUp, soft_cross_entropy, soft_targets


def batch(seed=0, n=4):
    rng = np.random.default_rng(seed)
    slow = rng.standard_normal([n, 3, 2, 16, 16]).astype('float32')
    fast = rng.standard_normal([n, 3, 8, 16, 16]).astype('float32')
    return [paddle.to_tensor(slow), paddle.to_tensor(fast)], paddle.to_tensor([[0], [1], [2], [3]][:n])


def test_smoothed_targets_and_their_loss_equal_the_formula():
    labels = paddle.to_tensor([2, 0])
    targets = soft_targets(labels, 5, 0.1).numpy()
    expected = np.full((2, 5), 0.1 / 5)
    expected[0, 2] += 0.9
    expected[1, 0] += 0.9
    assert np.allclose(targets, expected) and np.allclose(targets.sum(1), 1.0)
    logits = np.random.default_rng(0).standard_normal([2, 5]).astype('float32')
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss = soft_cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(targets)).item()
    assert loss == pytest.approx(-(expected * log_p).sum(1).mean(), rel=1e-6)
    hard = soft_cross_entropy(paddle.to_tensor(logits), soft_targets(labels, 5)).item()
    assert hard == pytest.approx(paddle.nn.functional.cross_entropy(paddle.to_tensor(logits), labels).item(), rel=1e-6)


def test_mixup_is_the_stated_convex_combination_of_each_clip_with_its_reverse_partner():
    clips, labels = batch()
    mixed, targets, lam = MixUp(4, mixup_alpha=0.4, label_smoothing=0.1)(clips, labels, np.random.default_rng(3))
    assert 0.0 < lam < 1.0
    for x, y in zip(clips, mixed):
        x = x.numpy()
        assert np.allclose(y.numpy(), lam * x + (1 - lam) * x[::-1], atol=1e-6)
    smooth = soft_targets(labels, 4, 0.1).numpy()
    assert np.allclose(targets.numpy(), lam * smooth + (1 - lam) * smooth[::-1], atol=1e-6)


def test_cutmix_pastes_one_box_in_every_frame_of_every_pathway_and_weighs_targets_by_its_area():
    clips, labels = batch(1)
    mixed, targets, lam = MixUp(4, cutmix_alpha=1.0)(clips, labels, np.random.default_rng(5))
    inside = None
    for x, y in zip(clips, mixed):
        x, y = x.numpy(), y.numpy()
        from_partner = np.isclose(y, x[::-1]) & ~np.isclose(y, x)
        box = from_partner.any(axis=(0, 1, 2))  # [H, W]: where any value came from the partner
        assert inside is None or np.array_equal(box, inside)  # the same box in both pathways
        inside = box
        assert np.array_equal(y[..., ~box], x[..., ~box]) and np.allclose(y[..., box], x[::-1][..., box])
    assert 0 < inside.sum() < inside.size
    assert lam == pytest.approx(1 - inside.sum() / inside.size)  # a rectangle: its area is what was pasted
    onehot = soft_targets(labels, 4).numpy()
    assert np.allclose(targets.numpy(), lam * onehot + (1 - lam) * onehot[::-1])


def test_switch_and_mix_probabilities_and_the_draws_are_reproducible():
    clips, labels = batch(2)
    both = MixUp(4, mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.5)
    kinds = set()
    for seed in range(20):
        mixed, _, lam = both(clips, labels, np.random.default_rng(seed))
        again, _, lam2 = both(clips, labels, np.random.default_rng(seed))
        assert lam == lam2 and np.array_equal(mixed[1].numpy(), again[1].numpy())
        blend = np.allclose(mixed[0].numpy(), lam * clips[0].numpy() + (1 - lam) * clips[0].numpy()[::-1], atol=1e-6)
        kinds.add('mixup' if blend else 'cutmix')
    assert kinds == {'mixup', 'cutmix'}
    unmixed, targets, lam = MixUp(4, mixup_alpha=0.4, mix_prob=0.0)(clips, labels, np.random.default_rng(0))
    assert lam == 1.0 and np.array_equal(unmixed[0].numpy(), clips[0].numpy())
    assert np.array_equal(targets.numpy(), soft_targets(labels, 4).numpy())


class ForcedBeta:
    """A generator whose Beta draw is ``lam`` (CutMix's box follows from it); every other draw is ``rng``'s."""

    def __init__(self, lam, seed=0):
        self.lam, self.rng = lam, np.random.default_rng(seed)

    def beta(self, a, b):
        return self.lam

    def __getattr__(self, name):
        return getattr(self.rng, name)


@pytest.mark.parametrize('size, lam', [(32, 0.999), (224, 0.99995), ((32, 224), 0.9995)])
def test_an_empty_cutmix_box_leaves_the_batch_unmixed_with_lam_one(size, lam):
    """lam so close to 1 that ``int(side * sqrt(1 - lam)) // 2 == 0`` on a side: PySlowFast's slice assignment pastes
    nothing and its lam is 1.0; the targets are the (smoothed) one-hot labels."""
    height, width = (size, size) if isinstance(size, int) else size
    assert int(height * np.sqrt(1 - lam)) // 2 == 0 or int(width * np.sqrt(1 - lam)) // 2 == 0
    rng = np.random.default_rng(0)
    clips = [paddle.to_tensor(rng.standard_normal([3, 3, t, height, width]).astype('float32')) for t in (1, 4)]
    labels = paddle.to_tensor([[0], [1], [2]])
    for seed in range(5):  # any box centre
        mixed, targets, got = MixUp(4, cutmix_alpha=1.0, label_smoothing=0.1)(clips, labels, ForcedBeta(lam, seed))
        assert got == 1.0
        assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(clips, mixed))
        assert np.array_equal(targets.numpy(), soft_targets(labels, 4, 0.1).numpy())


def test_the_smallest_cutmix_box_is_still_pasted_and_weighed():
    """Just above the empty box: a 2 x 2 box of a 32 x 32 frame (lam 0.995) is pasted and lam is its kept area."""
    labels = paddle.to_tensor([[0], [1]])
    clips = [paddle.to_tensor(np.random.default_rng(1).standard_normal([2, 3, t, 32, 32]).astype('float32'))
             for t in (2, 8)]
    mixed, targets, lam = MixUp(4, cutmix_alpha=1.0)(clips, labels, ForcedBeta(0.995, seed=3))
    changed = ~np.isclose(mixed[1].numpy(), clips[1].numpy()).all(axis=(0, 1, 2))
    assert changed.sum() == 4 and lam == pytest.approx(1 - 4 / 1024)
