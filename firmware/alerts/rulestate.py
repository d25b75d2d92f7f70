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
        """
        from . import clock
        from .outbox import parse_json

        try:
            with open(self.path) as file:
                self._saved = file.read()
            data = parse_json(self._saved)
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict) or not self.rules.restore(data):
            from . import log

            log.error("%s is not a rule state this firmware can read; starting with no open alerts" % self.path)
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
