"""Reset after a failed start, with a delay that grows with each failed start in a row.

main.py and alerts.app call failed() when the firmware cannot be imported or started
(a heap too small for it, for one) or stops on an unexpected error. The delay is 10 s,
then doubles up to 10 minutes. The count of failed starts in a row is kept in a small
file: one short write per failed start, and one to remove it once the sensor loop has
run for 10 minutes or a deep-sleep wake is complete (started()). A failure soon after
each start thus backs off as well. A reset by the watchdog counts as a failed start
too, at the next boot (main.py calls after_watchdog()), where the port tells it apart
(ESP32, and the RP2040 of a Pico W).

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
# alerts.sleepstate's file, which deep-sleep mode leaves where the board has no RTC
# memory (rp2). Named here too, so that the check imports nothing.
SLEEP_STATE = "sleep_state.json"
FIRST_DELAY_S = 10
MAX_DELAY_S = 600
# The chip on rp2 ("Raspberry Pi Pico W with RP2040"), empty on other ports. Host tests set it.
_MACHINE = getattr(sys.implementation, "_machine", "") if sys.platform == "rp2" else ""
# The RP2040 watchdog's REASON register: bit 0 (TIMER) is set after a timeout, bit 1
# (FORCE) after a forced reset, which machine.reset() and a deep-sleep wake make.
_RP2040_WATCHDOG_REASON = 0x40058008
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


def _cause(name):
    """Return True when machine.reset_cause() is machine.NAME (False on a port without either)."""
    return getattr(machine, "reset_cause", int)() == getattr(machine, name, None)


def deep_sleep_mode():
    """Return True when the board runs in deep-sleep mode, for use before config.json is read.

    A wake from deep sleep shows it, and so does the sleep state a wake leaves behind:
    RTC memory on ESP32, a file where there is none. rp2 reports a wake as a watchdog
    reset, so there only the file shows it.
    """
    if _cause("DEEPSLEEP_RESET"):
        return True
    try:
        if machine.RTC().memory():
            return True
    except Exception:
        # No RTC, or one without memory (rp2, the unix port).
        pass
    try:
        open(SLEEP_STATE).close()
        return True
    except OSError:
        return False


def watchdog_fired():
    """Return True when a watchdog timeout caused the last reset, on ports that tell it apart.

    ESP32 reports a deep-sleep wake and machine.reset() with causes of their own. rp2
    reports both as WDT_RESET too, so on the RP2040 the watchdog's REASON register
    decides. Other chips (the RP2350) are not trusted, and their resets are not counted.
    """
    if not _cause("WDT_RESET"):
        return False
    if hasattr(machine, "DEEPSLEEP_RESET"):
        return True
    if "RP2040" in _MACHINE:
        return bool(machine.mem32[_RP2040_WATCHDOG_REASON] & 1)
    return False


def after_watchdog():
    """Count a reset by the watchdog as a failed start, and wait its back-off delay before this one.

    The firmware hung, in the start or later, and no failed() ran to count it.
    main.py calls it once per boot, before a watchdog runs. It does not run at import,
    because the firmware imports the module again later in the same boot, and
    reset_cause() then still reports the watchdog.
    """
    global _previous
    if not watchdog_fired():
        return
    _previous += 1
    write(_previous)
    wait = delay(_previous)
    sleep = deep_sleep_mode()
    try:
        _log(
            "ERROR",
            "the watchdog reset the board; failure %d in a row, %s %d s"
            % (_previous, "deep sleep for" if sleep else "start in", wait),
        )
    except Exception:
        pass
    wait_ms = int(wait * 1000 // _SPEED)
    if sleep:
        try:
            machine.deepsleep(wait_ms)
        except Exception:
            pass
    _sleep_ms(wait_ms)


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
    while config.json has not given the mode: then deep_sleep_mode() decides. Awake, a
    running watchdog is fed meanwhile, and Ctrl-C during the wait still reaches the REPL.
    """
    global _count, _running
    _running = _running or running
    if sleep is None:
        sleep = not _running and deep_sleep_mode()
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
