"""Recent readings of one sensor, kept for the CSV attached to alert emails."""


class History:
    """A ring of the last ``size`` (time, value) pairs, oldest first in ``items()``."""

    def __init__(self, size):
        self.size = size
        self._items = []

    def add(self, seconds, value):
        if self.size <= 0:
            return
        if len(self._items) >= self.size:
            self._items.pop(0)
        self._items.append([seconds, value])

    def convert_times(self, convert):
        """Replace each time with convert(time); drop readings whose time it returns as None."""
        kept = []
        for seconds, value in self._items:
            seconds = convert(seconds)
            if seconds is not None:
                kept.append([seconds, value])
        self._items = kept

    def items(self):
        return list(self._items)

    def latest(self):
        return self._items[-1] if self._items else None


def to_csv(readings, unit=""):
    """Return readings ([[seconds, value], ...]) as CSV bytes with a UTC time column."""
    from . import clock

    lines = [b"time_utc,value" + (b"_" + unit.encode() if unit else b"")]
    for seconds, value in readings:
        lines.append(("%s,%s" % (clock.format_utc(seconds)[:19], "" if value is None else value)).encode())
    return b"\r\n".join(lines) + b"\r\n"
