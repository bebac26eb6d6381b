"""Restart policies (``--restart``), decided as Docker's restart manager decides them.

The decision is pure: it takes the policy, how the container ended, how many
times it was restarted and how long it ran, and returns whether to start it
again and after how long. The monitor (monitor.py) applies it; there is no
daemon, so the back-off lives in the monitor process between two runs.

Docker's rules: ``always`` restarts whatever the exit, ``unless-stopped``
likewise unless the user stopped it, ``on-failure[:N]`` only after a non-zero
exit and at most N times (0: no limit). A ``stop`` (or ``kill``) is not a
failure and cancels the restart of the run it ends. The delay starts at 100 ms and doubles up to a minute;
a run of 10 seconds or more starts the doubling again from 100 ms.
"""

from __future__ import annotations

from pybuild.errors import UsageError
from pybuild.records import record

NO, ALWAYS, ON_FAILURE, UNLESS_STOPPED = "no", "always", "on-failure", "unless-stopped"
POLICIES = (NO, ALWAYS, ON_FAILURE, UNLESS_STOPPED)

FIRST_DELAY = 0.1  # seconds
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # seconds of uptime after which the back-off starts again


@record(frozen=True)
class RestartPolicy:
    """Docker's HostConfig.RestartPolicy."""

    name: str = NO
    maximum_retry_count: int = 0

    @property
    def enabled(self) -> bool:
        return self.name != NO

    def to_doc(self) -> dict[str, object]:
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}


def parse_restart(text: str) -> RestartPolicy:
    """``--restart`` as docker reads it: ``no``, ``always``, ``unless-stopped``, ``on-failure[:N]``."""
    name, sep, count_text = text.strip().partition(":")
    name = name or NO
    count = 0
    if sep:
        try:
            count = int(count_text)
        except ValueError:
            raise UsageError(f"invalid restart policy format: maximum retry count must be an integer: {text!r}") \
                from None
    if name not in POLICIES:
        raise UsageError(f"invalid restart policy: unknown policy '{name}'; use one of "
                         f"'{NO}', '{ALWAYS}', '{ON_FAILURE}', or '{UNLESS_STOPPED}'")
    if name != ON_FAILURE and count != 0:
        raise UsageError("invalid restart policy: maximum retry count can only be used with 'on-failure'"
                         + (" and cannot be negative" if count < 0 else ""))
    if count < 0:
        raise UsageError("invalid restart policy: maximum retry count cannot be negative")
    return RestartPolicy(name, count)


def should_restart(policy: RestartPolicy, exit_code: int, restart_count: int, manually_stopped: bool) -> bool:
    """Whether a container that ended so is started again (Docker's ShouldRestart, without the timer).

    This is the rule of a start from scratch (Docker's daemon starting, here a
    boot unit or a new monitor): ``always`` restarts even a container the user
    stopped. A live monitor also honours a ``stop`` or ``kill`` given while
    it watched, which cancels any restart (Docker's ExitOnNext).
    """
    if policy.name == ALWAYS:
        return True
    if policy.name == UNLESS_STOPPED:
        return not manually_stopped
    if policy.name == ON_FAILURE:
        limit = policy.maximum_retry_count
        return exit_code != 0 and (limit == 0 or restart_count < limit)
    return False


def next_delay(previous: float, uptime: float) -> float:
    """The wait before the next start: 100 ms, doubling to a minute; from 100 ms again after 10 s of uptime."""
    if uptime >= RESET_AFTER or previous <= 0:
        return FIRST_DELAY
    return min(previous * 2, MAX_DELAY)
