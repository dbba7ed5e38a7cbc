"""AdaptiveWindow call by call: cuts per episode, growth per round trip, the climb back."""

from __future__ import annotations

import pytest

from opro.engine.aimd import AdaptiveWindow


def test_simultaneous_429s_are_one_episode() -> None:
    window = AdaptiveWindow(64)
    episodes = [window.admit() for _ in range(64)]
    cuts = [window.rate_limited(e) for e in episodes[:32]]
    assert cuts == [True] + [False] * 31
    assert (window.limit, window.episode) == (32, 1)


def test_a_new_cut_needs_a_success_sent_after_the_last_one() -> None:
    window = AdaptiveWindow(64)
    window.rate_limited(window.admit())
    after = window.admit()
    assert window.rate_limited(after) is False  # nothing sent since the cut succeeded yet
    window.succeeded(window.admit())
    assert window.rate_limited(after) is True
    assert window.limit == 16


def test_growth_is_one_step_per_window_of_successes() -> None:
    window = AdaptiveWindow(64, plateau=0)
    window.rate_limited(window.admit())  # 64 -> 32, nothing known to have succeeded
    assert window.target == 0
    grew = [window.succeeded(window.admit()) for _ in range(32 + 33)]
    assert grew.count(True) == 2  # not 65 small steps: one per round trip
    assert window.limit == 34


def test_the_climb_back_stops_below_what_the_server_took_at_once() -> None:
    window = AdaptiveWindow(64, plateau=2)
    burst = [window.admit() for _ in range(64)]
    window.rate_limited(burst[0])  # a first burst far above the server's limit: 64 -> 32
    for episode in burst[1:41]:  # 40 of the burst still went through
        window.succeeded(episode)
    assert window.target == 40
    limits = []
    for _ in range(8):  # round trips at the current window
        for _ in range(window.limit):
            window.succeeded(window.admit())
        limits.append(window.limit)
    # 32 -> 36 -> 38 -> 39 -> 40, two round trips at 40, then one slot per round trip.
    assert limits == [36, 38, 39, 40, 40, 40, 41, 42]


def test_the_window_never_drops_below_its_floor() -> None:
    window = AdaptiveWindow(8, floor=2)
    for _ in range(10):
        window.succeeded(window.admit())
        window.rate_limited(window.admit())
    assert window.limit == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maximum": 0}, "maximum"),
        ({"maximum": 8, "decrease": 1.0}, "decrease"),
        ({"maximum": 8, "decrease": float("nan")}, "decrease"),
        ({"maximum": 8, "floor": 9}, "floor"),
        ({"maximum": 8, "plateau": -1}, "plateau"),
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdaptiveWindow(**kwargs)  # type: ignore[arg-type]


def test_a_failed_probe_steps_back_to_the_level_that_held() -> None:
    window = AdaptiveWindow(64, plateau=2)
    window.rate_limited(window.admit())  # 64 -> 32
    for _ in range(40):  # 40 of the first burst went through: the target is 40
        window.succeeded(0)

    def round_trip() -> int:
        for _ in range(window.limit):
            window.succeeded(window.admit())
        return window.limit

    # 32 -> 36 -> 38 -> 39 -> 40, two round trips at 40, then a probe to 41.
    assert [round_trip() for _ in range(7)] == [36, 38, 39, 40, 40, 40, 41]
    window.rate_limited(window.admit())  # the probe found the server's limit
    assert (window.limit, window.episode) == (40, 2)  # back to 40, not down to 20
    round_trip()
    window.rate_limited(window.admit())  # now 40 fails too: the cut is multiplicative
    assert window.limit == 20
