"""Stand-in for MicroPython's machine module on the virtual board."""

import os
import sys

_RTC_FILE = "rtc_memory.bin"
_WATCHDOG_FILE = "watchdog.json"
# Exit statuses the simulation turns into a restart of the board.
RESET_STATUS = 3
DEEPSLEEP_STATUS = 4
# reset_cause() values, as on ESP32.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


def _say(text):
    print("[machine] " + text)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, pin, mode=IN, pull=None, value=None):
        self.pin = pin
        self.mode = mode
        self.pull = pull
        self._value = 1 if pull == Pin.PULL_UP else 0
        self._handler = None
        if value is not None:
            self._value = value

    def value(self, value=None):
        if value is None:
            return _timeline_value(self.pin, self._value)
        self._value = 1 if value else 0
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=IRQ_RISING | IRQ_FALLING, wake=None):
        # The handler is never called: the firmware also polls the pin every interval_s.
        self._handler = handler


def _timeline_value(pin, default):
    """Return the level of pin from the scenario's ``pins`` timelines, or default."""
    import sim_clock

    timeline = (sim_clock.settings().get("pins") or {}).get(str(pin))
    if not timeline:
        return default
    elapsed = sim_clock.elapsed()
    value = timeline[0][1]
    for seconds, level in timeline:
        if seconds > elapsed:
            break
        value = level
    return 1 if value else 0


class ADC:
    def __init__(self, source):
        self.source = source

    def read_u16(self):
        # About 0.706 V on channel 4, which the RP2040 formula turns into 27 °C.
        return 14021 if self.source == 4 else 32768


class WDT:
    """Watchdog timer: feed() within ``timeout`` ms of real time, or the board is reset.

    The firmware feeds it in real time, so the deadline is real time too. On a board the
    timer runs outside the CPU, so it resets a CPU stuck in a busy loop. Here the
    simulation on the host does that. Each feed() writes the
    deadline to watchdog.json, and the host resets the board (ends the process, then
    starts it again) once the deadline has passed. A feed() that comes after the
    deadline resets the board at once, in case the host has not yet noticed.
    """

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        self._deadline_ns = None
        self.feed()
        _say("watchdog armed, timeout %d ms" % timeout)

    def feed(self):
        import time

        now = time.time_ns()
        if self._deadline_ns is not None and now > self._deadline_ns:
            _say("watchdog timeout: reset")
            sys.exit(RESET_STATUS)
        self.feeds += 1
        self._deadline_ns = now + self.timeout * 1000000
        with open(_WATCHDOG_FILE + ".tmp", "w") as file:
            file.write('{"deadline_ns": %d, "timeout_ms": %d}' % (self._deadline_ns, self.timeout))
        os.rename(_WATCHDOG_FILE + ".tmp", _WATCHDOG_FILE)


class RTC:
    """RTC memory survives reset() and deepsleep(), as on ESP32, through a file."""

    def memory(self, data=None):
        if data is None:
            try:
                with open(_RTC_FILE, "rb") as file:
                    return file.read()
            except OSError:
                return b""
        if len(data) > 2048:
            raise ValueError("RTC memory holds at most 2048 bytes")
        with open(_RTC_FILE, "wb") as file:
            file.write(data)
        return None


def unique_id():
    return b"\x02\x00\x00\x00\x00\x23"


def freq(value=None):
    return 240000000


def reset_cause():
    """Return why the board started, which the simulation names in the environment (power on by default)."""
    try:
        return int(os.getenv("MICROSMTP_SIM_RESET_CAUSE"))
    except (TypeError, ValueError):
        return PWRON_RESET


def reset():
    _say("reset")
    sys.exit(RESET_STATUS)


def soft_reset():
    reset()


def deepsleep(ms=0):
    _say("deepsleep %d" % ms)
    sys.exit(DEEPSLEEP_STATUS)


def lightsleep(ms=0):
    import time

    time.sleep_ms(ms)


def idle():
    pass
