"""The adaptive concurrency window of a connection that has no user-given rate.

`ConnectionLimiter` asks `AdaptiveWindow` how many calls may be in flight and tells it how
each admitted call ended. It is AIMD, as TCP congestion control is, with the rules that
keep one burst of 429s from collapsing it:

- **One cut per rate-limit episode.** A 429 cuts the window by `decrease` (never below
  `floor`) only when its call was admitted after the last cut, and a call admitted after
  that cut has already succeeded. Calls in flight at a cut were sent under the old window:
  their 429s repeat the signal the cut answered. And while nothing sent under the new
  window has succeeded, the server is refusing everything (a storm, a pause) rather than
  objecting to the window; Retry-After paces those calls. So 32 simultaneous 429s cut 64
  to 32, not to 1, and there is at least one round trip between two cuts.
- **Growth per round trip, not per success.** A window's worth of successes (one round
  trip at full window) is one growth step: one more slot. After a cut the window climbs
  back faster, halfway per step (binary search, as BIC-TCP does), to a target: the number
  of calls of the cut episode that succeeded, below the window that was cut. That is what
  the server took at once, so a transient storm costs a few round trips, not dozens, and
  a first burst far above the server's limit does not climb straight back into it. At the
  target the window holds for `plateau` round trips before probing further.
- **A failed probe steps back, not down.** A 429 while probing above a level that held
  for `plateau` round trips returns the window to that level (it is still a cut: the next
  one needs new evidence). At a hard limit this costs one 429 per probe instead of half
  the window; if the level itself fails next, the cut is multiplicative again.

Pure bookkeeping with no clock and no asyncio, so it is tested call by call.
"""

from __future__ import annotations


class AdaptiveWindow:
    """A concurrency window between `floor` and `maximum`; see the module docstring."""

    def __init__(
        self, maximum: int, *, decrease: float = 0.5, floor: int = 1, plateau: int = 16
    ) -> None:
        if not (isinstance(maximum, int) and maximum >= 1):
            raise ValueError(f"maximum window must be an integer >= 1, got {maximum!r}")
        if not 0.0 < decrease < 1.0:
            raise ValueError(f"decrease factor must be in (0, 1), got {decrease!r}")
        if not 1 <= floor <= maximum:
            raise ValueError(f"floor must be in [1, {maximum}], got {floor!r}")
        if plateau < 0:
            raise ValueError(f"plateau must be >= 0 round trips, got {plateau!r}")
        self.maximum = maximum
        self.decrease = decrease
        self.floor = floor
        self.plateau = plateau
        self.value = float(maximum)
        self.episode = 0  # cuts so far: a call is admitted in the current episode
        self.target = 0  # where to climb back to after the last cut (0: no cut yet)
        self._cut_limit = maximum  # the limit that was cut last
        self._ok_now = 0  # successes of calls admitted in the current episode
        self._ok_cut = 0  # successes of calls admitted in the episode that was cut last
        self._acked = 0  # successes towards the next growth step
        self._held = 0  # round trips spent at the target
        self._proven = 0  # a limit that held for `plateau` round trips (0: none)

    @property
    def limit(self) -> int:
        """Calls allowed in flight now."""
        return int(self.value)

    def admit(self) -> int:
        """The episode a call admitted now belongs to; give it back when the call ends."""
        return self.episode

    def succeeded(self, episode: int) -> bool:
        """Record a success of a call admitted in `episode`; True when the limit grew."""
        if episode == self.episode:
            self._ok_now += 1
        elif episode == self.episode - 1:
            self._ok_cut += 1  # in flight at the cut, and the server still took it
            if self._ok_cut < self._cut_limit:
                self.target = self._ok_cut
                self._held = 0  # a plateau below the new target does not count
        self._acked += 1
        if self._acked < self.limit or self.value >= self.maximum:
            return False
        self._acked = 0  # a round trip at this window went through
        before = self.limit
        if self.value < self.target:
            step = max(1.0, (self.target - self.value) / 2)
            self.value = min(float(self.target), self.value + step)
        elif self.limit >= self.target and self._held < self.plateau:
            self._held += 1
            if self._held == self.plateau:
                self._proven = self.limit
        else:
            if self._proven:
                self._proven = self.limit  # this probe held for a round trip too
            self.value = min(float(self.maximum), self.value + 1.0)
        return self.limit != before

    def rate_limited(self, episode: int) -> bool:
        """Record a 429 of a call admitted in `episode`; True when it cut the window."""
        if episode != self.episode:
            return False  # sent before the last cut, which already answered it
        if self.episode > 0 and self._ok_now == 0:
            return False  # nothing sent since the last cut has succeeded: no new evidence
        self.episode += 1
        self._cut_limit = self.limit
        self._acked = 0
        self._held = 0
        if 0 < self._proven < self._cut_limit:  # a probe failed: back to the proven level
            self._ok_cut = self._cut_limit  # the target is known; survivors cannot move it
            self.target = self._proven
            self.value = float(self._proven)
        else:
            self._ok_cut = self._ok_now
            self.target = min(self._cut_limit - 1, self._ok_cut)
            self._proven = 0
            self.value = max(float(self.floor), self.value * self.decrease)
        self._ok_now = 0
        return True
