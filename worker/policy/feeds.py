"""What the control inputs do to the policy, the same for the live worker and a replay.

`strategy-mode.v1` sets (or clears) the explicit mode, `harvest-health.v1` a symbol's feed health,
and `market.v1` the market activity that drives the modes' market trigger: the number of
snapshots per second of event time, counted over the last `ACTIVITY_WINDOW_MS` of the snapshots
seen so far (in the order they are applied). The live worker applies these as its control
consumer reads them (`worker/runtime/control.py`); a replay applies them in its merge order
(`worker/runtime/replay_inputs.py`). One instance per process: the effects are process-wide.
"""

from __future__ import annotations

from collections import deque

from worker.contract.messages import HarvestHealth, MarketSnapshot, StrategyModeCommand
from worker.policy.pretrade import PreTradePolicy

# Activity is measured over one second of event time: short enough to catch a burst, long
# enough not to flap on single messages (the trigger's hysteresis does the rest).
ACTIVITY_WINDOW_MS = 1_000


class ControlInputs:
    def __init__(self, policy: PreTradePolicy) -> None:
        self._policy = policy
        # Event times of the market snapshots of the last ACTIVITY_WINDOW_MS.
        self._recent: deque[int] = deque()

    def market(self, snapshot: MarketSnapshot) -> None:
        """Activity = market snapshots per second of event time, fed to the market trigger."""
        self._recent.append(snapshot.event_time_ms)
        while self._recent and self._recent[0] <= snapshot.event_time_ms - ACTIVITY_WINDOW_MS:
            self._recent.popleft()
        self._policy.modes.observe_activity(len(self._recent) * 1000 / ACTIVITY_WINDOW_MS)

    def mode(self, command: StrategyModeCommand) -> None:
        """An explicit mode (None clears it); ValueError for a mode the modes file lacks."""
        self._policy.modes.set_explicit(command.mode)

    def health(self, health: HarvestHealth) -> None:
        self._policy.observe_health(health)
