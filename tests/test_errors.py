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
    assert issubclass(ListError, (UserError, ValueError))


def test_a_crash_exits_1_with_its_traceback_and_an_interrupt_130(caplog):
    """Not the user's to fix: the traceback is logged; the exit happens from here, so nothing the traceback held
    (Paddle's loader iterators) is left to interpreter shutdown."""
    with pytest.raises(SystemExit) as exit_:
        exit_on_user_error(lambda: {}['x'], logging.getLogger('script'))
    assert exit_.value.code == 1 and caplog.records[-1].exc_info[0] is KeyError

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        exit_on_user_error(interrupted, logging.getLogger('script'))
    assert exit_.value.code == 130


def test_worker_errors_reach_the_loop_with_their_class_or_traceback():
    import multiprocessing

    from errors import WorkerErrors, checked

    def in_worker(errors, error):
        errors.record(error)

    errors = WorkerErrors()
    items = iter(range(5))
    got = []
    with pytest.raises(ListError, match='^11 videos in a row failed$'):
        for item in checked(items, errors):
            got.append(item)
            if item == 1:  # the next item is the one the worker spoiled
                process = multiprocessing.get_context('fork').Process(
                    target=in_worker, args=(errors, ListError('11 videos in a row failed')))
                process.start()
                process.join()
                errors.record(WeightsError('a later error is not kept'))
    assert got == [0, 1]
    crash = WorkerErrors()
    try:
        [][1]
    except IndexError as error:
        crash.record(error)
    with pytest.raises(RuntimeError, match=r'(?s)reading the data failed in a DataLoader worker:.*IndexError'):
        list(checked([1, 2], crash))
    assert list(checked([1, 2], WorkerErrors())) == [1, 2] and list(checked([3], None)) == [3]
    late = WorkerErrors()  # recorded while the last item was made: raised after it, at the end of the loop
    with pytest.raises(ConfigError, match='late'):
        for _ in checked([1], late):
            late.record(ConfigError('late'))
