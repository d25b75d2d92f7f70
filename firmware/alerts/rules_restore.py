"""Restoring saved rule state and dating times read before NTP set the clock.

Rules' convert_times(), state() and restore() call these functions, and alerts.delivery
and alerts.mailer call correct_times(). They run at boot, at a deep-sleep wake, once NTP
has replied and while sending, so the sensor loop does not keep this code on the heap:
alerts.app unloads the module with the boot and the delivery code.
"""


def convert_times(rules, convert):
    """Apply convert(seconds) -> seconds or None to every time kept, once NTP set the clock.

    A time that converts to None (unknown) is dropped: a reading leaves the history,
    and a rule or heartbeat time becomes None, as if nothing had been sent yet.
    NOTE: digest lines suppressed before NTP keep the unset time in their text.
    """
    for rule in rules.rules:
        rule.last_sent = convert(rule.last_sent)
    rules.limit.convert_times(convert)
    rules.last_heartbeat = convert(rules.last_heartbeat)
    for name in rules.histories:
        rules.histories[name].convert_times(convert)


def state(rules):
    """Return the decisions to keep across a deep sleep, as JSON-ready data."""
    return {
        "rules": dict([(rule.name, rule.state()) for rule in rules.rules]),
        "sent": rules.limit.sent,
        "suppressed": rules.limit.suppressed,
        "suppressed_count": rules.limit.suppressed_count,
        "heartbeat": rules.last_heartbeat,
        "failures": rules.failures,
        "history": dict([(name, rules.histories[name].items()) for name in rules.histories]),
    }


# The form of each key that state() writes: a dict of lists ("rules", "failures",
# "history"), or a list of single values ("sent", "suppressed"). Letters: b bool, c count (int >= 0),
# n time (number >= 0), t time or None, r reading (number) or None, s str.
_SHAPES = (("rules", "bbbtcr"), ("failures", "cb"), ("history", "nr"), ("sent", "n"), ("suppressed", "s"))


def _is(value, code):
    """Return True if value fits the letter code of _SHAPES; numbers must be finite."""
    if code == "b":
        return isinstance(value, bool)
    if code == "s":
        return isinstance(value, str)
    if value is None:
        return code in "tr"
    # NaN is not equal to itself, and infinity minus itself is NaN (true).
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value - value:
        return False
    return code == "r" or (value >= 0 and (code != "c" or isinstance(value, int)))


def _fits(value, shape):
    return (
        isinstance(value, list)
        and len(value) == len(shape)
        and not [i for i in range(len(shape)) if not _is(value[i], shape[i])]
    )


def check(state):
    """Raise ValueError, naming the key, unless state has the form state() writes.

    restore() calls it before it changes a rule, so a damaged file (wrong types, a
    negative count, a time that is not a finite number) is rejected as a whole.
    """
    if not isinstance(state, dict):
        raise ValueError("the state is not an object")
    for key, shape in _SHAPES:
        value = state.get(key)
        if value is None:
            continue
        if len(shape) == 1:
            ok = isinstance(value, list) and not [item for item in value if not _is(item, shape)]
        elif key == "history":
            ok = isinstance(value, dict) and not [
                name
                for name in value
                if not isinstance(value[name], list) or [p for p in value[name] if not _fits(p, shape)]
            ]
        else:
            ok = isinstance(value, dict) and not [name for name in value if not _fits(value[name], shape)]
        if not ok:
            raise ValueError("%s has a value of the wrong type or range" % key)
    for key, code in (("suppressed_count", "c"), ("heartbeat", "t"), ("timeline", "s")):
        if state.get(key) is not None and not _is(state[key], code):
            raise ValueError("%s has a value of the wrong type or range" % key)


def restore(rules, state):
    """Load state() or durable_state() output; entries for rules or sensors no longer configured are ignored.

    Raises ValueError, before anything changes, if a field has the wrong type or range.
    """
    check(state)
    saved = state.get("rules") or {}
    for rule in rules.rules:
        if rule.name in saved:
            (
                rule.active,
                rule.notified,
                rule.digested,
                rule.last_sent,
                rule.skipped,
                rule.last_value,
            ) = saved[rule.name]
    rules.limit.sent = list(state.get("sent") or [])
    rules.limit.suppressed = list(state.get("suppressed") or [])
    rules.limit.suppressed_count = state.get("suppressed_count") or 0
    rules.last_heartbeat = state.get("heartbeat")
    failures = state.get("failures") or {}
    for name in failures:
        if name in rules.histories:
            rules.failures[name] = list(failures[name])
    history = state.get("history") or {}
    for name in history:
        if name in rules.histories:
            for seconds, value in history[name]:
                rules.histories[name].add(seconds, value)


def correct_times(record):
    """Date a record made before NTP set the clock; return True if the record changed.

    Its time and readings become real times when they are from this boot and NTP has
    replied since, or None (unknown) when they are unset times from an earlier boot.
    A record of this boot stays unchanged until NTP replies.
    """
    from . import clock

    tag = record.get("timeline")
    if tag is None or (tag == clock.TIMELINE and not clock.corrected()):
        return False
    record["time"] = clock.real_time(record.get("time"), tag)
    readings = record.get("readings")
    if readings:
        # Readings of this boot are dated like rule state, by when they were read.
        readings_tag = None if tag == clock.TIMELINE else tag
        kept = []
        for seconds, value in readings:
            seconds = clock.real_time(seconds, readings_tag)
            if seconds is not None:
                kept.append([seconds, value])
        record["readings"] = kept
    del record["timeline"]
    return True
