"""Rule state kept on flash in continuous mode, so a reset does not repeat an alert.

The file holds Rules.durable_state() (open alerts, last alert times, the hourly cap),
written with write-temp-then-rename at each change and loaded at boot. Deep-sleep mode
keeps the whole state in sleepstate instead.
"""

import json

PATH = "rule_state.json"


class RuleState:
    """Saves and loads the durable state of ``rules`` in ``path``."""

    def __init__(self, rules, path=PATH):
        self.rules = rules
        self.path = path
        self._saved = None

    def load(self):
        """Restore the saved state; return True if there was one.

        Times saved before NTP set the clock in an earlier boot cannot be recovered, so
        they are dropped (as if that alert had not been sent); the open alerts stay.
        A damaged file (invalid JSON, or a field of the wrong type or range) is rejected
        as a whole and logged, and the board starts with no open alerts.
        """
        from . import clock
        from .outbox import parse_json
        from .rules_restore import check

        try:
            with open(self.path) as file:
                self._saved = file.read()
        except OSError:
            # No file yet (first start), or one that cannot be read: nothing to restore.
            return False
        try:
            data = parse_json(self._saved)
            # check() rejects a file with a field of the wrong type or range as a whole,
            # so a damaged file cannot stop the sensor loop at its first reading.
            check(data)
            if not self.rules.restore(data):
                raise ValueError("a field does not fit the configured rules")
        except ValueError as exc:
            from . import log

            log.error(
                "%s is not a rule state this firmware can read (%s); starting with no open alerts" % (self.path, exc)
            )
            return False
        timeline = data.get("timeline")
        if timeline is not None:
            self.rules.convert_times(lambda seconds: clock.real_time(seconds, timeline))
        return True

    def save(self):
        """Write the state if it changed since the last save or load; return True if written."""
        from . import clock
        from .outbox import write_atomic

        data = self.rules.durable_state()
        tag = clock.timeline_tag()
        if tag is not None:
            data["timeline"] = tag
        text = json.dumps(data)
        if text == self._saved:
            return False
        write_atomic(self.path, text)
        self._saved = text
        return True
