"""The session pool: a session is never lent to two callers at once, a second one is made only
when calls overlap, never more than `size`, and a failed make leaves the pool as it was."""
import threading
import time

import pytest

from mobilesam_ros.core.runtime.session_pool import SessionPool

pytestmark = pytest.mark.timing  # callers overlap only if their threads get the CPU within 0.1 s


class Counted:
    """A stand-in session that records how many callers hold it at once (the pool's contract is
    about lending, not about what a session computes: the ONNX backend test runs real ones)."""

    def __init__(self):
        self.holders, self.max_holders = 0, 0


def _hold(pool, seconds, seen):
    with pool.lend() as s:
        s.holders += 1
        s.max_holders = max(s.max_holders, s.holders)
        seen.add(id(s))
        time.sleep(seconds)
        s.holders -= 1


def test_one_caller_after_another_uses_one_session():
    made = []
    pool = SessionPool(lambda: made.append(Counted()) or made[-1], size=4)
    seen = set()
    for _ in range(5):
        _hold(pool, 0.0, seen)
    assert pool.made == 1 and len(made) == 1 and len(seen) == 1


def test_overlapping_callers_get_their_own_sessions_up_to_size():
    made = []
    pool = SessionPool(lambda: made.append(Counted()) or made[-1], size=2)
    seen = set()
    threads = [threading.Thread(target=_hold, args=(pool, 0.1, seen)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert pool.made == 2 and len(seen) == 2
    assert all(s.max_holders == 1 for s in made)


def test_a_failed_make_is_not_counted():
    calls = []

    def make():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return Counted()

    pool = SessionPool(make, size=2)
    with pool.lend():
        with pytest.raises(RuntimeError, match="out of memory"):
            with pool.lend():
                pass
        assert pool.made == 1
        with pool.lend() as second:  # the next overlap tries again
            assert isinstance(second, Counted)
    assert pool.made == 2


def test_size_below_one_is_refused():
    with pytest.raises(ValueError, match="size >= 1"):
        SessionPool(Counted, size=0)
