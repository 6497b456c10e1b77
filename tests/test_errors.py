"""errors.py: each kind of input error exits with its status and one message, without a traceback."""
import logging

import pytest

from errors import (STOPPED, CheckpointError, ConfigError, DivergedError, ListError, UserError, WeightsError,
                    exit_on_user_error)


@pytest.mark.parametrize('error, status', [(ConfigError('TRAIN.epoch must be positive'), 2),
                                           (ListError('list.txt:3: label 9 is outside [0, 5)'), 3),
                                           (WeightsError('weights not found: w.pdparams'), 4),
                                           (CheckpointError('slowfast_epoch3.pdparams is not the one'), 5),
                                           (DivergedError('loss is not finite'), 6)])
def test_each_user_error_exits_with_its_status_and_message(error, status, caplog):
    def main():
        raise error

    with pytest.raises(SystemExit) as exit_:
        exit_on_user_error(main, logging.getLogger('script'))
    assert exit_.value.code == status
    assert [r.getMessage() for r in caplog.records] == [str(error)]


def test_statuses_are_distinct_and_main_return_values_pass_through():
    statuses = [c.status for c in (ConfigError, ListError, WeightsError, CheckpointError, DivergedError)]
    assert len(set(statuses + [0, 1, STOPPED])) == len(statuses) + 3
    for returned, status in ((None, 0), (0, 0), (1, 1), (STOPPED, STOPPED)):
        with pytest.raises(SystemExit) as exit_:
            exit_on_user_error(lambda: returned, logging.getLogger('script'))
        assert exit_.value.code == status
    with pytest.raises(KeyError):  # not the user's to fix: the traceback stays
        exit_on_user_error(lambda: {}['x'], logging.getLogger('script'))
    assert issubclass(ListError, (UserError, ValueError))
