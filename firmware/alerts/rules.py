"""Alert rules: thresholds with hysteresis, digital states and changes, sensor failures,
a per-rule minimum interval, a cap on emails per hour with a digest of what it
suppressed, and a daily heartbeat.

Everything here is pure logic: callers pass the time (seconds since 1970) and the
reading, and get back alert records (dicts) to put into the outbox. ``state()`` and
``restore()`` carry the decisions across a deep sleep.

Alert record fields: ``kind`` ("alert", "normal", "change", "sensor_failed",
"sensor_ok", "digest", "heartbeat"), ``rule``, ``sensor``, ``value``, ``unit``,
``condition`` ("above", "below", "state", "change"), ``threshold``, ``time`` and, where
they apply, ``readings`` (recent [time, value] pairs), ``skipped`` (alerts of this rule
held back by its minimum interval), ``error``, ``items`` (digest lines) and ``values``
(heartbeat readings). A record made while the clock was unset or estimated has
``timeline`` (see clock.timeline_tag()) until rules_restore.correct_times() has dated it.
"""

from .history import History

# Suppressed alerts listed one by one in a digest; more are only counted.
MAX_DIGEST_ITEMS = 20
HOUR = 3600


class Rule:
    """One rule from config.json: a condition on one sensor and its current episode."""

    def __init__(self, spec):
        self.name = spec["name"]
        self.sensor = spec["sensor"]
        self.hysteresis = spec.get("hysteresis") or 0
        self.min_interval = spec.get("min_interval_s") or 0
        if spec.get("above") is not None:
            self.condition, self.threshold = "above", spec["above"]
        elif spec.get("below") is not None:
            self.condition, self.threshold = "below", spec["below"]
        elif spec.get("state") is not None:
            self.condition, self.threshold = "state", spec["state"]
        else:
            self.condition, self.threshold = "change", None
        self.active = False  # the condition holds (an alert episode is open)
        self.notified = False  # this episode's alert was queued as an email
        self.digested = False  # this episode's alert went into the digest
        self.last_sent = None  # time of the last alert email of this rule
        self.skipped = 0  # alerts held back by min_interval since the last email
        self.last_value = None

    def check(self, value):
        """Return "alert", "normal", "change" or None for a new reading."""
        previous = self.last_value
        self.last_value = value
        if self.condition == "change":
            if previous is not None and value != previous:
                return "change"
            return None
        if self.condition == "state":
            triggered = value == self.threshold
            cleared = not triggered
        elif self.condition == "above":
            triggered = value > self.threshold
            cleared = value <= self.threshold - self.hysteresis
        else:
            triggered = value < self.threshold
            cleared = value >= self.threshold + self.hysteresis
        if not self.active and triggered:
            self.active = True
            return "alert"
        if self.active and cleared:
            self.active = False
            return "normal"
        return None

    def state(self):
        return [self.active, self.notified, self.digested, self.last_sent, self.skipped, self.last_value]


class RateLimit:
    """At most ``cap`` emails in any hour; the rest are collected for a digest."""

    def __init__(self, cap):
        self.cap = cap
        self.sent = []  # times of emails in the last hour
        self.suppressed = []  # digest lines
        self.suppressed_count = 0

    def _expire(self, now):
        # A time ahead of now (kept from before a restart whose clock is not set yet, or
        # from before the clock went back) never holds an email back: it goes too.
        # The list is not always in time order then (restored times, then ones read before NTP).
        if self.sent:
            self.sent = [seconds for seconds in self.sent if 0 <= now - seconds < HOUR]

    def allow(self, now):
        self._expire(now)
        if len(self.sent) < self.cap:
            self.sent.append(now)
            return True
        return False

    def convert_times(self, convert):
        """Replace each time in sent with convert(time), dropping those that return None."""
        self.sent = [seconds for seconds in [convert(seconds) for seconds in self.sent] if seconds is not None]

    def suppress(self, line):
        self.suppressed_count += 1
        if len(self.suppressed) < MAX_DIGEST_ITEMS:
            self.suppressed.append(line)


