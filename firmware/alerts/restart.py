"""Reset after a failed start, with a delay that grows with each failed start in a row.

main.py and alerts.app call failed() when the firmware cannot be imported or started
(a heap too small for it, for one) or stops on an unexpected error. The delay is 10 s,
then doubles up to 10 minutes. The count of failed starts in a row is kept in a small
file: one short write per failed start, and one to remove it once the sensor loop has
run for 10 minutes or a deep-sleep wake is complete (started()). A failure soon after
each start thus backs off as well.

main.py imports this module before the rest of the firmware, while the heap is empty,
so it is there when the rest does not fit. It reads the count and imports machine
(built in on a board) then too: after a failed import the heap may have no room left.
"""

import gc
import sys
import time

try:
    import machine
except ImportError:
    # CPython, in the host tests. They give this module a machine with reset().
    machine = None

try:
    # Only the host simulation has sim_clock, which runs time faster (see alerts.clock).
    from sim_clock import speed as _SPEED
except ImportError:
    _SPEED = 1

PATH = "failed_starts.txt"
FIRST_DELAY_S = 10
MAX_DELAY_S = 600
# Advice for a heap too small to start, created at import while the heap is empty.
_ADVICE = "use fewer sensors or rules, a board with more RAM, or firmware with the code frozen in (microsmtp firmware);"


def delay(count):
    """Return the seconds to wait before the reset after count failed starts in a row."""
    seconds = FIRST_DELAY_S
    while count > 1 and seconds < MAX_DELAY_S:
        seconds *= 2
        count -= 1
    return min(seconds, MAX_DELAY_S)


def read():
    """Return the failed starts in a row stored in PATH (0 when none, or when the file is unreadable)."""
    try:
        with open(PATH) as file:
            # A count has a few digits: a longer file is damaged, and is not read whole,
            # because a MemoryError here would stop main.py at the REPL.
            text = file.read(13)
        if len(text) > 12:
            return 0
        return max(int(text), 0)
    except (OSError, ValueError, MemoryError):
        return 0


def write(count):
    """Store count in PATH, or remove the file for 0, and return False when that failed."""
    try:
        if count:
            with open(PATH, "w") as file:
                file.write(str(count))
        else:
            import os

            os.remove(PATH)
        return True
    except (OSError, MemoryError):
        # A full or read-only file system, or no heap: the delay stays at this count's.
        return False


# The count at boot, and the one this boot stored (None until a failure), so an error
# while handling a failure counts the start once.
_previous = read()
_count = None
# True once started() ran in this boot: a later failure is not one while starting.
_running = False


def started():
    """Clear the count once the firmware runs (alerts.app decides when), writing nothing when there is none."""
    global _previous, _running
    _running = True
    if _previous and write(0):
        previous, _previous = _previous, 0
        try:
            _log("INFO", "running again after %d failed start(s) in a row; count cleared" % previous)
        except Exception:
            # The start is complete even without room for the line.
            pass


def failed(exc, running=False, sleep=None):
    """Log why the firmware stopped, wait with the back-off delay, then reset the board.

    A MemoryError while starting gets a line naming what to change. ``running`` is True
    when the sensor loop had started (alerts.app unloads this module then, so a new copy
    does not know). ``sleep`` is True in deep-sleep mode, where the board waits in deep
    sleep, which ends in a reset as well, rather than awake on its battery, and None
    while config.json has not told the mode: then a board that woke from deep sleep
    (reset_cause()) waits in deep sleep too. Awake, a running watchdog is fed meanwhile,
    and Ctrl-C during the wait still reaches the REPL.
    """
    global _count, _running
    _running = _running or running
    if sleep is None:
        # A board that woke from deep sleep is in deep-sleep mode. rp2 has no
        # DEEPSLEEP_RESET, and the unix port has no reset_cause(), for which int() gives 0.
        sleep = not _running and getattr(machine, "reset_cause", int)() == getattr(machine, "DEEPSLEEP_RESET", None)
    if _count is None:
        _count = _previous + 1
        write(_count)
    wait = delay(_count)
    # Whole milliseconds, computed while there is heap. sleep_ms() and deepsleep() take no
    # float, and the sim's speed can be one.
    wait_ms = int(wait * 1000 // _SPEED)
    try:
        _report(exc, "failure %d in a row, %s %d s" % (_count, "deep sleep for" if sleep else "reset in", wait))
    except Exception:
        # The reset matters more than the line (no heap left for it, a clock that
        # cannot be formatted, a broken exception text).
        pass
    if sleep:
        try:
            machine.deepsleep(wait_ms)
        except Exception:
            # A port without deep sleep: wait awake.
            pass
    try:
        pause(wait)
    except Exception:
        # Not even room to look for the watchdog (which this early has not started).
        _sleep_ms(wait_ms)
    machine.reset()


def _report(exc, after):
    gc.collect()
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)
    if isinstance(exc, MemoryError) and not _running:
        free = "(%d bytes free):" % gc.mem_free() if hasattr(gc, "mem_free") else "(free heap unknown):"
        _log("ERROR", "out of memory while starting", free, _ADVICE, after)
    else:
        _log("ERROR", "unexpected %s: %s%s;" % (type(exc).__name__, exc, "" if _running else " while starting"), after)


def pause(seconds):
    """Sleep for seconds, feeding the watchdog if the firmware started one (it cannot be stopped)."""
    # Whole milliseconds: small integers take no heap on MicroPython.
    left = int(seconds * 1000 // _SPEED)
    watchdog = getattr(sys.modules.get("alerts.board"), "running_watchdog", None)
    step = max(watchdog.timeout_ms // 4, 10) if watchdog is not None else left
    while left > 0:
        if watchdog is not None:
            watchdog.feed()
        _sleep_ms(min(step, left))
        left -= step
    if watchdog is not None:
        watchdog.feed()


def _sleep_ms(ms):
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:
        time.sleep(ms / 1000)


def _log(level, *parts):
    # "<UTC time> LEVEL message" as alerts.log writes it, but printed in parts rather
    # than joined, so a short heap need not hold the whole line at once.
    clock = sys.modules.get("alerts.clock")
    if clock is not None:
        try:
            print(clock.format_utc(clock.now())[:19], end=" ")
        except MemoryError:
            pass
    print(level, *parts)
