"""The load plan shared by the locustfile and the runner: ramp up, hold, ramp down, idle.

The idle phase (0 users) is part of the plan so that the replicas scaling back down
shows in the report. Times are seconds since the Locust run started.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

#: Each Locust user pauses uniformly between these seconds after every answer (its think time).
USER_WAIT_S = (0.1, 0.5)
#: Defaults: about 4.5 minutes in all.
DEFAULT_MAX_USERS = 8
DEFAULT_RAMP_UP_S = 60.0
DEFAULT_HOLD_S = 90.0
DEFAULT_RAMP_DOWN_S = 30.0
DEFAULT_IDLE_S = 90.0


@dataclass(frozen=True)
class Phase:
    """One named stretch of the plan, [start_s, end_s)."""

    name: str
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        """Length of the phase in seconds."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class LoadPlan:
    """Users over time: 0 -> max_users (linear), hold, -> 0 (linear), hold at 0."""

    max_users: int = DEFAULT_MAX_USERS
    ramp_up_s: float = DEFAULT_RAMP_UP_S
    hold_s: float = DEFAULT_HOLD_S
    ramp_down_s: float = DEFAULT_RAMP_DOWN_S
    idle_s: float = DEFAULT_IDLE_S

    def __post_init__(self) -> None:
        if self.max_users < 1:
            raise ValueError("max_users must be at least 1")
        if min(self.ramp_up_s, self.hold_s, self.ramp_down_s, self.idle_s) < 0:
            raise ValueError("phase durations must be >= 0 seconds")

    def phases(self) -> list[Phase]:
        """The four phases in order (zero-length ones included)."""
        names = ("ramp-up", "hold", "ramp-down", "idle")
        lengths = (self.ramp_up_s, self.hold_s, self.ramp_down_s, self.idle_s)
        out, start = [], 0.0
        for name, length in zip(names, lengths):
            out.append(Phase(name, start, start + length))
            start += length
        return out

    @property
    def total_s(self) -> float:
        """End of the plan."""
        return self.ramp_up_s + self.hold_s + self.ramp_down_s + self.idle_s

    def users_at(self, t: float) -> int | None:
        """Target user count at `t` seconds, or None once the plan is over."""
        up, hold, down, idle = self.phases()
        if t >= idle.end_s:
            return None
        if t < up.end_s:
            return max(1, math.ceil(self.max_users * t / up.duration_s)) if up.duration_s else self.max_users
        if t < hold.end_s:
            return self.max_users
        if t < down.end_s:
            return math.floor(self.max_users * (down.end_s - t) / down.duration_s)
        return 0

    def phase_at(self, t: float) -> str | None:
        """Name of the phase holding `t`, or None outside the plan."""
        for phase in self.phases():
            if phase.start_s <= t < phase.end_s:
                return phase.name
        return None


def add_plan_arguments(group: Any, prefix: str = "") -> None:
    """Add --{prefix}max-users/ramp-up/hold/ramp-down/idle to an argparse (or Locust) group."""
    group.add_argument(f"--{prefix}max-users", type=int, default=LoadPlan.max_users, help="users at the plateau")
    group.add_argument(f"--{prefix}ramp-up", type=float, default=LoadPlan.ramp_up_s, help="seconds from 0 to max users")
    group.add_argument(f"--{prefix}hold", type=float, default=LoadPlan.hold_s, help="seconds at max users")
    group.add_argument(f"--{prefix}ramp-down", type=float, default=LoadPlan.ramp_down_s, help="seconds back to 0 users")
    group.add_argument(f"--{prefix}idle", type=float, default=LoadPlan.idle_s, help="seconds at 0 users (scale-down)")


def plan_from_arguments(args: Any, prefix: str = "") -> LoadPlan:
    """The LoadPlan of arguments added by `add_plan_arguments` with the same prefix."""
    field = prefix.replace("-", "_")
    return LoadPlan(getattr(args, f"{field}max_users"), getattr(args, f"{field}ramp_up"), getattr(args, f"{field}hold"),
                    getattr(args, f"{field}ramp_down"), getattr(args, f"{field}idle"))


def locust_command(url: str, plan: LoadPlan, f0_method: str, request_log: Path, voices: str = "",
                   extra: Sequence[str] = ()) -> list[str]:
    """The headless Locust command that runs load_tests/locustfile.py with this plan against `url`,
    logging every request to `request_log`; `extra` are further Locust options."""
    cmd = [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")), "--headless",
           "--host", url, *extra,
           "--load-max-users", str(plan.max_users), "--load-ramp-up", str(plan.ramp_up_s),
           "--load-hold", str(plan.hold_s), "--load-ramp-down", str(plan.ramp_down_s), "--load-idle", str(plan.idle_s),
           "--load-f0-method", f0_method, "--load-request-log", str(request_log)]
    return cmd + (["--load-voices", voices] if voices else [])
