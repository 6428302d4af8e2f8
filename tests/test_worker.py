"""mlops_kit.worker: the tracking worker process."""

from __future__ import annotations

import operator

import pytest

from mlops_kit import worker
from mlops_kit.errors import TrackingError


def test_a_bug_in_the_helper_process_is_one_tracking_error_line() -> None:
    tracker = worker.Tracker()
    try:
        with pytest.raises(TrackingError) as err:
            tracker.call(operator.getitem, {}, "no-such-key")  # a KeyError raised in the worker
        assert "\n" not in str(err.value) and "KeyError" in str(err.value)
        assert "Traceback" not in str(err.value)
    finally:
        tracker.close()
