"""Simulated sensor: values from a scenario, for the host simulation and for trying rules."""

from .sensors import SensorError


class Simulated:
    """Values from a scenario: ``values`` [[seconds, value], ...] hold from their time on.

    Seconds count from the first read, or under the host simulation from the start of
    the scenario. ``failures`` [[start, end], ...] are periods in which reads fail, as a
    disconnected sensor would. ``hangs`` [[start, end], ...] are periods in which a read
    blocks the whole board until the period ends, as a driver stuck in a busy loop does
    (the case the watchdog exists for). With ``repeat_s`` above 0, ``values`` start
    again every repeat_s seconds, so a long run needs no long list. Used by the host
    simulation; it works on a board too, for trying rules without hardware.
    """

    def __init__(self, spec, start=None):
        self.values = spec["values"]
        self.failures = spec.get("failures") or []
        self.hangs = spec.get("hangs") or []
        self.repeat = spec.get("repeat_s") or 0
        self.start = start

    def read_at(self, now):
        if self.start is None:
            self.start = now
        elapsed = now - self.start
        for begin, end in self.hangs:
            if begin <= elapsed < end:
                _block(end - elapsed)
        for begin, end in self.failures:
            if begin <= elapsed < end:
                raise SensorError("simulated read failure")
        if self.repeat:
            elapsed %= self.repeat
        value = self.values[0][1]
        for seconds, item in self.values:
            if seconds > elapsed:
                break
            value = item
        return value

    def read(self):
        from . import clock

        scenario = clock.scenario_seconds()
        if scenario is not None:
            self.start = 0
            return self.read_at(scenario)
        return self.read_at(clock.now())


def _block(seconds):
    """Block without yielding to asyncio for seconds of clock time."""
    import time

    from . import clock

    time.sleep(clock.real_seconds(seconds))
