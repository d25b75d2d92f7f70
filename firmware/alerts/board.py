"""Board services: the status LED, the hardware watchdog, reset and deep sleep.

Each works without its hardware (the unix port has no machine.WDT), so the same
application runs on every port.
"""

from . import clock, log

# LED patterns: (on ms, off ms) pairs repeated.
OK = ((50, 4950),)  # short blink every 5 s: running, outbox empty
QUEUED = ((50, 200), (50, 4700))  # double blink: alerts waiting to be sent
ALERT = ((200, 200),)  # fast blink: a rule's condition holds
ERROR = ((1000, 0),)  # steady: configuration or network error

# The Watchdog whose machine.WDT runs, once one is started. Nothing stops it, so
# alerts.restart feeds it while it waits before a reset.
running_watchdog = None


class Led:
    def __init__(self, pin, active_high=True):
        self.pattern = OK
        self._pin = None
        self._on = 1 if active_high else 0
        if pin is None:
            return
        try:
            import machine

            self._pin = machine.Pin(pin, machine.Pin.OUT)
        except (ImportError, AttributeError, OSError, ValueError) as exc:
            log.warning("status LED on pin %s unavailable: %s" % (pin, exc))

    def set(self, value):
        if self._pin is not None:
            self._pin.value(self._on if value else 1 - self._on)

    async def run(self):
        while True:
            for on_ms, off_ms in self.pattern:
                if on_ms:
                    self.set(True)
                    await clock.sleep_real(on_ms / 1000)
                if off_ms:
                    self.set(False)
                    await clock.sleep_real(off_ms / 1000)


class Watchdog:
    """machine.WDT fed only while every registered task reports progress.

    Tasks call ``alive(name, max_gap_s)``; the feeder stops feeding when a task has not
    reported within its gap, so a hung task resets the board. timeout_ms 0 disables it.
    """

    def __init__(self, timeout_ms):
        self._wdt = None
        self._seen = {}
        self.timeout_ms = timeout_ms
        if not timeout_ms:
            return
        try:
            import machine

            self._wdt = machine.WDT(timeout=timeout_ms)
            global running_watchdog
            running_watchdog = self
            log.info("watchdog started: %d ms" % timeout_ms)
        except (ImportError, AttributeError, ValueError, OSError) as exc:
            log.warning("watchdog unavailable on this port (%s); running without it" % exc)

    def alive(self, name, max_gap_s):
        """Record progress of a task; it must report again within max_gap_s real seconds."""
        self._seen[name] = (clock.ticks_ms(), int(max_gap_s * 1000))

    def forget(self, name):
        """Stop watching a task, for one that stops reporting progress by design."""
        self._seen.pop(name, None)

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def healthy(self):
        now = clock.ticks_ms()
        for name in self._seen:
            seen, gap = self._seen[name]
            if clock.ticks_diff(now, seen) > gap:
                return name
        return None

    async def run(self):
        if self._wdt is None:
            return
        period = max(self.timeout_ms // 4, 100)
        while True:
            stuck = self.healthy()
            if stuck is None:
                self._wdt.feed()
            else:
                log.error("task %s made no progress; the watchdog will reset the board" % stuck)
            await clock.sleep_real(period / 1000)


def reset():
    import machine

    machine.reset()


def deep_sleep(seconds):
    """Sleep for seconds of clock time; on a board this ends with a reset on wake."""
    import machine

    from .app import clear_failed_starts

    # The wake is complete, so the failed starts before it no longer count.
    clear_failed_starts()
    machine.deepsleep(int(clock.real_seconds(seconds) * 1000))
