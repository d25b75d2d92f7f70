"""Wall-clock time in seconds since 1970-01-01 UTC, and sleeping in those seconds.

Boards use ``time.time()`` (ESP32 counts from 2000, so its offset is added). A module
named ``sim_clock`` on the import path replaces the time source: only the host
simulation provides one, to run scenarios faster than real time. It has ``now()``,
``speed`` (simulated seconds per real second) and ``is_synced()``.
"""

import time

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

try:
    import sim_clock as _source
except ImportError:
    _source = None

# Seconds from 1970 to the port's epoch: 2000 on ESP32, 1970 on rp2 and unix.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

# Same value as microsmtp.client.MIN_CLOCK_YEAR: a clock before it was never set.
MIN_YEAR = 2025
_MIN_SECONDS = 1735689600  # 2025-01-01 00:00:00 UTC

# Seconds added to an unset clock, so times after a deep sleep keep counting (see estimate()).
_estimate_offset = 0


def now():
    """Return the current time in whole seconds since 1970 (UTC)."""
    if _source is not None:
        return int(_source.now()) + _estimate_offset
    return int(time.time()) + _EPOCH_OFFSET + _estimate_offset


def is_set():
    """Return True when the clock was set (NTP) or carries a plausible estimate."""
    return now() >= _MIN_SECONDS


def estimate(seconds):
    """Continue from a stored time after deep sleep when the clock was lost.

    A board without a battery-backed clock (Pico W) restarts at its epoch. Rules need
    time intervals even before NTP, so the stored time before sleep plus the sleep
    length stands in until NTP sets the clock; set_synced() drops the estimate.
    """
    global _estimate_offset
    current = now() - _estimate_offset
    if current < _MIN_SECONDS and seconds > current:
        _estimate_offset = seconds - current


def set_synced():
    """Forget an estimate once the real clock has been set."""
    global _estimate_offset
    _estimate_offset = 0


def is_estimate():
    """Return True while now() is an estimate from before a deep sleep, not a set clock."""
    return _estimate_offset != 0


def scenario_seconds():
    """Return simulated seconds since the host simulation started, or None on a board.

    Simulated sensors follow this timeline, so a reset or deep sleep of the virtual
    board does not replay the scenario from its start.
    """
    if _source is None:
        return None
    return _source.elapsed()


def speed():
    return _source.speed if _source is not None else 1


async def sleep(seconds):
    """Sleep for seconds of clock time (shorter real time under the simulation)."""
    await asyncio.sleep(seconds / speed())


def real_seconds(seconds):
    """Return the real seconds that pass while the clock advances by seconds."""
    return seconds / speed()


def format_utc(seconds):
    """Format seconds since 1970 as "2026-01-15 08:05:00 UTC"."""
    parts = time.gmtime(seconds - _EPOCH_OFFSET)
    return "%04d-%02d-%02d %02d:%02d:%02d UTC" % parts[:6]


def gmtime(seconds):
    """Return time.gmtime() of seconds since 1970, on any port's epoch."""
    return time.gmtime(seconds - _EPOCH_OFFSET)


if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
else:

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(end, start):
        return end - start


async def sleep_real(seconds):
    """Sleep for real seconds, not clock seconds (LED patterns, the watchdog, radio waits)."""
    await asyncio.sleep(seconds)
