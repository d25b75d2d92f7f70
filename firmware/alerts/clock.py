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
# Set by set_synced() when NTP first sets an unset or estimated clock in this boot:
# seconds to add to the times read before, and the range of those times.
_sync_offset = None
_sync_range = None


def now():
    """Return the current time in whole seconds since 1970 (UTC)."""
    if _source is not None:
        return int(_source.now()) + _estimate_offset
    return int(time.time()) + _EPOCH_OFFSET + _estimate_offset


def is_set(seconds=None):
    """Return True when the clock was set (NTP) or carries a plausible estimate.

    With ``seconds``, return whether that time (a now() value) came from such a clock.
    """
    return (now() if seconds is None else seconds) >= _MIN_SECONDS


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


def reference():
    """Return (now(), ticks_ms()), read just before setting the clock, for set_synced()."""
    return now(), ticks_ms()


def set_synced(before=None):
    """Forget an estimate once the real clock has been set.

    ``before`` is reference() read just before the clock was set. The first time in a
    boot that the clock goes from unset or estimated to set, this fixes the offset that
    real_time() adds to the times read before. The unset clock advances with
    ticks_ms(), so a time t read before is now - (before - t) - ticks_diff(now_ticks,
    before_ticks) / 1000.
    """
    global _estimate_offset, _sync_offset, _sync_range
    # The clock is already set here, so whether it was accurate comes from before.
    was_accurate = before is None or (before[0] >= _MIN_SECONDS and _estimate_offset == 0)
    _estimate_offset = 0
    if was_accurate or _sync_offset is not None or not is_set():
        return
    seconds, ticks = before
    _sync_offset = now() - seconds - ticks_diff(ticks_ms(), ticks) // 1000
    # One second of slack: the clock counts whole seconds.
    # NOTE: ticks_diff() is valid for about 6 days (2**29 ms), so a first NTP reply after
    # a longer uptime dates the readings kept from this boot wrongly.
    _sync_range = (seconds - ticks_diff(ticks, _BOOT_TICKS) // 1000 - 1, seconds)


def is_estimate():
    """Return True while now() is an estimate from before a deep sleep, not a set clock."""
    return _estimate_offset != 0


def is_accurate():
    """Return True when now() comes from a clock set by NTP (not unset, not an estimate)."""
    return is_set() and not is_estimate()


def _new_timeline():
    import binascii
    import os

    try:
        return binascii.hexlify(os.urandom(4)).decode()
    except (AttributeError, OSError):
        import random

        return "%08x" % random.getrandbits(32)


# Names the time line of this boot's clock before NTP sets it. A record made while the
# clock is not accurate carries it, so its time can be corrected once NTP replies in the
# same boot. A record from an earlier boot carries another one.
TIMELINE = _new_timeline()


def timeline_tag():
    """Return TIMELINE while the clock is unset or estimated, else None (times are real)."""
    return None if is_accurate() else TIMELINE


def corrected():
    """Return True once NTP has set a clock that was unset or estimated in this boot."""
    return _sync_offset is not None


def real_time(seconds, timeline=None):
    """Return the real time of a time read before NTP set the clock, or None if unknown.

    Call it once per value, after set_synced() (until then it returns seconds as they
    are). ``timeline`` is the tag a record got from timeline_tag(); None stands for a
    value kept in memory (rule state, readings), which is corrected when it lies in this
    boot before the clock was set. An unset time (before 2025) from an earlier boot
    cannot be recovered, and an estimate from an earlier wake stays as it is, because
    it is the best time known.
    """
    if seconds is None:
        return None
    if timeline is not None and timeline != TIMELINE:
        return seconds if seconds >= _MIN_SECONDS else None
    if _sync_offset is None:
        return seconds
    if timeline is not None or _sync_range[0] <= seconds <= _sync_range[1]:
        return seconds + _sync_offset
    return seconds if seconds >= _MIN_SECONDS else None


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


_BOOT_TICKS = ticks_ms()
