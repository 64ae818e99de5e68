from mobilesam_ros.ros.stamps import header_ns, stamp_to_ns


class _Stamp:
    sec, nanosec = 3, 5


class _Header:
    stamp = _Stamp()


def test_stamp_to_ns():
    assert stamp_to_ns(3, 5) == 3_000_000_005
    assert stamp_to_ns(0, 999_999_999) == 999_999_999


def test_header_ns():
    assert header_ns(_Header()) == 3_000_000_005