class Rules:
    """All rules of a config plus sensor-failure tracking, the cap and the heartbeat."""

    def __init__(self, config):
        alerts = config.get("alerts") or {}
        self.rules = [Rule(spec) for spec in config.get("rules") or ()]
        self.units = {}
        self.histories = {}
        for sensor in config["sensors"]:
            self.units[sensor["name"]] = sensor.get("unit") or ""
            self.histories[sensor["name"]] = History(alerts.get("history", 30))
        self.limit = RateLimit(alerts.get("max_per_hour", 10))
        self.failure_limit = alerts.get("sensor_failures", 3)
        self.heartbeat_s = (alerts.get("heartbeat_h") or 0) * HOUR
        self.last_heartbeat = None
        self.failures = {}  # sensor name -> [consecutive failures, failure alert queued]

    # -- readings ---------------------------------------------------------------------

    def process(self, sensor, value, now, error=None):
        """Record a reading (value None with error for a failed read); return alert records."""
        alerts = []
        if value is None:
            self._failed(sensor, now, error, alerts)
            return alerts
        self.histories[sensor].add(now, value)
        failure = self.failures.get(sensor)
        if failure is not None:
            del self.failures[sensor]
            if failure[1]:
                self._emit(self._record("sensor_ok", None, sensor, value, now), now, alerts)
        for rule in self.rules:
            if rule.sensor != sensor:
                continue
            kind = rule.check(value)
            if kind is not None:
                self._rule_event(rule, kind, value, now, alerts)
        return alerts

    def _failed(self, sensor, now, error, alerts):
        failure = self.failures.get(sensor)
        if failure is None:
            failure = [0, False]
            self.failures[sensor] = failure
        failure[0] += 1
        if failure[0] == self.failure_limit:
            record = self._record("sensor_failed", None, sensor, None, now)
            record["error"] = str(error or "no reading")[:120]
            record["failures"] = failure[0]
            failure[1] = self._emit(record, now, alerts)

    def _rule_event(self, rule, kind, value, now, alerts):
        record = self._record(kind, rule, rule.sensor, value, now)
        if kind == "normal":
            if rule.notified:
                self._emit(record, now, alerts)
            elif rule.digested:
                self.limit.suppress(self._line(record))
            rule.notified = rule.digested = False
            return
        # A last email dated after now (the clock is not set yet after a restart, or went
        # back) cannot show that the interval has not passed: better a repeat than a lost alert.
        if rule.min_interval and rule.last_sent is not None and 0 <= now - rule.last_sent < rule.min_interval:
            rule.skipped += 1
            rule.notified = rule.digested = False
            return
        record["skipped"] = rule.skipped
        if self._emit(record, now, alerts):
            rule.last_sent = now
            rule.skipped = 0
            rule.notified = True
            rule.digested = False
        else:
            rule.notified = False
            rule.digested = True

    def _record(self, kind, rule, sensor, value, now):
        record = {
            "kind": kind,
            "rule": rule.name if rule else None,
            "sensor": sensor,
            "value": value,
            "unit": self.units.get(sensor, ""),
            "condition": rule.condition if rule else None,
            "threshold": rule.threshold if rule else None,
            "time": now,
        }
        if kind in ("alert", "normal", "change", "sensor_failed"):
            record["readings"] = self.histories[sensor].items()
        return record

    def _emit(self, record, now, alerts):
        """Append record if the hourly cap allows, else add it to the digest; return True if appended."""
        if self.limit.allow(now):
            alerts.append(record)
            return True
        self.limit.suppress(self._line(record))
        return False

    @staticmethod
    def _line(record):
        from .clock import format_utc

        return "%s %s %s %s %s" % (
            format_utc(record["time"]),
            record["kind"],
            record["rule"] or record["sensor"],
            "" if record["value"] is None else record["value"],
            record["unit"] or "",
        )

    # -- time-driven records ------------------------------------------------------------

    def tick(self, now):
        """Return the digest and heartbeat records that are due at time now."""
        alerts = []
        limit = self.limit
        if limit.suppressed_count and limit.allow(now):
            alerts.append(
                {
                    "kind": "digest",
                    "rule": None,
                    "sensor": None,
                    "value": None,
                    "unit": "",
                    "condition": None,
                    "threshold": None,
                    "time": now,
                    "items": limit.suppressed,
                    "count": limit.suppressed_count,
                }
            )
            limit.suppressed = []
            limit.suppressed_count = 0
        if self.heartbeat_s:
            if self.last_heartbeat is None or now < self.last_heartbeat:
                self.last_heartbeat = now
            elif now - self.last_heartbeat >= self.heartbeat_s:
                self.last_heartbeat = now
                values = []
                for name in self.histories:
                    latest = self.histories[name].latest()
                    values.append([name, latest[1] if latest else None, self.units.get(name, "")])
                alerts.append(
                    {
                        "kind": "heartbeat",
                        "rule": None,
                        "sensor": None,
                        "value": None,
                        "unit": "",
                        "condition": None,
                        "threshold": None,
                        "time": now,
                        "values": values,
                        "active": [rule.name for rule in self.rules if rule.active],
                    }
                )
        return alerts

    def active(self):
        """Return the names of rules whose condition holds now."""
        return [rule.name for rule in self.rules if rule.active]

    # -- restoring and dating saved state (code in alerts.rules_restore) ------------------

    def convert_times(self, convert):
        """Apply convert(seconds) -> seconds or None to every time kept, once NTP set the clock."""
        from .rules_restore import convert_times

        convert_times(self, convert)

    def state(self):
        """Return the decisions to keep across a deep sleep, as JSON-ready data."""
        from .rules_restore import state

        return state(self)

    def restore(self, state):
        """Load state() or durable_state() output; entries for rules or sensors no longer configured are ignored.

        Return False, with the rules left as they were, if the state has an unexpected
        shape (a damaged or foreign file): a reset loop over a bad file would stop alerts.
        """
        from .rules_restore import restore

        fresh = self.durable_state()
        try:
            restore(self, state)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            restore(self, fresh)
            return False
        return True

    def durable_state(self):
        """Return the decisions to keep across a reset in continuous mode, as JSON-ready data.

        Unlike state(), it leaves out what changes with every reading (the history, the
        last value of threshold rules, failure counts below the limit), so it changes
        only when a decision does and can be written to flash each time.
        """
        rules = {}
        for rule in self.rules:
            state = rule.state()
            if rule.condition != "change":
                state[5] = None
            rules[rule.name] = state
        failures = {}
        for name in self.failures:
            if self.failures[name][1]:
                failures[name] = [self.failure_limit, True]
        return {
            "rules": rules,
            "sent": self.limit.sent,
            "suppressed": self.limit.suppressed,
            "suppressed_count": self.limit.suppressed_count,
            "heartbeat": self.last_heartbeat,
            "failures": failures,
        }
