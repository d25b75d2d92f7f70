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


def restore(rules, state):
    """Load state() or durable_state() output; entries for rules or sensors no longer configured are ignored."""
    saved = state.get("rules") or {}
    for rule in rules.rules:
        if rule.name in saved and len(saved[rule.name]) == 6:
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
            rules.failures[name] = failures[name]
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
