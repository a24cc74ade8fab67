"""The one jittered backoff (hybrid.core.retry): exact try counts, waits inside the full-jitter bounds, no real
sleeping (sleep and the random source are injected)."""
import random

import pytest

from hybrid.core.errors import CloudError, EmulatorNotRunning, NotFoundError
from hybrid.core.retry import Backoff, is_transient, retry


class Script:
    """An action that fails (raises or returns a not-done outcome) a given number of times, then succeeds."""

    def __init__(self, failures: int, failure=None):
        self.failures, self.failure, self.calls = failures, failure, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            if isinstance(self.failure, BaseException):
                raise self.failure
            return "busy"
        return "ok"


def test_the_ceiling_doubles_from_base_up_to_cap():
    assert [Backoff(0.2, 5.0).ceiling(n) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


@pytest.mark.parametrize("rand, expected", [(lambda: 0.0, 0.0), (lambda: 0.5, 0.4), (lambda: 0.999, 0.7992)])
def test_a_delay_is_the_ceiling_scaled_by_the_random_draw(rand, expected):
    assert Backoff(0.2, 5.0).delay(3, rand) == pytest.approx(expected)


@pytest.mark.parametrize("attempts", [1, 2, 4, 7])
def test_an_action_that_never_succeeds_is_tried_exactly_attempts_times(attempts):
    action, sleeps, backoff = Script(100, CloudError("throttled", "SlowDown")), [], Backoff(0.2, 1.0)
    with pytest.raises(CloudError):
        retry(action, "thing", attempts, retryable=is_transient, backoff=backoff, sleep=sleeps.append,
              rand=random.Random(7).random)
    assert action.calls == attempts and len(sleeps) == attempts - 1
    assert all(0 <= s <= backoff.ceiling(n) for n, s in enumerate(sleeps, 1))


def test_a_not_done_outcome_is_tried_again_and_the_last_one_returned():
    action, sleeps = Script(100), []
    assert retry(action, "thing", 3, done=lambda o: o == "ok", sleep=sleeps.append, rand=lambda: 1.0) == "busy"
    assert action.calls == 3 and sleeps == [0.2, 0.4]


def test_it_stops_at_the_first_success():
    action, sleeps = Script(2, EmulatorNotRunning("down")), []
    assert retry(action, "thing", 5, retryable=is_transient, sleep=sleeps.append, rand=lambda: 0.25) == "ok"
    assert action.calls == 3 and sleeps == [0.05, 0.1]


def test_an_error_that_is_not_retryable_is_raised_at_once():
    action, sleeps = Script(5, NotFoundError("gone")), []
    with pytest.raises(NotFoundError):
        retry(action, "thing", 5, retryable=is_transient, sleep=sleeps.append)
    assert action.calls == 1 and sleeps == []
    action = Script(5, CloudError("x"))
    with pytest.raises(CloudError):
        retry(action, "thing", 5, sleep=sleeps.append)  # nothing is retryable unless said so
    assert action.calls == 1


def test_delays_spread_over_the_whole_jitter_range():
    sleeps: list[float] = []
    draw = random.Random(1).random
    for _ in range(200):
        retry(Script(1), "thing", 2, done=lambda o: o == "ok", sleep=sleeps.append, rand=draw)
    assert 0 <= min(sleeps) < 0.02 and 0.18 < max(sleeps) <= 0.2, "uniform in [0, base]"


def test_zero_attempts_is_a_usage_error():
    with pytest.raises(ValueError):
        retry(Script(0), "thing", 0)


def test_transient_means_a_cloud_error_other_than_a_permanent_one():
    assert is_transient(CloudError("x")) and is_transient(EmulatorNotRunning("down"))
    assert not is_transient(NotFoundError("gone")) and not is_transient(ValueError("bug"))
