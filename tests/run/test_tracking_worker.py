"""mlops_kit.run.tracking_worker: the tracking worker process."""

from __future__ import annotations

import operator

import pytest

from mlops_kit.core.errors import TrackingError
from mlops_kit.run import tracking_worker


def test_a_bug_in_the_helper_process_is_one_tracking_error_line() -> None:
    tracker = tracking_worker.Tracker()
    try:
        with pytest.raises(TrackingError) as err:
            tracker.call(operator.getitem, {}, "no-such-key")  # a KeyError raised in the worker
        assert "\n" not in str(err.value) and "KeyError" in str(err.value)
        assert "Traceback" not in str(err.value)
    finally:
        tracker.close()
