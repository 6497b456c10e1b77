"""multigrid.py against PySlowFast's MultigridSchedule for PaddleVideo's slowfast_multigrid.yaml (SlowFast 8x8)."""
import pytest

from multigrid import Stage, long_cycle_schedule, short_cycle, stage_at, step_lr

LONG = [[0.25, 0.7071], [0.5, 0.7071], [0.5, 1], [1, 1]]
SHORT = [0.5, 0.7071]


def test_long_cycle_schedule_of_the_8x8_multigrid_recipe():
    """32 frames, 224 crops, steps [0, 94, 154, 196] of 239 epochs, epoch factor 1.5: PySlowFast's schedule
    (utils/multigrid.py run on these values) is 13 stages over 358 epochs."""
    schedule = long_cycle_schedule(32, 224, [0, 94, 154, 196], 239, LONG, 1.5, SHORT)
    cycle = [(8, 8, 158), (4, 16, 158), (2, 16, 224), (1, 32, 224)]  # (batch factor, frames, crop)
    ends = [73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 358]
    expected = [Stage(k // 4, *cycle[k % 4], end) for k, end in enumerate(ends[:12])] + [Stage(3, 1, 32, 224, 358)]
    assert schedule == expected
    boundaries, lrs = step_lr(schedule, 0.1)
    assert boundaries == [0, 73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 343]
    assert lrs == pytest.approx([8, 4, 2, 1, 0.8, 0.4, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01, 0.01, 0.001], rel=1e-12)
    assert stage_at(schedule, 0) == schedule[0] and stage_at(schedule, 73) == schedule[1]
    assert stage_at(schedule, 357) == schedule[-1] and stage_at(schedule, 400) == schedule[-1]


def test_without_the_short_cycle_the_stages_weigh_only_their_own_batch():
    schedule = long_cycle_schedule(32, 224, [0, 94, 154, 196], 239, LONG, 1.0)
    assert [s.batch_factor for s in schedule[:4]] == [8, 4, 2, 1] and schedule[-1][1:4] == (1, 32, 224)
    # each cycle's epochs follow its batch factor: 8:4:2:1 of every step
    first = [schedule[0].end_epoch] + [b.end_epoch - a.end_epoch for a, b in zip(schedule[:3], schedule[1:4])]
    assert [round(e / first[3]) for e in first] == [8, 4, 2, 1]


def test_short_cycle_iterations_scale_the_batch_with_the_crop_area():
    assert short_cycle(8, 224, 224, SHORT) == [(32, 112), (16, 158), (8, 224)]
    assert short_cycle(64, 158, 224, SHORT) == [(128, 112), (64, 158), (64, 158)]  # (158/112)^2 = 1.99 -> 2
